"""Your own captions: one file, a row per caption, `--dataset captions --annotations FILE`.

    captions.jsonl   {"video": "clips/cat.mp4", "caption": "a cat jumps on a table", "split": "train"}
    captions.csv     video,caption[,split]   (a header line, then one row per caption)

`video` is a path relative to the file's folder (or absolute); its id is that path without the extension.
`split` is train, val or test. Without a split column the videos are split at random by video (seeded;
fractions --split_fractions, default 80/10/10) and the split is written next to the file
(`<name>.splits.json`), so that the next run, a teammate and evaluate.py read the same one.
"""
import csv
import io
import json
import os
import random
import warnings
from pathlib import Path

from common import write_json
from readers import SPLIT_NAMES, DatasetError, VideoCaptions, read_json, read_text, video_sort_key

DEFAULT_SPLIT = {"seed": 0, "fractions": [0.8, 0.1, 0.1]}  # --split_seed, --split_fractions

SCHEMES = ("file",)
MARKERS = ()
SPLIT_SPELLINGS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                   "dev": "val", "test": "test", "testing": "test"}


def read_rows(path: Path) -> list:
    """(line number, {"video", "caption", "split"?}) for every row of a .jsonl or .csv captions file."""
    text = read_text(path)
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise DatasetError(f"{path}:{number}: not a JSON object ({error}); one object per line") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: not a JSON object; one {{\"video\", \"caption\"}} per line")
            rows.append((number, row))
        return rows
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not {"video", "caption"} <= set(reader.fieldnames or []):
            raise DatasetError(f"{path}: the header must name the columns video,caption[,split]; it is "
                               f"{','.join(reader.fieldnames or [])!r}")
        return [(reader.line_num, row) for row in reader]
    raise DatasetError(f"{path}: a captions file is .jsonl or .csv (with a header video,caption[,split])")


def parse_rows(path: Path, rows: list) -> tuple:
    """(captions by video id, split by video id or None without a split column, file by video id); a bad row is a
    DatasetError naming its line."""
    captions, split_by_video, video_files = {}, {}, {}
    id_by_file, spelling = {}, {}  # a video file (however the rows reach it) -> its id, and how it was first written
    has_split = any(row.get("split") not in (None, "") for _, row in rows)
    for number, row in rows:
        video, caption = row.get("video"), row.get("caption")
        if not isinstance(video, str) or not video.strip():
            raise DatasetError(f"{path}:{number}: no 'video' (a path relative to {path.parent})")
        if not isinstance(caption, str) or not caption.strip():
            raise DatasetError(f"{path}:{number}: empty or missing 'caption' for {video}")
        video_path = path.parent / video.strip()
        video_id = id_by_file.setdefault(file_identity(video_path), Path(video.strip()).with_suffix("").as_posix())
        spelling.setdefault(video_id, video.strip())
        video_files.setdefault(video_id, video_path)
        captions.setdefault(video_id, []).append(caption.strip())
        if not has_split:
            continue
        split = SPLIT_SPELLINGS.get(str(row.get("split") or "").strip().lower())
        if split is None:
            raise DatasetError(f"{path}:{number}: split {row.get('split')!r} for {video}; use train, val or test "
                               f"(or leave the column out for a random split by video)")
        if split_by_video.setdefault(video_id, split) != split:
            same = "" if video.strip() == spelling[video_id] else f" (the same file as {spelling[video_id]})"
            raise DatasetError(f"{path}:{number}: {video}{same} is in {split} here and in {split_by_video[video_id]} "
                               f"on an earlier line; a video belongs to one split")
    return captions, (split_by_video if has_split else None), video_files


def file_identity(video_path: Path):
    """What names one video file however a row writes its path (.., absolute, a symlink, a hard link): its device
    and inode when it exists, else its resolved path."""
    try:
        stat = os.stat(video_path)
        return stat.st_dev, stat.st_ino
    except OSError:
        return os.path.realpath(video_path)


def draw_split(video_ids: list, fractions, seed: int) -> dict:
    """A random split by video: shuffled with seed, then cut by fractions (each split gets at least one video
    when there are three or more)."""
    order = sorted(video_ids)
    random.Random(seed).shuffle(order)
    total = sum(fractions)
    sizes = [round(len(order) * fraction / total) for fraction in fractions[1:]]
    if len(order) >= 3:
        sizes = [max(1, size) for size in sizes]
    num_val, num_test = sizes
    num_train = len(order) - num_val - num_test
    parts = {"train": order[:num_train], "val": order[num_train:num_train + num_val], "test": order[num_train + num_val:]}
    return {split: sorted(ids, key=video_sort_key) for split, ids in parts.items()}


def split_file_path(path: Path) -> Path:
    return path.with_name(path.stem + ".splits.json")


def saved_or_new_split(path: Path, video_ids: list, fractions, seed: int) -> dict:
    """The split written next to the captions file; drawn and written there when there is none yet."""
    split_path = split_file_path(path)
    if split_path.is_file():
        saved = read_json(split_path)
        if not isinstance(saved, dict) or not all(isinstance(saved.get(split), list) for split in SPLIT_NAMES):
            raise DatasetError(f"{split_path}: not a split file (train/val/test lists); delete it to draw a new split")
        unassigned = sorted(set(video_ids) - {video_id for split in SPLIT_NAMES for video_id in saved[split]})
        if unassigned:
            raise DatasetError(f"{split_path}: {len(unassigned)} videos of {path.name} are in no split (e.g. "
                               f"{unassigned[0]}); add them to it by hand, or delete it to draw a new split")
        asked = {"seed": seed, "fractions": [float(share) for share in fractions]}
        if asked != DEFAULT_SPLIT and asked != {key: saved.get(key) for key in asked}:
            warnings.warn(f"{split_path}: this saved split is used, not --split_seed {seed} --split_fractions "
                          f"{' '.join(f'{share:g}' for share in fractions)}; delete it to draw a new split")
        return {split: saved[split] for split in SPLIT_NAMES}
    if sum(fractions) <= 0 or fractions[0] <= 0:
        raise DatasetError(f"--split_fractions {' '.join(f'{share:g}' for share in fractions)}: the training "
                           "split needs a share above 0 (e.g. 0.8 0.1 0.1)")
    splits = draw_split(video_ids, fractions, seed)
    write_json(split_path, {"annotations": path.name, "seed": seed, "fractions": list(fractions), **splits})
    return splits


def read(data_dir: Path, scheme: str, args=None) -> tuple:
    """(VideoCaptions, the file each split came from) of the captions file args.annotations."""
    path = Path(getattr(args, "annotations", None) or "")
    if not getattr(args, "annotations", None):
        raise DatasetError("--dataset captions needs --annotations FILE (.jsonl or .csv, a row per caption)")
    if not path.is_file():
        raise DatasetError(f"{path}: no such captions file; pass --annotations a .jsonl or .csv")
    captions, split_by_video, video_files = parse_rows(path, read_rows(path))
    if not captions:
        raise DatasetError(f"{path}: no captions in it")
    if split_by_video is None:
        splits = saved_or_new_split(path, list(captions), getattr(args, "split_fractions", DEFAULT_SPLIT["fractions"]),
                                    getattr(args, "split_seed", DEFAULT_SPLIT["seed"]))
        origin = str(split_file_path(path))
    else:
        splits = {split: [video_id for video_id, its in split_by_video.items() if its == split] for split in SPLIT_NAMES}
        origin = str(path)
    dataset = VideoCaptions(name="captions", root=path.parent, scheme=scheme, splits=splits, captions=captions,
                            find_videos=lambda: {video_id: file for video_id, file in video_files.items()
                                                 if file.is_file()},
                            expected_path=lambda video_id: video_files.get(video_id, path.parent / video_id),
                            sources=[str(path)])
    return dataset, {split: origin for split in SPLIT_NAMES}
