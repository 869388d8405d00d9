"""Caption diagnostics beside the metrics (diagnostics.py), per-caption scores and the --report of evaluate.py."""
import json

import pytest

import evaluate
from diagnostics import COLLAPSE_MIN_VIDEOS, COLLAPSE_SHARE, caption_diagnostics, collapse_warning


def test_diagnostics_count_distinct_captions_words_lengths_and_copies():
    captions = {"v1": "A man is  running", "v2": "a man is running", "v3": "a dog barks", "v4": "a red car"}
    references = {vid: ["a man runs on a road", "someone is running"] for vid in captions}
    training = ["a dog barks", "A MAN IS RUNNING", "a cat sleeps"]
    diagnostics = caption_diagnostics(captions, references, training)
    assert diagnostics["distinct_captions"] == 3 and diagnostics["distinct_share"] == 0.75
    assert diagnostics["vocabulary"] == len({"a", "man", "is", "running", "dog", "barks", "red", "car"})
    assert diagnostics["mean_length"] == (4 + 4 + 3 + 3) / 4
    assert diagnostics["reference_mean_length"] == (6 + 3) / 2
    assert diagnostics["copied_from_training"] == 0.75  # normalised as training targets are
    assert diagnostics["most_frequent"][0] == {"caption": "a man is running", "count": 2, "share": 0.5}
    assert not diagnostics["collapsed"]  # half of 4 videos says little
    assert "copied_from_training" not in caption_diagnostics(captions, references)


@pytest.mark.parametrize("same, videos, collapsed", [
    (int(COLLAPSE_SHARE * 40), 40, True),
    (int(COLLAPSE_SHARE * 40) - 1, 40, False),
    (COLLAPSE_MIN_VIDEOS - 1, COLLAPSE_MIN_VIDEOS - 1, False),
])
def test_collapse_is_one_caption_for_a_large_share_of_enough_videos(same, videos, collapsed):
    captions = {f"v{i}": "a man is talking" if i < same else f"caption number {i}" for i in range(videos)}
    diagnostics = caption_diagnostics(captions, {vid: ["a reference"] for vid in captions})
    assert diagnostics["collapsed"] is collapsed
    warning = collapse_warning(diagnostics)
    assert (warning is not None) is collapsed
    if collapsed:
        assert f"({same} of {videos})" in warning and '"a man is talking"' in warning


def test_evaluate_writes_per_caption_scores_diagnostics_and_a_report(tmp_path, capsys):
    hyps = ["a man is running", "a dog barks loudly", "a man is running", "the sky"]
    refs_a = ["a man is running", "a dog is barking loudly", "a woman sings a song", "a bird flies in the sky"]
    refs_b = ["someone runs", "a dog barks", "a woman is singing", "a blue sky with clouds"]
    for name, lines in (("hyp.txt", hyps), ("a.txt", refs_a), ("b.txt", refs_b)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    args = evaluate.parse_args(["--hyp", str(tmp_path / "hyp.txt"), "--refs", str(tmp_path / "a.txt"),
                                str(tmp_path / "b.txt"), "--java", "no", "--out", str(tmp_path / "results.json"),
                                "--report", str(tmp_path / "report.md")])
    assert evaluate.main(args) == 0
    printed = capsys.readouterr().out
    assert "distinct captions  3 of 4 videos (75.0%)" in printed and "      2  a man is running" in printed
    result = json.loads((tmp_path / "results.json").read_text())
    scores = {record["caption"] + str(record["id"]): record["scores"] for record in result["predictions"]}
    assert scores["a man is running0"]["Bleu_4"] == pytest.approx(1.0)  # equal to a reference
    assert scores["the sky3"]["CIDEr"] < scores["a man is running0"]["CIDEr"]
    assert sum(s["CIDEr"] for s in scores.values()) / 4 == pytest.approx(result["metrics"]["CIDEr"])
    report = (tmp_path / "report.md").read_text()
    best, worst = report.split("## The 4 best (CIDEr-D)")[1].split("## The 4 worst (CIDEr-D)")
    assert best.index("### 0:") < best.index("### 3:") and worst.index("### 3:") < worst.index("### 0:")
    assert "**caption:** the sky\n\nreferences:\n\n- a bird flies in the sky\n- a blue sky with clouds" in report
    assert "CIDEr" in report.split("## Scores")[1]


def test_an_unwritable_report_is_one_line(tmp_path, capsys):
    (tmp_path / "hyp.txt").write_text("a cat\n")
    (tmp_path / "ref.txt").write_text("a cat sits\n")
    args = evaluate.parse_args(["--hyp", str(tmp_path / "hyp.txt"), "--refs", str(tmp_path / "ref.txt"),
                                "--java", "no", "--report", str(tmp_path / "hyp.txt" / "report.md")])  # under a file
    assert evaluate.main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""  # refused before scoring
    err = err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "hyp.txt is a file, not a folder" in err
