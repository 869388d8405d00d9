"""Shared pytest fixtures: real data (skipped when absent, as in a user's clone), one torch thread, a script's main
run in this process, synthetic worlds (a synthetic MSR-VTT, a tiny X-CLIP, a tokenizer) built once per session,
and train.py's flags for a tiny decoder. Tests import nothing from each other: what two files share is here."""
import contextlib
import importlib
import io
import os
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REALDATA = Path(os.environ.get("REALDATA_DIR", REPO.parent / "shared" / "realdata"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end run of many seconds; -m 'not slow' leaves it out")


@pytest.fixture(scope="session")
def realdata():
    """Path to ../shared/realdata; skips the test when it is not there."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data not found at {REALDATA}")
    return REALDATA


@contextlib.contextmanager
def torch_threads(count: int):
    """torch on `count` intra-op threads inside the block: on a busy 2-core machine two threads mostly wait for
    each other on the tests' tiny tensors."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module that asks (pytestmark = pytest.mark.usefixtures("one_torch_thread"))."""
    with torch_threads(1):
        yield


class Completed(NamedTuple):
    """What a script's run gives back, as subprocess.CompletedProcess names it."""
    returncode: int
    stdout: str
    stderr: str


def run_main(script: str, *argv) -> Completed:
    """`python SCRIPT ARGV...` in this process (script: "dataset", "evaluate.py", "tools/captions_file.py"):
    main(parse_args(argv)) with stdout and stderr captured, the exit code (argparse's usage errors included), and
    warnings shown as in a fresh process (each once, as one line)."""
    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            code = module.main(module.parse_args([str(arg) for arg in argv]))
        except SystemExit as exit_:
            code = exit_.code
    return Completed(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(script, *argv) -> Completed: a script's command line run in this process (run_main)."""
    return run_main


@pytest.fixture(scope="session")
def tiny_xclip(tmp_path_factory):
    """A tiny random X-CLIP (synthetic.make_tiny_xclip, seed 0), written once per session; read-only."""
    from synthetic import make_tiny_xclip
    return make_tiny_xclip(tmp_path_factory.mktemp("tiny-xclip") / "xclip", seed=0)


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory, tiny_xclip):
    """synthetic_world(num_videos, seed, vocab_size, task="simple") -> {"root", "data", "xclip", "tokenizer"}: a
    synthetic MSR-VTT, the session's tiny X-CLIP and a tokenizer on its training captions, built once per session
    for each set of values. Tests may write under root (their own caches and runs) but not change what is there."""
    from annotations import load_msrvtt
    from create_tokenizer import train_captions, train_tokenizer
    from synthetic import make_synthetic_msrvtt
    worlds = {}

    def world(num_videos: int, seed: int, vocab_size: int, task: str = "simple") -> dict:
        key = (num_videos, seed, vocab_size, task)
        if key not in worlds:
            root = tmp_path_factory.mktemp(f"world-{task}-{num_videos}-{seed}")
            make_synthetic_msrvtt(root / "data", num_videos=num_videos, seed=seed, task=task, progress=False)
            tokenizer = train_tokenizer(train_captions(load_msrvtt(root / "data")), root / "tokenizer", vocab_size)
            worlds[key] = {"root": root, "data": root / "data", "xclip": tiny_xclip, "tokenizer": tokenizer}
        return dict(worlds[key])

    return world


@pytest.fixture(scope="session")
def train_args():
    """train_args(world, out_dir, epochs, *flags) -> train.py's arguments for a tiny decoder (1 layer, embed 64,
    hidden 128, batch 32, beam 2, no workers) on a synthetic_world; later flags override earlier ones."""
    import train

    def make(world, out_dir, epochs, *flags):
        return train.parse_args([
            "--data_dir", str(world["data"]), "--tokenizer_path", str(world["tokenizer"]),
            "--xclip_model", str(world["xclip"]), "--cache_dir", str(world["root"] / "cache"),
            "--out_dir", str(out_dir), "--epochs", str(epochs), "--batch_size", "32", "--embed_dim", "64",
            "--hidden_dim", "128", "--num_layers", "1", "--dropout", "0.1", "--warmup_steps", "10",
            "--learning_rate", "3e-3", "--num_workers", "0", "--beam_size", "2", "--patience", "0", *map(str, flags)])

    return make


# ---- a clip that changes colour, and a captioner that says which colour it sees

FPS = 8
RED, BLUE = (220, 30, 30), (40, 70, 235)


def coloured_frames(colour, seconds, width=48, height=32):
    """A still picture of one coloured square on grey, (seconds * FPS, H, W, 3) uint8."""
    import numpy as np
    frames = np.full((int(seconds * FPS), height, width, 3), 40, dtype=np.uint8)
    frames[:, 8:24, 16:32] = colour
    return frames


@pytest.fixture(scope="session")
def colour_world(tmp_path_factory, tiny_xclip):
    """A 6 s clip, red for 4 s then blue for 2 s, and 2 s red and blue ones; the session's tiny X-CLIP; a decoder
    taught to say which colour it sees: {"root", "long_clip", "xclip", "model_path", "preprocess"}; read-only."""
    import numpy as np
    import sentencepiece as spm
    import torch
    from checkpoint import save_checkpoint
    from create_tokenizer import train_tokenizer
    from dataset import read_video_windows
    from encode import load_encoder, open_cache
    from model import caption_features
    from synthetic import write_clip
    root = tmp_path_factory.mktemp("segments")
    long_clip = root / "long.mp4"
    write_clip(long_clip, np.concatenate([coloured_frames(RED, 4), coloured_frames(BLUE, 2)]), FPS)
    write_clip(root / "red.mp4", coloured_frames(RED, 2), FPS)
    write_clip(root / "blue.mp4", coloured_frames(BLUE, 2), FPS)
    xclip = tiny_xclip
    captions = ["a red square", "a blue square"]
    tokenizer_path = train_tokenizer(captions * 20 + ["a square moves"], root / "tokenizer", vocab_size=300)
    tokenizer = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    encoder, _ = load_encoder(str(xclip))
    cache, preprocess = open_cache(encoder, root / "cache")
    windows = {colour: next(read_video_windows(root / f"{colour}.mp4", 2.0, 16, preprocess))["frames"]
               for colour in ("red", "blue")}
    latents = encoder.encode(torch.from_numpy(np.stack([windows["red"], windows["blue"]])))  # (2, 512)
    decoder = overfit_decoder(latents, [tokenizer.encode(caption) for caption in captions], tokenizer)
    assert caption_features(decoder, tokenizer, latents, beam_size=2, max_len=8) == captions
    model_path = root / "model.pt"
    save_checkpoint(model_path, {"decoder_config": decoder.config.to_dict(), "decoder": decoder.state_dict(),
                                 "tokenizer": tokenizer_path.read_bytes(), "encoder": dict(cache.meta)})
    return {"root": root, "long_clip": long_clip, "xclip": xclip, "model_path": model_path, "preprocess": preprocess}


def overfit_decoder(latents, caption_ids, tokenizer, steps=150):
    """A small pooled decoder trained until it reads each caption back from its latent."""
    import torch
    from model import CaptionDecoder, DecoderConfig
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=tokenizer.get_piece_size(), latent_dim=latents.shape[1], embed_dim=32,
                           hidden_dim=64, num_layers=1, dropout=0.0, label_smoothing=0.0, pad_id=tokenizer.pad_id(),
                           bos_id=tokenizer.bos_id(), eos_id=tokenizer.eos_id())
    decoder = CaptionDecoder(config)
    decoder.set_latent_stats(latents.mean(0), latents.std(0) + 1e-3)
    length = max(len(ids) for ids in caption_ids) + 2
    rows = torch.full((len(caption_ids), length), config.pad_id, dtype=torch.long)
    for row, ids in zip(rows, caption_ids):
        sequence = [config.bos_id] + ids + [config.eos_id]
        row[: len(sequence)] = torch.tensor(sequence)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(steps):
        _, loss = decoder(latents, rows[:, :-1], rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return decoder.eval()
