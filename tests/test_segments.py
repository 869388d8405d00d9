"""Captions along a long video: time windows, merging, SRT / WebVTT subtitles (inference.py --segment_seconds)."""
import json

import numpy as np
import pytest
import torch

import inference
from checkpoint import save_checkpoint
from create_tokenizer import train_tokenizer
from dataset import read_video_windows
from encode import load_encoder, open_cache
from model import caption_features
from model import CaptionDecoder, DecoderConfig
from synthetic import make_tiny_xclip, write_clip

FPS = 8
RED, BLUE = (220, 30, 30), (40, 70, 235)


def coloured_frames(colour, seconds, width=48, height=32):
    """A still picture of one coloured square on grey, (seconds * FPS, H, W, 3) uint8."""
    frames = np.full((int(seconds * FPS), height, width, 3), 40, dtype=np.uint8)
    frames[:, 8:24, 16:32] = colour
    return frames


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 6 s clip, red for 4 s then blue for 2 s; a tiny X-CLIP; a decoder taught to say which colour it sees."""
    root = tmp_path_factory.mktemp("segments")
    long_clip = root / "long.mp4"
    write_clip(long_clip, np.concatenate([coloured_frames(RED, 4), coloured_frames(BLUE, 2)]), FPS)
    write_clip(root / "red.mp4", coloured_frames(RED, 2), FPS)
    write_clip(root / "blue.mp4", coloured_frames(BLUE, 2), FPS)
    xclip = make_tiny_xclip(root / "xclip", seed=0)
    captions = ["a red square", "a blue square"]
    tokenizer_path = train_tokenizer(captions * 20 + ["a square moves"], root / "tokenizer", vocab_size=300)
    import sentencepiece as spm

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


def test_windows_cover_the_video_and_show_what_happens_in_them(world):
    windows = list(read_video_windows(world["long_clip"], 2.0, 16, world["preprocess"]))
    assert [(w["start"], w["end"]) for w in windows] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert all(w["frames"].shape == (16, 3, 32, 32) for w in windows)
    # The square sits at the centre of the crop: red (channel 0) beats blue (channel 2) exactly in red windows.
    red_minus_blue = [float(w["frames"][:, 0, 12:20, 12:20].mean() - w["frames"][:, 2, 12:20, 12:20].mean())
                      for w in windows]
    assert red_minus_blue[0] > 1 and red_minus_blue[1] > 1 and red_minus_blue[2] < -1
    # A window longer than what is left ends with the video; one pass per window reads the same frames.
    uneven = list(read_video_windows(world["long_clip"], 2.5, 16, world["preprocess"], windows_per_pass=1))
    assert [(w["start"], w["end"]) for w in uneven] == [(0.0, 2.5), (2.5, 5.0), (5.0, 6.0)]
    together = list(read_video_windows(world["long_clip"], 2.5, 16, world["preprocess"]))
    assert all(np.array_equal(a["frames"], b["frames"]) for a, b in zip(uneven, together))


def test_merge_and_subtitle_formats():
    windows = [{"start": 0.0, "end": 2.0, "caption": "a"}, {"start": 2.0, "end": 4.0, "caption": "a"},
               {"start": 4.0, "end": 6.0, "caption": "b"}, {"start": 6.0, "end": 7.25, "caption": "a"}]
    merged = inference.merge_segments(windows)
    assert merged == [{"start": 0.0, "end": 4.0, "caption": "a"}, {"start": 4.0, "end": 6.0, "caption": "b"},
                      {"start": 6.0, "end": 7.25, "caption": "a"}]
    assert windows[0]["end"] == 2.0  # the input is left alone
    assert inference.format_timestamp(3725.5) == "01:02:05.500"
    assert inference.format_timestamp(59.9996, ",") == "00:01:00,000"
    assert inference.format_srt(merged[:2]) == ("1\n00:00:00,000 --> 00:00:04,000\na\n\n"
                                                "2\n00:00:04,000 --> 00:00:06,000\nb\n")
    assert inference.format_vtt(merged[:2]) == ("WEBVTT\n\n00:00:00.000 --> 00:00:04.000\na\n\n"
                                                "00:00:04.000 --> 00:00:06.000\nb\n")


def run_inference(world, *flags):
    return inference.main(inference.parse_args(["--model_path", str(world["model_path"]), "--xclip_model",
                                                str(world["xclip"]), "--beam_size", "2", "--max_len", "8", *flags]))


def test_inference_captions_each_window_and_writes_subtitles(world, tmp_path, capsys):
    srt, vtt = tmp_path / "long.srt", tmp_path / "long.vtt"
    assert run_inference(world, "--video_path", str(world["long_clip"]), "--segment_seconds", "2", "--json",
                         "--srt", str(srt), "--vtt", str(vtt)) == 0
    result = json.loads(capsys.readouterr().out)
    expected = [{"start": 0.0, "end": 4.0, "caption": "a red square"},
                {"start": 4.0, "end": 6.0, "caption": "a blue square"}]
    assert result["segments"] == expected and result["windows"] == 3
    assert srt.read_text() == ("1\n00:00:00,000 --> 00:00:04,000\na red square\n\n"
                               "2\n00:00:04,000 --> 00:00:06,000\na blue square\n")
    assert vtt.read_text() == ("WEBVTT\n\n00:00:00.000 --> 00:00:04.000\na red square\n\n"
                               "00:00:04.000 --> 00:00:06.000\na blue square\n")
    assert run_inference(world, "--video_path", str(world["long_clip"]), "--segment_seconds", "2") == 0
    assert capsys.readouterr().out.splitlines() == ["00:00:00.000 --> 00:00:04.000  a red square",
                                                    "00:00:04.000 --> 00:00:06.000  a blue square"]


@pytest.mark.parametrize("flags, videos, words", [
    (["--srt", "x.srt"], 1, "--segment_seconds"),
    (["--segment_seconds", "2", "--srt", "x.srt"], 2, "one video"),
    (["--segment_seconds", "2", "--views", "3"], 1, "do not go together"),
])
def test_flags_that_do_not_go_together_are_one_line(world, capsys, flags, videos, words):
    assert run_inference(world, "--video_path", *[str(world["long_clip"])] * videos, *flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
