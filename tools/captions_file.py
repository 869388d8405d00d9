"""Write a captions file (.jsonl, a row per caption) from any dataset annotations.py reads.

    python tools/captions_file.py --data_dir data --out captions.jsonl
    python tools/captions_file.py --data_dir ../shared/realdata/msrvtt --with_features feats/ --out feats.jsonl

The rows name each video's file relative to the output's folder ({"video": path, "caption": ...}) and keep
the dataset's split unless --new_split. With --with_features they keep only the videos that have a
<video_id>.npy there, name them by id (which names their feature file), and leave the split out: a new one
is drawn by video when the file is first read. Train on the result with
`--dataset captions --annotations FILE` (and `--features DIR`).
"""
import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python tools/captions_file.py`, only tools/ is on the path
    sys.path.insert(0, str(REPO))

from annotations import SPLIT_NAMES, add_data_arguments, load_dataset  # noqa: E402
from common import UserError, check_outputs, fail, use_warning_lines, write_text
from latents import feature_files


def caption_rows(dataset, out_dir: Path, with_features=None, keep_split=True) -> list:
    """The rows of the captions file: every caption of every video in a split, in split then video order. A video
    is named by its file, relative to out_dir; with_features, by its id, which names its feature file."""
    rows = []
    all_ids = [video_id for split in SPLIT_NAMES for video_id in dataset.splits[split]]
    files = feature_files(with_features, all_ids) if with_features is not None else {}
    for split in SPLIT_NAMES:
        for video_id in dataset.splits[split]:
            if with_features is not None and not files[video_id].is_file():
                continue
            video = video_id if with_features else os.path.relpath(dataset.video_path(video_id), out_dir)
            for caption in dataset.captions[video_id]:
                rows.append({"video": Path(video).as_posix(), "caption": caption,
                             **({"split": split} if keep_split else {})})
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="the .jsonl to write")
    parser.add_argument("--with_features", default=None,
                        help="keep only the videos with a <video_id>.npy in this folder (and draw a new split)")
    parser.add_argument("--new_split", action="store_true", help="leave the split out: a new one is drawn by video")
    return parser.parse_args(argv)


def main(args) -> int:
    use_warning_lines()
    try:
        dataset = load_dataset(args, check_videos=False)
        check_outputs([("--out", args.out)], [("the annotations", source) for source in dataset.sources]
                      + [("--with_features", args.with_features)])
        rows = caption_rows(dataset, Path(args.out).absolute().parent, args.with_features,
                            keep_split=not (args.new_split or args.with_features))
        if not rows:
            raise UserError(f"{dataset.root}: no captioned video" + (f" with a feature file in {args.with_features}"
                                                                      if args.with_features else ""))
        write_text(args.out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    except UserError as error:
        return fail(error)
    except OSError as error:
        return fail(UserError(f"{args.out}: cannot write it ({error.strerror or error}); pick another --out"))
    videos = len({row["video"] for row in rows})
    print(f"{args.out}: {len(rows)} captions of {videos} videos")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
