"""VATEX clips from YouTube: each clip's [start, end] window as an H.264 <videoID>.mp4, in parallel, resumable.

download_dataset.py --dataset vatex calls download_clips(). yt-dlp fetches each video (only the window when
ffmpeg is installed, which yt-dlp needs to cut; otherwise the whole video at no more than --max_height);
PyAV then cuts [start, end] and re-encodes it as H.264 at no more than max_height rows, written to a temporary
name and renamed when complete. A video that is gone (private, removed, blocked, age-gated, HTTP 403/404) is
recorded in failures.jsonl and not asked for again; transient errors are retried with backoff within a run,
and a later run retries them again.
"""
import errno
import json
import os
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from common import UserError, atomic_write, one_line, progress_bar

DEFAULT_YOUTUBE_URL = "https://www.youtube.com/watch?v={id}"
YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # YouTube ids are 11 of these; the mapping seam allows others
FAILURES = "failures.jsonl"
GIVE_UP_STREAK = 20  # this many clips in a row failing transiently: the address is blocked or down, stop the run
WORK_FOLDER = ".partial"  # yt-dlp's downloads in progress, one folder per clip; hidden from the readers
PERMANENT_STATUSES = {401, 403, 404, 410, 451}
# yt-dlp's messages for videos that will not come back; anything else (timeouts, 5xx, throttling, "confirm
# you're not a bot") is retried.
PERMANENT_PHRASES = ("private video", "video unavailable", "this video is unavailable", "has been removed",
                     "account associated with this video has been terminated", "copyright", "confirm your age",
                     "age-restricted", "inappropriate for some users", "not available in your country",
                     "blocked it in your country", "members-only", "join this channel", "unsupported url",
                     "is not a valid url", "this live event")


class ClipError(Exception):
    """A clip that cannot be made from what was fetched (undecodable, or the window holds no frame)."""


class Stopped(BaseException):
    """Raised inside workers (also from yt-dlp's progress hook) when the run is interrupted."""


@dataclass(frozen=True)
class Clip:
    video_id: str  # <youtube id>_<start>_<end>, as VATEX names it
    youtube_id: str
    start: float
    end: float


def parse_clip(video_id: str):
    """A VATEX videoID -> Clip, or (None, why) when it is not `<youtube id>_<start>_<end>` with a safe id."""
    match = re.fullmatch(r"(.+)_(\d+)_(\d+)", video_id)
    if not match:
        return None, "videoID is not <youtube id>_<start>_<end>"
    youtube_id, start, end = match.group(1), int(match.group(2)), int(match.group(3))
    if not YOUTUBE_ID.fullmatch(youtube_id):
        return None, "not a YouTube id (letters, digits, '-' and '_' only)"
    if end <= start:
        return None, f"the window ends ({end} s) before it starts ({start} s)"
    return Clip(video_id, youtube_id, float(start), float(end)), None


@dataclass
class Settings:
    """How clips are fetched: the address template, size, retries, and what download_dataset.py's flags say."""
    out_dir: Path
    youtube_url: str = DEFAULT_YOUTUBE_URL
    max_height: int = 360
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 60.0
    fetch_window: bool = True  # ask yt-dlp for the window alone (only happens when ffmpeg is installed)


class _Silent:
    """yt-dlp logger that prints nothing: errors reach us as exceptions and are summarised."""

    def debug(self, message):
        pass

    info = warning = error = debug


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def yt_dlp_or_error():
    """The yt_dlp module, or UserError saying how to install it."""
    try:
        import yt_dlp
    except ImportError:
        raise UserError("--dataset vatex needs yt-dlp to fetch the clips: pip install yt-dlp "
                        "(or pip install -r requirements-extras.txt)") from None
    return yt_dlp


def classify(error) -> tuple:
    """(permanent, reason) of a yt-dlp DownloadError. A full disk is not a clip's failure: OSError(ENOSPC)."""
    from yt_dlp.networking.exceptions import HTTPError

    cause = error.exc_info[1] if getattr(error, "exc_info", None) else None
    reason = re.sub(r"^ERROR:\s*", "", one_line(error))
    if "no space left on device" in reason.lower():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if isinstance(cause, HTTPError):  # other 4xx are the request's fault and final too; 408 and 429 are not
        status = cause.status
        return status in PERMANENT_STATUSES or (400 <= status < 500 and status not in (408, 429)), reason
    return any(phrase in reason.lower() for phrase in PERMANENT_PHRASES), reason


def fetch_video(clip: Clip, settings: Settings, work: Path, stop: threading.Event) -> tuple:
    """Download clip's video (or only its window) into work; returns (path, where the window starts in it)."""
    import yt_dlp

    def hook(status):
        if stop.is_set():
            raise Stopped()

    height = settings.max_height
    options = {
        "outtmpl": str(work / "source.%(ext)s"),
        # Video only (the clips keep no audio), H.264 first, at most max_height rows; one file, so no merging.
        "format": f"bv*[height<=?{height}][vcodec^=avc1]/bv*[height<=?{height}]/b[height<=?{height}]/wv*/w",
        "quiet": True, "no_warnings": True, "noprogress": True, "logger": _Silent(), "noplaylist": True,
        "retries": 0, "extractor_retries": 0, "fragment_retries": 0,  # retried here, with backoff
        "socket_timeout": settings.timeout, "continuedl": True, "progress_hooks": [hook],
        "cachedir": False,
    }
    windowed = settings.fetch_window and ffmpeg_available()
    if windowed:
        options["download_ranges"] = yt_dlp.utils.download_range_func(None, [(clip.start, clip.end)])
    with yt_dlp.YoutubeDL(options) as ydl:
        info = ydl.extract_info(settings.youtube_url.format(id=clip.youtube_id), download=True)
    downloads = (info or {}).get("requested_downloads") or [{}]
    path = downloads[0].get("filepath")
    if not path or not Path(path).is_file():
        raise ClipError("yt-dlp reported no downloaded file")
    return Path(path), 0.0 if windowed else clip.start


def h264_encoder() -> str:
    for name in ("libx264", "h264", "libopenh264"):
        if name in av.codecs_available:
            return name
    raise UserError("this PyAV build has no H.264 encoder; install PyAV from its wheels (pip install av)")


def even(number: float) -> int:
    return max(2, int(round(number / 2)) * 2)


def cut_clip(source: Path, dest: Path, start: float, end: float, max_height: int, stop=None) -> int:
    """Re-encode the frames of source shown in [start, end) seconds as H.264 (yuv420p, constant frame rate, no
    audio, at most max_height rows) to dest, atomically; returns the frame count. ClipError when source cannot be
    decoded or the window holds no frame."""
    encoder = h264_encoder()

    def write(handle):
        written = 0
        with av.open(str(source)) as container, av.open(handle, mode="w", format="mp4") as output:
            if not container.streams.video:
                raise ClipError("no video stream")
            stream = container.streams.video[0]
            offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            if start > 0:
                container.seek(int((start + offset) / stream.time_base), stream=stream)  # the keyframe before
            rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
            frame_period = 1 / rate
            encoded = None
            for frame in container.decode(stream):
                if stop is not None and stop.is_set():
                    raise Stopped()
                if frame.time is None:
                    continue
                seconds = frame.time - offset
                if seconds < start:
                    continue
                if seconds >= end:
                    break
                if encoded is None:
                    height = min(max_height, frame.height)
                    encoded = output.add_stream(encoder, rate=rate, options={"crf": "23", "preset": "veryfast"}
                                                if encoder == "libx264" else {})
                    encoded.height, encoded.width = even(height), even(frame.width * height / frame.height)
                    encoded.pix_fmt, encoded.codec_context.time_base = "yuv420p", frame_period
                picture = frame.reformat(width=encoded.width, height=encoded.height, format="yuv420p")
                picture.pts, picture.time_base = written, frame_period  # constant frame rate from 0
                for packet in encoded.encode(picture):
                    output.mux(packet)
                written += 1
            if encoded is None:
                raise ClipError(f"no frame in the window {start:g}-{end:g} s (the video is shorter)")
            for packet in encoded.encode():
                output.mux(packet)
        return written

    frames = []
    try:
        atomic_write(dest, lambda handle: frames.append(write(handle)))
    except av.error.FFmpegError as error:
        raise ClipError(f"cannot decode or encode it ({one_line(error)})") from None
    return frames[0]


def fetch_clip(clip: Clip, settings: Settings, stop: threading.Event) -> tuple:
    """Fetch and cut one clip, retrying transient errors with backoff. Returns ("done", None) or
    ("failed", {"id", "reason", "permanent"})."""
    import yt_dlp

    dest = settings.out_dir / f"{clip.video_id}.mp4"
    work = settings.out_dir / WORK_FOLDER / clip.video_id
    work.mkdir(parents=True, exist_ok=True)
    for attempt in range(settings.retries + 1):
        if attempt:  # the wait doubles from backoff up to max_backoff; Ctrl-C ends it at once
            if stop.wait(min(settings.max_backoff, settings.backoff * 2 ** (attempt - 1))):
                raise Stopped()
        try:
            source, window_start = fetch_video(clip, settings, work, stop)
            cut_clip(source, dest, window_start, window_start + clip.end - clip.start, settings.max_height, stop)
        except yt_dlp.utils.DownloadError as error:
            permanent, reason = classify(error)
        except ClipError as error:
            permanent, reason = True, str(error)
        else:
            shutil.rmtree(work, ignore_errors=True)
            return "done", None
        if permanent:
            shutil.rmtree(work, ignore_errors=True)
            return "failed", {"id": clip.video_id, "reason": reason, "permanent": True}
    # Kept: the partial download resumes on the next run.
    return "failed", {"id": clip.video_id, "reason": f"{reason} (after {settings.retries} retries)", "permanent": False}


def read_failures(path: Path) -> dict:
    """failures.jsonl -> {video id: its last record}; lines cut short by a killed run are ignored."""
    records = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                records[record["id"]] = record
    return records


def record_failure(path: Path, record: dict) -> None:
    """Append one record to failures.jsonl (flushed, so a killed run keeps what it learnt)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def present_clips(out_dir: Path) -> set:
    """The video ids with a finished <id>.mp4 in out_dir."""
    return {name[:-4] for name in os.listdir(out_dir) if name.endswith(".mp4") and not name.startswith(".")}


def download_clips(video_ids, settings: Settings, workers: int = 4, retry_failed: bool = False,
                   progress: bool = True) -> dict:
    """Fetch every clip of video_ids not yet in settings.out_dir; returns the counts {done, present,
    known_failed, failed, transient} of this run. Failures are appended to out_dir/failures.jsonl."""
    yt_dlp_or_error()
    out_dir = Path(settings.out_dir)
    failures_path = out_dir / FAILURES
    known = read_failures(failures_path)
    present = present_clips(out_dir)
    counts = {"done": 0, "present": 0, "known_failed": 0, "failed": 0, "transient": 0}
    todo = []
    for video_id in dict.fromkeys(video_ids):
        if video_id in present:
            counts["present"] += 1
        elif known.get(video_id, {}).get("permanent") and not retry_failed:
            counts["known_failed"] += 1
        else:
            clip, problem = parse_clip(video_id)
            if clip is None:
                record_failure(failures_path, {"id": video_id, "reason": problem, "permanent": True})
                counts["failed"] += 1
            else:
                todo.append(clip)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            progress_bar(total=len(todo), unit="clip", desc="vatex clips", disable=not progress) as bar:
        futures = [pool.submit(fetch_clip, clip, settings, stop) for clip in todo]
        streak = 0  # clips in a row that failed transiently
        try:
            for future in as_completed(futures):
                outcome, record = future.result()
                if outcome == "done":
                    counts["done"] += 1
                else:
                    record_failure(failures_path, record)
                    counts["failed" if record["permanent"] else "transient"] += 1
                streak = streak + 1 if record is not None and not record["permanent"] else 0
                if streak >= GIVE_UP_STREAK:
                    raise UserError(f"the last {streak} clips all failed after retries (the last: {record['reason']});"
                                    f" the address may be blocking or down: wait and run again (finished clips "
                                    f"are kept; {counts['done']} done in this run)")
                bar.update(1)
                bar.set_postfix(failed=counts["failed"] + counts["transient"], refresh=False)
        except BaseException:
            stop.set()  # workers stop at their next chunk; the ones waiting to start never do
            for future in futures:
                future.cancel()
            raise
    work = out_dir / WORK_FOLDER
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    return counts
