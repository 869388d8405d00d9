"""The captioner end to end on synthetic clips and a tiny random X-CLIP: encoder, cache, train, evaluate, inference."""
import json

import numpy as np
import pytest
import torch

import encode
import evaluate
import train
from checkpoint import load_checkpoint
from annotations import load_msrvtt
from dataset import read_video
from model import XClipEncoder
from synthetic import make_tiny_xclip


@pytest.fixture(scope="module")
def world(synthetic_world):
    """A 72-clip synthetic MSR-VTT, a tiny X-CLIP and a tokenizer (conftest.synthetic_world)."""
    return synthetic_world(num_videos=72, seed=1, vocab_size=400)


def eval_args(world, model_path, control="none"):
    return evaluate.parse_args([
        "--model_path", str(model_path), "--data_dir", str(world["data"]), "--split", "test",
        "--xclip_model", str(world["xclip"]), "--cache_dir", str(world["root"] / "cache"), "--java", "no",
        "--num_workers", "0", "--beam_size", "3", "--control", control])


def test_encoder_reads_its_config_and_matches_get_video_features(world):
    encoder = XClipEncoder(str(world["xclip"]))
    assert (encoder.num_frames, encoder.image_size, encoder.latent_dim) == (16, 32, 512)
    assert not any(p.requires_grad for p in encoder.parameters())
    pixels = torch.randn(2, 16, 3, 32, 32)
    output = encoder.model.get_video_features(pixel_values=pixels)
    expected = output if torch.is_tensor(output) else output.pooler_output
    assert torch.allclose(encoder.encode(pixels), expected, atol=1e-6)
    encoder.train()
    assert not encoder.model.training  # frozen stays in eval mode


def test_missing_encoder_is_one_clear_line(tmp_path, run_cli):
    result = run_cli("encode", "--videos", tmp_path, "--xclip_model", tmp_path / "no-such-xclip", "--cache_dir",
                     tmp_path / "cache")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--xclip_model" in result.stderr.strip().splitlines()[-1]


def test_cache_is_built_once_named_by_encoder_and_resumes(world, tmp_path):
    msrvtt = load_msrvtt(world["data"])
    items = [(vid, msrvtt.video_path(vid)) for vid in msrvtt.splits["val"]]
    encoder, _ = encode.load_encoder(str(world["xclip"]))
    cache, preprocess = encode.open_cache(encoder, tmp_path)
    quiet = encode.EncodeOptions(num_workers=0, progress=False)
    first = encode.encode_videos(items[:3], encoder, cache, preprocess, quiet)
    assert first["encoded"] == 3
    # A killed run leaves at most a temporary file; it is never read back as an entry.
    (cache.entries / f".{items[3][0]}.tmp999.npy").write_bytes(b"half")
    second = encode.encode_videos(items, encoder, cache, preprocess, quiet)
    assert second["cached"] == 3 and second["encoded"] == len(items) - 3
    frames, _ = read_video(items[4][1], num_frames=16, preprocess=preprocess)
    expected = encoder.encode(torch.from_numpy(frames)[None])[0].numpy()
    assert np.allclose(cache.read([items[4][0]])[0], expected, atol=1e-5)
    other = XClipEncoder(str(make_tiny_xclip(tmp_path / "other-xclip", seed=1)))
    other_cache, _ = encode.open_cache(other, tmp_path)
    assert other_cache.root != cache.root and not other_cache.has(items[0][0])


@pytest.mark.slow
def test_cache_of_a_folder_lists_broken_videos(world, tmp_path, run_cli):
    folder = tmp_path / "videos"
    folder.mkdir()
    msrvtt = load_msrvtt(world["data"])
    for vid in msrvtt.splits["test"][:3]:
        (folder / f"{vid}.mp4").write_bytes(msrvtt.video_path(vid).read_bytes())
    (folder / "broken.mp4").write_text("not a video")
    result = run_cli("encode", "--videos", folder, "--xclip_model", world["xclip"], "--cache_dir", tmp_path / "cache",
                     "--num_workers", "0")
    assert result.returncode == 0, result.stderr
    assert "3 encoded" in result.stdout and "1 failed" in result.stdout
    failures = [json.loads(line) for line in next((tmp_path / "cache").glob("*/failures.jsonl")).read_text().splitlines()]
    assert [f["video_id"] for f in failures] == ["broken"]
    strict = run_cli("encode", "--videos", folder, "--xclip_model", world["xclip"], "--cache_dir", tmp_path / "cache2",
                     "--num_workers", "0", "--strict")
    assert strict.returncode == 2 and "broken.mp4" in strict.stderr and "Traceback" not in strict.stderr


@pytest.fixture(scope="module")
def trained(world, train_args):
    out_dir = world["root"] / "models"
    assert train.main(train_args(world, out_dir, 12)) == 0
    return out_dir


@pytest.mark.slow
def test_training_writes_logs_and_self_contained_checkpoints(trained, world):
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == list(range(1, 13))
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    best = load_checkpoint(trained / "best.pt")
    assert best["metrics"]["val"]["CIDEr"] == max(record["val"]["CIDEr"] for record in log)
    assert best["tokenizer"] == world["tokenizer"].read_bytes()
    assert best["encoder"]["num_frames"] == 16 and best["encoder"]["preprocess"]["image_size"] == 32
    assert torch.load(trained / "last.pt", weights_only=True)["epoch"] == 12
    assert (trained / "curves.png").stat().st_size > 0  # redrawn after every epoch


@pytest.mark.slow
def test_trained_captioner_beats_shuffled_and_zero_latents(trained, world):
    real_result = evaluate.evaluate_checkpoint(eval_args(world, trained / "best.pt"), java=False)
    zeros_result = evaluate.evaluate_checkpoint(eval_args(world, trained / "best.pt", "zeros"), java=False)
    shuffled = evaluate.evaluate_checkpoint(eval_args(world, trained / "best.pt", "shuffled"), java=False)["metrics"]
    real, zeros = real_result["metrics"], zeros_result["metrics"]
    assert real["CIDEr"] > shuffled["CIDEr"] + 0.2 and real["CIDEr"] > zeros["CIDEr"] + 0.2
    assert real["colour_accuracy"] > shuffled["colour_accuracy"] + 0.2
    # Zero latents: one caption for every video, the collapse the diagnostics warn about; the trained model varies.
    assert zeros_result["diagnostics"]["distinct_captions"] == 1 and zeros_result["diagnostics"]["collapsed"]
    assert not real_result["diagnostics"]["collapsed"] and real_result["diagnostics"]["distinct_captions"] > 1
    per_video = [record["scores"]["CIDEr"] for record in real_result["predictions"]]
    assert sum(per_video) / len(per_video) == pytest.approx(real["CIDEr"])  # CIDEr-D is the mean of its items


@pytest.mark.slow
def test_inference_captions_good_videos_and_reports_bad_ones(trained, world, tmp_path, run_cli):
    msrvtt = load_msrvtt(world["data"])
    good = [str(msrvtt.video_path(vid)) for vid in msrvtt.splits["test"][:2]]
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    command = ["inference", "--model_path", trained / "best.pt", "--xclip_model", world["xclip"], "--json",
               "--num_captions", "2", "--video_path"]
    result = run_cli(*command, *good, bad)
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == good
    assert all(len(line["captions"]) == 2 and line["captions"][0]["caption"] for line in lines)
    assert set(lines[0]["seconds"]) == {"decode", "encode", "generate"}
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "bad.mp4" in result.stderr
    assert "Traceback" not in result.stderr
    alone = run_cli(*command[:-3], "--video_path", good[0])
    assert alone.returncode == 0 and len(alone.stdout.strip().splitlines()) == 1


@pytest.mark.slow
def test_resume_continues_to_the_same_weights(world, tmp_path, monkeypatch, train_args):
    straight = tmp_path / "straight"
    assert train.main(train_args(world, straight, 2)) == 0
    broken = tmp_path / "broken"
    real_save = train.save_checkpoint

    def save_then_die(path, payload):  # the run is killed right after epoch 1's last.pt
        real_save(path, payload)
        if path.name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    assert train.main(train_args(world, broken, 2)) == 130  # Ctrl-C: one line, not a traceback
    monkeypatch.undo()
    assert load_checkpoint(broken / "last.pt")["epoch"] == 1
    assert train.main(train_args(world, broken, 2, "--resume")) == 0
    a = load_checkpoint(straight / "last.pt")["decoder"]
    b = load_checkpoint(broken / "last.pt")["decoder"]
    assert all(torch.equal(a[name], b[name]) for name in a)
