"""VATEX v1.0/v1.1: ~35,000 ten-second YouTube clips, 10 English (and 10 Chinese) captions each.

The official files are JSON lists of {"videoID": "<youtube id>_<start 6 digits>_<end 6 digits>", "enCap": [...],
"chCap": [...]}: vatex_training_v1.0.json (25,991), vatex_validation_v1.0.json (3,000) and
vatex_public_test_english_v1.1.json (6,000, English captions); any file whose name starts with
vatex_training / vatex_validation / vatex_public_test, anywhere under the data folder, is read. Only English
captions are used. Video files are `<videoID>.<ext>` anywhere under the data folder (times may be written
without the zero padding: the id is split from the right).

Schemes:
  official  train on training, validate on validation, test on the public test set (the protocol of the
            VATEX captioning papers, e.g. ORG-TRL and SwinBERT);
  val-test  for when the public test captions are not at hand: train on training less a fixed 1,000-clip
            carve-out that validates, test on validation.
"""
import os
from pathlib import Path

from readers import DatasetError, VideoCaptions, carve_out, clip_finder, read_json

SCHEMES = ("official", "val-test")
MARKERS = ("vatex_training*.json", "vatex_validation*.json", "vatex_public_test*.json")  # file name patterns
PREFIXES = {"training": "vatex_training", "validation": "vatex_validation", "public_test": "vatex_public_test"}
CARVE_OUT_SIZE = 1000
CARVE_OUT_SEED = "vatex-val-test"


def find_files(data_dir: Path) -> dict:
    """part ("training", "validation", "public_test") -> its JSON file under data_dir (the first by name)."""
    found = {}
    for directory, subdirectories, names in os.walk(data_dir):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(names):
            for part, prefix in PREFIXES.items():
                if name.startswith(prefix) and name.endswith(".json"):
                    found.setdefault(part, Path(directory) / name)
    return found


def read_part(path: Path, captions: dict) -> list:
    """One official file: add each clip's English captions to captions; return its clip ids in file order.
    Entries without English captions are kept out (the public test file before v1.1 has none)."""
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a JSON list of {{videoID, enCap}} (VATEX's official format)")
    video_ids = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("videoID"), str):
            raise DatasetError(f"{path}: entry {position} has no videoID string; is this a VATEX file?")
        english = entry.get("enCap")
        if english is None:
            continue
        if not isinstance(english, list) or not all(isinstance(caption, str) for caption in english):
            raise DatasetError(f"{path}: entry {position} ({entry['videoID']}): enCap is not a list of strings")
        captions[entry["videoID"]] = [caption for caption in english if caption.strip()]
        video_ids.append(entry["videoID"])
    return video_ids


def read(data_dir: Path, scheme: str, args=None) -> tuple:
    """(VideoCaptions, the file each split came from) of VATEX in data_dir."""
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such folder; pass the folder holding VATEX's JSON files and clips")
    files = find_files(data_dir)
    if not files:
        raise DatasetError(f"{data_dir}: no VATEX annotations found (vatex_training_v1.0.json, "
                           f"vatex_validation_v1.0.json, vatex_public_test_english_v1.1.json)")
    captions = {}
    parts = {part: read_part(path, captions) for part, path in files.items()}
    training, validation = parts.get("training", []), parts.get("validation", [])
    if scheme == "official":
        if "public_test" in files and not parts["public_test"]:
            raise DatasetError(f"{files['public_test']}: no English captions (enCap) to test on; use the English "
                               f"public test file (v1.1) or --scheme val-test")
        splits = {"train": training, "val": validation, "test": parts.get("public_test", [])}
        sources = {"train": files.get("training"), "val": files.get("validation"), "test": files.get("public_test")}
    else:
        held_out = carve_out(training, min(CARVE_OUT_SIZE, len(training) // 10), CARVE_OUT_SEED)
        splits = {"train": [video_id for video_id in training if video_id not in held_out],
                  "val": [video_id for video_id in training if video_id in held_out], "test": validation}
        sources = {"train": files.get("training"), "val": files.get("training"), "test": files.get("validation")}
        for video_id in parts.get("public_test", []):  # not part of this split
            captions.pop(video_id, None)
    video_ids = [video_id for ids in splits.values() for video_id in ids]
    dataset = VideoCaptions(name="vatex", root=data_dir, scheme=scheme, splits=splits, captions=captions,
                            find_videos=clip_finder(data_dir, video_ids),
                            expected_path=lambda video_id: data_dir / f"{video_id}.mp4",
                            sources=[str(path) for path in files.values()])
    return dataset, {split: str(path) for split, path in sources.items()}
