"""What the tests feed the code, shared by several test files: small clips written with PyAV (odd formats,
rotations, timestamps, audio, noise) and a dataset loaded with the flags a script would pass."""
import warnings
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np

from annotations import load_dataset

# Frame i is flat gray LEVEL_BASE + i * LEVEL_STEP (i < 40), so its number can be read back.
LEVEL_STEP, LEVEL_BASE = 6, 10


def frame_level(number: int) -> int:
    return (LEVEL_BASE + number * LEVEL_STEP) % 250


def write_video(path, num_frames, size=(64, 48), codec="libx264", pix_fmt="yuv420p", rate=25, pts_ms=None,
                rotation=None, hflip=False, image=None, container_format=None, options=None, with_audio=False):
    """A small clip: frame i flat gray frame_level(i) (or `image`), optional display rotation, timestamps, audio."""
    width, height = size
    with av.open(str(path), "w", format=container_format, options=options or {}) as container:
        video = container.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if pts_ms is not None:
            video.codec_context.time_base = Fraction(1, 1000)
            video.time_base = Fraction(1, 1000)
        if rotation is not None or hflip:
            video.set_display_rotation(rotation or 0, hflip=hflip)
        audio = container.add_stream("aac", rate=8000) if with_audio else None
        for number in range(num_frames):
            pixels = image if image is not None else np.full((height, width, 3), frame_level(number), np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[number], Fraction(1, 1000)
            for packet in video.encode(frame):
                container.mux(packet)
            if audio is not None:
                samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                samples.sample_rate, samples.pts = 8000, number * 1024
                for packet in audio.encode(samples):
                    container.mux(packet)
        for stream in (video, audio):
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
    return Path(path)


def write_audio_only(path, codec):
    sample_format = {"aac": "fltp", "mp2": "s16", "pcm_s16le": "s16"}[codec]
    dtype = np.float32 if sample_format == "fltp" else np.int16
    with av.open(str(path), "w") as container:
        audio = container.add_stream(codec, rate=44100)
        for number in range(10):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1152), dtype), format=sample_format, layout="mono")
            samples.sample_rate, samples.pts = 44100, number * 1152
            for packet in audio.encode(samples):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return Path(path)


def write_noisy_video(path, num_frames, options=None):
    """Frames of gray frame_level(i) plus +-15 noise, a keyframe every 5: bytes spread evenly over the file."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options or {}) as container:
        video = container.add_stream("libx264", rate=25, options={"g": "5", "keyint_min": "5"})
        video.width, video.height = 64, 48
        for number in range(num_frames):
            noise = rng.integers(-15, 16, (48, 64, 3))
            pixels = np.clip(frame_level(number) + noise, 0, 255).astype(np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return Path(path)


def load(data_dir=None, check_videos=False, **flags):
    """load_dataset with the flags a script would pass, warnings collected: (dataset, [warning texts])."""
    args = SimpleNamespace(dataset=None, data_dir=data_dir, scheme=None, annotations=None,
                           split_fractions=(0.8, 0.1, 0.1), split_seed=0)
    vars(args).update(flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_dataset(args, check_videos=check_videos)
    return dataset, [str(warning.message) for warning in caught]


def write_b_frame_clip(path, width: int, height: int, num_frames: int = 30, seed: int = 0):
    """Noise over a moving gradient in lossy H.264 with B-frames (decode order differs from presentation order),
    one slice per frame as uploads have: a clip whose decoding each threading does its own way."""
    from synthetic import encode_frame, video_stream
    rng = np.random.default_rng(seed)
    columns = np.arange(width)[None, :, None]  # (1, W, 1)
    with video_stream(path, 30, width, height, options={"crf": "23", "bf": "3", "g": "15"}) as stream:
        stream.thread_type = "FRAME"
        for number in range(num_frames):
            pixels = (columns + 4 * number) % 200 + rng.integers(0, 40, (height, width, 3))
            encode_frame(stream, av.VideoFrame.from_ndarray(pixels.astype(np.uint8), format="rgb24"))
    return Path(path)


def snapshot(*folders):
    """Every file under folders -> its bytes (what must not change)."""
    return {path: path.read_bytes() for folder in folders for path in sorted(Path(folder).rglob("*"))
            if path.is_file()}


def one_error(capsys, *words):
    """The run's stderr is one `error:` line holding every one of words."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]
