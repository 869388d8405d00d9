"""What every dataset reader gives: VideoCaptions, the same for MSR-VTT, MSVD, VATEX and a captions file.

A reader (one module here per dataset) turns a folder or file into a VideoCaptions: video ids per split,
each video's raw captions, and how to find its file. finish() then applies the checks every dataset gets:
splits disjoint by video, videos without captions or without a split left out with a warning, videos
not on disk left out with one warning (an error when none is there). annotations.py chooses the reader.
"""
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common import VIDEO_EXTENSIONS, UserError

SPLIT_NAMES = ("train", "val", "test")


class DatasetError(UserError):
    """A dataset that cannot be read; the message is one line naming the file and the problem."""


@dataclass
class VideoCaptions:
    """A captioned video dataset, split by video."""

    name: str                                 # the reader: "msrvtt", "msvd", "vatex", "captions"
    root: Path                                # the folder it was read from (or the captions file's folder)
    scheme: str                               # which split of it
    splits: dict[str, list[str]]              # "train" / "val" / "test" -> video ids
    captions: dict[str, list[str]]            # video id -> its raw captions, in file order
    find_videos: Callable[[], dict] = field(repr=False)  # -> {video id: path}; called once, when first needed
    expected_path: Callable[[str], Path] = field(repr=False)  # where a video not on disk would be
    sources: list = field(default_factory=list)  # the annotation files read
    missing: dict = field(default_factory=lambda: {split: [] for split in SPLIT_NAMES})  # listed, not on disk
    _video_files: dict | None = field(default=None, repr=False, compare=False)

    @property
    def video_files(self) -> dict:
        if self._video_files is None:
            self._video_files = self.find_videos()
        return self._video_files

    def video_path(self, video_id: str) -> Path:
        """Path of a video's file; where it is not on disk, where it is expected."""
        return self.video_files.get(video_id) or self.expected_path(video_id)


# ----------------------------------------------------------------------------------------------------------------------
# Helpers the readers share

def video_sort_key(video_id: str):
    """Sort "video2" before "video10": by the number at the end of the id, then by the id."""
    match = re.search(r"(\d+)$", video_id)
    return (int(match.group(1)) if match else float("inf"), video_id)


def extension_rank(name: str) -> int:
    """Preference among files of one id with several extensions: VIDEO_EXTENSIONS' order (.mp4 first)."""
    extension = os.path.splitext(name)[1].lower()
    return VIDEO_EXTENSIONS.index(extension) if extension in VIDEO_EXTENSIONS else len(VIDEO_EXTENSIONS)


def index_video_files(folders, recursive: bool = False) -> dict:
    """Map video id (file stem) -> path for every video file in folders (and below them, if recursive); the first
    folder wins, and in one folder the preferred extension."""
    video_files = {}
    for folder in folders:
        for directory, subdirectories, names in (os.walk(folder) if recursive else shallow_walk(folder)):
            subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
            for name in sorted((name for name in names if extension_rank(name) < len(VIDEO_EXTENSIONS)),
                               key=lambda name: (extension_rank(name), name)):
                video_files.setdefault(os.path.splitext(name)[0], Path(directory) / name)
    return video_files


def shallow_walk(folder):
    """os.walk's first step alone: the files directly in folder (nothing when it is not a folder)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [(str(folder), [], [entry.name for entry in entries if entry.is_file()])]


CLIP_NAME = re.compile(r"^(?P<youtube_id>.+)_(?P<start>\d+)_(?P<end>\d+)$")


def clip_key(name: str):
    """A clip named "<youtube id>_<start>_<end>" (the id may hold "_" and "-", so split from the right) ->
    (youtube id, start, end) with the numbers as integers, so that "abc_5_15" and "abc_000005_000015" match;
    the name itself when it is not of that form."""
    match = CLIP_NAME.match(name)
    return (match["youtube_id"], int(match["start"]), int(match["end"])) if match else name


def match_clip_files(video_files: dict) -> dict:
    """Video files by clip_key, for datasets whose ids are clip names written in more than one way."""
    by_key = {}
    for stem, path in video_files.items():
        by_key.setdefault(clip_key(stem), path)
    return by_key


def clip_finder(root: Path, video_ids) -> Callable[[], dict]:
    """find_videos for clip-named datasets (MSVD, VATEX): every video file anywhere under root, matched to the ids
    by name, or by clip_key when the file writes the times another way."""
    def find():
        files = index_video_files([root], recursive=True)
        by_key = match_clip_files(files)
        found = {}
        for video_id in video_ids:
            path = files.get(video_id) or by_key.get(clip_key(video_id))
            if path is not None:
                found[video_id] = path
        return found
    return find


def read_json(path: Path):
    """Parse a JSON file; DatasetError naming it when it cannot be read or is not valid JSON."""
    try:
        return json.loads(Path(path).read_bytes())
    except OSError as error:
        raise DatasetError(f"{path}: cannot read it ({error})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); re-download or re-extract it") from None


def read_text(path: Path) -> str:
    """A text file's content (UTF-8, a BOM dropped; CRLF or CR line ends read as LF). Another encoding is a
    DatasetError naming the line, not text read with replacement characters."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read it ({error})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as "
                           "UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def warn_skipped(shown_name: str, problems: list) -> None:
    """One warning for all the malformed entries of a file that were skipped."""
    if problems:
        examples = "; ".join(problems[:3])
        warnings.warn(f"{shown_name}: skipped {len(problems)} malformed entries ({examples})", stacklevel=3)


def carve_out(video_ids: list, size: int, seed: str) -> set:
    """A fixed pseudo-random subset of video_ids (by a keyed hash, so it never depends on library versions)."""
    def hash_key(video_id):
        return hashlib.sha1(f"{seed}:{video_id}".encode()).hexdigest()
    return set(sorted(video_ids, key=hash_key)[:size])


# ----------------------------------------------------------------------------------------------------------------------
# The checks every dataset gets

def check_disjoint(splits: dict, sources: dict) -> None:
    """DatasetError when a video is listed in two splits (captions of one video must not leak across)."""
    seen = {}
    for split in SPLIT_NAMES:
        for video_id in splits[split]:
            if video_id in seen:
                raise DatasetError(f"{sources[split]}: {video_id} is in both {seen[video_id]} and {split}; "
                                   f"the split lists overlap, fix them")
            seen[video_id] = split


def finish(dataset: VideoCaptions, split_sources: dict, check_videos: bool = True) -> VideoCaptions:
    """Splits disjoint; captioned videos in no split, and listed videos without captions, left out with a warning;
    splits sorted; with check_videos, videos not on disk left out (one warning; DatasetError if none is there)."""
    check_disjoint(dataset.splits, split_sources)
    shown = dataset.sources[0] if dataset.sources else dataset.root
    listed = {video_id for split in SPLIT_NAMES for video_id in dataset.splits[split]}
    unlisted = sorted(set(dataset.captions) - listed, key=video_sort_key)
    if unlisted:
        warnings.warn(f"{shown}: {len(unlisted)} videos with captions are in no split "
                      f"({', '.join(unlisted[:5])}); ignored", stacklevel=3)
        for video_id in unlisted:
            del dataset.captions[video_id]
    uncaptioned = sorted(listed - set(dataset.captions), key=video_sort_key)
    if uncaptioned:
        warnings.warn(f"{shown}: {len(uncaptioned)} videos in the splits have no caption "
                      f"({', '.join(uncaptioned[:5])}); left out", stacklevel=3)
    dataset.splits = {split: sorted((video_id for video_id in dataset.splits[split] if video_id in dataset.captions),
                                    key=video_sort_key) for split in SPLIT_NAMES}
    if check_videos:
        check_video_files(dataset)
    return dataset


def videos_not_on_disk(dataset: VideoCaptions) -> dict:
    """split -> listed video ids whose file is not found."""
    return {split: [video_id for video_id in dataset.splits[split] if video_id not in dataset.video_files]
            for split in SPLIT_NAMES}


def check_video_files(dataset: VideoCaptions) -> None:
    """Leave out (and record in dataset.missing) listed videos not on disk; one warning, or an error if none exist."""
    dataset.missing = videos_not_on_disk(dataset)
    listed = sum(len(dataset.splits[split]) for split in SPLIT_NAMES)
    missing = [video_id for split in SPLIT_NAMES for video_id in dataset.missing[split]]
    if listed and len(missing) == listed:
        example = dataset.expected_path(missing[0])
        raise DatasetError(f"{dataset.root}: none of the {listed} listed videos found (e.g. {example}); put the "
                           f"videos there (`python dataset.py` lists what it reads), or train on precomputed features (--features DIR)")
    if missing:
        warnings.warn(f"{dataset.root}: {len(missing)} of {listed} listed videos are not on disk "
                      f"({', '.join(missing[:5])}); left out", stacklevel=3)
        for split in SPLIT_NAMES:
            absent = set(dataset.missing[split])
            dataset.splits[split] = [video_id for video_id in dataset.splits[split] if video_id not in absent]
