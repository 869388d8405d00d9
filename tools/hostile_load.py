"""Time and peak memory of loading a good exported folder against hostile ones that are refused.

    python tools/hostile_load.py --out_dir hostile

Writes (or reuses) soak.py's untrained checkpoint, exports it, and makes edited copies: config.json asking for a
decoder of 10**9 hidden units or of 8,000 GiB, a weights file whose safetensors header lies about its shapes,
and a feature file whose .npy header claims (10**6, 10**6) floats in 64 bytes. Each is loaded in this process
(checkpoint.load_checkpoint, common.load_npy) after the peak resident memory is reset; the table gives the time and
the peak above the memory held before the load. A refusal should cost no more than loading the good folder.
"""
import argparse
import functools
import json
import shutil
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python tools/hostile_load.py`, only tools/ is on the path
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from checkpoint import load_checkpoint, save_folder  # noqa: E402
from common import UserError, fail, load_npy  # noqa: E402
from tools.measure import peak_rss_mib, reset_peak_rss, rss_mib  # noqa: E402
from tools.scratch import check_scratch_folder, make_scratch_folder  # noqa: E402
from tools.soak import prepare  # noqa: E402


def edited_copy(folder: Path, name: str, edit) -> Path:
    """A copy of folder named name whose config.json went through edit(config)."""
    copy = folder.with_name(name)
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    edit(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def lying_safetensors(folder: Path) -> Path:
    """A copy of folder whose model.safetensors header claims a (10**6, 10**6) head.weight over the same bytes."""
    copy = folder.with_name("lying-weights")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy)
    data = (copy / "model.safetensors").read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    header["head.weight"]["shape"] = [10**6, 10**6]
    text = json.dumps(header).encode()
    (copy / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    return copy


def lying_npy(path: Path) -> Path:
    """A 192-byte .npy whose header claims (10**6, 10**6) float32 values (4 TB)."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64)
    return path


def measure(load) -> tuple:
    """(seconds, peak MiB above the memory before, outcome) of one load()."""
    reset_peak_rss()
    before = rss_mib()
    started = time.perf_counter()
    try:
        load()
        outcome = "loaded"
    except UserError as error:
        outcome = f"refused: {str(error).split(': ', 2)[-1][:60]}"
    return time.perf_counter() - started, peak_rss_mib() - before, outcome


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", default="hostile", help="scratch folder (clips, tiny X-CLIP, checkpoints)")
    parser.add_argument("--repeats", type=int, default=5, help="loads per case; the table gives the fastest")
    parser.add_argument("--overwrite", action="store_true",
                        help="use --out_dir even though it holds files this tool did not write")
    args = parser.parse_args(argv)
    try:
        # Folders made before folders were marked hold the exported folder and the soak world's checkpoint.
        check_scratch_folder(args.out_dir, "--out_dir", "hostile_load", ("exported", "untrained.pt"), args.overwrite)
        root = make_scratch_folder(args.out_dir, "--out_dir", "hostile_load")
    except UserError as error:
        return fail(error)
    world = prepare(root, 3, seed=3)
    good = save_folder(load_checkpoint(world["model_path"]), root / "exported")
    good_npy = root / "good.npy"
    np.save(good_npy, np.zeros((16, 512), np.float32))
    huge_hidden = edited_copy(good, "huge-hidden", lambda config: config["decoder_config"].update(hidden_dim=10**9))
    huge_decoder = edited_copy(good, "huge-decoder", lambda config: config["decoder_config"].update(
        hidden_dim=65536, num_layers=64, embed_dim=65536))
    cases = {"good exported folder": lambda: load_checkpoint(good),
             "config.json hidden_dim 10**9": lambda: load_checkpoint(huge_hidden),
             "config.json 65536 wide, 64 layers": lambda: load_checkpoint(huge_decoder),
             "safetensors header claiming (10**6, 10**6)": functools.partial(load_checkpoint, lying_safetensors(good)),
             "good .npy (16, 512) float32": lambda: load_npy(good_npy),
             ".npy header claiming (10**6, 10**6), 192 bytes": functools.partial(load_npy, lying_npy(root / "x.npy"))}
    load_checkpoint(good)  # imports and first-call costs out of the way
    print(f"| case | outcome | time (ms, best of {args.repeats}) | peak memory above before (MiB, largest) |")
    print("|---|---|---:|---:|")
    for name, load in cases.items():
        runs = [measure(load) for _ in range(args.repeats)]
        print(f"| {name} | {runs[-1][2]} | {1000 * min(run[0] for run in runs):.1f} | "
              f"{max(run[1] for run in runs):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
