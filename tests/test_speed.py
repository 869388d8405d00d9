"""What the speed-ups must not change: length-bucketed and bf16 training, folders captioned in batches, X-CLIP
loaded without its text side (same latents, caches and checkpoints of the old fingerprint still recognised)."""
import hashlib
import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch

import encode
import inference
import train
from checkpoint import decoder_from_checkpoint, encoder_from_checkpoint, load_checkpoint, save_checkpoint
from dataset import read_video, read_views
from model import XClipEncoder
from synthetic import make_tiny_xclip
from inputs import write_b_frame_clip
from tools import soak  # its prepare(): the set soak.py runs on, at a small size


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Six synthetic clips and a broken file in one folder, a tiny X-CLIP, and a checkpoint whose decoder was
    trained a little on the clips' latents, so that different clips get different captions."""
    root = tmp_path_factory.mktemp("speed")
    prepared = soak.prepare(root, num_videos=6, seed=4)
    folder = prepared["videos"][0].parent
    (folder / "video3b.mp4").write_text("not a video")  # sorts among the good ones
    checkpoint = load_checkpoint(prepared["model_path"])
    encoder, cache, preprocess = prepared["encoder"], prepared["cache"], prepared["preprocess"]
    encode.encode_videos([(path.stem, path) for path in prepared["videos"]], encoder, cache, preprocess,
                         encode.EncodeOptions(num_workers=0, progress=False))
    latents = torch.from_numpy(cache.read([path.stem for path in prepared["videos"]]))  # (6, 512)
    decoder = decoder_from_checkpoint(checkpoint).train()
    decoder.set_latent_stats(latents.mean(0), latents.std(0) + 1e-3)
    rows = torch.randint(4, decoder.config.vocab_size, (6, 8), generator=torch.Generator().manual_seed(0))
    rows[:, 0], rows[:, -1] = decoder.config.bos_id, decoder.config.eos_id
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(30):  # each latent its own random caption
        _, loss = decoder(latents, rows[:, :-1], rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint["decoder"] = decoder.state_dict()
    model_path = root / "trained.pt"
    save_checkpoint(model_path, {key: value for key, value in checkpoint.items() if key != "version"})
    return {**prepared, "root": root, "folder": folder, "model_path": model_path}


def run_inference(world, paths, *flags):
    args = inference.parse_args(["--model_path", str(world["model_path"]), "--xclip_model", str(world["xclip_model"]),
                                 "--device", "cpu", "--beam_size", "3", "--max_len", "8", *flags,
                                 "--video_path", *map(str, paths)])
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = inference.main(args)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.mark.parametrize("flags", [(), ("--num_captions", "2", "--views", "2"), ("--sample", "--num_captions", "2")])
def test_a_folder_in_batches_gives_what_one_video_at_a_time_gives(world, flags):
    code, stdout, stderr = run_inference(world, [world["folder"]], "--json", "--batch_size", "3",
                                         "--num_workers", "1", *flags)
    paths = sorted(world["folder"].iterdir())
    singles = [run_inference(world, [path], "--json", *flags) for path in paths]
    assert code == 2 and [single[0] for single in singles].count(2) == 1
    many = [json.loads(line) for line in stdout.splitlines()]
    alone = [json.loads(single[1]) for single in singles if single[0] == 0]
    assert [record["path"] for record in many] == [str(path) for path in paths if path.stem != "video3b"]
    assert [record["captions"] for record in many] == [record["captions"] for record in alone]
    assert len({record["captions"][0]["caption"] for record in many}) > 1  # the clips are told apart
    assert stderr.strip() == "".join(single[2] for single in singles).strip()  # the broken file's one line
    assert set(many[0]["seconds"]) == {"decode", "encode", "generate"}


def test_a_folder_in_batches_prints_in_order_and_reads_memory_per_video(world):
    code, stdout, _ = run_inference(world, [world["folder"], world["root"] / "missing.mp4"], "--batch_size", "2",
                                    "--num_workers", "0")
    assert code == 2
    assert [line.split(": ")[0] for line in stdout.splitlines()] == [
        str(path) for path in sorted(world["folder"].iterdir()) if path.stem != "video3b"]
    measured = soak.measure_inference(world["videos"], world["model_path"], world["xclip_model"], beam_size=2)
    assert measured["exit_code"] == 0 and len(measured["rss_mib"]) == len(world["videos"])


# ---- X-CLIP's video side, and the fingerprint ------------------------------------------------------------------

def main_branch_fingerprint(path):
    """The fingerprint as this repo computed it before: the whole config's JSON (with the path it was loaded by)
    and the visual and text projections, of XCLIPModel loaded whole."""
    from transformers import XCLIPModel
    model = XCLIPModel.from_pretrained(str(path))
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name in ("visual_projection", "text_projection"):
        digest.update(getattr(model, name).weight.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:12], model


def test_video_side_alone_gives_the_full_models_latents_bit_for_bit(world, tmp_path):
    legacy, full = main_branch_fingerprint(world["xclip_model"])
    encoder = XClipEncoder(str(world["xclip_model"]))
    assert not hasattr(encoder.model, "text_model") and not hasattr(encoder.model, "prompts_generator")
    assert sum(p.numel() for p in encoder.parameters()) < sum(p.numel() for p in full.parameters())
    pixels = torch.randn(2, 16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = full.get_video_features(pixel_values=pixels)
    assert torch.equal(encoder.encode(pixels), getattr(expected, "pooler_output", expected))
    assert encoder.legacy_fingerprint() == legacy and encoder.fingerprint() != legacy
    copy = tmp_path / "a copy elsewhere"
    shutil.copytree(world["xclip_model"], copy)
    moved = XClipEncoder(str(copy))
    assert moved.fingerprint() == encoder.fingerprint()  # path-independent
    assert moved.legacy_fingerprint() != legacy and moved.made(legacy, str(world["xclip_model"]))
    other = XClipEncoder(str(make_tiny_xclip(tmp_path / "other", seed=1)))
    assert other.fingerprint() != encoder.fingerprint()
    assert not other.made(legacy, str(world["xclip_model"]))


def test_old_caches_and_checkpoints_are_recognised(world, tmp_path):
    """A cache and a checkpoint recorded with the old fingerprint, as the code before this one made them."""
    legacy, full = main_branch_fingerprint(world["xclip_model"])
    encoder, preprocess = world["encoder"], world["preprocess"]
    name = encode.cache_key(encoder, preprocess, 16, "fp32", fingerprint=legacy)
    old = tmp_path / "cache" / name
    (old / "latents").mkdir(parents=True)
    record = {**world["cache"].meta, "fingerprint": legacy}
    (old / "meta.json").write_text(json.dumps(record))
    items = [(path.stem, path) for path in world["videos"][:3]]
    frames = np.stack([read_views(path, vid, 1, 16, preprocess)[0] for vid, path in items])  # (3, 1, F, ...)
    with torch.inference_mode():
        old_latents = full.get_video_features(pixel_values=torch.from_numpy(frames[:, 0])).pooler_output
    for (video_id, _), latent in zip(items, old_latents):
        np.save(old / "latents" / f"{video_id}.npy", latent.numpy())
    cache, _ = encode.open_cache(encoder, tmp_path / "cache")
    assert cache.root == old
    summary = encode.encode_videos(items + [(path.stem, path) for path in world["videos"][3:4]], encoder, cache,
                                   preprocess, encode.EncodeOptions(num_workers=0, progress=False))
    assert (summary["cached"], summary["encoded"]) == (3, 1)
    fresh, _ = encode.open_cache(encoder, tmp_path / "fresh")
    encode.encode_videos(items, encoder, fresh, preprocess, encode.EncodeOptions(num_workers=0, progress=False))
    assert fresh.root.name != old.name and all(np.array_equal(fresh.load(vid), cache.load(vid)) for vid, _ in items)

    checkpoint = load_checkpoint(world["model_path"])
    checkpoint["encoder"] = record  # as train.py recorded it from the old cache
    path = tmp_path / "old.pt"
    save_checkpoint(path, {key: value for key, value in checkpoint.items() if key != "version"})
    copy = tmp_path / "xclip copy"
    shutil.copytree(world["xclip_model"], copy)
    for xclip_model in (None, str(copy)):
        assert encoder_from_checkpoint(load_checkpoint(path), xclip_model).fingerprint() == encoder.fingerprint()
    code, stdout, stderr = run_inference({**world, "model_path": path}, [world["videos"][0]])
    assert code == 0 and stdout.strip(), stderr


# ---- training -------------------------------------------------------------------------------------------------------

def caption_rows(num_captions: int, vocab_size: int, seed: int = 0):
    """(N, 31) int64 token rows as train.encode_captions makes them (BOS 2, tokens, EOS 3, padding 0), of lengths
    spread like MSR-VTT's (about 11 +- 4 pieces)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.gamma(7.0, 11.0 / 7.0, num_captions)), 3, 29).astype(int)
    rows = np.zeros((num_captions, 31), dtype=np.int64)
    for row, length in zip(rows, lengths):
        row[0], row[1:length + 1], row[length + 1] = 2, rng.integers(4, vocab_size, length), 3
    return rows


def test_bucketed_batches_cover_every_caption_once_with_little_padding():
    rows = caption_rows(1000, vocab_size=300, seed=0)
    lengths = torch.from_numpy((rows != 0).sum(1))
    plain = train.epoch_batches(lengths, 16, generator=torch.Generator().manual_seed(3))
    bucketed = train.epoch_batches(lengths, 16, generator=torch.Generator().manual_seed(3), buckets=True)
    again = train.epoch_batches(lengths, 16, generator=torch.Generator().manual_seed(3), buckets=True)
    assert len(bucketed) == len(plain) == 63 and all(torch.equal(a, b) for a, b in zip(bucketed, again))
    assert sorted(torch.cat(bucketed).tolist()) == list(range(1000))

    def padding(batches):
        return sum(int(lengths[batch].max()) * len(batch) for batch in batches) / int(lengths.sum()) - 1

    assert padding(bucketed) < 0.1 < 0.3 < padding(plain)
    in_order = train.epoch_batches(lengths, 16, shuffle=False)
    assert torch.equal(torch.cat(in_order), torch.arange(1000))


def test_bf16_is_on_where_the_cpu_has_it_and_trains_like_fp32():
    assert train.use_bf16("auto", torch.device("cpu")) == train.cpu_has_native_bf16()
    assert train.use_bf16("on", torch.device("cpu")) and not train.use_bf16("off", torch.device("cuda"))
    rows = caption_rows(96, vocab_size=200, seed=1)
    latents = torch.randn(12, 512, generator=torch.Generator().manual_seed(0))
    video_index = np.arange(96) % 12
    losses = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        decoder = train.CaptionDecoder(train.DecoderConfig(vocab_size=200, embed_dim=32, hidden_dim=64, dropout=0.0))
        optimizer = torch.optim.AdamW(decoder.parameters(), lr=3e-3, fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        for epoch in range(4):
            options = train.EpochOptions(16, generator=torch.Generator().manual_seed(epoch), buckets=True,
                                         grad_clip=1.0, bf16=bf16)
            train.run_epoch(decoder, latents, video_index, rows, torch.device("cpu"), options, optimizer, scheduler)
        losses[bf16] = train.run_epoch(decoder, latents, video_index, rows, torch.device("cpu"),
                                       train.EpochOptions(16))
    assert losses[True] == pytest.approx(losses[False], rel=0.01)


# ---- reading clips --------------------------------------------------------------------------------------------------

def test_read_video_gives_the_same_frames_whatever_the_decoder_threading(tmp_path, realdata, monkeypatch):
    import dataset
    clips = [write_b_frame_clip(tmp_path / "clip.mp4", 854, 480, seed=5)]
    clips += sorted((realdata / "msvd" / "clips").glob("*.avi"))[:2] + [realdata / "videos" / "moviepy_chaplin.mp4"]
    for clip in clips:
        expected, _ = read_video(clip)
        for threading in (("NONE", 1), ("SLICE", 0), ("FRAME", 2)):
            monkeypatch.setattr(dataset, "decoder_threading", lambda width, height, decoders=1: threading)
            frames, _ = read_video(clip)
            assert np.array_equal(frames, expected), (clip, threading)


def test_decoder_threading_rule():
    from dataset import decoder_threading
    cores = __import__("os").cpu_count()
    assert decoder_threading(320, 240) == ("SLICE", 0)
    assert decoder_threading(854, 480) == (("FRAME", min(cores, 4)) if cores >= 2 else ("SLICE", 0))
    assert decoder_threading(1280, 720, decoders=cores) == ("SLICE", 0)  # as many decoders as cores: each has one
