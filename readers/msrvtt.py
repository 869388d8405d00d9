"""MSR-VTT: MSRVTT.zip's layout (COCO-style MSR_VTT.json and split lists), or the 2016 release's json files.

Schemes: "official" (6,513 / 497 / 2,990 videos, from train/val/test_list_full.txt or the 2016 jsons' split
fields) and "1k-A" (jsfusion's 9,000 training videos less a fixed 500-video validation carve-out / 1,000 test).
"""
import json
import os
import zipfile
from pathlib import Path

from common import VIDEO_EXTENSIONS
from readers import (SPLIT_NAMES, DatasetError, VideoCaptions, carve_out, index_video_files, warn_skipped)

SCHEMES = ("official", "1k-A")
MARKERS = ("MSR_VTT.json", "train_val_videodatainfo.json", "train_list_full.txt")  # file name patterns

# Where MSRVTT.zip keeps its split lists, relative to the MSRVTT/ folder.
SPLIT_LIST_DIR = Path("high-quality") / "structured-symlinks"
OFFICIAL_SPLIT_LISTS = {"train": "train_list_full.txt", "val": "val_list_full.txt", "test": "test_list_full.txt"}
JSFUSION_TRAIN_LIST = "train_list_jsfusion.txt"
JSFUSION_TEST_LIST = "val_list_jsfusion.txt"
# 1k-A has no validation split: this many training videos (at most a tenth of them) are carved out for it.
JSFUSION_VAL_SIZE = 500
JSFUSION_VAL_SEED = "msrvtt-1k-A-val"
# The 2016 release: its json files, and the zips they are distributed in.
RELEASE_2016_TRAINVAL = "train_val_videodatainfo.json"
RELEASE_2016_TEST = "test_videodatainfo.json"
RELEASE_2016_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
# Folders searched for videoN.mp4, relative to the dataset root (and to data_dir when it differs).
VIDEO_DIRS = (Path("videos") / "all", Path("TrainValVideo"), Path("TestVideo"), Path("videos"), Path("."))


def read_json_member(path: Path, member: str | None = None):
    """Parse a json file, or the member of a zip; DatasetError naming it when it is not valid json."""
    shown_name = f"{path}:{member}" if member else str(path)
    try:
        if member:
            with zipfile.ZipFile(path) as archive:
                text = archive.read(member)
        else:
            text = path.read_bytes()
        return json.loads(text)
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise DatasetError(f"{shown_name}: cannot read it ({error})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise DatasetError(f"{shown_name}: not valid JSON ({error}); re-download or re-extract it") from None


def read_split_list(path: Path) -> list:
    """Video ids in a split list file, one per line (a trailing ".mp4" is dropped)."""
    try:
        lines = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read this split list ({error})") from None
    video_ids = [os.path.splitext(line)[0] if line.lower().endswith(VIDEO_EXTENSIONS) else line for line in lines]
    return list(dict.fromkeys(video_ids))


def find_split_list(name: str, search_dirs) -> Path | None:
    """First search_dir/high-quality/structured-symlinks/name or search_dir/name that exists."""
    for folder in search_dirs:
        for candidate in (folder / SPLIT_LIST_DIR / name, folder / name):
            if candidate.is_file():
                return candidate
    return None


def find_coco_annotation(data_dir: Path) -> Path | None:
    """MSRVTT/annotation/MSR_VTT.json under data_dir, or data_dir itself being MSRVTT/."""
    for candidate in (data_dir / "MSRVTT" / "annotation" / "MSR_VTT.json", data_dir / "annotation" / "MSR_VTT.json"):
        if candidate.is_file():
            return candidate
    return None


def find_2016_file(name: str, folders) -> tuple | None:
    """(path, zip member or None) of the 2016 release's json `name`, bare or inside a .zip, in folders."""
    for folder in folders:
        if (folder / name).is_file():
            return folder / name, None
    for folder in folders:
        for archive_path in sorted(folder.glob("*.zip")):
            if archive_path.name.lower() == "msrvtt.zip":
                continue  # the video zip: huge, and holds the COCO-style annotation, not this file
            try:
                with zipfile.ZipFile(archive_path) as archive:
                    members = [member for member in archive.namelist() if Path(member).name == name]
            except (OSError, zipfile.BadZipFile):
                continue
            if members:
                return archive_path, members[0]
    return None


def parse_coco_annotation(path: Path):
    """MSR_VTT.json (COCO style) -> (captions by video id in file order, problems with skipped entries)."""
    annotation = read_json_member(path)
    if not isinstance(annotation, dict) or not isinstance(annotation.get("annotations"), list):
        raise DatasetError(f"{path}: expected a JSON object with an 'annotations' list (COCO style, as in MSRVTT.zip)")
    return collect_captions(annotation["annotations"], "annotations", "image_id")


def collect_captions(entries: list, list_name: str, id_key: str) -> tuple:
    """{video id: captions} from entries {"caption", id_key}, and a problem for each malformed entry skipped."""
    captions, problems = {}, []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or "caption" not in entry or id_key not in entry:
            problems.append(f"{list_name}[{position}] lacks 'caption' or '{id_key}'")
        elif not isinstance(entry["caption"], str):
            problems.append(f"{list_name}[{position}].caption is not a string")
        elif not isinstance(entry[id_key], str):
            problems.append(f"{list_name}[{position}].{id_key} is not a string")
        else:
            captions.setdefault(entry[id_key], []).append(entry["caption"])
    return captions, problems


def parse_2016_annotation(path: Path, member: str | None):
    """A 2016-release json -> (captions by video id, split by video id, problems with skipped entries)."""
    shown_name = f"{path}:{member}" if member else str(path)
    annotation = read_json_member(path, member)
    if not isinstance(annotation, dict):
        raise DatasetError(f"{shown_name}: expected a JSON object with 'videos' and 'sentences'")
    for key in ("videos", "sentences"):
        if not isinstance(annotation.get(key), list):
            raise DatasetError(f"{shown_name}: field '{key}' is missing or not a list (2016 MSR-VTT schema)")
    split_by_video, problems = {}, []
    for position, video in enumerate(annotation["videos"]):
        if not isinstance(video, dict) or not isinstance(video.get("video_id"), str):
            problems.append(f"videos[{position}].video_id is missing or not a string")
        elif video.get("split") not in RELEASE_2016_SPLITS:
            problems.append(f"videos[{position}].split is {video.get('split')!r}, not train/validate/test")
        else:
            split_by_video[video["video_id"]] = RELEASE_2016_SPLITS[video["split"]]
    captions, caption_problems = collect_captions(annotation["sentences"], "sentences", "video_id")
    return captions, split_by_video, problems + caption_problems


def jsfusion_splits(search_dirs) -> tuple:
    """The 1k-A split: (ids by split, files read). train = jsfusion train minus a validation carve-out."""
    train_path = find_split_list(JSFUSION_TRAIN_LIST, search_dirs)
    test_path = find_split_list(JSFUSION_TEST_LIST, search_dirs)
    if train_path is None or test_path is None:
        absent = JSFUSION_TRAIN_LIST if train_path is None else JSFUSION_TEST_LIST
        raise DatasetError(f"{search_dirs[0] / SPLIT_LIST_DIR / absent}: not found; scheme 1k-A needs "
                           f"{JSFUSION_TRAIN_LIST} and {JSFUSION_TEST_LIST} (in MSRVTT.zip under {SPLIT_LIST_DIR})")
    jsfusion_train = read_split_list(train_path)
    val_ids = carve_out(jsfusion_train, min(JSFUSION_VAL_SIZE, len(jsfusion_train) // 10), JSFUSION_VAL_SEED)
    splits = {"train": [video_id for video_id in jsfusion_train if video_id not in val_ids],
              "val": [video_id for video_id in jsfusion_train if video_id in val_ids],
              "test": read_split_list(test_path)}
    return splits, {"train": train_path, "val": train_path, "test": test_path}


def official_list_splits(search_dirs) -> tuple:
    """The official split from MSRVTT.zip's *_list_full.txt files: (ids by split, files read)."""
    splits, sources = {}, {}
    for split, name in OFFICIAL_SPLIT_LISTS.items():
        path = find_split_list(name, search_dirs)
        if path is None:
            raise DatasetError(f"{search_dirs[0] / SPLIT_LIST_DIR / name}: split list not found; "
                               f"unpack all of MSRVTT.zip (it ships {SPLIT_LIST_DIR}/)")
        splits[split], sources[split] = read_split_list(path), path
    return splits, sources


def read_2016_release(data_dir: Path) -> tuple:
    """Find and read the 2016 jsons (bare or zipped, in data_dir or a subfolder): (root, name, captions, splits, problems)."""
    folders = [data_dir] + sorted(path for path in data_dir.iterdir() if path.is_dir())
    trainval = find_2016_file(RELEASE_2016_TRAINVAL, folders)
    test = find_2016_file(RELEASE_2016_TEST, folders)
    if trainval is None or test is None:
        if (data_dir / "MSRVTT.zip").is_file():
            raise DatasetError(f"{data_dir / 'MSRVTT.zip'}: still zipped; unzip it there so that "
                               f"{data_dir / 'MSRVTT' / 'annotation' / 'MSR_VTT.json'} exists")
        if trainval is None and test is None:
            raise DatasetError(f"{data_dir}: no MSR-VTT annotations found (looked for MSRVTT/annotation/MSR_VTT.json "
                               f"and {RELEASE_2016_TRAINVAL}); unpack MSRVTT.zip into this folder")
        absent = RELEASE_2016_TEST if test is None else RELEASE_2016_TRAINVAL
        raise DatasetError(f"{data_dir}: {absent} not found (bare or zipped) next to the other 2016 annotation "
                           f"file; put both {RELEASE_2016_TRAINVAL} and {RELEASE_2016_TEST} there")
    captions, split_by_video, problems = {}, {}, []
    for path, member in (trainval, test):
        file_captions, file_splits, file_problems = parse_2016_annotation(path, member)
        shown_name = f"{path}:{member}" if member else str(path)
        problems += [f"{shown_name} {problem}" for problem in file_problems]
        for video_id, its_captions in file_captions.items():
            captions.setdefault(video_id, []).extend(its_captions)
        for video_id, split in file_splits.items():
            if split_by_video.get(video_id, split) != split:
                raise DatasetError(f"{shown_name}: {video_id} has split {split} here and "
                                   f"{split_by_video[video_id]} in the other file; fix the 'split' fields")
            split_by_video[video_id] = split
    root = trainval[0].parent
    annotation_name = f"{trainval[0]}" if trainval[1] is None else f"{trainval[0]}:{trainval[1]}"
    return root, annotation_name, captions, split_by_video, problems


def read(data_dir: Path, scheme: str, args=None) -> tuple:
    """(VideoCaptions, the file each split came from) of MSR-VTT in data_dir (holding MSRVTT/, or MSRVTT/ itself,
    or the 2016 jsons, bare or zipped)."""
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such folder; pass the folder holding MSRVTT/ (unpacked MSRVTT.zip)")
    coco_path = find_coco_annotation(data_dir)
    if coco_path is not None:
        root = coco_path.parent.parent
        annotation_name = str(coco_path)
        captions, problems = parse_coco_annotation(coco_path)
        split_by_video = None
    else:
        root, annotation_name, captions, split_by_video, problems = read_2016_release(data_dir)
    warn_skipped(annotation_name, problems)

    search_dirs = list(dict.fromkeys([root, data_dir]))
    if scheme == "1k-A":
        splits, sources = jsfusion_splits(search_dirs)
    elif split_by_video is None:
        splits, sources = official_list_splits(search_dirs)
    else:
        splits = {split: [video_id for video_id, its_split in split_by_video.items() if its_split == split]
                  for split in SPLIT_NAMES}
        sources = {split: annotation_name for split in SPLIT_NAMES}
    video_dirs = list(dict.fromkeys(folder / sub for folder in search_dirs for sub in VIDEO_DIRS))
    dataset = VideoCaptions(name="msrvtt", root=root, scheme=scheme, splits=splits, captions=captions,
                            find_videos=lambda: index_video_files(video_dirs),
                            expected_path=lambda video_id: root / "videos" / "all" / f"{video_id}.mp4",
                            sources=[annotation_name])
    return dataset, sources
