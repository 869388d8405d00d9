"""MSVD, VATEX and your own captions file: readers on real annotations (skipped without ../shared) and on small
layouts written here; detection, the dataset.py summary, bad input as one line."""
import json
import shutil

import pytest

from annotations import DatasetError, detect_dataset
from readers import SPLIT_NAMES, clip_key
from inputs import load, write_video



def counts(dataset):
    return ({split: len(dataset.splits[split]) for split in SPLIT_NAMES},
            {split: sum(len(dataset.captions[v]) for v in dataset.splits[split]) for split in SPLIT_NAMES})


def assert_disjoint(dataset):
    seen = [video_id for split in SPLIT_NAMES for video_id in dataset.splits[split]]
    assert len(seen) == len(set(seen))


def copy_files(source, target, names):
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source / name, target / name)
    return target


# ---- MSVD on the real annotations ------------------------------------------------------------------------------------

S2VT = ["sents_train_lc_nopunc.txt", "sents_val_lc_nopunc.txt", "sents_test_lc_nopunc.txt"]


def test_msvd_s2vt_files_give_the_standard_split(realdata, tmp_path):
    data = copy_files(realdata / "msvd", tmp_path / "msvd", S2VT + ["youtube_mapping.txt"])
    dataset, _ = load(data)
    assert dataset.name == "msvd" and dataset.scheme == "standard"
    assert counts(dataset) == ({"train": 1200, "val": 100, "test": 670}, {"train": 48774, "val": 4290, "test": 27763})
    assert_disjoint(dataset)
    assert "-4wsuPCjDBc_5_15" in dataset.splits["train"]  # vid1, from the CRLF mapping: clip names, no "\r"
    assert all("\r" not in video_id for split in SPLIT_NAMES for video_id in dataset.splits[split])


def test_msvd_corpus_csvs_give_english_captions_with_their_newlines(realdata, tmp_path):
    data = copy_files(realdata / "msvd", tmp_path / "msvd", ["val.csv", "test.csv", "youtube_mapping.txt"])
    dataset, notes = load(data)
    videos, captions = counts(dataset)
    assert (videos["val"], captions["val"], videos["test"], captions["test"]) == (100, 4291, 670, 27768)
    assert videos["train"] == 0 and any("have no caption" in note for note in notes)  # the CSVs hold no train rows
    assert any("\n" in caption for video_id in dataset.splits["test"] for caption in dataset.captions[video_id])


def test_msvd_whole_folder_takes_csv_captions_first_and_the_split_lists(realdata):
    dataset, _ = load(realdata / "msvd")
    assert counts(dataset) == ({"train": 1200, "val": 100, "test": 670}, {"train": 48774, "val": 4291, "test": 27768})
    assert_disjoint(dataset)
    listed = json.loads((realdata / "msvd" / "test.list").read_text())
    assert sorted(dataset.splits["test"]) == sorted(listed)
    found = {path.stem for path in (realdata / "msvd" / "clips").glob("*.avi")}
    assert {video_id for video_id in dataset.video_files} == found  # the six clips, found under clips/


# ---- VATEX on the real annotations -----------------------------------------------------------------------------------

def test_vatex_validation_subset_and_public_test_sample(realdata):
    dataset, _ = load(realdata / "vatex")
    assert dataset.name == "vatex" and dataset.scheme == "official"
    assert counts(dataset) == ({"train": 0, "val": 1500, "test": 5}, {"train": 0, "val": 15000, "test": 50})
    tested, _ = load(realdata / "vatex", scheme="val-test")
    assert counts(tested) == ({"train": 0, "val": 0, "test": 1500}, {"train": 0, "val": 0, "test": 15000})


def vatex_entry(video_id, english=True):
    return {"videoID": video_id, "chCap": ["..."] * 2,
            **({"enCap": [f"a person does thing {n} in {video_id}" for n in range(3)]} if english else {})}


def test_vatex_val_test_carves_a_fixed_validation_out_of_training(tmp_path):
    training = [vatex_entry(f"clip{n:03d}-x_{n:06d}_{n + 10:06d}") for n in range(30)]
    (tmp_path / "vatex_training_v1.0.json").write_text(json.dumps(training))
    (tmp_path / "vatex_validation_v1.0.json").write_text(json.dumps([vatex_entry("val_clip_000001_000011")]))
    (tmp_path / "vatex_public_test_v1.0.json").write_text(json.dumps([vatex_entry("t_000001_000011", False)]))
    with pytest.raises(DatasetError, match="no English captions"):
        load(tmp_path, dataset="vatex")  # official needs the English public test
    dataset, _ = load(tmp_path, dataset="vatex", scheme="val-test")
    assert counts(dataset)[0] == {"train": 27, "val": 3, "test": 1}
    again, _ = load(tmp_path, dataset="vatex", scheme="val-test")
    assert again.splits == dataset.splits


def test_vatex_clips_are_found_anywhere_with_or_without_zero_padding(tmp_path):
    ids = ["a_b-c_000005_000015", "xy-Z_000100_000110"]
    (tmp_path / "vatex_validation_v1.0.json").write_text(json.dumps([vatex_entry(video_id) for video_id in ids]))
    (tmp_path / "clips" / "deep").mkdir(parents=True)
    write_video(tmp_path / "clips" / "deep" / "a_b-c_5_15.mp4", num_frames=4)  # times without padding
    write_video(tmp_path / "clips" / "xy-Z_000100_000110.mkv", num_frames=4, container_format="matroska")
    dataset, _ = load(tmp_path, check_videos=True)
    assert dataset.video_path(ids[0]).name == "a_b-c_5_15.mp4" and dataset.video_path(ids[1]).suffix == ".mkv"
    assert clip_key("a_b-c_5_15") == clip_key("a_b-c_000005_000015") == ("a_b-c", 5, 15)


# ---- MSVD on a small layout ------------------------------------------------------------------------------------------

def test_msvd_all_descriptions_txt_mapping_and_clips_in_any_container(tmp_path):
    clips = ["abc_1_5", "d-e_f_2_9", "ghi_0_3"]
    (tmp_path / "youtube_mapping.txt").write_text("\r\n".join(f"{clip} vid{n}" for clip, n in zip(clips, (1, 1201, 1301))))
    (tmp_path / "AllVideoDescriptions.txt").write_text(
        "# MSVD descriptions\n# clip caption\n" + "".join(f"{clip} a thing happens in {clip}\n" for clip in clips))
    (tmp_path / "YouTubeClips").mkdir()
    write_video(tmp_path / "YouTubeClips" / "abc_1_5.avi", num_frames=4, container_format="avi")
    write_video(tmp_path / "YouTubeClips" / "d-e_f_2_9.mp4", num_frames=4)
    dataset, notes = load(tmp_path, check_videos=True)
    assert dataset.splits == {"train": ["abc_1_5"], "val": ["d-e_f_2_9"], "test": []}  # ghi_0_3 has no file
    assert dataset.missing["test"] == ["ghi_0_3"] and any("not on disk" in note for note in notes)
    assert dataset.captions["abc_1_5"] == ["a thing happens in abc_1_5"]  # comment lines skipped


# ---- your own captions file ------------------------------------------------------------------------------------------

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_captions_file_without_split_is_split_by_video_once_and_reused(tmp_path):
    rows = [{"video": f"clips/v{n}.mp4", "caption": f"caption {k} of clip {n}"} for n in range(20) for k in range(3)]
    path = write_jsonl(tmp_path / "captions.jsonl", rows)
    dataset, _ = load(annotations=str(path))
    assert dataset.name == "captions" and counts(dataset) == ({"train": 16, "val": 2, "test": 2},
                                                               {"train": 48, "val": 6, "test": 6})
    assert_disjoint(dataset)
    assert dataset.video_path("clips/v3") == tmp_path / "clips" / "v3.mp4"
    saved = json.loads((tmp_path / "captions.splits.json").read_text())
    assert {split: saved[split] for split in SPLIT_NAMES} == dataset.splits
    other_seed, _ = load(annotations=str(path), split_seed=5, split_fractions=(0.5, 0.25, 0.25))
    assert other_seed.splits == dataset.splits  # the written split wins: a teammate and evaluate.py get the same
    write_jsonl(path, rows + [{"video": "clips/new.mp4", "caption": "a new clip"}])
    with pytest.raises(DatasetError, match="in no split"):
        load(annotations=str(path))


def test_captions_csv_with_split_column(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text('video,caption,split\na.mp4,"a cat, sitting",train\na.mp4,a cat,train\nb.mp4,"two\nlines",val\n'
                    "c.mp4,a dog,test\n")
    dataset, _ = load(annotations=str(path))
    assert dataset.splits == {"train": ["a"], "val": ["b"], "test": ["c"]}
    assert dataset.captions["a"] == ["a cat, sitting", "a cat"] and dataset.captions["b"] == ["two\nlines"]
    assert not (tmp_path / "captions.splits.json").exists()


@pytest.mark.parametrize("rows, words", [
    ([{"video": "a.mp4", "caption": "x", "split": "train"}, {"caption": "y", "split": "train"}], ":2: no 'video'"),
    ([{"video": "a.mp4", "caption": "  "}], ":1: empty or missing 'caption'"),
    ([{"video": "a.mp4", "caption": "x", "split": "train"}, {"video": "a.mp4", "caption": "y", "split": "test"}],
     ":2: a.mp4 is in test here and in train"),
    ([{"video": "a.mp4", "caption": "x", "split": "holdout"}], ":1: split 'holdout'"),
])
def test_bad_rows_name_their_line(tmp_path, rows, words):
    with pytest.raises(DatasetError, match=words):
        load(annotations=str(write_jsonl(tmp_path / "captions.jsonl", rows)))


# ---- detection, the summary command, bad input -----------------------------------------------------------------------

def test_layout_is_detected_and_the_flag_wins(tmp_path):
    (tmp_path / "msvd").mkdir()
    (tmp_path / "msvd" / "youtube_mapping.txt").write_text("abc_1_5 vid1")
    (tmp_path / "vatex" / "annotations").mkdir(parents=True)
    (tmp_path / "vatex" / "annotations" / "vatex_validation_v1.0.json").write_text("[]")
    (tmp_path / "other").mkdir()
    assert [detect_dataset(tmp_path / name) for name in ("msvd", "vatex", "other")] == ["msvd", "vatex", "msrvtt"]
    with pytest.raises(DatasetError, match="no MSR-VTT annotations"):
        load(tmp_path / "msvd", dataset="msrvtt")
    with pytest.raises(DatasetError, match="scheme 'official': unknown for msvd"):
        load(tmp_path / "msvd", scheme="official")


def test_summary_command_reads_every_dataset(realdata, tmp_path, run_cli):
    vatex = json.loads(run_cli("dataset", "--data_dir", str(realdata / "vatex"), "--json").stdout)
    assert vatex["dataset"] == "vatex" and vatex["splits"]["val"] == {"videos": 1500, "captions": 15000,
                                                                      "missing": 1500}
    path = write_jsonl(tmp_path / "c.jsonl", [{"video": "a.mp4", "caption": "x", "split": "test"}])
    table = run_cli("dataset", "--dataset", "captions", "--annotations", str(path))
    assert table.returncode == 0 and "test" in table.stdout


@pytest.mark.parametrize("make, words", [
    (lambda d: (d / "captions.jsonl").write_text('{"video": "a.mp4"\n'), ":1: not a JSON object"),
    (lambda d: (d / "vatex_validation_v1.0.json").write_text('{"videoID": 1}'), "expected a JSON list"),
    (lambda d: (d / "youtube_mapping.txt").write_text("abc_1_5 vid1 extra"), "youtube_mapping.txt:1: expected"),
])
def test_malformed_annotation_files_are_one_line_exit_2(tmp_path, make, words, run_cli):
    make(tmp_path)
    flags = ["--annotations", str(tmp_path / "captions.jsonl")] if (tmp_path / "captions.jsonl").exists() else \
        ["--data_dir", str(tmp_path)]
    result = run_cli("dataset", *flags)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
