"""Checkpoints: what they hold, and the one save/load helper for train, evaluate and inference.

    python checkpoint.py models/best.pt    # print what a checkpoint holds (or an exported folder, or user/name)

A checkpoint is plain data (state_dicts, numbers, strings, bytes), loadable with
torch.load(weights_only=True): the decoder's config and weights, the tokenizer itself, the encoder's
name, fingerprint, frame count and preprocessing, the training args and metrics, and (in last.pt)
what --resume needs. It is written to a temporary name and renamed into place, so a failed save
leaves the previous file intact.

The same data can live in an exported folder (export.py): model.safetensors (the decoder's weights and
buffers), config.json (everything else that is not a tensor) and tokenizer.model. load_checkpoint takes
a .pt file, such a folder, or a Hugging Face Hub repo id (user/name) holding one, and returns the same
dict for all three; a folder is read with safetensors and json, never unpickled, and checked strictly.
"""
import argparse
import hashlib
import json
import math
import pickle
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import safetensors
import safetensors.torch
import sentencepiece as spm
import torch
from huggingface_hub import constants as hub_constants, snapshot_download
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from common import UserError, atomic_write, fail, is_hub_id, one_line, use_warning_lines, write_text
from model import CaptionDecoder, DecoderConfig, Ensemble, XClipEncoder

# The format of .pt checkpoints and of exported folders (config.json's format_version); bump it when either
# changes in a way older code cannot read.
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("version", "decoder_config", "decoder", "tokenizer", "encoder")
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.model"
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
CONFIG_KEYS = ("format_version", "decoder_config", "encoder", "tokenizer")
# The largest decoder a checkpoint may describe (float32 weights): the real ones take tens of MB. A config asking for
# more is refused before anything is allocated.
MAX_DECODER_BYTES = 4 * 2**30
SIZE = (1, 65536)
# decoder_config's fields: (type, lowest, highest) for numbers, the allowed values for strings, bool for flags.
DECODER_SCHEMA = {"vocab_size": (int, 1, 1_000_000), "latent_dim": (int, *SIZE), "embed_dim": (int, *SIZE),
                  "hidden_dim": (int, *SIZE), "num_layers": (int, 1, 64), "dropout": (float, 0.0, 0.999),
                  "latent_every_step": bool, "label_smoothing": (float, 0.0, 0.999), "pad_id": (int, 0, 999_999),
                  "bos_id": (int, 0, 999_999), "eos_id": (int, 0, 999_999), "decoder_type": ("pooled", "attention"),
                  "attention_dim": (int, *SIZE), "num_frames": (int, 1, 1024)}
# The encoder record: of an X-CLIP (the cache's meta), or of precomputed features (kind "features").
XCLIP_RECORD = {"name": str, "fingerprint": str, "num_frames": (int, 1, 1024), "preprocess": dict}
FEATURES_RECORD = {"name": str, "shape": list, "latent_dim": (int, *SIZE)}
PREPROCESS_SCHEMA = {"image_size": (int, 1, 4096), "shortest_edge": (int, 1, 4096)}


class CheckpointError(UserError):
    """A checkpoint cannot be used; the message is one line naming the file and the problem."""


def make_checkpoint(decoder, tokenizer_proto: bytes, encoder_meta: dict, args: dict, metrics: dict | None = None,
                    epoch: int = 0, training_state: dict | None = None, data: dict | None = None) -> dict:
    """The payload of a checkpoint: the decoder (config and weights), the tokenizer's bytes, the encoder record
    (the cache's meta: name, fingerprint, frames, preprocessing, dtype), the training args and metrics, what it
    was trained on (data: {"dataset", "scheme", ...}), and training_state (optimizer, scheduler, best_cider,
    bad_epochs) for --resume."""
    return {"decoder_config": decoder.config.to_dict(), "decoder": decoder.state_dict(), "tokenizer": tokenizer_proto,
            "encoder": dict(encoder_meta), "args": dict(args), "metrics": metrics or {}, "epoch": epoch,
            "data": dict(data or {}), **(training_state or {})}


def save_checkpoint(path, payload: dict) -> None:
    """Write payload atomically (temp file, fsync, os.replace), adding the format version."""
    def write(handle):
        try:
            torch.save({"version": CHECKPOINT_VERSION, **payload}, handle)
        except RuntimeError as error:  # torch's zip writer hides a failed write (disk full) behind its own error
            if isinstance(error.__context__, OSError):
                raise error.__context__ from None
            raise

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def load_checkpoint(model_path, map_location="cpu") -> dict:
    """A checkpoint's plain data from a .pt file, an exported folder, or a Hub repo id (user/name).

    An existing path is read as it is; a missing one shaped like user/name is fetched from the Hub
    (huggingface_hub's cache, HF_HUB_OFFLINE respected). Every problem is a one-line CheckpointError."""
    path = Path(model_path)
    if path.is_dir():
        return load_folder(path)
    if path.exists() or not is_repo_id(str(model_path)):
        return load_pt(path, map_location)
    return load_folder(download_from_hub(str(model_path)), name=str(model_path))


def is_repo_id(text: str) -> bool:
    """True for text shaped like a Hub model id, user/name (a path that does not exist is taken for one)."""
    return is_hub_id(text) and not text.endswith(".pt")


def load_pt(path, map_location="cpu") -> dict:
    """Load a .pt checkpoint safely (weights_only=True) and check it has what inference needs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train one with train.py, or pass a .pt file, an "
                              "exported folder or a Hub repo id (user/name) as --model_path")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch.save writes a zip; old torch a bare pickle
        raise CheckpointError(f"{path}: not a checkpoint (not a file torch.save wrote); pass the best.pt or "
                              "last.pt train.py wrote, an exported folder or a Hub repo id")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused, it holds pickled objects that could run code "
                              f"({str(error).splitlines()[0][:120]})") from None
    except Exception as error:  # torch raises RuntimeError/EOFError/zip errors for damaged files
        raise CheckpointError(f"{path}: unreadable, truncated or not a checkpoint "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''})") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        missing = [key for key in REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
        raise CheckpointError(f"{path}: not a captioner checkpoint (missing {', '.join(missing)})")
    version = checkpoint["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: field version is {version!r}, not a format number; retrain it, or pass the "
                              "checkpoint train.py wrote")
    if checkpoint["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: made by a newer version of this repo (format {checkpoint['version']}, "
                              f"this code reads up to {CHECKPOINT_VERSION}); update the code")
    check_record(checkpoint, str(path), "retrain it, or pass the checkpoint train.py wrote")
    check_decoder_tensors(checkpoint["decoder_config"], checkpoint["decoder"], str(path),
                          "retrain it, or pass the checkpoint train.py wrote")
    if not isinstance(checkpoint["tokenizer"], bytes):
        raise CheckpointError(f"{path}: tokenizer is {type(checkpoint['tokenizer']).__name__}, not a sentencepiece "
                              "model's bytes; retrain it, or pass the checkpoint train.py wrote")
    check_tokenizer(checkpoint["tokenizer"], {"decoder_config": checkpoint["decoder_config"], "tokenizer": {}},
                    str(path), f"{path}: tokenizer", "retrain it, or pass the checkpoint train.py wrote")
    return checkpoint


def download_from_hub(repo_id: str) -> Path:
    """The folder of repo_id's files in huggingface_hub's cache, downloaded first if they are not there."""
    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(FOLDER_FILES)))
    except GatedRepoError:
        problem = (f"a gated model on the Hub; accept its conditions at https://huggingface.co/{repo_id} and log in "
                   "(hf auth login)")
    except RepositoryNotFoundError:
        problem = ("no such local file or folder, and no such model on the Hub; check the path or the name "
                   "(a private model needs `hf auth login`)")
    except LocalEntryNotFoundError:
        problem = ("no such local file or folder, and not in the local Hub cache while HF_HUB_OFFLINE is set; "
                   "unset HF_HUB_OFFLINE to download it once, or pass a .pt file or an exported folder"
                   if hub_constants.HF_HUB_OFFLINE else
                   "no such local file or folder, and the Hub cannot be reached to download it; connect, or "
                   f"download it elsewhere (hf download {repo_id} --local-dir captioner) and pass that folder")
    # The Hub down, a bad token, a proxy, a full disk: huggingface_hub's HTTP client raises its own transport
    # errors besides HfHubHTTPError, and each is one line here.
    except Exception as error:
        problem = (f"downloading it from the Hub failed ({type(error).__name__}: {one_line(error)}); check the "
                   "name, the network and your login")
    raise CheckpointError(f"{repo_id}: {problem}")


def load_folder(folder, name=None) -> dict:
    """An exported folder -> the dict load_pt returns, after checking that nothing is missing, that this code
    reads its format, that the weights fit the config, and that the tokenizer is the one the config names."""
    folder = Path(folder)
    name = name or str(folder)
    missing = [file for file in FOLDER_FILES if not (folder / file).is_file()]
    if missing:
        raise CheckpointError(f"{name}: not an exported captioner (no {', '.join(missing)}); pass a .pt checkpoint, "
                              "or export one with export.py")
    config = read_config(folder / CONFIG_FILE, name)
    check_record(config, f"{name}: {CONFIG_FILE}", "export the folder again")
    advice = "export the folder again from its .pt"
    try:  # the header first: shapes are checked before a byte of the tensors is read
        with safetensors.safe_open(folder / WEIGHTS_FILE, framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        check_decoder_weights(config["decoder_config"], shapes, f"{name}: {WEIGHTS_FILE}", advice)
        weights = safetensors.torch.load_file(folder / WEIGHTS_FILE)
    except (safetensors.SafetensorError, OSError) as error:
        raise CheckpointError(f"{name}: {WEIGHTS_FILE} is unreadable or not safetensors ({one_line(error)}); "
                              "export the folder again") from None
    check_decoder_tensors(config["decoder_config"], weights, f"{name}: {WEIGHTS_FILE}", advice)
    proto = (folder / TOKENIZER_FILE).read_bytes()
    check_tokenizer(proto, config, name)
    training = config["training"] if isinstance(config.get("training"), dict) else {}
    return {"version": config["format_version"], "decoder_config": config["decoder_config"], "decoder": weights,
            "tokenizer": proto, "encoder": config["encoder"], "data": config.get("data") or {},
            "args": training.get("args") or {}, "metrics": training.get("metrics") or {},
            "epoch": training.get("epoch", 0), "scst": training.get("scst")}


def read_config(path: Path, name: str) -> dict:
    """config.json of an exported folder, checked for the keys loading needs and for a format this code reads."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{name}: {CONFIG_FILE} is not readable JSON ({one_line(error)}); "
                              "export the folder again") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if isinstance(version, bool) or isinstance(version, int) and version < 1:
        raise CheckpointError(f"{name}: {CONFIG_FILE} field format_version is {version!r}, not a format number; "
                              "export the folder again")
    if isinstance(version, int) and version > CHECKPOINT_VERSION:  # checked first: a newer format may differ in all
        raise CheckpointError(f"{name}: {CONFIG_FILE} says format_version {version}: made by a newer version of this "
                              f"repo (this code reads up to {CHECKPOINT_VERSION}); update the code")
    if version is None or any(not isinstance(config.get(key), int if key == "format_version" else dict)
                              for key in CONFIG_KEYS):
        raise CheckpointError(f"{name}: {CONFIG_FILE} is not a captioner's config (it needs "
                              f"{', '.join(CONFIG_KEYS)}); export the folder again")
    return config


def check_decoder_weights(decoder_config: dict, weights: dict, where: str, advice: str) -> None:
    """A CheckpointError (where, the problem, advice) naming the tensors that are missing, unexpected or of another
    shape than decoder_config gives them. The decoder is built on the meta device: shapes only, no memory."""
    expected = expected_state(decoder_config, where, advice)
    shape = {key: tuple(getattr(value, "shape", value)) for key, value in weights.items()}  # tensors or shapes
    problems = [f"missing {key}" for key in sorted(expected.keys() - weights.keys())]
    problems += [f"unexpected {key}" for key in sorted(weights.keys() - expected.keys())]
    problems += [f"{key} is {shape[key]} where the config makes {tuple(expected[key].shape)}"
                 for key in sorted(expected.keys() & weights.keys()) if shape[key] != tuple(expected[key].shape)]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(f"{where} does not fit its decoder config ({', '.join(problems[:3])}{more}); {advice}")


def expected_state(decoder_config: dict, where: str, advice: str) -> dict:
    """The state_dict decoder_config makes, built on the meta device (shapes only, no memory), after checking that
    its float32 weights fit in MAX_DECODER_BYTES."""
    # A lower bound first (every LSTM layer's hidden-to-hidden weights, the embedding and the output layer), so
    # that a config asking for terabytes is refused before even the meta build spends time on it.
    fields = {**DecoderConfig(vocab_size=1).to_dict(), **decoder_config}
    try:
        least = 4 * (4 * fields["hidden_dim"] ** 2 * fields["num_layers"]
                     + fields["vocab_size"] * (fields["embed_dim"] + fields["hidden_dim"]))
    except TypeError:  # not numbers: the build below says so
        least = 0
    if least > MAX_DECODER_BYTES:
        raise CheckpointError(f"{where}: decoder_config describes a decoder of at least {least / 2**30:.1f} GiB, more "
                              f"than the {MAX_DECODER_BYTES / 2**30:.0f} GiB this repo loads; {advice}")
    try:
        with torch.device("meta"):
            expected = CaptionDecoder(DecoderConfig(**decoder_config)).state_dict()
    except (TypeError, ValueError, RuntimeError) as error:  # a config from another version, or edited
        raise CheckpointError(f"{where} does not fit this repo's CaptionDecoder ({one_line(error)}); "
                              f"{advice}") from None
    size = 4 * sum(tensor.numel() for tensor in expected.values())
    if size > MAX_DECODER_BYTES:
        raise CheckpointError(f"{where}: decoder_config describes a decoder of {size / 2**30:.1f} GiB, more than the "
                              f"{MAX_DECODER_BYTES / 2**30:.0f} GiB this repo loads; {advice}")
    return expected


def check_decoder_tensors(decoder_config: dict, weights, where: str, advice: str) -> None:
    """A CheckpointError naming the first decoder tensor that is not one a model can use: not a tensor, not floating
    point, not finite, or a latent_std that standardisation would divide by (<= 0); and shapes
    (check_decoder_weights)."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{where}: decoder is {type(weights).__name__}, not a state_dict; {advice}")
    for key, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{where}: decoder tensor {key} is {type(tensor).__name__}, not a tensor; {advice}")
    check_decoder_weights(decoder_config, weights, where, advice)
    for key in sorted(weights):
        tensor = weights[key]
        if not tensor.is_floating_point():
            raise CheckpointError(f"{where}: decoder tensor {key} is {str(tensor.dtype).removeprefix('torch.')}, not "
                                  f"floating point; {advice}")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}: decoder tensor {key} holds NaN or infinite values; {advice}")
    if not (weights["latent_std"] > 0).all():
        raise CheckpointError(f"{where}: decoder tensor latent_std has values <= 0 (standardising would divide by "
                              f"zero); {advice}")


class RecordChecker:
    """Raises the CheckpointError of a checkpoint's record field that has the wrong type or is out of range:
    "<where>: field <name> is <value>, <what is wrong>; <advice>"."""

    def __init__(self, where: str, advice: str):
        self.where, self.advice = where, advice

    def problem(self, field, value, wanted):
        raise CheckpointError(f"{self.where}: field {field} is {json.dumps(value, default=repr)[:60]}, {wanted}; "
                              f"{self.advice}")

    def check(self, field, value, rule):
        """rule: a tuple of words (one of them), bool, str (non-empty), dict, list, or (int or float, low, high)."""
        if isinstance(rule, tuple) and isinstance(rule[0], str):  # one of some words
            if value not in rule:
                self.problem(field, value, f"not one of {', '.join(rule)}")
        elif rule is bool or rule in (str, dict, list):
            if not isinstance(value, rule) or rule is str and not value.strip():
                self.problem(field, value, f"not {'a non-empty string' if rule is str else 'a ' + rule.__name__}")
        else:
            kind, low, high = rule
            number = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                self.problem(field, value, f"not {'an integer' if kind is int else 'a number'}")
            if not low <= value <= high:
                self.problem(field, value, f"out of range (from {low:g} to {high:g})")

    def check_all(self, prefix, values, schema, required):
        """Every field of values that schema knows, by its rule; the required ones must be there."""
        if not isinstance(values, dict):
            self.problem(prefix, values, "not a mapping")
        for key in values:
            if key not in schema and schema is DECODER_SCHEMA:
                self.problem(f"{prefix}.{key}", values[key], "not a field of this repo's decoder config")
        for key, rule in schema.items():
            if key in values:
                self.check(f"{prefix}.{key}", values[key], rule)
            elif key in required:
                raise CheckpointError(f"{self.where}: field {prefix}.{key} is missing; {self.advice}")


def check_record(record: dict, where: str, advice: str) -> None:
    """A CheckpointError naming the first field of a checkpoint's (or config.json's) decoder_config, encoder record,
    data or training record that has the wrong type or is out of range. Run before anything is built or read."""
    checker = RecordChecker(where, advice)
    decoder = record.get("decoder_config")
    checker.check_all("decoder_config", decoder, DECODER_SCHEMA, ("vocab_size",))
    for key in ("pad_id", "bos_id", "eos_id"):
        if decoder.get(key, 0) >= decoder["vocab_size"]:
            checker.problem(f"decoder_config.{key}", decoder[key], f"not below vocab_size {decoder['vocab_size']}")
    expected_state(decoder, where, advice)  # its size, before anything is allocated
    check_encoder_record(checker, record.get("encoder"), decoder)
    for key in ("data", "args", "metrics"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            checker.problem(key, record[key], "not a mapping")
    for key in ("dataset", "scheme"):  # evaluate.py takes them for flags left out
        if isinstance(record.get("data"), dict) and record["data"].get(key) is not None:
            checker.check(f"data.{key}", record["data"][key], str)
    training = record.get("training")
    if training is not None:
        checker.check_all("training", training, {"args": dict, "metrics": dict, "epoch": (int, 0, 10**9)}, ())
    if "epoch" in record:
        checker.check("epoch", record["epoch"], (int, 0, 10**9))


def check_encoder_record(checker: RecordChecker, encoder, decoder: dict) -> None:
    """check_record's part for the encoder record: X-CLIP's (name, fingerprint, preprocessing ...) or that of
    precomputed features (their shape), and a latent size that is the decoder's."""
    if not isinstance(encoder, dict):
        checker.problem("encoder", encoder, "not a mapping")
    features = encoder.get("kind") == "features"
    checker.check_all("encoder", encoder, FEATURES_RECORD if features else XCLIP_RECORD,
                      FEATURES_RECORD if features else XCLIP_RECORD)
    if "kind" in encoder:
        checker.check("encoder.kind", encoder["kind"], ("features", "xclip"))
    if "latent_dim" in encoder:
        checker.check("encoder.latent_dim", encoder["latent_dim"], (int, *SIZE))
        if encoder["latent_dim"] != decoder.get("latent_dim", DecoderConfig.latent_dim):
            checker.problem("encoder.latent_dim", encoder["latent_dim"], "not the decoder_config's latent_dim")
    for key in ("sampling", "dtype"):
        if key in encoder:
            checker.check(f"encoder.{key}", encoder[key], ("fp32", "bf16") if key == "dtype" else str)
    if features:
        shape = encoder["shape"]
        if not 1 <= len(shape) <= 2 or any(isinstance(size, bool) or not isinstance(size, int) or size < 1
                                           for size in shape):
            checker.problem("encoder.shape", shape, "not the shape of a features file ([D] or [T, D])")
        return
    preprocess = encoder["preprocess"]
    checker.check_all("encoder.preprocess", preprocess, PREPROCESS_SCHEMA, PREPROCESS_SCHEMA)
    for key in ("mean", "std"):
        values = preprocess.get(key)
        if not isinstance(values, list) or len(values) != 3 or any(
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or key == "std" and value <= 0 for value in values):
            checker.problem(f"encoder.preprocess.{key}", values,
                            "not three finite numbers" + (" above 0" if key == "std" else ""))


def tokenizer_record(processor: spm.SentencePieceProcessor) -> dict:
    """What config.json records of a tokenizer, and what loading checks: its size and special ids."""
    return {"vocab_size": processor.get_piece_size(), "pad_id": processor.pad_id(), "unk_id": processor.unk_id(),
            "bos_id": processor.bos_id(), "eos_id": processor.eos_id()}


def tokenizer_digest(proto: bytes) -> str:
    """sha256 of a tokenizer's bytes, recorded in config.json: another model of the same size and ids differs."""
    return hashlib.sha256(proto).hexdigest()


def check_tokenizer(proto: bytes, config: dict, name: str, what: str | None = None,
                    advice: str = "export the folder again from its .pt") -> None:
    """A CheckpointError unless proto is a sentencepiece model with the size and special ids that config.json's
    tokenizer record and the decoder config give, and the sha256 the record gives (a folder exported before the
    digest was recorded gets a warning). what names the tokenizer in messages (default: the folder's file)."""
    what = what or f"{name}: {TOKENIZER_FILE}"
    try:
        found = tokenizer_record(spm.SentencePieceProcessor(model_proto=proto)) if proto else None
    except RuntimeError:  # sentencepiece's error for bytes that are not a model
        found = None
    if found is None:
        raise CheckpointError(f"{what} is not a sentencepiece model; {advice}")
    decoder_config = config["decoder_config"]
    record = dict(config["tokenizer"])
    recorded_digest = record.pop("sha256", None)
    claims = [(key, value, f"{CONFIG_FILE} tokenizer.{key}") for key, value in sorted(record.items())]
    claims += [(key, decoder_config.get(key, getattr(DecoderConfig, key, None)), f"decoder_config.{key}")
               for key in ("vocab_size", "pad_id", "bos_id", "eos_id")]
    wrong = [f"{key} {found.get(key)} where {source} says {value}" for key, value, source in claims
             if found.get(key) != value]
    if not wrong and recorded_digest is not None and recorded_digest != tokenizer_digest(proto):
        wrong = [f"sha256 {tokenizer_digest(proto)[:12]}... where {CONFIG_FILE} tokenizer.sha256 says "
                 f"{str(recorded_digest)[:12]}..."]
    if wrong:
        raise CheckpointError(f"{what} is not the tokenizer this model was trained with "
                              f"({', '.join(wrong[:2])}); {advice}")
    if recorded_digest is None and "format_version" in config:
        warnings.warn(f"{name}: {CONFIG_FILE} records no tokenizer sha256 (exported by an older export.py): "
                      f"{TOKENIZER_FILE} is checked by its size and special ids only; export it again to record it",
                      stacklevel=2)


def folder_config(checkpoint: dict) -> dict:
    """config.json of an exported folder: what a checkpoint holds besides tensors and the tokenizer's bytes."""
    tokenizer = {**tokenizer_record(spm.SentencePieceProcessor(model_proto=checkpoint["tokenizer"])),
                 "sha256": tokenizer_digest(checkpoint["tokenizer"])}
    training = {"epoch": checkpoint.get("epoch", 0), "metrics": checkpoint.get("metrics") or {},
                "args": shareable_args(checkpoint.get("args") or {}), "scst": scst_record(checkpoint)}
    return {"format_version": CHECKPOINT_VERSION, "decoder_config": checkpoint["decoder_config"],
            "encoder": checkpoint["encoder"], "tokenizer": tokenizer, "data": checkpoint.get("data") or {},
            "training": training}


def scst_record(checkpoint: dict) -> dict | None:
    """What a checkpoint says of its self-critical training (reward, samples, baseline, ...), without the path of
    an --init checkpoint; None when it was trained by cross-entropy alone."""
    record = checkpoint.get("scst")
    if not isinstance(record, dict):
        return None
    return {key: value for key, value in record.items() if key != "init"}


def shareable_args(args: dict) -> dict:
    """Training args without those naming files and folders: they mean nothing on another machine and can say
    more about the trainer's than they should. (The encoder's name is kept in the encoder record.)"""
    def names_a_path(value):
        values = value if isinstance(value, (list, tuple)) else [value]
        return any(isinstance(item, str) and ("/" in item or "\\" in item) for item in values)

    return {key: value for key, value in args.items() if not names_a_path(value)}


def save_folder(checkpoint: dict, out_dir, readme: str | None = None) -> Path:
    """Write checkpoint as an exported folder: model.safetensors, tokenizer.model, README.md (readme, if given)
    and config.json. The same checkpoint gives the same bytes (sorted keys, no dates). config.json goes first
    and comes back last, so a killed export leaves the folder as it was or one that says it is incomplete,
    never new weights under an old config."""
    out_dir = Path(out_dir)
    config = json.dumps(folder_config(checkpoint), indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    weights = {key: tensor.detach().cpu().contiguous() for key, tensor in checkpoint["decoder"].items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).unlink(missing_ok=True)
    # One metadata entry only: safetensors keeps metadata in a hash map, whose order could differ between runs.
    atomic_write(out_dir / WEIGHTS_FILE,
                 lambda handle: handle.write(safetensors.torch.save(weights, metadata={"format": "pt"})))
    atomic_write(out_dir / TOKENIZER_FILE, lambda handle: handle.write(checkpoint["tokenizer"]))
    if readme is not None:
        write_text(out_dir / "README.md", readme)
    write_text(out_dir / CONFIG_FILE, config)
    return out_dir


def written_by_export(entry: Path) -> bool:
    """True for a file of a folder save_folder wrote (or began to write before it was killed): config.json that is a
    captioner's, model.safetensors holding a decoder's latent statistics, tokenizer.model and README.md beside one of
    those. Anything else is someone else's, and export.py leaves it alone."""
    entry = Path(entry)
    if not entry.is_file():
        return False
    if entry.name == CONFIG_FILE:
        try:
            config = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(config, dict) and "format_version" in config and "decoder_config" in config
    if entry.name == WEIGHTS_FILE:
        try:
            with safetensors.safe_open(entry, framework="pt") as weights:
                return {"latent_mean", "latent_std"} <= set(weights.keys())
        except (safetensors.SafetensorError, OSError):
            return False
    if entry.name in (TOKENIZER_FILE, "README.md"):
        return any(written_by_export(entry.with_name(name)) for name in (CONFIG_FILE, WEIGHTS_FILE))
    return False


def decoder_from_checkpoint(checkpoint: dict) -> CaptionDecoder:
    """The CaptionDecoder a checkpoint describes, weights loaded, in eval mode."""
    check_decoder_weights(checkpoint["decoder_config"], checkpoint["decoder"], "the checkpoint's decoder",
                          "it was made by another version of this repo, or edited")
    try:
        decoder = CaptionDecoder(DecoderConfig(**checkpoint["decoder_config"]))
        decoder.load_state_dict(checkpoint["decoder"])
    except (TypeError, ValueError, KeyError, RuntimeError) as error:  # made by another version or edited
        raise CheckpointError(f"the checkpoint's decoder does not fit this repo's CaptionDecoder "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
    return decoder.eval()


# What must agree between the members of an ensemble: the encoder (or the features) they read.
ENSEMBLE_ENCODER_FIELDS = ("kind", "name", "fingerprint", "num_frames", "latent_dim", "shape", "dtype", "preprocess")


def model_paths(model_path) -> list:
    """--model_path as a list: none, one checkpoint, or the members of an ensemble."""
    if not model_path:
        return []
    return [model_path] if isinstance(model_path, (str, Path)) else list(model_path)


def ensemble_from_checkpoints(checkpoints: list, model_paths: list):
    """One decoder for several checkpoints: the decoder itself for one, an Ensemble (mean log-probabilities at
    every step) for more. CheckpointError naming the odd one out unless all have the first's tokenizer and
    encoder (or features) and read the same kind of features."""
    first, first_path = checkpoints[0], model_paths[0]
    for checkpoint, path in zip(checkpoints[1:], model_paths[1:]):
        if checkpoint["tokenizer"] != first["tokenizer"]:
            raise CheckpointError(f"{path}: another tokenizer than {first_path}'s; an ensemble's checkpoints must "
                                  "share the tokenizer (train them with the same --tokenizer_path)")
        differ = [field for field in ENSEMBLE_ENCODER_FIELDS
                  if checkpoint["encoder"].get(field) != first["encoder"].get(field)]
        if differ:
            raise CheckpointError(f"{path}: another encoder or features than {first_path}'s ({', '.join(differ)} "
                                  "differ); an ensemble's checkpoints must read the same inputs")
        if checkpoint["decoder_config"].get("decoder_type") != first["decoder_config"].get("decoder_type"):
            raise CheckpointError(f"{path}: a {checkpoint['decoder_config'].get('decoder_type')} decoder, "
                                  f"{first_path} a {first['decoder_config'].get('decoder_type')} one; an ensemble's "
                                  "decoders must read the same kind of features")
    decoders = [decoder_from_checkpoint(checkpoint) for checkpoint in checkpoints]
    return decoders[0] if len(decoders) == 1 else Ensemble(decoders).eval()


def checkpoint_digest(checkpoint: dict) -> str:
    """sha256 of the decoder's weights (each tensor's name, dtype, shape and bytes, in sorted name order): the same for
    a .pt, the folder exported from it and its Hub repo, and different for any other weights."""
    digest = hashlib.sha256()
    for key in sorted(checkpoint["decoder"]):
        tensor = checkpoint["decoder"][key].detach().cpu().contiguous()
        digest.update(f"{key}|{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_from_checkpoint(checkpoint: dict, tokenizer_path=None) -> spm.SentencePieceProcessor:
    """The checkpoint's own sentencepiece model; tokenizer_path, if given, must be the same model."""
    proto = checkpoint["tokenizer"]
    if tokenizer_path is not None:
        tokenizer_path = Path(tokenizer_path)
        if not tokenizer_path.is_file():
            raise CheckpointError(f"{tokenizer_path}: no such tokenizer file")
        if tokenizer_path.read_bytes() != proto:
            raise CheckpointError(f"{tokenizer_path}: not the tokenizer this checkpoint was trained with; "
                                  "leave --tokenizer_path out to use the checkpoint's own")
    return spm.SentencePieceProcessor(model_proto=proto)


ENCODER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def encoder_from_checkpoint(checkpoint: dict, xclip_model=None, dtype=None, device="cpu") -> XClipEncoder:
    """Load the X-CLIP the checkpoint was trained on (or a local copy of it) and check it is the same one. It runs
    in the dtype its latents were made in (the record's "dtype": fp32 or bf16), unless dtype is given."""
    info = checkpoint["encoder"]
    dtype = dtype or ENCODER_DTYPES.get(info.get("dtype", "fp32"))
    if dtype is None:
        raise CheckpointError(f"the checkpoint's encoder record names dtype {info.get('dtype')!r}; this code knows "
                              f"{', '.join(ENCODER_DTYPES)}")
    encoder = XClipEncoder(xclip_model or info["name"], dtype=dtype).to(device)
    if not encoder.made(info["fingerprint"], info["name"]):
        raise CheckpointError(f"{xclip_model or info['name']}: not the X-CLIP this checkpoint was trained with "
                              f"(fingerprint {encoder.fingerprint()} != {info['fingerprint']}, "
                              f"trained with {info['name']})")
    return encoder


class Captioner(NamedTuple):
    """What captioning needs, as load_captioner gives it."""

    encoder: XClipEncoder | None     # None for a checkpoint trained on precomputed features (with_encoder=False)
    decoder: CaptionDecoder
    tokenizer: spm.SentencePieceProcessor
    preprocess: "Preprocess | None"  # X-CLIP's frame preprocessing the checkpoint records (dataset.Preprocess)


def load_captioner(model_path, device="cpu", xclip_model=None, tokenizer_path=None, with_encoder=True,
                   names=None) -> Captioner:
    """The one loader of a captioner for inference, evaluation, the demo and the tools: the decoder on device,
    the checkpoint's tokenizer (tokenizer_path, if given, checked against it), and the X-CLIP it names (or
    xclip_model, a local copy of it) on device in the dtype its latents were made in, with its preprocessing.

    model_path: a .pt, an exported folder, a Hub repo id, or a checkpoint dict load_checkpoint returned; or a list
    of them, decoded as one ensemble (ensemble_from_checkpoints; names: how messages call them). A checkpoint
    trained on precomputed features has no encoder: a UserError with with_encoder, else encoder and preprocess
    are None."""
    from dataset import Preprocess

    sources = list(model_path) if isinstance(model_path, (list, tuple)) else [model_path]
    names = names or ["the checkpoint" if isinstance(source, dict) else str(source) for source in sources]
    checkpoints = [source if isinstance(source, dict) else load_checkpoint(source) for source in sources]
    checkpoint = checkpoints[0]
    record = checkpoint["encoder"]
    on_features = record.get("kind") == "features"
    if with_encoder and on_features:
        raise UserError(f"{names[0]}: this checkpoint needs precomputed features ({record.get('name')}, shape "
                        f"{record.get('shape')}), not videos; caption its features with evaluate.py --features DIR")
    tokenizer = tokenizer_from_checkpoint(checkpoint, tokenizer_path)
    decoder = ensemble_from_checkpoints(checkpoints, names).to(device)
    if not with_encoder or on_features:
        return Captioner(None, decoder, tokenizer, None)
    encoder = encoder_from_checkpoint(checkpoint, xclip_model, device=device)
    return Captioner(encoder, decoder, tokenizer, Preprocess.from_dict(record["preprocess"]))


def summary(checkpoint: dict) -> dict:
    """Plain-data description of a checkpoint, for printing."""
    return {"version": checkpoint["version"], "encoder": checkpoint["encoder"],
            "decoder_config": checkpoint["decoder_config"], "epoch": checkpoint.get("epoch"),
            "metrics": checkpoint.get("metrics"), "tokenizer_bytes": len(checkpoint["tokenizer"])}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Print what a captioner checkpoint holds.")
    parser.add_argument("model_path",
                        help="checkpoint file (models/best.pt), exported folder, or Hub repo id (user/name)")
    return parser.parse_args(argv)


def main(args) -> int:
    use_warning_lines()
    try:
        checkpoint = load_checkpoint(args.model_path)
    except CheckpointError as error:
        return fail(error)
    print(json.dumps(summary(checkpoint), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
