"""Encode videos once into the on-disk latent cache that training and evaluation read.

    python encode.py --data_dir data --xclip_model microsoft/xclip-base-patch32-16-frames --cache_dir cache
    python encode.py --video_path clips/ --cache_dir cache          # any files, folders or globs

X-CLIP is frozen, so each video is decoded and encoded exactly once. The cache folder's name says
what made it (encoder name and weight fingerprint, frames, crop size, sampling, dtype); each entry
is one .npy written under a temporary name and renamed into place, so a killed run resumes where
it stopped and never reads back half an entry. Broken videos are listed in failures.jsonl.

--views K caches K samplings of each video (frames jittered inside their segments, seeded by the
video id and the view index), stored as one (K, D) entry in a cache whose name says "jitKs0";
K = 1 is the usual middle-frame sampling, (D,) entries, "mid". --frames also caches X-CLIP's
per-frame features beside each latent (frames/<video_id>.npy, (F, D) or (K, F, D)), which the
attention decoder reads.
"""
import argparse
import sys

from annotations import SPLIT_NAMES, add_data_arguments, load_dataset
from common import (DEFAULT_XCLIP, UserError, check_output_folder, check_outputs, count, expand_video_paths, fail,
                    interrupted, one_line, positive_int, resolve_device, set_device, use_warning_lines)
# The cache and the encoding live in latents.py; the names below stay importable from encode for older callers.
from latents import (CacheError, EncodeOptions, LatentCache, cache_key, encode_videos, encoded_batches,  # noqa: F401
                     encoder_record, feature_files, format_summary, is_cache_folder, load_encoder, load_feature_file,
                     load_preprocess, open_cache, split_features, split_latents, torchrun_shard)


def items_for(args) -> list:
    """(video_id, path) pairs from --video_path or from the splits of the dataset."""
    if args.video_path:
        return [(path.stem, path) for path in expand_video_paths(args.video_path)]
    dataset = load_dataset(args)
    return [(vid, dataset.video_path(vid)) for split in args.splits for vid in dataset.splits[split]]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--splits", nargs="+", default=list(SPLIT_NAMES), choices=SPLIT_NAMES,
                        help="splits to encode")
    parser.add_argument("--video_path", "--videos", nargs="+", dest="video_path",
                        help="encode these files, folders or globs instead of a dataset "
                             "(video id = file name without extension)")
    parser.add_argument("--xclip_model", default=DEFAULT_XCLIP, help="X-CLIP hub name or local folder")
    parser.add_argument("--cache_dir", default="cache", help="where latent caches live")
    parser.add_argument("--encode_dtype", default="fp32", choices=["fp32", "bf16"],
                        help="encoder precision; bf16 also prints its cosine similarity to fp32")
    parser.add_argument("--views", type=positive_int, default=1,
                        help="samplings per video: 1 = the middle frame of each segment; K > 1 = K jittered "
                             "samplings, cached together as (K, D) in a cache named jitKs0")
    parser.add_argument("--frames", action="store_true",
                        help="also cache the per-frame features (F, D) that train.py --decoder attention reads")
    parser.add_argument("--batch_size", type=positive_int, default=8,
                        help="videos per encoder batch (a GPU encodes more at once: try 32)")
    parser.add_argument("--num_workers", type=count, default=None,
                        help="DataLoader workers decoding videos (default: one per available core, shared among "
                             "torchrun's processes on the machine; 0 = in process)")
    parser.add_argument("--device", default="auto",
                        help="auto (a GPU when there is one), cpu, cuda or cuda:N; under torchrun each process "
                             "takes cuda:LOCAL_RANK")
    parser.add_argument("--strict", action="store_true", help="stop at the first broken video")
    parser.add_argument("--shard", type=count, default=0,
                        help="encode only shard K of --num_shards (a cluster job array); under torchrun each "
                             "rank further takes its slice; all shards fill the same cache")
    parser.add_argument("--num_shards", type=positive_int, default=1, help="number of shards the videos are split into")
    return parser.parse_args(argv)


def main(args) -> int:
    use_warning_lines()
    if args.shard >= args.num_shards:
        return fail(f"--shard {args.shard}: pass 0 to {args.num_shards - 1} (shards are numbered from 0)")
    try:
        items = items_for(args)
        check_output_folder(args.cache_dir, "--cache_dir", is_cache_folder, overwrite_flag=None)
        check_outputs([("--cache_dir", args.cache_dir)], [("--video_path", path) for _, path in items]
                      + [("--xclip_model", args.xclip_model)])
        device = resolve_device(args.device)
        set_device(device)
        encoder, reference = load_encoder(args.xclip_model, args.encode_dtype, device)
        cache, preprocess = open_cache(encoder, args.cache_dir, args.encode_dtype, args.views, args.frames)
        shard, num_shards = torchrun_shard(args.shard, args.num_shards)
        options = EncodeOptions(batch_size=args.batch_size, num_workers=args.num_workers, strict=args.strict,
                                shard=shard, num_shards=num_shards)
        summary = encode_videos(items, encoder, cache, preprocess, options, reference_encoder=reference)
    except UserError as error:
        return fail(error)
    except OSError as error:  # a cache folder that cannot be made or written, a disk that fills up
        return fail(f"{error.filename or args.cache_dir}: {one_line(error)}; check --cache_dir and free space")
    except KeyboardInterrupt:
        return interrupted("every finished entry is kept: run the same command again to encode the rest")
    for vid, error in summary["failed"]:
        print(f"failed: {error}", file=sys.stderr)
    print(format_summary(summary, cache))
    return 2 if summary["failed"] and len(summary["failed"]) == summary["total"] else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
