"""Stage 2, encoding into the cache: latents.encode_videos over a folder beside the encoder alone on ready tensors,
in fp32 and in bf16 (its speed-up and how close its latents are), and each phase's peak memory."""
import functools
import shutil
import tempfile
from pathlib import Path
from statistics import median

from tools.measure import children_peak_rss_mib, peak_rss_mib, reset_peak_rss, timed


def encode_into_fresh_cache(items: list, encoder, dtype_name: str, scratch, batch_size: int, num_workers: int):
    """encode_videos over items into a new cache under scratch, removed afterwards, so that every run encodes all."""
    from latents import EncodeOptions, encode_videos, open_cache
    cache_dir = Path(tempfile.mkdtemp(dir=scratch))
    try:
        cache, preprocess = open_cache(encoder, cache_dir, dtype_name)
        summary = encode_videos(items, encoder, cache, preprocess,
                                EncodeOptions(batch_size=batch_size, num_workers=num_workers, progress=False))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    if summary["encoded"] != len(items):
        raise RuntimeError(f"encode_videos encoded {summary['encoded']} of {len(items)}: {summary['failed'][:1]}")


def encoding_fp32(xclip_path, clip_paths: list, pipeline, batch_size: int, repeats: int, ready_repeats: int):
    """The fp32 phase: the encoder alone on a ready batch and the whole pipeline, interleaved; the phase's peak
    memory (main process, largest DataLoader worker) and the seconds to decode one video.
    Returns (figures, runs, the ready batch (B, F, 3, S, S), its latents)."""
    import numpy as np
    import torch
    from dataset import read_video
    from latents import load_encoder, load_preprocess

    reset_peak_rss()
    figures = {}
    figures["encoder_load_s"], (encoder, _) = timed(load_encoder, str(xclip_path), "fp32")
    preprocess = load_preprocess(encoder.name_or_path, encoder.image_size)
    frames, _ = read_video(clip_paths[0], num_frames=encoder.num_frames, preprocess=preprocess)
    ready = torch.from_numpy(np.stack([frames] * batch_size))  # (B, F, 3, S, S)
    latents = encoder.encode(ready)  # also the warm-up (allocator, oneDNN kernels)
    runs = {"ready_fp32": [], "pipeline_fp32": []}
    for repeat in range(max(repeats, ready_repeats)):
        if repeat < ready_repeats:
            runs["ready_fp32"].append(timed(encoder.encode, ready)[0])
        if repeat < repeats:
            runs["pipeline_fp32"].append(timed(pipeline, encoder, "fp32")[0])
    figures["fp32_peak_rss_mib"] = peak_rss_mib()
    figures["fp32_worker_peak_rss_mib"] = children_peak_rss_mib()
    figures["decode_one_video_s"] = median([timed(read_video, path, encoder.num_frames, preprocess)[0]
                                            for path in clip_paths[:3]])
    return figures, runs, ready, latents


def encoding_bf16(xclip_path, ready, pipeline, ready_repeats: int):
    """The bf16 phase, loaded as encode.py --encode_dtype bf16 loads it (with an fp32 twin for the cosine): the
    encoder alone and the pipeline once, and the phase's peak memory. Returns (figures, runs, latents of ready)."""
    from latents import load_encoder

    reset_peak_rss()
    encoder, fp32_twin = load_encoder(str(xclip_path), "bf16")
    latents = encoder.encode(ready)  # warm-up
    runs = {"ready_bf16": [timed(encoder.encode, ready)[0] for _ in range(ready_repeats)],
            "pipeline_bf16": [timed(pipeline, encoder, "bf16")[0]]}
    return {"bf16_peak_rss_mib": peak_rss_mib()}, runs, latents


def bench_encoding(xclip_path, clip_paths: list, num_videos: int = 24, batch_size: int = 8, num_workers: int = 2,
                   repeats: int = 2, ready_repeats: int = 2, work_dir=None) -> dict:
    """Videos/s of latents.encode_videos over a folder (a fresh cache each run) beside the encoder alone on ready
    (B, 16, 3, 224, 224) tensors, interleaved, in fp32; then the same in bf16 with its speed-up and the cosine of its
    latents to fp32's. Peak memory of each phase: the main process, and the largest DataLoader worker."""
    import torch

    items = [(f"video{index}", Path(clip_paths[index % len(clip_paths)])) for index in range(num_videos)]
    scratch = Path(tempfile.mkdtemp(prefix="bench_cache_", dir=work_dir))
    pipeline = functools.partial(encode_into_fresh_cache, items, scratch=scratch, batch_size=batch_size,
                                 num_workers=num_workers)
    result = {"num_videos": num_videos, "batch_size": batch_size, "num_workers": num_workers}
    try:
        fp32, runs, ready, latents_fp32 = encoding_fp32(xclip_path, clip_paths, pipeline, batch_size, repeats,
                                                        ready_repeats)
        bf16, bf16_runs, latents_bf16 = encoding_bf16(xclip_path, ready, pipeline, ready_repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    runs.update(bf16_runs)
    cosine = torch.nn.functional.cosine_similarity(latents_bf16, latents_fp32, dim=-1)
    ready_fp32 = batch_size / median(runs["ready_fp32"])
    pipeline_fp32 = num_videos / median(runs["pipeline_fp32"])
    ready_bf16 = batch_size / median(runs["ready_bf16"])
    result.update({
        **fp32, **bf16, "ready_fp32_videos_per_s": ready_fp32, "pipeline_fp32_videos_per_s": pipeline_fp32,
        "pipeline_to_ready": pipeline_fp32 / ready_fp32, "encode_one_video_s": 1.0 / ready_fp32,
        "ready_bf16_videos_per_s": ready_bf16, "bf16_speedup": ready_bf16 / ready_fp32,
        "pipeline_bf16_videos_per_s": num_videos / median(runs["pipeline_bf16"]),
        "bf16_cosine_mean": float(cosine.mean()), "bf16_cosine_min": float(cosine.min()),
        "runs_s": {name: [round(seconds, 3) for seconds in values] for name, values in runs.items()}})
    return result


def run(workspace: dict, plan: dict, work_dir) -> dict:
    """The stage: the workspace's 320x240 clips through encode_videos and the full-size X-CLIP."""
    return bench_encoding(workspace["xclip"], workspace["clips"]["320x240"], num_videos=plan["encode_videos"],
                          repeats=plan["encode_repeats"], ready_repeats=plan["ready_repeats"], work_dir=work_dir)


def targets(results: dict, add) -> None:
    """add(target, value, holds, text) for each of this stage's targets that was measured."""
    if "encoding" in results:
        ratio = results["encoding"]["pipeline_to_ready"]
        add("encoding pipeline >= 0.9x the encoder alone", ratio, ratio >= 0.9, f"{ratio:.2f}x")
