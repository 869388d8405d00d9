"""N frames of a video with PyAV, upright and preprocessed as X-CLIP's image processor; a Dataset over video files.

    python dataset.py --video_path data/MSRVTT/videos/all/video0.mp4 --num_frames 16 --save frames.npy
    python dataset.py --data_dir data --scheme official            # videos / captions / missing per split
    python dataset.py --dataset msvd --data_dir msvd --json         # any dataset annotations.py reads

read_video samples the middle frame of each of N equal segments (a seeded random frame per segment
with jitter) in one demux pass (headers lie about frame counts) and one decoding pass that stops
after the last sampled frame, skips the unsampled frames nothing refers to, and converts only the
sampled ones. Every bad file is one VideoError line.
"""
import argparse
import bisect
import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import signal
import struct
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from annotations import add_data_arguments, dataset_summary, load_dataset, videos_not_on_disk
from common import UserError, count, fail, frame_count, one_line, positive_int, save_array


class VideoError(UserError):
    """A video that cannot be sampled; str(error) is one line naming the file and the problem."""


# X-CLIP's image processor (microsoft/xclip-*: VideoMAE-style, ImageNet statistics, not CLIP's).
XCLIP_MEAN = (0.485, 0.456, 0.406)
XCLIP_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocess:
    """Frame preprocessing equal to X-CLIP's image processor: resize shortest edge (bilinear), centre crop, normalise."""

    image_size: int = 224      # centre-crop size
    shortest_edge: int = 224   # resize shortest edge to this (bilinear)
    mean: tuple = XCLIP_MEAN
    std: tuple = XCLIP_STD

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "shortest_edge": self.shortest_edge,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocess":
        return cls(image_size=int(values["image_size"]), shortest_edge=int(values["shortest_edge"]),
                   mean=tuple(float(v) for v in values["mean"]), std=tuple(float(v) for v in values["std"]))


def segment_frame_indices(num_available: int, num_frames: int, rng=None) -> list:
    """Split frames 0..num_available-1 into num_frames equal segments; the middle frame of each, or a random one."""
    indices = []
    for segment in range(num_frames):
        start = segment * num_available // num_frames
        end = (segment + 1) * num_available // num_frames  # exclusive; empty when fewer frames than segments
        if rng is None or end - start <= 1:
            indices.append((2 * segment + 1) * num_available // (2 * num_frames))
        else:
            indices.append(int(rng.integers(start, end)))
    return indices


def time_uniform_frame_indices(frame_times: list, clip_end: float, num_frames: int, rng=None,
                               clip_start: float | None = None) -> list:
    """Split [clip_start (default: first frame time), clip_end) into num_frames equal spans; the frame showing at
    the middle of each (or at a random time inside it). frame_times are presentation times in ascending order."""
    clip_start = frame_times[0] if clip_start is None else clip_start
    span = (clip_end - clip_start) / num_frames
    indices = []
    for segment in range(num_frames):
        offset = 0.5 if rng is None else float(rng.random())
        moment = clip_start + (segment + offset) * span
        indices.append(min(max(bisect.bisect_right(frame_times, moment) - 1, 0), len(frame_times) - 1))
    return indices


def is_constant_rate(frame_times: list) -> bool:
    """True when the frame intervals agree (to container rounding), so sampling by frame number is sampling by time."""
    intervals = [later - earlier for earlier, later in zip(frame_times, frame_times[1:])]
    if not intervals or min(intervals) <= 0:
        return True  # one frame, or timestamps that cannot be trusted: count frames instead
    return max(intervals) <= 1.5 * min(intervals)


def missing_frames_by_timestamps(frame_times: list) -> tuple:
    """(about how many frames are missing, time of the first gap) when an otherwise constant-rate stream skips
    whole frame intervals, as it does when damaged data was dropped; (0, None) otherwise."""
    intervals = [later - earlier for earlier, later in zip(frame_times, frame_times[1:])]
    if len(intervals) < 3:
        return 0, None
    typical = sorted(intervals)[len(intervals) // 2]
    if typical <= 0:
        return 0, None
    regular = [interval for interval in intervals if interval < 1.9 * typical]
    gaps = [(position, interval) for position, interval in enumerate(intervals) if interval >= 1.9 * typical]
    if not gaps or len(gaps) > 0.1 * len(intervals) or min(regular) <= 0 or max(regular) > 1.5 * min(regular):
        return 0, None  # no gap, or a genuinely variable frame rate
    missing = sum(int(round(interval / typical)) - 1 for _, interval in gaps)
    return missing, frame_times[gaps[0][0]]


def open_video(path: Path):
    """av.open with the errors of a file that is not a video turned into one-line VideoErrors."""
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as error:
        raise VideoError(f"{path}: not a readable video ({one_line(error)})") from None


def pick_video_stream(container, path: Path):
    """The first real video stream (cover art pictures in audio files do not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({stream.type for stream in container.streams})
    found = f" (it has {', '.join(kinds)} only)" if kinds else ""
    raise VideoError(f"{path}: no video stream{found}")


def packet_key(packet) -> tuple:
    """What identifies a packet across two reads of a file."""
    return (packet.pts, packet.dts, packet.pos, packet.size)


@dataclass
class StreamSurvey:
    """What a demux pass (no decoding) learns of a video stream."""

    num_frames: int = 0                                  # frames the demuxer lists (headers are not trusted)
    frame_times: list = field(default_factory=list)      # presentation time of each, seconds, ascending
    frame_pts: list | None = None                        # their pts when these name every frame uniquely
    clip_end: float | None = None                        # when the last frame stops showing, seconds
    first_packet: tuple | None = None                    # packet_key of the stream's first packet
    header_duration: float | None = None                 # what the header claims, seconds
    warnings: list = field(default_factory=list)


def survey_stream(container, stream) -> StreamSurvey:
    """Demux pass, no decoding: how many frames the video stream really has, and when each is shown.
    Headers are not trusted: MKV/WebM report no frame count, variable frame rate breaks duration * fps."""
    survey = StreamSurvey()
    if stream.duration is not None and stream.time_base is not None:
        survey.header_duration = float(stream.duration * stream.time_base)
    elif container.duration:
        survey.header_duration = container.duration / av.time_base
    pts_list, durations = [], []
    try:
        for packet in container.demux(stream):
            if survey.first_packet is None:
                survey.first_packet = packet_key(packet)
            if packet.size == 0 or packet.is_discard:
                continue  # the flush packet, and frames an edit list hides
            pts_list.append(packet.pts)
            durations.append(packet.duration)
    except av.error.FFmpegError as error:
        survey.warnings.append(f"container unreadable after {len(pts_list)} frames ({one_line(error)})")
    survey.num_frames = len(pts_list)
    if pts_list and None not in pts_list and stream.time_base is not None:
        time_base = float(stream.time_base)
        pts_list.sort()  # decode order -> presentation order
        survey.frame_times = [pts * time_base for pts in pts_list]
        if len(set(pts_list)) == len(pts_list):
            survey.frame_pts = pts_list  # they name each frame: decode_sampled_frames places frames by them
        intervals = sorted(later - earlier for earlier, later in zip(pts_list, pts_list[1:]) if later > earlier)
        last_duration = durations[-1] or (intervals[len(intervals) // 2] if intervals else 0)
        survey.clip_end = (pts_list[-1] + last_duration) * time_base
    return survey


def survey_notes(survey: StreamSurvey) -> list:
    """Warnings a survey gives: the container's own, frames missing by their timestamps, a truncated file."""
    notes = list(survey.warnings)
    missing, first_gap = missing_frames_by_timestamps(survey.frame_times)
    if missing:
        notes.append(f"timestamps skip about {missing} frames (first after {first_gap:.2f} s); "
                     f"damaged data may have been dropped")
    if survey.header_duration and survey.clip_end is not None:
        shown = survey.clip_end - survey.frame_times[0]
        if shown < 0.9 * survey.header_duration - 0.1:
            notes.append(f"frames cover {shown:.2f} s but the header says {survey.header_duration:.2f} s; "
                         f"the file may be truncated")
    return notes


def demux_from_start(container, stream, first_packet: tuple):
    """Packets of stream from the first one again, after a survey pass: seek back, and check that the seek landed
    on the very first packet. None when it did not (the caller reopens the file)."""
    try:
        container.seek(0)
        packets = container.demux(stream)
        head = next(packets, None)
    except av.error.FFmpegError:
        return None
    if head is None or packet_key(head) != first_packet:
        return None
    return itertools.chain([head], packets)


def display_matrix(frame):
    """The 3x3 display matrix (9 ints, FFmpeg layout) attached to a decoded frame, or None."""
    try:
        for side_data in frame.side_data:
            if str(getattr(side_data.type, "name", side_data.type)).upper().endswith("DISPLAYMATRIX"):
                raw = bytes(side_data)
                return struct.unpack("=9i", raw[:36]) if len(raw) >= 36 else None
    except (AttributeError, TypeError, ValueError):
        pass
    return None


# Clockwise rotation by the signs of the display matrix's linear part (a, b, c, d) = (m[0], m[1], m[3], m[4]).
ROTATION_BY_SIGNS = {(1, 0, 0, 1): 0, (0, 1, -1, 0): 90, (-1, 0, 0, -1): 180, (0, -1, 1, 0): 270}
SIGNS_BY_ROTATION = {degrees: signs for signs, degrees in ROTATION_BY_SIGNS.items()}


def frame_orientation(frame) -> tuple:
    """(a, b, c, d) in {-1, 0, 1}: how a player maps stored pixels to the screen, x' = a*x + c*y, y' = b*x + d*y
    (FFmpeg's display matrix snapped to the nearest quarter turn; mirroring kept). (1, 0, 0, 1) without one."""
    matrix = display_matrix(frame)
    if matrix is None:  # nothing to read but PyAV's counter-clockwise angle (no mirroring)
        return SIGNS_BY_ROTATION[int(round(-(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4 * 90]
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    if abs(b) > abs(a):
        return (0, 1 if b > 0 else -1, 1 if c > 0 else -1, 0)
    return (1 if a > 0 else -1, 0, 0, 1 if d > 0 else -1)


def describe_orientation(orientation: tuple) -> tuple:
    """(clockwise degrees, mirrored): the orientation as a quarter-turn rotation followed by a horizontal flip."""
    a, b, c, d = orientation
    if a * d - b * c < 0:  # mirrored: undo the horizontal flip (negate x') to find the rotation
        return ROTATION_BY_SIGNS[(-a, b, -c, d)], True
    return ROTATION_BY_SIGNS[orientation], False


def orient_upright(rgb, orientation: tuple):
    """Apply a display orientation (frame_orientation) to an (H, W, 3) image: the picture a player shows."""
    a, b, c, d = orientation
    if b != 0:  # axes swap: rows become stored x, columns stored y
        rgb = rgb.transpose(1, 0, 2)
        rows_flipped, columns_flipped = b < 0, c < 0
    else:
        rows_flipped, columns_flipped = d < 0, a < 0
    if rows_flipped:
        rgb = rgb[::-1]
    if columns_flipped:
        rgb = rgb[:, ::-1]
    return rgb


def resized_size(width: int, height: int, shortest_edge: int) -> tuple:
    """(width, height) with the shorter edge scaled to shortest_edge, as transformers computes it (long edge truncated)."""
    if width <= height:
        return shortest_edge, max(1, int(shortest_edge * height / width))
    return max(1, int(shortest_edge * width / height)), shortest_edge


def centre_crop(rgb, size: int):
    """Centre crop an (H, W, 3) image to (size, size, 3), zero-padding an image smaller than that (as transformers)."""
    height, width = rgb.shape[:2]
    if height < size or width < size:
        padded = np.zeros((max(height, size), max(width, size), 3), dtype=rgb.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top:top + height, left:left + width] = rgb
        rgb, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = (height - size) // 2, (width - size) // 2
    return rgb[top:top + size, left:left + size]


def normalisation_coefficients(preprocess: Preprocess) -> tuple:
    """(scale, offset), each (3, 1, 1) float32, with level * scale + offset == (level / 255 - mean) / std."""
    mean = np.asarray(preprocess.mean, dtype=np.float64)
    std = np.asarray(preprocess.std, dtype=np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None]
    offset = (-mean / std).astype(np.float32)[:, None, None]
    return scale, offset


# swscale flags: bilinear like the PIL resize in transformers; exact rounding and full-resolution chroma, without
# which swscale's RGB is itself about 0.02 (normalised) away from an exact conversion.
SWSCALE_FLAGS = ("BILINEAR", "ACCURATE_RND", "FULL_CHR_H_INT", "FULL_CHR_H_INP")


def swscale_interpolation() -> int:
    flags = 0
    for name in SWSCALE_FLAGS:
        flags |= int(getattr(Interpolation, name))
    return flags


@functools.cache
def reformat_options() -> dict:
    """VideoReformatter.reformat's options: RGB, SWSCALE_FLAGS, and one thread where PyAV lets swscale use more
    (its default, one per core, only costs on outputs this small; the pixels are the same)."""
    options = {"format": "rgb24", "interpolation": swscale_interpolation()}
    if "threads" in (VideoReformatter.reformat.__doc__ or ""):  # recent PyAV; older ones scale on one thread
        options["threads"] = 1
    return options


def frame_to_array(frame, preprocess: Preprocess, reformatter, out) -> tuple:
    """Write a decoded frame into out (3, S, S) uint8, upright: one swscale step for resize + RGB, then crop; the
    levels are normalised later (normalise_levels), on the device that encodes them. Returns the display
    orientation applied (frame_orientation)."""
    orientation = frame_orientation(frame)
    width, height = resized_size(frame.width, frame.height, preprocess.shortest_edge)
    rgb = reformatter.reformat(frame, width=width, height=height, **reformat_options()).to_ndarray()  # (h, w, 3) uint8
    rgb = centre_crop(orient_upright(rgb, orientation), preprocess.image_size)  # (S, S, 3) uint8
    out[...] = rgb.transpose(2, 0, 1)  # (3, S, S)
    return orientation


def normalise_levels(levels, preprocess: Preprocess):
    """uint8 RGB levels (..., 3, S, S) -> float32 (level / 255 - mean) / std, as X-CLIP's processor: a numpy array,
    or a torch tensor on its own device (the GPU that encodes it). Both compute level * scale + offset in float32,
    one rounding per operation, so that the result is the same bit for bit."""
    scale, offset = normalisation_coefficients(preprocess)
    if isinstance(levels, np.ndarray):
        frames = np.multiply(levels, scale, dtype=np.float32)
        frames += offset
        return frames
    import torch  # dataset.py itself needs no torch

    frames = levels.to(torch.float32) * torch.from_numpy(scale).to(levels.device)
    frames += torch.from_numpy(offset).to(levels.device)
    return frames


@dataclass
class DecodedFrames:
    """What a decoding pass gives: the sampled frames and what went wrong on the way."""

    frames: np.ndarray                    # (N, 3, S, S) uint8 levels, row i = frame_indices[i]
    filled: np.ndarray                    # (N,) bool: which rows were decoded
    frames_seen: int = 0                  # frames decoded so far (by presentation index + 1)
    orientation: tuple = (1, 0, 0, 1)     # display orientation of the frames (frame_orientation)
    bad_packets: int = 0                  # packets that failed to decode and were skipped
    first_error: str | None = None
    stopped_by: str | None = None         # the demuxer error that ended the pass
    corrupt: int = 0                      # sampled frames the decoder flags as corrupt
    pts_mismatch: bool = False            # a frame's pts is not in frame_pts: the pass was abandoned

    def notes(self) -> list:
        notes = []
        if self.bad_packets:
            notes.append(f"{self.bad_packets} packets failed to decode and were skipped ({self.first_error})")
        if self.stopped_by:
            notes.append(f"reading stopped after frame {self.frames_seen} ({self.stopped_by})")
        if self.corrupt:
            notes.append(f"{self.corrupt} sampled frames are flagged corrupt by the decoder")
        return notes

    def failure(self) -> str:
        return self.stopped_by or self.first_error or "the decoder returned no frame"


class NonReferenceSkipper:
    """Tells the decoder to skip unsampled frames that no other frame refers to (non-reference B-frames, common in
    YouTube-style H.264), packet by packet; the sampled frames come out bit for bit the same, in less time."""

    def __init__(self, index_by_pts: dict, sampled: dict):
        self.index_by_pts, self.sampled = index_by_pts, sampled
        self.codec_context, self.skipping = None, False

    def before(self, packet) -> None:
        packet_index = self.index_by_pts.get(packet.pts)
        skip = packet_index is not None and packet_index not in self.sampled
        if skip != self.skipping:
            self.codec_context = self.codec_context or packet.stream.codec_context
            self.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            self.skipping = skip

    def restore(self) -> None:
        if self.skipping:
            self.codec_context.skip_frame = "DEFAULT"


def decode_sampled_frames(packets, frame_indices: list, preprocess: Preprocess,
                          frame_pts: list | None = None) -> DecodedFrames:
    """Decoding pass over packets (one video stream, from its start): convert only the frames at frame_indices
    (presentation order) and stop after the last one. A packet that fails to decode is skipped; a demuxer error
    ends the pass.

    With frame_pts (every frame's pts in presentation order, from survey_stream), frames are placed by their
    timestamps and the unsampled non-reference frames are skipped (NonReferenceSkipper). A decoded frame whose
    pts is not in frame_pts abandons the pass with pts_mismatch set."""
    positions_by_index = {}
    for position, index in enumerate(frame_indices):
        positions_by_index.setdefault(index, []).append(position)
    last_index = max(frame_indices)
    reformatter = VideoReformatter()  # one swscale context for all frames: making one per frame is slow
    size = preprocess.image_size
    result = DecodedFrames(frames=np.empty((len(frame_indices), 3, size, size), dtype=np.uint8),
                           filled=np.zeros(len(frame_indices), dtype=bool))
    index_by_pts = {pts: index for index, pts in enumerate(frame_pts)} if frame_pts else None
    skipper = NonReferenceSkipper(index_by_pts, positions_by_index) if index_by_pts is not None else None
    conversions = []
    with frame_converter() as converter:
        try:
            for packet in packets:
                if skipper is not None:
                    skipper.before(packet)
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as error:
                    result.bad_packets += 1
                    result.first_error = result.first_error or one_line(error)
                    continue
                for frame in decoded:
                    index = result.frames_seen if index_by_pts is None else index_by_pts.get(frame.pts)
                    if index is None:
                        result.pts_mismatch = True
                        return result
                    result.frames_seen = max(result.frames_seen, index + 1)
                    if index in positions_by_index:
                        keep = (frame, positions_by_index[index], preprocess, reformatter, result)
                        conversions.append(converter.submit(keep_frame, *keep) if converter else keep_frame(*keep))
                if result.frames_seen > last_index:
                    break
            for conversion in filter(None, conversions):
                conversion.result()  # its error, if any
        except av.error.FFmpegError as error:
            result.stopped_by = one_line(error)
        finally:
            if skipper is not None:
                skipper.restore()
    return result


def frame_converter():
    """A thread that converts the sampled frames while decoding goes on (both release the GIL), where this decoder
    has a core to spare; one thread, so that frames are converted in order with one swscale context. Else (in
    DataLoader workers that share the cores) nothing: frames are converted in line. A context manager."""
    if (os.cpu_count() or 1) // decoders_at_once >= 2:
        return ThreadPoolExecutor(max_workers=1)
    return contextlib.nullcontext()


def keep_frame(frame, positions: list, preprocess: Preprocess, reformatter, result: DecodedFrames) -> None:
    """Convert a sampled frame into its row of result.frames (and copy it to the rows that sample it again)."""
    first, *repeats = positions
    result.orientation = frame_to_array(frame, preprocess, reformatter, result.frames[first])
    result.corrupt += int(bool(getattr(frame, "is_corrupt", False)))
    result.frames[repeats] = result.frames[first]
    result.filled[positions] = True


# Decoder threading, from measurements on 2 cores with clips cut into one slice per frame as uploads are
# (docs/performance.md, tools/bench.py's threading rows): frame threads pay on large frames (854x480 and up) when
# the decoder has at least 2 cores to itself; on small frames and in DataLoader workers that share the cores they
# cost more than they gain, and slice threads (FFmpeg's default) amount to one thread.
FRAME_THREADS_FROM_PIXELS = 640 * 360
MAX_FRAME_THREADS = 4  # each frame thread holds a decoder context; more add latency for little gain
decoders_at_once = 1  # decoders running at once in this process's group: DataLoader workers set it (share_cores)


def share_cores(decoders: int, *_) -> None:
    """A DataLoader worker_init_fn: this process is one of `decoders` decoding at once, sharing the cores. It leaves
    Ctrl-C to the main process, which stops the workers and prints one line instead of a traceback per worker."""
    global decoders_at_once
    decoders_at_once = max(1, int(decoders))
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decoder_threading(width: int, height: int) -> tuple:
    """(thread_type, thread_count) for decoding frames of width x height: frame threads on large frames where this
    decoder has cores to itself, else slice threads (FFmpeg's default)."""
    cores = (os.cpu_count() or 1) // decoders_at_once
    if width * height >= FRAME_THREADS_FROM_PIXELS and cores >= 2:
        return "FRAME", min(cores, MAX_FRAME_THREADS)
    return "SLICE", 0


def set_decoder_threads(stream) -> None:
    """Set a video stream's decoder threading (decoder_threading) before its first packet is decoded. The frames
    are the same bit for bit whatever the threading."""
    stream.thread_type, stream.thread_count = decoder_threading(stream.codec_context.width,
                                                                stream.codec_context.height)


def decode_from_start(container, stream, path: Path, first_packet: tuple, frame_indices: list,
                      preprocess: Preprocess, frame_pts: list | None = None) -> DecodedFrames:
    """decode_sampled_frames from the stream's first packet: on the open container (whose decoder has not run yet)
    when it seeks back exactly, else on a freshly opened one. container=None: always a fresh one."""
    packets = None if container is None else demux_from_start(container, stream, first_packet)
    if packets is not None:
        set_decoder_threads(stream)
        return decode_sampled_frames(packets, frame_indices, preprocess, frame_pts)
    with open_video(path) as reopened:
        stream = reopened.streams[stream.index]
        set_decoder_threads(stream)
        return decode_sampled_frames(reopened.demux(stream), frame_indices, preprocess, frame_pts)


def choose_frame_indices(survey: StreamSurvey, num_frames: int, rng) -> tuple:
    """(frame_indices, how): by frame number when the frame rate is constant, by presentation time when not."""
    frame_times = survey.frame_times
    if len(frame_times) == survey.num_frames and not is_constant_rate(frame_times):
        return time_uniform_frame_indices(frame_times, survey.clip_end, num_frames, rng), "time-uniform"
    return segment_frame_indices(survey.num_frames, num_frames, rng), "frame-uniform"


def read_video(path, num_frames: int = 16, preprocess: Preprocess | None = None,
               jitter: bool = False, seed: int | None = None, levels: bool = False) -> tuple:
    """Sample num_frames frames covering the whole video uniformly, upright, preprocessed as X-CLIP's processor does.

    Frames: the middle frame of each of num_frames equal segments (with jitter, a random frame of each segment,
    drawn from seed); segments of equal duration when the frame rate varies. Returns (frames (F, 3, S, S)
    float32, info) (with levels, the uint8 levels before normalise_levels); raises VideoError (one line) on a
    bad file. The pixel aspect ratio is ignored, as in X-CLIP's training pipeline (decord)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    path = Path(path)
    preprocess = preprocess or Preprocess()
    rng = np.random.default_rng(seed) if jitter else None
    with open_video(path) as container:
        stream = pick_video_stream(container, path)
        survey = survey_stream(container, stream)
        if survey.num_frames == 0:
            raise VideoError(f"{path}: the video stream has no frames")
        frame_indices, sampling = choose_frame_indices(survey, num_frames, rng)
        notes = survey_notes(survey)
        decoded = decode_from_start(container, stream, path, survey.first_packet, frame_indices, preprocess,
                                    survey.frame_pts)
        if survey.frame_pts and (decoded.pts_mismatch or not decoded.filled.all()):
            # Timestamps that do not name the frames, or frames that do not decode: count frames as they come out
            # of a full decode instead, as the broken-file handling below expects.
            decoded = decode_from_start(None, stream, path, survey.first_packet, frame_indices, preprocess)
        if decoded.frames_seen == 0:
            raise VideoError(f"{path}: no decodable video frame ({decoded.failure()})")
        if not decoded.filled.all():
            notes.append(f"only {decoded.frames_seen} of {survey.num_frames} frames decode; sampled among those")
            frame_indices = segment_frame_indices(decoded.frames_seen, num_frames, rng)
            sampling, decoded = "frame-uniform", decode_decodable(stream, path, survey, frame_indices, preprocess)
    notes += decoded.notes()
    rotation, mirrored = describe_orientation(decoded.orientation)
    info = {"path": str(path), "frames_decoded": decoded.frames_seen, "frames_in_stream": survey.num_frames,
            "frame_indices": [int(index) for index in frame_indices], "rotation": rotation, "mirrored": mirrored,
            "shape": list(decoded.frames.shape), "sampling": sampling, "warnings": notes}
    return decoded.frames if levels else normalise_levels(decoded.frames, preprocess), info


def decode_decodable(stream, path: Path, survey: StreamSurvey, frame_indices: list,
                     preprocess: Preprocess) -> DecodedFrames:
    """Second pass over a stream whose end does not decode, sampling among the frames that did: rows the decoder
    still fails to fill repeat the last filled one."""
    decoded = decode_from_start(None, stream, path, survey.first_packet, frame_indices, preprocess)
    if not decoded.filled.any():
        raise VideoError(f"{path}: no decodable video frame on a second pass")
    return repeat_filled(decoded)  # a decoder that changed its mind


def repeat_filled(decoded: DecodedFrames) -> DecodedFrames:
    """Fill each row the decoder could not give with the nearest earlier decoded frame (the first one when there
    is none earlier)."""
    filled_positions = np.flatnonzero(decoded.filled)
    for position in np.flatnonzero(~decoded.filled):
        earlier = filled_positions[filled_positions < position]
        decoded.frames[position] = decoded.frames[earlier[-1] if len(earlier) else filled_positions[0]]
    return decoded


def video_windows(survey: StreamSurvey, rate, window_seconds: float, num_frames: int) -> list:
    """Cut a surveyed stream into windows of window_seconds (the last one may be shorter): per window
    (start, end, frame_indices), times in seconds from the first frame, num_frames frames sampled by time
    inside it. Streams without timestamps are timed by their frame rate (None when there is none)."""
    frame_times, clip_end = survey.frame_times, survey.clip_end
    if not frame_times:
        if not rate:
            return None
        frame_times = [index / float(rate) for index in range(survey.num_frames)]
        clip_end = survey.num_frames / float(rate)
    first = frame_times[0]
    duration = max(clip_end - first, 1e-6)
    count = max(1, math.ceil(duration / window_seconds - 1e-6))
    windows = []
    for window in range(count):
        start, end = window * window_seconds, min((window + 1) * window_seconds, duration)
        indices = time_uniform_frame_indices(frame_times, first + end, num_frames, clip_start=first + start)
        windows.append((start, end, indices))
    return windows


def read_video_windows(path, window_seconds: float, num_frames: int = 16, preprocess: Preprocess | None = None,
                       windows_per_pass: int = 0):
    """Yield the consecutive windows of window_seconds of a video, each as {"start", "end" (seconds from the
    first frame), "frames" (F, 3, S, S) float32, sampled by time inside the window as read_video
    samples a whole video, "warnings"}.

    Frames of windows_per_pass windows (0 = as many as fit in about 256 MB) come from one decoding pass;
    each further pass decodes from the start again. Raises VideoError (one line) on a bad file."""
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    path = Path(path)
    preprocess = preprocess or Preprocess()
    with open_video(path) as container:  # open while the windows are read: passes reopen it by stream index
        stream = pick_video_stream(container, path)
        survey = survey_stream(container, stream)
        if survey.num_frames == 0:
            raise VideoError(f"{path}: the video stream has no frames")
        windows = video_windows(survey, stream.average_rate or stream.guessed_rate, window_seconds, num_frames)
        if windows is None:
            raise VideoError(f"{path}: frames carry no timestamps and the stream no frame rate; cannot cut it "
                             f"into {window_seconds:g} s windows")
        frame_bytes = 3 * preprocess.image_size ** 2 * 5  # uint8 levels, then float32 frames
        windows_per_pass = windows_per_pass or max(1, 256 * 2 ** 20 // (num_frames * frame_bytes))
        notes = list(survey.warnings)
        for first in range(0, len(windows), windows_per_pass):
            group = windows[first:first + windows_per_pass]
            frame_indices = [index for _, _, indices in group for index in indices]
            decoded = decode_from_start(None, stream, path, survey.first_packet, frame_indices, preprocess)
            if not decoded.filled.any():
                raise VideoError(f"{path}: no decodable video frame ({decoded.failure()})")
            if not decoded.filled.all():  # the end does not decode: later windows show the last frame that did
                notes.append(f"only {decoded.frames_seen} of {survey.num_frames} frames decode; "
                             f"later windows repeat the last one")
                repeat_filled(decoded)
            frames = decoded.frames.reshape(len(group), num_frames, *decoded.frames.shape[1:])  # (W, F, 3, S, S)
            for (start, end, _), window_frames in zip(group, frames):
                yield {"start": start, "end": end, "frames": normalise_levels(window_frames, preprocess),
                       "warnings": notes}
                notes = []


# ----------------------------------------------------------------------------------------------------------------------
# Several samplings of a video, and a Dataset over video files

VIEW_SEED = 0  # base of every jittered view's seed; caches name it ("jit4s0") so that a change shows there


def view_seed(video_id: str, view: int, base_seed: int = VIEW_SEED) -> int:
    """Seed of one jittered view: a function of the video id, the view index and base_seed only, so every
    process, shard and run draws the same frames for it."""
    digest = hashlib.sha256(f"{base_seed}/{video_id}/{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def read_views(path, video_id: str, views: int, num_frames: int, preprocess: Preprocess,
               levels: bool = False) -> tuple:
    """Frames of `views` samplings of one video, (K, F, 3, S, S) float32 (uint8 with levels), and the first one's
    info.

    One view is the middle frame of every segment (what a cache with (D,) entries holds); K > 1 views
    each take a random frame of every segment, seeded by view_seed(video_id, view). Raises VideoError.
    """
    if views == 1:
        frames, info = read_video(path, num_frames=num_frames, preprocess=preprocess, levels=levels)
        return frames[None], info
    samples = [read_video(path, num_frames=num_frames, preprocess=preprocess, jitter=True,
                          seed=view_seed(video_id, view), levels=levels) for view in range(views)]
    return np.stack([frames for frames, _ in samples]), samples[0][1]  # (K, F, 3, S, S)


class VideoClips:
    """A map-style Dataset over (video_id, path) pairs for a torch DataLoader: each item is one video's views
    (K, F, 3, S, S) as uint8 levels (a quarter of float32's bytes through the workers' pipes; normalised on the
    device that encodes them), decoded in a worker, a bad video's error kept as text rather than raised, with its
    index and the seconds its decoding took."""

    def __init__(self, items, num_frames: int, preprocess: Preprocess, views: int = 1):
        self.items, self.num_frames, self.preprocess, self.views = items, num_frames, preprocess, views

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        video_id, path = self.items[index]
        started = time.perf_counter()
        sample = {"index": index, "video_id": video_id, "frames": None, "error": None, "warnings": []}
        try:
            sample["frames"], info = read_views(path, video_id, self.views, self.num_frames, self.preprocess,
                                                levels=True)
            sample["warnings"] = info.get("warnings", [])
        except VideoError as error:
            sample["error"] = str(error)
        sample["seconds"] = time.perf_counter() - started
        return sample


def collate_clips(samples: list) -> dict:
    """A DataLoader batch: the decodable clips stacked into frames, a tensor (B, K, F, 3, S, S) of the samples' dtype
    (None when there are none; a tensor, so that the DataLoader can pin it), the failures and warnings of the batch
    by video id, and every sample in order without its frames ("samples": index, video_id, error, warnings,
    seconds; the n-th one without an error is row n of frames)."""
    import torch  # the DataLoader's workers have it loaded already

    good = [sample for sample in samples if sample["frames"] is not None]
    return {"video_ids": [sample["video_id"] for sample in good],
            "frames": torch.from_numpy(np.stack([sample["frames"] for sample in good])) if good else None,
            "failures": [(sample["video_id"], sample["error"]) for sample in samples if sample["frames"] is None],
            "warnings": [(sample["video_id"], warning) for sample in samples for warning in sample["warnings"]],
            "samples": [{key: value for key, value in sample.items() if key != "frames"} for sample in samples]}


# ----------------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video_path", default=None, help="sample frames from this video and report what was read")
    add_data_arguments(parser, data_dir=None)
    parser.add_argument("--num_frames", type=frame_count, default=16, help="frames to sample from --video_path")
    parser.add_argument("--image_size", type=positive_int, default=224,
                        help="centre-crop size; the shortest edge is resized to it first (X-CLIP: 224)")
    parser.add_argument("--jitter", action="store_true", help="a random frame per segment instead of the middle one")
    parser.add_argument("--seed", type=count, default=None, help="seed for --jitter (default: unseeded)")
    parser.add_argument("--save", default=None, help="write the sampled (F, 3, S, S) float32 frames to this .npy")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if (args.data_dir is None and args.annotations is None) == (args.video_path is None):
        parser.error("pass one of --data_dir / --annotations (summarise a dataset) or --video_path (sample a video)")
    return args


def summarise_dataset(args) -> int:
    """--data_dir: a table (or JSON) of videos, captions and videos missing on disk, per split."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_dataset(args, check_videos=False)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    summary = dataset_summary(dataset, videos_not_on_disk(dataset))
    if args.json:
        print(json.dumps({"dataset": dataset.name, "root": str(dataset.root), "scheme": dataset.scheme,
                          "sources": [str(source) for source in dataset.sources], "splits": summary}, indent=2))
        return 0
    print(f"{dataset.name} in {dataset.root} ({dataset.scheme} split), captions from: {', '.join(dataset.sources)}")
    print(f"{'split':<6} {'videos':>8} {'captions':>9} {'missing on disk':>16}")
    for split, row in summary.items():
        print(f"{split:<6} {row['videos']:>8} {row['captions']:>9} {row['missing']:>16}")
    return 0


def sample_video(args) -> int:
    """--video_path: sample it, print frames decoded, indices, rotation, shape, warnings; optionally --save them."""
    preprocess = Preprocess(image_size=args.image_size, shortest_edge=args.image_size)
    frames, info = read_video(args.video_path, args.num_frames, preprocess, jitter=args.jitter, seed=args.seed)
    if args.save:
        try:
            save_array(args.save, frames)
        except OSError as error:
            raise UserError(f"{args.save}: cannot write the frames ({one_line(error)}); choose a writable path")
        info["saved_to"] = args.save
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"video            {info['path']}")
    print(f"frames decoded   {info['frames_decoded']} (stream has {info['frames_in_stream']})")
    print(f"frame indices    {info['frame_indices']} ({info['sampling']})")
    print(f"rotation         {info['rotation']} degrees clockwise{', then mirrored' if info['mirrored'] else ''}")
    print(f"output shape     {tuple(info['shape'])} float32")
    if args.save:
        print(f"saved to         {args.save}")
    for note in info["warnings"]:
        print(f"warning          {note}")
    return 0


def main(args) -> int:
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 are printed escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        return sample_video(args) if args.video_path else summarise_dataset(args)
    except UserError as error:
        return fail(error)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
