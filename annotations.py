"""Datasets: which reader reads them, the flags that name them, and the one normalisation of captions.

    from annotations import add_data_arguments, load_dataset
    data = load_dataset(args)                  # args from a parser that add_data_arguments filled
    data.splits["train"], data.captions[video_id], data.video_path(video_id)

Every dataset reads into the same VideoCaptions (readers/): video ids per split, raw captions per video,
each video's file. Splits are always by video, never by caption: no caption of a test video is ever seen
in training. `python dataset.py --dataset msvd --data_dir D` prints videos, captions and missing videos
per split. Adding a dataset means writing one module in readers/ and naming it in READERS below.
"""
import fnmatch
import os
from pathlib import Path
from types import SimpleNamespace

from common import count, split_share
from readers import (SPLIT_NAMES, DatasetError, VideoCaptions, finish, video_sort_key,  # noqa: F401 (re-exported)
                     videos_not_on_disk)
from readers import captions as captions_file
from readers import msrvtt, msvd, vatex

READERS = {"msrvtt": msrvtt, "msvd": msvd, "vatex": vatex, "captions": captions_file}  # each: read, SCHEMES, MARKERS
SCHEMES = {name: reader.SCHEMES for name, reader in READERS.items()}


def normalize_caption(text) -> str:
    """The one normalisation of captions, for training targets and the tokenizer: lower-case, whitespace
    collapsed to single spaces, stripped: 'A  Dog\\n' -> 'a dog'."""
    return " ".join(str(text).lower().split())


def add_data_arguments(parser, data_dir="data") -> None:
    """The flags that name a dataset, the same in every script that reads one."""
    parser.add_argument("--dataset", default=None, choices=sorted(READERS),
                        help="which dataset --data_dir holds (default: detected from its files; msrvtt when "
                             "nothing else is recognised); captions = your own file, see --annotations")
    parser.add_argument("--data_dir", default=data_dir,
                        help="the dataset's folder (MSR-VTT: the folder holding MSRVTT/, or MSRVTT/ itself)")
    parser.add_argument("--scheme", default=None,
                        help="which split: msrvtt official (6,513/497/2,990 videos) or 1k-A (8,500/500/1,000); msvd "
                             "standard (1,200/100/670); vatex official (train/validation/public test) or val-test "
                             "(default: the first)")
    parser.add_argument("--annotations", default=None,
                        help="--dataset captions: a .jsonl ({video, caption, split?} per line) or .csv with a "
                             "header video,caption[,split]; video paths relative to the file")
    parser.add_argument("--split_fractions", type=split_share, nargs=3,
                        default=tuple(captions_file.DEFAULT_SPLIT["fractions"]),
                        metavar=("TRAIN", "VAL", "TEST"),
                        help="--dataset captions without a split column: fractions of the videos per split")
    parser.add_argument("--split_seed", type=count, default=captions_file.DEFAULT_SPLIT["seed"],
                        help="--dataset captions without a split column: seed of the random split by video")


def detect_dataset(data_dir: Path) -> str:
    """The reader one of whose marker files (name patterns) is in data_dir or one or two folders below it; msrvtt
    when no other is."""
    for directory, subdirectories, names in os.walk(data_dir):
        depth = len(Path(directory).relative_to(data_dir).parts)
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")] if depth < 2 else []
        for name, reader in READERS.items():
            if name != "msrvtt" and any(fnmatch.filter(names, marker) for marker in reader.MARKERS):
                return name
    return "msrvtt"


def load_dataset(args, check_videos: bool = True) -> VideoCaptions:
    """The dataset that add_data_arguments' flags name, read and checked (see readers.finish)."""
    name = getattr(args, "dataset", None)
    if name is None:
        name = "captions" if getattr(args, "annotations", None) else detect_dataset(Path(args.data_dir))
    if name not in READERS:
        raise DatasetError(f"--dataset {name}: unknown; use one of {', '.join(sorted(READERS))}")
    reader = READERS[name]
    scheme = getattr(args, "scheme", None) or reader.SCHEMES[0]
    canonical = {known.lower(): known for known in reader.SCHEMES}.get(str(scheme).lower())
    if canonical is None:
        raise DatasetError(f"scheme {scheme!r}: unknown for {name}; use one of {', '.join(reader.SCHEMES)}")
    dataset, split_sources = reader.read(Path(args.data_dir or "."), canonical, args)
    return finish(dataset, split_sources, check_videos)


def load_msrvtt(data_dir, scheme: str = "official", check_videos: bool = True) -> VideoCaptions:
    """MSR-VTT from data_dir (MSRVTT.zip's layout, or the 2016 release's jsons), split by video."""
    return load_dataset(SimpleNamespace(dataset="msrvtt", data_dir=data_dir, scheme=scheme), check_videos)


def dataset_summary(dataset: VideoCaptions, missing: dict) -> dict:
    """Per split: videos listed (with captions), their captions, and how many of them are not on disk."""
    return {split: {"videos": len(dataset.splits[split]),
                    "captions": sum(len(dataset.captions[video_id]) for video_id in dataset.splits[split]),
                    "missing": len(missing[split])} for split in SPLIT_NAMES}
