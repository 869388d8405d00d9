r"""Time self-critical training against cross-entropy on the same videos: epochs, steps, and the rewards' share.

    python tools/scst_bench.py --annotations runs/vggae/captions.jsonl --features ../shared/realdata/features/msrvtt_vggae \
        --tokenizer_path runs/vggae/tokenizer.model --init runs/vggae/ce/best.pt --embed_dim 128 --hidden_dim 256 \
        --num_layers 1 --no-length_buckets --bf16 off

Takes train.py's flags (the decoder must match --init's). Times one cross-entropy epoch over every training
caption, then one SCST epoch over the same videos (--scst_samples captions each), training only (no validation),
--repeats times each, and prints the median of each with the share of the SCST epoch spent computing CIDEr-D
rewards. Targets: rewards at most 20% of an SCST step, an SCST epoch at most 3x a cross-entropy epoch.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python tools/scst_bench.py`, only tools/ is on the path
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import train  # noqa: E402
from common import UserError, check_outputs, fail, positive_int, write_json  # noqa: E402

REWARD_SHARE_TARGET = 0.20
EPOCH_RATIO_TARGET = 3.0


def bench(args, repeats: int) -> dict:
    """Median seconds of a cross-entropy and an SCST training epoch over the same training videos, and the
    rewards' seconds within the SCST epoch."""
    _, _, device = train.setup_distributed(args.device)
    data = train.prepare_data(args, device, 1)
    run = train.start_run(args, data, train.build_decoder(args, data), 0, 1, device)
    initial = {name: tensor.clone() for name, tensor in run.decoder.state_dict().items()}
    ce, scst, rewards = [], [], []
    for repeat in range(repeats):
        run.decoder.load_state_dict(initial)
        run.optimizer, run.scheduler = train.make_optimizer(args, run.decoder, len(data.train.rows))
        started = time.perf_counter()
        train.train_epoch(run, repeat, run.train_features)
        ce.append(time.perf_counter() - started)
        run.decoder.load_state_dict(initial)
        run.optimizer, run.scheduler = train.scst_optimizer(args, run.decoder)
        train.ensure_reward(run)
        started = time.perf_counter()
        record = train.scst_epoch(run, repeat, run.train_features)
        scst.append(time.perf_counter() - started)
        rewards.append(record["reward_seconds"])
    result = {"videos": len(data.train.video_ids), "captions": len(data.train.rows), "samples": args.scst_samples,
              "ce_epoch_s": statistics.median(ce), "scst_epoch_s": statistics.median(scst),
              "reward_s": statistics.median(rewards), "repeats": repeats, "load": os.getloadavg()[0],
              "threads": torch.get_num_threads()}
    result["reward_share"] = result["reward_s"] / result["scst_epoch_s"]
    result["epoch_ratio"] = result["scst_epoch_s"] / result["ce_epoch_s"]
    return result


def report(result: dict) -> str:
    """The benchmark as a few lines, each target with its verdict."""
    def verdict(ok):
        return "meets" if ok else "MISSES"
    return "\n".join([
        f"{result['videos']} training videos, {result['captions']} captions, {result['samples']} samples per video "
        f"(median of {result['repeats']}; load {result['load']:.1f}, {result['threads']} torch threads)",
        f"cross-entropy epoch  {result['ce_epoch_s']:.2f} s",
        f"SCST epoch           {result['scst_epoch_s']:.2f} s  = {result['epoch_ratio']:.2f}x "
        f"({verdict(result['epoch_ratio'] <= EPOCH_RATIO_TARGET)} <= {EPOCH_RATIO_TARGET:g}x)",
        f"rewards (CIDEr-D)    {result['reward_s']:.2f} s  = {result['reward_share']:.1%} of the SCST epoch "
        f"({verdict(result['reward_share'] <= REWARD_SHARE_TARGET)} <= {REWARD_SHARE_TARGET:.0%})"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--repeats", type=positive_int, default=3, help="epochs of each kind timed; the median is reported")
    parser.add_argument("--json", default="", help="also write the figures here as JSON")
    own, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)
        print("own flags: --repeats N (default 3), --json FILE; every other flag is train.py's")
        return 0
    args = train.parse_args(rest + ["--out_dir", os.devnull])
    try:
        check_outputs([("--json", own.json)],
                      [("--tokenizer_path", args.tokenizer_path), ("--annotations", args.annotations),
                       ("--features", args.features), ("--init", args.init), ("--xclip_model", args.xclip_model)])
        result = bench(args, own.repeats)
    except UserError as error:
        return fail(error)
    print(report(result))
    if own.json:
        write_json(own.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
