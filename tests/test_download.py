"""download_dataset.py against a real HTTP server on 127.0.0.1: resume, servers that ignore Range or
lie about sizes, transient errors, disk space, and safe, resumable unpacking."""
import collections
import http.server
import io
import re
import threading
import zipfile

import pytest

import download_dataset
from download_dataset import DownloadError, RetryPolicy, download, extract_zip

CHUNK = 4096
def fast(retries=5):
    """download()'s options for a local test server: short waits, no bar."""
    policy = RetryPolicy(retries, backoff=0.001, max_backoff=0.01, timeout=5)
    return dict(chunk_size=CHUNK, policy=policy, progress=False)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.payload, honouring `Range: bytes=N-`, misbehaving as server.plan says per request."""

    def do_GET(self):
        server = self.server
        with server.lock:
            index = len(server.log)
            settings = {**server.defaults, **(server.plan[index] if index < len(server.plan) else {})}
            entry = {"range": self.headers.get("Range"), "status": None, "sent": 0}
            server.log.append(entry)
        if "status" in settings:  # a transient failure
            entry["status"] = settings["status"]
            self.send_response(settings["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = server.payload
        declared_total = settings.get("declared_total", len(payload))
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not settings.get("ignore_range"):
            start = int(match.group(1))
            if start >= declared_total:
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{declared_total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            entry["status"] = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{declared_total - 1}/{declared_total}")
            self.send_header("Content-Length", str(declared_total - start))
            body = payload[start:]
        else:
            entry["status"] = 200
            self.send_response(200)
            self.send_header("Content-Length", str(declared_total))
            body = payload
        self.end_headers()
        if settings.get("drop_after") is not None:  # the connection drops after this many body bytes
            body = body[:settings["drop_after"]]
        entry["sent"] = len(body)  # recorded before writing: the client may finish reading before this thread resumes
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.daemon_threads = True
    httpd.lock = threading.Lock()
    httpd.log, httpd.plan, httpd.defaults = [], [], {}
    httpd.payload = b""
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/MSRVTT.zip"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def make_zip(files):
    """A zip (bytes) holding {name: bytes}; stored, so that its size is predictable."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


FILES = {
    "MSRVTT/annotation/MSR_VTT.json": b'{"images": [], "annotations": []}',
    "MSRVTT/high-quality/structured-symlinks/train_list_full.txt": b"video0\nvideo1",
    "MSRVTT/videos/all/video0.mp4": bytes(range(256)) * 200,
    "MSRVTT/videos/all/video1.mp4": bytes(range(255, -1, -1)) * 150,
}


def assert_extracted(out_dir, files=FILES):
    for name, data in files.items():
        assert (out_dir / name).read_bytes() == data, name


def test_full_download_then_extract(server, tmp_path):
    server.payload = make_zip(FILES)
    zip_path = download(server.url, tmp_path / "MSRVTT.zip", **fast())
    assert zip_path.read_bytes() == server.payload
    assert not (tmp_path / "MSRVTT.zip.part").exists()
    assert [entry["range"] for entry in server.log] == [None]
    summary = extract_zip(zip_path, tmp_path, progress=False)
    assert summary["extracted"] == len(FILES) and summary["refused"] == []
    assert_extracted(tmp_path)
    assert not list(tmp_path.rglob("*.tmp*"))


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.payload = make_zip(FILES)
    dropped_at = 10_000
    server.plan = [{"drop_after": dropped_at}]
    zip_path = download(server.url, tmp_path / "MSRVTT.zip", **fast())
    assert zip_path.read_bytes() == server.payload
    assert [entry["range"] for entry in server.log] == [None, f"bytes={dropped_at}-"]
    assert [entry["status"] for entry in server.log] == [200, 206]
    assert sum(entry["sent"] for entry in server.log) <= len(server.payload) + CHUNK


def test_interrupted_run_resumes_from_part_file(server, tmp_path):
    """A .part left by a killed run is continued, not fetched again."""
    server.payload = make_zip(FILES)
    (tmp_path / "MSRVTT.zip.part").write_bytes(server.payload[:7777])
    zip_path = download(server.url, tmp_path / "MSRVTT.zip", **fast())
    assert zip_path.read_bytes() == server.payload
    assert [entry["range"] for entry in server.log] == ["bytes=7777-"]
    assert server.log[0]["sent"] == len(server.payload) - 7777


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.payload = make_zip(FILES)
    server.defaults = {"ignore_range": True}
    (tmp_path / "MSRVTT.zip.part").write_bytes(b"stale bytes that must not survive")
    zip_path = download(server.url, tmp_path / "MSRVTT.zip", **fast())
    assert zip_path.read_bytes() == server.payload
    assert [(entry["range"], entry["status"]) for entry in server.log] == [("bytes=33-", 200)]


def test_part_already_complete_is_finished_without_refetching(server, tmp_path):
    server.payload = make_zip(FILES)
    (tmp_path / "MSRVTT.zip.part").write_bytes(server.payload)
    zip_path = download(server.url, tmp_path / "MSRVTT.zip", **fast())
    assert zip_path.read_bytes() == server.payload
    assert [entry["status"] for entry in server.log] == [416]


def test_short_file_is_a_clear_error_and_part_is_kept(server, tmp_path):
    """The server announces more bytes than it has: bounded retries, then an error; the .part stays."""
    server.payload = make_zip(FILES)
    server.defaults = {"declared_total": len(server.payload) + 100}
    with pytest.raises(DownloadError, match=r"giving up after 2 retries.*stopped at \d+ of \d+ bytes"):
        download(server.url, tmp_path / "MSRVTT.zip", **fast(retries=2))
    assert (tmp_path / "MSRVTT.zip.part").read_bytes() == server.payload
    assert not (tmp_path / "MSRVTT.zip").exists()
    assert len(server.log) <= 1 + 1 + 2  # the first full try, one try that made progress, then 2 retries


def test_size_changing_between_requests_is_a_clear_error(server, tmp_path):
    server.payload = make_zip(FILES)
    server.plan = [{"drop_after": 5000}, {"declared_total": len(server.payload) + 5}]
    with pytest.raises(DownloadError, match="changed from"):
        download(server.url, tmp_path / "MSRVTT.zip", **fast())
    assert (tmp_path / "MSRVTT.zip.part").read_bytes() == server.payload[:5000]
    assert not (tmp_path / "MSRVTT.zip").exists()


def test_transient_errors_are_retried_then_succeed(server, tmp_path):
    server.payload = make_zip(FILES)
    server.plan = [{"status": 503}, {"status": 503}]
    zip_path = download(server.url, tmp_path / "MSRVTT.zip", **fast(retries=3))
    assert zip_path.read_bytes() == server.payload
    assert [entry["status"] for entry in server.log] == [503, 503, 200]


def test_persistent_errors_give_up_after_bounded_retries(server, tmp_path):
    server.payload = b"x" * 100
    server.defaults = {"status": 503}
    with pytest.raises(DownloadError, match="giving up after 2 retries .*HTTP 503"):
        download(server.url, tmp_path / "MSRVTT.zip", **fast(retries=2))
    assert len(server.log) == 3


def test_not_found_is_final(server, tmp_path):
    server.defaults = {"status": 404}
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url, tmp_path / "MSRVTT.zip", **fast(retries=5))
    assert len(server.log) == 1


def test_unreachable_server_gives_up(tmp_path):
    with pytest.raises(DownloadError, match="giving up after 1 retries"):
        download("http://127.0.0.1:9/MSRVTT.zip", tmp_path / "MSRVTT.zip", **fast(retries=1))


DiskUsage = collections.namedtuple("DiskUsage", "total used free")


def test_free_space_is_checked_before_writing(server, tmp_path, monkeypatch):
    server.payload = make_zip(FILES)
    size = len(server.payload)
    monkeypatch.setattr(download_dataset.shutil, "disk_usage", lambda path: DiskUsage(10**12, 0, size + 10))
    with pytest.raises(DownloadError, match="needs"):  # the zip fits, the zip plus its contents do not
        download(server.url, tmp_path / "MSRVTT.zip", extra_space_factor=1.0, **fast())
    assert not (tmp_path / "MSRVTT.zip.part").exists()  # checked before any byte was written
    assert not (tmp_path / "MSRVTT.zip").exists()
    download(server.url, tmp_path / "MSRVTT.zip", **fast())  # without room for unpacking it fits

    monkeypatch.setattr(download_dataset.shutil, "disk_usage", lambda path: DiskUsage(10**12, 0, 1000))
    with pytest.raises(DownloadError, match="unpacking MSRVTT.zip needs"):
        extract_zip(tmp_path / "MSRVTT.zip", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "MSRVTT").exists()


def test_unsafe_members_are_refused_and_nothing_lands_outside(tmp_path, capsys):
    outside = tmp_path / "outside"
    target = tmp_path / "sandbox" / "data"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("MSRVTT/annotation/MSR_VTT.json", b"{}")
        archive.writestr("../escaped.txt", b"evil")
        archive.writestr("MSRVTT/../../escaped2.txt", b"evil")
        archive.writestr("..\\escaped3.txt", b"evil")
        archive.writestr(zipfile.ZipInfo(str(outside / "absolute.txt")), b"evil")
        archive.writestr(zipfile.ZipInfo("C:/drive.txt"), b"evil")
        link = zipfile.ZipInfo("MSRVTT/link")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, str(outside))
    zip_path = tmp_path / "evil.zip"
    zip_path.write_bytes(buffer.getvalue())
    outside.mkdir()
    target.mkdir(parents=True)
    before = sorted(path for path in tmp_path.rglob("*") if target not in path.parents)

    summary = extract_zip(zip_path, target, progress=False)

    assert (target / "MSRVTT" / "annotation" / "MSR_VTT.json").read_bytes() == b"{}"
    refused = dict(summary["refused"])
    assert set(refused) == {"../escaped.txt", "MSRVTT/../../escaped2.txt", "..\\escaped3.txt",
                            str(outside / "absolute.txt"), "C:/drive.txt", "MSRVTT/link"}
    assert refused["MSRVTT/link"] == "symlink"
    after = sorted(path for path in tmp_path.rglob("*") if target not in path.parents)
    assert after == before  # nothing new outside the target
    inside = [path for path in target.rglob("*")]
    assert not any(path.is_symlink() for path in inside)
    assert {path.name for path in inside if path.is_file()} == {"MSR_VTT.json", ".evil.zip.extracted"}
    assert capsys.readouterr().err.count("\n") == 1


def test_existing_symlink_in_target_cannot_redirect_writes(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "data"
    target.mkdir()
    (target / "MSRVTT").symlink_to(outside)  # planted before unpacking
    zip_path = tmp_path / "a.zip"
    zip_path.write_bytes(make_zip({"MSRVTT/x.txt": b"evil"}))
    summary = extract_zip(zip_path, target, progress=False)
    assert [name for name, _ in summary["refused"]] == ["MSRVTT/x.txt"]
    assert list(outside.iterdir()) == []


def test_already_extracted_is_skipped(tmp_path):
    zip_path = tmp_path / "MSRVTT.zip"
    zip_path.write_bytes(make_zip(FILES))
    out_dir = tmp_path / "data"
    extract_zip(zip_path, out_dir, progress=False)
    stamps = {name: (out_dir / name).stat().st_mtime_ns for name in FILES}

    assert extract_zip(zip_path, out_dir, progress=False)["skipped"] == "all"
    assert {name: (out_dir / name).stat().st_mtime_ns for name in FILES} == stamps

    # An extraction interrupted half way (no marker yet): only what is missing is written.
    download_dataset.extraction_marker(zip_path, out_dir).unlink()
    (out_dir / "MSRVTT/videos/all/video1.mp4").unlink()
    summary = extract_zip(zip_path, out_dir, progress=False)
    assert summary["extracted"] == 1 and summary["skipped"] == len(FILES) - 1
    assert_extracted(out_dir)
    unchanged = [name for name in FILES if name != "MSRVTT/videos/all/video1.mp4"]
    assert all((out_dir / name).stat().st_mtime_ns == stamps[name] for name in unchanged)


def test_command_line_downloads_unpacks_and_skips_next_time(server, tmp_path, capsys):
    server.payload = make_zip(FILES)
    out_dir = tmp_path / "data"
    args = download_dataset.parse_args(["--url", server.url, "--out_dir", str(out_dir), "--quiet"])
    assert download_dataset.main(args) == 0
    assert_extracted(out_dir)
    assert not (out_dir / "MSRVTT.zip").exists()  # deleted after unpacking unless --keep_zip
    requests = len(server.log)
    assert download_dataset.main(args) == 0
    assert len(server.log) == requests and "already unpacked" in capsys.readouterr().out


def test_command_line_errors_are_one_line_exit_2(server, tmp_path, capsys):
    server.defaults = {"status": 404}
    args = download_dataset.parse_args(["--url", server.url, "--out_dir", str(tmp_path), "--quiet"])
    assert download_dataset.main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "HTTP 404" in error and "Traceback" not in error


def test_command_line_synthetic_needs_no_network(tmp_path):
    args = download_dataset.parse_args(["--synthetic", "4", "--out_dir", str(tmp_path), "--quiet"])
    assert download_dataset.main(args) == 0
    assert len(list((tmp_path / "MSRVTT" / "videos" / "all").glob("video*.mp4"))) == 4
    assert (tmp_path / "MSRVTT" / "annotation" / "MSR_VTT.json").is_file()
