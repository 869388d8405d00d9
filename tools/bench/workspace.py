"""What the stages read, made once under --work_dir and reused: clips shaped like MSR-VTT's and larger ones, an
X-CLIP of the real architecture with random weights and the tiny one, a 10,000-piece tokenizer trained on a
synthetic caption corpus, a captioner checkpoint and its twin that names the tiny X-CLIP, folders of clips.

Clips are written with synthetic.video_stream, X-CLIPs with synthetic.save_random_xclip, the checkpoint's decoder
set up and trained by train.py's own functions. Heavy modules are imported inside the functions that use them."""
import shutil
from pathlib import Path

from tools.bench.measuring import REPO

MSRVTT_SIZE = (320, 240)
MSVD_SIZE = (854, 480)
HD_SIZE = (1280, 720)
CLIP_LABELS = tuple(f"{width}x{height}" for width, height in (MSRVTT_SIZE, MSVD_SIZE, HD_SIZE)) + ("msvd-real",)
REALDATA = REPO.parent / "shared" / "realdata"  # real clips and features, where this checkout has them
# Videos in the folders inference.py and encode.py are timed on, with the full-size and the tiny X-CLIP.
FOLDER_VIDEOS = {"full": 8, "tiny": 24}
LATENT_DIM = 512
RECIPE = 4  # in the names of the made tokenizer and checkpoint: bump it when the way they are made changes
CLIP_RECIPE = "-1slice"  # in the names of the made clips: one slice per frame, as uploads have


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


def camera_frames(rng, width: int, height: int, num_frames: int, fps: int):
    """(H, W, 3) uint8 frames of a camera panning and zooming over a detailed scene with a cut half way, three
    moving objects and sensor noise."""
    import numpy as np
    from PIL import Image
    scenes = [smooth_texture(rng, 2 * width, 2 * height) for _ in range(2)]
    rows, columns = np.mgrid[0:height, 0:width]  # (H, W) each
    objects = [(rng.uniform(0.05, 0.15) * height, rng.random(2), rng.uniform(-0.3, 0.3, 2), rng.integers(0, 256, 3))
               for _ in range(3)]  # radius, start (x, y) as fractions, velocity per second, colour
    sensor_noise = [rng.normal(0, 2.0, (height, width, 3)).astype(np.int16) for _ in range(5)]
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
        yield np.clip(picture, 0, 255).astype(np.uint8)


def write_bench_clip(path, width: int, height: int, seconds: float = 15.0, fps: int = 30, keyframe_interval: int = 60,
                     crf: int = 23, seed: int = 0):
    """Write an H.264 clip shaped like a YouTube upload (camera_frames): lossy (crf), B-frames, a keyframe every
    keyframe_interval frames. Its bitrate is near MSR-VTT's at 320x240 (docs/performance.md has the figures).
    Written atomically."""
    import av
    import numpy as np
    from synthetic import encode_frame, video_stream
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"crf": str(crf), "preset": "fast", "g": str(keyframe_interval),
               "keyint_min": str(max(1, keyframe_interval // 2)), "bf": "3"}
    with video_stream(path, fps, width, height, "libx264", options) as stream:
        # x264's frame threads, as uploads are made: PyAV's default (slice threads) would cut every frame into
        # slices that a decoder's slice threads then decode in parallel, which real clips do not allow.
        stream.thread_type = "FRAME"
        rng = np.random.default_rng(seed)
        for pixels in camera_frames(rng, width, height, max(1, int(round(seconds * fps))), fps):
            encode_frame(stream, av.VideoFrame.from_ndarray(pixels, format="rgb24"))
    return path


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


def training_settings(learning_rate: float, epochs: int, batch_size: int, warmup_steps: int = 500):
    """The flags train.make_optimizer reads, as train.py's defaults set them (weight decay 0.01)."""
    from types import SimpleNamespace
    return SimpleNamespace(learning_rate=learning_rate, weight_decay=0.01, epochs=epochs, batch_size=batch_size,
                           warmup_steps=warmup_steps)


def make_bench_checkpoint(path, xclip_path, tokenizer_path, train_batches: int = 20, batch_size: int = 128,
                          seed: int = 0):
    """A captioner checkpoint for the full pipeline: the default decoder (embed 256, LSTM 2x512) over the tokenizer's
    vocabulary, trained for a few batches on synthetic captions (so that beams end as a trained model's do), on
    random latents, with the encoder's name, fingerprint and preprocessing as train.py records them."""
    import sentencepiece as spm
    import torch
    from checkpoint import make_checkpoint, save_checkpoint
    from latents import encoder_record
    from model import CaptionDecoder, DecoderConfig, XClipEncoder
    from train import EpochOptions, caption_table, make_optimizer, run_epoch

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
        optimizer, scheduler = make_optimizer(training_settings(3e-3, 1, batch_size, warmup_steps=5), decoder,
                                              train_batches * batch_size, fused=False)
        options = EpochOptions(batch_size, desc="bench checkpoint", generator=torch.Generator().manual_seed(seed),
                               grad_clip=1.0)
        run_epoch(decoder, latents, video_index, rows, torch.device("cpu"), options, optimizer, scheduler)
    save_checkpoint(path, make_checkpoint(decoder, tokenizer_proto, encoder_meta, {"bench": True}))
    return Path(path)


def made_clips(work_dir, clip_seconds: float, msrvtt_clips: int, hd_clip: bool, log) -> dict:
    """{label: [paths]}: msrvtt_clips 320x240 clips, with hd_clip a 1280x720 and an 854x480 one, and the real MSVD
    clips where this checkout has them; each written once."""
    seconds_tag = f"{clip_seconds:g}s"
    clips = {"320x240": []}
    for seed in range(msrvtt_clips):
        path = Path(work_dir) / "clips" / f"msrvtt_320x240_{seconds_tag}_{seed}{CLIP_RECIPE}.mp4"
        if not path.is_file():
            log(f"writing {path}")
            write_bench_clip(path, *MSRVTT_SIZE, seconds=clip_seconds, seed=seed)
        clips["320x240"].append(str(path))
    if hd_clip:
        for size, seed, seconds in ((HD_SIZE, 100, clip_seconds), (MSVD_SIZE, 200, min(clip_seconds, 10.0))):
            label = f"{size[0]}x{size[1]}"
            path = Path(work_dir) / "clips" / f"youtube_{label}_{seconds:g}s_0{CLIP_RECIPE}.mp4"
            if not path.is_file():
                log(f"writing {path} (about a minute, once)")
                write_bench_clip(path, *size, seconds=seconds, seed=seed)
            clips[label] = [str(path)]
    clips["msvd-real"] = [str(path) for path in sorted((REALDATA / "msvd" / "clips").glob("*.avi"))]
    return clips


def prepare_workspace(work_dir, encoder: str = "full", clip_seconds: float = 15.0, msrvtt_clips: int = 4,
                      hd_clip: bool = True, vocab_size: int = 10000, checkpoint_batches: int = 20,
                      log=print) -> dict:
    """Make what the stages read, once: clips, X-CLIP, tokenizer, checkpoint. Returns their paths.
    encoder "tiny" is synthetic.make_tiny_xclip (for testing the bench; its timings mean nothing)."""
    from create_tokenizer import train_tokenizer
    from synthetic import full_size_xclip_config, make_tiny_xclip, save_random_xclip
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    clips = made_clips(work_dir, clip_seconds, msrvtt_clips, hd_clip, log)
    xclip_path = work_dir / ("xclip-base-patch32-16-frames-random" if encoder == "full" else "xclip-tiny-random")
    checkpoint_path = work_dir / f"captioner-{xclip_path.name}-{vocab_size}-r{RECIPE}.pt"
    if not (xclip_path / "config.json").is_file():
        log(f"writing {xclip_path}")
        if encoder == "full":
            save_random_xclip(xclip_path, full_size_xclip_config())
        else:
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
    from latents import encoder_record
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
