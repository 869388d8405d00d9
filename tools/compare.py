"""Measure what several views and the attention decoder change, on synthetic clips and real ones.

    python tools/compare.py --out_dir runs/compare --seeds 0 1 2 --out runs/compare/compare.json

Three comparisons, each printed as a markdown table (and all numbers written to --out as JSON):
  views:  spread of the latent across K jittered samplings (mean cosine of each view to their mean),
          and caption quality of a pooled decoder trained on 1 or K views, captioning from 1 view or
          the mean of K (synthetic "simple" task, tiny random X-CLIP);
  order:  pooled vs attention decoder on the synthetic "order" task ("moves left, then up", "turns
          from red to blue"): CIDEr, and how often the caption names the two events in the right order;
  real:   view spread on the real clips of --real_videos with a full-size, randomly initialised X-CLIP
          (no trained weights can be downloaded here: the number says how much the sampling moves a
          random network's latent, not the trained model's).
"""
import argparse
import contextlib
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python tools/compare.py`, only tools/ is on the path
    sys.path.insert(0, str(REPO))

import numpy as np

import evaluate
import train
from annotations import load_msrvtt
from common import UserError, check_outputs, expand_video_paths, fail, use_warning_lines, write_json, write_text
from create_tokenizer import train_captions, train_tokenizer
from latents import EncodeOptions, encode_videos, load_encoder, open_cache, split_latents
from synthetic import full_size_xclip_config, make_synthetic_msrvtt, make_tiny_xclip, save_random_xclip
from tools.scratch import check_scratch_folder, make_scratch_folder


def build_world(root, task, num_videos, clip_frames=32, fps=8, xclip_seed=0, vocab_size=400):
    """A synthetic MSR-VTT of `task` (clips of clip_frames frames), a tiny random X-CLIP and a tokenizer under root
    (kept when already there)."""
    root = Path(root)
    data = make_synthetic_msrvtt(root / "data", num_videos=num_videos, seed=1, task=task, num_frames=clip_frames,
                                 fps=fps)
    xclip = root / "xclip"
    if not (xclip / "config.json").is_file():
        make_tiny_xclip(xclip, seed=xclip_seed)
    tokenizer = root / "tokenizer.model"
    if not tokenizer.is_file():
        captions = train_captions(load_msrvtt(data, check_videos=False))
        tokenizer = train_tokenizer(captions, root / "tokenizer", vocab_size=vocab_size)
    return {"root": root, "data": data, "xclip": xclip, "tokenizer": tokenizer, "cache": root / "cache"}


def train_run(world, out_dir, seed, epochs, extra_flags=()):
    """train.py on the world with small-decoder settings; its per-epoch lines go to out_dir/train.log."""
    flags = ["--data_dir", str(world["data"]), "--tokenizer_path", str(world["tokenizer"]),
             "--xclip_model", str(world["xclip"]), "--cache_dir", str(world["cache"]), "--out_dir", str(out_dir),
             "--epochs", str(epochs), "--batch_size", "64", "--embed_dim", "128", "--hidden_dim", "256",
             "--num_layers", "1", "--dropout", "0.2", "--warmup_steps", "50", "--learning_rate", "2e-3",
             "--num_workers", "0", "--beam_size", "3", "--patience", "0", "--seed", str(seed), "--overwrite", *extra_flags]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "best.pt").is_file() and (out_dir / "done").is_file():
        return out_dir / "best.pt"  # finished before: reuse
    started = time.time()
    with open(out_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
        code = train.main(train.parse_args(flags))
    if code != 0:
        raise RuntimeError(f"train.py failed on {out_dir} (exit {code}); see {out_dir / 'train.log'}")
    write_text(out_dir / "done", f"{time.time() - started:.1f}\n")
    return out_dir / "best.pt"


def evaluate_run(world, model_path, views=1, split="test"):
    """evaluate.py's metrics for a checkpoint on the world's split, captioning from the mean of `views` views."""
    args = evaluate.parse_args(["--model_path", str(model_path), "--data_dir", str(world["data"]), "--split", split,
                                "--xclip_model", str(world["xclip"]), "--cache_dir", str(world["cache"]),
                                "--num_workers", "0", "--beam_size", "3", "--views", str(views), "--java", "no"])
    with contextlib.redirect_stdout(sys.stderr):
        return evaluate.evaluate_checkpoint(args, java=False)["metrics"]


def view_spread(latents, centred=False):
    """Mean cosine similarity of each view's latent to the mean of its video's views: latents (N, K, D) -> float.

    1.0 means the sampled frames do not matter; the lower, the more the latent depends on them. With
    centred, the mean latent of all videos is taken away first, as the decoder's standardisation does,
    so that a direction every latent shares does not hide the differences.
    """
    latents = np.asarray(latents, dtype=np.float64)
    if centred:
        latents = latents - latents.mean(axis=(0, 1))
    mean = latents.mean(axis=1, keepdims=True)  # (N, 1, D)
    cosine = (latents * mean).sum(-1) / (np.linalg.norm(latents, axis=-1) * np.linalg.norm(mean, axis=-1) + 1e-12)
    return float(cosine.mean())


def view_variance_share(latents):
    """Share of the latents' variance that is between views of the same video rather than between videos:
    latents (N, K, D) -> float in [0, 1]; 0 when the sampling does not matter."""
    latents = np.asarray(latents, dtype=np.float64)
    within = ((latents - latents.mean(axis=1, keepdims=True)) ** 2).sum(-1).mean()
    total = ((latents - latents.mean(axis=(0, 1))) ** 2).sum(-1).mean()
    return float(within / total) if total > 0 else 0.0


def spread_statistics(latents):
    """How much K views of each video (N, K, D) differ: raw and centred cosine to the views' mean, variance share."""
    return {"cosine": view_spread(latents), "centred_cosine": view_spread(latents, centred=True),
            "variance_share": view_variance_share(latents)}


def cached_view_spread(world, views, splits=("train", "val", "test")):
    """spread_statistics of the world's K-view cache (encoding what is missing) over the given splits."""
    encoder, _ = load_encoder(str(world["xclip"]))
    with contextlib.redirect_stdout(sys.stderr):
        cache, preprocess = open_cache(encoder, world["cache"], views=views)
        latents_by_split = split_latents(load_msrvtt(world["data"]), list(splits), encoder, cache, preprocess,
                                         EncodeOptions(num_workers=0))
    latents = np.concatenate([latents_by_split[split][1] for split in splits])  # (N, K, D)
    return spread_statistics(latents), len(latents)


def mean_and_spread(values):
    """(mean, standard deviation over seeds) of a list of numbers."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std())


def summarise(metric_runs, names):
    """[{metric: value}] over seeds -> {metric: (mean, std)} for the given metric names."""
    return {name: mean_and_spread([run[name] for run in metric_runs]) for name in names if name in metric_runs[0]}


def views_world(args):
    """The "simple" task with clips of 6 frames per sampled segment (96 frames, 8 s), so that jittered views differ
    as they do on MSR-VTT (about 28 frames per segment) rather than by one frame."""
    return build_world(Path(args.out_dir) / "views", "simple", args.num_videos, clip_frames=96, fps=12)


def compare_views(args):
    """Pooled decoder trained on 1 or K views, captioning from 1 view or the mean of K: synthetic "simple" task."""
    world = views_world(args)
    spread, count = cached_view_spread(world, args.views)
    names = ["CIDEr", "Bleu_4", "colour_accuracy", "size_accuracy", "shape_accuracy", "direction_accuracy"]
    rows = []
    for train_views in (1, args.views):
        runs = {1: [], args.views: []}
        for seed in args.seeds:
            flags = ["--views", str(train_views)] if train_views > 1 else []
            model_path = train_run(world, world["root"] / f"train{train_views}-seed{seed}", seed, args.epochs, flags)
            for test_views in runs:
                runs[test_views].append(evaluate_run(world, model_path, test_views))
        for test_views, metric_runs in runs.items():
            rows.append({"train_views": train_views, "test_views": test_views, **summarise(metric_runs, names)})
    return {"spread": spread, "spread_videos": count, "views": args.views, "rows": rows, "metrics": names}


def compare_order(args):
    """Pooled vs attention decoder on the synthetic "order" task."""
    world = build_world(Path(args.out_dir) / "order", "order", args.num_videos)
    names = ["CIDEr", "order_accuracy", "order_content_accuracy", "order_accuracy_colour_change",
             "order_content_accuracy_colour_change", "order_when_named_colour_change", "order_accuracy_path",
             "order_content_accuracy_path"]
    rows = []
    for decoder in ("pooled", "attention"):
        metric_runs = []
        for seed in args.seeds:
            model_path = train_run(world, world["root"] / f"{decoder}-seed{seed}", seed, args.epochs,
                                   ["--decoder", decoder])
            metrics = evaluate_run(world, model_path)
            # Of the colour changes whose two colours the caption names, the share it puts in the right order
            # (0.5 = a coin toss).
            named = metrics["order_content_accuracy_colour_change"]
            in_order = metrics["order_accuracy_colour_change"]
            metrics["order_when_named_colour_change"] = in_order / named if named else 0.0
            metric_runs.append(metrics)
        rows.append({"decoder": decoder, **summarise(metric_runs, names)})
    return {"rows": rows, "metrics": names}


def make_full_size_random_xclip(out_dir):
    """A randomly initialised X-CLIP with the base-patch32 sizes (ViT-B/32 vision tower, 224 px, 512-d, 16 frames),
    as tools.bench makes it; kept when already there."""
    out_dir = Path(out_dir)
    if not (out_dir / "config.json").is_file():
        save_random_xclip(out_dir, full_size_xclip_config(), seed=0)
    return out_dir


def compare_real(args):
    """View spread on real clips: full-size random X-CLIP (and the tiny one, for scale)."""
    paths = expand_video_paths([args.real_videos])
    items = [(path.stem, path) for path in paths]
    root = Path(args.out_dir) / "real"
    results = []
    encoders = [("tiny random X-CLIP (32 px)", views_world(args)["xclip"])]
    if args.real_xclip:
        encoders.append((f"X-CLIP {args.real_xclip}", args.real_xclip))
    elif not args.skip_full_size:
        encoders.append(("full-size random X-CLIP (ViT-B/32, 224 px)", make_full_size_random_xclip(root / "xclip")))
    for name, xclip in encoders:
        encoder, _ = load_encoder(str(xclip))
        cache, preprocess = open_cache(encoder, root / "cache", views=args.views)
        started = time.time()
        summary = encode_videos(items, encoder, cache, preprocess, EncodeOptions(batch_size=2, num_workers=0))
        encoded = [vid for vid, _ in items if cache.has(vid)]
        latents = cache.read(encoded)  # (N, K, D)
        per_video = {vid: spread_statistics(latents[index:index + 1])["cosine"] for index, vid in enumerate(encoded)}
        results.append({"encoder": name, **spread_statistics(latents), "videos": len(encoded),
                        "failed": [vid for vid, _ in summary["failed"]], "per_video": per_video,
                        "seconds": time.time() - started})
    return {"views": args.views, "rows": results}


def format_cell(value):
    mean, std = value
    return f"{mean:.3f} ± {std:.3f}"


def markdown_tables(results, args):
    """The measured tables as markdown, each under the command that produced it."""
    lines = []
    seeds = " ".join(map(str, args.seeds))
    if "views" in results:
        views = results["views"]
        lines += [f"**Views** (synthetic \"simple\" task, {args.num_videos} clips, tiny random X-CLIP; "
                  f"mean ± std over seeds {seeds}, test split). Spread of the latent across {views['views']} "
                  f"jittered views over {views['spread_videos']} clips: mean cosine to their mean "
                  f"**{views['spread']['cosine']:.4f}**, after taking away the mean latent of all clips "
                  f"**{views['spread']['centred_cosine']:.4f}**; share of the latent variance that is between "
                  f"views of one clip: **{views['spread']['variance_share']:.4f}**.", ""]
        header = ["train views", "test views"] + views["metrics"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in views["rows"]:
            cells = [str(row["train_views"]), str(row["test_views"])] + [format_cell(row[m]) for m in views["metrics"]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if "order" in results:
        order = results["order"]
        lines += [f"**Pooled vs attention** (synthetic \"order\" task, {args.num_videos} clips, tiny random X-CLIP; "
                  f"mean ± std over seeds {seeds}, test split). order_accuracy: the caption names the clip's two "
                  "directions (path with a turn) or colours (colour change) in the right order; "
                  "order_content_accuracy: in any order; _colour_change / _path: those clips alone; "
                  "order_when_named_colour_change: right order among the colour changes whose two colours are "
                  "named (0.5 = chance).", ""]
        header = ["decoder"] + order["metrics"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in order["rows"]:
            lines.append("| " + " | ".join([row["decoder"]] + [format_cell(row[m]) for m in order["metrics"]]) + " |")
        lines.append("")
    if "real" in results:
        real = results["real"]
        weights = f"X-CLIP {args.real_xclip}" if args.real_xclip else "random weights"
        lines += [f"**View spread on real clips** ({args.real_videos}, {real['views']} jittered views; {weights}).", "",
                  "| encoder | clips | cosine to the views' mean | lowest clip | centred cosine | "
                  "variance share between views |", "|---|---|---|---|---|---|"]
        for row in real["rows"]:
            lowest = min(row["per_video"].items(), key=lambda item: item[1])
            lines.append(f"| {row['encoder']} | {row['videos']} | {row['cosine']:.4f} | {lowest[1]:.4f} ({lowest[0]}) "
                         f"| {row['centred_cosine']:.4f} | {row['variance_share']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out_dir", default="runs/compare", help="where datasets, caches and checkpoints go")
    parser.add_argument("--overwrite", action="store_true",
                        help="use --out_dir even though it holds files this tool did not write")
    parser.add_argument("--parts", nargs="+", default=["views", "order", "real"], choices=["views", "order", "real"],
                        help="which comparisons to run")
    parser.add_argument("--num_videos", type=int, default=300, help="synthetic clips per task")
    parser.add_argument("--views", type=int, default=4, help="K: jittered samplings per video")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one training run per seed")
    parser.add_argument("--real_videos", default=str(REPO.parent / "shared" / "realdata" / "videos"),
                        help="folder of real clips for the spread")
    parser.add_argument("--skip_full_size", action="store_true",
                        help="leave out the full-size random X-CLIP (it takes about a minute and 800 MB of disk)")
    parser.add_argument("--real_xclip", default="",
                        help="X-CLIP hub name or folder with trained weights for the real-clip spread, instead of "
                             "the full-size random one ('' = random)")
    parser.add_argument("--out", default="", help="write every number as JSON here ('' = do not write)")
    parser.add_argument("--markdown", default="", help="write the tables as markdown here ('' = do not write)")
    return parser.parse_args(argv)


def check_args(args):
    """None, or one line saying which flags cannot be used."""
    if args.views < 2 or args.epochs < 1 or not args.seeds or args.num_videos < 20:
        return "need --views >= 2, --epochs >= 1, at least one seed and --num_videos >= 20"
    if "real" in args.parts and not Path(args.real_videos).is_dir():
        return f"--real_videos {args.real_videos}: no such folder of clips; pass one or leave out --parts real"
    try:
        # Folders made before folders were marked hold a part's subfolder.
        check_scratch_folder(args.out_dir, "--out_dir", "compare", ("views", "order", "real"), args.overwrite)
        check_outputs([("--out", args.out), ("--markdown", args.markdown)],
                      [("--real_videos", args.real_videos if "real" in args.parts else ""),
                       ("--real_xclip", args.real_xclip)])
    except UserError as error:
        return str(error)
    return None


def main(args) -> int:
    use_warning_lines()
    problem = check_args(args)
    if problem:
        return fail(problem)
    results = {}
    try:
        make_scratch_folder(args.out_dir, "--out_dir", "compare")
        for part, run in (("views", compare_views), ("order", compare_order), ("real", compare_real)):
            if part in args.parts:
                started = time.time()
                results[part] = run(args)
                results[part]["seconds"] = time.time() - started
                print(f"{part}: done in {results[part]['seconds']:.0f}s", file=sys.stderr)
    except UserError as error:
        return fail(error)
    tables = markdown_tables(results, args)
    print(tables)
    if args.out:
        write_json(args.out, results)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.markdown, tables + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
