"""Feature files and captions files from a stranger: a .npy header that lies about its size, objects, absurd values,
text in another encoding, one video reached by several paths. Each is one `error:` line and exit 2 (or a warning where
the run can go on), and nothing that was there before the run changes."""
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest

import create_tokenizer
import evaluate
import train
from common import UserError, load_npy

SMALL = ["--batch_size", "32", "--embed_dim", "16", "--hidden_dim", "32", "--num_layers", "1", "--dropout", "0.0",
         "--warmup_steps", "2", "--num_workers", "0", "--beam_size", "1", "--max_len", "5", "--patience", "0"]
PROGRESS_BAR = re.compile(r"^[\w ]+: +\d+%\|")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread is faster


def stderr_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip() and not PROGRESS_BAR.match(line)]


def snapshot(folder):
    return {path: path.read_bytes() for path in sorted(Path(folder).rglob("*")) if path.is_file()}


# ---- .npy headers ----------------------------------------------------------------------------------------------------

def npy_with_header(path, header: dict, data: bytes = b"") -> Path:
    """A version 1.0 .npy file with this header dict and these data bytes, whatever the header claims."""
    text = repr(header).encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data)
    return path


NPY_CASES = {
    "enormous shape": ({"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}, b"\0" * 64, "shape"),
    "shape beyond int64": ({"descr": "<f4", "fortran_order": False, "shape": (2**62, 2**62)}, b"\0" * 64, "shape"),
    "truncated data": ({"descr": "<f4", "fortran_order": False, "shape": (4, 8)}, b"\0" * 100, "holds 100 bytes"),
    "trailing data": ({"descr": "<f4", "fortran_order": False, "shape": (2,)}, b"\0" * 100, "holds 100 bytes"),
    "objects": ({"descr": "|O", "fortran_order": False, "shape": (1,)}, b"\0" * 8, "not numbers"),
    "strings": ({"descr": "<U4", "fortran_order": False, "shape": (2,)}, b"\0" * 32, "not numbers"),
    "bad descr": ({"descr": "zz", "fortran_order": False, "shape": (2,)}, b"\0" * 8, "not a readable .npy"),
}


@pytest.mark.parametrize("case", NPY_CASES)
def test_npy_header_is_checked_before_any_data_is_read(tmp_path, case, monkeypatch):
    header, data, words = NPY_CASES[case]
    path = npy_with_header(tmp_path / "v0.npy", header, data)
    monkeypatch.setattr(np, "load", lambda *args, **kwargs: pytest.fail("np.load reached"))
    with pytest.raises(UserError, match=re.escape(words)) as error:
        load_npy(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_npy_not_npy_and_empty_are_one_line(tmp_path):
    (tmp_path / "text.npy").write_text("hello")
    (tmp_path / "empty.npy").write_bytes(b"")
    for name in ("text.npy", "empty.npy"):
        with pytest.raises(UserError, match="not a readable .npy"):
            load_npy(tmp_path / name)
    np.save(tmp_path / "good.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert load_npy(tmp_path / "good.npy").tolist() == [[0, 1, 2], [3, 4, 5]]


# ---- training and evaluation on feature files ------------------------------------------------------------------------

def features_set(root, num_videos=12, bad=None):
    """A captions file and a folder of (4, 8) feature files; bad: {video index: array or bytes} replacing files."""
    folder = root / "features"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    words = ["red", "green", "blue", "cat", "dog", "car"]
    for index in range(num_videos):
        np.save(folder / f"v{index}.npy", np.random.default_rng(index).normal(size=(4, 8)).astype(np.float32))
        rows += [{"video": f"v{index}", "caption": f"a {words[index % 6]} thing moves {words[(index + 1) % 6]}",
                  "split": "train" if index < 8 else "val" if index < 10 else "test"}]
    for index, content in (bad or {}).items():
        if isinstance(content, bytes):
            (folder / f"v{index}.npy").write_bytes(content)
        else:
            np.save(folder / f"v{index}.npy", content)
    annotations = root / "captions.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokenizer = root / "tok.model"
    if not tokenizer.is_file():
        assert create_tokenizer.main(create_tokenizer.parse_args(["--annotations", str(annotations), "--vocab_size",
                                                                  "290", "--out_prefix", str(root / "tok")])) == 0
    return annotations, folder, tokenizer


def train_argv(annotations, folder, tokenizer, out_dir, *extra):
    return ["--annotations", str(annotations), "--features", str(folder), "--tokenizer_path", str(tokenizer),
            "--out_dir", str(out_dir), "--epochs", "1", *SMALL, *extra]


def test_a_lying_npy_header_in_features_is_one_line(tmp_path, capsys):
    huge = npy_with_header(tmp_path / "x.npy", {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)},
                           b"\0" * 64).read_bytes()
    annotations, folder, tokenizer = features_set(tmp_path, bad={3: huge})
    capsys.readouterr()
    assert train.main(train.parse_args(train_argv(annotations, folder, tokenizer, tmp_path / "m"))) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and "v3.npy" in lines[0] and "shape" in lines[0], lines
    assert not (tmp_path / "m").exists()


def test_absurd_feature_values_stop_training_with_one_line_and_no_checkpoint(tmp_path, capsys):
    absurd = np.full((4, 8), 1e38, np.float32)
    annotations, folder, tokenizer = features_set(tmp_path, bad={index: absurd for index in (0, 1, 2)})
    capsys.readouterr()
    assert train.main(train.parse_args(train_argv(annotations, folder, tokenizer, tmp_path / "m"))) == 2
    lines = stderr_lines(capsys)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "train split" in errors[0] and "1e+38" in errors[0] and "--features" in errors[0], lines
    assert not (tmp_path / "m" / "last.pt").exists() and not (tmp_path / "m" / "best.pt").exists()


def test_a_non_finite_loss_on_resume_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    annotations, folder, tokenizer = features_set(tmp_path)
    out_dir = tmp_path / "m"
    assert train.main(train.parse_args(train_argv(annotations, folder, tokenizer, out_dir))) == 0
    kept = snapshot(out_dir)
    for index in (8, 9):  # the validation videos: the training statistics stay finite, the val loss does not
        np.save(folder / f"v{index}.npy", np.tile(np.float32([3e38, -3e38]), (4, 4)))  # (4, 8)
    capsys.readouterr()
    code = train.main(train.parse_args(train_argv(annotations, folder, tokenizer, out_dir, "--resume", "--epochs",
                                                  "2")))
    lines = [line for line in stderr_lines(capsys) if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "val split" in lines[0] and "loss became nan" in lines[0], lines
    assert {path: data for path, data in snapshot(out_dir).items() if path.suffix == ".pt"} == \
        {path: data for path, data in kept.items() if path.suffix == ".pt"}


def test_evaluate_warns_for_each_video_with_absurd_features(tmp_path, capsys):
    annotations, folder, tokenizer = features_set(tmp_path)
    assert train.main(train.parse_args(train_argv(annotations, folder, tokenizer, tmp_path / "m"))) == 0
    for index in (10, 11):  # the test videos
        np.save(folder / f"v{index}.npy", np.full((4, 8), 1e38, np.float32))
    capsys.readouterr()
    with pytest.warns(UserWarning) as record:
        code = evaluate.main(evaluate.parse_args([
            "--model_path", str(tmp_path / "m" / "best.pt"), "--annotations", str(annotations), "--features",
            str(folder), "--split", "test", "--java", "no", "--beam_size", "1", "--num_workers", "0"]))
    assert code == 0
    absurd = [str(warning.message) for warning in record if "times the scale" in str(warning.message)]
    assert sorted(message.split(":")[0] for message in absurd) == ["v10", "v11"], absurd


# ---- captions files ------------------------------------------------------------------------------------------------

@pytest.fixture
def clips(tmp_path):
    """A folder of three (empty) video files and a symlink and a hard link to the first."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (folder / name).write_bytes(b"\0" * 16)
    (folder / "link.mp4").symlink_to(folder / "a.mp4")
    os.link(folder / "a.mp4", folder / "hard.mp4")
    return folder


def read_captions(path):
    from readers import captions

    class Args:
        annotations = str(path)
    return captions.read(path.parent, "file", Args())[0]


@pytest.mark.parametrize("spelling", ["clips/../clips/a.mp4", "{abs}/a.mp4", "clips/link.mp4", "clips/hard.mp4",
                                      "./clips/a.mp4", "clips//a.mp4"])
def test_one_video_file_in_two_splits_is_refused(tmp_path, clips, spelling):
    rows = [{"video": "clips/a.mp4", "caption": "a cat", "split": "train"},
            {"video": "clips/b.mp4", "caption": "a dog", "split": "train"},
            {"video": spelling.format(abs=clips), "caption": "a cat again", "split": "test"}]
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    from readers import DatasetError
    with pytest.raises(DatasetError, match=r"captions.jsonl:3: .*the same file as clips/a.mp4.* a video belongs to "
                                           r"one split"):
        read_captions(path)


def test_one_video_by_two_paths_without_splits_is_one_video(tmp_path, clips):
    rows = [{"video": "clips/a.mp4", "caption": "a cat"}, {"video": "clips/link.mp4", "caption": "a cat again"},
            {"video": "clips/b.mp4", "caption": "a dog"}, {"video": "clips/c.mp4", "caption": "a car"}]
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = read_captions(path)
    assert dataset.captions["clips/a"] == ["a cat", "a cat again"] and len(dataset.captions) == 3
    assert sum("clips/a" in dataset.splits[split] for split in ("train", "val", "test")) == 1


@pytest.mark.parametrize("encoding, line", [("latin-1", 2), ("utf-16", 1), ("cp1252", 3)])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_captions_file_in_another_encoding_is_one_line_naming_the_line(tmp_path, encoding, line, suffix, capsys):
    texts = ["a plain caption", "un café au lait" if line == 2 else "plain again", "a “quoted” word"
             if encoding == "cp1252" else "the end"]
    if suffix == ".jsonl":
        text = "".join(json.dumps({"video": f"v{index}.mp4", "caption": caption}, ensure_ascii=False) + "\n"
                       for index, caption in enumerate(texts))
    else:
        text = "video,caption\n" + "".join(f"v{index}.mp4,{caption}\n" for index, caption in enumerate(texts))
        line += encoding != "utf-16"  # its byte order mark, on the header line, is what fails
    path = tmp_path / f"captions{suffix}"
    path.write_bytes(text.encode(encoding))
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = create_tokenizer.main(create_tokenizer.parse_args(["--annotations", str(path), "--out_prefix",
                                                              str(tmp_path / "tok")]))
    lines = stderr_lines(capsys)
    assert code == 2 and len(lines) == 1 and f"{path}:{line}: not UTF-8" in lines[0], lines
    assert snapshot(tmp_path) == before


def test_a_captions_file_with_a_bom_is_read(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_bytes("\ufeff".encode() + "".join(json.dumps({"video": f"v{n}.mp4", "caption": "é tout"}) + "\n"
                                                  for n in range(3)).encode())
    assert read_captions(path).captions["v0"] == ["é tout"]
