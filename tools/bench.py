"""Benchmark every stage of the captioner beside its floor, on MSR-VTT-shaped clips and a full-size X-CLIP.

    python tools/bench.py --out bench_out/results.json

Made once under --work_dir and reused: H.264 clips shaped like MSR-VTT (320x240, 15 s, 30 fps, a keyframe
every 2 s, B-frames, crf 23) and a 1280x720 one; a randomly initialised X-CLIP of the real architecture
(xclip-base-patch32-16-frames: random weights cost what the real ones do), saved with save_pretrained and
loaded through model.XClipEncoder; a 10,000-piece tokenizer and a captioner checkpoint. Each stage then runs
in its own process (so its peak memory is its own); each figure is the median of several runs, interleaved
with its floor or reference measured in the same run. Prints a table and whether each target holds.
--quick is a smoke run: fewer repeats and smaller sizes, its timings only indicative.
"""
import argparse
import functools
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from types import SimpleNamespace
from typing import Callable, NamedTuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python tools/bench.py`, only tools/ is on the path
    sys.path.insert(0, str(REPO))

from common import fail, one_line, write_json
from tools.measure import children_peak_rss_mib, peak_rss_mib, reset_peak_rss, timed

# torch, transformers, PyAV, numpy and the core modules that import them are imported inside the functions that
# use them. A child's peak memory as wait4 reports it counts what its parent held when it started the child, so
# the driver (which starts every stage) and the inference stage (which starts inference.py) hold nothing heavy;
# and the sampling rows are read in fresh processes that import only what sampling needs.

STAGES = ("sampling", "encoding", "training", "inference", "evaluation")
MSRVTT_SIZE = (320, 240)
MSVD_SIZE = (854, 480)
HD_SIZE = (1280, 720)
CLIP_LABELS = tuple(f"{width}x{height}" for width, height in (MSRVTT_SIZE, MSVD_SIZE, HD_SIZE)) + ("msvd-real",)
REALDATA = REPO.parent / "shared" / "realdata"  # real clips and features, where this checkout has them
# Videos in the folders inference.py and encode.py are timed on, with the full-size and the tiny X-CLIP.
FOLDER_VIDEOS = {"full": 8, "tiny": 24}
MSRVTT_EPOCH_CAPTIONS = 130_000  # MSR-VTT's training split: 6,513 videos x 20 captions (130,260)
LATENT_DIM = 512
RECIPE = 3  # in the names of the made tokenizer and checkpoint: bump it when the way they are made changes
CLIP_RECIPE = "-1slice"  # in the names of the made clips: one slice per frame, as uploads have
# Sizes of a full run and of a --quick one.
PLANS = {
    "full": {"repeats": 5, "hd_repeats": 3, "pipeline_videos": 8, "pipeline_repeats": 2, "encode_videos": 24,
             "encode_repeats": 2, "ready_repeats": 2, "train_batches": 10, "train_repeats": 3, "loss_epochs": 3,
             "loss_real_videos": 500, "inference_repeats": 3, "folder_repeats": 2, "eval_latents": 1000,
             "eval_single": 16, "eval_repeats": 1},
    "quick": {"repeats": 2, "hd_repeats": 1, "pipeline_videos": 4, "pipeline_repeats": 1, "encode_videos": 8,
              "encode_repeats": 1, "ready_repeats": 1, "train_batches": 4, "train_repeats": 1, "loss_epochs": 1,
              "loss_real_videos": 100, "inference_repeats": 1, "folder_repeats": 1, "eval_latents": 256,
              "eval_single": 8, "eval_repeats": 1},
}


# ----------------------------------------------------------------------------- measuring

def interleaved_medians(contenders: dict, repeats: int, warmup: bool = True) -> dict:
    """{name: median seconds} of zero-argument callables run round-robin, so load on the machine hits all alike."""
    if warmup:
        for function in contenders.values():
            function()
    runs = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            runs[name].append(timed(function)[0])
    return {name: {"median_s": median(seconds), "runs_s": [round(s, 4) for s in seconds]}
            for name, seconds in runs.items()}


def run_measured(command, env=None, capture: bool = True) -> dict:
    """Run a command; its wall seconds, exit code, stdout, stderr (capture=False: shown, not kept) and peak memory
    in MiB (the largest of it and its children; it counts what this process held when it started, so keep this
    one small)."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out_file if capture else None,
                                   stderr=err_file if capture else None)
        _, status, usage = os.wait4(process.pid, 0)  # wait4, unlike communicate(), reports this child's rusage
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        return {"seconds": wall, "returncode": process.returncode, "peak_rss_mib": usage.ru_maxrss / 1024.0,
                "stdout": out_file.read().decode(errors="replace"), "stderr": err_file.read().decode(errors="replace")}


def machine_info() -> dict:
    """What the numbers were measured on."""
    import av
    import torch
    import transformers
    model_name = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model_name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "av": av.__version__, "platform": platform.platform()}


def load_average():
    """The 1, 5 and 15-minute load averages (None where the system has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------- the workspace

def smooth_texture(rng, width: int, height: int):
    """A colour picture with detail at every scale (a few octaves of bicubic-upsampled noise), as a PIL image."""
    import numpy as np
    from PIL import Image
    picture = np.zeros((height, width, 3), dtype=np.float32)  # (H, W, 3)
    for cells, weight in ((3, 1.0), (12, 0.6), (48, 0.4), (192, 0.3), (width // 2, 0.25)):
        noise = (rng.random((max(2, cells * height // width), cells, 3)) * 255).astype(np.uint8)
        picture += weight * np.asarray(Image.fromarray(noise).resize((width, height), Image.BICUBIC), np.float32)
    picture = (picture - picture.min()) / max(1e-6, float(picture.max() - picture.min())) * 220 + 16
    return Image.fromarray(picture.astype(np.uint8))


def write_bench_clip(path, width: int, height: int, seconds: float = 15.0, fps: int = 30, keyframe_interval: int = 60,
                     crf: int = 23, seed: int = 0):
    """Write an H.264 clip shaped like a YouTube upload: a camera panning and zooming over a detailed scene with a cut
    half way, three moving objects, sensor noise; lossy (crf), B-frames, a keyframe every keyframe_interval frames.
    Its bitrate is near MSR-VTT's at 320x240 (docs/performance.md has the figures). Written atomically."""
    import av
    import numpy as np
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    num_frames = max(1, int(round(seconds * fps)))
    scenes = [smooth_texture(rng, 2 * width, 2 * height) for _ in range(2)]
    rows, columns = np.mgrid[0:height, 0:width]  # (H, W) each
    objects = [(rng.uniform(0.05, 0.15) * height, rng.random(2), rng.uniform(-0.3, 0.3, 2), rng.integers(0, 256, 3))
               for _ in range(3)]  # radius, start (x, y) as fractions, velocity per second, colour
    sensor_noise = [rng.normal(0, 2.0, (height, width, 3)).astype(np.int16) for _ in range(5)]
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with av.open(str(temporary), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps, options={
                "crf": str(crf), "preset": "fast", "g": str(keyframe_interval),
                "keyint_min": str(max(1, keyframe_interval // 2)), "bf": "3"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            # x264's frame threads, as uploads are made: PyAV's default (slice threads) would cut every frame into
            # slices that a decoder's slice threads then decode in parallel, which real clips do not allow.
            stream.thread_type = "FRAME"
            for frame_number in range(num_frames):
                moment = frame_number / fps
                scene = scenes[0] if frame_number < 0.55 * num_frames else scenes[1]
                zoom = 1.0 + 0.3 * (0.5 + 0.5 * np.sin(0.3 * moment))
                view_width, view_height = width * zoom, height * zoom
                left = (0.5 + 0.45 * np.sin(0.21 * moment + 1)) * (2 * width - view_width)
                top = (0.5 + 0.45 * np.sin(0.13 * moment)) * (2 * height - view_height)
                picture = np.asarray(scene.resize((width, height), Image.BILINEAR,
                                                  box=(left, top, left + view_width, top + view_height)), np.int16)
                for radius, start, velocity, colour in objects:
                    centre_x = (start[0] + velocity[0] * moment) % 1.0 * width
                    centre_y = (start[1] + velocity[1] * moment) % 1.0 * height
                    picture[(columns - centre_x) ** 2 + ((rows - centre_y) * 1.5) ** 2 < radius ** 2] = colour
                picture += sensor_noise[frame_number % len(sensor_noise)]
                frame = av.VideoFrame.from_ndarray(np.clip(picture, 0, 255).astype(np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def full_size_xclip_config(num_frames: int = 16):
    """XCLIPConfig of microsoft/xclip-base-patch32-16-frames: transformers' defaults are xclip-base-patch32
    (ViT-B/32 at 224 px: 12 layers of width 768, 12 heads; a 1-layer 512-wide multi-frame transformer;
    2 prompt layers; projection 512; a 12-layer text tower), with 16 frames instead of 8."""
    from transformers import XCLIPConfig
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 224, "patch_size": 32, "num_frames": int(num_frames), "mit_hidden_size": 512,
              "mit_intermediate_size": 2048, "mit_num_hidden_layers": 1, "mit_num_attention_heads": 8}
    text = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 8, "max_position_embeddings": 77}
    return XCLIPConfig(text_config=text, vision_config=vision, projection_dim=512, prompt_layers=2,
                       prompt_num_attention_heads=8)


def save_random_xclip(out_dir, config, seed: int = 0):
    """A randomly initialised XCLIPModel of `config`, written with save_pretrained (into place atomically)."""
    import torch
    from transformers import XCLIPModel
    out_dir = Path(out_dir)
    scratch = out_dir.parent / f".{out_dir.name}.partial{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = XCLIPModel(config).eval()
        model.save_pretrained(scratch)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(scratch, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir


# Words of the synthetic caption corpus: MSR-VTT-like sentences over a large invented vocabulary, so that
# sentencepiece can learn 10,000 pieces and the decoder learns where captions end.
SYLLABLES = ("ba", "ko", "ri", "tu", "me", "sa", "lo", "ni", "de", "pu", "ga", "fi", "zo", "ve", "ha", "ju", "wi",
             "xo", "ce", "mu", "pra", "sti", "blo", "gre", "tha", "shi", "kru", "dle")
TEMPLATES = ("a {noun} is {verb} a {adjective} {noun} in the {noun}",
             "a {adjective} {noun} is {verb} with a {noun} on the {noun}",
             "two {noun} are {verb} the {adjective} {noun} together",
             "there is a {adjective} {noun} {verb} a {noun} with a {noun} in the {noun}",
             "a {noun} is {verb} about the {adjective} {noun} and the {noun}",
             "someone is {verb} a {noun} in a {adjective} {noun}")


def synthetic_captions(count: int, seed: int = 0) -> list:
    """count MSR-VTT-like captions (7 to 13 words, about as many pieces of a 10,000-piece tokenizer as MSR-VTT's
    captions) over Zipf-distributed invented words."""
    import numpy as np
    rng = np.random.default_rng(seed)

    def words(number):
        lengths = rng.integers(1, 4, number)
        return sorted({"".join(rng.choice(SYLLABLES, length)) for length in lengths})

    vocabulary = {"noun": words(16000), "verb": [word + "ing" for word in words(4000)], "adjective": words(4000)}
    draws = {}  # per kind, enough Zipf-distributed word numbers for every caption, drawn at once
    for kind, options in vocabulary.items():
        weights = 1.0 / np.arange(1, len(options) + 1) ** 0.6
        draws[kind] = iter(rng.choice(len(options), 5 * count, p=weights / weights.sum()).tolist())
    captions = []
    for template in rng.choice(TEMPLATES, count):
        parts = template.split("{")
        text = parts[0]
        for part in parts[1:]:
            kind, rest = part.split("}", 1)
            text += vocabulary[kind][next(draws[kind])] + rest
        captions.append(text)
    return captions


def make_bench_checkpoint(path, xclip_path, tokenizer_path, train_batches: int = 20, batch_size: int = 128,
                          seed: int = 0):
    """A captioner checkpoint for the full pipeline: the default decoder (embed 256, LSTM 2x512) over the tokenizer's
    vocabulary, trained for a few batches on synthetic captions (so that beams end as a trained model's do), on
    random latents, with the encoder's name, fingerprint and preprocessing as train.py records them."""
    import sentencepiece as spm
    import torch
    from checkpoint import make_checkpoint, save_checkpoint
    from encode import encoder_record
    from model import CaptionDecoder, DecoderConfig, XClipEncoder
    from train import caption_table, lr_lambda, run_epoch

    tokenizer_proto = Path(tokenizer_path).read_bytes()
    tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_proto)
    encoder_meta, _ = encoder_record(XClipEncoder(str(xclip_path)))  # what train.py stores (name, fingerprint...)
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=tokenizer.get_piece_size(), latent_dim=LATENT_DIM, pad_id=tokenizer.pad_id(),
                           bos_id=tokenizer.bos_id(), eos_id=tokenizer.eos_id())
    decoder = CaptionDecoder(config)
    captions = synthetic_captions(max(1, train_batches) * batch_size, seed=seed + 1)
    video_ids = [f"video{index}" for index in range(len(captions) // 20 + 1)]
    captions_by_video = {video_id: captions[index * 20:(index + 1) * 20] for index, video_id in enumerate(video_ids)}
    video_index, rows = caption_table(video_ids, captions_by_video, tokenizer, 30)
    latents = torch.randn(len(video_ids), LATENT_DIM)  # (N, D)
    decoder.set_latent_stats(latents.mean(0), latents.std(0))
    if train_batches > 0:  # 0: an untrained decoder (its beams run to max_len)
        optimizer = torch.optim.AdamW(decoder.parameters(), lr=3e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(5, train_batches))
        run_epoch(decoder, latents, video_index, rows, batch_size, torch.device("cpu"), optimizer, scheduler, 1.0,
                  torch.Generator().manual_seed(seed), desc="bench checkpoint")
    save_checkpoint(path, make_checkpoint(decoder, tokenizer_proto, encoder_meta, {"bench": True}))
    return Path(path)


def prepare_workspace(work_dir, encoder: str = "full", clip_seconds: float = 15.0, msrvtt_clips: int = 4,
                      hd_clip: bool = True, vocab_size: int = 10000, checkpoint_batches: int = 20,
                      log=print) -> dict:
    """Make what the stages read, once: clips, X-CLIP, tokenizer, checkpoint. Returns their paths.
    encoder "tiny" is synthetic.make_tiny_xclip (for testing this script; its timings mean nothing)."""
    from create_tokenizer import train_tokenizer
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    seconds_tag = f"{clip_seconds:g}s"
    clips = {"320x240": []}
    for seed in range(msrvtt_clips):
        path = work_dir / "clips" / f"msrvtt_320x240_{seconds_tag}_{seed}{CLIP_RECIPE}.mp4"
        if not path.is_file():
            log(f"writing {path}")
            write_bench_clip(path, *MSRVTT_SIZE, seconds=clip_seconds, seed=seed)
        clips["320x240"].append(str(path))
    if hd_clip:
        for size, seed, seconds in ((HD_SIZE, 100, clip_seconds), (MSVD_SIZE, 200, min(clip_seconds, 10.0))):
            label = f"{size[0]}x{size[1]}"
            path = work_dir / "clips" / f"youtube_{label}_{seconds:g}s_0{CLIP_RECIPE}.mp4"
            if not path.is_file():
                log(f"writing {path} (about a minute, once)")
                write_bench_clip(path, *size, seconds=seconds, seed=seed)
            clips[label] = [str(path)]
    clips["msvd-real"] = [str(path) for path in sorted((REALDATA / "msvd" / "clips").glob("*.avi"))]
    xclip_path = work_dir / ("xclip-base-patch32-16-frames-random" if encoder == "full" else "xclip-tiny-random")
    checkpoint_path = work_dir / f"captioner-{xclip_path.name}-{vocab_size}-r{RECIPE}.pt"
    if not (xclip_path / "config.json").is_file():
        log(f"writing {xclip_path}")
        if encoder == "full":
            save_random_xclip(xclip_path, full_size_xclip_config())
        else:
            from synthetic import make_tiny_xclip
            make_tiny_xclip(xclip_path)
        checkpoint_path.unlink(missing_ok=True)  # it names the old encoder's fingerprint
    tokenizer_prefix = work_dir / f"tokenizer-{vocab_size}-r{RECIPE}"
    tokenizer_path = Path(f"{tokenizer_prefix}.model")
    if not tokenizer_path.is_file():
        log(f"training {tokenizer_path}")
        train_tokenizer(synthetic_captions(60_000), tokenizer_prefix, vocab_size)
        checkpoint_path.unlink(missing_ok=True)
    if not checkpoint_path.is_file():
        log(f"writing {checkpoint_path}")
        make_bench_checkpoint(checkpoint_path, xclip_path, tokenizer_path, train_batches=checkpoint_batches)
    tiny_xclip, tiny_checkpoint = tiny_twin(work_dir, xclip_path, checkpoint_path, log)
    return {"clips": clips, "xclip": str(xclip_path), "tokenizer": str(tokenizer_path),
            "checkpoint": str(checkpoint_path), "tiny_xclip": str(tiny_xclip), "tiny_checkpoint": str(tiny_checkpoint),
            "folders": {"full": str(video_folder(work_dir, clips, FOLDER_VIDEOS["full"])),
                        "tiny": str(video_folder(work_dir, clips, FOLDER_VIDEOS["tiny"]))}}


def tiny_twin(work_dir, xclip_path, checkpoint_path, log=print) -> tuple:
    """A tiny X-CLIP and a checkpoint of the same decoder that names it (the decoder reads 512-d latents from
    either): the pipeline with next to no encoder cost, where decoding and captioning show."""
    from checkpoint import load_checkpoint, save_checkpoint
    from encode import encoder_record
    from model import XClipEncoder
    from synthetic import make_tiny_xclip
    tiny_xclip = Path(work_dir) / "xclip-tiny-random"
    tiny_checkpoint = Path(work_dir) / f"tiny-{Path(checkpoint_path).name}"
    if not (tiny_xclip / "config.json").is_file():
        make_tiny_xclip(tiny_xclip)
        tiny_checkpoint.unlink(missing_ok=True)
    if Path(xclip_path) == tiny_xclip:
        return tiny_xclip, checkpoint_path
    if not tiny_checkpoint.is_file() or tiny_checkpoint.stat().st_mtime < Path(checkpoint_path).stat().st_mtime:
        log(f"writing {tiny_checkpoint}")
        checkpoint = load_checkpoint(checkpoint_path)
        checkpoint["encoder"], _ = encoder_record(XClipEncoder(str(tiny_xclip)))
        save_checkpoint(tiny_checkpoint, {key: value for key, value in checkpoint.items() if key != "version"})
    return tiny_xclip, tiny_checkpoint


def video_folder(work_dir, clips: dict, count: int) -> Path:
    """A folder of count links to the real MSVD clips in turn (to the 320x240 clips where there are none): what
    inference.py and encode.py are timed on."""
    folder = Path(work_dir) / f"folder{count}"
    sources = clips.get("msvd-real") or clips["320x240"]
    if len(list(folder.glob("*"))) != count:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for index in range(count):
            source = Path(sources[index % len(sources)])
            (folder / f"{index:03d}_{source.name}").symlink_to(source.resolve())
    return folder


# ----------------------------------------------------------------------------- 1. frame sampling

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
               "original": "from tools import bench; bench.original_sampling({path!r}, bench.original_processor())"}


def peak_memory_of_sampling(path, way: str) -> float:
    """Peak resident memory (MiB) of a fresh Python process that samples the clip once, `way` "read_video" or
    "original" (imports included: numpy, PyAV, and transformers' processor for the original way)."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from tools.measure import peak_rss_mib; "
            f"{SAMPLE_ONCE[way].format(path=str(path))}; "
            "print(peak_rss_mib())")  # from inside: ru_maxrss would count this process's size at the fork
    run = run_measured([sys.executable, "-c", code])
    if run["returncode"] != 0:
        raise RuntimeError(f"sampling {path} the {way} way failed: {run['stderr'].strip()[-400:]}")
    return float(run["stdout"].split()[-1])


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
            dataset.decoder_threading = lambda width, height: THREADINGS[threading]
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
    from dataset import read_video
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
    """Seconds of encode.encoded_batches over paths with a costless encoder (decoding in num_workers DataLoader
    workers, several at once) for read_video's rule and each threading, interleaved."""
    from dataset import Preprocess
    from encode import encoded_batches
    items = [(f"video{index}", path) for index, path in enumerate(paths)]

    def run(threading):
        with decoding_with(threading):  # the workers are forked inside: they inherit it
            for _ in encoded_batches(items, CostlessEncoder(), Preprocess(), batch_size=batch_size,
                                     num_workers=num_workers):
                pass

    contenders = {"rule": functools.partial(run, None)}
    contenders.update({name: functools.partial(run, name) for name in ("slice", "frame")})
    medians = interleaved_medians(contenders, repeats, warmup=False)
    return {"videos": len(paths), "num_workers": num_workers, "seconds": {name: medians[name]["median_s"]
                                                                          for name in medians}}


# ----------------------------------------------------------------------------- 2. encoding into the cache

def encode_into_fresh_cache(items: list, encoder, dtype_name: str, scratch, batch_size: int, num_workers: int):
    """encode_videos over items into a new cache under scratch, removed afterwards, so that every run encodes all."""
    from encode import encode_videos, open_cache
    cache_dir = Path(tempfile.mkdtemp(dir=scratch))
    try:
        cache, preprocess = open_cache(encoder, cache_dir, dtype_name)
        summary = encode_videos(items, encoder, cache, preprocess, batch_size=batch_size, num_workers=num_workers,
                                progress=False)
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
    from encode import load_encoder, load_preprocess

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
    from encode import load_encoder

    reset_peak_rss()
    encoder, fp32_twin = load_encoder(str(xclip_path), "bf16")
    latents = encoder.encode(ready)  # warm-up
    runs = {"ready_bf16": [timed(encoder.encode, ready)[0] for _ in range(ready_repeats)],
            "pipeline_bf16": [timed(pipeline, encoder, "bf16")[0]]}
    return {"bf16_peak_rss_mib": peak_rss_mib()}, runs, latents


def bench_encoding(xclip_path, clip_paths: list, num_videos: int = 24, batch_size: int = 8, num_workers: int = 2,
                   repeats: int = 2, ready_repeats: int = 2, work_dir=None) -> dict:
    """Videos/s of encode.encode_videos over a folder (a fresh cache each run) beside the encoder alone on ready
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


# ----------------------------------------------------------------------------- 3. training from the cache

def synthetic_caption_rows(num_captions: int, vocab_size: int, max_len: int = 30, seed: int = 0):
    """(N, max_len + 1) int64 rows as train.encode_captions makes them (BOS, tokens, EOS, padding), with MSR-VTT's
    length distribution (about 9 words: 11 +- 4 pieces, a tail to the cap)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.gamma(7.0, 11.0 / 7.0, num_captions)), 3, max_len - 1).astype(int)
    rows = np.zeros((num_captions, max_len + 1), dtype=np.int64)  # pad 0
    for row, length in zip(rows, lengths):
        row[0] = 2  # BOS
        row[1:length + 1] = rng.integers(4, vocab_size, length)
        row[length + 1] = 3  # EOS
    return rows


def training_ways(device) -> dict:
    """run_epoch's options and the optimiser of today's way and of train.py's defaults: length buckets, bf16
    autocast where the CPU has it, fused AdamW."""
    from train import use_bf16
    return {"today": {"buckets": False, "bf16": False, "fused": False},
            "new": {"buckets": True, "bf16": use_bf16("auto", device), "fused": True}}


def make_trainee(config, total_steps: int, fused: bool, seed: int = 0, learning_rate: float = 1e-3) -> tuple:
    """(decoder, optimizer, scheduler) as train.py makes them, seeded."""
    import torch
    from model import CaptionDecoder
    from train import lr_lambda
    torch.manual_seed(seed)
    decoder = CaptionDecoder(config)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=learning_rate, weight_decay=0.01, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(min(500, total_steps // 10 + 1), total_steps))
    return decoder, optimizer, scheduler


def bench_training(num_batches: int = 12, repeats: int = 2, vocab_size: int = 10000, batch_size: int = 128,
                   num_videos: int = 6513, epoch_captions: int = MSRVTT_EPOCH_CAPTIONS, one_thread: bool = True,
                   seed: int = 0) -> dict:
    """Captions/s of train.run_epoch (default decoder, AdamW, clipping, schedule) over cached latents, train.py's
    way (training_ways "new") beside today's, each on its own decoder, interleaved; timed over num_batches
    batches, extrapolated to an epoch of epoch_captions. one_thread: also the new way with torch on one thread
    (on a busy machine two threads wait for each other). And how much of each batch is padding, each way."""
    import numpy as np
    import torch
    from model import DecoderConfig
    from train import epoch_batches, run_epoch

    device = torch.device("cpu")
    ways = training_ways(device)
    trainees = {name: make_trainee(DecoderConfig(vocab_size=vocab_size, latent_dim=LATENT_DIM),
                                   20 * epoch_captions // batch_size, way["fused"], seed) for name, way in ways.items()}
    latents = torch.randn(num_videos, LATENT_DIM)  # (V, D): the cache, in memory as train.py holds it
    rows = synthetic_caption_rows(num_batches * batch_size, vocab_size, seed=seed)
    video_index = np.random.default_rng(seed).integers(0, num_videos, len(rows))
    default_threads = torch.get_num_threads()

    def epoch_slice(name, count, threads=default_threads):
        torch.set_num_threads(threads)
        try:
            run_epoch(*trainees[name][:1], latents, video_index[:count], rows[:count], batch_size, device,
                      *trainees[name][1:], 1.0, torch.Generator().manual_seed(seed), desc="bench training",
                      buckets=ways[name]["buckets"], bf16=ways[name]["bf16"])
        finally:
            torch.set_num_threads(default_threads)

    for name in ways:
        epoch_slice(name, 2 * batch_size)  # warm-up
    seconds = {name: [] for name in ways}
    one_thread_seconds = []
    for repeat in range(repeats):
        for name in ways:
            seconds[name].append(timed(epoch_slice, name, len(rows))[0])
        if one_thread and default_threads > 1 and repeat == 0:  # once: a comparison, not a target
            one_thread_seconds.append(timed(epoch_slice, "new", len(rows), 1)[0])
    lengths = torch.from_numpy((rows != 0).sum(1))  # tokens per caption, BOS and EOS included

    def padding_share(buckets):
        batches = epoch_batches(lengths, batch_size, generator=torch.Generator().manual_seed(seed), buckets=buckets)
        return 1.0 - float(lengths.sum()) / sum(int(lengths[batch].max()) * len(batch) for batch in batches)

    captions_per_s = {name: len(rows) / median(values) for name, values in seconds.items()}
    result = {"batches": num_batches, "batch_size": batch_size, "vocab_size": vocab_size, "threads": default_threads,
              "decoder_parameters": sum(p.numel() for p in trainees["new"][0].parameters()), "ways": ways,
              "captions_per_s": captions_per_s["new"], "today_captions_per_s": captions_per_s["today"],
              "speedup_vs_today": captions_per_s["new"] / captions_per_s["today"], "epoch_captions": epoch_captions,
              "epoch_s": epoch_captions / captions_per_s["new"],
              "today_epoch_s": epoch_captions / captions_per_s["today"],
              "padding_share": padding_share(False), "bucketed_padding_share": padding_share(True),
              "runs_s": {name: [round(s, 3) for s in values] for name, values in seconds.items()}}
    if one_thread_seconds:
        result["one_thread_captions_per_s"] = len(rows) / median(one_thread_seconds)
        result["one_thread_runs_s"] = [round(s, 3) for s in one_thread_seconds]
    return result


def val_loss_both_ways(train_split: tuple, val_split: tuple, config, epochs: int, batch_size: int = 64,
                       seed: int = 0) -> dict:
    """Validation loss (fp32, teacher forcing) after `epochs` epochs of training today's way and train.py's way,
    from the same seed. Splits are (features (N, D), video index (C,), token rows (C, T))."""
    import torch
    from train import run_epoch
    device = torch.device("cpu")
    features = torch.from_numpy(train_split[0])
    losses = {}
    for name, way in training_ways(device).items():
        total_steps = epochs * -(-len(train_split[2]) // batch_size)
        decoder, optimizer, scheduler = make_trainee(config, total_steps, way["fused"], seed, learning_rate=3e-3)
        decoder.set_latent_stats(features.mean(0), features.std(0))
        for epoch in range(epochs):
            torch.manual_seed(seed * 100003 + epoch)
            run_epoch(decoder, features, train_split[1], train_split[2], batch_size, device, optimizer, scheduler,
                      1.0, torch.Generator().manual_seed(seed * 100003 + epoch), desc="bench loss",
                      buckets=way["buckets"], bf16=way["bf16"])
        with torch.no_grad():
            losses[name] = run_epoch(decoder, torch.from_numpy(val_split[0]), val_split[1], val_split[2], batch_size,
                                     device, desc="bench val loss")
    return {"epochs": epochs, "today_val_loss": losses["today"], "val_loss": losses["new"],
            "relative_change": losses["new"] / losses["today"] - 1.0}


def synthetic_splits(num_videos: int, captions_per_video: int, vocab_size: int, seed: int = 0) -> tuple:
    """(train, val) splits of random latents and synthetic caption rows (val: a fifth of the videos)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((num_videos, LATENT_DIM)).astype(np.float32)
    rows = synthetic_caption_rows(num_videos * captions_per_video, vocab_size, seed=seed)
    video_index = np.repeat(np.arange(num_videos), captions_per_video)
    cut = num_videos * 4 // 5
    in_train = video_index < cut
    return ((latents[:cut], video_index[in_train], rows[in_train]),
            (latents[cut:], video_index[~in_train] - cut, rows[~in_train]))


def real_feature_splits(work_dir, num_videos: int, vocab_size: int = 1000):
    """(train, val) splits of real MSR-VTT features (realdata/features/msrvtt_vggae, (50, 128) per video, mean over
    frames) with their real captions, tokenised by a sentencepiece model trained here on the train captions
    (val: the last fifth of the videos); None without the real data."""
    import numpy as np
    import sentencepiece as spm
    from create_tokenizer import train_tokenizer
    from train import caption_table
    features_dir = REALDATA / "features" / "msrvtt_vggae"
    annotation = REALDATA / "msrvtt" / "MSRVTT" / "annotation" / "MSR_VTT.json"
    if not features_dir.is_dir() or not annotation.is_file():
        return None
    video_ids = [f"video{index}" for index in range(num_videos) if (features_dir / f"video{index}.npy").is_file()]
    wanted, captions = set(video_ids), {}
    for entry in json.loads(annotation.read_text())["annotations"]:
        if entry["image_id"] in wanted:
            captions.setdefault(entry["image_id"], []).append(entry["caption"])
    cut = len(video_ids) * 4 // 5
    prefix = Path(work_dir) / f"realdata-tokenizer-{num_videos}-{vocab_size}"
    if not Path(f"{prefix}.model").is_file():
        train_tokenizer([caption for video_id in video_ids[:cut] for caption in captions[video_id]], prefix,
                        vocab_size)
    tokenizer = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    splits = []
    for ids in (video_ids[:cut], video_ids[cut:]):
        features = np.stack([np.load(features_dir / f"{video_id}.npy").mean(0) for video_id in ids])  # (N, 128)
        splits.append((features.astype(np.float32), *caption_table(ids, captions, tokenizer, 30)))
    return tuple(splits), tokenizer.get_piece_size()


def bench_training_loss(work_dir, epochs: int = 3, synthetic_videos: int = 150, real_videos: int = 500) -> dict:
    """Validation loss after the same epochs, today's way and train.py's, on synthetic captions over random latents
    and on real MSR-VTT features with their captions (a smaller decoder than the default: the comparison is of the
    way of training)."""
    from model import DecoderConfig
    small = {"embed_dim": 128, "hidden_dim": 256, "dropout": 0.1}
    result = {"synthetic": val_loss_both_ways(*synthetic_splits(synthetic_videos, 20, 2000),
                                              DecoderConfig(vocab_size=2000, latent_dim=LATENT_DIM, **small), epochs)}
    real = real_feature_splits(work_dir, real_videos)
    if real is not None:
        (train_split, val_split), vocab_size = real
        config = DecoderConfig(vocab_size=vocab_size, latent_dim=train_split[0].shape[1], **small)
        result["real_features"] = val_loss_both_ways(train_split, val_split, config, epochs)
    return result


# ----------------------------------------------------------------------------- 4. one video from the command line
# ----------------------------------------------------------------------------- 4. one video from the command line

def bench_inference(checkpoint_path, video_path, repeats: int = 3, beam_size: int = 5) -> dict:
    """`python inference.py --video_path CLIP --json` run repeats times: wall seconds split into start-up (all but
    the reported decode, encode and generate), and its peak memory; `--help` seconds; the import floor."""
    python, script = sys.executable, str(REPO / "inference.py")
    help_runs = [run_measured([python, script, "--help"]) for _ in range(max(3, repeats))]
    if help_runs[0]["returncode"] != 0:
        raise RuntimeError(f"inference.py --help failed: {help_runs[0]['stderr'][-400:]}")
    import_runs = [run_measured([python, "-c", "import torch, sentencepiece; from transformers import XCLIPModel"])
                   for _ in range(repeats)]
    command = [python, script, "--video_path", str(video_path), "--model_path", str(checkpoint_path),
               "--json", "--beam_size", str(beam_size), "--device", "cpu"]
    runs = []
    for _ in range(repeats):
        run = run_measured(command)
        if run["returncode"] != 0:
            raise RuntimeError(f"inference.py failed ({run['returncode']}): {run['stderr'].strip()[-600:]}")
        record = json.loads(run["stdout"].strip().splitlines()[-1])
        stages = record["seconds"]
        runs.append({"total_s": run["seconds"], "startup_s": run["seconds"] - sum(stages.values()), **{
            f"{name}_s": value for name, value in stages.items()}, "peak_rss_mib": run["peak_rss_mib"],
            "caption_words": len(record["captions"][0]["caption"].split())})
    summary = {key: median([run[key] for run in runs]) for key in runs[0]}
    summary["generate_share"] = median([run["generate_s"] / run["total_s"] for run in runs])
    summary["help_s"] = median([run["seconds"] for run in help_runs])
    summary["import_floor_s"] = median([run["seconds"] for run in import_runs])
    summary["runs"] = runs
    return summary


def bench_folder(xclip_path, checkpoint_path, folder, repeats: int = 2, beam_size: int = 5,
                 work_dir=None) -> dict:
    """Seconds of `inference.py --video_path FOLDER` (decoding in workers, batched encoding and beam search) beside
    `encode.py --video_path FOLDER` into a fresh cache (the encoder's own pipeline), and beside inference.py one
    video at a time as before (--batch_size 1 --num_workers 0), start-up included, interleaved."""
    python = sys.executable
    videos = len(list(Path(folder).iterdir()))
    scratch = Path(tempfile.mkdtemp(prefix="bench_folder_", dir=work_dir))
    caption = [python, str(REPO / "inference.py"), "--video_path", str(folder), "--model_path", str(checkpoint_path),
               "--beam_size", str(beam_size), "--device", "cpu"]

    def run(command):
        shutil.rmtree(scratch / "cache", ignore_errors=True)
        outcome = run_measured(command)
        if outcome["returncode"] != 0:
            raise RuntimeError(f"{' '.join(command[1:3])} failed: {outcome['stderr'].strip()[-600:]}")
        return outcome

    contenders = {"encode": [python, str(REPO / "encode.py"), "--video_path", str(folder), "--xclip_model",
                             str(xclip_path), "--cache_dir", str(scratch / "cache"), "--device", "cpu"],
                  "inference": caption, "one_at_a_time": caption + ["--batch_size", "1", "--num_workers", "0"]}
    runs = {name: [] for name in contenders}
    try:
        for _ in range(repeats):
            for name, command in contenders.items():
                runs[name].append(run(command))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = {name: median([outcome["seconds"] for outcome in outcomes]) for name, outcomes in runs.items()}
    return {"videos": videos, "encode_s": seconds["encode"], "inference_s": seconds["inference"],
            "one_at_a_time_s": seconds["one_at_a_time"],
            "inference_to_encode": seconds["inference"] / seconds["encode"],
            "speedup_vs_one_at_a_time": seconds["one_at_a_time"] / seconds["inference"],
            "peak_rss_mib": {name: max(outcome["peak_rss_mib"] for outcome in outcomes)
                             for name, outcomes in runs.items()},
            "runs_s": {name: [round(outcome["seconds"], 2) for outcome in outcomes] for name, outcomes in runs.items()}}


# What a fresh process runs to load X-CLIP, whole (as before) or its video side alone: `encode` and its `size`.
LOAD_ENCODER = {
    "whole": "from transformers import XCLIPModel; model = XCLIPModel.from_pretrained({path!r}).eval(); "
             "encode, size = model.get_video_features, model.config.vision_config.image_size",
    "video_side": "from model import XClipEncoder; encoder = XClipEncoder({path!r}); "
                  "encode, size = encoder.model.get_video_features, encoder.image_size"}


def encoder_memory(xclip_path) -> dict:
    """Peak resident memory (MiB) of a fresh process that loads X-CLIP and encodes one clip: the whole model
    against the video side alone (XClipEncoder), imports included."""
    peaks = {}
    for way, load in LOAD_ENCODER.items():
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import torch; from tools.measure import peak_rss_mib; "
                f"{load.format(path=str(xclip_path))}; "
                "torch.inference_mode()(encode)(pixel_values=torch.zeros(1, 16, 3, size, size)); print(peak_rss_mib())")
        run = run_measured([sys.executable, "-c", code])
        if run["returncode"] != 0:
            raise RuntimeError(f"encoding once ({way}) failed: {run['stderr'].strip()[-400:]}")
        peaks[way] = float(run["stdout"].split()[-1])
    return {"whole_peak_rss_mib": peaks["whole"], "video_side_peak_rss_mib": peaks["video_side"]}


# ----------------------------------------------------------------------------- 5. evaluation

def bench_evaluation(checkpoint_path, num_latents: int = 1000, single_videos: int = 40, beam_size: int = 5,
                     max_len: int = 30, batch_size: int = 256, repeats: int = 1, seed: int = 0) -> dict:
    """Captions/s of model.caption_features (beam search, as evaluate.py captions a split) over num_latents cached
    latents in batches, beside one video at a time over single_videos of them."""
    import torch
    from checkpoint import decoder_from_checkpoint, load_checkpoint, tokenizer_from_checkpoint
    from model import caption_features

    checkpoint = load_checkpoint(checkpoint_path)
    decoder = decoder_from_checkpoint(checkpoint)
    tokenizer = tokenizer_from_checkpoint(checkpoint)
    latents = torch.randn(num_latents, decoder.config.latent_dim, generator=torch.Generator().manual_seed(seed))
    latents = latents * decoder.latent_std + decoder.latent_mean  # (N, D) like the cache the stats came from
    caption_features(decoder, tokenizer, latents[:2], beam_size, max_len, batch_size)  # warm-up
    batched_runs, single_runs, captions = [], [], []
    for _ in range(repeats):
        seconds, captions = timed(caption_features, decoder, tokenizer, latents, beam_size, max_len, batch_size)
        batched_runs.append(seconds)
        single_runs.append(timed(caption_features, decoder, tokenizer, latents[:single_videos], beam_size, max_len,
                                 1)[0])
    batched = num_latents / median(batched_runs)
    single = single_videos / median(single_runs)
    return {"num_latents": num_latents, "single_videos": single_videos, "beam_size": beam_size,
            "batch_size": batch_size, "batched_captions_per_s": batched, "single_captions_per_s": single,
            "batched_to_single": batched / single,
            "mean_caption_words": sum(len(caption.split()) for caption in captions) / max(1, len(captions)),
            "mean_caption_tokens": sum(len(tokenizer.encode(caption)) for caption in captions) / max(1, len(captions)),
            "runs_s": {"batched": [round(s, 3) for s in batched_runs], "single": [round(s, 3) for s in single_runs]}}


# ----------------------------------------------------------------------------- stages, table, targets

def run_stage(stage: str, workspace: dict, plan: dict, work_dir) -> dict:
    """One stage in this process, with the workspace and sizes given."""
    clips = workspace["clips"]
    if stage == "sampling":
        chosen = {"320x240": (clips["320x240"][:1], plan["repeats"])}
        chosen.update({label: (clips[label], plan["hd_repeats"]) for label in CLIP_LABELS[1:] if clips.get(label)})
        result = bench_sampling(chosen)
        result["pipeline"] = {label: pipeline_threading(clips[label][:1] * plan["pipeline_videos"],
                                                        plan["pipeline_repeats"])
                              for label in ("320x240", "854x480") if clips.get(label)}
        return result
    if stage == "encoding":
        return bench_encoding(workspace["xclip"], clips["320x240"], num_videos=plan["encode_videos"],
                              repeats=plan["encode_repeats"], ready_repeats=plan["ready_repeats"], work_dir=work_dir)
    if stage == "training":
        result = bench_training(plan["train_batches"], plan["train_repeats"])
        result["loss"] = bench_training_loss(work_dir, plan["loss_epochs"], real_videos=plan["loss_real_videos"])
        return result
    if stage == "inference":
        result = bench_inference(workspace["checkpoint"], clips["320x240"][0], plan["inference_repeats"])
        result.update(encoder_memory(workspace["xclip"]))
        result["folders"] = {
            size: bench_folder(workspace[xclip], workspace[checkpoint], workspace["folders"][size],
                               plan["folder_repeats"], work_dir=work_dir)
            for size, xclip, checkpoint in (("full", "xclip", "checkpoint"), ("tiny", "tiny_xclip", "tiny_checkpoint"))}
        return result
    if stage == "evaluation":
        return bench_evaluation(workspace["checkpoint"], plan["eval_latents"], plan["eval_single"],
                                repeats=plan["eval_repeats"])
    raise ValueError(f"unknown stage {stage!r}")


class StageError(Exception):
    """A stage process failed; the message holds the end of its stderr."""


def run_stage_process(stage: str, args, capture: bool = True) -> dict:
    """Run one stage in a fresh process (`bench.py --stage`): its result, wall seconds and peak memory.
    This process imports nothing heavy, so the stage's memory is its own."""
    with tempfile.TemporaryDirectory() as scratch:
        stage_out = Path(scratch) / "stage.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--stage_out", str(stage_out),
                   "--work_dir", str(args.work_dir), "--encoder", args.encoder]
        if args.quick:
            command.append("--quick")
        load_before = load_average()
        run = run_measured(command, capture=capture)
        if run["returncode"] != 0 or not stage_out.is_file():
            raise StageError(f"stage {stage} failed (exit {run['returncode']}):\n{run['stderr'].strip()[-3000:]}")
        result = json.loads(stage_out.read_text())
    result["stage_seconds"] = run["seconds"]
    result["process_tree_peak_rss_mib"] = run["peak_rss_mib"]  # the stage process or its largest descendant
    result["load_average"] = {"before": load_before, "after": load_average()}
    return result


def targets(results: dict) -> list:
    """Each target: what it is, the measured value, and whether it holds (None: not measured)."""
    rows = []

    def add(name, value, holds, text):
        rows.append({"target": name, "value": value, "holds": holds, "text": text})

    sampling_targets(results.get("sampling", {}), add)
    if "encoding" in results:
        ratio = results["encoding"]["pipeline_to_ready"]
        add("encoding pipeline >= 0.9x the encoder alone", ratio, ratio >= 0.9, f"{ratio:.2f}x")
    training_targets(results.get("training", {}), add)
    inference_targets(results.get("inference"), add)
    if "evaluation" in results:
        ratio = results["evaluation"]["batched_to_single"]
        add("evaluation: batched beam search >= 5x one video at a time", ratio, ratio >= 5, f"{ratio:.1f}x")
    return rows


def sampling_targets(sampling: dict, add) -> None:
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


def training_targets(training: dict, add) -> None:
    if "original_epoch_s" in training:
        ratio = training["original_to_cached"]
        add("training from the cache >= 100x the original way", ratio, ratio >= 100, f"{ratio:.0f}x")
    if "speedup_vs_today" in training:
        speedup = training["speedup_vs_today"]
        add("training epoch from the cache >= 3x today's way", speedup, speedup >= 3, f"{speedup:.1f}x")
    for data, entry in training.get("loss", {}).items():
        change = entry["relative_change"]
        add(f"val loss after {entry['epochs']} epochs within 1% of today's ({data})", change, abs(change) <= 0.01,
            f"{100 * change:+.2f}%")


def inference_targets(inference: dict | None, add) -> None:
    if inference is None:
        return
    share = inference["generate_share"]
    add("inference: generation <= 10% of the total", share, share <= 0.10, f"{100 * share:.1f}%")
    help_seconds = inference["help_s"]
    add("inference.py --help < 1 s", help_seconds, help_seconds < 1.0, f"{help_seconds:.2f} s")
    if "video_side_peak_rss_mib" in inference:
        peak = inference["peak_rss_mib"]
        add("inference.py peak memory <= 750 MiB (full-size X-CLIP)", peak, peak <= 750, f"{peak:.0f} MiB")
        add("one video captioned in <= 5 s", inference["total_s"], inference["total_s"] <= 5.0,
            f"{inference['total_s']:.2f} s")
    for size, entry in inference.get("folders", {}).items():
        ratio = entry["inference_to_encode"]
        add(f"inference.py over a folder <= 1.1x encode.py ({size} X-CLIP)", ratio, ratio <= 1.1, f"{ratio:.2f}x")


def add_original_training(results: dict) -> None:
    """The original repo's epoch: decode (its way) and encode a video for every caption, plus the same decoder work,
    from the per-video costs measured by the sampling and encoding stages."""
    sampling, encoding, training = results.get("sampling"), results.get("encoding"), results.get("training")
    if not (sampling and encoding and training and "320x240" in sampling):
        return
    per_caption = sampling["320x240"]["original_s"] + encoding["encode_one_video_s"]
    training["original_per_caption_s"] = per_caption
    training["original_epoch_s"] = training["epoch_s"] + training["epoch_captions"] * per_caption
    training["original_to_cached"] = training["original_epoch_s"] / training["epoch_s"]


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class Row(NamedTuple):
    """A row of the printed table. Its texts are format strings over one entry of the results (a stage's, or in
    the "sampling" section one clip's, whose {label} is its size), or functions of the entry. With needs, the
    row is printed only when the entry holds that key (a figure some runs do not measure)."""
    stage: str
    section: str
    measure: str | Callable
    value: str | Callable
    reference: str | Callable = ""
    needs: str | None = None


def by_threading(figures: dict) -> str:
    return " / ".join(f"{name} {ms(seconds)}" for name, seconds in figures.items())


TABLE = (
    Row("1 sampling", "sampling", "{label} read_video ({read_threading} threads)", lambda e: ms(e["read_video_s"]),
        lambda e: f"full decode {ms(e['full_decode_s'])} ({e['full_threading']} threads, the best): "
                  f"{e['ratio_to_full_decode']:.2f}x"),
    Row("1 sampling", "sampling", "{label} read_video by threading", lambda e: by_threading(e["read_by_threading_s"]),
        lambda e: f"full decode {by_threading(e['full_by_threading_s'])}"),
    Row("1 sampling", "sampling", "{label} OpenCV, the same 16 frames (no resize)", lambda e: ms(e["opencv_s"]),
        "read_video {ratio_to_opencv:.2f}x this", needs="opencv_s"),
    Row("1 sampling", "sampling", "{label} decord get_batch, the same 16 frames", lambda e: ms(e["decord_s"]),
        "read_video {ratio_to_decord:.2f}x this", needs="decord_s"),
    Row("1 sampling", "sampling", "{label} floor: decode to the last sampled frame", lambda e: ms(e["floor_s"]),
        lambda e: f"(frame {e['last_sampled_index']}, {e['floor_threading']} threads): read_video "
                  f"{e['ratio_to_floor']:.2f}x", needs="floor_s"),
    Row("1 sampling", "sampling", "{label} decode skipping unsampled non-reference frames",
        lambda e: ms(e["skipping_floor_s"]),
        lambda e: f"{e['frames_decoded_skipping']} of {e['last_sampled_index'] + 1} frames; read_video "
                  f"{e['ratio_to_skipping_floor']:.2f}x this", needs="skipping_floor_s"),
    Row("1 sampling", "sampling", "{label} original way (all frames to RGB + processor)",
        lambda e: ms(e["original_s"]), "read_video {speedup_vs_original:.1f}x faster", needs="original_s"),
    Row("1 sampling", "pipeline", "{label}: {videos} clips decoded by {num_workers} workers, costless encoder",
        lambda e: f"rule {e['seconds']['rule']:.2f} s", lambda e: f"slice {e['seconds']['slice']:.2f} s, "
                                                                  f"frame {e['seconds']['frame']:.2f} s"),
    Row("2 encoding", "encoding", "encode_videos, {num_videos} videos, batch {batch_size}, {num_workers} workers",
        "{pipeline_fp32_videos_per_s:.2f} videos/s",
        "encoder alone {ready_fp32_videos_per_s:.2f} videos/s: {pipeline_to_ready:.2f}x"),
    Row("2 encoding", "encoding", "bf16 encoder alone (ready tensors)", "{ready_bf16_videos_per_s:.2f} videos/s",
        "{bf16_speedup:.2f}x fp32; cosine to fp32 mean {bf16_cosine_mean:.4f}, min {bf16_cosine_min:.4f}"),
    Row("2 encoding", "encoding", "bf16 encode_videos", "{pipeline_bf16_videos_per_s:.2f} videos/s",
        lambda e: f"decode alone {1 / e['decode_one_video_s']:.1f} videos/s per core"),
    Row("3 training", "training", "run_epoch from cache, vocab {vocab_size}, batch {batch_size}: buckets, bf16 "
        "where the CPU has it, fused AdamW", "{captions_per_s:.0f} captions/s",
        lambda e: f"today's way {e['today_captions_per_s']:.0f} captions/s: {e['speedup_vs_today']:.1f}x; epoch of "
                  f"{e['epoch_captions']:,} captions {format_duration(e['epoch_s'])} "
                  f"(today {format_duration(e['today_epoch_s'])})"),
    Row("3 training", "training", "share of each batch that is padding",
        lambda e: f"{100 * e['bucketed_padding_share']:.0f}%", lambda e: f"today {100 * e['padding_share']:.0f}%"),
    Row("3 training", "training", "the same, torch on 1 thread instead of {threads}",
        "{one_thread_captions_per_s:.0f} captions/s", needs="one_thread_captions_per_s"),
    Row("3 training", "loss", "val loss after {epochs} epochs, {label}", "{val_loss:.4f}",
        lambda e: f"today's way {e['today_val_loss']:.4f}: {100 * e['relative_change']:+.2f}%"),
    Row("3 training", "training", "original way (decode + encode per caption)",
        lambda e: f"{1 / e['original_per_caption_s']:.2f} captions/s",
        lambda e: f"epoch {format_duration(e['original_epoch_s'])}: cache {e['original_to_cached']:.0f}x faster",
        needs="original_epoch_s"),
    Row("4 inference", "inference", "inference.py one 320x240 clip, beam 5", "{total_s:.2f} s",
        lambda e: f"start-up {e['startup_s']:.2f} (imports alone {e['import_floor_s']:.2f}), decode "
                  f"{e['decode_s']:.2f}, encode {e['encode_s']:.2f}, generate {e['generate_s']:.2f} "
                  f"({100 * e['generate_share']:.1f}%)"),
    Row("4 inference", "inference", "inference.py --help", "{help_s:.2f} s"),
    Row("4 inference", "folders", "inference.py over {videos} clips, {label} X-CLIP", "{inference_s:.1f} s",
        lambda e: f"encode.py {e['encode_s']:.1f} s: {e['inference_to_encode']:.2f}x; one at a time "
                  f"{e['one_at_a_time_s']:.1f} s ({e['speedup_vs_one_at_a_time']:.2f}x the batched time)"),
    Row("5 evaluation", "evaluation", "caption_features, {num_latents} latents, beam {beam_size}, batch {batch_size}",
        "{batched_captions_per_s:.1f} captions/s",
        "one at a time {single_captions_per_s:.2f} captions/s: {batched_to_single:.1f}x"),
    Row("6 memory", "sampling", "sampling one {label} clip, fresh process", "{read_video_peak_rss_mib:.0f} MiB",
        "original way {original_peak_rss_mib:.0f} MiB", needs="read_video_peak_rss_mib"),
    Row("6 memory", "encoding", "encoding fp32: main process", "{fp32_peak_rss_mib:.0f} MiB",
        "largest DataLoader worker {fp32_worker_peak_rss_mib:.0f} MiB (counts pages it shares with the main process)"),
    Row("6 memory", "encoding", "encoding bf16 (+ fp32 twin for the cosine)", "{bf16_peak_rss_mib:.0f} MiB"),
    Row("6 memory", "training", "training stage process", "{self_peak_rss_mib:.0f} MiB"),
    Row("6 memory", "evaluation", "evaluation stage process", "{self_peak_rss_mib:.0f} MiB"),
    Row("6 memory", "inference", "inference.py one clip", "{peak_rss_mib:.0f} MiB"),
    Row("6 memory", "inference", "load X-CLIP and encode one clip, fresh process: video side alone",
        "{video_side_peak_rss_mib:.0f} MiB", "whole model {whole_peak_rss_mib:.0f} MiB",
        needs="video_side_peak_rss_mib"),
    Row("6 memory", "folders", "inference.py over the folder, {label} X-CLIP",
        lambda e: f"{e['peak_rss_mib']['inference']:.0f} MiB",
        lambda e: f"encode.py {e['peak_rss_mib']['encode']:.0f} MiB; one at a time "
                  f"{e['peak_rss_mib']['one_at_a_time']:.0f} MiB"),
)

# Sections of the results whose entries are nested one level down: (stage, key), each entry labelled by its name.
NESTED_SECTIONS = {"pipeline": ("sampling", "pipeline"), "loss": ("training", "loss"),
                   "folders": ("inference", "folders")}


def section_entries(results: dict, section: str) -> list:
    """[(label, entry)] of one section of the results: one per clip size for "sampling", one per name for the
    nested sections, else the stage's own."""
    if section == "sampling":
        sampling = results.get("sampling", {})
        return [(label, sampling[label]) for label in CLIP_LABELS if label in sampling]
    if section in NESTED_SECTIONS:
        stage, key = NESTED_SECTIONS[section]
        return list(results.get(stage, {}).get(key, {}).items())
    return [(None, results[section])] if section in results else []


def table_rows(results: dict) -> list:
    """(stage, measure, value, reference) rows of the printed table: TABLE's rows, entry by entry within each run of
    rows of the same section."""
    def text(template, entry, label):
        return template(entry) if callable(template) else template.format(label=label, **entry)

    rows = []
    for section, specs in itertools.groupby(TABLE, key=lambda row: row.section):
        specs = list(specs)
        for label, entry in section_entries(results, section):
            rows += [(spec.stage, *(text(template, entry, label) for template in spec[2:5]))
                     for spec in specs if spec.needs is None or spec.needs in entry]
    return rows


def format_table(results: dict) -> str:
    rows = [("stage", "measure", "value", "floor / reference")] + table_rows(results)
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}" for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    for row in targets(results):
        lines.append(f"{'holds' if row['holds'] else 'DOES NOT HOLD':<13}  {row['target']}: {row['text']}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out/results.json", help="write all results as JSON here")
    parser.add_argument("--work_dir", default="bench_out",
                        help="where the clips, X-CLIP, tokenizer and checkpoint are made once and reused")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fewer repeats, smaller sizes (a few minutes; timings only indicative)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages to run")
    parser.add_argument("--encoder", default="full", choices=["full", "tiny"],
                        help="full: X-CLIP base/32 16 frames (random weights); tiny: a 32-px toy, to test this script")
    parser.add_argument("--stage", choices=STAGES + ("prepare",), default=None,
                        help="internal: run this one stage in this process and write its result to --stage_out")
    parser.add_argument("--stage_out", default=None, help="internal: where --stage writes its JSON result")
    return parser.parse_args(argv)


def stage_main(args) -> int:
    """--stage: one stage in this process; its result and this process's peak memory go to --stage_out."""
    work_dir = Path(args.work_dir)
    if args.stage == "prepare":
        workspace = prepare_workspace(work_dir, encoder=args.encoder, log=lambda text: print(text, flush=True))
        write_json(work_dir / "workspace.json", workspace)
        result = {"workspace": workspace, "machine": machine_info()}
    else:
        plan = PLANS["quick" if args.quick else "full"]
        workspace = json.loads((work_dir / "workspace.json").read_text())
        result = run_stage(args.stage, workspace, plan, work_dir)
    result["self_peak_rss_mib"] = peak_rss_mib()
    result["children_peak_rss_mib"] = children_peak_rss_mib()
    write_json(args.stage_out, result)
    return 0


def main(args) -> int:
    if args.stage:
        return stage_main(args)
    started = time.perf_counter()
    work_dir = Path(args.work_dir)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return fail(f"--work_dir {work_dir}: cannot create it ({one_line(error)}); pass a writable folder")
    plan = PLANS["quick" if args.quick else "full"]
    print(f"bench.py: {'quick' if args.quick else 'full'} run, stages {', '.join(args.stages)}; load average "
          f"{load_average()} on {os.cpu_count()} cores", flush=True)
    try:
        prepared = run_stage_process("prepare", args, capture=False)  # clips, X-CLIP, tokenizer, checkpoint: once
        results = {"machine": prepared["machine"], "plan": plan, "workspace": prepared["workspace"],
                   "prepare_seconds": prepared["stage_seconds"], "command": " ".join(["python", *sys.argv]),
                   "load_average_start": load_average()}
        for stage in args.stages:
            print(f"stage {stage} ...", end=" ", flush=True)
            results[stage] = run_stage_process(stage, args)
            print(f"{results[stage]['stage_seconds']:.0f} s", flush=True)
    except StageError as error:
        print(f"\nbench.py: {error}", file=sys.stderr)
        return 1
    add_original_training(results)
    results["targets"] = targets(results)
    results["load_average_end"] = load_average()
    results["total_seconds"] = time.perf_counter() - started
    print()
    print(format_table(results))
    print(f"\n{results['total_seconds']:.0f} s in all; load average {results['load_average_start']} at the start, "
          f"{results['load_average_end']} at the end; {results['machine']['cpu_count']} cores "
          f"({results['machine']['cpu']})")
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
