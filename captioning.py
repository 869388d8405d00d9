"""Captioning videos with a loaded captioner (checkpoint.load_captioner): the decoding settings and their
command-line flags, n-best beams or samples for one video or a batch, captions of the windows of a long video,
and those segments as SRT or WebVTT subtitles. inference.py, demo.py and evaluate.py all caption through here.
"""
import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import count, non_negative, positive_float, positive_int, share

# torch and the modules that import it are imported inside the functions that use them, so that a script's
# --help answers at once instead of after several seconds of imports.


@dataclass(frozen=True)
class Decoding:
    """How captions are drawn from the decoder: beam search (beam_size, length_penalty, the num_captions best
    beams), or with sample, num_captions random draws (temperature, top_p, seed); max_len tokens at most."""
    beam_size: int = 5
    max_len: int = 30
    length_penalty: float = 1.0
    num_captions: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Decoding":
        """The settings add_decoding_arguments declared; those a script does not offer keep their defaults."""
        return cls(**{name: getattr(args, name) for name in asdict(cls()) if hasattr(args, name)})


def add_decoding_arguments(parser: argparse.ArgumentParser, num_captions: int | None = 1, sampling: bool = True):
    """The decoding flags, declared once for every script that captions: --beam_size, --length_penalty,
    --max_len; with num_captions (its default) --num_captions; with sampling --sample, --temperature, --top_p
    and --seed."""
    parser.add_argument("--beam_size", type=positive_int, default=5,
                        help="beam width (1 = greedy)" + ("; raised to --num_captions if smaller" if num_captions
                                                          else ""))
    if num_captions is not None:
        parser.add_argument("--num_captions", type=positive_int, default=num_captions,
                            help="captions per video: the best beams" + (", or samples" if sampling else ""))
    parser.add_argument("--length_penalty", type=non_negative, default=1.0,
                        help="beams are ranked by log-probability / length ** this (0 = no length normalisation)")
    parser.add_argument("--max_len", type=positive_int, default=30, help="max caption length in tokens")
    if sampling:
        parser.add_argument("--sample", action="store_true",
                            help="draw captions at random from the decoder instead of beam search")
        parser.add_argument("--temperature", type=positive_float, default=1.0,
                            help="with --sample: below 1 sharper (towards greedy), above 1 more varied")
        parser.add_argument("--top_p", type=share, default=1.0,
                            help="with --sample: draw from the smallest set of tokens holding this much probability")
        parser.add_argument("--seed", type=count, default=0,
                            help="with --sample: random seed (same seed, same captions)")


def decoder_inputs(encoder, decoder, clips):
    """Clips (B, F, 3, S, S) -> what the decoder reads: latents (B, D), or frame features (B, F, D) for the
    attention decoder."""
    if decoder.config.uses_frames:
        return encoder.encode_with_frames(clips)[1]
    return encoder.encode(clips)


def generate(decoder, tokenizer, features, decoding: Decoding = Decoding()):
    """Features of one video (1, ...) -> its captions [{"caption", "score"}]: the num_captions best beams with
    their length-normalised log-probabilities, or with sample, num_captions random draws (score None)."""
    import torch

    threads = torch.get_num_threads()
    # One video's beams are too small to split across threads: on a shared 2-core machine two threads wait
    # for each other at every step (docs/performance.md).
    torch.set_num_threads(1)
    try:
        return generate_batch(decoder, tokenizer, features, decoding)[0]
    finally:
        torch.set_num_threads(threads)


def generate_batch(decoder, tokenizer, features, decoding: Decoding = Decoding()):
    """Features of B videos (B, ...) -> per video its captions, as generate() gives them: beam search over all
    the videos at once; sampling video by video, so that each video's draws are those it gets alone."""
    from model import beam_search, sample as sample_captions

    if decoding.sample:
        return [[{"caption": tokenizer.decode(ids), "score": None}
                 for ids in sample_captions(decoder, row.expand(decoding.num_captions, *row.shape),
                                            max_len=decoding.max_len, temperature=decoding.temperature,
                                            top_p=decoding.top_p, seed=decoding.seed)]
                for row in features]
    beams = beam_search(decoder, features, beam_size=max(decoding.beam_size, decoding.num_captions),
                        max_len=decoding.max_len, length_penalty=decoding.length_penalty, n_best=decoding.num_captions)
    return [[{"caption": tokenizer.decode(ids), "score": round(score, 4)} for ids, score in video]
            for video in beams]


def caption_video(path, encoder, decoder, tokenizer, preprocess, views=1, decoding: Decoding = Decoding()):
    """One video -> {"path", "captions": [{"caption", "score"}], "warnings", "seconds": {...}}.

    decoding: how generate() draws the captions. With views > 1 the caption comes from the mean of the latents of
    `views` jittered samplings, drawn as the cache draws them for a video whose id is the file name. Raises
    dataset.VideoError for a video that cannot be read.
    """
    import torch
    from dataset import read_views

    started = time.perf_counter()
    frames, info = read_views(path, Path(path).stem, views, encoder.num_frames, preprocess)  # (K, F, 3, S, S)
    decoded = time.perf_counter()
    features = decoder_inputs(encoder, decoder, torch.from_numpy(frames)).mean(dim=0, keepdim=True)  # (1, ...)
    encoded = time.perf_counter()
    captions = generate(decoder, tokenizer, features.to(decoder.latent_mean.device), decoding)
    generated = time.perf_counter()
    return {"path": str(path), "captions": captions, "warnings": info.get("warnings", []),
            "seconds": {"decode": round(decoded - started, 4), "encode": round(encoded - decoded, 4),
                        "generate": round(generated - encoded, 4)}}


def caption_segments(path, encoder, decoder, tokenizer, preprocess, segment_seconds, decoding: Decoding = Decoding(),
                     batch_size=8):
    """Caption every segment_seconds window of one video -> {"path", "segments": [{"start", "end", "caption"}]
    (neighbours with the same caption merged), "windows": how many were captioned, "warnings", "seconds"}.
    Each window gets the best beam of decoding's beam search (sampling and num_captions do not apply).

    Raises dataset.VideoError for a video that cannot be read.
    """
    import numpy as np
    import torch
    from dataset import read_video_windows
    from model import caption_features

    started = time.perf_counter()
    windows, warnings, captions = [], [], []
    pending = []  # windows read but not captioned yet, captioned batch_size at a time

    def caption_pending():
        clips = torch.from_numpy(np.stack([window["frames"] for window in pending]))  # (B, F, 3, S, S)
        inputs = decoder_inputs(encoder, decoder, clips).to(decoder.latent_mean.device)
        captions.extend(caption_features(decoder, tokenizer, inputs, beam_size=decoding.beam_size,
                                         max_len=decoding.max_len, length_penalty=decoding.length_penalty))
        pending.clear()

    for window in read_video_windows(path, segment_seconds, encoder.num_frames, preprocess):
        windows.append((window["start"], window["end"]))
        warnings += window["warnings"]
        pending.append(window)
        if len(pending) == batch_size:
            caption_pending()
    if pending:
        caption_pending()
    segments = merge_segments([{"start": round(start, 3), "end": round(end, 3), "caption": caption}
                               for (start, end), caption in zip(windows, captions)])
    return {"path": str(path), "segments": segments, "windows": len(windows), "warnings": warnings,
            "seconds": {"total": round(time.perf_counter() - started, 4)}}


def merge_segments(segments):
    """Join consecutive segments with the same caption into one running from the first start to the last end."""
    merged = []
    for segment in segments:
        if merged and merged[-1]["caption"] == segment["caption"]:
            merged[-1]["end"] = segment["end"]
        else:
            merged.append(dict(segment))
    return merged


def format_timestamp(seconds, decimal_mark="."):
    """Seconds -> "HH:MM:SS.mmm" (WebVTT) or, with decimal_mark ",", "HH:MM:SS,mmm" (SRT)."""
    milliseconds = int(round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{milliseconds:03d}"


def format_srt(segments):
    """Segments -> SubRip text: numbered cues (number, "HH:MM:SS,mmm --> HH:MM:SS,mmm", caption), a blank line apart."""
    cues = [f"{number}\n{format_timestamp(s['start'], ',')} --> {format_timestamp(s['end'], ',')}\n{s['caption']}\n"
            for number, s in enumerate(segments, start=1)]
    return "\n".join(cues)


def format_vtt(segments):
    """Segments -> WebVTT text: the "WEBVTT" header, then cues ("HH:MM:SS.mmm --> HH:MM:SS.mmm", caption)."""
    cues = [f"{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}\n{s['caption']}\n" for s in segments]
    return "\n".join(["WEBVTT\n"] + cues)
