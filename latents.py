"""The latent cache that training and evaluation read, and what fills it: X-CLIP loading, its preprocessing,
batched decoding and encoding (encoded_batches, encode_videos), the latents or precomputed features of a
dataset's splits (split_latents, split_features). encode.py is the command line over it.

The cache folder's name says what made it (encoder name and weight fingerprint, frames, crop size, sampling,
dtype); each entry is one .npy written under a temporary name and renamed into place, so a killed run resumes
where it stopped and never reads back half an entry. A cache of K views holds K samplings of each video as one
(K, D) entry and its name says "jitKs0"; a cache with frames also holds X-CLIP's per-frame features beside each
latent (frames/<video_id>.npy, (F, D) or (K, F, D)), which the attention decoder reads.
"""
import copy
import json
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common import (DEFAULT_XCLIP, UserError, check_output_folder, default_workers, gpu_has_native_bf16, load_npy,
                    progress_bar, save_array, write_text)
from dataset import (Preprocess, VIEW_SEED, VideoClips, VideoError, XCLIP_MEAN, XCLIP_STD, collate_clips,
                     leave_ctrl_c_to_main, normalise_levels)
from model import XClipEncoder


class CacheError(UserError):
    """The cache cannot be used as asked; one line naming the folder and the problem."""


# ----------------------------------------------------------------------------------------------------------------------
# The encoder and its preprocessing

def load_encoder(name_or_path=DEFAULT_XCLIP, encode_dtype="fp32", device="cpu"):
    """XClipEncoder in the asked dtype, plus an fp32 twin to compare against when the dtype is bf16."""
    encoder = XClipEncoder(name_or_path, dtype=torch.float32).to(device)
    if encode_dtype != "bf16":
        return encoder, None
    if torch.device(device).type == "cuda" and not gpu_has_native_bf16(device):
        warnings.warn(f"{torch.cuda.get_device_name(device)} only emulates bf16: --encode_dtype fp32 is faster here",
                      stacklevel=2)
    reference, encoder = encoder, copy.deepcopy(encoder)
    encoder.model.to(torch.bfloat16)
    encoder.dtype = torch.bfloat16
    return encoder, reference


def edge_from_size_field(value, default: int) -> int:
    """A size/crop_size field of preprocessor_config.json (int, {"shortest_edge"}, {"height","width"}) -> one edge."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        edges = [int(value[key]) for key in ("height", "width") if key in value]
        if edges:
            return min(edges)  # non-square sizes are approximated by their shorter edge
    if isinstance(value, (list, tuple)) and value:
        return int(min(value))
    return default


def preprocess_from_config(config: dict, image_size: int) -> Preprocess:
    """Preprocess from the contents of a preprocessor_config.json; absent fields get X-CLIP's values."""
    crop_size = edge_from_size_field(config.get("crop_size"), image_size)
    shortest_edge = edge_from_size_field(config.get("size"), crop_size)
    mean = tuple(float(v) for v in config.get("image_mean", XCLIP_MEAN))
    std = tuple(float(v) for v in config.get("image_std", XCLIP_STD))
    if len(mean) != 3 or len(std) != 3:
        raise UserError("preprocessor_config.json: image_mean and image_std need 3 values (RGB)")
    return Preprocess(image_size=crop_size, shortest_edge=shortest_edge, mean=mean, std=std)


def load_preprocess(name_or_path: str, image_size: int) -> Preprocess:
    """Preprocess of a checkpoint (local folder or hub id) from its preprocessor_config.json; X-CLIP defaults without one."""
    local = Path(name_or_path)
    config_path = None
    if local.is_file() and local.suffix == ".json":
        config_path = local
    elif local.is_dir():
        config_path = local / "preprocessor_config.json" if (local / "preprocessor_config.json").is_file() else None
    else:
        config_path = hub_preprocessor_config(str(name_or_path))
    if config_path is None:
        return Preprocess(image_size=image_size, shortest_edge=image_size)
    try:
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{config_path}: not a readable preprocessor config ({error}); fix or delete it") from None
    return preprocess_from_config(config if isinstance(config, dict) else {}, image_size)


def hub_preprocessor_config(repo_id: str) -> Path | None:
    """Local path of a hub model's preprocessor_config.json (the cache first, then the hub); None when unavailable.
    Offline, huggingface_hub keeps retrying for a long while, so the hub is only asked when its host answers
    within 3 s."""
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, "preprocessor_config.json", local_files_only=True))
    except Exception:  # not cached (or not a valid repo id)
        pass
    constants = huggingface_hub.constants
    if constants.HF_HUB_OFFLINE or not host_reachable(constants.ENDPOINT):
        return None
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, "preprocessor_config.json"))
    except Exception:  # no such repo or file, gated, network trouble: the defaults will do
        return None


def host_reachable(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the host of url opens within timeout_s."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------------------------------
# The cache

def sampling_name(views: int = 1, base_seed: int = VIEW_SEED) -> str:
    """How frames are picked, as the cache name says it: "mid" (one view), "jit4s0" (4 jittered views, seed 0)."""
    return "mid" if views == 1 else f"jit{views}s{base_seed}"


def cache_key(encoder, preprocess: Preprocess, num_frames: int, dtype_name: str, sampling: str = "mid",
              fingerprint: str | None = None) -> str:
    """Folder name that says what made the latents; a different encoder gives a different name.
    fingerprint: another one of this encoder's (default: encoder.fingerprint())."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(encoder.name_or_path.rstrip("/\\")).name)[-48:]
    return f"{slug}-{fingerprint or encoder.fingerprint()}-{cache_suffix(preprocess, num_frames, dtype_name, sampling)}"


def cache_suffix(preprocess: Preprocess, num_frames: int, dtype_name: str, sampling: str = "mid") -> str:
    """The end of a cache's name, after the encoder's name and fingerprint: frames, crop, sampling, dtype."""
    return f"{num_frames}f-{preprocess.image_size}px-{sampling}-{dtype_name}"


def find_cache_folder(encoder, cache_dir, preprocess: Preprocess, dtype_name: str, sampling: str = "mid") -> Path:
    """The folder under cache_dir holding this encoder's latents: the one cache_key names, else an existing one
    made by the same weights under another name (a local copy of a hub model) or recorded with the legacy
    fingerprint (caches made before it was path-independent), else the new one cache_key names."""
    cache_dir = Path(cache_dir)
    own = cache_dir / cache_key(encoder, preprocess, encoder.num_frames, dtype_name, sampling)
    if own.is_dir() or not cache_dir.is_dir():
        return own
    for folder in sorted(cache_dir.glob(f"*-{cache_suffix(preprocess, encoder.num_frames, dtype_name, sampling)}")):
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            continue  # not a cache, or a damaged one: LatentCache reports it when it is asked for by name
        if isinstance(meta, dict) and encoder.made(meta.get("fingerprint"), meta.get("name")):
            return folder
    return own


CACHE_FILES = ("latents", "frames", "meta.json", "failures.jsonl")  # what a cache folder holds


def is_cache_folder(entry: Path) -> bool:
    """True for a folder of --cache_dir that encode.py made: a cache (meta.json), or one begun (empty or entries)."""
    return entry.is_dir() and all(child.name in CACHE_FILES for child in entry.iterdir())


class LatentCache:
    """One folder of latents, one `latents/<video_id>.npy` each, plus meta.json and failures.jsonl.

    Entries are (D,), or (K, D) for a cache of K views (meta["views"]). With with_frames, every video
    also has `frames/<video_id>.npy`, its per-frame features (F, D) or (K, F, D), and counts as cached
    only when it has both.
    """

    def __init__(self, root, meta: dict, with_frames: bool = False, made_by=None):
        self.root = Path(root)
        if not (self.root / "meta.json").exists():  # a new cache: never in a folder of someone else's files
            check_output_folder(self.root, "--cache_dir: the cache folder", lambda entry: entry.name in CACHE_FILES,
                                overwrite_flag=None)
        # made_by(fingerprint, name): whether an existing meta.json's encoder is this one (default: same fingerprint)
        self.made_by = made_by or (lambda fingerprint, name: fingerprint == meta.get("fingerprint"))
        self.entries = self.root / "latents"
        self.entries.mkdir(parents=True, exist_ok=True)
        self.frame_entries = self.root / "frames"
        self.with_frames = with_frames
        if with_frames:
            self.frame_entries.mkdir(exist_ok=True)
        self.check_meta(meta)
        self.meta = meta
        self.views = int(meta.get("views", 1))

    def check_meta(self, meta: dict) -> None:
        """Write meta.json in a new cache; in an existing one, refuse latents of another encoder."""
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            write_text(meta_path, json.dumps(meta, indent=2))
            return
        try:
            found = json.loads(meta_path.read_text())
        except (OSError, ValueError) as error:
            raise CacheError(f"{meta_path}: unreadable ({error}); delete {self.root} to rebuild this cache") from None
        if not isinstance(found, dict):
            raise CacheError(f"{meta_path}: not a cache description; delete {self.root} to rebuild this cache")
        if not self.made_by(found.get("fingerprint"), found.get("name")):
            raise CacheError(f"{self.root}: made by encoder {found.get('name')} ({found.get('fingerprint')}), not "
                             f"{meta.get('name')} ({meta.get('fingerprint')}); pass another --cache_dir or delete "
                             f"this folder")

    def path(self, video_id: str) -> Path:
        return self.entries / entry_name(video_id)

    def frame_features_path(self, video_id: str) -> Path:
        return self.frame_entries / entry_name(video_id)

    def has(self, video_id: str) -> bool:
        return self.path(video_id).exists() and (not self.with_frames or self.frame_features_path(video_id).exists())

    def write(self, video_id: str, latent, frame_features=None) -> None:
        """Store one video's latent (and its per-frame features); the latent last, so it marks the entry done."""
        if frame_features is not None:
            save_array(self.frame_features_path(video_id), np.asarray(frame_features, dtype=np.float32))
        save_array(self.path(video_id), np.asarray(latent, dtype=np.float32))

    def read(self, video_ids: list) -> np.ndarray:
        """Latents (N, D) float32 for the given ids, in order ((N, K, D) for K views)."""
        self.check_encoded(video_ids)
        return np.stack([self.load(v) for v in video_ids]) if video_ids else np.zeros((0, 0), np.float32)

    def read_frame_features(self, video_ids: list) -> np.ndarray:
        """Per-frame features (N, F, D) float32 for the given ids, in order ((N, K, F, D) for K views)."""
        self.check_encoded(video_ids)
        return (np.stack([self.load_frame_features(v) for v in video_ids]) if video_ids
                else np.zeros((0, 0, 0), np.float32))

    def check_encoded(self, video_ids: list) -> None:
        missing = [v for v in video_ids if not self.has(v)]
        if missing:
            raise CacheError(f"{self.root}: {len(missing)} videos not encoded yet (e.g. {', '.join(missing[:3])}); "
                             "run encode.py first")

    def load(self, video_id: str) -> np.ndarray:
        """One latent (D,) or (K, D); CacheError naming the file when it is damaged (e.g. by a crash of the machine)."""
        dim = self.meta.get("latent_dim")
        return self._load_entry(self.path(video_id), None if dim is None else (dim,), "latent")

    def load_frame_features(self, video_id: str) -> np.ndarray:
        """One video's per-frame features (F, D) or (K, F, D)."""
        dim, num_frames = self.meta.get("latent_dim"), self.meta.get("num_frames")
        shape = None if dim is None or num_frames is None else (num_frames, dim)
        return self._load_entry(self.frame_features_path(video_id), shape, "per-frame features")

    def _load_entry(self, path: Path, shape, what: str) -> np.ndarray:
        """np.load with damage and shape checks; shape is one view's ((D,) or (F, D)), None = not checked."""
        try:
            entry = load_npy(path)
        except UserError as error:  # load_npy's "<path>: <what is wrong>"
            raise CacheError(f"{path}: damaged cache entry ({str(error).removeprefix(f'{path}: ')}); delete it and "
                             "run encode.py again") from None
        except (OSError, ValueError, EOFError) as error:
            raise CacheError(f"{path}: damaged cache entry ({error}); delete it and run encode.py again") from None
        if shape is not None and self.views > 1:
            shape = (self.views, *shape)
        if (shape is not None and entry.shape != shape) or entry.dtype != np.float32:
            raise CacheError(f"{path}: holds a {entry.dtype} array of shape {entry.shape}, not this cache's "
                             f"{shape} float32 {what}; delete it and run encode.py again")
        if not np.isfinite(entry).all():
            raise CacheError(f"{path}: holds NaN or infinite values; delete it and run encode.py again")
        return entry


def encoder_record(encoder, dtype_name: str = "fp32", views: int = 1) -> tuple:
    """(record, Preprocess): what made a cache's latents, as its meta.json and every checkpoint store it: the
    encoder's name and fingerprint, frames, preprocessing, sampling, dtype and latent size."""
    preprocess = load_preprocess(encoder.name_or_path, encoder.image_size)
    record = {"name": encoder.name_or_path, "fingerprint": encoder.fingerprint(), "num_frames": encoder.num_frames,
              "preprocess": preprocess.to_dict(), "sampling": sampling_name(views), "dtype": dtype_name,
              "latent_dim": encoder.latent_dim}
    if views > 1:
        record.update(views=views, view_seed=VIEW_SEED)
    return record, preprocess


def entry_name(video_id: str) -> str:
    """The file name of a video's cache entry: the id, with "%" and path separators percent-encoded (ids of a
    captions file are paths: "clips/cat" -> "clips%2Fcat.npy"), so that every id gets its own file in the folder."""
    return video_id.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C") + ".npy"


def open_cache(encoder, cache_dir, dtype_name: str = "fp32", views: int = 1, with_frames: bool = False):
    """(LatentCache, Preprocess) for this encoder, its frame count and preprocessing, the dtype and the number
    of views; with_frames: it also holds (and encode_videos fills in) per-frame features."""
    if views < 1:
        raise CacheError(f"--views {views}: pass 1 (middle frames) or more (jittered samplings)")
    record, preprocess = encoder_record(encoder, dtype_name, views)
    folder = find_cache_folder(encoder, cache_dir, preprocess, dtype_name, record["sampling"])
    return LatentCache(folder, record, with_frames=with_frames, made_by=encoder.made), preprocess


# ----------------------------------------------------------------------------------------------------------------------
# Encoding

@dataclass(frozen=True)
class EncodeOptions:
    """How videos are worked through: batch_size videos per encoder batch, decoded by num_workers DataLoader
    workers (None: common.default_workers, one per core; 0: in process); strict stops at the first broken video;
    only shard K of num_shards is encoded (sorted items[K::num_shards]); progress draws a bar."""
    batch_size: int = 8
    num_workers: int | None = None
    strict: bool = False
    shard: int = 0
    num_shards: int = 1
    progress: bool = True


def encoded_batches(items, encoder, preprocess, views: int = 1, with_frames: bool = False,
                    options: EncodeOptions = EncodeOptions(), reference_encoder=None, to_cpu: bool = True):
    """Decode (video_id, path) items in DataLoader workers while the encoder encodes the previous batches, and
    yield each collated batch (dataset.collate_clips), in order, with what X-CLIP made of its clips: "latents"
    (B, K, D) and, with with_frames, "frame_features" (B, K, F, D) (None for a batch of broken videos only),
    and "encode_seconds".
    Batches of options.batch_size; the options.num_workers workers stay at most a few batches ahead, so memory is
    bounded whatever the number of videos. Frames travel as uint8 levels, pinned when the encoder is on a GPU,
    and are normalised there. reference_encoder (fp32) is compared with the encoder on the first batch (a bf16
    encoder's distance). to_cpu=False leaves the latents on the encoder's device (for a decoder there)."""
    num_workers = default_workers() if options.num_workers is None else options.num_workers
    device = torch.device(getattr(encoder, "device", "cpu"))
    loader = DataLoader(VideoClips(items, encoder.num_frames, preprocess, views, num_workers),
                        batch_size=options.batch_size,
                        num_workers=num_workers, collate_fn=collate_clips, persistent_workers=False,
                        # 8 batches in flight with few workers, 2 per worker with many: memory stays bounded
                        prefetch_factor=max(2, 8 // num_workers) if num_workers else None,
                        pin_memory=device.type == "cuda",
                        worker_init_fn=leave_ctrl_c_to_main)
    for batch in loader:
        started = time.perf_counter()
        batch["latents"] = batch["frame_features"] = None
        if batch["frames"] is not None:
            batch["latents"], batch["frame_features"] = encode_clips(encoder, batch["frames"], with_frames,
                                                                     reference_encoder, preprocess, to_cpu)
            reference_encoder = None
        batch["encode_seconds"] = time.perf_counter() - started
        yield batch


def encode_clips(encoder, frames, with_frames: bool = False, reference_encoder=None, preprocess=None,
                 to_cpu: bool = True) -> tuple:
    """Frames (B, K, F, 3, S, S) -> (latents (B, K, D), per-frame features (B, K, F, D) or None), on the CPU (with
    to_cpu=False, where the encoder left them); with reference_encoder, print how close the encoder's latents are
    to it (a bf16 encoder against its fp32 twin).

    frames: float32 frames, or uint8 levels (a tensor, pinned for a GPU) that are copied to the encoder's device
    without waiting and normalised there with preprocess (dataset.normalise_levels: the same bits as on the CPU)."""
    clips = torch.as_tensor(frames).flatten(0, 1)  # (B*K, F, 3, S, S)
    if clips.dtype == torch.uint8:
        clips = normalise_levels(clips.to(getattr(encoder, "device", "cpu"), non_blocking=True), preprocess)
    views = frames.shape[1]
    if with_frames:
        latents, frame_features = encoder.encode_with_frames(clips)  # (B*K, D), (B*K, F, D)
        frame_features = frame_features.unflatten(0, (-1, views))  # (B, K, F, D)
    else:
        latents, frame_features = encoder.encode(clips), None  # (B*K, D)
    if reference_encoder is not None:
        cosine = torch.nn.functional.cosine_similarity(latents, reference_encoder.encode(clips), dim=-1)
        tqdm.write(f"{encoder.dtype} vs fp32 on the first batch: cosine similarity "
                   f"mean {cosine.mean():.5f}, min {cosine.min():.5f}")
    latents = latents.unflatten(0, (-1, views))  # (B, K, D)
    if to_cpu:  # the cache writes them; a decoder on the same GPU reads them where they are
        latents, frame_features = latents.cpu(), None if frame_features is None else frame_features.cpu()
    return latents, frame_features


def encode_videos(items, encoder, cache, preprocess, options: EncodeOptions = EncodeOptions(),
                  reference_encoder=None) -> dict:
    """Encode every (video_id, path) not yet in the cache. Returns counts and the failures.

    Decoding runs in DataLoader workers so it overlaps encoding (encoded_batches). With strict, the first
    broken video raises VideoError (options.strict); otherwise broken videos are collected and written to failures.jsonl.
    reference_encoder (fp32) is used on the first batch to report how far a bf16 encoder is.
    """
    items = sorted(items)[options.shard::options.num_shards]
    todo = [(vid, path) for vid, path in items if not cache.has(vid)]
    summary = {"total": len(items), "cached": len(items) - len(todo), "encoded": 0, "failed": [], "warnings": []}
    if not todo:
        return summary
    batches = encoded_batches(todo, encoder, preprocess, cache.views, cache.with_frames, options,
                              reference_encoder)
    bar = progress_bar(total=len(todo), unit="video", desc="encoding", disable=not options.progress,
                       dynamic_ncols=True)
    try:
        for batch in batches:
            if options.strict and batch["failures"]:
                raise VideoError(batch["failures"][0][1])
            summary["failed"] += batch["failures"]
            summary["warnings"] += batch["warnings"]
            if batch["latents"] is not None:
                write_batch(cache, batch)
                summary["encoded"] += len(batch["video_ids"])
            bar.update(len(batch["video_ids"]) + len(batch["failures"]))
    finally:
        bar.close()
        failures = failures_path(cache, options.shard, options.num_shards)
        if summary["failed"] or failures.exists():
            lines = [json.dumps({"video_id": vid, "error": error}) for vid, error in summary["failed"]]
            write_text(failures, "".join(line + "\n" for line in lines))
    summary["failures_path"] = str(failures)
    return summary


def write_batch(cache, batch: dict) -> None:
    """Write each video's entry of an encoded batch (encoded_batches): one view keeps the (D,) entries caches
    always had."""
    view = 0 if cache.views == 1 else slice(None)
    latents, frame_features = batch["latents"].numpy(), batch["frame_features"]
    for row, video_id in enumerate(batch["video_ids"]):
        cache.write(video_id, latents[row, view], None if frame_features is None else frame_features[row, view].numpy())


def failures_path(cache, shard: int = 0, num_shards: int = 1) -> Path:
    """failures.jsonl, or one file per shard so that concurrent shards never write the same file."""
    return cache.root / ("failures.jsonl" if num_shards == 1 else f"failures-shard{shard}of{num_shards}.jsonl")


def torchrun_shard(shard: int = 0, num_shards: int = 1) -> tuple:
    """Under torchrun each rank takes its own slice of this job's shard: (shard, num_shards) for this process."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return shard * world + rank, num_shards * world


def format_summary(summary: dict, cache) -> str:
    line = (f"{summary['encoded']} encoded, {summary['cached']} already cached, "
            f"{len(summary['failed'])} failed of {summary['total']} videos -> {cache.root}")
    if summary["failed"]:
        line += f" (failures listed in {summary['failures_path']})"
    return line


def split_latents(dataset, splits, encoder, cache, preprocess, options: EncodeOptions = EncodeOptions(),
                  barrier=None) -> dict:
    """{split: (video ids, latents (N, D) float32)} from cache (and its preprocess: open_cache), encoding with
    encoder what the cache lacks first (options: batch size and workers; the shard is torchrun's).

    With a cache of K > 1 views the arrays are (N, K, D); in a cache with frames they hold per-frame features
    instead, (N, F, D) or (N, K, F, D). Videos that cannot be decoded are reported and left out of their split.
    Under torchrun each rank encodes its own shard; barrier(problem) waits for all of them and raises on
    every rank when one failed (problem: this rank's error, or None).
    """
    items = [(vid, dataset.video_path(vid)) for split in splits for vid in dataset.splits[split]]
    shard, num_shards = torchrun_shard()
    problem = None
    try:
        summary = encode_videos(items, encoder, cache, preprocess,
                                replace(options, strict=False, shard=shard, num_shards=num_shards))
        if summary["encoded"] or summary["failed"]:
            print(format_summary(summary, cache))
    except (UserError, OSError) as error:  # under torchrun the other ranks must hear of it, not wait for it
        if barrier is None:
            raise
        problem = error
    if barrier is not None:
        barrier(problem)
    result = {}
    for split in splits:
        ids = [vid for vid in dataset.splits[split] if cache.has(vid)]  # broken videos have no entry
        result[split] = (ids, cache.read_frame_features(ids) if cache.with_frames else cache.read(ids))
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Precomputed features: one <video_id>.npy per video, made elsewhere

def feature_file(folder: Path, video_id: str) -> Path:
    return Path(folder) / f"{video_id.lstrip('/')}.npy"


def feature_files(folder: Path, video_ids: list) -> dict:
    """video id -> its feature file: folder/<video id>.npy (folder/clips/cat.npy for "clips/cat"), or, where that is
    absent, folder/cat.npy as feature extractors name it. CacheError when such a flat name would serve two videos
    ("a/cat" and "b/cat"), which a flat folder cannot tell apart."""
    by_name = {}
    for video_id in video_ids:
        by_name.setdefault(video_id.rstrip("/").rsplit("/", 1)[-1], []).append(video_id)
    files = {}
    for video_id in video_ids:
        nested, name = feature_file(folder, video_id), video_id.rstrip("/").rsplit("/", 1)[-1]
        flat = Path(folder) / f"{name}.npy"
        if nested.is_file() or flat == nested or not flat.is_file():
            files[video_id] = nested
            continue
        if len(by_name[name]) > 1:
            clash = ", ".join(by_name[name][:3])
            raise CacheError(f"{flat}: videos {clash} share the file name {name}; write each video's features as "
                             f"{Path(folder) / '<video id>.npy'} ({feature_file(folder, by_name[name][0])}, ...)")
        files[video_id] = flat
    return files


def load_feature_file(path: Path) -> np.ndarray:
    """One video's features, (D,) or (T, D) float32; CacheError naming the file when it is damaged or not 1-2-D."""
    try:
        features = load_npy(path)
    except UserError as error:
        raise CacheError(f"{error}; re-export it") from None
    except (OSError, ValueError, EOFError) as error:
        raise CacheError(f"{path}: not a readable .npy feature file ({error}); re-export it") from None
    if features.ndim not in (1, 2) or features.size == 0 or not np.issubdtype(features.dtype, np.number):
        raise CacheError(f"{path}: holds a {features.dtype} array of shape {features.shape}; a feature file is one "
                         f"video's (D,) vector or (T, D) per-frame features")
    features = features.astype(np.float32)
    if not np.isfinite(features).all():
        raise CacheError(f"{path}: holds {np.size(features) - np.isfinite(features).sum()} NaN or infinite values; "
                         "export it again, or move it out of the folder to leave the video out")
    return features


def split_features(dataset, splits, folder, frame_features=False) -> tuple:
    """({split: (video ids, features)}, record) from the feature files in folder (feature_files: by video id, or by
    the flat file name where the id has subfolders): latents (N, D), the mean over T
    of (T, D) files; with frame_features, (N, T, D), which needs (T, D) files of one T. Videos without a file are
    left out with one warning, as videos missing on disk are. record describes the features for checkpoints."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CacheError(f"{folder}: no such folder of features; pass --features a folder of <video_id>.npy files")
    wanted = [video_id for split in splits for video_id in dataset.splits[split]]
    files = feature_files(folder, wanted)
    present = {video_id: load_feature_file(files[video_id]) for video_id in wanted if files[video_id].is_file()}
    if not present:
        raise CacheError(f"{folder}: no feature file for any of the {len(wanted)} videos (e.g. "
                         f"{files[wanted[0]] if wanted else 'none listed'}); check --features and --dataset")
    missing = [video_id for video_id in wanted if video_id not in present]
    if missing:
        warnings.warn(f"{folder}: {len(missing)} of {len(wanted)} videos have no feature file "
                      f"({', '.join(missing[:5])}); left out", stacklevel=2)
    first_id, first = next(iter(present.items()))
    for video_id, features in present.items():
        if frame_features and features.ndim != 2:
            raise CacheError(f"{files[video_id]}: shape {features.shape}, one vector per video; the "
                             "attention decoder needs (T, D) per-frame features: use --decoder pooled")
        wrong_shape = features.shape[-1] != first.shape[-1] or (frame_features and features.shape != first.shape)
        if wrong_shape:
            raise CacheError(f"{files[video_id]}: shape {features.shape}, but "
                             f"{files[first_id].name} has {first.shape}; "
                             + ("the attention decoder needs (T, D) files of one T" if frame_features
                                else "every file needs the same feature size D"))
    result = {}
    for split in splits:
        ids = [video_id for video_id in dataset.splits[split] if video_id in present]
        # The mean over time in float64: values near 1e38 would overflow float32's sum.
        stacked = [present[video_id] if frame_features or present[video_id].ndim == 1
                   else present[video_id].mean(0, dtype=np.float64).astype(np.float32) for video_id in ids]
        result[split] = (ids, np.stack(stacked) if ids else np.zeros((0, first.shape[-1]), np.float32))
    record = {"kind": "features", "name": folder.name, "shape": list(first.shape), "latent_dim": int(first.shape[-1]),
              "num_frames": int(first.shape[0]) if first.ndim == 2 else 1}
    return result, record
