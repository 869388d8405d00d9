"""Progress in logs (plain lines, not redraws), files a library writes put in place whole, no import-time side
effects, and the layout checks: tools/check_layout.py and tests that import no other test file."""
import ast
import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import time
import warnings
from pathlib import Path

import pytest

from common import progress_bar, temporary_path, use_warning_lines, warning_line

REPO = Path(__file__).resolve().parent.parent
COUNTING = ("import sys, time; sys.path.insert(0, sys.argv[1]); from common import progress_bar\n"
            "for _ in progress_bar(range(40), desc='work', unit='video', log_interval=float(sys.argv[2])):\n"
            "    time.sleep(0.01)\n")


def test_progress_in_a_log_file_is_plain_lines_at_the_interval(tmp_path):
    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "-c", COUNTING, str(REPO), "0.1"], stderr=stderr, check=True, timeout=60)
    text = log.read_text()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text  # no redraws, no cursor moves
    assert 2 <= len(lines) <= 8, lines  # ~0.4 s of work at one line per 0.1 s, and the last one
    assert all(line.startswith("work: ") and "/40" in line and "video/s" in line for line in lines), lines
    assert lines[-1].startswith("work: 100%") and "40/40" in lines[-1]


def test_a_bar_that_ends_before_the_interval_writes_nothing_to_a_log(tmp_path):
    completed = subprocess.run([sys.executable, "-c", COUNTING, str(REPO), "30"], capture_output=True, text=True,
                               check=True, timeout=60)
    assert completed.stderr == ""


def test_a_postfix_shows_in_the_next_line_not_in_a_line_of_its_own():
    log = io.StringIO()  # not a terminal
    bar = progress_bar(range(20), desc="epoch 1", file=log, log_interval=0.05)
    for step in bar:  # as train.run_epoch does: a new loss after every batch
        time.sleep(0.01)
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 6 and "| 0/20 " not in log.getvalue(), lines  # no line of a stale count
    assert lines[-1].startswith("epoch 1: 100%") and lines[-1].endswith("loss=0.050]")
    quiet = io.StringIO()
    bar = progress_bar(range(20), desc="epoch 2", file=quiet, log_interval=30)
    for step in bar:
        bar.set_postfix(loss="1.0")
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_redraws_as_tqdm_does():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    with os.fdopen(leader, "rb", buffering=0) as terminal:
        process = subprocess.Popen([sys.executable, "-c", COUNTING, str(REPO), "30"], stderr=follower)
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = terminal.read(4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=60) == 0
    assert shown.count(b"\r") >= 2 and b"40/40" in shown  # redrawn in place, the interval ignored


def test_a_script_run_into_a_log_leaves_no_redraws(tmp_path):
    log = tmp_path / "synthetic.log"
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "synthetic.py", "--num_videos", "4", "--num_frames", "4", "--out_dir",
                        str(tmp_path / "data")], cwd=REPO, stderr=stderr, check=True, timeout=120)
    assert "\r" not in log.read_text()


def test_temporary_path_moves_what_was_written_into_place_or_nothing(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_text("before")
    with pytest.raises(RuntimeError):
        with temporary_path(target) as temporary:
            assert temporary.parent == tmp_path and temporary.suffix == ".mp4" and temporary != target
            temporary.write_text("half")
            raise RuntimeError("the library failed")
    assert target.read_text() == "before" and sorted(tmp_path.iterdir()) == [target]
    with temporary_path(target) as temporary:
        temporary.write_text("after")
    assert target.read_text() == "after" and sorted(tmp_path.iterdir()) == [target]
    with temporary_path(tmp_path / "tok", suffixes=(".vocab", ".model")) as prefix:  # sentencepiece's two files
        Path(f"{prefix}.vocab").write_text("v")
        Path(f"{prefix}.model").write_text("m")
    assert (tmp_path / "tok.model").read_text() == "m" and (tmp_path / "tok.vocab").read_text() == "v"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("kept")
    with temporary_path(tmp_path / "model") as folder:  # save_pretrained into a folder: its files move in
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == ["config.json", "notes.txt"]
    assert not [path for path in tmp_path.iterdir() if ".tmp" in path.name]


def test_importing_common_leaves_warnings_alone_and_main_sets_them_to_one_line():
    probe = ("import sys, warnings; sys.path.insert(0, sys.argv[1]); before = warnings.formatwarning; "
             "import common, dataset, train; print(warnings.formatwarning is before)")
    completed = subprocess.run([sys.executable, "-c", probe, str(REPO)], capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "True", completed.stderr
    saved = warnings.formatwarning
    try:
        use_warning_lines()
        assert warnings.formatwarning("x.mp4: odd", UserWarning, "file.py", 3) == "warning: x.mp4: odd\n"
        assert warnings.formatwarning is warning_line
    finally:
        warnings.formatwarning = saved


def test_check_layout_lists_long_functions_and_long_parameter_lists(tmp_path, run_cli):
    body = "\n".join(f"    x{number} = {number}" for number in range(61))
    (tmp_path / "script.py").write_text(f"def short(a, b):\n    return a\n\n\ndef long():\n{body}\n\n\n"
                                        "def many(a, b, c, d, e, f, g, h, *rest):\n    return a\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(f"def long():\n{body}\n")  # tests/ is not scanned
    result = run_cli("tools/check_layout.py", "--root", tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["script.py:5 long: 62 lines", "script.py:69 many: 9 parameters"]


def test_no_test_imports_another_test_file():
    for path in sorted((REPO / "tests").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [name for name in names if name.split(".")[0].startswith(("test_", "conftest"))], path.name


def test_progress_bar_is_tqdm_for_callers_that_write_around_it():
    bar = progress_bar(total=3, desc="x", disable=True)
    with bar.external_write_mode():
        pass
    bar.update(3)
    bar.close()
