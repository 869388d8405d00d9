"""Flags and files a user gets wrong, caught before any work: numbers out of range, a run that would be overwritten,
features with NaN, outputs that could not be written, a glob that matches nothing, a byte-order mark."""
import json

import numpy as np
import pytest

import create_tokenizer
import dataset
import encode
import evaluate
import inference
import train
from annotations import DatasetError
from common import UserError, check_writable, expand_video_paths
from encode import CacheError, load_feature_file, split_features
from inputs import load


@pytest.mark.parametrize("module, flags", [
    (train, ["--batch_size", "0"]), (train, ["--epochs", "-1"]), (train, ["--dropout", "1.5"]),
    (train, ["--learning_rate", "nan"]), (train, ["--hidden_dim", "0"]), (train, ["--split_fractions", "-1", "1", "1"]),
    (evaluate, ["--beam_size", "0"]), (evaluate, ["--length_penalty", "inf"]), (evaluate, ["--max_len", "0"]),
    (inference, ["--num_captions", "0"]), (inference, ["--top_p", "0"]), (inference, ["--temperature", "inf"]),
    (inference, ["--segment_seconds", "-1"]),
    (encode, ["--num_shards", "0"]), (encode, ["--num_workers", "-1"]), (encode, ["--splits", "bogus"]),
    (dataset, ["--num_frames", "100000"]), (create_tokenizer, ["--vocab_size", "0"]),
])
def test_numbers_out_of_range_are_refused_by_the_parser(module, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(flags)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"error: argument {flags[0]}" in last and "Traceback" not in last


def test_train_refuses_to_overwrite_a_run_unless_told(tmp_path):
    out_dir = tmp_path / "models"
    args = train.parse_args(["--out_dir", str(out_dir)])
    assert train.check_args(args) is None  # an empty or new folder
    out_dir.mkdir()
    (out_dir / "log.jsonl").write_text('{"epoch": 1}\n')
    problem = train.check_args(args)
    assert problem.startswith(f"{out_dir}: holds a run (log.jsonl)") and "--resume" in problem and "--overwrite" in problem
    assert train.check_args(train.parse_args(["--out_dir", str(out_dir), "--overwrite"])) is None
    assert train.check_args(train.parse_args(["--out_dir", str(out_dir), "--resume"])) is None
    assert "pass one" in train.check_args(train.parse_args(["--out_dir", str(out_dir), "--resume", "--overwrite"]))


def test_a_bad_tokenizer_or_nothing_to_resume_is_one_line(tmp_path):
    not_a_model = tmp_path / "tokenizer.model"
    not_a_model.write_bytes(b"not sentencepiece")
    args = train.parse_args(["--out_dir", str(tmp_path / "models"), "--tokenizer_path", str(not_a_model)])
    with pytest.raises(UserError, match="not a sentencepiece model"):
        train.prepare_data(args, "cpu", 1)
    words = ["a", "man", "dog", "cat", "runs", "jumps", "on", "the", "grass", "table", "red", "blue", "small"]
    captions = [" ".join(words[(n * k) % len(words)] for k in range(1, 6)) for n in range(300)]
    tokenizer = create_tokenizer.train_tokenizer(captions, tmp_path / "tok", vocab_size=400)
    args = train.parse_args(["--out_dir", str(tmp_path / "models"), "--tokenizer_path", str(tokenizer), "--resume"])
    with pytest.raises(UserError, match="nothing to resume; leave --resume out"):
        train.prepare_data(args, "cpu", 1)


def test_features_with_nan_or_inf_name_the_file(tmp_path):
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.ones((4, 8), np.float32))
    np.save(bad, np.array([[1.0, np.nan], [np.inf, 0.0]], np.float32))
    assert load_feature_file(good).shape == (4, 8)
    with pytest.raises(CacheError, match=r"bad\.npy: holds 2 NaN or infinite values"):
        load_feature_file(bad)


def test_one_vector_per_video_is_not_taken_for_frame_features(tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    for video_id in ("a", "b"):
        np.save(features / f"{video_id}.npy", np.ones(8, np.float32))
    data = type("Data", (), {"splits": {"train": ["a", "b"]}})()
    with pytest.raises(CacheError, match=r"a\.npy: shape \(8,\), one vector per video; .*--decoder pooled"):
        split_features(data, ["train"], features, frame_features=True)


def test_outputs_that_cannot_be_written_are_refused_first(tmp_path):
    check_writable(tmp_path / "new" / "results.json", "--out")  # a missing folder is made
    assert (tmp_path / "new").is_dir()
    with pytest.raises(UserError, match="is a folder"):
        check_writable(tmp_path, "--out")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="file is a file, not a folder"):
        check_writable(tmp_path / "file" / "results.json", "--out")


def test_a_glob_that_matches_nothing_is_kept_to_be_reported(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    assert expand_video_paths([str(tmp_path / "*.mp4")]) == [tmp_path / "a.mp4"]
    assert expand_video_paths([str(tmp_path / "*.mkv")]) == [tmp_path / "*.mkv"]


def test_a_byte_order_mark_is_not_part_of_the_first_caption(tmp_path):
    path = tmp_path / "hyp.txt"
    path.write_bytes("\ufeffa man is cooking\na dog runs\n".encode("utf-8"))
    assert evaluate.read_caption_lines(str(path)) == ["a man is cooking", "a dog runs"]


def test_captions_split_needs_a_training_share_and_a_saved_split_wins_with_a_warning(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text("".join(json.dumps({"video": f"v{n}.mp4", "caption": f"clip {n}"}) + "\n" for n in range(10)))
    with pytest.raises(DatasetError, match="the training split needs a share above 0"):
        load(annotations=str(path), split_fractions=(0.0, 0.5, 0.5))
    first, _ = load(annotations=str(path))
    again, quiet = load(annotations=str(path))  # the defaults: no warning
    other, told = load(annotations=str(path), split_seed=3)
    assert again.splits == other.splits == first.splits
    assert not quiet and len(told) == 1 and "this saved split is used, not --split_seed 3" in told[0]
