"""Caption videos with a trained checkpoint.

    python inference.py --video_path clip.mp4
    python inference.py --video_path long.mp4 --segment_seconds 5 --srt long.srt

Takes files, folders and globs; prints one caption per video (or JSON with --json). A video that
cannot be read gets one line on stderr and the others are still captioned; the exit code is 2 if
any failed. Several whole videos are decoded in DataLoader workers while X-CLIP encodes and beam
search captions them in batches (--batch_size, --num_workers), in order. The checkpoint carries its
tokenizer and names its X-CLIP encoder. --views K captions the mean latent of K jittered samplings. --segment_seconds S captions every S-second window of a
long video instead, merges neighbouring windows that get the same caption, and can write the
segments as SRT or WebVTT subtitles. --sample draws captions at random (temperature, top-p, seeded)
instead of searching for the most likely one.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from captioning import (Decoding, add_decoding_arguments, caption_segments, caption_video, format_srt,
                        format_timestamp, format_vtt, generate_batch)
from common import (UserError, check_outputs, check_writable, count, fail, interrupted, non_negative, positive_int,
                    write_text)

# torch, transformers and the modules that import them are imported inside the functions that use them, so
# that `inference.py --help` answers at once instead of after several seconds of imports.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--video_path", nargs="+", required=True, help="video files, folders or glob patterns")
    parser.add_argument("--model_path", nargs="+", default=["models/best.pt"],
                        help="checkpoint written by train.py, a folder written by export.py, or a Hub repo id "
                             "(user/name); several: an ensemble (same tokenizer and encoder) decoding with the mean "
                             "of their log-probabilities at every step")
    parser.add_argument("--tokenizer_path", default=None,
                        help="only to check against the checkpoint's own tokenizer (it is stored inside)")
    parser.add_argument("--xclip_model", default=None,
                        help="local copy of the checkpoint's X-CLIP (default: the name stored in the checkpoint)")
    parser.add_argument("--device", default="auto", help="where to run: auto (a GPU when there is one), cpu, cuda or "
                                                          "cuda:N")
    add_decoding_arguments(parser)
    parser.add_argument("--views", type=positive_int, default=1,
                        help="caption the mean latent of K jittered samplings of each video (1 = middle frames)")
    parser.add_argument("--segment_seconds", type=non_negative, default=0,
                        help="caption each window of this many seconds instead of the whole video (0 = whole video)")
    parser.add_argument("--srt", default="", help="with --segment_seconds and one video: write the segments as SRT here")
    parser.add_argument("--vtt", default="", help="with --segment_seconds and one video: write them as WebVTT here")
    parser.add_argument("--json", action="store_true", help="print one JSON object per video")
    parser.add_argument("--batch_size", type=positive_int, default=8,
                        help="with several videos: videos encoded and captioned together")
    parser.add_argument("--num_workers", type=count, default=None,
                        help="with several videos: DataLoader workers decoding them while others are encoded "
                             "(default: one per available core; 0 = in this process)")
    return parser.parse_args(argv)


def check_args(args, num_videos):
    """None, or one line saying which flags do not go together."""
    if args.segment_seconds and args.views > 1:
        return "--views and --segment_seconds do not go together: windows are sampled at their middle frames"
    if (args.srt or args.vtt) and not args.segment_seconds:
        return "--srt and --vtt write segments: add --segment_seconds S"
    if (args.srt or args.vtt) and num_videos != 1:
        return f"--srt and --vtt take one video, got {num_videos}; run once per video"
    if args.sample and args.segment_seconds:
        return "--sample and --segment_seconds do not go together: segments are captioned by beam search"
    return None


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
            score = "" if item["score"] is None else f"{item['score']:8.4f}  "
            print(f"  {score}{item['caption']}", flush=True)


def caption_path(path, captioner, args) -> dict:
    """One video's result as main prints it: its captions, or with --segment_seconds its segments."""
    if args.segment_seconds:
        return caption_segments(path, *captioner, args.segment_seconds, Decoding.from_args(args))
    return caption_video(path, *captioner, views=args.views, decoding=Decoding.from_args(args))


def caption_many(paths, captioner, args):
    """Whole videos, several at once: yield (path, result or the UserError of a video that cannot be read), in the
    order of paths. Decoding runs in DataLoader workers while X-CLIP encodes batches of --batch_size videos and
    beam search captions them together (latents.encoded_batches); nothing is held but the batches in flight."""
    import torch
    from latents import EncodeOptions, encoded_batches

    encoder, decoder, tokenizer, preprocess = captioner
    # While the workers decode, beam search gets one thread: two wait for each other at every step on a busy CPU.
    threads = torch.get_num_threads() if args.num_workers == 0 else 1
    items = [(Path(path).stem, path) for path in paths]  # the file name seeds --views, as caption_video does
    options = EncodeOptions(batch_size=args.batch_size, num_workers=args.num_workers)
    for batch in encoded_batches(items, encoder, preprocess, args.views, decoder.config.uses_frames, options,
                                 to_cpu=False):
        captions, shares = [], {}
        if batch["latents"] is not None:
            features = batch["frame_features"] if decoder.config.uses_frames else batch["latents"]  # (B, K, ...)
            started, encoder_threads = time.perf_counter(), torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                captions = generate_batch(decoder, tokenizer, features.mean(dim=1).to(decoder.latent_mean.device),
                                          Decoding.from_args(args))
            finally:
                torch.set_num_threads(encoder_threads)
            shares = {"encode": batch["encode_seconds"] / len(captions),
                      "generate": (time.perf_counter() - started) / len(captions)}
        rows = iter(captions)
        for sample in batch["samples"]:
            path = paths[sample["index"]]
            if sample["error"] is not None:
                yield path, UserError(sample["error"])
                continue
            seconds = {"decode": sample["seconds"], **shares}
            yield path, {"path": str(path), "captions": next(rows), "warnings": sample["warnings"],
                         "seconds": {name: round(value, 4) for name, value in seconds.items()}}


def outcomes(paths, captioner, args):
    """(path, result or UserError) of every video in order: several whole videos together (caption_many), else
    one at a time."""
    if len(paths) > 1 and not args.segment_seconds:
        yield from caption_many(paths, captioner, args)
        return
    for path in paths:
        try:
            yield path, caption_path(path, captioner, args)
        except UserError as error:  # a video that cannot be read: report it, caption the others
            yield path, error


def report(path, outcome, args, several) -> bool:
    """Print one video's outcome: its warnings (stderr) and captions or segments (stdout), or its error (one
    line); write its subtitles. Returns whether it was captioned."""
    if isinstance(outcome, UserError):
        fail(outcome)
        return False
    for warning in outcome["warnings"]:
        print(f"warning: {path}: {warning}", file=sys.stderr)
    print_result(outcome, path, several, args.json)
    write_subtitles(outcome, args)
    return True


def main(args) -> int:
    from checkpoint import load_captioner
    from common import expand_video_paths, progress_bar, resolve_device, use_warning_lines

    use_warning_lines()
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 are printed escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    paths = expand_video_paths(args.video_path)
    failures = 0
    # A bar on a terminal when there are several videos; each video's lines are printed above it.
    bar = progress_bar(total=len(paths), unit="video", desc="captioning", dynamic_ncols=True, leave=False,
               disable=None if len(paths) > 1 else True)
    try:
        problem = check_args(args, len(paths))
        if problem:
            raise UserError(problem)
        check_writable(args.srt, "--srt")
        check_writable(args.vtt, "--vtt")
        check_outputs([("--srt", args.srt), ("--vtt", args.vtt)],
                      [("--video_path", path) for path in paths] + [*[("--model_path", path) for path in args.model_path],
                       ("--tokenizer_path", args.tokenizer_path), ("--xclip_model", args.xclip_model)])
        captioner = load_captioner(args.model_path, resolve_device(args.device), args.xclip_model,
                                   args.tokenizer_path)
        for path, outcome in outcomes(paths, captioner, args):
            with bar.external_write_mode():
                failures += not report(path, outcome, args, len(paths) > 1)
            bar.update()
    except UserError as error:
        return fail(error)
    except KeyboardInterrupt:
        bar.close()
        return interrupted("the captions printed so far are complete")
    finally:
        bar.close()
    return 2 if failures else 0


def write_subtitles(result, args) -> None:
    """--srt / --vtt: the segments of the one video as subtitles."""
    for subtitle_path, write in ((args.srt, format_srt), (args.vtt, format_vtt)):
        if subtitle_path:
            try:
                write_text(subtitle_path, write(result["segments"]))
            except OSError as error:
                raise UserError(f"{subtitle_path}: cannot write subtitles ({error.strerror}); choose a writable "
                                "path") from None


if __name__ == "__main__":
    sys.exit(main(parse_args()))
