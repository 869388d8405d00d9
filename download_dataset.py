"""Download MSRVTT.zip and unpack it into --out_dir (data/MSRVTT/...).

    python download_dataset.py --out_dir data

The download resumes from data/MSRVTT.zip.part after an interruption (HTTP Range), retries
transient failures with backoff, checks free disk space first and the final size against the
server's, and renames the file into place only when complete. Unpacking refuses members that would
land outside --out_dir (../, absolute paths, drive letters) and symlinks, skips files already
unpacked, and leaves a marker so that a finished job is not redone. Offline, synthetic.py writes a
synthetic stand-in in the same layout.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path


from common import UserError, atomic_write, fail, progress_bar, use_warning_lines, write_text

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


def download(url, dest, chunk_size=CHUNK_SIZE, retries=5, backoff=1.0, max_backoff=60.0, timeout=60.0,
             extra_space_factor=0.0, progress=True):
    """Download url to dest, resuming from dest.part; returns dest. An existing dest counts as complete.

    retries: consecutive failed attempts (no byte received) allowed before giving up; the wait
    doubles from `backoff` seconds up to `max_backoff`. extra_space_factor: also require this multiple
    of the full size free (1.0 when the zip will be unpacked next to itself). Raises DownloadError;
    the .part file is kept so that the next run resumes.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    expected_total = None  # the file size the server first announced
    attempts = Retries(retries, backoff, max_backoff)
    while True:
        offset = part.stat().st_size if part.exists() else 0
        attempts.wait(url, part, offset)
        try:
            response = _open(url, offset, timeout)
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
        try:
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as error:  # connection dropped mid-body
            return received, f"{type(error).__name__}: {error}"
    return received, "connection closed early"


def member_problem(info):
    """Why a zip member must not be unpacked ('symlink', 'absolute path', ...), or None when it is safe."""
    if ((info.external_attr >> 16) & 0o170000) == 0o120000:
        return "symlink"
    name = info.filename.replace("\\", "/")
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


def extract_zip(zip_path, out_dir, progress=True):
    """Unpack zip_path into out_dir safely; returns {"extracted", "skipped", "refused": [(name, why)]}.

    Files already there with the right size are skipped; each file is written to a temporary name
    and renamed into place; unsafe members are refused (listed on stderr) and nothing is written
    outside out_dir. A marker records a finished extraction so that a second call does nothing.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = extraction_marker(zip_path, out_dir)
    stamp = {"zip": zip_path.name, "size": zip_path.stat().st_size}
    try:
        if marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in stamp} == stamp:
            return {"extracted": 0, "skipped": "all", "refused": []}
    except ValueError:
        pass  # an unreadable marker: extract again (files already there are skipped)
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
    if refused:
        shown = ", ".join(f"{name} ({why})" for name, why in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        print(f"warning: {zip_path}: refused {len(refused)} unsafe member(s): {shown}{more}", file=sys.stderr)
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


def zip_name_from_url(url):
    """The file name the URL points at ('MSRVTT.zip' when it names none)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name or "MSRVTT.zip"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"where MSRVTT.zip is (default: {DEFAULT_URL})")
    parser.add_argument("--out_dir", default="data", help="folder that receives the zip and MSRVTT/ (default: data)")
    parser.add_argument("--no_extract", action="store_true", help="download the zip only, do not unpack it")
    parser.add_argument("--keep_zip", action="store_true", help="keep the zip after unpacking (default: delete it)")
    parser.add_argument("--retries", type=int, default=5,
                        help="attempts in a row without progress before giving up (default: 5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: 60)")
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
    out_dir = Path(args.out_dir)
    try:
        zip_path = out_dir / zip_name_from_url(args.url)
        if not args.no_extract and extraction_marker(zip_path, out_dir).is_file() and not zip_path.exists():
            print(f"{zip_path.name} already unpacked in {out_dir} (delete {extraction_marker(zip_path, out_dir)} "
                  f"to redo)")
            return 0
        download(args.url, zip_path, retries=args.retries, timeout=args.timeout,
                 extra_space_factor=0.0 if args.no_extract else 1.0, progress=not args.quiet)
        print(f"downloaded {zip_path} ({gigabytes(zip_path.stat().st_size)})")
        if args.no_extract:
            return 0
        summary = extract_zip(zip_path, out_dir, progress=not args.quiet)
        if summary["skipped"] == "all":
            print(f"{zip_path.name} already unpacked in {out_dir}")
        else:
            print(f"unpacked {summary['extracted']} files into {out_dir} ({summary['skipped']} already there)")
        if not args.keep_zip:
            zip_path.unlink()
        return 0
    except DownloadError as error:
        return fail(error)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(parse_args()))
