"""Exported folders and .pt checkpoints from a stranger: every field of config.json, the tensors and the tokenizer are
checked before anything is built, and each problem is one `error:` line naming the file and the field, exit 2."""
import io
import json
import math
import shutil

import pytest
import safetensors.torch
import sentencepiece as spm
import torch

import checkpoint
import export
import inference
from checkpoint import load_checkpoint, save_checkpoint
from tools import soak


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An untrained checkpoint (tiny X-CLIP, tokenizer, three clips) and the folder export.py makes of it."""
    root = tmp_path_factory.mktemp("hostile_checkpoints")
    world = {**soak.prepare(root, 3, seed=3), "root": root, "folder": root / "exported"}
    assert export.main(export.parse_args(["--model_path", str(world["model_path"]),
                                          "--out_dir", str(world["folder"])])) == 0
    return world


def run_loader(model_path, capsys):
    """checkpoint.py's main on model_path -> (exit code, stderr lines)."""
    capsys.readouterr()
    code = checkpoint.main(checkpoint.parse_args([str(model_path)]))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def edited_folder(world, tmp_path, edit):
    """A copy of the exported folder whose config.json went through edit(config)."""
    folder = tmp_path / "folder"
    shutil.copytree(world["folder"], folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def setter(path, value):
    """edit(config) that sets config[a][b]... = value, or deletes it when value is DELETE."""
    def edit(config):
        *parents, last = path.split(".")
        for key in parents:
            config = config[key]
        if value is DELETE:
            del config[last]
        else:
            config[last] = value
    return edit


DELETE = object()
CONFIG_CASES = [
    ("format_version", 0), ("format_version", True), ("format_version", "1"), ("format_version", 99),
    ("decoder_config", []), ("decoder_config.vocab_size", DELETE), ("decoder_config.vocab_size", 0),
    ("decoder_config.vocab_size", 301), ("decoder_config.latent_dim", 0), ("decoder_config.embed_dim", -3),
    ("decoder_config.hidden_dim", -5), ("decoder_config.hidden_dim", 0), ("decoder_config.hidden_dim", 10**9),
    ("decoder_config.hidden_dim", "64"), ("decoder_config.hidden_dim", 64.5), ("decoder_config.hidden_dim", True),
    ("decoder_config.hidden_dim", None), ("decoder_config.hidden_dim", 65), ("decoder_config.num_layers", -1),
    ("decoder_config.num_layers", 0), ("decoder_config.num_layers", 1000), ("decoder_config.dropout", 1.5),
    ("decoder_config.dropout", -0.1), ("decoder_config.dropout", math.nan), ("decoder_config.dropout", "0.1"),
    ("decoder_config.label_smoothing", 2), ("decoder_config.latent_every_step", "yes"),
    ("decoder_config.pad_id", -1), ("decoder_config.pad_id", 300), ("decoder_config.bos_id", "2"),
    ("decoder_config.eos_id", 5), ("decoder_config.decoder_type", "transformer"),
    ("decoder_config.attention_dim", -1), ("decoder_config.num_frames", 0), ("decoder_config.extra_field", 1),
    ("encoder", {}), ("encoder", "xclip"), ("encoder.name", DELETE), ("encoder.name", 5), ("encoder.name", ""),
    ("encoder.fingerprint", DELETE), ("encoder.num_frames", 0), ("encoder.num_frames", "16"),
    ("encoder.preprocess", "x"), ("encoder.preprocess", {}), ("encoder.preprocess.image_size", -1),
    ("encoder.preprocess.shortest_edge", "32"), ("encoder.preprocess.mean", [1, 2]),
    ("encoder.preprocess.std", [0, 1, 1]), ("encoder.preprocess.std", "abc"), ("encoder.dtype", "fp64"),
    ("encoder.sampling", 3), ("encoder.kind", "other"), ("encoder.latent_dim", 256), ("encoder.kind", "features"),
    ("tokenizer", "x"), ("tokenizer.vocab_size", 500), ("tokenizer.eos_id", 7), ("tokenizer.sha256", "0" * 64),
    ("data", []), ("data.dataset", ["msrvtt"]), ("data.scheme", 7), ("training", "x"), ("training.epoch", -1),
    ("training.args", []), ("training.metrics", 1)]


@pytest.mark.parametrize("field, value", CONFIG_CASES, ids=[f"{field}={value!r}"[:40] for field, value in CONFIG_CASES])
def test_each_bad_config_field_is_one_line_before_the_weights_are_read(world, tmp_path, field, value, capsys,
                                                                       monkeypatch):
    folder = edited_folder(world, tmp_path, setter(field, value))
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were read before the config was refused")

    # Values of the right type and range that the other files contradict are found when those are compared.
    words = {"decoder_config.vocab_size=301": ["model.safetensors", "does not fit"],
             "decoder_config.hidden_dim=65": ["model.safetensors", "does not fit"],
             "decoder_config.eos_id=5": ["tokenizer.model", "eos_id"],
             "encoder.kind='features'": ["config.json", "encoder.shape"]}.get(f"{field}={value!r}")
    if words is None:
        words = ["config.json", field]
        if not field.startswith("tokenizer"):  # the tokenizer record is compared with the tokenizer, after the weights
            monkeypatch.setattr(safetensors.torch, "load_file", no_weights)
    code, lines = run_loader(folder, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {folder}: "), lines
    assert all(word in lines[0] for word in words), lines[0]
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_a_config_asking_for_a_huge_decoder_is_refused_before_it_is_built(world, tmp_path, capsys, monkeypatch):
    def huge(config):
        config["decoder_config"].update(hidden_dim=65536, num_layers=64, embed_dim=65536)
    folder = edited_folder(world, tmp_path, huge)
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *args: pytest.fail("weights read"))
    code, lines = run_loader(folder, capsys)
    assert code == 2 and len(lines) == 1 and "GiB" in lines[0] and "config.json" in lines[0], lines


def write_weights(folder, change):
    weights = safetensors.torch.load_file(folder / "model.safetensors")
    change(weights)
    (folder / "model.safetensors").write_bytes(safetensors.torch.save(weights))


TENSOR_CASES = {
    "latent_std zero": (lambda w: w["latent_std"].zero_(), "latent_std"),
    "latent_std negative": (lambda w: w["latent_std"].__setitem__(0, -1.0), "latent_std"),
    "nan weight": (lambda w: w["head.weight"].__setitem__((0, 0), math.nan), "head.weight"),
    "inf weight": (lambda w: w["embed.weight"].__setitem__((1, 1), math.inf), "embed.weight"),
    "integer tensor": (lambda w: w.__setitem__("head.bias", w["head.bias"].to(torch.int32)), "head.bias"),
    "wrong shape": (lambda w: w.__setitem__("head.bias", w["head.bias"][:5]), "head.bias"),
    "missing tensor": (lambda w: w.pop("latent_mean"), "latent_mean"),
    "extra tensor": (lambda w: w.__setitem__("extra", torch.zeros(2)), "extra"),
}


@pytest.mark.parametrize("case", TENSOR_CASES)
def test_tensors_a_model_cannot_use_are_refused_in_folders_and_checkpoints(world, tmp_path, case, capsys):
    change, named = TENSOR_CASES[case]
    folder = tmp_path / "folder"
    shutil.copytree(world["folder"], folder)
    write_weights(folder, change)
    code, lines = run_loader(folder, capsys)
    assert code == 2 and len(lines) == 1 and "model.safetensors" in lines[0] and named in lines[0], lines
    payload = load_checkpoint(world["model_path"])
    change(payload["decoder"])
    save_checkpoint(tmp_path / "bad.pt", payload)
    code, lines = run_loader(tmp_path / "bad.pt", capsys)
    assert code == 2 and len(lines) == 1 and "bad.pt" in lines[0] and named in lines[0], lines


PT_CASES = [("decoder_config.hidden_dim", -5), ("decoder_config.num_layers", 10**6), ("decoder_config", "x"),
            ("encoder", {}), ("encoder.preprocess", None), ("encoder.name", DELETE), ("tokenizer", "text"),
            ("tokenizer", b"not a model"), ("decoder", [1, 2]), ("args", []), ("metrics", "x"), ("epoch", -1),
            ("data", 3), ("version", "1"), ("version", True)]


@pytest.mark.parametrize("field, value", PT_CASES, ids=[f"{field}={value!r}"[:40] for field, value in PT_CASES])
def test_each_bad_checkpoint_field_is_one_line(world, tmp_path, field, value, capsys):
    payload = load_checkpoint(world["model_path"])
    setter(field, value)(payload)
    save_checkpoint(tmp_path / "bad.pt", payload)
    code, lines = run_loader(tmp_path / "bad.pt", capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'bad.pt'}: "), lines
    assert field.split(".")[-1] in lines[0], lines[0]


def other_tokenizer(like: spm.SentencePieceProcessor, tmp_path) -> bytes:
    """Another sentencepiece model with the same size and special ids, trained on other text."""
    model = io.BytesIO()
    corpus = [f"zebra {index} quantum violin orbit marmalade {index * 7}" for index in range(300)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model,
                                   vocab_size=like.get_piece_size(), model_type="bpe", pad_id=like.pad_id(),
                                   unk_id=like.unk_id(), bos_id=like.bos_id(), eos_id=like.eos_id(),
                                   byte_fallback=True, hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


def test_a_swapped_tokenizer_of_the_same_size_and_ids_is_refused(world, tmp_path, capsys):
    folder = tmp_path / "folder"
    shutil.copytree(world["folder"], folder)
    original = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    swapped = other_tokenizer(original, tmp_path)
    assert checkpoint.tokenizer_record(spm.SentencePieceProcessor(model_proto=swapped)) == \
        checkpoint.tokenizer_record(original)  # only the digest tells them apart
    (folder / "tokenizer.model").write_bytes(swapped)
    code, lines = run_loader(folder, capsys)
    assert code == 2 and len(lines) == 1 and "tokenizer.model" in lines[0] and "sha256" in lines[0], lines


def test_a_folder_exported_before_the_digest_loads_with_a_warning(world, tmp_path, capsys):
    folder = edited_folder(world, tmp_path, setter("tokenizer.sha256", DELETE))
    with pytest.warns(UserWarning, match="records no tokenizer sha256"):
        code, lines = run_loader(folder, capsys)
    assert code == 0 and lines == []


def test_inference_with_an_edited_folder_is_one_line_and_writes_nothing(world, tmp_path, capsys):
    folder = edited_folder(world, tmp_path, setter("decoder_config.hidden_dim", -5))
    srt = tmp_path / "out.srt"
    code = inference.main(inference.parse_args([
        "--model_path", str(folder), "--xclip_model", str(world["xclip_model"]), "--device", "cpu",
        "--video_path", str(world["videos"][0]), "--segment_seconds", "1", "--srt", str(srt)]))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "decoder_config.hidden_dim" in lines[0] and not srt.exists(), lines
