"""What every script shares: one-line errors, atomic file writes, the device, video extensions, defaults.

    from common import UserError, fail, write_json, resolve_device

Only the standard library is imported here, so that importing it costs nothing (`inference.py --help`
answers before torch is loaded).
"""
import glob
import json
import os
import sys
import warnings
from pathlib import Path

DEFAULT_XCLIP = "microsoft/xclip-base-patch32-16-frames"
# Files taken for videos when a folder is given; the order is the preference when one id has several.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")


def warning_line(message, category, filename, lineno, line=None) -> str:
    """Warnings on stderr as `warning: <message>`, one line, like errors (not Python's file:line: UserWarning)."""
    return f"warning: {message}\n"


warnings.formatwarning = warning_line


class UserError(Exception):
    """Input the user can fix: a bad file, flag or folder. str(error) is one line, "<what>: <problem>; <what to do>".

    Every script's main() catches it, prints it with fail() and returns 2; no traceback."""


def fail(error) -> int:
    """Print `error: <message>` on stderr, as every script reports bad input, and return the exit code 2."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2


def one_line(error) -> str:
    """An exception as one short line (an OSError's strerror; FFmpeg messages that repeat the file name, trimmed)."""
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())[:200]


def atomic_write(path, write, mode="wb") -> Path:
    """Call write(handle) on a temporary file next to path, flush it to disk, then os.replace it into place.

    A crash or a full disk leaves the previous file (or none), never half a file; the temporary file is
    removed on any failure. Returns path."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    encoding = None if "b" in mode else "utf-8"
    try:
        with open(temporary, mode, encoding=encoding) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text(path, text: str) -> Path:
    """Write UTF-8 text atomically, creating the folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda handle: handle.write(text), mode="w")


def write_json(path, payload, indent=2) -> Path:
    """Write JSON atomically (UTF-8, non-ASCII kept, final newline), creating the folder if needed."""
    return write_text(path, json.dumps(payload, indent=indent, ensure_ascii=False) + "\n")


def save_array(path, array) -> Path:
    """np.save atomically (the one writer of .npy files: cache entries and --save)."""
    import numpy as np  # numpy is light, but common.py keeps its imports to the standard library

    return atomic_write(path, lambda handle: np.save(handle, array))


def is_video_file(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def expand_video_paths(specs) -> list:
    """Files, folders (their videos, sorted) and glob patterns -> paths, in the order given.

    A spec that matches nothing is kept as it is, so that reading it reports the missing file; a folder
    without videos is kept too, and reported as a directory.
    """
    paths = []
    for spec in map(str, specs):
        if os.path.isdir(spec):
            videos = sorted(path for path in Path(spec).iterdir() if is_video_file(path))
            paths += videos or [Path(spec)]
        elif glob.has_magic(spec) and not os.path.exists(spec):
            paths += sorted(Path(path) for path in glob.glob(spec, recursive=True))
        else:
            paths.append(Path(spec))
    return paths


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when a GPU is there, else "cpu"; "cuda" without one is a UserError."""
    import torch  # here, not at the top: this module stays light

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    return name
