"""Caption videos with a trained checkpoint.

    python inference.py --video_path clip.mp4

Takes files, folders and globs; prints one caption per video (or JSON with --json). A video that
cannot be read gets one line on stderr and the others are still captioned; the exit code is 2 if
any failed. The checkpoint carries its tokenizer and names its X-CLIP encoder.
"""
import argparse
import json
import sys
import time


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
    parser.add_argument("--json", action="store_true", help="print one JSON object per video")
    return parser.parse_args(argv)


def caption_video(path, encoder, decoder, tokenizer, preprocess, beam_size=5, num_captions=1, max_len=30):
    """One video -> {"path", "captions": [{"caption", "score"}], "warnings", "seconds": {...}}.

    Raises dataset.VideoError for a video that cannot be read.
    """
    import torch
    from dataset import read_video
    from model import beam_search

    started = time.perf_counter()
    frames, info = read_video(path, num_frames=encoder.num_frames, preprocess=preprocess)
    decoded = time.perf_counter()
    latents = encoder.encode(torch.from_numpy(frames)[None])  # (1, D)
    encoded = time.perf_counter()
    latents = latents.to(decoder.latent_mean.device)
    beams = beam_search(decoder, latents, beam_size=max(beam_size, num_captions), max_len=max_len,
                        n_best=num_captions)[0]
    generated = time.perf_counter()
    return {"path": str(path),
            "captions": [{"caption": tokenizer.decode(ids), "score": round(score, 4)} for ids, score in beams],
            "warnings": info.get("warnings", []),
            "seconds": {"decode": round(decoded - started, 4), "encode": round(encoded - decoded, 4),
                        "generate": round(generated - encoded, 4)}}


def main(args):
    from checkpoint import (CheckpointError, decoder_from_checkpoint, encoder_from_checkpoint, load_checkpoint,
                            tokenizer_from_checkpoint)
    from dataset import Preprocess, VideoError
    from encode import expand_video_paths, resolve_device
    from model import EncoderLoadError

    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 are printed escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
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
    paths = expand_video_paths(args.video_path)
    for path in paths:
        try:
            result = caption_video(path, encoder, decoder, tokenizer, preprocess, args.beam_size,
                                   args.num_captions, args.max_len)
        except VideoError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        for warning in result["warnings"]:
            print(f"warning: {path}: {warning}", file=sys.stderr)
        if args.json:
            print(json.dumps(result), flush=True)
        elif len(result["captions"]) == 1:  # one video: just its caption; several: prefixed by the path
            caption = result["captions"][0]["caption"]
            print(caption if len(paths) == 1 else f"{path}: {caption}", flush=True)
        else:
            print(f"{path}:")
            for item in result["captions"]:
                print(f"  {item['score']:8.4f}  {item['caption']}", flush=True)
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
