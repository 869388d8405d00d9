"""python -m tools.bench [--quick] [--stages ...]: every stage of the captioner beside its floor (flags: --help)."""
import sys

from tools.bench.cli import main, parse_args

sys.exit(main(parse_args()))
