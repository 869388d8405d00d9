"""Benchmark every stage of the captioner beside its floor, on MSR-VTT-shaped clips and a full-size X-CLIP.

    python -m tools.bench --out bench_out/results.json

Made once under --work_dir and reused: H.264 clips shaped like MSR-VTT (320x240, 15 s, 30 fps, a keyframe
every 2 s, B-frames, crf 23) and a 1280x720 one; a randomly initialised X-CLIP of the real architecture
(xclip-base-patch32-16-frames: random weights cost what the real ones do), saved with save_pretrained and
loaded through model.XClipEncoder; a 10,000-piece tokenizer and a captioner checkpoint. Each stage then runs
in its own process (so its peak memory is its own); each figure is the median of several runs, interleaved
with its floor or reference measured in the same run. Prints a table and whether each target holds.
--quick is a smoke run: fewer repeats and smaller sizes, its timings only indicative.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import UserError, check_outputs, fail, use_warning_lines, write_json
from tools.bench import workspace as bench_workspace
from tools.bench.measuring import REPO, load_average, machine_info, run_measured
from tools.bench.report import STAGE_MODULES, format_table, targets
from tools.bench.training import add_original_training
from tools.measure import children_peak_rss_mib, peak_rss_mib
from tools.scratch import check_scratch_folder, make_scratch_folder

# torch, transformers, PyAV, numpy and the core modules that import them are imported inside the functions that
# use them. A child's peak memory as wait4 reports it counts what its parent held when it started the child, so
# the driver (which starts every stage) and the inference stage (which starts inference.py) hold nothing heavy;
# and the sampling rows are read in fresh processes that import only what sampling needs.

STAGES = tuple(STAGE_MODULES)
# Sizes of a full run and of a --quick one.
PLANS = {
    "full": {"repeats": 5, "hd_repeats": 3, "pipeline_videos": 8, "pipeline_repeats": 2, "encode_videos": 24,
             "encode_repeats": 2, "ready_repeats": 2, "train_batches": 10, "train_repeats": 3, "loss_epochs": 3,
             "loss_real_videos": 500, "inference_repeats": 3, "folder_repeats": 2, "eval_latents": 1000,
             "eval_single": 16, "eval_repeats": 1},
    "quick": {"repeats": 2, "hd_repeats": 1, "pipeline_videos": 4, "pipeline_repeats": 1, "encode_videos": 8,
              "encode_repeats": 1, "ready_repeats": 1, "train_batches": 4, "train_repeats": 1, "loss_epochs": 1,
              "loss_real_videos": 100, "inference_repeats": 1, "folder_repeats": 1, "eval_latents": 256,
              "eval_single": 8, "eval_repeats": 1},
}


class StageError(Exception):
    """A stage process failed; the message holds the end of its stderr."""


def run_stage_process(stage: str, args, capture: bool = True) -> dict:
    """Run one stage in a fresh process (`python -m tools.bench --stage`): its result, wall seconds and peak memory.
    This process imports nothing heavy, so the stage's memory is its own."""
    with tempfile.TemporaryDirectory() as scratch:
        stage_out = Path(scratch) / "stage.json"
        command = [sys.executable, "-m", "tools.bench", "--stage", stage, "--stage_out", str(stage_out),
                   "--work_dir", str(args.work_dir), "--encoder", args.encoder]
        if args.quick:
            command.append("--quick")
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                  os.environ.get("PYTHONPATH")]))}
        load_before = load_average()
        run = run_measured(command, env=environment, capture=capture)
        if run["returncode"] != 0 or not stage_out.is_file():
            raise StageError(f"stage {stage} failed (exit {run['returncode']}):\n{run['stderr'].strip()[-3000:]}")
        result = json.loads(stage_out.read_text())
    result["stage_seconds"] = run["seconds"]
    result["process_tree_peak_rss_mib"] = run["peak_rss_mib"]  # the stage process or its largest descendant
    result["load_average"] = {"before": load_before, "after": load_average()}
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_out/results.json", help="write all results as JSON here")
    parser.add_argument("--work_dir", default="bench_out",
                        help="where the clips, X-CLIP, tokenizer and checkpoint are made once and reused")
    parser.add_argument("--overwrite", action="store_true",
                        help="use --work_dir even though it holds files this tool did not write")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fewer repeats, smaller sizes (a few minutes; timings only indicative)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages to run")
    parser.add_argument("--encoder", default="full", choices=["full", "tiny"],
                        help="full: X-CLIP base/32 16 frames (random weights); tiny: a 32-px toy, to test this script")
    parser.add_argument("--stage", choices=STAGES + ("prepare",), default=None,
                        help="internal: run this one stage in this process and write its result to --stage_out")
    parser.add_argument("--stage_out", default=None, help="internal: where --stage writes its JSON result")
    return parser.parse_args(argv)


def stage_main(args) -> int:
    """--stage: one stage in this process; its result and this process's peak memory go to --stage_out."""
    work_dir = Path(args.work_dir)
    if args.stage == "prepare":
        workspace = bench_workspace.prepare_workspace(work_dir, encoder=args.encoder,
                                                      log=lambda text: print(text, flush=True))
        write_json(work_dir / "workspace.json", workspace)
        result = {"workspace": workspace, "machine": machine_info()}
    else:
        plan = PLANS["quick" if args.quick else "full"]
        workspace = json.loads((work_dir / "workspace.json").read_text())
        result = STAGE_MODULES[args.stage].run(workspace, plan, work_dir)
    result["self_peak_rss_mib"] = peak_rss_mib()
    result["children_peak_rss_mib"] = children_peak_rss_mib()
    write_json(args.stage_out, result)
    return 0


def main(args) -> int:
    use_warning_lines()
    if args.stage:
        return stage_main(args)
    started = time.perf_counter()
    work_dir = Path(args.work_dir)
    try:
        # Workspaces made before folders were marked hold the workspace manifest or the results.
        check_scratch_folder(work_dir, "--work_dir", "tools.bench", ("workspace.json", "results.json"), args.overwrite)
        check_outputs([("--out", args.out)], [("--work_dir", work_dir / "workspace.json")])
        make_scratch_folder(work_dir, "--work_dir", "tools.bench")
    except UserError as error:
        return fail(error)
    plan = PLANS["quick" if args.quick else "full"]
    print(f"tools.bench: {'quick' if args.quick else 'full'} run, stages {', '.join(args.stages)}; load average "
          f"{load_average()} on {os.cpu_count()} cores", flush=True)
    try:
        prepared = run_stage_process("prepare", args, capture=False)  # clips, X-CLIP, tokenizer, checkpoint: once
        results = {"machine": prepared["machine"], "plan": plan, "workspace": prepared["workspace"],
                   "prepare_seconds": prepared["stage_seconds"], "load_average_start": load_average(),
                   "command": " ".join(["python -m tools.bench", *sys.argv[1:]])}
        for stage in args.stages:
            print(f"stage {stage} ...", end=" ", flush=True)
            results[stage] = run_stage_process(stage, args)
            print(f"{results[stage]['stage_seconds']:.0f} s", flush=True)
    except StageError as error:
        print(f"\ntools.bench: {error}", file=sys.stderr)
        return 1
    add_original_training(results)
    results["targets"] = targets(results)
    results["load_average_end"] = load_average()
    results["total_seconds"] = time.perf_counter() - started
    print()
    print(format_table(results))
    print(f"\n{results['total_seconds']:.0f} s in all; load average {results['load_average_start']} at the start, "
          f"{results['load_average_end']} at the end; {results['machine']['cpu_count']} cores "
          f"({results['machine']['cpu']})")
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0

