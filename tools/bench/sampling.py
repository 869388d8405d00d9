"""Stage 1, frame sampling: read_video beside the least decoding it could do (floors), a full decode with each
decoder threading, OpenCV and decord where installed, and the original repo's way; the peak memory of one
sampling each way; the encoding pipeline's decoding under each threading.

Heavy modules (PyAV, numpy, transformers, the core modules) are imported inside the functions that use them."""
import functools
import os

from tools.bench.measuring import fresh_process_peak, interleaved_medians
from tools.bench.workspace import CLIP_LABELS, LATENT_DIM


def decode_floor(path, last_index: int, thread_type: str = "SLICE", frames_by_pts: dict | None = None) -> int:
    """Decode (never convert) the video's frames 0..last_index: the least a sampler that decodes every frame in
    order must do. frames_by_pts {pts: (presentation index, sampled?)}: the decoder also skips the unsampled
    frames nothing refers to, as read_video does: the least read_video's own way of decoding can do.
    Returns the number of frames that came out of the decoder."""
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        decoded = presented = 0
        for packet in container.demux(stream):
            if frames_by_pts is not None and packet.pts in frames_by_pts:
                stream.codec_context.skip_frame = "DEFAULT" if frames_by_pts[packet.pts][1] else "NONREF"
            for frame in packet.decode():
                decoded += 1
                presented = decoded if frames_by_pts is None else max(presented, frames_by_pts[frame.pts][0] + 1)
            if presented > last_index:
                break
    return decoded


def frames_by_pts(path, frame_indices) -> dict:
    """{pts: (presentation index, sampled?)} for every frame of the video's first video stream (a demux pass)."""
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame_pts = sorted(packet.pts for packet in container.demux(stream) if packet.size and packet.pts is not None)
    sampled = set(frame_indices)
    return {pts: (index, index in sampled) for index, pts in enumerate(frame_pts)}


def original_processor(image_size: int = 224):
    """transformers' VideoMAE image processor as X-CLIP's checkpoint configures it (the original repo's way)."""
    from dataset import XCLIP_MEAN, XCLIP_STD
    try:
        from transformers import VideoMAEImageProcessorPil as Processor  # transformers 5 without torchvision
    except ImportError:
        from transformers import VideoMAEImageProcessor as Processor
    return Processor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                     image_mean=list(XCLIP_MEAN), image_std=list(XCLIP_STD))


def original_sampling(path, processor, num_frames: int = 16):
    """The original repo's sampler: decode every frame to an RGB array, keep num_frames evenly spaced ones, run
    transformers' processor. Returns (num_frames, 3, S, S) float32."""
    import av
    import numpy as np
    with av.open(str(path)) as container:
        rgb_frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]  # (H, W, 3) each
    keep = np.linspace(0, len(rgb_frames) - 1, num_frames).round().astype(int)
    return processor([rgb_frames[index] for index in keep], return_tensors="np")["pixel_values"][0]


# What a fresh process runs to sample a clip once, each way.
SAMPLE_ONCE = {"read_video": "import dataset; dataset.read_video({path!r})",
               "original": "from tools.bench import sampling; "
                           "sampling.original_sampling({path!r}, sampling.original_processor())"}


def peak_memory_of_sampling(path, way: str) -> float:
    """Peak resident memory (MiB) of a fresh Python process that samples the clip once, `way` "read_video" or
    "original" (imports included: numpy, PyAV, and transformers' processor for the original way)."""
    return fresh_process_peak(SAMPLE_ONCE[way].format(path=str(path)), f"sampling {path} the {way} way")


# Decoder threadings compared, as (thread_type, thread_count): one thread, FFmpeg's slice threads (PyAV's default),
# frame threads on as many threads as cores.
THREADINGS = {"none": ("NONE", 1), "slice": ("SLICE", 0), "frame": ("FRAME", min(os.cpu_count() or 1, 4))}


def decoding_with(threading: str | None):
    """Context manager: read_video decodes with this threading (a THREADINGS name; None: dataset's rule)."""
    import contextlib
    import dataset

    @contextlib.contextmanager
    def chosen():
        rule = dataset.decoder_threading
        if threading is not None:
            dataset.decoder_threading = lambda width, height, decoders=1: THREADINGS[threading]
        try:
            yield
        finally:
            dataset.decoder_threading = rule
    return chosen()


def read_videos(paths, threading: str | None = None):
    """read_video over paths (16 frames each), decoding with a THREADINGS name (None: read_video's own rule)."""
    from dataset import read_video
    with decoding_with(threading):
        return [read_video(path)[1] for path in paths]


def full_decode(paths, threading: str) -> int:
    """Decode every frame of every video with PyAV, converting nothing: the least a reader of all frames does."""
    import av
    decoded = 0
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = THREADINGS[threading]
            decoded += sum(1 for _ in container.decode(stream))
    return decoded


def opencv_frames(paths, indices_by_path: dict):
    """OpenCV reading each video in order and keeping the 16 frames read_video samples (BGR, full size: no resize)."""
    import cv2
    kept = []
    for path in paths:
        wanted, capture = set(indices_by_path[path]), cv2.VideoCapture(str(path))
        for index in range(max(wanted) + 1):
            if not capture.grab():
                break
            if index in wanted:
                kept.append(capture.retrieve()[1])
        capture.release()
    return kept


def decord_frames(paths, indices_by_path: dict):
    """decord's get_batch of the 16 frames read_video samples (RGB, full size: no resize)."""
    import decord
    return [decord.VideoReader(str(path)).get_batch(indices_by_path[path]).asnumpy() for path in paths]


def peer_readers(paths, indices_by_path: dict) -> dict:
    """{name: callable} of the other libraries' readers that are installed here (none is a dependency)."""
    import importlib.util
    peers = {}
    if importlib.util.find_spec("cv2"):
        peers["opencv"] = functools.partial(opencv_frames, paths, indices_by_path)
    if importlib.util.find_spec("decord"):
        peers["decord"] = functools.partial(decord_frames, paths, indices_by_path)
    return peers


def bench_sampling(clips: dict, repeats: int = 5, num_frames: int = 16) -> dict:
    """Per clip {label: (paths, repeats)}: read_video's seconds (over all the label's paths) beside the decode
    floor (up to the last sampled frame; the faster of slice and frame threading), the floor of read_video's own
    skipping decode, a full decode with each threading (the best is the full-decode floor), read_video with each
    threading, the original way, and OpenCV and decord where installed, interleaved; ratios, the speed-up over
    the original way, and the peak memory of one sampling each way."""
    processor = original_processor()
    results = {}
    for label, (paths, clip_repeats) in clips.items():
        path = paths[0]
        thread_type = rule_threading(path)[0]
        infos = read_videos(paths)
        indices_by_path = {each: info["frame_indices"] for each, info in zip(paths, infos)}
        last_index = max(infos[0]["frame_indices"])
        frame_table = frames_by_pts(path, infos[0]["frame_indices"])
        contenders = {"read_video": lambda: read_videos(paths)}
        contenders.update({f"read_{name}": functools.partial(read_videos, paths, name) for name in THREADINGS})
        contenders.update({f"full_{name}": functools.partial(full_decode, paths, name) for name in THREADINGS})
        contenders.update(peer_readers(paths, indices_by_path))
        if len(paths) == 1:  # the floors of one clip
            contenders.update({
                "floor_slice": lambda: decode_floor(path, last_index, "SLICE"),
                "floor_frame": lambda: decode_floor(path, last_index, "AUTO"),
                "floor_skipping": lambda: decode_floor(path, last_index, thread_type, frame_table)})
        medians = interleaved_medians(contenders, clip_repeats)
        if len(paths) == 1:  # the original way apart: after it frees its RGB frames, whatever runs next is slower
            medians.update(interleaved_medians({"original": lambda: original_sampling(path, processor, num_frames),
                                                "read_video_beside_original": lambda: read_videos(paths)},
                                               clip_repeats))
        results[label] = sampling_figures(medians, infos, paths, clip_repeats)
        if len(paths) == 1:
            results[label].update(one_clip_figures(medians, path, last_index, thread_type, frame_table))
    return results


def sampling_figures(medians: dict, infos: list, paths: list, repeats: int) -> dict:
    """The figures of bench_sampling for one label: read_video against the full-decode floor and the peers."""
    ours = medians["read_video"]["median_s"]
    full = {name: medians[f"full_{name}"]["median_s"] for name in THREADINGS}
    best_full = min(full, key=full.get)
    figures = {"paths": [str(path) for path in paths], "repeats": repeats, "read_video_s": ours,
               "frames_in_stream": infos[0]["frames_in_stream"], "read_threading": rule_threading(paths[0])[0].lower(),
               "full_decode_s": full[best_full], "full_threading": best_full,
               "ratio_to_full_decode": ours / full[best_full],
               "read_by_threading_s": {name: medians[f"read_{name}"]["median_s"] for name in THREADINGS},
               "full_by_threading_s": full, "runs": medians}
    for peer in ("opencv", "decord"):
        if peer in medians:
            figures[f"{peer}_s"] = medians[peer]["median_s"]
            figures[f"ratio_to_{peer}"] = ours / medians[peer]["median_s"]
    return figures


def one_clip_figures(medians: dict, path, last_index: int, thread_type: str, frame_table: dict) -> dict:
    """The figures of bench_sampling that only one clip has: the floors, the original way, memory."""
    ours = medians["read_video"]["median_s"]
    floor_name = min(("floor_slice", "floor_frame"), key=lambda name: medians[name]["median_s"])
    floor = medians[floor_name]["median_s"]
    return {"path": str(path), "last_sampled_index": last_index, "floor_s": floor,
            "floor_threading": floor_name.split("_")[1], "skipping_floor_s": medians["floor_skipping"]["median_s"],
            "frames_decoded_skipping": decode_floor(path, last_index, thread_type, frame_table),
            "original_s": medians["original"]["median_s"], "ratio_to_floor": ours / floor,
            "ratio_to_skipping_floor": ours / medians["floor_skipping"]["median_s"],
            "speedup_vs_original": medians["original"]["median_s"] / medians["read_video_beside_original"]["median_s"],
            "read_video_peak_rss_mib": peak_memory_of_sampling(path, "read_video"),
            "original_peak_rss_mib": peak_memory_of_sampling(path, "original")}


def rule_threading(path) -> tuple:
    """(thread_type, thread_count) that read_video's rule (dataset.decoder_threading) picks for a video."""
    import av
    from dataset import decoder_threading
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        return decoder_threading(context.width, context.height)


class CostlessEncoder:
    """An encoder that costs nothing, so that the encoding pipeline's decoding alone is timed."""
    num_frames, dtype = 16, None

    def encode(self, clips):
        import torch
        return torch.zeros(len(clips), LATENT_DIM)


def pipeline_threading(paths, repeats: int = 2, batch_size: int = 4, num_workers: int = 2) -> dict:
    """Seconds of latents.encoded_batches over paths with a costless encoder (decoding in num_workers DataLoader
    workers, several at once) for read_video's rule and each threading, interleaved."""
    from dataset import Preprocess
    from latents import EncodeOptions, encoded_batches
    items = [(f"video{index}", path) for index, path in enumerate(paths)]

    def run(threading):
        with decoding_with(threading):  # the workers are forked inside: they inherit it
            for _ in encoded_batches(items, CostlessEncoder(), Preprocess(),
                                     options=EncodeOptions(batch_size=batch_size, num_workers=num_workers)):
                pass

    contenders = {"rule": functools.partial(run, None)}
    contenders.update({name: functools.partial(run, name) for name in ("slice", "frame")})
    medians = interleaved_medians(contenders, repeats, warmup=False)
    return {"videos": len(paths), "num_workers": num_workers, "seconds": {name: medians[name]["median_s"]
                                                                          for name in medians}}


def run(workspace: dict, plan: dict, work_dir) -> dict:
    """The stage: every clip size of the workspace, and the pipeline's threading on the 320x240 and 854x480 clips."""
    clips = workspace["clips"]
    chosen = {"320x240": (clips["320x240"][:1], plan["repeats"])}
    chosen.update({label: (clips[label], plan["hd_repeats"]) for label in CLIP_LABELS[1:] if clips.get(label)})
    result = bench_sampling(chosen)
    result["pipeline"] = {label: pipeline_threading(clips[label][:1] * plan["pipeline_videos"],
                                                    plan["pipeline_repeats"])
                          for label in ("320x240", "854x480") if clips.get(label)}
    return result


def targets(results: dict, add) -> None:
    """add(target, value, holds, text) for each of this stage's targets that was measured."""
    sampling = results.get("sampling", {})
    for label in CLIP_LABELS:
        if "ratio_to_floor" in sampling.get(label, {}):
            ratio = sampling[label]["ratio_to_floor"]
            add(f"sampling {label} <= 1.3x decode floor", ratio, ratio <= 1.3, f"{ratio:.2f}x")
    if "1280x720" in sampling:
        speedup = sampling["1280x720"]["speedup_vs_original"]
        add("sampling 1280x720 several times faster than the original way (>= 3x)", speedup, speedup >= 3,
            f"{speedup:.1f}x")
    for label in CLIP_LABELS:
        entry = sampling.get(label, {})
        if "ratio_to_full_decode" in entry:
            ratio = entry["ratio_to_full_decode"]
            add(f"read_video {label} <= 1.0x a full decode ({entry['full_threading']} threads)", ratio, ratio <= 1.0,
                f"{ratio:.2f}x")
        for peer in ("opencv", "decord"):
            if f"ratio_to_{peer}" in entry:
                ratio = entry[f"ratio_to_{peer}"]
                add(f"read_video {label} faster than {peer}'s 16 frames", ratio, ratio < 1.0, f"{ratio:.2f}x")

