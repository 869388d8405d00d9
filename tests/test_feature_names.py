"""--features finds a video's file by its id (DIR/clips/cat.npy for "clips/cat") or by its flat name (DIR/cat.npy,
as feature extractors write it); two videos sharing a flat name are one clear error."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

import train
from encode import CacheError, feature_files, split_features
from create_tokenizer import train_tokenizer


def write_features(folder, names, size=8):
    for index, name in enumerate(names):
        path = folder / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((2, size), index, dtype=np.float32))


def test_flat_files_serve_ids_with_subfolders(tmp_path):
    write_features(tmp_path, ["cat", "dog", "video7"])
    dataset = SimpleNamespace(splits={"train": ["clips/cat", "more/clips/dog", "video7"], "val": [], "test": []})
    (ids, features), = [split_features(dataset, ["train"], tmp_path)[0]["train"]]
    assert ids == ["clips/cat", "more/clips/dog", "video7"]
    assert features[:, 0].tolist() == [0, 1, 2]


def test_the_file_named_by_the_id_comes_first(tmp_path):
    write_features(tmp_path, ["cat", "clips/cat"])  # values 0 (flat) and 1 (nested)
    assert feature_files(tmp_path, ["clips/cat"]) == {"clips/cat": tmp_path / "clips" / "cat.npy"}


def test_two_videos_sharing_a_flat_name_are_an_error(tmp_path):
    write_features(tmp_path, ["cat"])
    with pytest.raises(CacheError, match="a/cat, b/cat share the file name cat"):
        feature_files(tmp_path, ["a/cat", "b/cat"])
    write_features(tmp_path, ["a/cat", "b/cat"])  # each under its id: no ambiguity
    assert feature_files(tmp_path, ["a/cat", "b/cat"])["b/cat"] == tmp_path / "b" / "cat.npy"


def test_train_on_a_captions_file_with_subfolders_and_flat_features(tmp_path, capsys):
    features = tmp_path / "features"
    rows = []
    for n in range(12):
        rows += [{"video": f"clips/part{n % 2}/v{n}.mp4", "caption": f"a caption of clip {n % 3}",
                  "split": "train" if n < 8 else "val" if n < 10 else "test"}]
    write_features(features, [f"v{n}" for n in range(12)])
    annotations = tmp_path / "captions.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokenizer = train_tokenizer([row["caption"] for row in rows], tmp_path / "tok", vocab_size=280)
    flags = ["--annotations", str(annotations), "--features", str(features), "--tokenizer_path", str(tokenizer),
             "--epochs", "1", "--batch_size", "4", "--embed_dim", "8", "--hidden_dim", "8", "--num_layers", "1",
             "--beam_size", "1", "--device", "cpu", "--bf16", "off"]
    assert train.main(train.parse_args(flags + ["--out_dir", str(tmp_path / "m")])) == 0
    assert "train: 8 videos" in capsys.readouterr().out
    # A second clip named v0 in another folder: the flat v0.npy could be either.
    rows.append({"video": "clips/other/v0.mp4", "caption": "another clip", "split": "train"})
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert train.main(train.parse_args(flags + ["--out_dir", str(tmp_path / "m2")])) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "share the file name v0" in err[0]
