"""Training curves from log.jsonl: loss, validation CIDEr and BLEU-4, learning rate, against epochs.

    python curves.py models/log.jsonl --out curves.png
    python curves.py runs/a/log.jsonl runs/b/log.jsonl --labels "lr 1e-3" "lr 3e-4" --out compare.png

train.py redraws models/curves.png after every epoch; this command draws any log.jsonl, or overlays several
runs (one colour per run) to compare settings. The best epoch of each run (highest val CIDEr, as train.py
keeps best.pt) is marked. --tensorboard in train.py writes the same scalars for TensorBoard.
"""
import argparse
import sys

from common import UserError, check_outputs, fail, one_line, use_warning_lines
from training_curves import plot_curves, read_log  # noqa: F401 - read_log stays importable from curves


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("logs", nargs="+", help="log.jsonl files written by train.py; several are overlaid")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one name per log for the legend (default: each log's folder name)")
    parser.add_argument("--out", default="curves.png", help="PNG to write")
    return parser.parse_args(argv)


def main(args) -> int:
    use_warning_lines()
    try:
        check_outputs([("--out", args.out)], [("log", log) for log in args.logs])
        out_png = plot_curves(args.logs, args.out, args.labels)
    except UserError as error:
        return fail(error)
    except OSError as error:
        return fail(f"{args.out}: cannot write ({one_line(error)}); choose a writable path")
    print(f"wrote {out_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
