"""Sharing a captioner: export.py's folder (safetensors, config.json, tokenizer, model card), loading it from the
folder or from a Hub repo id in a local Hub cache (no network), strict checks on bad folders, and the push."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import torch
import yaml

import checkpoint
import evaluate
import export
import inference
import train
from annotations import load_msrvtt
from checkpoint import (CHECKPOINT_VERSION, CheckpointError, checkpoint_digest, is_repo_id, load_checkpoint,
                        save_checkpoint)
from common import write_json
from create_tokenizer import train_captions, train_tokenizer

REPO = Path(__file__).resolve().parent.parent
REPO_ID = "someone/captioner"


def hub_cache(folder, cache, repo_id):
    """Lay folder out in cache as huggingface_hub lays out a downloaded model repo: files in blobs/ named by
    their hash (sha256 for LFS files, the git blob sha1 for the others), snapshots/<commit>/<file> linking to
    them, and refs/main naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        lfs = file.suffix in (".safetensors", ".model")  # binary files go to LFS under the Hub's .gitattributes
        blob = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs" / "main").write_text(commit)
    return cache


@pytest.fixture(scope="module")
def world(synthetic_world):
    """A checkpoint trained for two epochs on 30 synthetic clips, its test scores, its export, and a local Hub
    cache holding the export as REPO_ID."""
    world = synthetic_world(num_videos=30, seed=3, vocab_size=300)
    root, xclip, tokenizer = world["root"], world["xclip"], world["tokenizer"]
    assert train.main(train.parse_args([
        "--data_dir", str(root / "data"), "--tokenizer_path", str(tokenizer), "--xclip_model", str(xclip),
        "--cache_dir", str(root / "cache"), "--out_dir", str(root / "models"), "--epochs", "2", "--batch_size", "32",
        "--embed_dim", "64", "--hidden_dim", "128", "--num_layers", "1", "--dropout", "0.1", "--warmup_steps", "5",
        "--learning_rate", "3e-3", "--num_workers", "0", "--beam_size", "2", "--patience", "0"])) == 0
    world = {"root": root, "data": root / "data", "xclip": xclip, "tokenizer": tokenizer,
             "pt": root / "models" / "best.pt", "folder": root / "captioner", "results": root / "results.json"}
    write_json(world["results"], evaluate.evaluate_checkpoint(eval_args(world, world["pt"]), java=False))
    assert export.main(export.parse_args(["--model_path", str(world["pt"]), "--out_dir", str(world["folder"]),
                                          "--results", str(world["results"])])) == 0
    world["hub"] = hub_cache(world["folder"], root / "hub", REPO_ID)
    scan = huggingface_hub.scan_cache_dir(world["hub"])  # huggingface_hub reads the layout as its own
    assert [(repo.repo_id, repo.nb_files) for repo in scan.repos] == [(REPO_ID, 4)] and not scan.warnings
    return world


@pytest.fixture
def offline_hub(world, monkeypatch):
    """huggingface_hub reads the test's Hub cache and refuses every request, as HF_HUB_CACHE and HF_HUB_OFFLINE=1 do."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(world["hub"]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def eval_args(world, model_path):
    return evaluate.parse_args([
        "--model_path", str(model_path), "--data_dir", str(world["data"]), "--split", "test",
        "--xclip_model", str(world["xclip"]), "--cache_dir", str(world["root"] / "cache"), "--java", "no",
        "--num_workers", "0", "--beam_size", "3"])


def test_folder_holds_what_the_checkpoint_holds_and_its_card_parses(world):
    assert sorted(path.name for path in world["folder"].iterdir()) == sorted(export.SHARED_FILES)
    original, exported = load_checkpoint(world["pt"]), load_checkpoint(world["folder"])
    assert original["decoder"].keys() == exported["decoder"].keys()
    assert all(torch.equal(original["decoder"][key], exported["decoder"][key]) for key in original["decoder"])
    assert "latent_mean" in exported["decoder"] and "latent_std" in exported["decoder"]  # buffers travel too
    for key in ("decoder_config", "tokenizer", "encoder", "data", "epoch", "metrics"):
        assert exported[key] == original[key], key
    assert exported["args"]["epochs"] == 2 and "data_dir" not in exported["args"]  # local paths stay home
    config_text = (world["folder"] / "config.json").read_text()
    assert str(world["root"] / "data") not in config_text
    assert json.loads(config_text)["tokenizer"] == {"vocab_size": 300, "pad_id": 0, "unk_id": 1, "bos_id": 2,
                                                    "eos_id": 3, "sha256": hashlib.sha256(original["tokenizer"]).hexdigest()}

    card = (world["folder"] / "README.md").read_text()
    assert card.startswith("---\n")
    metadata = yaml.safe_load(card.split("\n---\n")[0][4:])
    assert metadata["license"] == "other" and metadata["library_name"] == "pytorch"
    assert metadata["pipeline_tag"] == "video-text-to-text" and metadata["datasets"] == ["msrvtt"]
    assert {"bleu", "cider"} <= set(metadata["metrics"]) and "video-captioning" in metadata["tags"]
    for heading in ("## How to use", "## Training", "## Results", "## Limitations"):
        assert heading in card
    cider = json.loads(world["results"].read_text())["metrics"]["CIDEr"]
    assert f"| CIDEr | {100 * cider:.1f} |" in card  # the test scores, not the validation ones
    assert "--beam_size 3 --length_penalty 1.0 --data_dir" in card  # and the decoding that made them
    assert f"| {exported['epoch']} (exported) |" in card  # the curve from log.jsonl
    assert f"--model_path {world['folder']} --xclip_model" in card  # a local X-CLIP: the card says to pass it


def test_exporting_again_gives_the_same_bytes(world, capsys):
    before = {path.name: path.read_bytes() for path in world["folder"].iterdir()}
    assert export.main(export.parse_args(["--model_path", str(world["pt"]), "--out_dir", str(world["folder"]),
                                          "--results", str(world["results"])])) == 0
    assert {path.name: path.read_bytes() for path in world["folder"].iterdir()} == before
    assert "wrote config.json, model.safetensors, tokenizer.model, README.md" in capsys.readouterr().out


def test_folder_and_hub_repo_caption_exactly_like_the_checkpoint(world, offline_hub, capsys):
    msrvtt = load_msrvtt(world["data"])
    clips = [str(msrvtt.video_path(vid)) for vid in msrvtt.splits["test"][:4]]
    captions = {}
    for model_path in (world["pt"], world["folder"], REPO_ID):
        args = inference.parse_args(["--model_path", str(model_path), "--xclip_model", str(world["xclip"]),
                                     "--device", "cpu", "--json", "--num_captions", "2", "--video_path", *clips])
        assert inference.main(args) == 0
        captions[model_path] = [json.loads(line)["captions"] for line in capsys.readouterr().out.splitlines()]
    assert len(captions[world["pt"]]) == len(clips)
    assert captions[world["pt"]] == captions[world["folder"]] == captions[REPO_ID]


def test_hub_env_vars_reach_the_loader(world, tmp_path):
    """HF_HUB_CACHE and HF_HUB_OFFLINE=1 as a user sets them: the repo id loads from the cache, no network."""
    env = {**os.environ, "HF_HUB_CACHE": str(world["hub"]), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "checkpoint.py", REPO_ID], cwd=REPO, capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["encoder"] == load_checkpoint(world["pt"])["encoder"]


def test_folder_and_hub_repo_score_exactly_like_the_checkpoint(world, offline_hub):
    expected = json.loads(world["results"].read_text())
    for model_path in (world["folder"], REPO_ID):
        result = evaluate.evaluate_checkpoint(eval_args(world, model_path), java=False)
        assert result["metrics"] == expected["metrics"] and result["predictions"] == expected["predictions"]


def test_the_digest_is_the_same_from_the_checkpoint_its_folder_and_its_hub_repo(world, offline_hub):
    loaded = {model_path: load_checkpoint(model_path) for model_path in (world["pt"], world["folder"], REPO_ID)}
    original = loaded[world["pt"]]["decoder"]
    for checkpoint_dict in loaded.values():
        weights = checkpoint_dict["decoder"]
        assert weights.keys() == original.keys()
        for key in original:
            assert weights[key].device.type == "cpu" and weights[key].dtype == original[key].dtype
            assert weights[key].shape == original[key].shape
            assert weights[key].reshape(-1).view(torch.uint8).numpy().tobytes() == \
                original[key].reshape(-1).view(torch.uint8).numpy().tobytes(), key
    digests = {checkpoint_digest(checkpoint_dict) for checkpoint_dict in loaded.values()}
    assert digests == {json.loads(world["results"].read_text())["checkpoint_digest"]}


def perturbed_checkpoint(world, path):
    """world's checkpoint with one weight changed by 1e-3, saved at path."""
    other = load_checkpoint(world["pt"])
    other["decoder"] = dict(other["decoder"])
    other["decoder"]["head.bias"] = other["decoder"]["head.bias"].clone()
    other["decoder"]["head.bias"][0] += 1e-3
    save_checkpoint(path, {key: value for key, value in other.items() if key != "version"})
    assert checkpoint_digest(load_checkpoint(path)) != checkpoint_digest(load_checkpoint(world["pt"]))
    return path


def test_results_of_another_checkpoint_are_refused_in_one_line(world, tmp_path, capsys):
    other = perturbed_checkpoint(world, tmp_path / "other.pt")
    out_dir = tmp_path / "captioner"
    capsys.readouterr()
    assert export.main(export.parse_args(["--model_path", str(other), "--out_dir", str(out_dir),
                                          "--results", str(world["results"])])) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith(f"error: {world['results']}: measured on another "
                                                                  f"checkpoint ({world['pt']})"), lines
    assert f"evaluate.py --model_path {other} ... --out FILE" in lines[0]
    assert not out_dir.exists()


def test_results_without_a_digest_warn_only_when_they_name_another_checkpoint(world, tmp_path, recwarn):
    results = json.loads(world["results"].read_text())
    del results["checkpoint_digest"]  # as evaluate.py wrote them before it recorded the digest
    for named, warned in ((str(world["pt"]), False), (str(tmp_path / "elsewhere" / "best.pt"), True)):
        write_json(tmp_path / "old-results.json", {**results, "model_path": named})
        out_dir = tmp_path / f"captioner-{warned}"
        recwarn.clear()
        assert export.main(export.parse_args(["--model_path", str(world["pt"]), "--out_dir", str(out_dir),
                                              "--results", str(tmp_path / "old-results.json")])) == 0
        messages = [str(warning.message) for warning in recwarn]
        assert messages == ([f"{tmp_path / 'old-results.json'}: records no checkpoint digest (an older evaluate.py) "
                             f"and was measured on {named}, not on {world['pt']}; its scores may be another "
                             "checkpoint's"] if warned else []), messages
        assert sorted(path.name for path in out_dir.iterdir()) == sorted(export.SHARED_FILES)


def test_repo_ids_and_paths_are_told_apart():
    assert is_repo_id("user/name") and is_repo_id("an-org/captioner.v2")
    assert not any(map(is_repo_id, ["models/best.pt", "best.pt", "a/b/c", "/abs/folder", "./x/y", "../x", "name"]))


def test_hub_repo_missing_offline_or_not_an_export_is_one_line(world, offline_hub, tmp_path, capsys):
    assert checkpoint.main(checkpoint.parse_args(["someone/absent"])) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: someone/absent: ") and "HF_HUB_OFFLINE" in lines[0], lines
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "config.json").write_text("{}")
    hub_cache(stranger, Path(huggingface_hub.constants.HF_HUB_CACHE), "someone/stranger")
    with pytest.raises(CheckpointError, match="not an exported captioner"):
        load_checkpoint("someone/stranger")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "models" / "best.pt")


class WritesAFile:
    """A pickle that creates a file when it is loaded: proof that something was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def damage(folder, kind, world, tmp_path):
    """Make the exported folder bad in one way; the words its error must hold."""
    weights = safetensors.torch.load_file(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    if kind == "wrong shape":
        weights["head.bias"] = torch.zeros(weights["head.bias"].shape[0] + 1)
        words = "head.bias is (301,) where the config makes (300,)"
    elif kind == "missing tensor":
        del weights["latent_std"]
        words = "missing latent_std"
    elif kind == "extra tensor":
        weights["extra.weight"] = torch.ones(2)
        words = "unexpected extra.weight"
    elif kind == "newer format":
        config["format_version"] = CHECKPOINT_VERSION + 1
        words = "newer version"
    elif kind == "tokenizer of another vocabulary":
        other = train_tokenizer(train_captions(load_msrvtt(world["data"])), tmp_path / "other", vocab_size=290)
        shutil.copy(other, folder / "tokenizer.model")
        words = "vocab_size 290 where config.json tokenizer.vocab_size says 300"
    elif kind == "not a tokenizer":
        (folder / "tokenizer.model").write_bytes(b"not a sentencepiece model")
        words = "not a sentencepiece model"
    elif kind == "a pickle for weights":
        torch.save({"weights": WritesAFile(tmp_path / "code-ran")}, folder / "model.safetensors")
        return "not safetensors"
    elif kind == "no config":
        (folder / "config.json").unlink()
        return "no config.json"
    safetensors.torch.save_file(weights, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    return words


@pytest.mark.parametrize("kind", ["wrong shape", "missing tensor", "extra tensor", "newer format",
                                  "tokenizer of another vocabulary", "not a tokenizer", "a pickle for weights",
                                  "no config"])
def test_a_bad_folder_is_one_line_and_exit_2(world, tmp_path, capsys, kind):
    folder = tmp_path / "captioner"
    shutil.copytree(world["folder"], folder)
    words = damage(folder, kind, world, tmp_path)
    capsys.readouterr()
    assert checkpoint.main(checkpoint.parse_args([str(folder)])) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith(f"error: {folder}: ") and words in lines[0], lines
    assert not (tmp_path / "code-ran").exists()


def test_inference_with_a_bad_folder_exits_2_with_one_line(world, tmp_path, capsys):
    folder = tmp_path / "captioner"
    shutil.copytree(world["folder"], folder)
    words = damage(folder, "wrong shape", world, tmp_path)
    capsys.readouterr()
    args = inference.parse_args(["--model_path", str(folder), "--device", "cpu", "--video_path",
                                 str(world["root"] / "absent.mp4")])
    assert inference.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and words in err


def test_push_uploads_the_exported_folder(world, tmp_path, monkeypatch, capsys):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        calls.append(("upload_folder", kwargs, sorted(path.name for path in folder.iterdir()),
                      (folder / "README.md").read_text()))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out_dir = tmp_path / "captioner"
    flags = ["--model_path", str(world["pt"]), "--out_dir", str(out_dir), "--push_to_hub", "me/captioner"]
    assert export.main(export.parse_args(flags + ["--private"])) == 0
    (_, repo_id, options), (_, upload, files, card) = calls
    assert repo_id == "me/captioner" and options["private"] is True and options["exist_ok"] is True
    assert upload["repo_id"] == "me/captioner" and Path(upload["folder_path"]) == out_dir
    assert sorted(upload["allow_patterns"]) == sorted(files) == sorted(export.SHARED_FILES)
    assert "python inference.py --model_path me/captioner" in card
    assert "https://huggingface.co/me/captioner" in capsys.readouterr().out

    def offline(self, **kwargs):
        raise huggingface_hub.errors.OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", offline)
    assert export.main(export.parse_args(flags)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: --push_to_hub me/captioner: the upload failed") and "hf auth login" in lines[-1]
    assert export.main(export.parse_args(flags[:-1] + ["not-a-repo-id"])) == 2
