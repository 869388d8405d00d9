"""MSVD (the Microsoft Research Video Description Corpus, "YouTube2Text"): 1,970 clips, ~40 English captions each.

Video ids are the clip names, `<youtube id>_<start>_<end>`, as the video files are named (`<clip>.avi`,
anywhere under the data folder; `YouTubeClips/` is the usual place). Captions come from whichever of these
the folder holds, a video's captions from the first that has them:
  1. the official corpus CSV (`MSR Video Description Corpus.csv`, `video_corpus.csv`, or any CSV with its
     VideoID/Start/End/Language/Description columns, with or without a leading index column): English rows;
  2. `AllVideoDescriptions.txt`: lines `<clip> <caption>`, `#` comments;
  3. S2VT's `sents_{train,val,test}_lc_nopunc.txt`: `vidN<TAB>caption`, vidN mapped to clips by
     `youtube_mapping.txt` (`<clip> vidN`).
Split ("standard", the one papers use): the split lists when present (`train.list`/`valid.list`/`test.list`,
JSON lists, or `train_list.txt`/`val_list.txt`/`test_list.txt`), else by the mapping's numbers (vid1-1200
train, vid1201-1300 val, vid1301-1970 test), else the split of the S2VT file a video's captions came from.
"""
import csv
import io
import os
import re
import warnings
from pathlib import Path

from readers import SPLIT_NAMES, DatasetError, VideoCaptions, clip_finder, read_json, read_text

SCHEMES = ("standard",)
MARKERS = ("youtube_mapping.txt", "AllVideoDescriptions.txt", "sents_*_lc_nopunc.txt", "video_corpus.csv",
           "MSR Video Description Corpus.csv")  # file name patterns
MAPPING = "youtube_mapping.txt"
S2VT_FILES = {split: f"sents_{split}_lc_nopunc.txt" for split in SPLIT_NAMES}
STANDARD_SPLIT = {"train": range(1, 1201), "val": range(1201, 1301), "test": range(1301, 1971)}
LIST_FILES = {"train": ("train.list", "train_list.txt"), "val": ("valid.list", "val.list", "val_list.txt",
                                                                 "valid_list.txt"),
              "test": ("test.list", "test_list.txt")}
CORPUS_COLUMNS = {"VideoID", "Start", "End", "Language", "Description"}


def annotation_files(data_dir: Path) -> dict:
    """file name -> path of every annotation file (.txt, .csv, .list, .json) in data_dir and up to two folders
    below it (the first found wins)."""
    found = {}
    for directory, subdirectories, names in os.walk(data_dir):
        depth = len(Path(directory).relative_to(data_dir).parts)
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith(".")) if depth < 2 else []
        for name in sorted(names):
            if name.lower().endswith((".txt", ".csv", ".list", ".json")):
                found.setdefault(name, Path(directory) / name)
    return found


def read_mapping(path: Path) -> dict:
    """youtube_mapping.txt -> {clip name: vidN} (CRLF or LF, no final newline needed)."""
    mapping = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not re.fullmatch(r"vid\d+", fields[1]):
            raise DatasetError(f"{path}:{number}: expected '<clip name> vidN', got {line[:80]!r}")
        mapping[fields[0]] = fields[1]
    return mapping


def read_corpus_csv(path: Path) -> dict:
    """English captions of an MSR Video Description Corpus CSV -> {clip: [captions]}; {} when the CSV is not one
    (lacks its columns). Quoted descriptions may hold newlines: read with a CSV parser."""
    rows = csv.DictReader(io.StringIO(read_text(path)))
    if not CORPUS_COLUMNS <= set(rows.fieldnames or []):
        return {}
    captions = {}
    for row in rows:
        if (row.get("Language") or "").strip() == "English" and (row.get("Description") or "").strip():
            clip = f"{row['VideoID']}_{row['Start']}_{row['End']}"
            captions.setdefault(clip, []).append(row["Description"])
    return captions


def read_all_descriptions(path: Path) -> dict:
    """AllVideoDescriptions.txt -> {clip: [captions]}: lines `<clip> <caption>`, '#' lines are comments."""
    captions = {}
    for line in read_text(path).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            clip, _, caption = line.strip().partition(" ")
            if caption.strip():
                captions.setdefault(clip, []).append(caption.strip())
    return captions


def read_s2vt(files: dict, clip_by_vid: dict) -> tuple:
    """S2VT's sents_{split}_lc_nopunc.txt -> ({video id: [captions]}, {video id: split}); ids are clips where the
    mapping names them, vidN otherwise."""
    captions, split_by_video = {}, {}
    for split, name in S2VT_FILES.items():
        if name not in files:
            continue
        for number, line in enumerate(read_text(files[name]).splitlines(), start=1):
            if not line.strip():
                continue
            vid, tab, caption = line.partition("\t")
            if not tab:
                raise DatasetError(f"{files[name]}:{number}: expected 'vidN<TAB>caption', got {line[:80]!r}")
            video_id = clip_by_vid.get(vid.strip(), vid.strip())
            captions.setdefault(video_id, []).append(caption.strip())
            split_by_video[video_id] = split
    return captions, split_by_video


def read_split_lists(files: dict) -> dict | None:
    """The split lists (JSON lists or one id per line) -> {split: ids}, or None when there are none."""
    splits = {}
    for split, names in LIST_FILES.items():
        path = next((files[name] for name in names if name in files), None)
        if path is None:
            continue
        if path.suffix == ".list":
            ids = read_json(path)
            if not isinstance(ids, list) or not all(isinstance(video_id, str) for video_id in ids):
                raise DatasetError(f"{path}: expected a JSON list of clip names")
        else:
            ids = read_text(path).split()
        splits[split] = ids
    if not splits:
        return None
    return {split: splits.get(split, []) for split in SPLIT_NAMES}


def gather_captions(files: dict, clip_by_vid: dict) -> tuple:
    """({video id: captions}, {video id: S2VT split}, the files read), each video's captions from the first source
    that has them: corpus CSVs, AllVideoDescriptions.txt, the S2VT files."""
    sources, used = [], []
    for name, path in files.items():
        if name.lower().endswith(".csv"):
            sources.append((path, read_corpus_csv(path)))
    if "AllVideoDescriptions.txt" in files:
        sources.append((files["AllVideoDescriptions.txt"], read_all_descriptions(files["AllVideoDescriptions.txt"])))
    s2vt_captions, s2vt_split = read_s2vt(files, clip_by_vid)
    sources.append((", ".join(str(files[name]) for name in S2VT_FILES.values() if name in files), s2vt_captions))
    captions = {}
    for path, source in sources:
        taken = {video_id: its_captions for video_id, its_captions in source.items() if video_id not in captions}
        captions.update(taken)
        if taken:
            used.append(str(path))
    return captions, s2vt_split, used


def read(data_dir: Path, scheme: str, args=None) -> tuple:
    """(VideoCaptions, the file each split came from) of MSVD in data_dir."""
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such folder; pass the folder holding MSVD's annotations and YouTubeClips/")
    files = annotation_files(data_dir)
    mapping = read_mapping(files[MAPPING]) if MAPPING in files else {}
    clip_by_vid = {vid: clip for clip, vid in mapping.items()}
    captions, s2vt_split, used = gather_captions(files, clip_by_vid)
    if not captions:
        raise DatasetError(f"{data_dir}: no MSVD captions found (looked for the corpus CSV, AllVideoDescriptions.txt "
                           f"and sents_*_lc_nopunc.txt); put one of them there")
    splits = read_split_lists(files)
    if splits is not None:
        origin = "the split lists"
    elif mapping:
        splits = {split: [clip for clip, vid in mapping.items() if int(vid[3:]) in numbers]
                  for split, numbers in STANDARD_SPLIT.items()}
        origin = str(files[MAPPING])
    elif s2vt_split:
        splits = {split: [video_id for video_id, its in s2vt_split.items() if its == split] for split in SPLIT_NAMES}
        origin = "the S2VT files"
    else:
        raise DatasetError(f"{data_dir}: no MSVD split found; add youtube_mapping.txt (clip -> vidN) or the split "
                           f"lists train.list/valid.list/test.list")
    if any(video_id.startswith("vid") and video_id[3:].isdigit() for video_id in captions) and not mapping:
        warnings.warn(f"{data_dir}: no {MAPPING}: videos keep S2VT's vidN ids, but MSVD's files are named by clip",
                      stacklevel=2)
    video_ids = [video_id for split in SPLIT_NAMES for video_id in splits[split]]
    dataset = VideoCaptions(name="msvd", root=data_dir, scheme=scheme, splits=splits, captions=captions,
                            find_videos=clip_finder(data_dir, video_ids),
                            expected_path=lambda video_id: data_dir / "YouTubeClips" / f"{video_id}.avi",
                            sources=used)
    return dataset, {split: origin for split in SPLIT_NAMES}
