"""Caption metrics (metrics.py, through evaluate.py): reference scores reproduced, Java-free fallback, Meteor cleanup, CLI."""
import json
import math
import subprocess
import warnings

import pytest

import evaluate
import metrics as metrics_module


# "this is a good test" vs ["this is a test", "this is also a test"], scored by pycocoevalcap with Java.
PAIR_PREDICTIONS = {"pair": "this is a good test"}
PAIR_REFERENCES = {"pair": ["this is a test", "this is also a test"]}
PAIR_EXPECTED = {"Bleu_1": 0.799999, "Bleu_2": 0.632455, "Bleu_3": 0.5108729, "Bleu_4": 0.0000903602,
                 "METEOR": 0.44434387, "ROUGE_L": 0.9070631}

# realdata/captions/{hyp,ref1,ref2}.txt, scored by pycocoevalcap with Java (see its README.md).
REALDATA_EXPECTED = {"Bleu_1": 0.55, "Bleu_2": 0.428174, "Bleu_3": 0.284043, "Bleu_4": 0.201143,
                     "METEOR": 0.295797, "ROUGE_L": 0.522104, "CIDEr": 1.242192}

# Captions with punctuation, contractions and brackets, and what PTBTokenizer 3.4.1 -lowerCase plus
# pycocoevalcap's punctuation removal makes of them (taken from a run of the Java tokenizer).
PTB_CASES = {
    'A man\'s colour T-shirt, (red) isn\'t "good"... 1/2 & e.g. U.S. cat.':
        "a man 's colour t-shirt -lrb- red -rrb- is n't good 1/2 & e.g. u.s. cat",
    "café naïve — “quoted” it’s": "café naïve quoted it 's",
    "cannot gonna wanna": "can not gon na wan na",
    "dogs' toys": "dogs toys",
    "mr. smith sees the end. the start": "mr. smith sees the end the start",
    "$5 5% #1 a+b #hashtag": "$ 5 5 % # 1 a + b #hashtag",
    "lots!!! what?!": "lots !!! what ?!",
    "a -- b - c": "a b c",
    "x [y] {z}": "x -lsb- y -rsb- -lcb- z -rcb-",
    "'hello' said the r&b singer": "hello said the r & b singer",
    "1,000 people, ok w/ 3.5 hours at 10:30": "1,000 people ok w / 3.5 hours at 10:30",
    "won't stop the animal`s cage/": "wo n't stop the animal s cage /",
    "tips- for -this man/woman": "tips for this man/woman",
    "a cat is\non two\r\nlines": "a cat is on two lines",
    "": "",
}

requires_java = pytest.mark.skipif(not evaluate.java_available(), reason="java not found")


def _assert_scores(metrics, expected, tolerance=1e-4):
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=tolerance), name


@pytest.fixture
def recorded_processes(monkeypatch):
    """Every subprocess.Popen started during the test (Meteor's and the tokenizer's JVMs included)."""
    started = []

    class RecordingPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    return started


@pytest.fixture
def fresh_java_warning(monkeypatch):
    """Let the once-per-process "METEOR skipped" warning fire again inside this test."""
    monkeypatch.setattr(metrics_module, "_warned_no_java", False)


def test_single_pair_reproduces_reference_scores_without_leaks_or_stdout(capfd, recorded_processes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # on a machine without Java: the warning is tested elsewhere
        metrics = evaluate.score_captions(PAIR_PREDICTIONS, PAIR_REFERENCES)
    if evaluate.java_available():
        assert set(metrics) == set(evaluate.METRIC_NAMES)
        _assert_scores(metrics, PAIR_EXPECTED)
        assert len(recorded_processes) >= 2  # PTB tokenizer + Meteor
    else:
        assert "METEOR" not in metrics
        _assert_scores(metrics, {k: v for k, v in PAIR_EXPECTED.items() if k != "METEOR"})
    # One reference set: every n-gram has document frequency 1 -> idf log(1/1) = 0 -> CIDEr-D 0.
    assert metrics["CIDEr"] == 0.0
    assert all(isinstance(value, float) for value in metrics.values())
    assert all(process.poll() is not None for process in recorded_processes), "a java process is still running"
    captured = capfd.readouterr()
    assert captured.out == ""  # no "tokenization...", no BLEU ratio prints, nothing from the JVMs
    assert "PTBTokenizer tokenized" not in captured.err


def test_realdata_captions_reproduce_reference_scores(realdata):
    predictions, references = evaluate.load_line_aligned(
        str(realdata / "captions" / "hyp.txt"),
        [str(realdata / "captions" / "ref1.txt"), str(realdata / "captions" / "ref2.txt")])
    assert len(predictions) == 2 and all(len(refs) == 2 for refs in references.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = evaluate.score_captions(predictions, references)
    expected = REALDATA_EXPECTED if evaluate.java_available() else \
        {k: v for k, v in REALDATA_EXPECTED.items() if k != "METEOR"}
    assert set(metrics) == set(expected)
    _assert_scores(metrics, expected)


def test_java_free_path_matches_java_scores_and_omits_meteor(realdata, fresh_java_warning):
    predictions, references = evaluate.load_line_aligned(
        str(realdata / "captions" / "hyp.txt"),
        [str(realdata / "captions" / "ref1.txt"), str(realdata / "captions" / "ref2.txt")])
    with pytest.warns(RuntimeWarning, match=r"METEOR skipped: Java not used \(--java no\)"):
        metrics = evaluate.score_captions(predictions, references, java=False)
    assert "METEOR" not in metrics
    _assert_scores(metrics, {k: v for k, v in REALDATA_EXPECTED.items() if k != "METEOR"})


def test_java_free_single_pair_warns_once(fresh_java_warning):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = evaluate.score_captions(PAIR_PREDICTIONS, PAIR_REFERENCES, java=False)
        second = evaluate.score_captions(PAIR_PREDICTIONS, PAIR_REFERENCES, java=False)
    messages = [str(w.message) for w in caught if "METEOR skipped" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("METEOR skipped: Java not used")
    assert first == second
    assert set(first) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    _assert_scores(first, {k: v for k, v in PAIR_EXPECTED.items() if k != "METEOR"})


def test_missing_java_is_detected(monkeypatch, fresh_java_warning, recorded_processes):
    monkeypatch.setattr(metrics_module.shutil, "which", lambda name: None)
    evaluate.java_available.cache_clear()
    try:
        assert evaluate.java_available() is False
        with pytest.warns(RuntimeWarning, match="METEOR skipped: Java not found"):
            metrics = evaluate.score_captions(PAIR_PREDICTIONS, PAIR_REFERENCES)
    finally:
        evaluate.java_available.cache_clear()
    assert "METEOR" not in metrics
    assert recorded_processes == []  # nothing tried to start java


@pytest.mark.parametrize("caption, expected", list(PTB_CASES.items()))
def test_python_tokenizer_known_outputs(caption, expected):
    assert evaluate.ptb_tokenize_python(caption) == expected


@requires_java
def test_java_tokenizer_agrees_with_python_imitation_and_reference_wrapper():
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer

    captions = list(PTB_CASES)
    java_tokens = evaluate.ptb_tokenize_java(captions)
    assert java_tokens == [evaluate.ptb_tokenize_python(caption) for caption in captions]
    assert tuple(PUNCTUATIONS) == evaluate.PTB_PUNCTUATIONS
    # Same output as pycocoevalcap's own wrapper (which cannot take a caption with a newline inside).
    one_line = {i: [{"caption": caption}] for i, caption in enumerate(captions) if "\n" not in caption}
    reference = PTBTokenizer().tokenize(one_line)
    assert [java_tokens[i] for i in one_line] == [reference[i][0] for i in one_line]


@requires_java
def test_python_tokenizer_matches_java_on_msrvtt_captions(realdata):
    annotation = json.loads((realdata / "msrvtt" / "MSRVTT" / "annotation" / "MSR_VTT.json").read_text())
    captions = [a["caption"] for a in annotation["annotations"]]
    # The plain ones ("a man is cooking") are trivially equal; test all with anything else plus a sample.
    unusual = [c for c in captions if not all(ch.isalnum() and ch.isascii() or ch == " " for ch in c)]
    sample = unusual + captions[:2000]
    java_tokens = evaluate.ptb_tokenize_java(sample)
    mismatches = [c for c, tokens in zip(sample, java_tokens) if evaluate.ptb_tokenize_python(c) != tokens]
    assert len(unusual) > 300
    assert len(mismatches) <= 3, mismatches  # 2 known: "an =d white dog", "curd-1/4 cup"


def test_empty_and_odd_captions_score_without_crashing(fresh_java_warning):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = evaluate.score_captions({"a": "", "b": "a dog runs"},
                                          {"a": ["a cat sits"], "b": ["", "a dog runs", "the dog is running"]},
                                          java=False)
    assert all(math.isfinite(value) for value in metrics.values())
    # Empty "a" scores ROUGE-L 0, "b" matches a reference exactly (1): the corpus value is their mean.
    assert metrics["ROUGE_L"] == pytest.approx(0.5)


def test_mismatched_ids_and_bad_references_are_rejected():
    with pytest.raises(ValueError, match="different ids"):
        evaluate.score_captions({"a": "x", "b": "y"}, {"a": ["x"]}, java=False)
    with pytest.raises(ValueError, match="non-empty list"):
        evaluate.score_captions({"a": "x"}, {"a": []}, java=False)
    with pytest.raises(ValueError, match="non-empty list"):
        evaluate.score_captions({"a": "x"}, {"a": "x"}, java=False)
    with pytest.raises(ValueError, match="no predictions"):
        evaluate.score_captions({}, {}, java=False)


def test_format_table_is_aligned_and_ordered():
    table = evaluate.format_table({"CIDEr": 1.242192, "Bleu_1": 0.55, "ROUGE_L": 0.522104})
    lines = table.split("\n")
    assert [line.split()[0] for line in lines] == ["metric", "Bleu_1", "ROUGE_L", "CIDEr"]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns
    assert lines[3].split()[1:] == ["1.2422", "124.22"]
    assert lines[1].split()[1:] == ["0.5500", "55.00"]


def test_read_caption_lines_keeps_alignment(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_bytes("first\r\nsecond has \u2028 inside\n\nfourth\n".encode("utf-8"))
    assert evaluate.read_caption_lines(str(path)) == ["first", "second has \u2028 inside", "", "fourth"]
    path.write_text("no trailing newline", encoding="utf-8")
    assert evaluate.read_caption_lines(str(path)) == ["no trailing newline"]


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.filterwarnings("ignore:METEOR skipped")
def test_cli_writes_valid_json(tmp_path, run_cli):
    hyp = _write_lines(tmp_path / "hyp.txt", ["a man is cooking", "a dog runs on grass"])
    ref1 = _write_lines(tmp_path / "ref1.txt", ["a man is cooking food", "a dog is running"])
    ref2 = _write_lines(tmp_path / "ref2.txt", ["someone cooks", "a dog runs on the grass"])
    out_path = tmp_path / "results" / "metrics.json"
    completed = run_cli("evaluate", "--hyp", hyp, "--refs", ref1, ref2, "--out", str(out_path), "--java", "no")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(out_path.read_text(encoding="utf-8"))
    assert set(result["metrics"]) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    assert [{key: record[key] for key in ("id", "caption", "references")} for record in result["predictions"]] == [
        {"id": 0, "caption": "a man is cooking", "references": ["a man is cooking food", "someone cooks"]},
        {"id": 1, "caption": "a dog runs on grass", "references": ["a dog is running", "a dog runs on the grass"]},
    ]
    expected = evaluate.score_captions(*evaluate.load_line_aligned(hyp, [ref1, ref2]), java=False)
    assert result["metrics"] == pytest.approx(expected)
    assert completed.stdout.splitlines()[0].split() == ["metric", "score", "x100"]
    assert sorted(p.name for p in out_path.parent.iterdir()) == ["metrics.json"]  # no temp file left


@pytest.mark.parametrize("problem", ["line_count", "missing_file", "no_refs"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, problem, run_cli):
    hyp = _write_lines(tmp_path / "hyp.txt", ["a man is cooking", "a dog runs"])
    refs = {"line_count": [_write_lines(tmp_path / "ref.txt", ["only one line"])],
            "missing_file": [str(tmp_path / "absent.txt")],
            "no_refs": []}[problem]
    completed = run_cli("evaluate", "--hyp", hyp, *(["--refs", *refs] if refs else []), "--java", "no")
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    assert completed.stdout == ""
