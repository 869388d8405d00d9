"""load_msrvtt on hand-made MSR-VTT trees (MSRVTT.zip layout and the 2016 release) and on the real annotations."""
import json
import shutil
import time
import warnings
import zipfile

import pytest

from annotations import DatasetError, VideoCaptions, load_msrvtt

SPLIT_IDS = {"train": [0, 1, 2, 3, 10, 11], "val": [4, 5], "test": [6, 7, 8, 9]}


def captions_of(number):
    return [f"caption {k} of video {number}" for k in range(3)]


def write_coco_tree(data_dir, split_ids=SPLIT_IDS, videos=True, annotations=None):
    """data_dir/MSRVTT/ as MSRVTT.zip unpacks: annotation json, split lists (no trailing newline), videos/all."""
    root = data_dir / "MSRVTT"
    (root / "annotation").mkdir(parents=True)
    numbers = sorted(n for ids in split_ids.values() for n in ids)
    if annotations is None:
        # Captions interleaved across videos, as in the real file, so "file order" is meaningful.
        annotations = [{"caption": captions_of(n)[k], "id": k * 100 + n, "image_id": f"video{n}"}
                       for k in range(3) for n in numbers]
    document = {"info": {}, "images": [{"id": f"video{n}"} for n in numbers], "annotations": annotations}
    (root / "annotation" / "MSR_VTT.json").write_text(json.dumps(document))
    lists = root / "high-quality" / "structured-symlinks"
    lists.mkdir(parents=True)
    for split, name in (("train", "train_list_full.txt"), ("val", "val_list_full.txt"),
                        ("test", "test_list_full.txt")):
        (lists / name).write_text("\n".join(f"video{n}" for n in split_ids[split]))
    (root / "videos" / "all").mkdir(parents=True)
    if videos:
        for n in numbers:
            (root / "videos" / "all" / f"video{n}.mp4").write_bytes(b"placeholder")
    return root


def release_2016_documents(split_ids=SPLIT_IDS):
    """(train_val json, test json) in the 2016 schema."""
    split_field = {"train": "train", "val": "validate", "test": "test"}
    documents = {}
    for part, splits in (("trainval", ("train", "val")), ("test", ("test",))):
        numbers = sorted(n for split in splits for n in split_ids[split])
        videos = [{"category": 1, "url": "u", "video_id": f"video{n}", "start time": 0.0, "end time": 1.0,
                   "split": split_field[split], "id": n} for split in splits for n in split_ids[split]]
        sentences = [{"caption": captions_of(n)[k], "video_id": f"video{n}", "sen_id": k * 100 + n}
                     for k in range(3) for n in numbers]
        documents[part] = {"info": {}, "videos": videos, "sentences": sentences}
    return documents["trainval"], documents["test"]


def write_2016_tree(folder, zipped=False, videos=True):
    """The 2016 release in folder: bare jsons, or the two zips as distributed; videos in TrainValVideo/TestVideo."""
    folder.mkdir(parents=True, exist_ok=True)
    trainval, test = release_2016_documents()
    if zipped:
        with zipfile.ZipFile(folder / "train_val_annotation.zip", "w") as archive:
            archive.writestr("category.txt", "music\t0\n")
            archive.writestr("train_val_videodatainfo.json", json.dumps(trainval))
        with zipfile.ZipFile(folder / "test_videodatainfo.json.zip", "w") as archive:
            archive.writestr("test_videodatainfo.json", json.dumps(test))
    else:
        (folder / "train_val_videodatainfo.json").write_text(json.dumps(trainval))
        (folder / "test_videodatainfo.json").write_text(json.dumps(test))
    if videos:
        for sub, splits in (("TrainValVideo", ("train", "val")), ("TestVideo", ("test",))):
            (folder / sub).mkdir()
            for split in splits:
                for n in SPLIT_IDS[split]:
                    (folder / sub / f"video{n}.mp4").write_bytes(b"placeholder")


def load_quietly(*args, **kwargs):
    """load_msrvtt, failing the test on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_msrvtt(*args, **kwargs)


def expected_splits():
    return {split: [f"video{n}" for n in sorted(ids)] for split, ids in SPLIT_IDS.items()}


def test_coco_layout_splits_captions_and_paths(tmp_path):
    root = write_coco_tree(tmp_path)
    for data_dir in (tmp_path, root):  # the folder holding MSRVTT/, or MSRVTT/ itself
        dataset = load_quietly(data_dir)
        assert isinstance(dataset, VideoCaptions)
        assert dataset.root == root
        assert dataset.splits == expected_splits()
        assert dataset.splits["train"][-2:] == ["video10", "video11"]  # sorted by number, not as text
        assert dataset.captions["video10"] == captions_of(10)  # file order kept
        assert dataset.missing == {"train": [], "val": [], "test": []}
        assert dataset.video_path("video5") == root / "videos" / "all" / "video5.mp4"


@pytest.mark.parametrize("zipped", [False, True])
@pytest.mark.parametrize("in_subfolder", [False, True])
def test_2016_release_bare_or_zipped(tmp_path, zipped, in_subfolder):
    folder = tmp_path / "msrvtt2016" if in_subfolder else tmp_path
    write_2016_tree(folder, zipped=zipped)
    dataset = load_quietly(tmp_path)
    assert dataset.splits == expected_splits()
    assert dataset.captions["video7"] == captions_of(7)
    assert dataset.video_path("video1") == folder / "TrainValVideo" / "video1.mp4"
    assert dataset.video_path("video8") == folder / "TestVideo" / "video8.mp4"


def test_2016_release_needs_both_files(tmp_path):
    write_2016_tree(tmp_path, videos=False)
    (tmp_path / "test_videodatainfo.json").unlink()
    with pytest.raises(DatasetError, match="test_videodatainfo.json"):
        load_msrvtt(tmp_path, check_videos=False)


def test_missing_videos_warn_once_and_are_left_out(tmp_path):
    root = write_coco_tree(tmp_path)
    for n in (2, 5, 9):
        (root / "videos" / "all" / f"video{n}.mp4").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_msrvtt(tmp_path)
    assert len(caught) == 1
    assert "3 of 12" in str(caught[0].message) and "video2" in str(caught[0].message)
    assert dataset.missing == {"train": ["video2"], "val": ["video5"], "test": ["video9"]}
    assert "video2" not in dataset.splits["train"] and "video5" not in dataset.splits["val"]
    assert len(dataset.splits["train"]) == 5


def test_no_videos_at_all_is_an_error_saying_where_it_looked(tmp_path):
    root = write_coco_tree(tmp_path, videos=False)
    with pytest.raises(DatasetError) as caught:
        load_msrvtt(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(root / "videos" / "all") in message and "--features DIR" in message


def test_check_videos_false_checks_nothing(tmp_path):
    write_coco_tree(tmp_path, videos=False)
    dataset = load_quietly(tmp_path, check_videos=False)
    assert dataset.splits == expected_splits()
    assert dataset.missing == {"train": [], "val": [], "test": []}


def test_overlapping_split_lists_are_an_error(tmp_path):
    write_coco_tree(tmp_path, split_ids={"train": [0, 1, 2], "val": [2, 3], "test": [4]})
    with pytest.raises(DatasetError, match=r"val_list_full.txt: video2 is in both train and val"):
        load_msrvtt(tmp_path, check_videos=False)


def test_1k_a_scheme_carves_validation_from_jsfusion_train(tmp_path):
    root = write_coco_tree(tmp_path, split_ids={"train": list(range(30)), "val": [30, 31], "test": list(range(32, 40))})
    lists = root / "high-quality" / "structured-symlinks"
    (lists / "train_list_jsfusion.txt").write_text("\n".join(f"video{n}" for n in range(35)))
    (lists / "val_list_jsfusion.txt").write_text("\n".join(f"video{n}" for n in range(35, 40)))
    first = load_quietly(tmp_path, scheme="1k-A", check_videos=False)
    second = load_quietly(tmp_path, scheme="1k-A", check_videos=False)
    assert first.splits == second.splits  # the carve-out is deterministic
    assert len(first.splits["val"]) == 3 and len(first.splits["train"]) == 32  # a tenth of 35, at most 500
    assert first.splits["test"] == [f"video{n}" for n in range(35, 40)]
    assert sorted(first.splits["train"] + first.splits["val"], key=lambda v: int(v[5:])) == \
        [f"video{n}" for n in range(35)]
    assert not set(first.splits["train"]) & set(first.splits["val"])


def test_unknown_scheme_is_an_error(tmp_path):
    write_coco_tree(tmp_path)
    with pytest.raises(DatasetError, match="scheme"):
        load_msrvtt(tmp_path, scheme="random")


def test_invalid_json_names_the_file(tmp_path):
    root = write_coco_tree(tmp_path)
    (root / "annotation" / "MSR_VTT.json").write_text('{"annotations": [')
    with pytest.raises(DatasetError, match=r"MSR_VTT.json: not valid JSON"):
        load_msrvtt(tmp_path)


def test_annotations_not_a_list_names_the_field(tmp_path):
    root = write_coco_tree(tmp_path)
    (root / "annotation" / "MSR_VTT.json").write_text('{"annotations": {"caption": "x"}}')
    with pytest.raises(DatasetError, match=r"MSR_VTT.json: .*'annotations'"):
        load_msrvtt(tmp_path)


def test_bad_caption_entries_are_skipped_with_one_warning(tmp_path):
    annotations = [{"caption": captions_of(n)[0], "id": n, "image_id": f"video{n}"} for n in range(12)]
    annotations += [{"caption": 42, "id": 100, "image_id": "video0"}, {"id": 101, "image_id": "video1"},
                    "not an object"]
    write_coco_tree(tmp_path, annotations=annotations)
    with pytest.warns(UserWarning, match=r"MSR_VTT.json: skipped 3 malformed entries.*caption is not a string"):
        dataset = load_msrvtt(tmp_path)
    assert dataset.captions["video0"] == [captions_of(0)[0]]


def test_video_in_no_split_warns_and_is_ignored(tmp_path):
    annotations = [{"caption": "c", "id": n, "image_id": f"video{n}"} for n in list(range(12)) + [99]]
    write_coco_tree(tmp_path, annotations=annotations)
    with pytest.warns(UserWarning, match=r"1 videos with captions are in no split \(video99\)"):
        dataset = load_msrvtt(tmp_path)
    assert "video99" not in dataset.captions


def test_listed_video_without_captions_warns_and_is_left_out(tmp_path):
    annotations = [{"caption": "c", "id": n, "image_id": f"video{n}"} for n in range(11)]  # none for video11
    write_coco_tree(tmp_path, annotations=annotations)
    with pytest.warns(UserWarning, match=r"no caption \(video11\)"):
        dataset = load_msrvtt(tmp_path)
    assert "video11" not in dataset.splits["train"]


def test_2016_missing_sentences_field_names_it(tmp_path):
    write_2016_tree(tmp_path, videos=False)
    trainval, _ = release_2016_documents()
    del trainval["sentences"]
    (tmp_path / "train_val_videodatainfo.json").write_text(json.dumps(trainval))
    with pytest.raises(DatasetError, match=r"train_val_videodatainfo.json: field 'sentences'"):
        load_msrvtt(tmp_path, check_videos=False)


def test_2016_unknown_split_value_is_skipped_with_a_warning(tmp_path):
    write_2016_tree(tmp_path, videos=False)
    trainval, _ = release_2016_documents()
    trainval["videos"][0]["split"] = "dev"
    (tmp_path / "train_val_videodatainfo.json").write_text(json.dumps(trainval))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_msrvtt(tmp_path, check_videos=False)
    messages = " | ".join(str(warning.message) for warning in caught)
    assert "videos[0].split is 'dev'" in messages and "in no split (video0)" in messages
    assert "video0" not in dataset.splits["train"]


def test_no_annotations_found_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="no MSR-VTT annotations found"):
        load_msrvtt(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        load_msrvtt(tmp_path / "absent")


def test_cli_summary_json_and_bad_folder(tmp_path, run_cli):
    root = write_coco_tree(tmp_path)
    (root / "videos" / "all" / "video4.mp4").unlink()
    result = run_cli("dataset", "--data_dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["splits"]
    assert summary["train"] == {"videos": 6, "captions": 18, "missing": 0}
    assert summary["val"] == {"videos": 2, "captions": 6, "missing": 1}
    table = run_cli("dataset", "--data_dir", str(tmp_path))
    assert table.returncode == 0 and "test" in table.stdout
    bad = run_cli("dataset", "--data_dir", str(tmp_path / "absent"))
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "absent" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_real_annotations_official_split(realdata):
    started = time.perf_counter()
    dataset = load_quietly(realdata / "msrvtt" / "MSRVTT", check_videos=False)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    assert {split: len(ids) for split, ids in dataset.splits.items()} == {"train": 6513, "val": 497, "test": 2990}
    assert all(len(dataset.captions[video_id]) == 20 for ids in dataset.splits.values() for video_id in ids)
    assert dataset.splits["train"][:2] == ["video0", "video1"] and dataset.splits["test"][-1] == "video9999"
    assert dataset.captions["video2960"][0] == "a cartoon animals runs through an ice cave in a video game"


def test_real_annotations_1k_a_split(realdata):
    dataset = load_quietly(realdata / "msrvtt", scheme="1k-A", check_videos=False)
    assert {split: len(ids) for split, ids in dataset.splits.items()} == {"train": 8500, "val": 500, "test": 1000}
    assert not set(dataset.splits["train"]) & set(dataset.splits["val"])


def test_real_2016_release_zips_match_msrvtt_zip_layout(realdata, tmp_path):
    for name in ("train_val_annotation.zip", "test_videodatainfo.json.zip"):
        shutil.copy(realdata / "msrvtt" / name, tmp_path / name)
    from_2016 = load_quietly(tmp_path, check_videos=False)
    from_coco = load_quietly(realdata / "msrvtt" / "MSRVTT", check_videos=False)
    assert from_2016.splits == from_coco.splits
    assert from_2016.captions == from_coco.captions
