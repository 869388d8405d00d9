"""What every script shares: one-line errors, atomic file writes, the device, video extensions, defaults.

    from common import UserError, fail, write_json, resolve_device

Only the standard library is imported here, so that importing it costs nothing (`inference.py --help`
answers before torch is loaded).
"""
import contextlib
import glob
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

DEFAULT_XCLIP = "microsoft/xclip-base-patch32-16-frames"
# Files taken for videos when a folder is given; the order is the preference when one id has several.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")


def warning_line(message, category, filename, lineno, line=None) -> str:
    """Warnings on stderr as `warning: <message>`, one line, like errors (not Python's file:line: UserWarning)."""
    return f"warning: {message}\n"


def use_warning_lines() -> None:
    """Print this process's warnings as warning_line does. Each script's main() calls it: importing this module
    changes nothing."""
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


@contextlib.contextmanager
def temporary_path(path, suffixes=("",)):
    """For a library that writes a file or a folder itself (PyAV's videos, sentencepiece, save_pretrained): yields a
    temporary name next to path (with path's extension, which some libraries read the format from). When the block
    ends without an error, what was written there is os.replace'd to path (a folder's files into path's folder);
    on any failure it is removed. suffixes: the library writes one file per suffix from the one name (sentencepiece:
    prefix.vocab and prefix.model), each moved to path + suffix in that order."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    pairs = [(Path(f"{temporary}{suffix}"), Path(f"{path}{suffix}")) for suffix in suffixes]
    try:
        yield temporary
        for written, final in pairs:
            if written.is_dir():
                final.mkdir(parents=True, exist_ok=True)
                for entry in sorted(written.iterdir()):
                    os.replace(entry, final / entry.name)
            else:
                os.replace(written, final)
    finally:
        for written, _ in pairs:
            if written.is_dir():
                shutil.rmtree(written, ignore_errors=True)
            else:
                written.unlink(missing_ok=True)


def write_text(path, text: str) -> Path:
    """Write UTF-8 text atomically, creating the folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda handle: handle.write(text), mode="w")


def write_json(path, payload, indent=2) -> Path:
    """Write JSON atomically (UTF-8, non-ASCII kept, final newline), creating the folder if needed."""
    return write_text(path, json.dumps(payload, indent=indent, ensure_ascii=False) + "\n")


def check_writable(path, flag: str) -> None:
    """UserError now, before the long work, when an output file cannot be written later: a folder stands in its
    place, or its folder cannot be made or written. An empty path (the output not asked for) passes."""
    if not path:
        return
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; pass a file path")
    folder = path.parent
    existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder; pass a writable path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot make its folder ({one_line(error)}); pass a writable path") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"{flag} {path}: {folder} is not writable; pass a writable path")


def same_file(first, second) -> bool:
    """True when two paths name one file: the same resolved path (.., links followed), or, when both exist, the
    same inode (a hard link)."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def check_outputs(outputs, inputs=()) -> None:
    """UserError now, before any work, when an output would replace an input of the same run or another output of
    it. outputs and inputs are (flag, path) pairs; empty paths (not asked for) are left out. A folder among the
    inputs is one read whole (an exported model, a features folder): an existing file inside it is an input too."""
    outputs = [(flag, Path(path)) for flag, path in outputs if path]
    inputs = [(flag, Path(path)) for flag, path in inputs if path]
    for index, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[:index]:
            if same_file(path, other):
                raise UserError(f"{flag} {path}: the same file as {other_flag} {other}; pass two different paths")
        for input_flag, source in inputs:
            resolved = Path(os.path.realpath(path))  # what the path will be once its folders are made
            inside = source.is_dir() and resolved.exists() and resolved.is_relative_to(os.path.realpath(source))
            if same_file(path, source) or inside:
                raise UserError(f"{flag} {path}: would replace {'a file of ' if inside else ''}{input_flag} "
                                f"{source}, an input of this run; pass another path")


def check_output_folder(folder, flag: str, ours, overwrite: bool = False, overwrite_flag: str | None = "--overwrite"):
    """UserError when folder holds anything that ours(entry) says this script did not write (another model, a
    dataset, anyone's files), unless overwrite; a missing or empty folder, and atomic_write's temporary files, pass.
    Nothing is deleted either way: the script only writes its own file names. overwrite_flag None: the script has
    no such flag."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    foreign = sorted(entry.name for entry in folder.iterdir()
                     if not ours(entry) and not re.fullmatch(r"\..+\.tmp\d+", entry.name))  # atomic_write's
    if foreign and not overwrite:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        anyway = f", or {overwrite_flag} to write into it anyway" if overwrite_flag else ""
        raise UserError(f"{flag} {folder}: holds files this script did not write ({', '.join(foreign[:3])}{more}); "
                        f"pass an empty or new folder{anyway}")


def interrupted(what_is_kept: str) -> int:
    """Ctrl-C: one line saying what was kept and what to rerun (no traceback), and the exit code 130."""
    fail(f"interrupted; {what_is_kept}")
    return 130


# Where stderr is not a terminal (a log file, a pipe, a cluster job's output), a progress bar writes a plain line
# at most this often instead of redrawing itself many times a second; a bar that ends sooner writes nothing.
LOG_INTERVAL_SECONDS = 30.0


class LogLines:
    """A file for tqdm that turns its redraws (carriage returns, cursor moves, padding) into plain lines."""

    def __init__(self, stream):
        self.stream, self.last_count = stream, None

    def write(self, text: str) -> None:
        for part in re.split(r"[\r\n]|\x1b\[A", text):
            count = part.split("[")[0]  # "desc: 40%|###   | 4/10 ": the same count again is the closing redraw
            if part.strip() and count != self.last_count:
                self.stream.write(part.rstrip() + "\n")
                self.last_count = count

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, log_interval: float = LOG_INTERVAL_SECONDS, **options):
    """A tqdm progress bar (options as tqdm's) that redraws on a terminal; where stderr is not one, it writes one
    plain line every log_interval seconds with the same figures (postfix included), and a last one when it ends
    (none for a bar that ends sooner). Every progress bar of the scripts and tools is made here."""
    from tqdm import tqdm  # here, not at the top: this module stays light

    stream = options.pop("file", None) or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(iterable, file=stream, **options)

    class LogBar(tqdm):
        """A new postfix or description shows in the next line, instead of a line of its own."""

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_description(self, desc=None, refresh=True):
            super().set_description(desc, refresh=False)

    options.update(file=LogLines(stream), mininterval=log_interval, delay=log_interval, leave=True,
                   dynamic_ncols=False, ncols=100, ascii=True)
    return LogBar(iterable, **options)


def save_array(path, array) -> Path:
    """np.save atomically (the one writer of .npy files: cache entries and --save)."""
    import numpy as np  # numpy is light, but common.py keeps its imports to the standard library

    return atomic_write(path, lambda handle: np.save(handle, array))


def load_npy(path):
    """A .npy file's array, its header read and checked first: a UserError naming the file (callers add what to do)
    when it is not a .npy, holds objects (never unpickled), or claims a shape its size cannot hold. So a tiny file
    that claims (10**6, 10**6) costs nothing, and nothing larger than the file is ever allocated."""
    import numpy as np

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"format version {version} is not one numpy.save writes here")
            shape, fortran_order, dtype = read_header[version](handle)
            data_bytes = os.fstat(handle.fileno()).st_size - handle.tell()
            check_npy_header(path, shape, dtype, data_bytes)
            count = data_bytes // dtype.itemsize if dtype.itemsize else 0
            array = np.fromfile(handle, dtype=dtype, count=count)  # the data, read once from the same handle
    except (OSError, ValueError, EOFError, SyntaxError) as error:
        raise UserError(f"{path}: not a readable .npy file ({one_line(error)})") from None
    return array.reshape(shape, order="F" if fortran_order else "C")


def check_npy_header(path, shape, dtype, data_bytes: int) -> None:
    """UserError unless a .npy header names numbers (no objects, never unpickled) in a shape its data can hold."""
    if dtype.hasobject or dtype.kind not in "biuf":
        raise UserError(f"{path}: holds {dtype} values, not numbers")
    expected = dtype.itemsize
    for length in shape:
        expected *= length
    if data_bytes != expected:
        raise UserError(f"{path}: its header claims a {dtype} array of shape {shape} ({expected:,} bytes), but the "
                        f"file holds {data_bytes:,} bytes of data (damaged or edited)")


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
            paths += sorted(Path(path) for path in glob.glob(spec, recursive=True)) or [Path(spec)]
        else:
            paths.append(Path(spec))
    return paths


# A Hugging Face Hub repo id: owner/name in the Hub's name characters, or with bare_name also an owner-less name
# (older models such as bert-base-uncased). Anything else (./x, a/b/c, /abs, ../x) is a local path.
HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


def is_hub_id(text, bare_name: bool = False) -> bool:
    text = str(text)
    return bool(HUB_ID.fullmatch(text)) and ".." not in text and (bare_name or text.count("/") == 1)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (batch sizes, beams, epochs, layer sizes)."""
    return bounded(int, text, low=1)


def count(text: str) -> int:
    """argparse type: an integer of at least 0 (workers, patience, warm-up steps)."""
    return bounded(int, text, low=0)


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (learning rates, temperatures, length penalties)."""
    return bounded(float, text, low=0.0, open_low=True)


def non_negative(text: str) -> float:
    """argparse type: a finite number of at least 0 (0 often turns a feature off: --grad_clip, --segment_seconds)."""
    return bounded(float, text, low=0.0)


def share(text: str) -> float:
    """argparse type: a number above 0 and at most 1 (--top_p)."""
    return bounded(float, text, low=0.0, high=1.0, open_low=True)


def split_share(text: str) -> float:
    """argparse type: a split's share of the videos, from 0 to 1."""
    return bounded(float, text, low=0.0, high=1.0)


def frame_count(text: str) -> int:
    """argparse type: frames to sample from a video, 1 to 1024 (X-CLIP takes 8 or 16)."""
    return bounded(int, text, low=1, high=1024)


def fraction(text: str) -> float:
    """argparse type: a number from 0 up to (not including) 1 (dropout, label smoothing, a split's share)."""
    return bounded(float, text, low=0.0, high=1.0, open_high=True)


def bounded(kind, text, low=None, high=None, open_low=False, open_high=False):
    """text as kind, or argparse's error (usage, one line naming the flag, exit 2) when it is out of range."""
    import argparse
    import math

    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high or (kind is float and not math.isfinite(value)):
        limits = [f"{'above' if open_low else 'at least'} {low:g}" if low is not None else "",
                  f"{'below' if open_high else 'at most'} {high:g}" if high is not None else ""]
        what = "an integer" if kind is int else "a finite number"
        raise argparse.ArgumentTypeError(f"{text} is out of range: pass {what} "
                                         f"{' and '.join(limit for limit in limits if limit)}")
    return value


def default_workers(environ=None, most: int = 32) -> int:
    """DataLoader workers decoding videos when --num_workers is left out: one per core this process may use,
    the cores shared among the processes torchrun started on this machine (LOCAL_WORLD_SIZE); at most `most`."""
    environ = os.environ if environ is None else environ
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local_processes = environ.get("LOCAL_WORLD_SIZE", "1")
    local_processes = int(local_processes) if local_processes.isdigit() and int(local_processes) > 0 else 1
    return max(1, min(most, cores // local_processes))


def set_device(device) -> None:
    """Make device (a resolve_device name) the current CUDA device of this process, so that what runs on "cuda"
    without an index runs there too; nothing on the CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)


def gpu_has_native_bf16(device) -> bool:
    """Whether this GPU computes in bf16 natively (Ampere and later); older ones (V100, T4) only emulate it, slowly."""
    import torch

    with torch.cuda.device(device):
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.3 counts no emulation
            return torch.cuda.is_bf16_supported()


def resolve_device(name: str, environ=None) -> str:
    """The device a process runs on, from --device and, under torchrun, LOCAL_RANK: the one choice that encode.py,
    train.py, evaluate.py, inference.py and demo.py share.

    "auto" is a GPU when there is one, else "cpu"; "cuda" is the first GPU, "cuda:N" the N-th. Under torchrun
    (LOCAL_RANK in environ, default os.environ) "auto" and "cuda" become cuda:LOCAL_RANK, one GPU per process.
    A bad name, a GPU that is not there, or more processes on a machine than it has GPUs is a UserError."""
    import torch  # here, not at the top: this module stays light

    environ = os.environ if environ is None else environ
    name = str(name)
    match = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", name)
    if match is None:
        raise UserError(f"--device {name}: pass auto, cpu, cuda or cuda:N")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    gpus = torch.cuda.device_count()
    local_rank = environ.get("LOCAL_RANK")
    if local_rank is not None and not local_rank.isdigit():
        raise UserError(f"LOCAL_RANK={local_rank}: not a process number; start the script with torchrun or unset it")
    if local_rank is not None:
        if match.group(1) is not None:
            raise UserError(f"--device {name} under torchrun: pass --device cuda or auto, and each process takes "
                            "the GPU of its LOCAL_RANK (choose GPUs with CUDA_VISIBLE_DEVICES)")
        index = int(local_rank)
        if index >= gpus:
            raise UserError(f"torchrun started more processes on this machine than it has GPUs ({gpus}; this is "
                            f"LOCAL_RANK {index}); pass --nproc_per_node {gpus} or fewer")
        return f"cuda:{index}"
    index = int(match.group(1) or 0)
    if index >= gpus:
        raise UserError(f"--device {name}: this machine has {gpus} GPU{'s' if gpus != 1 else ''} (cuda:0 to "
                        f"cuda:{gpus - 1}); pass one of them or --device cpu")
    return name if match.group(1) is not None else "cuda"
