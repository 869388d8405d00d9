"""Download a dataset into --out_dir: MSR-VTT (default), MSVD or VATEX, resumably.

    python download_dataset.py --out_dir data                        # data/MSRVTT/ (MSRVTT.zip)
    python download_dataset.py --dataset msvd --out_dir data         # data/msvd/ (YouTubeClips.tar, captions)
    python download_dataset.py --dataset vatex --out_dir data        # data/vatex/ (annotations, clips: yt-dlp)

Files are downloaded to <name>.part, resumed after an interruption (HTTP Range), retried with backoff
on transient failures, checked against free disk space first and the server's size at the end, and
renamed into place only when complete. Archives (MSRVTT.zip, YouTubeClips.tar) are unpacked safely:
members that would land outside --out_dir (../, absolute paths, drive letters), links and devices
are refused, files already unpacked are skipped, and a marker keeps a finished job from being redone.
VATEX clips are cut from YouTube by vatex_clips.py (see docs/datasets.md). Offline, synthetic.py
writes a synthetic stand-in in MSR-VTT's layout.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path


from common import (UserError, atomic_write, count, fail, non_negative, one_line, positive_float, positive_int,
                    progress_bar, use_warning_lines, write_text)

DEFAULT_URL = "https://www.robots.ox.ac.uk/~maxbain/frozen-in-time/data/MSRVTT.zip"
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}  # worth another try; other HTTP errors are final
CHUNK_SIZE = 1 << 20
USER_AGENT = "msrvtt-captioning-download/1.0 (python urllib)"


class DownloadError(UserError):
    """The download or unpacking cannot go on; the message is one line saying what to do."""


def gigabytes(num_bytes):
    return f"{num_bytes / 1e9:.2f} GB"


def free_bytes(folder):
    """Free space on the disk holding folder (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(folder, needed_bytes, what):
    """Raise DownloadError when folder's disk has less than needed_bytes free."""
    available = free_bytes(folder)
    if available < needed_bytes:
        raise DownloadError(f"{folder}: {what} needs {gigabytes(needed_bytes)} free but only "
                            f"{gigabytes(available)} is available; free some space or pass another --out_dir")


def parse_content_range(header):
    """'bytes 100-199/1000' -> (100, 199, 1000); 'bytes */1000' -> (None, None, 1000); total None if '*'."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*", header or "")
    if not match:
        return None
    start, end, total = match.groups()
    return (int(start) if start else None, int(end) if end else None, None if total == "*" else int(total))


def part_path(dest):
    """Where the incomplete download of dest is kept."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _open(url, offset, timeout):
    """GET url from byte offset (a Range request when offset > 0); returns the response."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


class Retries:
    """Attempts in a row that brought no byte, and the growing wait before the next one."""

    def __init__(self, retries, backoff, max_backoff):
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.failures, self.last_problem = 0, ""

    def failed(self, problem=None) -> None:
        self.failures += 1
        self.last_problem = problem or self.last_problem

    def wait(self, url, part, offset) -> None:
        """Sleep before a retry (the wait doubles from backoff up to max_backoff); give up after `retries`."""
        if not self.failures:
            return
        if self.failures > self.retries:
            kept = f"{part} keeps {offset} bytes, run again to resume" if offset else "run again to retry"
            raise DownloadError(f"{url}: giving up after {self.retries} retries ({self.last_problem}); {kept}")
        time.sleep(min(self.max_backoff, self.backoff * 2 ** (self.failures - 1)))


@dataclass(frozen=True)
class RetryPolicy:
    """How long a download keeps trying: retries consecutive failed attempts (no byte received) before giving up,
    the wait doubling from backoff seconds up to max_backoff; timeout seconds for the server to answer."""
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 60.0


def download(url, dest, policy: RetryPolicy = RetryPolicy(), chunk_size=CHUNK_SIZE, extra_space_factor=0.0,
             progress=True):
    """Download url to dest, resuming from dest.part; returns dest. An existing dest counts as complete.

    policy: retries, their waits and the timeout (RetryPolicy). extra_space_factor: also require this multiple
    of the full size free (1.0 when the zip will be unpacked next to itself). Raises DownloadError;
    the .part file is kept so that the next run resumes.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    expected_total = None  # the file size the server first announced
    attempts = Retries(policy.retries, policy.backoff, policy.max_backoff)
    while True:
        offset = part.stat().st_size if part.exists() else 0
        attempts.wait(url, part, offset)
        try:
            response = _open(url, offset, policy.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 416 and offset:  # nothing left past offset: complete, or the server's file is smaller
                return complete_after_416(error, url, part, dest, offset, expected_total)
            if error.code not in RETRY_STATUSES:
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}; check --url") from None
            attempts.failed(f"HTTP {error.code} {error.reason}")
            continue
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            attempts.failed(f"{type(error).__name__}: {getattr(error, 'reason', error)}")
            continue
        with response:
            total, offset, mode = resumed_range(response, url, part, offset)
            if expected_total is not None and total is not None and total != expected_total:
                raise DownloadError(f"{url}: the server's file size changed from {expected_total} to {total} "
                                    f"bytes between requests; delete {part} to start over")
            expected_total = total if total is not None else expected_total
            if total is not None:
                if offset > total:
                    raise DownloadError(f"{part}: holds {offset} bytes but the server's file has {total}; "
                                        f"delete it to start over")
                check_free_space(dest.parent, (total - offset) + extra_space_factor * total,
                                 f"downloading {dest.name} ({gigabytes(total)})")
            received, problem = receive(response, part, mode, total, offset, chunk_size, dest.name, progress)
        size = part.stat().st_size
        if total is None or size == total:
            if total is None and not received:  # no length, no bytes: nothing to trust
                attempts.failed()
                continue
            os.replace(part, dest)
            return dest
        if size > total:
            raise DownloadError(f"{part}: has {size} bytes but the server announced {total}; delete it to start over")
        # Short: the connection dropped. Progress resets the failure count, so a slow but moving
        # download is never abandoned; attempts that bring nothing are bounded by `retries`.
        attempts.failures = 0 if received else attempts.failures + 1
        attempts.last_problem = f"stopped at {size} of {total} bytes ({problem})"


def complete_after_416(error, url, part, dest, offset, expected_total):
    """A 416 (range not satisfiable) at offset: the .part is complete when the server's file has exactly offset
    bytes (it is renamed to dest); otherwise the server's file is smaller and the download cannot resume."""
    content_range = parse_content_range(error.headers.get("Content-Range"))
    total = content_range[2] if content_range else None
    if total == offset and expected_total in (None, total):
        os.replace(part, dest)
        return dest
    raise DownloadError(f"{url}: server refused to resume at byte {offset} (its file has "
                        f"{total if total is not None else 'an unknown number of'} bytes); delete {part} to start over")


def resumed_range(response, url, part, offset):
    """(total size or None, offset the body starts at, file mode) of a response: 206 continues the .part at
    offset; 200 starts over from zero (a server that ignores Range)."""
    if response.status == 206:
        content_range = parse_content_range(response.headers.get("Content-Range"))
        if content_range is None or content_range[0] != offset:
            raise DownloadError(f"{url}: asked for bytes from {offset} but the server sent "
                                f"{response.headers.get('Content-Range')!r}; delete {part} to start over")
        return content_range[2], offset, "ab"
    if response.status == 200:
        if offset:
            print(f"warning: {url}: server does not resume downloads; restarting from zero", file=sys.stderr)
        length = response.headers.get("Content-Length")
        return (int(length) if length and length.isdigit() else None), 0, "wb"
    raise DownloadError(f"{url}: unexpected HTTP {response.status}; check --url")


def receive(response, part, mode, total, offset, chunk_size, name, progress):
    """Append the response body to part (or start it, mode "wb"), with a progress bar. Returns (bytes received,
    why it stopped: the connection's error, or "connection closed early")."""
    received = 0
    with open(part, mode) as handle, progress_bar(total=total, initial=offset, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=name, disable=not progress) as bar:
        while True:
            try:
                chunk = response.read(chunk_size)
            except (http.client.HTTPException, OSError) as error:  # connection dropped mid-body
                return received, f"{type(error).__name__}: {error}"
            if not chunk:
                break
            handle.write(chunk)  # a full disk is not the connection's fault: raised, not retried
            received += len(chunk)
            bar.update(len(chunk))
    return received, "connection closed early"


def member_problem(info):
    """Why a zip member must not be unpacked ('symlink', 'absolute path', ...), or None when it is safe."""
    if ((info.external_attr >> 16) & 0o170000) == 0o120000:
        return "symlink"
    return name_problem(info.filename)


def name_problem(name):
    """Why an archive member's name must not be unpacked (absolute, '..', empty), or None when it is safe."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "path escapes the target folder (..)"
    if all(part in ("", ".") for part in parts):
        return "empty name"
    return None


def extraction_marker(zip_path, out_dir):
    """The file written after a complete extraction of zip_path into out_dir."""
    return Path(out_dir) / f".{Path(zip_path).name}.extracted"


def extraction_stamp(archive_path):
    """What a marker records of the archive it was unpacked from (the key is "zip" for every archive)."""
    return {"zip": Path(archive_path).name, "size": Path(archive_path).stat().st_size}


def finished(marker, stamp):
    """Whether marker records a complete extraction of the archive stamp describes. An unreadable marker does
    not: the archive is unpacked again (files already there are skipped)."""
    try:
        return marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in stamp} == stamp
    except ValueError:
        return False


def extract_zip(zip_path, out_dir, progress=True):
    """Unpack zip_path into out_dir safely; returns {"extracted", "skipped", "refused": [(name, why)]}.

    Files already there with the right size are skipped; each file is written to a temporary name
    and renamed into place; unsafe members are refused (listed on stderr) and nothing is written
    outside out_dir. A marker records a finished extraction so that a second call does nothing.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker, stamp = extraction_marker(zip_path, out_dir), extraction_stamp(zip_path)
    if finished(marker, stamp):
        return {"extracted": 0, "skipped": "all", "refused": []}
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DownloadError(f"{zip_path}: not a readable zip ({error}); delete it and run again") from None
    with archive:
        todo, refused, skipped = plan_extraction(archive, out_dir.resolve())
        needed = sum(info.file_size for info, _ in todo)
        check_free_space(out_dir, needed, f"unpacking {zip_path.name}")
        with progress_bar(total=needed, unit="B", unit_scale=True, unit_divisor=1024, desc=f"unpack {zip_path.name}",
                  disable=not progress) as bar:
            for info, dest in todo:
                extract_member(archive, info, dest, bar, zip_path)
    report_refused(zip_path, refused)
    write_text(marker, json.dumps({**stamp, "members": len(todo) + skipped, "refused": len(refused)}))
    return {"extracted": len([1 for info, _ in todo if not info.is_dir()]), "skipped": skipped, "refused": refused}


def plan_extraction(archive, target_root):
    """(members to unpack [(info, dest)], refused [(name, why)], how many are already there with their size)."""
    todo, refused, skipped = [], [], 0
    for info in archive.infolist():
        problem = member_problem(info)
        dest = (target_root / info.filename).resolve()  # follows symlinks already on disk
        if problem is None and dest != target_root and target_root not in dest.parents:
            problem = "path escapes the target folder"
        if problem:
            refused.append((info.filename, problem))
        elif not info.is_dir() and dest.is_file() and dest.stat().st_size == info.file_size:
            skipped += 1
        else:
            todo.append((info, dest))
    return todo, refused, skipped


def extract_member(archive, info, dest, bar, zip_path):
    """One member to dest (a folder is made), atomically, advancing the progress bar by its bytes."""
    if info.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)

    def copy(target):
        with archive.open(info) as source:
            while block := source.read(CHUNK_SIZE):
                target.write(block)
                bar.update(len(block))

    try:
        atomic_write(dest, copy)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise DownloadError(f"{zip_path}: member {info.filename} is damaged ({error}); "
                            f"delete the zip and run again") from None


def tar_member_problem(member, target_root):
    """Why a tar member must not be unpacked (a link, a device, an unsafe name), or None when it is safe.
    Where Python has it, tarfile's "data" filter must pass the member too."""
    if member.issym() or member.islnk():
        return "link"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or pipe"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    problem = name_problem(member.name)
    if problem is None and hasattr(tarfile, "data_filter"):
        try:
            tarfile.data_filter(member, str(target_root))
        except tarfile.FilterError as error:
            problem = type(error).__name__
    return problem


def extract_tar(tar_path, out_dir, progress=True):
    """Unpack tar_path into out_dir as extract_zip does a zip: only regular files and folders, none outside
    out_dir (links, devices, absolute paths and '..' are refused and listed), each file written to a temporary
    name and renamed, files already there with the right size skipped, a marker once complete."""
    tar_path, out_dir = Path(tar_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker, stamp = extraction_marker(tar_path, out_dir), extraction_stamp(tar_path)
    if finished(marker, stamp):
        return {"extracted": 0, "skipped": "all", "refused": []}
    try:
        archive = tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise DownloadError(f"{tar_path}: not a readable tar archive ({one_line(error)}); delete it and "
                            f"run again, or check the address") from None
    target_root = out_dir.resolve()
    todo, refused, skipped = [], [], 0
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, OSError) as error:
            raise DownloadError(f"{tar_path}: damaged tar archive ({one_line(error)}); delete it and "
                                f"run again") from None
        for member in members:
            problem = tar_member_problem(member, target_root)
            dest = (target_root / member.name).resolve()  # follows symlinks already on disk
            if problem is None and dest != target_root and target_root not in dest.parents:
                problem = "path escapes the target folder"
            if problem:
                refused.append((member.name, problem))
            elif member.isfile() and dest.is_file() and dest.stat().st_size == member.size:
                skipped += 1
            else:
                todo.append((member, dest))
        needed = sum(member.size for member, _ in todo)
        check_free_space(out_dir, needed, f"unpacking {tar_path.name}")
        with progress_bar(total=needed, unit="B", unit_scale=True, unit_divisor=1024, desc=f"unpack {tar_path.name}",
                  disable=not progress) as bar:
            for member, dest in todo:
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)

                def copy(target):
                    while block := source.read(CHUNK_SIZE):
                        target.write(block)
                        bar.update(len(block))

                try:
                    atomic_write(dest, copy)
                except tarfile.TarError as error:
                    raise DownloadError(f"{tar_path}: member {member.name} is damaged ({one_line(error)}); "
                                        f"delete the archive and run again") from None
    report_refused(tar_path, refused)
    write_text(marker, json.dumps({**stamp, "members": len(todo) + skipped, "refused": len(refused)}))
    return {"extracted": len([1 for member, _ in todo if member.isfile()]), "skipped": skipped, "refused": refused}


def report_refused(archive_path, refused):
    """One warning line listing the members that were not unpacked."""
    if refused:
        shown = ", ".join(f"{name} ({why})" for name, why in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        print(f"warning: {archive_path}: refused {len(refused)} unsafe member(s): {shown}{more}", file=sys.stderr)


MSVD_CLIPS_URL = "https://www.cs.utexas.edu/users/ml/clamp/videoDescription/YouTubeClips.tar"
MSVD_CAPTIONS_URL = "https://www.cs.utexas.edu/users/ml/clamp/videoDescription/AllVideoDescriptions.txt"
MSVD_MAPPING_URL = "https://raw.githubusercontent.com/yaoli/arctic-capgen-vid/master/youtube_mapping.txt"
MSVD_CAPTIONS = "AllVideoDescriptions.txt"
S2VT_NAMES = {f"sents_{split}_lc_nopunc.txt" for split in ("train", "val", "test")}
VATEX_URL = "https://eric-xw.github.io/vatex-website/data/"
VATEX_FILES = {"training": "vatex_training_v1.0.json", "validation": "vatex_validation_v1.0.json",
               "public_test": "vatex_public_test_english_v1.1.json"}


def fetch_file(address, dest, args, extra_space_factor=0.0):
    """dest from address: a local file is copied (atomically), anything else downloaded (resumably). An existing
    dest counts as complete. Returns dest."""
    dest = Path(dest)
    local = Path(address).expanduser()
    if "://" not in address and local.is_file():
        if not dest.is_file():
            check_free_space(dest.parent, local.stat().st_size * (1 + extra_space_factor), f"copying {local.name}")
            with open(local, "rb") as source:
                atomic_write(dest, lambda target: shutil.copyfileobj(source, target, CHUNK_SIZE))
        return dest
    if "://" not in address:
        raise DownloadError(f"{address}: no such file, and not a URL; pass a URL or a local copy")
    policy = RetryPolicy(retries=args.retries, backoff=args.backoff, timeout=args.timeout)
    return download(address, dest, policy, extra_space_factor=extra_space_factor, progress=not args.quiet)


def prepare_out_dir(folder) -> Path:
    """Make folder (and its parents); DownloadError when that fails or it cannot be written to."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"--out_dir {folder}: cannot make it ({one_line(error)}); pass a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DownloadError(f"--out_dir {folder}: not writable; pass a writable folder")
    return folder


def download_msrvtt(args) -> int:
    """MSRVTT.zip into --out_dir/MSRVTT/ (unpacked, the zip deleted unless --keep_zip)."""
    return fetch_and_unpack(args.url, "MSRVTT.zip", prepare_out_dir(args.out_dir), extract_zip, args)


def fetch_and_unpack(address, default_name, out_dir, extract, args) -> int:
    """Download the archive at address into out_dir and unpack it there (extract_zip or extract_tar), deleting
    it afterwards unless --keep_zip. A local copy is unpacked where it is, and kept."""
    local = Path(address).expanduser()
    is_local = "://" not in address and local.is_file()
    archive = local if is_local else out_dir / file_name(address, default_name)
    marker = extraction_marker(archive, out_dir)
    if not args.no_extract and marker.is_file() and not archive.exists():
        print(f"{archive.name} already unpacked in {out_dir} (delete {marker} to redo)")
        return 0
    if not is_local:
        fetch_file(address, archive, args, extra_space_factor=0.0 if args.no_extract else 1.0)
        print(f"downloaded {archive} ({gigabytes(archive.stat().st_size)})")
    if args.no_extract:
        return 0
    summary = extract(archive, out_dir, progress=not args.quiet)
    if summary["skipped"] == "all":
        print(f"{archive.name} already unpacked in {out_dir}")
    else:
        print(f"unpacked {summary['extracted']} files into {out_dir} ({summary['skipped']} already there)")
    if not args.keep_zip and not is_local:
        archive.unlink()
    return 0


def download_msvd(args) -> int:
    """--out_dir/msvd/: YouTubeClips/ (from YouTubeClips.tar), AllVideoDescriptions.txt and youtube_mapping.txt
    (the standard split): what `--dataset msvd --data_dir <out_dir>/msvd` reads."""
    msvd = prepare_out_dir(Path(args.out_dir) / "msvd")
    # Saved under names the MSVD reader knows: a corpus CSV keeps its name, other captions become
    # AllVideoDescriptions.txt unless named as one of S2VT's files; the mapping is always youtube_mapping.txt.
    captions_name = file_name(args.msvd_captions_url, MSVD_CAPTIONS)
    if not (captions_name.lower().endswith(".csv") or captions_name in S2VT_NAMES):
        captions_name = MSVD_CAPTIONS
    for address, name in ((args.msvd_captions_url, captions_name), (args.msvd_mapping_url, "youtube_mapping.txt")):
        print(f"have {fetch_file(address, msvd / name, args)}")
    fetch_and_unpack(args.msvd_clips_url, "YouTubeClips.tar", msvd, extract_tar, args)
    if not args.no_extract:
        print(f"MSVD is in {msvd}: python dataset.py --dataset msvd --data_dir {msvd}")
    return 0


def vatex_video_ids(path, part) -> list:
    """The videoIDs of one official VATEX file, in file order; DownloadError when it is not one."""
    try:
        entries = json.loads(Path(path).read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise DownloadError(f"{path}: not valid JSON ({one_line(error)}); delete it and run again, or check "
                            f"--vatex_url") from None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) and isinstance(entry.get("videoID"), str)
                                                for entry in entries):
        raise DownloadError(f"{path}: not VATEX's {part} file (a JSON list of {{videoID, enCap}}); delete it and "
                            f"run again, or check --vatex_url")
    return [entry["videoID"] for entry in entries]


def download_vatex(args) -> int:
    """--out_dir/vatex/: the official annotation files, then <videoID>.mp4 for each clip of --split."""
    import vatex_clips  # imports PyAV: only for VATEX

    vatex_clips.yt_dlp_or_error()
    vatex = prepare_out_dir(Path(args.out_dir) / "vatex")
    video_ids = []
    for part, name in VATEX_FILES.items():
        address = vatex_address(args.vatex_url, name)
        path = fetch_file(address, vatex / name, args)
        ids = vatex_video_ids(path, part)
        if args.split in ("all", part):
            video_ids += ids
    video_ids = list(dict.fromkeys(video_ids))
    if args.limit:
        video_ids = video_ids[:args.limit]
    settings = vatex_clips.Settings(out_dir=vatex, youtube_url=args.youtube_url, max_height=args.max_height,
                                    retries=args.retries, backoff=args.backoff, timeout=args.timeout,
                                    fetch_window=not args.whole_videos)
    counts = vatex_clips.download_clips(video_ids, settings, workers=args.workers, retry_failed=args.retry_failed,
                                        progress=not args.quiet)
    print(f"vatex clips: {counts['done']} done, {counts['present']} already there, {counts['failed']} failed "
          f"(gone), {counts['transient']} failed transiently (run again to retry), {counts['known_failed']} "
          f"skipped as failed before (--retry_failed asks again); failures in {vatex / vatex_clips.FAILURES}")
    print(f"VATEX is in {vatex}: python dataset.py --dataset vatex --data_dir {vatex}")
    return 0


def vatex_address(base, name):
    """Where one VATEX file is: base is a URL or a local folder holding the three files."""
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return str(Path(base).expanduser() / name)


def file_name(address, default):
    """The file name an address (URL or path) points at; default when it names none."""
    path = urllib.parse.unquote(urllib.parse.urlparse(address).path) if "://" in address else address
    return Path(path).name or default


def youtube_url_template(text):
    """argparse type of --youtube_url: a template holding {id}."""
    if "{id}" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} has no {{id}} to put the YouTube id in")
    try:
        text.format(id="x")
    except (KeyError, IndexError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: braces other than {{id}} must be doubled") from None
    return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--dataset", choices=("msrvtt", "msvd", "vatex"), default="msrvtt",
                        help="what to download (default: msrvtt); msvd and vatex go to <out_dir>/msvd and "
                             "<out_dir>/vatex")
    parser.add_argument("--out_dir", default="data", help="folder that receives the dataset (default: data)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"where MSRVTT.zip is, a URL or a local copy "
                                                           f"(default: {DEFAULT_URL})")
    parser.add_argument("--msvd_clips_url", default=MSVD_CLIPS_URL,
                        help=f"MSVD's clips archive, a URL or a local copy (default: {MSVD_CLIPS_URL})")
    parser.add_argument("--msvd_captions_url", default=MSVD_CAPTIONS_URL,
                        help=f"MSVD's English captions, a URL or a local copy; any caption file the MSVD reader "
                             f"accepts (default: {MSVD_CAPTIONS_URL})")
    parser.add_argument("--msvd_mapping_url", default=MSVD_MAPPING_URL,
                        help=f"youtube_mapping.txt (clip -> vidN, the standard split), a URL or a local copy "
                             f"(default: {MSVD_MAPPING_URL})")
    parser.add_argument("--vatex_url", default=VATEX_URL,
                        help=f"URL or local folder holding {', '.join(VATEX_FILES.values())} (default: {VATEX_URL})")
    parser.add_argument("--youtube_url", type=youtube_url_template, default="https://www.youtube.com/watch?v={id}",
                        help="address of a VATEX clip's video, {id} standing for its YouTube id (default: "
                             "https://www.youtube.com/watch?v={id}); a mirror or a local server")
    parser.add_argument("--split", choices=("all", *VATEX_FILES), default="all",
                        help="VATEX: fetch the clips of one official file only (default: all)")
    parser.add_argument("--limit", type=count, default=0, help="VATEX: fetch only the first N clips (0 = all)")
    parser.add_argument("--workers", type=positive_int, default=4, help="VATEX: clips fetched in parallel (default: 4)")
    parser.add_argument("--max_height", type=positive_int, default=360,
                        help="VATEX: clips are re-encoded to at most this many rows (default: 360)")
    parser.add_argument("--whole_videos", action="store_true",
                        help="VATEX: always fetch whole videos and cut them here, even when ffmpeg is installed "
                             "(without ffmpeg, yt-dlp cannot fetch a window and whole videos are fetched anyway)")
    parser.add_argument("--retry_failed", action="store_true",
                        help="VATEX: ask again for the clips failures.jsonl records as gone (default: skip them)")
    parser.add_argument("--no_extract", action="store_true", help="download the archive only, do not unpack it")
    parser.add_argument("--keep_zip", "--keep_archive", action="store_true",
                        help="keep the archive (MSRVTT.zip, YouTubeClips.tar) after unpacking (default: delete it)")
    parser.add_argument("--retries", type=count, default=5,
                        help="attempts in a row without progress before giving up; for a VATEX clip, retries of a "
                             "transient error (default: 5)")
    parser.add_argument("--backoff", type=non_negative, default=1.0,
                        help="seconds before the first retry; the wait doubles up to 60 s (default: 1)")
    parser.add_argument("--timeout", type=positive_float, default=60.0,
                        help="network timeout in seconds (default: 60)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    # Synthetic data is synthetic.py's; these earlier spellings still work and hand over to it.
    parser.add_argument("--synthetic", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=("simple", "order"), default="simple", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(args) -> int:
    use_warning_lines()
    if args.synthetic:
        import synthetic  # imports torch: only for this hand-over

        return synthetic.main(synthetic.parse_args(["--out_dir", args.out_dir, "--num_videos", str(args.synthetic),
                                                    "--seed", str(args.seed), "--task", args.task]))
    try:
        return {"msrvtt": download_msrvtt, "msvd": download_msvd, "vatex": download_vatex}[args.dataset](args)
    except UserError as error:
        return fail(error)
    except OSError as error:  # a full disk, a folder that turned read-only: what was complete is kept
        where = f"{error.filename}: " if error.filename else ""
        return fail(f"{where}cannot write ({one_line(error)}); free some space or pass another --out_dir, then "
                    f"run again to resume")
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(parse_args()))
