"""Stage 4, captioning from the command line: `inference.py` on one clip (start-up, decode, encode, generate, peak
memory), `--help`, the import floor, X-CLIP's video side against the whole model, and inference.py over a folder
beside encode.py and beside one video at a time. Every run is a fresh process (tools.bench.measuring)."""
import json
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

from tools.bench.measuring import REPO, fresh_process_peak, run_measured


def bench_inference(checkpoint_path, video_path, repeats: int = 3, beam_size: int = 5) -> dict:
    """`python inference.py --video_path CLIP --json` run repeats times: wall seconds split into start-up (all but
    the reported decode, encode and generate), and its peak memory; `--help` seconds; the import floor."""
    python, script = sys.executable, str(REPO / "inference.py")
    help_runs = [run_measured([python, script, "--help"]) for _ in range(max(3, repeats))]
    if help_runs[0]["returncode"] != 0:
        raise RuntimeError(f"inference.py --help failed: {help_runs[0]['stderr'][-400:]}")
    import_runs = [run_measured([python, "-c", "import torch, sentencepiece; from transformers import XCLIPModel"])
                   for _ in range(repeats)]
    command = [python, script, "--video_path", str(video_path), "--model_path", str(checkpoint_path),
               "--json", "--beam_size", str(beam_size), "--device", "cpu"]
    runs = []
    for _ in range(repeats):
        run = run_measured(command)
        if run["returncode"] != 0:
            raise RuntimeError(f"inference.py failed ({run['returncode']}): {run['stderr'].strip()[-600:]}")
        record = json.loads(run["stdout"].strip().splitlines()[-1])
        stages = record["seconds"]
        runs.append({"total_s": run["seconds"], "startup_s": run["seconds"] - sum(stages.values()), **{
            f"{name}_s": value for name, value in stages.items()}, "peak_rss_mib": run["peak_rss_mib"],
            "caption_words": len(record["captions"][0]["caption"].split())})
    summary = {key: median([run[key] for run in runs]) for key in runs[0]}
    summary["generate_share"] = median([run["generate_s"] / run["total_s"] for run in runs])
    summary["help_s"] = median([run["seconds"] for run in help_runs])
    summary["import_floor_s"] = median([run["seconds"] for run in import_runs])
    summary["runs"] = runs
    return summary


def bench_folder(xclip_path, checkpoint_path, folder, repeats: int = 2, beam_size: int = 5,
                 work_dir=None) -> dict:
    """Seconds of `inference.py --video_path FOLDER` (decoding in workers, batched encoding and beam search) beside
    `encode.py --video_path FOLDER` into a fresh cache (the encoder's own pipeline), and beside inference.py one
    video at a time as before (--batch_size 1 --num_workers 0), start-up included, interleaved."""
    python = sys.executable
    videos = len(list(Path(folder).iterdir()))
    scratch = Path(tempfile.mkdtemp(prefix="bench_folder_", dir=work_dir))
    caption = [python, str(REPO / "inference.py"), "--video_path", str(folder), "--model_path", str(checkpoint_path),
               "--beam_size", str(beam_size), "--device", "cpu"]

    def run(command):
        shutil.rmtree(scratch / "cache", ignore_errors=True)
        outcome = run_measured(command)
        if outcome["returncode"] != 0:
            raise RuntimeError(f"{' '.join(command[1:3])} failed: {outcome['stderr'].strip()[-600:]}")
        return outcome

    contenders = {"encode": [python, str(REPO / "encode.py"), "--video_path", str(folder), "--xclip_model",
                             str(xclip_path), "--cache_dir", str(scratch / "cache"), "--device", "cpu"],
                  "inference": caption, "one_at_a_time": caption + ["--batch_size", "1", "--num_workers", "0"]}
    runs = {name: [] for name in contenders}
    try:
        for _ in range(repeats):
            for name, command in contenders.items():
                runs[name].append(run(command))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = {name: median([outcome["seconds"] for outcome in outcomes]) for name, outcomes in runs.items()}
    return {"videos": videos, "encode_s": seconds["encode"], "inference_s": seconds["inference"],
            "one_at_a_time_s": seconds["one_at_a_time"],
            "inference_to_encode": seconds["inference"] / seconds["encode"],
            "speedup_vs_one_at_a_time": seconds["one_at_a_time"] / seconds["inference"],
            "peak_rss_mib": {name: max(outcome["peak_rss_mib"] for outcome in outcomes)
                             for name, outcomes in runs.items()},
            "runs_s": {name: [round(outcome["seconds"], 2) for outcome in outcomes] for name, outcomes in runs.items()}}


# What a fresh process runs to load X-CLIP, whole (as before) or its video side alone: `encode` and its `size`.
LOAD_ENCODER = {
    "whole": "from transformers import XCLIPModel; model = XCLIPModel.from_pretrained({path!r}).eval(); "
             "encode, size = model.get_video_features, model.config.vision_config.image_size",
    "video_side": "from model import XClipEncoder; encoder = XClipEncoder({path!r}); "
                  "encode, size = encoder.model.get_video_features, encoder.image_size"}


def encoder_memory(xclip_path) -> dict:
    """Peak resident memory (MiB) of a fresh process that loads X-CLIP and encodes one clip: the whole model
    against the video side alone (XClipEncoder), imports included."""
    encode_once = "torch.inference_mode()(encode)(pixel_values=torch.zeros(1, 16, 3, size, size))"
    peaks = {way: fresh_process_peak(f"import torch; {load.format(path=str(xclip_path))}; {encode_once}",
                                     f"encoding once ({way})")
             for way, load in LOAD_ENCODER.items()}
    return {"whole_peak_rss_mib": peaks["whole"], "video_side_peak_rss_mib": peaks["video_side"]}

def run(workspace: dict, plan: dict, work_dir) -> dict:
    """The stage: inference.py on one clip, X-CLIP's memory each way, and both folders."""
    result = bench_inference(workspace["checkpoint"], workspace["clips"]["320x240"][0], plan["inference_repeats"])
    result.update(encoder_memory(workspace["xclip"]))
    result["folders"] = {
        size: bench_folder(workspace[xclip], workspace[checkpoint], workspace["folders"][size],
                           plan["folder_repeats"], work_dir=work_dir)
        for size, xclip, checkpoint in (("full", "xclip", "checkpoint"), ("tiny", "tiny_xclip", "tiny_checkpoint"))}
    return result


def targets(results: dict, add) -> None:
    """add(target, value, holds, text) for each of this stage's targets that was measured."""
    inference = results.get("inference")
    if inference is None:
        return
    share = inference["generate_share"]
    add("inference: generation <= 10% of the total", share, share <= 0.10, f"{100 * share:.1f}%")
    help_seconds = inference["help_s"]
    add("inference.py --help < 1 s", help_seconds, help_seconds < 1.0, f"{help_seconds:.2f} s")
    if "video_side_peak_rss_mib" in inference:
        peak = inference["peak_rss_mib"]
        add("inference.py peak memory <= 750 MiB (full-size X-CLIP)", peak, peak <= 750, f"{peak:.0f} MiB")
        add("one video captioned in <= 5 s", inference["total_s"], inference["total_s"] <= 5.0,
            f"{inference['total_s']:.2f} s")
    for size, entry in inference.get("folders", {}).items():
        ratio = entry["inference_to_encode"]
        add(f"inference.py over a folder <= 1.1x encode.py ({size} X-CLIP)", ratio, ratio <= 1.1, f"{ratio:.2f}x")

