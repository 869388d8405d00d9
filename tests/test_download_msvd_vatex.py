"""download_dataset.py --dataset msvd|vatex against a local HTTP server on 127.0.0.1: a hostile tar, VATEX clips
fetched through yt-dlp (its generic extractor, via --youtube_url) and cut with PyAV, failures, retries, resume,
and the result read by dataset.py and encoded by encode.py."""
import errno
import functools
import http.server
import io
import json
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest

import dataset
import download_dataset
import vatex_clips
from synthetic import write_clip

pytest.importorskip("yt_dlp")

FPS = 10


class FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.files {path: bytes} (with Range); server.plan {path: [status, ...]} answers those first,
    server.status {path: status} answers always."""

    def do_GET(self):
        self.respond(body=True)

    def do_HEAD(self):
        self.respond(body=False)

    def respond(self, body):
        server = self.server
        path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
        with server.lock:
            server.log.append(path)
            planned = server.plan.get(path)
            status = planned.pop(0) if planned else server.status.get(path)
        data = server.files.get(path)
        if status or data is None:
            self.send_response(status or 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = 0, len(data) - 1
        requested = self.headers.get("Range", "")
        if requested.startswith("bytes="):
            first, _, last = requested[6:].partition("-")
            start, end = int(first or 0), min(int(last) if last else end, end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "video/mp4" if path.endswith(".mp4") else "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body and path in server.slow:  # a trickle, so that a run can be interrupted mid-download
            try:
                for offset in range(start, end + 1, 16):
                    self.wfile.write(data[offset:min(offset + 16, end + 1)])
                    self.wfile.flush()
                    time.sleep(server.slow[path])
            except (BrokenPipeError, ConnectionResetError):  # the client was interrupted
                pass
        elif body:
            self.wfile.write(data[start:end + 1])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FileHandler)
    httpd.daemon_threads = True
    httpd.lock = threading.Lock()
    httpd.log, httpd.files, httpd.plan, httpd.status, httpd.slow = [], {}, {}, {}, {}
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def requests_under(server, prefix):
    return [path for path in server.log if path.startswith(prefix)]


@functools.lru_cache(maxsize=None)
def source_video(seconds=6, width=128, height=96) -> bytes:
    """An H.264 mp4 of `seconds` at FPS fps whose frame i is flat grey at level 4 * i (so a frame tells its time)."""
    frames = np.stack([np.full((height, width, 3), 4 * index, np.uint8) for index in range(seconds * FPS)])
    with tempfile.TemporaryDirectory() as scratch:
        write_clip(Path(scratch) / "source.mp4", frames, FPS)
        return (Path(scratch) / "source.mp4").read_bytes()


def quiet_run(argv):
    return download_dataset.main(download_dataset.parse_args([*argv, "--quiet"]))


def files_outside(root, inside):
    return sorted(path for path in root.rglob("*") if inside not in (path, *path.parents))


# --- MSVD -----------------------------------------------------------------------------------------------------

MSVD_CLIPS = {"abc-_x_1_9": "vid1", "def_5_12": "vid1201", "ghi_0_4": "vid1301"}


def hostile_tar(outside: Path) -> bytes:
    """YouTubeClips/<clip>.avi for MSVD_CLIPS, and members that must not land: ../, an absolute path, a symlink,
    a hard link, a character device and a fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        def add(name, data=b"", kind=tarfile.REGTYPE, link=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("YouTubeClips", kind=tarfile.DIRTYPE)
        for number, clip in enumerate(MSVD_CLIPS):
            add(f"YouTubeClips/{clip}.avi", bytes([number]) * (1000 + number))
        add("../escaped.avi", b"evil")
        add("YouTubeClips/../../escaped2.avi", b"evil")
        add(str(outside / "absolute.avi"), b"evil")
        add("YouTubeClips/link.avi", kind=tarfile.SYMTYPE, link=str(outside / "target.avi"))
        add("YouTubeClips/hard.avi", kind=tarfile.LNKTYPE, link="YouTubeClips/abc-_x_1_9.avi")
        add("YouTubeClips/console", kind=tarfile.CHRTYPE)
        add("YouTubeClips/pipe", kind=tarfile.FIFOTYPE)
    return buffer.getvalue()


def serve_msvd(server, tar_bytes):
    server.files["/msvd/YouTubeClips.tar"] = tar_bytes
    server.files["/msvd/AllVideoDescriptions.txt"] = (
        "# MSVD English descriptions\n" + "".join(f"{clip} a thing happens number {n}\n{clip} it goes on\n"
                                                 for n, clip in enumerate(MSVD_CLIPS))).encode()
    mapping = "\r\n".join(f"{clip} {vid}" for clip, vid in MSVD_CLIPS.items())  # CRLF, no final newline
    server.files["/msvd/youtube_mapping.txt"] = mapping.encode()
    return ["--dataset", "msvd", "--msvd_clips_url", f"{server.base}/msvd/YouTubeClips.tar",
            "--msvd_captions_url", f"{server.base}/msvd/AllVideoDescriptions.txt",
            "--msvd_mapping_url", f"{server.base}/msvd/youtube_mapping.txt"]


def test_msvd_downloads_unpacks_safely_and_reads(server, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    out_dir = tmp_path / "sandbox" / "data"
    flags = serve_msvd(server, hostile_tar(outside))
    assert quiet_run([*flags, "--out_dir", str(out_dir)]) == 0
    msvd = out_dir / "msvd"
    clips = msvd / "YouTubeClips"
    assert sorted(path.name for path in clips.iterdir()) == sorted(f"{clip}.avi" for clip in MSVD_CLIPS)
    assert (clips / "def_5_12.avi").read_bytes() == bytes([1]) * 1001
    assert files_outside(tmp_path, msvd) == [outside, tmp_path / "sandbox", out_dir]  # nothing escaped
    assert not any(path.is_symlink() or not (path.is_file() or path.is_dir()) for path in msvd.rglob("*"))
    assert not (msvd / "YouTubeClips.tar").exists()
    assert not list(msvd.rglob("*.part")) and not list(msvd.rglob(".*tmp*"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused 7 unsafe member(s)" in err

    assert dataset.main(dataset.parse_args(["--dataset", "msvd", "--data_dir", str(msvd), "--json"])) == 0
    summary = json.loads(capsys.readouterr().out)["splits"]
    assert {split: (row["videos"], row["captions"], row["missing"]) for split, row in summary.items()} == \
        {"train": (1, 2, 0), "val": (1, 2, 0), "test": (1, 2, 0)}

    before = len(server.log)
    assert quiet_run([*flags, "--out_dir", str(out_dir)]) == 0  # a rerun fetches nothing
    assert len(server.log) == before and "already unpacked" in capsys.readouterr().out


def test_tar_rerun_unpacks_only_what_is_missing(tmp_path):
    tar_path = tmp_path / "YouTubeClips.tar"
    tar_path.write_bytes(hostile_tar(tmp_path / "outside"))
    out_dir = tmp_path / "msvd"
    download_dataset.extract_tar(tar_path, out_dir, progress=False)
    clips = sorted((out_dir / "YouTubeClips").iterdir())
    stamps = {path: path.stat().st_mtime_ns for path in clips}
    download_dataset.extraction_marker(tar_path, out_dir).unlink()  # as if killed before the end
    clips[0].unlink()
    summary = download_dataset.extract_tar(tar_path, out_dir, progress=False)
    assert summary["extracted"] == 1 and summary["skipped"] == len(MSVD_CLIPS) - 1
    assert all(path.stat().st_mtime_ns == stamps[path] for path in clips[1:])
    assert download_dataset.extract_tar(tar_path, out_dir, progress=False)["skipped"] == "all"


def test_msvd_archive_that_is_not_one_is_one_line_exit_2(server, tmp_path, capsys):
    flags = serve_msvd(server, b"<html>Service moved</html>\n" * 40)
    assert quiet_run([*flags, "--out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable tar archive" in err and "Traceback" not in err
    assert not (tmp_path / "msvd" / "YouTubeClips").exists()


def test_msvd_full_disk_while_unpacking_leaves_no_half_file(server, tmp_path, capsys, monkeypatch):
    flags = serve_msvd(server, hostile_tar(tmp_path / "outside"))
    real_write = download_dataset.atomic_write

    def disk_full(path, write, mode="wb"):
        def write_then_fail(handle):
            write(handle)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, write_then_fail, mode)

    monkeypatch.setattr(download_dataset, "atomic_write", disk_full)
    assert quiet_run([*flags, "--out_dir", str(tmp_path / "data"), "--keep_archive"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    msvd = tmp_path / "data" / "msvd"
    assert not list((msvd / "YouTubeClips").iterdir()) and not list(msvd.rglob(".*tmp*"))
    assert (msvd / "YouTubeClips.tar").is_file()  # complete download kept: the rerun only unpacks


# --- VATEX ----------------------------------------------------------------------------------------------------

def serve_vatex(server, training, validation=(), public_test=()):
    """The three official files listing these videoIDs, and --vatex_url/--youtube_url flags pointing at server."""
    for name, ids in zip(download_dataset.VATEX_FILES.values(), (training, validation, public_test)):
        entries = [{"videoID": video_id, "enCap": [f"a clip called {video_id}", "something happens"],
                    "chCap": ["片段"]} for video_id in ids]
        server.files[f"/vatex/{name}"] = json.dumps(entries).encode()
    return ["--dataset", "vatex", "--vatex_url", f"{server.base}/vatex/",
            "--youtube_url", f"{server.base}/videos/{{id}}.mp4", "--backoff", "0.001", "--retries", "3"]


def decoded_frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(stream)]
    return codec, frames


def test_vatex_end_to_end_cut_failures_retries_resume(server, tmp_path, capsys):
    for name in ("okA", "busy-1", "okB"):
        server.files[f"/videos/{name}.mp4"] = source_video()
    server.files["/videos/short_.mp4"] = source_video(seconds=2)
    server.status["/videos/gone.mp4"] = 404
    server.status["/videos/privat.mp4"] = 403
    server.plan["/videos/busy-1.mp4"] = [503, 503]  # transient: retried, then served
    training = ["okA_000002_000004", "gone_000000_000010", "privat_000001_000003", "busy-1_0_3",
                "../../evil_000001_000002"]
    flags = serve_vatex(server, training, validation=["okB_000000_000003"], public_test=["short__000010_000012"])
    out_dir = tmp_path / "data"
    assert quiet_run([*flags, "--out_dir", str(out_dir), "--workers", "2", "--max_height", "48"]) == 0
    vatex = out_dir / "vatex"
    out = capsys.readouterr().out
    assert "3 done, 0 already there, 4 failed (gone), 0 failed transiently" in out

    assert sorted(path.name for path in vatex.glob("*.mp4")) == ["busy-1_0_3.mp4", "okA_000002_000004.mp4",
                                                                 "okB_000000_000003.mp4"]
    codec, frames = decoded_frames(vatex / "okA_000002_000004.mp4")
    assert codec == "h264" and frames[0].shape == (48, 64)  # at most --max_height rows, aspect kept
    assert len(frames) == 2 * FPS  # [2 s, 4 s) of a 10 fps video
    assert abs(float(frames[0].mean()) - 4 * 2 * FPS) < 3 and abs(float(frames[-1].mean()) - 4 * (4 * FPS - 1)) < 3
    assert len(decoded_frames(vatex / "okB_000000_000003.mp4")[1]) == 3 * FPS

    failures = {record["id"]: record for record in map(json.loads, (vatex / "failures.jsonl").read_text().splitlines())}
    assert set(failures) == {"gone_000000_000010", "privat_000001_000003", "short__000010_000012",
                             "../../evil_000001_000002"}
    assert all(record["permanent"] for record in failures.values())
    assert "404" in failures["gone_000000_000010"]["reason"] and "403" in failures["privat_000001_000003"]["reason"]
    assert "no frame in the window" in failures["short__000010_000012"]["reason"]
    assert requests_under(server, "/videos/busy-1").count("/videos/busy-1.mp4") >= 3
    assert not any("evil" in path for path in server.log)
    assert not (vatex / ".partial").exists() and not list(vatex.rglob(".*tmp*")) and not list(tmp_path.glob("evil*"))

    # A rerun asks for nothing: finished clips are there, gone ones are known.
    before = len(server.log)
    assert quiet_run([*flags, "--out_dir", str(out_dir)]) == 0
    assert not any(path.startswith("/videos") for path in server.log[before:])
    assert "0 done, 3 already there, 0 failed (gone), 0 failed transiently (run again to retry), 4 skipped" in \
        capsys.readouterr().out

    # The folder reads as VATEX with no other step, and encodes.
    assert dataset.main(dataset.parse_args(["--dataset", "vatex", "--data_dir", str(vatex), "--json"])) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert {split: (row["videos"], row["missing"]) for split, row in splits.items()} == \
        {"train": (5, 3), "val": (1, 0), "test": (1, 1)}
    import encode
    from synthetic import make_tiny_xclip

    xclip = make_tiny_xclip(tmp_path / "xclip")
    with pytest.warns(Warning, match="4 of 7 listed videos are not on disk"):  # the clips that are gone
        assert encode.main(encode.parse_args(["--dataset", "vatex", "--data_dir", str(vatex), "--xclip_model",
                                              str(xclip), "--cache_dir", str(tmp_path / "cache"), "--num_workers",
                                              "0", "--device", "cpu"])) == 0
    assert "3 encoded" in capsys.readouterr().out


def test_vatex_transient_failure_is_retried_on_the_next_run(server, tmp_path, capsys):
    server.files["/videos/flaky.mp4"] = source_video()
    server.status["/videos/flaky.mp4"] = 503
    flags = [*serve_vatex(server, ["flaky_000001_000002"]), "--retries", "1", "--out_dir", str(tmp_path)]
    assert quiet_run(flags) == 0
    assert "0 done, 0 already there, 0 failed (gone), 1 failed transiently" in capsys.readouterr().out
    assert requests_under(server, "/videos").count("/videos/flaky.mp4") == 2  # the try and one retry
    record = json.loads((tmp_path / "vatex" / "failures.jsonl").read_text())
    assert record["id"] == "flaky_000001_000002" and not record["permanent"] and "503" in record["reason"]

    del server.status["/videos/flaky.mp4"]  # the server recovers
    assert quiet_run(flags) == 0
    assert "1 done" in capsys.readouterr().out
    assert (tmp_path / "vatex" / "flaky_000001_000002.mp4").is_file()


def test_vatex_split_and_limit_fetch_part_of_the_set(server, tmp_path, capsys):
    for name in ("a", "b", "c"):
        server.files[f"/videos/{name}.mp4"] = source_video()
    flags = serve_vatex(server, ["a_000000_000001", "b_000000_000001"], validation=["c_000000_000001"])
    assert quiet_run([*flags, "--out_dir", str(tmp_path), "--split", "training", "--limit", "1"]) == 0
    assert [path.name for path in (tmp_path / "vatex").glob("*.mp4")] == ["a_000000_000001.mp4"]


@pytest.mark.parametrize("failure", ["interrupt", "disk_full"])
def test_vatex_interrupt_or_full_disk_leaves_no_partial_clip(server, tmp_path, capsys, monkeypatch, failure):
    server.files["/videos/okA.mp4"] = source_video()
    flags = [*serve_vatex(server, ["okA_000000_000003"]), "--out_dir", str(tmp_path)]
    real_write = vatex_clips.atomic_write

    def write_then_fail(path, write, mode="wb"):
        def failing(handle):
            write(handle)  # the whole clip is written to the temporary file, then:
            if failure == "interrupt":
                raise KeyboardInterrupt
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, failing, mode)

    monkeypatch.setattr(vatex_clips, "atomic_write", write_then_fail)
    assert quiet_run(flags) == (130 if failure == "interrupt" else 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert failure == "interrupt" or "No space left on device" in err
    vatex = tmp_path / "vatex"
    assert not list(vatex.rglob("*.mp4*")) or all(".partial" in str(path) for path in vatex.rglob("*.mp4*"))
    assert not (vatex / "okA_000000_000003.mp4").exists() and not list(vatex.glob(".*tmp*"))
    assert not (vatex / "failures.jsonl").exists()  # neither is a failure of the clip

    monkeypatch.setattr(vatex_clips, "atomic_write", real_write)  # the next run finishes it
    assert quiet_run(flags) == 0
    assert len(decoded_frames(vatex / "okA_000000_000003.mp4")[1]) == 3 * FPS


def test_vatex_ctrl_c_mid_download_stops_and_the_rerun_finishes(server, tmp_path, capsys):
    """A real SIGINT while yt-dlp is receiving a video: exit 130 at once, one line, no .mp4; the rerun resumes."""
    server.files["/videos/slow.mp4"] = source_video()
    server.slow["/videos/slow.mp4"] = 0.05  # 320 bytes/s: the 3 KB video takes about 10 s
    flags = [*serve_vatex(server, ["slow_000000_000003"]), "--out_dir", str(tmp_path), "--quiet"]
    process = subprocess.Popen([sys.executable, "download_dataset.py", *flags],
                               cwd=Path(download_dataset.__file__).parent, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "/videos/slow.mp4" not in server.log and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # some bytes in
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130 and err.count("\n") == 1 and "interrupted" in err, (out, err)
    vatex = tmp_path / "vatex"
    assert not list(vatex.glob("*.mp4")) and not list(vatex.glob(".*tmp*"))
    assert not (vatex / "failures.jsonl").exists()
    assert not (vatex / ".partial" / "slow_000000_000003" / "source.mp4").exists()  # stopped mid-download

    del server.slow["/videos/slow.mp4"]
    assert quiet_run(flags) == 0
    assert "1 done" in capsys.readouterr().out
    assert len(decoded_frames(vatex / "slow_000000_000003.mp4")[1]) == 3 * FPS


def test_vatex_without_yt_dlp_says_so_in_one_line(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)
    flags = serve_vatex(server, ["a_000000_000001"])
    assert quiet_run([*flags, "--out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install yt-dlp" in err
    assert server.log == [] and not (tmp_path / "vatex").exists()


def test_vatex_annotation_that_is_not_one_is_one_line_exit_2(server, tmp_path, capsys):
    flags = serve_vatex(server, ["a_000000_000001"])
    server.files["/vatex/vatex_validation_v1.0.json"] = b"<html>not json</html>"
    assert quiet_run([*flags, "--out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vatex_validation_v1.0.json: not valid JSON" in err


def test_bad_command_lines_are_one_line_exit_2(tmp_path, capsys):
    for argv in (["--dataset", "kinetics"], ["--dataset", "vatex", "--youtube_url", "http://mirror/video"],
                 ["--dataset", "vatex", "--workers", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            download_dataset.parse_args(argv)
        assert exit_info.value.code == 2
        assert ": error: argument" in capsys.readouterr().err.strip().splitlines()[-1]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for dataset_name in ("msrvtt", "msvd", "vatex"):
        assert quiet_run(["--dataset", dataset_name, "--out_dir", str(blocker / "data")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--out_dir" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


def test_local_copies_stand_in_for_addresses(tmp_path, capsys):
    """Every address flag takes a local file (a mirror copy) instead of a URL; the local tar is not deleted."""
    copies = tmp_path / "copies"
    copies.mkdir()
    (copies / "YouTubeClips.tar").write_bytes(hostile_tar(tmp_path / "outside"))
    (copies / "AllVideoDescriptions.txt").write_text("".join(f"{clip} a caption\n" for clip in MSVD_CLIPS))
    (copies / "youtube_mapping.txt").write_text("".join(f"{clip} {vid}\n" for clip, vid in MSVD_CLIPS.items()))
    assert quiet_run(["--dataset", "msvd", "--out_dir", str(tmp_path / "data"),
                      "--msvd_clips_url", str(copies / "YouTubeClips.tar"),
                      "--msvd_captions_url", str(copies / "AllVideoDescriptions.txt"),
                      "--msvd_mapping_url", str(copies / "youtube_mapping.txt")]) == 0
    assert len(list((tmp_path / "data" / "msvd" / "YouTubeClips").glob("*.avi"))) == len(MSVD_CLIPS)
    assert (copies / "YouTubeClips.tar").is_file()
    assert quiet_run(["--dataset", "msvd", "--out_dir", str(tmp_path / "data2"),
                      "--msvd_captions_url", str(copies / "missing.txt")]) == 2
    assert "no such file, and not a URL" in capsys.readouterr().err


def test_cut_of_a_real_kinetics_clip_keeps_its_frames(realdata, tmp_path):
    """A real H.264 clip whose stream time base is not its frame period (28 fps, 1/14336): the window's frames,
    in order, at a constant rate."""
    source = realdata / "videos" / "mmaction2_demo.mp4"
    written = vatex_clips.cut_clip(source, tmp_path / "clip.mp4", 2.0, 5.0, max_height=128)
    codec, frames = decoded_frames(tmp_path / "clip.mp4")
    assert written == len(frames) == 3 * 28 and codec == "h264" and frames[0].shape == (128, 170)
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        originals = [frame.reformat(width=170, height=128).to_ndarray(format="gray")
                     for frame in container.decode(stream) if 2.0 <= frame.time < 5.0]
    errors = [float(np.abs(cut.astype(int) - original.astype(int)).mean()) for cut, original in zip(frames, originals)]
    assert max(errors) < 8  # each cut frame is the original at its time: lossy (<4 seen), not shifted (>16 by one)


def test_local_copies_of_msrvtt_zip_and_vatex_files(tmp_path, capsys):
    copies = tmp_path / "copies"
    copies.mkdir()
    with zipfile.ZipFile(copies / "MSRVTT.zip", "w") as archive:
        archive.writestr("MSRVTT/annotation/MSR_VTT.json", b'{"images": [], "annotations": []}')
    assert quiet_run(["--url", str(copies / "MSRVTT.zip"), "--out_dir", str(tmp_path / "data")]) == 0
    assert (tmp_path / "data" / "MSRVTT" / "annotation" / "MSR_VTT.json").is_file()
    assert (copies / "MSRVTT.zip").is_file() and not (tmp_path / "data" / "MSRVTT.zip").exists()

    for name in download_dataset.VATEX_FILES.values():
        (copies / name).write_text(json.dumps([{"videoID": "abc_000001_000002", "enCap": ["x"]}]
                                              if "training" in name else []))
    assert quiet_run(["--dataset", "vatex", "--vatex_url", str(copies), "--split", "validation",
                      "--out_dir", str(tmp_path / "data")]) == 0
    vatex = tmp_path / "data" / "vatex"
    assert sorted(path.name for path in vatex.iterdir()) == sorted(download_dataset.VATEX_FILES.values())
    assert "0 done, 0 already there, 0 failed" in capsys.readouterr().out


def test_full_disk_while_downloading_is_one_line_and_not_retried(server, tmp_path, capsys, monkeypatch):
    flags = serve_msvd(server, hostile_tar(tmp_path / "outside"))

    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part"):
            return FullDisk()
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(download_dataset, "open", open_on_a_full_disk, raising=False)
    assert quiet_run([*flags, "--out_dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "giving up" not in err
    assert len(requests_under(server, "/msvd")) == 1  # the first file's first try: a full disk is not retried
    assert not [path for path in (tmp_path / "data" / "msvd").iterdir() if not path.name.endswith(".part")]


def test_vatex_run_stops_when_every_clip_fails_transiently(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(vatex_clips, "GIVE_UP_STREAK", 2)
    video_ids = [f"v{number}_000000_000001" for number in range(6)]
    for number in range(6):
        server.status[f"/videos/v{number}.mp4"] = 503  # the address throttles everything
    flags = [*serve_vatex(server, video_ids), "--retries", "0", "--workers", "1", "--out_dir", str(tmp_path)]
    assert quiet_run(flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the last 2 clips all failed after retries" in err and "503" in err
    assert len(requests_under(server, "/videos")) < 6  # it did not go through the whole list
    records = [json.loads(line) for line in (tmp_path / "vatex" / "failures.jsonl").read_text().splitlines()]
    assert len(records) == 2 and not any(record["permanent"] for record in records)
