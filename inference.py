"""Caption videos with a trained checkpoint.

    python inference.py --video_path clip.mp4
    python inference.py --video_path long.mp4 --segment_seconds 5 --srt long.srt

Takes files, folders and globs; prints one caption per video (or JSON with --json). A video that
cannot be read gets one line on stderr and the others are still captioned; the exit code is 2 if
any failed. The checkpoint carries its tokenizer and names its X-CLIP encoder. --views K captions
the mean latent of K jittered samplings. --segment_seconds S captions every S-second window of a
long video instead, merges neighbouring windows that get the same caption, and can write the
segments as SRT or WebVTT subtitles.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--video_path", nargs="+", required=True, help="video files, folders or glob patterns")
    parser.add_argument("--model_path", default="models/best.pt", help="checkpoint written by train.py")
    parser.add_argument("--tokenizer_path", default=None,
                        help="only to check against the checkpoint's own tokenizer (it is stored inside)")
    parser.add_argument("--xclip_model", default=None,
                        help="local copy of the checkpoint's X-CLIP (default: the name stored in the checkpoint)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    parser.add_argument("--beam_size", type=int, default=5, help="beam width (1 = greedy)")
    parser.add_argument("--num_captions", type=int, default=1, help="captions per video (best beams, <= beam size)")
    parser.add_argument("--max_len", type=int, default=30, help="max caption length in tokens")
    parser.add_argument("--views", type=int, default=1,
                        help="caption the mean latent of K jittered samplings of each video (1 = middle frames)")
    parser.add_argument("--segment_seconds", type=float, default=0,
                        help="caption each window of this many seconds instead of the whole video (0 = whole video)")
    parser.add_argument("--srt", default="", help="with --segment_seconds and one video: write the segments as SRT here")
    parser.add_argument("--vtt", default="", help="with --segment_seconds and one video: write them as WebVTT here")
    parser.add_argument("--json", action="store_true", help="print one JSON object per video")
    return parser.parse_args(argv)


def check_args(args, num_videos):
    """None, or one line saying which flags do not go together."""
    if args.views < 1:
        return f"--views {args.views}: pass 1 (middle frames) or more (mean of jittered samplings)"
    if not math.isfinite(args.segment_seconds) or args.segment_seconds < 0:
        return f"--segment_seconds {args.segment_seconds:g}: pass a positive window length, or 0 for whole videos"
    if args.segment_seconds and args.views > 1:
        return "--views and --segment_seconds do not go together: windows are sampled at their middle frames"
    if (args.srt or args.vtt) and not args.segment_seconds:
        return "--srt and --vtt write segments: add --segment_seconds S"
    if (args.srt or args.vtt) and num_videos != 1:
        return f"--srt and --vtt take one video, got {num_videos}; run once per video"
    return None


def decoder_inputs(encoder, decoder, clips):
    """Clips (B, T, 3, S, S) -> what the decoder reads: latents (B, D), or per-frame features (B, T, D) for the
    attention decoder."""
    if decoder.config.uses_frames:
        return encoder.encode_with_frames(clips)[1]
    return encoder.encode(clips)


def caption_video(path, encoder, decoder, tokenizer, preprocess, beam_size=5, num_captions=1, max_len=30, views=1):
    """One video -> {"path", "captions": [{"caption", "score"}], "warnings", "seconds": {...}}.

    With views > 1 the caption comes from the mean of the latents of `views` jittered samplings, drawn
    as the cache draws them for a video whose id is the file name. Raises dataset.VideoError for a
    video that cannot be read.
    """
    import torch
    from encode import read_views
    from model import beam_search

    started = time.perf_counter()
    frames, info = read_views(path, Path(path).stem, views, encoder.num_frames, preprocess)  # (K, T, 3, S, S)
    decoded = time.perf_counter()
    latents = decoder_inputs(encoder, decoder, torch.from_numpy(frames)).mean(dim=0, keepdim=True)  # (1, ...)
    encoded = time.perf_counter()
    latents = latents.to(decoder.latent_mean.device)
    threads = torch.get_num_threads()
    # One video's beams are too small to split across threads: on a shared 2-core machine, beam search took
    # 0.1 s on one thread and 0.3-1.8 s on two, waiting for the other thread at every step (bench.py).
    torch.set_num_threads(1)
    try:
        beams = beam_search(decoder, latents, beam_size=max(beam_size, num_captions), max_len=max_len,
                            n_best=num_captions)[0]
    finally:
        torch.set_num_threads(threads)
    generated = time.perf_counter()
    return {"path": str(path),
            "captions": [{"caption": tokenizer.decode(ids), "score": round(score, 4)} for ids, score in beams],
            "warnings": info.get("warnings", []),
            "seconds": {"decode": round(decoded - started, 4), "encode": round(encoded - decoded, 4),
                        "generate": round(generated - encoded, 4)}}


def caption_segments(path, encoder, decoder, tokenizer, preprocess, segment_seconds, beam_size=5, max_len=30,
                     batch_size=8):
    """Caption every segment_seconds window of one video -> {"path", "segments": [{"start", "end", "caption"}]
    (neighbours with the same caption merged), "windows": how many were captioned, "warnings", "seconds"}.

    Raises dataset.VideoError for a video that cannot be read.
    """
    import numpy as np
    import torch
    from dataset import read_video_windows
    from evaluate import caption_latents

    started = time.perf_counter()
    windows, warnings, captions = [], [], []
    pending = []  # windows read but not captioned yet, captioned batch_size at a time

    def caption_pending():
        clips = torch.from_numpy(np.stack([window["frames"] for window in pending]))  # (B, T, 3, S, S)
        inputs = decoder_inputs(encoder, decoder, clips).to(decoder.latent_mean.device)
        captions.extend(caption_latents(decoder, tokenizer, inputs, beam_size=beam_size, max_len=max_len))
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


def print_result(result, path, several, as_json):
    """One video's result on stdout: JSON, its caption(s), or its segments with their times."""
    if as_json:
        print(json.dumps(result), flush=True)
    elif "segments" in result:
        if several:
            print(f"{path}:")
        for segment in result["segments"]:
            print(f"{format_timestamp(segment['start'])} --> {format_timestamp(segment['end'])}  "
                  f"{segment['caption']}", flush=True)
    elif len(result["captions"]) == 1:  # one video: just its caption; several: prefixed by the path
        caption = result["captions"][0]["caption"]
        print(f"{path}: {caption}" if several else caption, flush=True)
    else:
        print(f"{path}:")
        for item in result["captions"]:
            print(f"  {item['score']:8.4f}  {item['caption']}", flush=True)


def main(args):
    from checkpoint import (CheckpointError, decoder_from_checkpoint, encoder_from_checkpoint, load_checkpoint,
                            tokenizer_from_checkpoint)
    from dataset import Preprocess, VideoError
    from encode import atomic_write_text, expand_video_paths, resolve_device
    from model import EncoderLoadError

    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 are printed escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    paths = expand_video_paths(args.video_path)
    problem = check_args(args, len(paths))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    try:
        checkpoint = load_checkpoint(args.model_path)
        tokenizer = tokenizer_from_checkpoint(checkpoint, args.tokenizer_path)
        decoder = decoder_from_checkpoint(checkpoint).to(device)
        encoder = encoder_from_checkpoint(checkpoint, args.xclip_model, device=device)
    except (CheckpointError, EncoderLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    preprocess = Preprocess.from_dict(checkpoint["encoder"]["preprocess"])
    failures = 0
    for path in paths:
        try:
            if args.segment_seconds:
                result = caption_segments(path, encoder, decoder, tokenizer, preprocess, args.segment_seconds,
                                          args.beam_size, args.max_len)
            else:
                result = caption_video(path, encoder, decoder, tokenizer, preprocess, args.beam_size,
                                       args.num_captions, args.max_len, args.views)
        except VideoError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        for warning in result["warnings"]:
            print(f"warning: {path}: {warning}", file=sys.stderr)
        print_result(result, path, len(paths) > 1, args.json)
        for subtitle_path, write in ((args.srt, format_srt), (args.vtt, format_vtt)):
            if subtitle_path:
                try:
                    atomic_write_text(subtitle_path, write(result["segments"]))
                except OSError as error:
                    print(f"error: {subtitle_path}: cannot write subtitles ({error.strerror}); choose a writable "
                          "path", file=sys.stderr)
                    return 2
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
