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
import pickle
import sys
from pathlib import Path

import safetensors
import safetensors.torch
import sentencepiece as spm
import torch
from huggingface_hub import constants as hub_constants, snapshot_download
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from common import UserError, atomic_write, fail, is_hub_id, one_line, write_text
from model import CaptionDecoder, DecoderConfig, Ensemble, XClipEncoder

# The format of .pt checkpoints and of exported folders (config.json's format_version); bump it when either
# changes in a way older code cannot read.
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("version", "decoder_config", "decoder", "tokenizer", "encoder")
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.model"
FOLDER_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
CONFIG_KEYS = ("format_version", "decoder_config", "encoder", "tokenizer")


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
    if checkpoint["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: made by a newer version of this repo (format {checkpoint['version']}, "
                              f"this code reads up to {CHECKPOINT_VERSION}); update the code")
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
    try:
        weights = safetensors.torch.load_file(folder / WEIGHTS_FILE)
    except (safetensors.SafetensorError, OSError) as error:
        raise CheckpointError(f"{name}: {WEIGHTS_FILE} is unreadable or not safetensors ({one_line(error)}); "
                              "export the folder again") from None
    check_decoder_weights(config["decoder_config"], weights, f"{name}: {WEIGHTS_FILE}",
                          "export the folder again from its .pt")
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
    if isinstance(version, int) and version > CHECKPOINT_VERSION:  # checked first: a newer format may differ in all
        raise CheckpointError(f"{name}: made by a newer version of this repo (format {version}, this code reads up "
                              f"to {CHECKPOINT_VERSION}); update the code")
    if version is None or any(not isinstance(config.get(key), int if key == "format_version" else dict)
                              for key in CONFIG_KEYS):
        raise CheckpointError(f"{name}: {CONFIG_FILE} is not a captioner's config (it needs "
                              f"{', '.join(CONFIG_KEYS)}); export the folder again")
    return config


def check_decoder_weights(decoder_config: dict, weights: dict, where: str, advice: str) -> None:
    """A CheckpointError (where, the problem, advice) naming the tensors that are missing, unexpected or of another
    shape than decoder_config gives them. The decoder is built on the meta device: shapes only, no memory."""
    try:
        with torch.device("meta"):
            expected = CaptionDecoder(DecoderConfig(**decoder_config)).state_dict()
    except (TypeError, ValueError) as error:  # a config from another version, or edited
        raise CheckpointError(f"{where} does not fit this repo's CaptionDecoder ({one_line(error)}); "
                              f"{advice}") from None
    problems = [f"missing {key}" for key in sorted(expected.keys() - weights.keys())]
    problems += [f"unexpected {key}" for key in sorted(weights.keys() - expected.keys())]
    problems += [f"{key} is {tuple(weights[key].shape)} where the config makes {tuple(expected[key].shape)}"
                 for key in sorted(expected.keys() & weights.keys()) if weights[key].shape != expected[key].shape]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(f"{where} does not fit its decoder config ({', '.join(problems[:3])}{more}); {advice}")


def tokenizer_record(processor: spm.SentencePieceProcessor) -> dict:
    """What config.json records of a tokenizer, and what loading checks: its size and special ids."""
    return {"vocab_size": processor.get_piece_size(), "pad_id": processor.pad_id(), "unk_id": processor.unk_id(),
            "bos_id": processor.bos_id(), "eos_id": processor.eos_id()}


def check_tokenizer(proto: bytes, config: dict, name: str) -> None:
    """A CheckpointError unless proto is a sentencepiece model with the size and special ids that config.json's
    tokenizer record and the decoder config give."""
    try:
        found = tokenizer_record(spm.SentencePieceProcessor(model_proto=proto)) if proto else None
    except RuntimeError:  # sentencepiece's error for bytes that are not a model
        found = None
    if found is None:
        raise CheckpointError(f"{name}: {TOKENIZER_FILE} is not a sentencepiece model; export the folder again")
    decoder_config = config["decoder_config"]
    claims = [(key, value, CONFIG_FILE) for key, value in sorted(config["tokenizer"].items())]
    claims += [(key, decoder_config.get(key), "the decoder config")
               for key in ("vocab_size", "pad_id", "bos_id", "eos_id")]
    wrong = [f"{key} {found.get(key)} where {source} says {value}" for key, value, source in claims
             if found.get(key) != value]
    if wrong:
        raise CheckpointError(f"{name}: {TOKENIZER_FILE} is not the tokenizer this model was trained with "
                              f"({', '.join(wrong[:2])}); export the folder again from its .pt")


def folder_config(checkpoint: dict) -> dict:
    """config.json of an exported folder: what a checkpoint holds besides tensors and the tokenizer's bytes."""
    tokenizer = tokenizer_record(spm.SentencePieceProcessor(model_proto=checkpoint["tokenizer"]))
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


def encoder_from_checkpoint(checkpoint: dict, xclip_model=None, dtype=None, device="cpu") -> XClipEncoder:
    """Load the X-CLIP the checkpoint was trained on (or a local copy of it) and check it is the same one."""
    info = checkpoint["encoder"]
    encoder = XClipEncoder(xclip_model or info["name"], dtype=dtype or torch.float32).to(device)
    if not encoder.made(info["fingerprint"], info["name"]):
        raise CheckpointError(f"{xclip_model or info['name']}: not the X-CLIP this checkpoint was trained with "
                              f"(fingerprint {encoder.fingerprint()} != {info['fingerprint']}, "
                              f"trained with {info['name']})")
    return encoder


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
    try:
        checkpoint = load_checkpoint(args.model_path)
    except CheckpointError as error:
        return fail(error)
    print(json.dumps(summary(checkpoint), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
