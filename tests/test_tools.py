"""The measurement scripts in tools/: compare.py's view statistics, the memory readings tools/bench and soak.py share,
and that each script runs from the repo root."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools import compare
from tools.compare import view_spread, view_variance_share
from tools.measure import MIB, peak_rss_mib, reset_peak_rss, rss_mib

REPO = Path(__file__).resolve().parent.parent


def test_view_spread_and_variance_share_measure_what_the_sampling_moves():
    videos = np.random.default_rng(0).normal(size=(50, 1, 8)) + 10.0  # a direction all latents share
    same = np.repeat(videos, 3, axis=1)  # (N, K, D): the views agree
    assert view_spread(same) == pytest.approx(1.0) and view_variance_share(same) < 1e-12
    noisy = same + np.random.default_rng(1).normal(size=same.shape)  # views vary as much as videos do
    assert view_spread(noisy) > 0.99 > 0.9 > view_spread(noisy, centred=True)
    # Per dimension: views add variance 1 around each video (2/3 of it left around the views' mean), videos 1.
    assert view_variance_share(noisy) == pytest.approx((2 / 3) / 2, abs=0.05)


def test_memory_is_read_in_mib_and_the_peak_starts_afresh():
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak memory")
    before = rss_mib()
    block = b"\x01" * (64 * MIB)  # written, so resident
    assert rss_mib() - before == pytest.approx(64, abs=6)
    del block
    reset_peak_rss()
    assert peak_rss_mib() - rss_mib() < 6  # the freed block no longer counts in the peak


@pytest.mark.parametrize("script, flag", [("tools/compare.py", "--real_videos"), ("tools/soak.py", "--max_growth_mib")])
def test_scripts_answer_help_from_the_repo_root(script, flag):
    completed = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert flag in completed.stdout


def test_compare_looks_for_real_clips_beside_the_repo():
    assert compare.parse_args([]).real_videos == str(REPO.parent / "shared" / "realdata" / "videos")



def test_captions_file_writes_into_a_new_folder_and_names_videos_relative_to_it(tmp_path, run_cli):
    from synthetic import make_synthetic_msrvtt
    make_synthetic_msrvtt(tmp_path / "data", num_videos=6, seed=0, progress=False)
    out = tmp_path / "runs" / "new" / "captions.jsonl"  # neither folder exists yet
    command = ["tools/captions_file.py", "--data_dir", tmp_path / "data", "--out"]
    completed = run_cli(*command, out)
    assert completed.returncode == 0, completed.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all((out.parent / row["video"]).is_file() for row in rows)
    assert {row["split"] for row in rows} <= {"train", "val", "test"}
    # An --out that cannot be written (here a folder): one line, exit 2, no traceback.
    completed = run_cli(*command, tmp_path / "runs")
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
