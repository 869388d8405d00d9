"""The GPU path on a CPU: bf16 caches end to end, the device each process takes, the LSTM outside autocast, the
uint8 frame path (the same latents bit for bit), and bad device requests as one line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import common
import encode
import inference
import model
import train
from annotations import load_msrvtt
from captioning import Decoding, caption_video
from checkpoint import load_captioner, load_checkpoint
from common import UserError, resolve_device
from create_tokenizer import train_captions, train_tokenizer
from dataset import Preprocess, collate_clips, normalise_levels, read_video
from model import CaptionDecoder, DecoderConfig, XClipEncoder
from synthetic import make_synthetic_msrvtt, make_tiny_xclip

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 16-clip synthetic MSR-VTT, a tiny X-CLIP and a tokenizer."""
    root = tmp_path_factory.mktemp("gpu_path")
    make_synthetic_msrvtt(root / "data", num_videos=16, seed=4, progress=False)
    xclip = make_tiny_xclip(root / "xclip", seed=0)
    tokenizer = train_tokenizer(train_captions(load_msrvtt(root / "data")), root / "tokenizer", vocab_size=300)
    return {"root": root, "data": root / "data", "xclip": xclip, "tokenizer": tokenizer}


def some_clips(world, count=3):
    return sorted((world["data"] / "MSRVTT" / "videos" / "all").glob("*.mp4"))[:count]


# ----------------------------------------------------------------------------------------------------------------------
# A model trained on a bf16 cache is captioned by every loader

@pytest.fixture(scope="module")
def bf16_model(world):
    out_dir = world["root"] / "bf16-run"
    args = train.parse_args(["--data_dir", str(world["data"]), "--tokenizer_path", str(world["tokenizer"]),
                             "--xclip_model", str(world["xclip"]), "--cache_dir", str(world["root"] / "cache"),
                             "--out_dir", str(out_dir), "--encode_dtype", "bf16", "--epochs", "1", "--batch_size",
                             "16", "--embed_dim", "16", "--hidden_dim", "32", "--num_layers", "1", "--num_workers",
                             "0", "--beam_size", "1", "--device", "cpu", "--bf16", "off"])
    assert train.main(args) == 0
    return out_dir / "best.pt"


def test_fingerprint_does_not_depend_on_the_dtype_weights_are_cast_to(world):
    fp32 = XClipEncoder(str(world["xclip"]))
    bf16 = XClipEncoder(str(world["xclip"]), dtype=torch.bfloat16)
    cast_later, _ = encode.load_encoder(str(world["xclip"]), "bf16")  # encode.py's way: loaded in fp32, then cast
    assert fp32.fingerprint() == bf16.fingerprint() == cast_later.fingerprint()
    assert fp32.legacy_fingerprint() == bf16.legacy_fingerprint()
    # What earlier versions recorded for a bf16 encoder (the weights hashed after the cast) is still recognised.
    assert fp32.fingerprint(rounded_to=torch.bfloat16) != fp32.fingerprint()
    assert fp32.made(fp32.fingerprint(rounded_to=torch.bfloat16), str(world["xclip"]))


def test_bf16_cache_model_is_captioned_by_inference(world, bf16_model, capsys):
    assert load_checkpoint(bf16_model)["encoder"]["dtype"] == "bf16"
    clips = some_clips(world, 2)
    args = inference.parse_args(["--model_path", str(bf16_model), "--xclip_model", str(world["xclip"]), "--device",
                                 "cpu", "--beam_size", "2", "--max_len", "5", "--num_workers", "0", "--video_path",
                                 *map(str, clips)])
    assert inference.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(str(clip)) for line, clip in zip(lines, clips))


def test_demo_loader_runs_the_encoder_in_the_checkpoints_dtype(world, bf16_model):
    # demo.serve and inference.main both load through checkpoint.load_captioner.
    encoder, decoder, tokenizer, preprocess = load_captioner(bf16_model, "cpu", str(world["xclip"]))
    assert encoder.dtype == torch.bfloat16 and next(encoder.model.parameters()).dtype == torch.bfloat16
    result = caption_video(some_clips(world, 1)[0], encoder, decoder, tokenizer, preprocess,
                           decoding=Decoding(beam_size=2, max_len=5))
    assert isinstance(result["captions"][0]["caption"], str)
    # The cache training made is the one the same encoder finds again.
    cache, _ = encode.open_cache(encoder, world["root"] / "cache", "bf16")
    assert cache.meta["fingerprint"] == load_checkpoint(bf16_model)["encoder"]["fingerprint"]


def test_demo_uses_the_one_loader_and_defaults_to_a_gpu():
    import demo

    assert demo.parse_args([]).device == "auto"
    source = (REPO / "demo.py").read_text()
    assert "from checkpoint import load_captioner" in source and "def load_captioner" not in source
    for script in ("inference.py", "evaluate.py", "tools/soak.py"):
        text = (REPO / script).read_text()
        assert "load_captioner" in text and "encoder_from_checkpoint" not in text, script


def test_features_checkpoint_is_refused_by_the_video_loader(world, bf16_model, tmp_path):
    checkpoint = load_checkpoint(bf16_model)
    checkpoint["encoder"] = {"kind": "features", "name": "feats", "shape": [512], "latent_dim": 512, "num_frames": 1}
    with pytest.raises(UserError, match="precomputed features"):
        load_captioner(checkpoint, "cpu")
    captioner = load_captioner(checkpoint, "cpu", with_encoder=False)
    assert captioner.encoder is None and captioner.preprocess is None


# ----------------------------------------------------------------------------------------------------------------------
# One device choice: LOCAL_RANK under torchrun, one line for what cannot be

@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has n GPUs: set(n)."""
    def set_count(count):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    return set_count


def test_torchrun_rank_takes_the_gpu_of_its_local_rank(gpus):
    gpus(8)
    torchrun = {"RANK": "11", "LOCAL_RANK": "3", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}
    assert resolve_device("cuda", torchrun) == "cuda:3"
    assert resolve_device("auto", torchrun) == "cuda:3"
    assert resolve_device("cpu", torchrun) == "cpu"
    assert resolve_device("auto", {}) == "cuda" and resolve_device("cuda:7", {}) == "cuda:7"


def test_encode_py_under_torchrun_encodes_on_its_local_rank(gpus, monkeypatch, world, tmp_path):
    gpus(4)
    for name, value in {"RANK": "2", "LOCAL_RANK": "2", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    chosen = {}

    def load_encoder(name, dtype, device):
        chosen["device"] = device
        raise UserError("stop here")

    monkeypatch.setattr(encode, "load_encoder", load_encoder)
    monkeypatch.setattr(encode, "set_device", lambda device: chosen.setdefault("current", device))
    args = encode.parse_args(["--video_path", str(tmp_path), "--cache_dir", str(tmp_path / "cache")])
    assert encode.main(args) == 2
    assert chosen == {"device": "cuda:2", "current": "cuda:2"}
    # train.py takes the same device from the same function.
    monkeypatch.setattr(train, "set_device", lambda device: None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert train.setup_distributed("auto") == (0, 1, torch.device("cuda:2"))


@pytest.mark.parametrize("name, environ, count, message", [
    ("cuda:3", {}, 1, "has 1 GPU (cuda:0 to cuda:0)"),
    ("cuda", {"LOCAL_RANK": "2"}, 2, "more processes on this machine than it has GPUs (2"),
    ("cuda:1", {"LOCAL_RANK": "0"}, 2, "under torchrun"),
    ("gpu", {}, 1, "pass auto, cpu, cuda or cuda:N"),
    ("cuda", {}, 0, "no CUDA device"),
])
def test_bad_device_requests_are_user_errors(gpus, name, environ, count, message):
    gpus(count)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_device(name, environ)


@pytest.mark.parametrize("script", ["encode.py", "train.py", "inference.py"])
def test_bad_device_is_one_line_and_exit_2(script, tmp_path):
    flags = {"encode.py": ["--video_path", str(tmp_path), "--cache_dir", str(tmp_path / "cache")],
             "train.py": ["--out_dir", str(tmp_path / "run"), "--features", str(tmp_path)],
             "inference.py": ["--video_path", str(tmp_path), "--model_path", str(tmp_path / "x.pt")]}[script]
    result = subprocess.run([sys.executable, script, *flags, "--device", "cuda:7"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: --device cuda:7")


def test_missing_gpus_are_one_line_and_exit_2_in_every_script(gpus, monkeypatch, tmp_path, capsys):
    """A one-GPU machine asked for cuda:3, and torchrun with more processes than GPUs."""
    gpus(1)
    runs = [(encode, ["--video_path", str(tmp_path), "--cache_dir", str(tmp_path / "cache"), "--device", "cuda:3"]),
            (train, ["--out_dir", str(tmp_path / "run"), "--features", str(tmp_path), "--device", "cuda:3"]),
            (inference, ["--video_path", str(tmp_path), "--model_path", str(tmp_path / "x.pt"), "--device", "cuda:3"])]
    for script, argv in runs:
        assert script.main(script.parse_args(argv)) == 2
        assert capsys.readouterr().err == "error: --device cuda:3: this machine has 1 GPU (cuda:0 to cuda:0); pass " \
                                          "one of them or --device cpu\n"
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for script, argv in runs[:2]:
        assert script.main(script.parse_args(argv[:-1] + ["cuda"])) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "more processes on this machine than it has GPUs (1" in error


def test_default_workers_share_the_cores_among_local_processes():
    cores = common.default_workers({}, most=10 ** 6)
    assert cores >= 1
    assert common.default_workers({"LOCAL_WORLD_SIZE": "1000000"}) == 1
    assert common.default_workers({}, most=1) == 1


# ----------------------------------------------------------------------------------------------------------------------
# bf16 where it is native; the LSTM in fp32 under autocast

def test_bf16_auto_trains_in_fp32_on_gpus_and_on_is_taken_as_asked():
    # On an H200 bf16 autocast trained the decoder at 0.91-0.97x fp32's speed (docs/performance.md).
    cuda = torch.device("cuda", 0)
    assert not train.use_bf16("auto", cuda) and train.use_bf16("on", cuda) and not train.use_bf16("off", cuda)


@pytest.mark.parametrize("decoder_type", ["pooled", "attention"])
def test_lstm_runs_in_fp32_under_gpu_autocast_and_fp32_is_unchanged(monkeypatch, decoder_type):
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=50, latent_dim=8, embed_dim=8, hidden_dim=16, num_layers=2, dropout=0.0,
                           decoder_type=decoder_type, num_frames=4)
    decoder = CaptionDecoder(config).eval()
    latents = torch.randn(3, 4, 8) if decoder_type == "attention" else torch.randn(3, 8)
    tokens = torch.randint(4, 50, (3, 6))
    seen = []
    decoder.lstm.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0].dtype, output[0].dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoder(latents, tokens, tokens)
    assert {output for _, output in seen} == {torch.bfloat16}  # on a CPU, bf16 (fp32's range) as before
    seen.clear()
    monkeypatch.setattr(model, "LSTM_IN_FP32_ON", ("cpu",))  # this CPU as a GPU, whose autocast may pick fp16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = decoder(latents, tokens, tokens)
    assert set(seen) == {(torch.float32, torch.float32)}
    assert logits.dtype == torch.bfloat16  # the output head still runs in bf16
    if decoder_type == "attention":
        return
    # Without autocast nothing changes: the same numbers as the LSTM called directly.
    h, c, _ = decoder.init_state(latents)
    direct, _ = decoder.lstm(decoder.embed(tokens), (h, c))
    assert torch.equal(decoder.head(direct), decoder(latents, tokens)[0])


# ----------------------------------------------------------------------------------------------------------------------
# Frames as uint8 through the workers, normalised where they are encoded: the same latents bit for bit

def test_uint8_levels_normalise_to_the_float_frames_bit_for_bit(world):
    clip = some_clips(world, 1)[0]
    preprocess = Preprocess(image_size=32, shortest_edge=32)
    frames, _ = read_video(clip, 16, preprocess)
    levels, _ = read_video(clip, 16, preprocess, levels=True)
    assert levels.dtype == np.uint8 and frames.dtype == np.float32
    # The formula the frames were always made with, frame by frame: level * (1 / (255 std)) + (-mean / std).
    scale = (1.0 / (255.0 * np.asarray(preprocess.std))).astype(np.float32)[:, None, None]
    offset = (-np.asarray(preprocess.mean) / np.asarray(preprocess.std)).astype(np.float32)[:, None, None]
    expected = np.stack([np.multiply(level, scale, dtype=np.float32) + offset for level in levels])
    assert np.array_equal(frames, expected)
    assert torch.equal(normalise_levels(torch.from_numpy(levels), preprocess), torch.from_numpy(expected))


def test_cache_latents_equal_the_float_path_bit_for_bit(world, tmp_path):
    encoder, _ = encode.load_encoder(str(world["xclip"]))
    cache, preprocess = encode.open_cache(encoder, tmp_path / "cache")
    clips = some_clips(world, 3)
    summary = encode.encode_videos([(clip.stem, clip) for clip in clips], encoder, cache, preprocess,
                                   encode.EncodeOptions(batch_size=2, num_workers=1, progress=False))
    assert summary["encoded"] == 3
    for clip in clips:
        frames, _ = read_video(clip, encoder.num_frames, preprocess)  # float32 (F, 3, S, S), as encoding used
        expected = encoder.encode(torch.from_numpy(frames)[None])[0].numpy()
        assert np.array_equal(cache.load(clip.stem), expected), clip.stem


def test_batches_travel_as_uint8_tensors():
    samples = [{"index": 0, "video_id": "a", "frames": np.zeros((1, 2, 3, 4, 4), np.uint8), "error": None,
                "warnings": [], "seconds": 0.1}]
    batch = collate_clips(samples)
    assert torch.is_tensor(batch["frames"]) and batch["frames"].dtype == torch.uint8
    assert batch["frames"].shape == (1, 1, 2, 3, 4, 4)


# ----------------------------------------------------------------------------------------------------------------------
# torchrun: one rank's error stops every rank

def test_a_failed_rank_stops_the_others(world, tmp_path):
    """Two processes on CPU (gloo); rank 1 cannot write its cache entries: both end with exit 2, no traceback."""
    script = tmp_path / "failing_rank.py"
    script.write_text(f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
import latents, train
real = latents.encode_videos
def encode_videos(*args, **kwargs):
    if os.environ["RANK"] == "1":
        raise OSError(28, "No space left on device", "cache/latents/x.npy")
    return real(*args, **kwargs)
latents.encode_videos = encode_videos
sys.exit(train.main(train.parse_args(sys.argv[1:])))
""")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               "--data_dir", str(world["data"]), "--tokenizer_path", str(world["tokenizer"]), "--xclip_model",
               str(world["xclip"]), "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "run"),
               "--epochs", "1", "--embed_dim", "16", "--hidden_dim", "32", "--num_workers", "0", "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any("No space left on device" in line for line in errors)
    assert any("1 of the 2 processes failed while building the cache" in line for line in errors)
    # No traceback through the repo's code (torchrun adds its own report, through torch's files: those may sit in a
    # virtual environment inside the repo, as CI's does).
    frames = [line for line in result.stderr.splitlines() if f'File "{REPO}' in line and "site-packages" not in line]
    assert not frames
