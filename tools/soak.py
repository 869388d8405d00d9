"""Soak test: resident memory and time while encoding and captioning many videos in one run.

    python tools/soak.py --out_dir soak --num_videos 500 --inference_videos 200 --long_minutes 10

Writes (or reuses) a synthetic MSR-VTT and a tiny X-CLIP (or uses --xclip_model), and an untrained
checkpoint for that encoder. Then: encodes --num_videos clips in one encode_videos call, reading
resident memory (/proc/self/statm) after every clip; captions --inference_videos clips in one
inference.py call, reading it after every clip; with --long_minutes, captions one long clip of
--long_size at --long_fps and reports its time and peak memory. Growth is measured from the
reading after the first 10% of the clips to the largest one after it, in MiB. Exit code 1 when a
growth passes --max_growth_mib.
"""
import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python tools/soak.py`, only tools/ is on the path
    sys.path.insert(0, str(REPO))

import av
import numpy as np
import sentencepiece as spm
import torch

import inference
from annotations import load_msrvtt
from captioning import Decoding, caption_video
from checkpoint import load_captioner, make_checkpoint, save_checkpoint
from common import UserError, fail, progress_bar, use_warning_lines
from create_tokenizer import train_captions, train_tokenizer
from latents import EncodeOptions, encode_videos, load_encoder, open_cache
from model import CaptionDecoder, DecoderConfig
from synthetic import encode_frame, make_synthetic_msrvtt, make_tiny_xclip, video_stream
from tools.measure import children_rss_mib, peak_rss_mib, reset_peak_rss, rss_mib, timed
from tools.scratch import check_scratch_folder, make_scratch_folder

WARMUP_FRACTION = 0.1  # readings before this fraction of the clips warm caches and allocators up


def warmup_index(num_readings, warmup_fraction=WARMUP_FRACTION):
    """Index of the reading taken after the first warmup_fraction of the clips."""
    return min(num_readings - 1, max(0, round(warmup_fraction * num_readings) - 1))


def growth_after_warmup(readings, warmup_fraction=WARMUP_FRACTION):
    """How far the readings rise after the first warmup_fraction of them: max(later) - reading at warm-up."""
    if len(readings) < 2:
        return 0.0
    start = warmup_index(len(readings), warmup_fraction)
    return max(readings[start:]) - readings[start]


def make_untrained_checkpoint(path, encoder_meta, tokenizer_path, seed=0):
    """A small random decoder saved as a checkpoint for this encoder and tokenizer; returns path.

    Its output bias keeps byte pieces and EOS unlikely, so every caption is max_len words: enough to
    exercise decoding and printing, nothing to judge captions by.
    """
    tokenizer_proto = Path(tokenizer_path).read_bytes()
    tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_proto)
    config = DecoderConfig(vocab_size=tokenizer.get_piece_size(), latent_dim=int(encoder_meta["latent_dim"]),
                           embed_dim=32, hidden_dim=64, num_layers=1, dropout=0.0, pad_id=tokenizer.pad_id(),
                           bos_id=tokenizer.bos_id(), eos_id=tokenizer.eos_id())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = CaptionDecoder(config)
    unwanted = [index for index in range(config.vocab_size) if tokenizer.is_byte(index)
                or tokenizer.is_control(index) or tokenizer.is_unknown(index)]
    with torch.no_grad():
        decoder.head.bias[unwanted] = -20.0
    save_checkpoint(path, make_checkpoint(decoder, tokenizer_proto, encoder_meta,
                                          {"made_by": "soak.make_untrained_checkpoint"}))
    return Path(path)


def measure_encoding(items, encoder, cache, preprocess, batch_size=8, num_workers=0):
    """encode_videos over items in one call, reading resident memory (MiB) after every clip written to the cache.

    Returns {"rss_mib": [...], "workers_rss_mib": [...], "seconds", "summary"}.
    """
    readings = {"rss_mib": [], "workers_rss_mib": []}
    write = cache.write

    def write_and_read_memory(*args, **kwargs):
        write(*args, **kwargs)
        readings["rss_mib"].append(rss_mib())
        if num_workers:
            readings["workers_rss_mib"].append(children_rss_mib())

    cache.write = write_and_read_memory
    try:
        seconds, summary = timed(encode_videos, items, encoder, cache, preprocess,
                                 EncodeOptions(batch_size=batch_size, num_workers=num_workers, progress=False))
    finally:
        del cache.write  # back to the class's method
    return {**readings, "seconds": seconds, "summary": summary}


def measure_inference(video_paths, model_path, xclip_model, beam_size=5, max_len=30):
    """inference.main over video_paths in one call, reading resident memory (MiB) after every clip (captioned or not).

    Returns {"rss_mib": [...], "seconds", "exit_code", "captions": stdout lines, "errors": stderr lines}.
    """
    readings = []
    report = inference.report

    def report_and_read_memory(*args, **kwargs):
        try:
            return report(*args, **kwargs)
        finally:
            readings.append(rss_mib())

    args = inference.parse_args(["--model_path", str(model_path), "--xclip_model", str(xclip_model), "--device",
                                 "cpu", "--beam_size", str(beam_size), "--max_len", str(max_len), "--video_path",
                                 *map(str, video_paths)])
    stdout, stderr = io.StringIO(), io.StringIO()
    inference.report = report_and_read_memory
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            seconds, exit_code = timed(inference.main, args)
    finally:
        inference.report = report
    return {"rss_mib": readings, "seconds": seconds, "exit_code": exit_code,
            "captions": stdout.getvalue().splitlines(), "errors": stderr.getvalue().splitlines()}


def write_long_video(path, minutes, size=(320, 240), fps=30, seed=0):
    """A long clip of a drifting gradient under grain (motion and residuals to decode, like footage)."""
    path = Path(path)
    width, height = size
    num_frames = int(minutes * 60 * fps)
    rows, columns = np.mgrid[0:height, 0:width]
    grain = np.random.default_rng(seed).integers(-12, 13, (7, height, width, 1))  # 7 grain patterns, cycled
    with video_stream(path, fps, width, height, options={"preset": "ultrafast"}) as stream:
        for number in progress_bar(range(num_frames), desc="long clip", unit="frame", leave=False):
            gradient = ((rows + columns + 2 * number) % 200 + 28)[:, :, None] * np.array([1.0, 0.8, 0.6])
            pixels = np.clip(gradient + grain[number % 7], 0, 255).astype(np.uint8)  # (H, W, 3)
            encode_frame(stream, av.VideoFrame.from_ndarray(pixels, format="rgb24"))
    return path


def measure_long_video(path, model_path, xclip_model, warmup_path=None):
    """Seconds and peak-RSS rise (MiB) of captioning one clip, after the model is loaded and has captioned
    warmup_path (a small clip; default: this one), so that only what this clip needs counts."""
    encoder, decoder, tokenizer, preprocess = load_captioner(model_path, "cpu", str(xclip_model))
    decoding = Decoding(beam_size=1, max_len=5)
    caption_video(warmup_path or path, encoder, decoder, tokenizer, preprocess, decoding=decoding)
    before = rss_mib()
    resettable = reset_peak_rss()
    seconds, result = timed(caption_video, path, encoder, decoder, tokenizer, preprocess, decoding=decoding)
    return {"seconds": seconds, "peak_rise_mib": peak_rss_mib() - before if resettable else None,
            "decode_seconds": result["seconds"]["decode"], "warnings": result["warnings"]}


def prepare(out_dir, num_videos, xclip_model=None, seed=0):
    """Synthetic set, X-CLIP folder, tokenizer and an untrained checkpoint under out_dir (reused when there)."""
    out_dir = Path(out_dir)
    data_dir = make_synthetic_msrvtt(out_dir / "data", num_videos=num_videos, seed=seed, min_captions=2,
                                     max_captions=3)
    if xclip_model is None:
        xclip_model = out_dir / "tiny-xclip"
        if not (xclip_model / "config.json").is_file():
            make_tiny_xclip(xclip_model, seed=seed)
    tokenizer_path = out_dir / "tokenizer.model"
    if not tokenizer_path.is_file():
        captions = train_captions(load_msrvtt(data_dir, check_videos=False))
        tokenizer_path = train_tokenizer(captions, out_dir / "tokenizer", vocab_size=300)
    encoder, _ = load_encoder(str(xclip_model))
    cache, preprocess = open_cache(encoder, out_dir / "cache")
    model_path = make_untrained_checkpoint(out_dir / "untrained.pt", cache.meta, tokenizer_path, seed=seed)
    video_dir = Path(data_dir) / "MSRVTT" / "videos" / "all"
    videos = [video_dir / f"video{index}.mp4" for index in range(num_videos)]
    return {"videos": videos, "xclip_model": xclip_model, "encoder": encoder, "cache": cache,
            "preprocess": preprocess, "model_path": model_path}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out_dir", default="soak", help="scratch folder (synthetic clips, cache, checkpoint)")
    parser.add_argument("--overwrite", action="store_true",
                        help="use --out_dir even though it holds files this tool did not write")
    parser.add_argument("--num_videos", type=int, default=500, help="clips encoded in one run")
    parser.add_argument("--inference_videos", type=int, default=200, help="clips captioned in one inference.py call")
    parser.add_argument("--xclip_model", default=None, help="X-CLIP hub name or folder (default: a tiny random one)")
    parser.add_argument("--batch_size", type=int, default=8, help="clips per encoder batch")
    parser.add_argument("--num_workers", type=int, default=0,
                        help="DataLoader workers decoding clips (0 = in process, so decoder leaks show in the RSS)")
    parser.add_argument("--beam_size", type=int, default=5, help="beam width for inference")
    parser.add_argument("--long_minutes", type=float, default=0, help="also caption one clip this long (0 = skip)")
    parser.add_argument("--long_size", type=int, nargs=2, default=[320, 240], help="width and height of the long clip")
    parser.add_argument("--long_fps", type=int, default=30, help="frame rate of the long clip")
    parser.add_argument("--max_growth_mib", "--max_growth_mb", dest="max_growth_mib", type=float, default=50.0,
                        help="resident memory growth after warm-up (MiB) that fails the run")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic clips and the tiny models")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    return parser.parse_args(argv)


def long_video_report(args, world) -> dict:
    """--long_minutes: write the long clip once, caption it, and report its seconds and peak-RSS rise."""
    width, height = args.long_size
    long_clip = Path(args.out_dir) / f"long-{args.long_minutes:g}min-{width}x{height}-{args.long_fps}fps.mp4"
    if not long_clip.is_file():
        write_long_video(long_clip, args.long_minutes, (width, height), args.long_fps)
    result = measure_long_video(long_clip, world["model_path"], world["xclip_model"], world["videos"][0])
    rise = result["peak_rise_mib"]
    return {"path": str(long_clip), "seconds": round(result["seconds"], 2),
            "peak_rise_mib": None if rise is None else round(rise, 1), "warnings": result["warnings"]}


def main(args) -> int:
    use_warning_lines()
    if args.num_videos < 3 or not 1 <= args.inference_videos <= args.num_videos:
        return fail(UserError(f"--num_videos {args.num_videos}, --inference_videos {args.inference_videos}: need "
                              "--num_videos >= 3 and 1 <= --inference_videos <= --num_videos"))
    try:
        # Folders made before folders were marked hold the untrained checkpoint or the tokenizer.
        check_scratch_folder(args.out_dir, "--out_dir", "soak", ("untrained.pt", "tokenizer.model"), args.overwrite)
        make_scratch_folder(args.out_dir, "--out_dir", "soak")
    except UserError as error:
        return fail(error)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = prepare(args.out_dir, args.num_videos, args.xclip_model, args.seed)
    cache = world["cache"]
    for entry in cache.entries.glob("*.npy"):  # start from an empty cache: every clip is encoded now
        entry.unlink()
    encoding = measure_encoding([(path.stem, path) for path in world["videos"]], world["encoder"], cache,
                                world["preprocess"], args.batch_size, args.num_workers)
    captioning = measure_inference(world["videos"][:args.inference_videos], world["model_path"],
                                   world["xclip_model"], beam_size=args.beam_size)
    report = {
        "encode": {"videos": args.num_videos, "encoded": encoding["summary"]["encoded"],
                   "failed": len(encoding["summary"]["failed"]), "seconds": round(encoding["seconds"], 1),
                   "rss_after_warmup_mib": round(encoding["rss_mib"][warmup_index(len(encoding["rss_mib"]))], 1),
                   "rss_end_mib": round(encoding["rss_mib"][-1], 1),
                   "growth_mib": round(growth_after_warmup(encoding["rss_mib"]), 1)},
        "inference": {"videos": args.inference_videos, "captioned": len(captioning["captions"]),
                      "exit_code": captioning["exit_code"], "seconds": round(captioning["seconds"], 1),
                      "rss_end_mib": round(captioning["rss_mib"][-1], 1),
                      "growth_mib": round(growth_after_warmup(captioning["rss_mib"]), 1)},
    }
    if encoding["workers_rss_mib"]:
        report["encode"]["workers_growth_mib"] = round(growth_after_warmup(encoding["workers_rss_mib"]), 1)
    if args.long_minutes:
        report["long_video"] = long_video_report(args, world)
    growths = [report["encode"]["growth_mib"], report["inference"]["growth_mib"],
               report["encode"].get("workers_growth_mib", 0.0)]
    report["passed"] = max(growths) < args.max_growth_mib and report["inference"]["exit_code"] == 0
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for part, numbers in report.items():
            if isinstance(numbers, dict):
                numbers = ", ".join(f"{key} {value}" for key, value in numbers.items())
            print(f"{part:<10} {numbers}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
