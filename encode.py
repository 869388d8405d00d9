"""Encode videos once into the on-disk latent cache that training and evaluation read.

    python encode.py --data_dir data --xclip_model microsoft/xclip-base-patch32-16-frames --cache_dir cache

X-CLIP is frozen, so each video is decoded and encoded exactly once. The cache folder's name says
what made it (encoder name and weight fingerprint, frames, crop size, sampling, dtype); each entry
is one .npy written under a temporary name and renamed into place, so a killed run resumes where
it stopped and never reads back half an entry. Broken videos are listed in failures.jsonl.

--views K caches K samplings of each video (frames jittered inside their segments, seeded by the
video id and the view index), stored as one (K, D) entry in a cache whose name says "jitKs0";
K = 1 is the usual middle-frame sampling, (D,) entries, "mid". --frames also caches X-CLIP's
per-frame features beside each latent (frames/<video_id>.npy, (T, D) or (K, T, D)), which the
attention decoder reads.
"""
import argparse
import glob
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

VIEW_SEED = 0  # base of every view's seed; part of the cache name ("jit4s0") so that a change shows there
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts"}


class CacheError(Exception):
    """The cache cannot be used as asked; one line naming the folder and the problem."""


def expand_video_paths(specs):
    """Files, directories (their videos, sorted) and glob patterns -> list of paths, in the order given.

    A spec that matches nothing is kept as it is, so reading it reports the missing file.
    """
    paths = []
    for spec in specs:
        spec = str(spec)
        if os.path.isdir(spec):
            videos = sorted(p for p in Path(spec).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
            paths += videos or [Path(spec)]  # a folder without videos is reported as a failure, not skipped
        elif glob.has_magic(spec) and not os.path.exists(spec):
            paths += sorted(Path(p) for p in glob.glob(spec, recursive=True))
        else:
            paths.append(Path(spec))
    return paths


def sampling_name(views=1, base_seed=VIEW_SEED):
    """How frames are picked, as the cache name says it: "mid" (one view), "jit4s0" (4 jittered views, seed 0)."""
    return "mid" if views == 1 else f"jit{views}s{base_seed}"


def view_seed(video_id, view, base_seed=VIEW_SEED):
    """Seed of one jittered view: a function of the video id, the view index and base_seed only, so every
    process, shard and run draws the same frames for it."""
    digest = hashlib.sha256(f"{base_seed}/{video_id}/{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def read_views(path, video_id, views, num_frames, preprocess):
    """Frames of `views` samplings of one video, (K, T, 3, S, S) float32, and the first one's info.

    One view is the middle frame of every segment (what a cache with (D,) entries holds); K > 1 views
    each take a random frame of every segment, seeded by view_seed(video_id, view). Raises VideoError.
    """
    from dataset import read_video

    if views == 1:
        frames, info = read_video(path, num_frames=num_frames, preprocess=preprocess)
        return frames[None], info
    samples = [read_video(path, num_frames=num_frames, preprocess=preprocess, jitter=True,
                          seed=view_seed(video_id, view)) for view in range(views)]
    return np.stack([frames for frames, _ in samples]), samples[0][1]  # (K, T, 3, S, S)


def view_spread(latents, centred=False):
    """Mean cosine similarity of each view's latent to the mean of its video's views: latents (N, K, D) -> float.

    1.0 means the sampled frames do not matter; the lower, the more the latent depends on them. With
    centred, the mean latent of all videos is taken away first, as the decoder's standardisation does,
    so that a direction every latent shares does not hide the differences.
    """
    latents = np.asarray(latents, dtype=np.float64)
    if centred:
        latents = latents - latents.mean(axis=(0, 1))
    mean = latents.mean(axis=1, keepdims=True)  # (N, 1, D)
    cosine = (latents * mean).sum(-1) / (np.linalg.norm(latents, axis=-1) * np.linalg.norm(mean, axis=-1) + 1e-12)
    return float(cosine.mean())


def view_variance_share(latents):
    """Share of the latents' variance that is between views of the same video rather than between videos:
    latents (N, K, D) -> float in [0, 1]; 0 when the sampling does not matter."""
    latents = np.asarray(latents, dtype=np.float64)
    within = ((latents - latents.mean(axis=1, keepdims=True)) ** 2).sum(-1).mean()
    total = ((latents - latents.mean(axis=(0, 1))) ** 2).sum(-1).mean()
    return float(within / total) if total > 0 else 0.0


def cache_key(encoder, preprocess, num_frames, dtype_name, sampling="mid"):
    """Folder name that says what made the latents; a different encoder gives a different name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(encoder.name_or_path.rstrip("/\\")).name)[-48:]
    return (f"{slug}-{encoder.fingerprint()}-{num_frames}f-{preprocess.image_size}px"
            f"-{sampling}-{dtype_name}")


class LatentCache:
    """One folder of latents, one `latents/<video_id>.npy` each, plus meta.json and failures.jsonl.

    Entries are (D,), or (K, D) for a cache of K views (meta["views"]). With with_frames, every video
    also has `frames/<video_id>.npy`, its per-frame features (T, D) or (K, T, D), and counts as cached
    only when it has both.
    """

    def __init__(self, root, meta, with_frames=False):
        self.root = Path(root)
        self.entries = self.root / "latents"
        self.entries.mkdir(parents=True, exist_ok=True)
        self.frame_entries = self.root / "frames"
        self.with_frames = with_frames
        if with_frames:
            self.frame_entries.mkdir(exist_ok=True)
        meta_path = self.root / "meta.json"
        if meta_path.exists():
            try:
                found = json.loads(meta_path.read_text())
            except (OSError, ValueError) as error:
                raise CacheError(f"{meta_path}: unreadable ({error}); delete {self.root} to rebuild this cache") from None
            if not isinstance(found, dict):
                raise CacheError(f"{meta_path}: not a cache description; delete {self.root} to rebuild this cache")
            if found.get("fingerprint") != meta.get("fingerprint"):
                raise CacheError(f"{self.root}: made by encoder {found.get('name')} "
                                 f"({found.get('fingerprint')}), not {meta.get('name')} ({meta.get('fingerprint')}); "
                                 "pass another --cache_dir or delete this folder")
        else:
            atomic_write_text(meta_path, json.dumps(meta, indent=2))
        self.meta = meta
        self.views = int(meta.get("views", 1))

    def path(self, video_id):
        return self.entries / f"{video_id}.npy"

    def frames_path(self, video_id):
        return self.frame_entries / f"{video_id}.npy"

    def has(self, video_id):
        return self.path(video_id).exists() and (not self.with_frames or self.frames_path(video_id).exists())

    def write(self, video_id, latent, frame_features=None):
        """Store one video's latent (and its per-frame features); the latent last, so it marks the entry done."""
        from dataset import save_array_atomic

        if frame_features is not None:
            save_array_atomic(self.frames_path(video_id), np.asarray(frame_features, dtype=np.float32))
        save_array_atomic(self.path(video_id), np.asarray(latent, dtype=np.float32))

    def read(self, video_ids):
        """Latents (N, D) float32 for the given ids, in order ((N, K, D) for K views)."""
        self.check_encoded(video_ids)
        return np.stack([self.load(v) for v in video_ids]) if video_ids else np.zeros((0, 0), np.float32)

    def read_frames(self, video_ids):
        """Per-frame features (N, T, D) float32 for the given ids, in order ((N, K, T, D) for K views)."""
        self.check_encoded(video_ids)
        return np.stack([self.load_frames(v) for v in video_ids]) if video_ids else np.zeros((0, 0, 0), np.float32)

    def check_encoded(self, video_ids):
        missing = [v for v in video_ids if not self.has(v)]
        if missing:
            raise CacheError(f"{self.root}: {len(missing)} videos not encoded yet (e.g. {', '.join(missing[:3])}); "
                             "run encode.py first")

    def load(self, video_id):
        """One latent (D,) or (K, D); CacheError naming the file when it is damaged (e.g. by a crash of the machine)."""
        dim = self.meta.get("latent_dim")
        return self._load_entry(self.path(video_id), None if dim is None else (dim,), "latent")

    def load_frames(self, video_id):
        """One video's per-frame features (T, D) or (K, T, D)."""
        dim, num_frames = self.meta.get("latent_dim"), self.meta.get("num_frames")
        shape = None if dim is None or num_frames is None else (num_frames, dim)
        return self._load_entry(self.frames_path(video_id), shape, "per-frame features")

    def _load_entry(self, path, shape, what):
        """np.load with damage and shape checks; shape is one view's ((D,) or (T, D)), None = not checked."""
        try:
            entry = np.load(path)
        except (OSError, ValueError, EOFError) as error:
            raise CacheError(f"{path}: damaged cache entry ({error}); delete it and run encode.py again") from None
        if shape is not None and self.views > 1:
            shape = (self.views, *shape)
        if (shape is not None and entry.shape != shape) or entry.dtype != np.float32:
            raise CacheError(f"{path}: holds a {entry.dtype} array of shape {entry.shape}, not this cache's "
                             f"{shape} float32 {what}; delete it and run encode.py again")
        return entry


def atomic_write_text(path, text):
    """Write UTF-8 text under a temporary name next to path, then os.replace it into place."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


class VideoClips:
    """torch Dataset over (video_id, path): each item, its views (K, T, 3, S, S), is decoded in a DataLoader
    worker, errors caught."""

    def __init__(self, items, num_frames, preprocess, views=1):
        self.items, self.num_frames, self.preprocess, self.views = items, num_frames, preprocess, views

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        from dataset import VideoError

        video_id, path = self.items[index]
        try:
            frames, info = read_views(path, video_id, self.views, self.num_frames, self.preprocess)
            return {"video_id": video_id, "frames": frames, "error": None, "warnings": info.get("warnings", [])}
        except VideoError as error:
            return {"video_id": video_id, "frames": None, "error": str(error), "warnings": []}


def collate_clips(samples):
    """Stack the decodable clips of a batch into (B, K, T, 3, H, W); keep the failures apart."""
    import torch

    good = [s for s in samples if s["frames"] is not None]
    frames = torch.from_numpy(np.stack([s["frames"] for s in good])) if good else None
    return {"video_ids": [s["video_id"] for s in good], "frames": frames,
            "failures": [(s["video_id"], s["error"]) for s in samples if s["frames"] is None],
            "warnings": [(s["video_id"], w) for s in samples for w in s["warnings"]]}


def open_cache(encoder, cache_dir, dtype_name="fp32", views=1, with_frames=False):
    """The LatentCache for this encoder, its frame count and preprocessing, the dtype and the number of views;
    with_frames: it also holds (and encode_videos fills in) per-frame features."""
    from dataset import load_preprocess

    if views < 1:
        raise CacheError(f"--views must be at least 1, got {views}")
    preprocess = load_preprocess(encoder.name_or_path, encoder.image_size)
    sampling = sampling_name(views)
    key = cache_key(encoder, preprocess, encoder.num_frames, dtype_name, sampling)
    meta = {"name": encoder.name_or_path, "fingerprint": encoder.fingerprint(), "num_frames": encoder.num_frames,
            "preprocess": preprocess.to_dict(), "sampling": sampling, "dtype": dtype_name,
            "latent_dim": encoder.latent_dim}
    if views > 1:
        meta.update(views=views, view_seed=VIEW_SEED)
    return LatentCache(Path(cache_dir) / key, meta, with_frames=with_frames), preprocess


def encode_videos(items, encoder, cache, preprocess, batch_size=8, num_workers=2, strict=False,
                  shard=0, num_shards=1, reference_encoder=None, progress=True):
    """Encode every (video_id, path) not yet in the cache. Returns counts and the failures.

    Decoding runs in DataLoader workers so it overlaps encoding. With strict, the first broken
    video raises VideoError; otherwise broken videos are collected and written to failures.jsonl.
    reference_encoder (fp32) is used on the first batch to report how far a bf16 encoder is.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from dataset import VideoError

    items = sorted(items)[shard::num_shards]
    todo = [(vid, path) for vid, path in items if not cache.has(vid)]
    summary = {"total": len(items), "cached": len(items) - len(todo), "encoded": 0, "failed": [], "warnings": []}
    if not todo:
        return summary
    loader = DataLoader(VideoClips(todo, encoder.num_frames, preprocess, cache.views), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_clips,
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    bar = tqdm(total=len(todo), unit="video", desc="encoding", disable=not progress, dynamic_ncols=True)
    try:
        for batch in loader:
            if strict and batch["failures"]:
                raise VideoError(batch["failures"][0][1])
            summary["failed"] += batch["failures"]
            summary["warnings"] += batch["warnings"]
            if batch["frames"] is not None:
                clips = batch["frames"].flatten(0, 1)  # (B*K, T, 3, H, W)
                if cache.with_frames:
                    latents, frame_features = encoder.encode_with_frames(clips)  # (B*K, D), (B*K, T, D)
                    frame_features = frame_features.unflatten(0, (-1, cache.views))  # (B, K, T, D)
                else:
                    latents, frame_features = encoder.encode(clips), None  # (B*K, D)
                if reference_encoder is not None:
                    reference = reference_encoder.encode(clips)
                    cosine = torch.nn.functional.cosine_similarity(latents, reference, dim=-1)
                    tqdm.write(f"{encoder.dtype} vs fp32 on the first batch: cosine similarity "
                               f"mean {cosine.mean():.5f}, min {cosine.min():.5f}")
                    reference_encoder = None
                latents = latents.unflatten(0, (-1, cache.views)).cpu().numpy()  # (B, K, D)
                if frame_features is not None:
                    frame_features = frame_features.cpu().numpy()  # (B, K, T, D)
                view = 0 if cache.views == 1 else slice(None)  # one view keeps the (D,) entries caches always had
                for row, video_id in enumerate(batch["video_ids"]):
                    cache.write(video_id, latents[row, view],
                                None if frame_features is None else frame_features[row, view])
                summary["encoded"] += len(batch["video_ids"])
            bar.update(len(batch["video_ids"]) + len(batch["failures"]))
    finally:
        bar.close()
        failures = failures_path(cache, shard, num_shards)
        if summary["failed"] or failures.exists():
            lines = [json.dumps({"video_id": vid, "error": error}) for vid, error in summary["failed"]]
            atomic_write_text(failures, "".join(line + "\n" for line in lines))
    summary["failures_path"] = str(failures)
    return summary


def failures_path(cache, shard=0, num_shards=1):
    """failures.jsonl, or one file per shard so that concurrent shards never write the same file."""
    return cache.root / ("failures.jsonl" if num_shards == 1 else f"failures-shard{shard}of{num_shards}.jsonl")


def torchrun_shard(shard=0, num_shards=1):
    """Under torchrun each rank takes its own slice of this job's shard: (shard, num_shards) for this process."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return shard * world + rank, num_shards * world


def format_summary(summary, cache):
    line = (f"{summary['encoded']} encoded, {summary['cached']} already cached, "
            f"{len(summary['failed'])} failed of {summary['total']} videos -> {cache.root}")
    if summary["failed"]:
        line += f" (failures listed in {summary['failures_path']})"
    return line


def resolve_device(name):
    """auto -> cuda when available, else cpu. Asking for cuda without it is a one-line error, exit 2."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {name}: no CUDA device is available here; use --device cpu or auto", file=sys.stderr)
        sys.exit(2)
    return name


def load_encoder(name_or_path, encode_dtype="fp32", device="cpu"):
    """XClipEncoder in the asked dtype, plus an fp32 twin to compare against when the dtype is bf16."""
    import torch
    from model import XClipEncoder

    encoder = XClipEncoder(name_or_path, dtype=torch.float32).to(device)
    reference = None
    if encode_dtype == "bf16":
        import copy

        reference = encoder
        encoder = copy.deepcopy(encoder)
        encoder.model.to(torch.bfloat16)
        encoder.dtype = torch.bfloat16
    return encoder, reference


def split_latents(msrvtt, splits, encoder, cache_dir, encode_dtype="fp32", num_workers=2, barrier=None, views=1,
                  per_frame=False):
    """{split: (video ids, (N, D) float32 latents)} from the cache, encoding what it lacks first.

    With views K > 1 the arrays are (N, K, D); with per_frame they hold per-frame features instead,
    (N, T, D) or (N, K, T, D). Videos that cannot be decoded are reported and left out of their
    split. Under torchrun each rank encodes its own shard; barrier() (torch.distributed.barrier)
    waits for all of them.
    """
    cache, preprocess = open_cache(encoder, cache_dir, encode_dtype, views, with_frames=per_frame)
    items = [(vid, msrvtt.video_path(vid)) for split in splits for vid in msrvtt.splits[split]]
    shard, num_shards = torchrun_shard()
    summary = encode_videos(items, encoder, cache, preprocess, num_workers=num_workers, shard=shard,
                            num_shards=num_shards)
    if summary["encoded"] or summary["failed"]:
        print(format_summary(summary, cache))
    if barrier is not None:
        barrier()
    result = {}
    for split in splits:
        ids = [vid for vid in msrvtt.splits[split] if cache.has(vid)]  # broken videos have no entry
        result[split] = (ids, cache.read_frames(ids) if per_frame else cache.read(ids))
    return result, cache


def items_for(args):
    """(video_id, path) pairs from --videos or from the MSR-VTT splits of --data_dir."""
    if args.videos:
        return [(path.stem, path) for path in expand_video_paths(args.videos)]
    from dataset import load_msrvtt

    msrvtt = load_msrvtt(args.data_dir, scheme=args.scheme)
    return [(vid, msrvtt.video_path(vid)) for split in args.splits for vid in msrvtt.splits[split]]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="data", help="folder holding MSRVTT/ (or MSRVTT/ itself)")
    parser.add_argument("--scheme", default="official", choices=["official", "1k-A"], help="MSR-VTT split scheme")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to encode")
    parser.add_argument("--videos", nargs="+", help="encode these files, folders or globs instead of MSR-VTT "
                                                   "(video id = file name without extension)")
    parser.add_argument("--xclip_model", default="microsoft/xclip-base-patch32-16-frames",
                        help="X-CLIP hub name or local folder")
    parser.add_argument("--cache_dir", default="cache", help="where latent caches live")
    parser.add_argument("--encode_dtype", default="fp32", choices=["fp32", "bf16"],
                        help="encoder precision; bf16 also prints its cosine similarity to fp32")
    parser.add_argument("--views", type=int, default=1,
                        help="samplings per video: 1 = the middle frame of each segment; K > 1 = K jittered "
                             "samplings, cached together as (K, D) in a cache named jitKs0")
    parser.add_argument("--frames", action="store_true",
                        help="also cache the per-frame features (T, D) that train.py --decoder attention reads")
    parser.add_argument("--batch_size", type=int, default=8, help="videos per encoder batch")
    parser.add_argument("--num_workers", type=int, default=2, help="DataLoader workers decoding videos (0 = in process)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--strict", action="store_true", help="stop at the first broken video")
    parser.add_argument("--shard", type=int, default=0,
                        help="encode only shard K of --num_shards (a cluster job array); under torchrun each "
                             "rank further takes its slice; all shards fill the same cache")
    parser.add_argument("--num_shards", type=int, default=1, help="number of shards the videos are split into")
    return parser.parse_args(argv)


def main(args):
    from dataset import DatasetError, VideoError
    from model import EncoderLoadError

    try:
        items = items_for(args)
        encoder, reference = load_encoder(args.xclip_model, args.encode_dtype, resolve_device(args.device))
        cache, preprocess = open_cache(encoder, args.cache_dir, args.encode_dtype, args.views, args.frames)
        shard, num_shards = torchrun_shard(args.shard, args.num_shards)
        summary = encode_videos(items, encoder, cache, preprocess, batch_size=args.batch_size,
                                num_workers=args.num_workers, strict=args.strict, shard=shard,
                                num_shards=num_shards, reference_encoder=reference)
    except (DatasetError, VideoError, EncoderLoadError, CacheError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for vid, error in summary["failed"]:
        print(f"failed: {error}", file=sys.stderr)
    print(format_summary(summary, cache))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
