"""GPU speed of the real recipe: encoding, training and captioning on CUDA, through the repo's own code.

    python tools/bench_gpu.py --out_dir bench_gpu                          # on a GPU machine, a few minutes
    python tools/bench_gpu.py --out_dir /tmp/bench_gpu --device cpu --quick  # smoke run on a CPU

Makes all its material under --out_dir first (nothing is downloaded): 320x240 H.264 clips shaped like
MSR-VTT's, written with PyAV; an X-CLIP of the real architecture (xclip-base-patch32-16-frames) with random
weights, which costs what the real one does, saved with save_pretrained; a sentencepiece tokenizer; and a
captioner checkpoint trained for a few batches. Then it measures, each stage on its own so that one failing
stage leaves the others' numbers:

- decoding: what read_video in DataLoader workers delivers alone (videos/s; latents.encoded_batches with an
  encoder that does nothing), with the repo's default workers and with --num_workers;
- encoding: latents.encode_videos into a fresh cache, X-CLIP in fp32 and in bf16 (videos/s), beside what the
  encoder alone does on frames already on the device;
- training: train.run_epoch on cached-latent-sized inputs, fp32 and bf16 autocast (captions/s); the dtype of
  the LSTM's output under autocast is printed;
- captioning: inference.py on a folder of the clips (its batched path), fp32 and bf16 checkpoints;
- with two GPUs or more: torchrun encode.py and train.py (skipped on one).

Every timing synchronises the device first; memory is the device's peak (torch.cuda.max_memory_allocated)
beside the process's peak resident memory. Writes --out_dir/results.json after every stage and
--out_dir/table.md (stage, measure, value, reference) at the end, and prints the table.
"""
import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python tools/bench_gpu.py`, only tools/ is on the path
    sys.path.insert(0, str(REPO))

import numpy as np
import torch

from common import resolve_device, write_json, write_text
from tools.measure import peak_rss_mib, reset_peak_rss
from tools.scratch import check_scratch_folder, make_scratch_folder

MIB = 2 ** 20
LATENT_DIM = 512


# ----------------------------------------------------------------------------------------------------------------------
# Timing and memory on the device

def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peaks(device) -> None:
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peaks(device) -> dict:
    """Peak device memory (MiB; None on CPU) and peak resident memory of this process (MiB) since reset_peaks."""
    gpu = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None
    return {"gpu_peak_mib": None if gpu is None else round(gpu, 1), "rss_peak_mib": round(peak_rss_mib(), 1)}


def timed_on(device, function, *args, **kwargs) -> tuple:
    """(seconds, result) of one call, the device synchronised before the clock starts and before it stops."""
    synchronize(device)
    started = time.perf_counter()
    result = function(*args, **kwargs)
    synchronize(device)
    return time.perf_counter() - started, result


def default_workers() -> int:
    """The cores this process may use: the DataLoader workers that feed one GPU here."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def without_metrics_packages() -> None:
    """train.py imports evaluate.py, which imports pycocoevalcap at the top; this benchmark never scores captions.
    Where pycocoevalcap is not installed (a bare GPU machine), stand-ins that fail when used let train import."""
    if importlib.util.find_spec("pycocoevalcap") is not None:
        return

    class Missing:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("pycocoevalcap is not installed here; this benchmark does not score captions")

    names = {"pycocoevalcap": [], "pycocoevalcap.bleu": [], "pycocoevalcap.bleu.bleu": ["Bleu"],
             "pycocoevalcap.cider": [], "pycocoevalcap.cider.cider": ["Cider"], "pycocoevalcap.meteor": [],
             "pycocoevalcap.meteor.meteor": ["Meteor"], "pycocoevalcap.rouge": [],
             "pycocoevalcap.rouge.rouge": ["Rouge"], "pycocoevalcap.tokenizer": ["ptbtokenizer"],
             "pycocoevalcap.tokenizer.ptbtokenizer": ["PTBTokenizer"]}
    for name, attributes in names.items():
        module = types.ModuleType(name)
        for attribute in attributes:
            setattr(module, attribute, Missing)
        sys.modules.setdefault(name, module)
    sys.modules["pycocoevalcap.tokenizer"].ptbtokenizer = sys.modules["pycocoevalcap.tokenizer.ptbtokenizer"]


# ----------------------------------------------------------------------------------------------------------------------
# Material: clips, X-CLIP, tokenizer, checkpoints

def write_bench_clip(path, index: int, seconds: float, fps: int, size=(320, 240)) -> str:
    """One H.264 clip shaped like MSR-VTT's: a camera panning over a detailed scene, sensor noise, B-frames and a
    keyframe every 2 s (crf 23). Written under a temporary name and renamed into place."""
    import av

    path = Path(path)
    if path.is_file():
        return str(path)
    width, height = size
    rng = np.random.default_rng(index)
    scene = rng.integers(0, 256, (height * 2 // 8, width * 2 // 8, 3), dtype=np.uint8)
    scene = np.kron(scene, np.ones((8, 8, 1), dtype=np.uint8))  # (2H, 2W, 3) blocks: detail at every scale
    num_frames = max(1, int(round(seconds * fps)))
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        with av.open(str(temporary), "w") as container:
            stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23",
                                                                         "g": str(2 * fps), "threads": "1"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for number in range(num_frames):
                left = int((width - 1) * number / max(1, num_frames - 1))
                top = int((height - 1) * 0.5 * (1 + np.sin(number / fps)))
                pixels = scene[top:top + height, left:left + width].astype(np.int16)
                pixels += rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
                frame = av.VideoFrame.from_ndarray(np.clip(pixels, 0, 255).astype(np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return str(path)


def write_clips(folder, count: int, seconds: float, fps: int, workers: int) -> list:
    """count clips in folder (kept from an earlier run when there), written by `workers` processes."""
    from concurrent.futures import ProcessPoolExecutor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"video{index}.mp4" for index in range(count)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=min(workers, count)) as pool:
            list(pool.map(write_bench_clip, paths, range(count), [seconds] * count, [fps] * count))
    else:
        for index, path in enumerate(paths):
            write_bench_clip(path, index, seconds, fps)
    return paths


def make_xclip(folder, kind: str) -> Path:
    """A randomly initialised X-CLIP saved with save_pretrained: "full" (the real architecture) or "tiny" (the
    tests' one, for smoke runs)."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    from synthetic import full_size_xclip_config, make_tiny_xclip, save_random_xclip

    if kind == "tiny":
        return make_tiny_xclip(folder, seed=0)
    return save_random_xclip(folder, full_size_xclip_config(), seed=0)


SYLLABLES = ("ba", "ko", "ri", "tu", "me", "sa", "lo", "ni", "de", "pu", "ga", "fi", "zo", "ve", "ha", "ju", "wi")
TEMPLATES = ("a N is V a A N in the N", "a A N is V with a N on the N", "two N are V the A N together",
             "someone is V a N in a A N", "there is a A N V a N with a N in the N")


def synthetic_captions(count: int, seed: int = 0) -> list:
    """count captions of 7 to 13 words shaped like MSR-VTT's, over invented Zipf-distributed words (N, A: a word;
    V: a word + "ing")."""
    rng = np.random.default_rng(seed)
    words = sorted({"".join(rng.choice(SYLLABLES, rng.integers(2, 4))) for _ in range(6000)})
    weights = 1.0 / np.arange(1, len(words) + 1) ** 0.6
    draws = iter(rng.choice(len(words), 12 * count, p=weights / weights.sum()).tolist())
    return [" ".join(words[next(draws)] + ("ing" if slot == "V" else "") if slot in "NVA" else slot
                     for slot in template.split()) for template in rng.choice(TEMPLATES, count)]


def caption_rows(tokenizer, count: int, seed: int = 0) -> tuple:
    """(video index per caption (C,), token rows (C, 31)) for count captions over count // 20 videos, as train.py
    makes them (train.caption_table)."""
    from train import caption_table

    captions = synthetic_captions(count, seed)
    video_ids = [f"video{index}" for index in range(max(1, count // 20))]
    by_video = {video_id: captions[index::len(video_ids)] for index, video_id in enumerate(video_ids)}
    return caption_table(video_ids, by_video, tokenizer, 30)


def training_options(batch_size: int, batches: int, learning_rate: float = 1e-3) -> argparse.Namespace:
    """train.py's optimisation flags at their defaults, as train.make_optimizer reads them."""
    return argparse.Namespace(learning_rate=learning_rate, weight_decay=0.01, batch_size=batch_size, epochs=1,
                              warmup_steps=min(500, batches // 10 + 1))


def make_checkpoint_for(path, encoder, dtype_name, tokenizer_path, device, batches: int = 20, seed: int = 0) -> Path:
    """A captioner checkpoint naming encoder (as train.py records it, dtype_name included), its decoder of the
    default size trained for a few batches on random latents so that its beams end as a trained model's do."""
    import sentencepiece as spm

    from checkpoint import make_checkpoint, save_checkpoint
    from latents import encoder_record
    from model import CaptionDecoder, DecoderConfig
    from train import EpochOptions, make_optimizer, run_epoch

    proto = Path(tokenizer_path).read_bytes()
    tokenizer = spm.SentencePieceProcessor(model_proto=proto)
    record, _ = encoder_record(encoder, dtype_name)
    torch.manual_seed(seed)
    decoder = CaptionDecoder(DecoderConfig(vocab_size=tokenizer.get_piece_size(), latent_dim=LATENT_DIM,
                                           pad_id=tokenizer.pad_id(), bos_id=tokenizer.bos_id(),
                                           eos_id=tokenizer.eos_id())).to(device)
    video_index, rows = caption_rows(tokenizer, batches * 128, seed)
    latents = torch.randn(int(video_index.max()) + 1, LATENT_DIM, device=device)  # (N, D)
    decoder.set_latent_stats(latents.mean(0), latents.std(0))
    optimizer, scheduler = make_optimizer(training_options(128, batches, learning_rate=3e-3), decoder, len(rows))
    options = EpochOptions(128, desc="checkpoint", generator=torch.Generator().manual_seed(seed), buckets=True,
                           grad_clip=1.0, bf16=False)
    run_epoch(decoder, latents, video_index, rows, device, options, optimizer, scheduler)
    save_checkpoint(path, make_checkpoint(decoder.cpu(), proto, record, {"bench": True}))
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------------
# The stages

class NoEncoder:
    """An encoder that does nothing: encoded_batches with it measures what decoding and collating alone deliver."""

    dtype = torch.float32

    def __init__(self, num_frames: int):
        self.num_frames = num_frames

    def encode(self, clips):
        return torch.zeros(len(clips), 1)

    def encode_with_frames(self, clips):
        return self.encode(clips), torch.zeros(len(clips), self.num_frames, 1)


def bench_decoding(bench, workers_list) -> None:
    """Videos/s that read_video in DataLoader workers delivers, with nothing encoding them."""
    from latents import EncodeOptions, encoded_batches, load_preprocess

    items = [(path.stem, path) for path in bench.clips]
    preprocess = load_preprocess(str(bench.xclip), bench.image_size)
    for workers in workers_list:
        reset_peaks(bench.cpu)
        seconds, count = timed_on(bench.cpu, lambda: sum(len(batch["video_ids"]) for batch in encoded_batches(
            items, NoEncoder(bench.num_frames), preprocess,
            options=EncodeOptions(batch_size=bench.batch_size, num_workers=workers))))
        bench.add("decoding", f"read_video in {workers} DataLoader workers, {bench.clip_desc}",
                  count / seconds, "videos/s", f"{count} videos in {seconds:.1f} s (workers' start included)",
                  rss_peak_mib=round(peak_rss_mib(), 1))


def bench_encoder_alone(bench, dtype_name: str) -> float:
    """Videos/s of X-CLIP on frames already on the device: what the GPU can do when it never waits."""
    from latents import load_encoder

    encoder, _ = load_encoder(str(bench.xclip), dtype_name, bench.device)
    frames = torch.randn(bench.batch_size, bench.num_frames, 3, bench.image_size, bench.image_size,
                         device=bench.device)
    encoder.encode(frames)  # warm-up: kernels chosen, memory allocated
    reset_peaks(bench.device)
    repeats = bench.encoder_repeats
    seconds, _ = timed_on(bench.device, lambda: [encoder.encode(frames) for _ in range(repeats)])
    rate = repeats * bench.batch_size / seconds
    bench.add("encoding", f"X-CLIP {dtype_name} alone, frames on the device, batch {bench.batch_size}", rate,
              "videos/s", "the ceiling: no decoding", **peaks(bench.device))
    del encoder
    return rate


def bench_encoding(bench, dtype_name: str, ceiling) -> None:
    """latents.encode_videos of the clips into a fresh cache (encode.py's path): videos/s, peaks."""
    import shutil

    from latents import EncodeOptions, encode_videos, load_encoder, open_cache

    encoder, reference = load_encoder(str(bench.xclip), dtype_name, bench.device)
    items = [(path.stem, path) for path in bench.clips]
    for attempt in ("warm-up", "measured"):
        cache_dir = bench.out_dir / f"cache-{dtype_name}-{attempt}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache, preprocess = open_cache(encoder, cache_dir, dtype_name)
        chosen = items if attempt == "measured" else items[: 2 * bench.batch_size]
        reset_peaks(bench.device)
        options = EncodeOptions(batch_size=bench.batch_size, num_workers=bench.workers, progress=False)
        seconds, summary = timed_on(bench.device, encode_videos, chosen, encoder, cache, preprocess, options,
                                    reference_encoder=reference if attempt == "warm-up" else None)
        shutil.rmtree(cache_dir, ignore_errors=True)
    if summary["failed"]:
        raise RuntimeError(f"{len(summary['failed'])} clips failed: {summary['failed'][0][1]}")
    rate = summary["encoded"] / seconds
    reference_text = (f"encoder alone {ceiling:.3g} videos/s: {rate / ceiling:.2f}x of it" if ceiling
                      else "encoder alone not measured")
    bench.add("encoding", f"encode_videos {dtype_name}, {bench.workers} workers, batch {bench.batch_size}", rate,
              "videos/s", reference_text, **peaks(bench.device))


def lstm_dtype_under_autocast(decoder, latents, rows, device) -> str:
    """The dtype of the LSTM's output in one training forward under train.py's bf16 autocast."""
    seen = []
    hook = decoder.lstm.register_forward_hook(lambda module, inputs, output: seen.append(output[0].dtype))
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            decoder(latents[:4], torch.from_numpy(rows[:4, :-1]).to(device), torch.from_numpy(rows[:4, 1:]).to(device))
    finally:
        hook.remove()
    return str(seen[0]).removeprefix("torch.") if seen else "not run"


def bare_lstm_dtype_under_autocast(decoder, device) -> str:
    """The dtype nn.LSTM itself gives under bf16 autocast on this device (what the decoder would get if it did not
    run its LSTM outside autocast)."""
    lstm = decoder.lstm
    inputs = torch.randn(2, 3, lstm.input_size, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16), torch.no_grad():
        output, _ = lstm(inputs)
    return str(output.dtype).removeprefix("torch.")


def bench_training(bench) -> None:
    """train.run_epoch (train.py's loop: fused AdamW, the loss's .item() per batch), without length buckets (train.py's
    default) and with them, each in fp32 and under bf16 autocast: captions/s over --train_batches batches of 128,
    after a warm-up epoch."""
    import sentencepiece as spm

    from model import CaptionDecoder, DecoderConfig
    from train import EpochOptions, make_optimizer, run_epoch

    tokenizer = spm.SentencePieceProcessor(model_file=str(bench.tokenizer))
    batch_size, batches = 128, bench.train_batches
    video_index, rows = caption_rows(tokenizer, batches * batch_size, seed=3)
    latents = torch.randn(int(video_index.max()) + 1, LATENT_DIM, device=bench.device)  # (N, D), as the cache gives
    config = DecoderConfig(vocab_size=tokenizer.get_piece_size(), latent_dim=LATENT_DIM, pad_id=tokenizer.pad_id(),
                           bos_id=tokenizer.bos_id(), eos_id=tokenizer.eos_id())
    rates = {}
    lstm_dtype = bare_dtype = None
    for buckets, bf16 in ((False, False), (False, True), (True, False), (True, True)):
        name = ("bf16 autocast" if bf16 else "fp32") + (", length buckets" if buckets else "")
        fp32_name = "fp32" + (", length buckets" if buckets else "")
        torch.manual_seed(0)
        decoder = CaptionDecoder(config).to(bench.device)
        decoder.set_latent_stats(latents.mean(0), latents.std(0))
        if bf16 and lstm_dtype is None:
            lstm_dtype = lstm_dtype_under_autocast(decoder, latents, rows, bench.device)
            bare_dtype = bare_lstm_dtype_under_autocast(decoder, bench.device)
            print(f"LSTM output dtype under bf16 autocast on {bench.device.type}: {lstm_dtype} in the decoder, "
                  f"{bare_dtype} for nn.LSTM called directly", flush=True)
            bench.results["lstm_dtype_under_autocast"] = {"decoder": lstm_dtype, "bare nn.LSTM": bare_dtype}
        optimizer, scheduler = make_optimizer(training_options(batch_size, batches), decoder, len(rows))
        warm = slice(0, min(10, max(1, batches // 3)) * batch_size)
        warm_up = EpochOptions(batch_size, desc="warm-up", generator=torch.Generator().manual_seed(1), buckets=buckets,
                               grad_clip=1.0, bf16=bf16)
        run_epoch(decoder, latents, video_index[warm], rows[warm], bench.device, warm_up, optimizer, scheduler)
        reset_peaks(bench.device)
        measured = EpochOptions(batch_size, desc=name, generator=torch.Generator().manual_seed(2), buckets=buckets,
                                grad_clip=1.0, bf16=bf16)
        seconds, loss = timed_on(bench.device, run_epoch, decoder, latents, video_index, rows, bench.device,
                                 measured, optimizer, scheduler)
        rates[name] = len(rows) / seconds
        reference = (f"{fp32_name} {rates[fp32_name]:.3g} captions/s: {rates[name] / rates[fp32_name]:.2f}x" if bf16
                     else f"{batches} batches of {batch_size}, loss {loss:.2f}")
        extra = {"lstm_output_dtype": lstm_dtype, "bare_lstm_output_dtype": bare_dtype} if bf16 else {}
        lstm_text = f"; LSTM output {lstm_dtype} (nn.LSTM alone under autocast: {bare_dtype})" if bf16 else ""
        bench.add("training", f"run_epoch {name}, decoder 2x512 LSTM, vocab {config.vocab_size}", rates[name],
                  "captions/s", reference + lstm_text, **extra, **peaks(bench.device))


def bench_inference(bench, dtype_name: str) -> None:
    """inference.py on the folder of clips (its batched path: decoding in workers, X-CLIP and beam search in
    batches): videos/s from the first caption to the last, and for the whole call (loading included)."""
    import inference

    checkpoint = bench.checkpoints[dtype_name]
    argv = ["--video_path", str(bench.clip_dir), "--model_path", str(checkpoint), "--xclip_model", str(bench.xclip),
            "--device", bench.device.type, "--batch_size", str(bench.batch_size), "--num_workers",
            str(bench.workers), "--beam_size", "5"]
    args = inference.parse_args(argv)
    stamps = []
    report = inference.report

    def report_and_stamp(*report_args, **kwargs):
        stamps.append(time.perf_counter())
        return report(*report_args, **kwargs)

    stdout, stderr = io.StringIO(), io.StringIO()
    inference.report = report_and_stamp
    reset_peaks(bench.device)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            seconds, code = timed_on(bench.device, inference.main, args)
    finally:
        inference.report = report
    captions = stdout.getvalue().splitlines()
    if code != 0 or len(captions) != len(bench.clips):
        raise RuntimeError(f"inference.py exit {code}, {len(captions)} captions for {len(bench.clips)} clips: "
                           f"{(stderr.getvalue().strip().splitlines() or ['no error'])[-1]}")
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None
    bench.add("captioning", f"inference.py on a folder, {dtype_name} checkpoint, beam 5, batch {bench.batch_size}, "
              f"{bench.workers} workers", steady, "videos/s",
              f"whole call {len(captions) / seconds:.1f} videos/s ({seconds:.1f} s, loading included); "
              f"e.g. \"{captions[0].split(': ', 1)[-1]}\"", **peaks(bench.device))


def write_captions_file(bench) -> Path:
    """captions.jsonl over the clips (20 captions each; 80% train, 20% val) for train.py under torchrun."""
    path = bench.out_dir / "captions.jsonl"
    captions = synthetic_captions(20 * len(bench.clips), seed=5)
    lines = []
    for index, clip in enumerate(bench.clips):
        split = "train" if index < 0.8 * len(bench.clips) else "val"
        lines += [json.dumps({"video": os.path.relpath(clip, path.parent), "caption": caption, "split": split})
                  for caption in captions[index * 20:(index + 1) * 20]]
    write_text(path, "\n".join(lines) + "\n")
    return path


def bench_torchrun(bench, processes_per_run: int) -> None:
    """torchrun encode.py and train.py with processes_per_run processes (one per GPU), beside one process."""
    import shutil

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    workers = str(max(1, bench.workers // processes_per_run))
    device = bench.device.type
    annotations = write_captions_file(bench)
    for processes in (1, processes_per_run):
        cache_dir = bench.out_dir / f"cache-torchrun-{processes}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        encode = ["encode.py", "--video_path", str(bench.clip_dir), "--xclip_model", str(bench.xclip), "--cache_dir",
                  str(cache_dir), "--num_workers", workers, "--batch_size", str(bench.batch_size), "--device", device]
        train = ["train.py", "--annotations", str(annotations), "--tokenizer_path", str(bench.tokenizer),
                 "--xclip_model", str(bench.xclip), "--cache_dir", str(cache_dir), "--out_dir",
                 str(bench.out_dir / f"run-torchrun-{processes}"), "--overwrite", "--epochs", "2", "--num_workers",
                 workers, "--beam_size", "1", "--val_videos", "8", "--device", device]
        for name, command in (("encode.py", encode), ("train.py", train)):
            prefix = launcher + [f"--nproc_per_node={processes}"] if processes > 1 else [sys.executable]
            started = time.perf_counter()
            result = subprocess.run(prefix + command, cwd=REPO, capture_output=True, text=True, timeout=300)
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                raise RuntimeError(f"{name} x{processes}: exit {result.returncode}: "
                                   f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
            unit, count = ("videos/s", len(bench.clips)) if name == "encode.py" else ("captions/s per epoch",
                                                                                        None)
            value = count / seconds if count else seconds
            bench.add("torchrun", f"{name} with {processes} process{'es' if processes > 1 else ''}", value,
                      unit if count else "s", "whole command, loading included")


# ----------------------------------------------------------------------------------------------------------------------
# The run

class Bench:
    """What the stages share: the material's paths, sizes, and the results (written after every stage)."""

    def __init__(self, args, device):
        self.args, self.device, self.cpu = args, device, torch.device("cpu")
        self.out_dir = Path(args.out_dir)
        self.workers = args.num_workers or default_workers()
        self.batch_size = args.batch_size
        self.train_batches = args.train_batches
        self.encoder_repeats = args.encoder_repeats
        self.rows, self.checkpoints = [], {}
        self.results = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "machine": machine(device),
                        "rows": self.rows, "errors": {}, "seconds": {}}

    def add(self, stage, measure, value, unit, reference="", **numbers) -> None:
        text = "not measured" if value is None else f"{value:,.1f} {unit}" if value < 1000 else f"{value:,.0f} {unit}"
        row = {"stage": stage, "measure": measure, "value": text, "number": value, "unit": unit,
               "reference": reference, **numbers}
        memory = [f"{label} {numbers[key]:,.0f} MiB" for key, label in
                  (("gpu_peak_mib", "GPU peak"), ("rss_peak_mib", "RSS peak"), ("workers_rss_mib", "workers RSS"))
                  if numbers.get(key) is not None]
        if memory:
            row["reference"] = "; ".join(filter(None, [reference, ", ".join(memory)]))
        self.rows.append(row)
        print(f"  {stage}: {measure}: {text}  ({row['reference']})", flush=True)
        self.save()

    def save(self) -> None:
        write_json(self.out_dir / "results.json", self.results)

    def stage(self, name, function, *args) -> None:
        """Run one stage; its error is recorded and printed, and the next stage runs."""
        print(f"[{name}]", flush=True)
        started = time.perf_counter()
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):  # the stages' progress bars would bury the numbers
                function(*args)
        except Exception as error:  # a stage that fails leaves the others' numbers
            last = traceback.format_exception_only(type(error), error)[-1].strip()
            self.results["errors"][name] = last
            print(without_progress_bars(stderr.getvalue()), end="", file=sys.stderr)
            print(f"  {name} failed: {last}", file=sys.stderr, flush=True)
            traceback.print_exc(limit=-3)
        else:
            print(without_progress_bars(stderr.getvalue()), end="", file=sys.stderr, flush=True)
        self.results["seconds"][name] = round(time.perf_counter() - started, 1)
        self.save()

    def prepare(self) -> None:
        """Clips, X-CLIP, tokenizer and the fp32 and bf16 checkpoints (reused from an earlier run when there)."""
        from create_tokenizer import train_tokenizer
        from model import XClipEncoder

        args = self.args
        self.clip_dir = self.out_dir / "clips"
        self.clips = write_clips(self.clip_dir, args.clips, args.clip_seconds, args.fps, self.workers)
        self.clip_desc = f"{len(self.clips)} clips 320x240 {args.clip_seconds:g} s {args.fps} fps"
        self.xclip = make_xclip(self.out_dir / f"xclip-{args.encoder}", args.encoder)
        self.tokenizer = self.out_dir / "tokenizer.model"
        if not self.tokenizer.is_file():
            with contextlib.redirect_stderr(io.StringIO()):  # the note that a small corpus lowers the vocabulary
                train_tokenizer(synthetic_captions(20000, seed=1), self.out_dir / "tokenizer", args.vocab_size)
        encoder = XClipEncoder(str(self.xclip))
        self.num_frames, self.image_size = encoder.num_frames, encoder.image_size
        for dtype_name in ("fp32", "bf16"):
            path = self.out_dir / f"checkpoint-{dtype_name}.pt"
            if dtype_name == "bf16":
                from latents import load_encoder
                encoder, _ = load_encoder(str(self.xclip), "bf16", "cpu")
            self.checkpoints[dtype_name] = make_checkpoint_for(path, encoder, dtype_name, self.tokenizer,
                                                               self.device, batches=args.checkpoint_batches)
        self.results["material"] = {"clips": self.clip_desc, "xclip": f"{args.encoder} ({self.xclip})",
                                    "tokenizer_pieces": self.vocab(), "workers": self.workers}

    def vocab(self) -> int:
        import sentencepiece as spm
        return spm.SentencePieceProcessor(model_file=str(self.tokenizer)).get_piece_size()


def without_progress_bars(text: str) -> str:
    """What a stage wrote on stderr without tqdm's bars (lines redrawn with carriage returns)."""
    lines = [line.split("\r")[-1] for line in text.split("\n")]
    kept = [line for line in lines if line.strip() and not re.search(r"\d+/\d+ \[|it/s|batch/s", line)]
    return "".join(line + "\n" for line in kept)


def machine(device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_cores": default_workers(),
            "device": str(device), "load_average_at_start": [round(load, 2) for load in os.getloadavg()]}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2 ** 30, 1),
                    gpus=torch.cuda.device_count(), cuda=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def format_table(rows) -> str:
    lines = ["| stage | measure | value | reference |", "|---|---|---|---|"]
    lines += [f"| {row['stage']} | {row['measure']} | {row['value']} | {row['reference']} |" for row in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", default="bench_gpu",
                        help="material, results.json and table.md go here (default bench_gpu)")
    parser.add_argument("--overwrite", action="store_true",
                        help="use --out_dir even though it holds files this tool did not write")
    parser.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N or cpu (cpu: a smoke run)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in a couple of minutes: the tiny X-CLIP, 8 short clips, few batches")
    parser.add_argument("--clips", type=int, default=None, help="clips to encode and caption (default 256; quick 8)")
    parser.add_argument("--clip_seconds", type=float, default=None, help="length of each clip (default 10; quick 3)")
    parser.add_argument("--fps", type=int, default=None, help="frame rate of the clips (default 30; quick 10)")
    parser.add_argument("--encoder", choices=["full", "tiny"], default=None,
                        help="full: X-CLIP's real architecture, random weights; tiny: the tests' (default full; "
                             "quick tiny)")
    parser.add_argument("--batch_size", type=int, default=None, help="videos per encoder batch (default 32; quick 4)")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers (0, the default: one per available core)")
    parser.add_argument("--train_batches", type=int, default=None,
                        help="training batches of 128 captions timed per precision (default 300; quick 6)")
    parser.add_argument("--checkpoint_batches", type=int, default=None,
                        help="batches the captioner checkpoint is trained for (default 200; quick 5)")
    parser.add_argument("--encoder_repeats", type=int, default=None,
                        help="batches timed for the encoder alone (default 20; quick 2)")
    parser.add_argument("--vocab_size", type=int, default=None, help="tokenizer pieces (default 8000; quick 500)")
    parser.add_argument("--torchrun_processes", type=int, default=0,
                        help="processes of the torchrun stage (0, the default: one per GPU, skipped with fewer than 2; "
                             "on a CPU, 2 tries the stage with gloo)")
    args = parser.parse_args(argv)
    defaults = {"clips": (256, 8), "clip_seconds": (10.0, 3.0), "fps": (30, 10), "encoder": ("full", "tiny"),
                "batch_size": (32, 4), "train_batches": (300, 6), "checkpoint_batches": (200, 5),
                "encoder_repeats": (20, 2), "vocab_size": (8000, 500)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(args) -> int:
    from common import UserError, fail

    try:
        # Folders made before folders were marked hold the results or the table.
        check_scratch_folder(args.out_dir, "--out_dir", "bench_gpu", ("results.json", "table.md"), args.overwrite)
        device = torch.device(resolve_device(args.device))
        make_scratch_folder(args.out_dir, "--out_dir", "bench_gpu")
    except UserError as error:
        return fail(error)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    bench = Bench(args, device)
    without_metrics_packages()
    print(f"bench_gpu on {bench.results['machine'].get('gpu', device)}; material under {bench.out_dir}", flush=True)
    started = time.perf_counter()
    bench.stage("material", bench.prepare)
    if "material" in bench.results["errors"]:
        print("no material, nothing to measure", file=sys.stderr)
        return 1
    defaults = sorted({2, bench.workers})  # the scripts' old default of 2 workers, and one per core
    bench.stage("decoding", bench_decoding, bench, defaults)
    ceilings = {}
    for dtype_name in ("fp32", "bf16"):
        bench.stage(f"encoder alone {dtype_name}",
                    lambda name=dtype_name: ceilings.__setitem__(name, bench_encoder_alone(bench, name)))
        bench.stage(f"encoding {dtype_name}", lambda name=dtype_name: bench_encoding(bench, name, ceilings.get(name)))
    bench.stage("training", bench_training, bench)
    for dtype_name in ("fp32", "bf16"):
        bench.stage(f"captioning {dtype_name}", bench_inference, bench, dtype_name)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    processes = args.torchrun_processes or gpus
    if processes >= 2:
        bench.stage("torchrun", bench_torchrun, bench, processes)
    else:
        bench.add("torchrun", "encode.py and train.py, one process per GPU", None, "",
                  f"skipped: {gpus} GPU{'s' if gpus != 1 else ''} here, torchrun needs 2 or more")
    bench.results["seconds"]["total"] = round(time.perf_counter() - started, 1)
    bench.save()
    table = format_table(bench.rows)
    header = (f"bench_gpu: {bench.results['machine'].get('gpu', device)}, torch {torch.__version__}, "
              f"{bench.results['machine']['cpu_cores']} cores, {bench.results['seconds']['total']:.0f} s\n\n")
    write_text(bench.out_dir / "table.md", header + table)
    print("\n" + header + table)
    if bench.results["errors"]:
        print(f"stages that failed: {', '.join(bench.results['errors'])}", file=sys.stderr)
    return 1 if bench.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
