"""Datasets: captions, video files and train/val/test splits by video.

    from annotations import add_data_arguments, load_dataset
    data = load_dataset(args)                  # args from a parser that add_data_arguments filled
    data.splits["train"], data.captions["video0"], data.video_path("video0")

Splits are always by video, never by caption: no caption of a test video is ever seen in training.
MSR-VTT is read from MSRVTT.zip's layout or from the 2016 release; `python dataset.py --data_dir D`
prints videos, captions and missing videos per split.
"""
import hashlib
import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from common import VIDEO_EXTENSIONS, UserError

SCHEMES = ("official", "1k-A")
SPLIT_NAMES = ("train", "val", "test")
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


class DatasetError(UserError):
    """A dataset that cannot be read; the message is one line naming the file and the problem."""


@dataclass
class MSRVTT:
    """MSR-VTT annotations: video ids per split, raw captions per video, videos missing on disk."""

    root: Path                      # the MSRVTT/ folder (or the folder holding the 2016 jsons)
    splits: dict[str, list[str]]    # "train" / "val" / "test" -> video ids ("video123"), sorted by number
    captions: dict[str, list[str]]  # video id -> its raw captions, in file order
    missing: dict[str, list[str]]   # split -> ids listed but not found on disk (left out of splits)
    video_dirs: list[Path] = field(default_factory=list, repr=False)  # folders searched for videos, in order
    _video_files: dict | None = field(default=None, repr=False, compare=False)  # id -> path, built on first use

    def video_path(self, video_id: str) -> Path:
        """Path of a video's file; where it is not on disk, where it is expected (root/videos/all/ID.mp4)."""
        if self._video_files is None:
            self._video_files = index_video_files(self.video_dirs)
        return self._video_files.get(video_id, self.root / "videos" / "all" / f"{video_id}.mp4")


def video_sort_key(video_id: str):
    """Sort "video2" before "video10": by the number in the id, then by the id."""
    match = re.search(r"(\d+)$", video_id)
    return (int(match.group(1)) if match else float("inf"), video_id)


def index_video_files(video_dirs) -> dict:
    """Map video id (file stem) -> path for every video file in video_dirs; the first folder wins."""
    video_files = {}
    for folder in video_dirs:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        # Prefer .mp4 when a folder holds the same id with several extensions.
        entries.sort(key=lambda entry: (VIDEO_EXTENSIONS.index(os.path.splitext(entry.name)[1].lower())
                                        if os.path.splitext(entry.name)[1].lower() in VIDEO_EXTENSIONS else 99))
        for entry in entries:
            stem, extension = os.path.splitext(entry.name)
            if extension.lower() in VIDEO_EXTENSIONS and stem not in video_files:
                video_files[stem] = Path(entry.path)
    return video_files


def read_json(path: Path, member: str | None = None):
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
    annotation = read_json(path)
    if not isinstance(annotation, dict) or not isinstance(annotation.get("annotations"), list):
        raise DatasetError(f"{path}: expected a JSON object with an 'annotations' list (COCO style, as in MSRVTT.zip)")
    captions, problems = {}, []
    for position, entry in enumerate(annotation["annotations"]):
        if not isinstance(entry, dict) or "caption" not in entry or "image_id" not in entry:
            problems.append(f"annotations[{position}] lacks 'caption' or 'image_id'")
        elif not isinstance(entry["caption"], str):
            problems.append(f"annotations[{position}].caption is not a string")
        elif not isinstance(entry["image_id"], str):
            problems.append(f"annotations[{position}].image_id is not a string")
        else:
            captions.setdefault(entry["image_id"], []).append(entry["caption"])
    return captions, problems


def parse_2016_annotation(path: Path, member: str | None):
    """A 2016-release json -> (captions by video id, split by video id, problems with skipped entries)."""
    shown_name = f"{path}:{member}" if member else str(path)
    annotation = read_json(path, member)
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
    captions = {}
    for position, sentence in enumerate(annotation["sentences"]):
        if not isinstance(sentence, dict) or "caption" not in sentence or "video_id" not in sentence:
            problems.append(f"sentences[{position}] lacks 'caption' or 'video_id'")
        elif not isinstance(sentence["caption"], str):
            problems.append(f"sentences[{position}].caption is not a string")
        elif not isinstance(sentence["video_id"], str):
            problems.append(f"sentences[{position}].video_id is not a string")
        else:
            captions.setdefault(sentence["video_id"], []).append(sentence["caption"])
    return captions, split_by_video, problems


def warn_skipped(shown_name: str, problems: list) -> None:
    """One warning for all the malformed entries of a file that were skipped."""
    if problems:
        examples = "; ".join(problems[:3])
        warnings.warn(f"{shown_name}: skipped {len(problems)} malformed entries ({examples})", stacklevel=3)


def carve_out_validation(train_ids: list, size: int) -> set:
    """A fixed pseudo-random subset of train_ids (by a keyed hash, so it never depends on library versions)."""
    def hash_key(video_id):
        return hashlib.sha1(f"{JSFUSION_VAL_SEED}:{video_id}".encode()).hexdigest()
    return set(sorted(train_ids, key=hash_key)[:size])


def jsfusion_splits(search_dirs) -> tuple:
    """The 1k-A split: (ids by split, files read). train = jsfusion train minus a validation carve-out."""
    train_path = find_split_list(JSFUSION_TRAIN_LIST, search_dirs)
    test_path = find_split_list(JSFUSION_TEST_LIST, search_dirs)
    if train_path is None or test_path is None:
        absent = JSFUSION_TRAIN_LIST if train_path is None else JSFUSION_TEST_LIST
        raise DatasetError(f"{search_dirs[0] / SPLIT_LIST_DIR / absent}: not found; scheme 1k-A needs "
                           f"{JSFUSION_TRAIN_LIST} and {JSFUSION_TEST_LIST} (in MSRVTT.zip under {SPLIT_LIST_DIR})")
    jsfusion_train = read_split_list(train_path)
    val_ids = carve_out_validation(jsfusion_train, min(JSFUSION_VAL_SIZE, len(jsfusion_train) // 10))
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


def check_disjoint(splits: dict, sources: dict) -> None:
    """DatasetError when a video is listed in two splits (captions of one video must not leak across)."""
    seen = {}
    for split in SPLIT_NAMES:
        for video_id in splits[split]:
            if video_id in seen:
                raise DatasetError(f"{sources[split]}: {video_id} is in both {seen[video_id]} and {split}; "
                                   f"the split lists overlap, fix or re-download them")
            seen[video_id] = split


def load_msrvtt(data_dir, scheme: str = "official", check_videos: bool = True) -> MSRVTT:
    """Read MSR-VTT (MSRVTT.zip's layout, or the 2016 release's jsons) from data_dir and split it by video."""
    data_dir = Path(data_dir)
    canonical_scheme = {name.lower(): name for name in SCHEMES}.get(str(scheme).lower())
    if canonical_scheme is None:
        raise DatasetError(f"scheme {scheme!r}: unknown; use one of {', '.join(SCHEMES)}")
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
    if canonical_scheme == "1k-A":
        splits, sources = jsfusion_splits(search_dirs)
    elif split_by_video is None:
        splits, sources = official_list_splits(search_dirs)
    else:
        splits = {split: [video_id for video_id, its_split in split_by_video.items() if its_split == split]
                  for split in SPLIT_NAMES}
        sources = {split: annotation_name for split in SPLIT_NAMES}
    check_disjoint(splits, sources)

    listed = {video_id for split in SPLIT_NAMES for video_id in splits[split]}
    unlisted = sorted(set(captions) - listed, key=video_sort_key)
    if unlisted:
        warnings.warn(f"{annotation_name}: {len(unlisted)} videos with captions are in no split "
                      f"({', '.join(unlisted[:5])}); ignored", stacklevel=2)
        for video_id in unlisted:
            del captions[video_id]
    uncaptioned = sorted(listed - set(captions), key=video_sort_key)
    if uncaptioned:
        warnings.warn(f"{annotation_name}: {len(uncaptioned)} videos in the split lists have no caption "
                      f"({', '.join(uncaptioned[:5])}); left out", stacklevel=2)
    splits = {split: sorted((video_id for video_id in splits[split] if video_id in captions), key=video_sort_key)
              for split in SPLIT_NAMES}

    video_dirs = [folder / sub for folder in search_dirs for sub in VIDEO_DIRS]
    dataset = MSRVTT(root=root, splits=splits, captions=captions, missing={split: [] for split in SPLIT_NAMES},
                     video_dirs=list(dict.fromkeys(video_dirs)))
    if check_videos:
        check_video_files(dataset)
    return dataset


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


def videos_not_on_disk(dataset: MSRVTT) -> dict:
    """split -> listed video ids with no file in dataset.video_dirs (indexes the folders once)."""
    dataset._video_files = index_video_files(dataset.video_dirs)
    return {split: [video_id for video_id in dataset.splits[split] if video_id not in dataset._video_files]
            for split in SPLIT_NAMES}


def check_video_files(dataset: MSRVTT) -> None:
    """Leave out (and record in dataset.missing) listed videos not on disk; one warning, or an error if none exist."""
    dataset.missing = videos_not_on_disk(dataset)
    listed = sum(len(dataset.splits[split]) for split in SPLIT_NAMES)
    missing = [video_id for split in SPLIT_NAMES for video_id in dataset.missing[split]]
    if listed and len(missing) == listed:
        looked_in = ", ".join(str(folder) for folder in dataset.video_dirs[:3])
        raise DatasetError(f"{dataset.root}: none of the {listed} listed videos found (looked for video0.mp4 ... in "
                           f"{looked_in}, ...); unpack the videos of MSRVTT.zip there, or use check_videos=False "
                           f"for annotations only")
    if missing:
        warnings.warn(f"{dataset.root}: {len(missing)} of {listed} listed videos are not on disk "
                      f"({', '.join(missing[:5])}); left out", stacklevel=3)
        for split in SPLIT_NAMES:
            absent = set(dataset.missing[split])
            dataset.splits[split] = [video_id for video_id in dataset.splits[split] if video_id not in absent]


def dataset_summary(dataset: MSRVTT, missing: dict) -> dict:
    """Per split: videos listed (with captions), their captions, and how many of them are not on disk."""
    return {split: {"videos": len(dataset.splits[split]),
                    "captions": sum(len(dataset.captions[video_id]) for video_id in dataset.splits[split]),
                    "missing": len(missing[split])} for split in SPLIT_NAMES}


def normalize_caption(text) -> str:
    """The one normalisation of captions, for training targets and the tokenizer: lower-case, whitespace
    collapsed to single spaces, stripped: 'A  Dog\\n' -> 'a dog'."""
    return " ".join(str(text).lower().split())


def add_data_arguments(parser, data_dir="data") -> None:
    """The flags that name a dataset, the same in every script that reads one."""
    parser.add_argument("--data_dir", default=data_dir, help="folder holding MSRVTT/ (or MSRVTT/ itself)")
    parser.add_argument("--scheme", default="official", choices=SCHEMES,
                        help="MSR-VTT split: official (6,513/497/2,990 videos) or 1k-A (8,500/500/1,000)")


def load_dataset(args, check_videos: bool = True) -> MSRVTT:
    """The dataset that add_data_arguments' flags name."""
    return load_msrvtt(args.data_dir, scheme=args.scheme, check_videos=check_videos)
