"""Score generated captions with the COCO caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D).

Scores come from the reference implementation (pycocoevalcap) on its 0-1 scale, after the same
PTB tokenization (Stanford's Java tokenizer). Without Java, captions are tokenized by a Python
imitation of it, METEOR is left out, and a warning says so.

Examples:
    python evaluate.py --model_path models/best.pt --data_dir data --split test --out results.json
    python evaluate.py --hyp hyp.txt --refs ref1.txt ref2.txt --out results.json
    python evaluate.py --model_path models/best.pt --data_dir data --report report.md
    python evaluate.py --model_path runs/a/best.pt runs/b/best.pt --data_dir data     # an ensemble

With --model_path, every video of the split is captioned by batched beam search (--beam_size 1:
greedy) from the cached latents (encoded first where missing) and scored against all its references; --views K captions
from the mean of K jittered samplings' latents. On a synthetic set the captions are also scored on
what they name (attributes.json), and on its "order" task on whether they tell the order right.

Beside the metrics it prints what the captions look like (diagnostics.py: distinct captions, vocabulary,
length, copies of training captions, the most frequent ones) and warns when one caption covers a large share
of the videos (a collapsed decoder). --out keeps each caption's own CIDEr-D and BLEU-4; --report report.md
lists the best and worst videos with the caption beside its references.
"""
import argparse
import sys
import warnings

import torch

from annotations import add_data_arguments, load_dataset
from captioning import Decoding, add_decoding_arguments
from checkpoint import checkpoint_digest, load_captioner, load_checkpoint, model_paths
from common import (UserError, check_outputs, check_writable, count, fail, interrupted, one_line,
                    positive_int, resolve_device, use_warning_lines, write_json, write_text)
from diagnostics import caption_diagnostics, collapse_warning, format_diagnostics, format_report
from latents import EncodeOptions, open_cache, split_features, split_latents
from metrics import (METRIC_NAMES, PTB_PUNCTUATIONS, java_available, ptb_tokenize_java,  # noqa: F401 (evaluate.X users)
                     ptb_tokenize_python, score_captions, score_captions_per_video)
from model import caption_features
from synthetic_scoring import load_attributes, synthetic_metrics


def format_table(metrics: dict) -> str:
    """Aligned text table: metric, score on the 0-1 scale, and x100 as papers print it."""
    names = [name for name in METRIC_NAMES if name in metrics] + \
            [name for name in metrics if name not in METRIC_NAMES]
    width = max([len("metric")] + [len(name) for name in names])
    lines = [f"{'metric':<{width}}  {'score':>8}  {'x100':>7}"]
    lines += [f"{name:<{width}}  {metrics[name]:>8.4f}  {100 * metrics[name]:>7.2f}" for name in names]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files

def read_caption_lines(path: str) -> list[str]:
    """One caption per line (trailing newline optional); raises UserError when the file is unreadable."""
    try:
        with open(path, encoding="utf-8-sig") as caption_file:  # -sig: a byte-order mark is not a caption's
            text = caption_file.read()  # universal newlines: "\r\n" and "\r" arrive as "\n"
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; pass a text file with one caption per line")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; pass a UTF-8 text file with one caption per line")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror}); pass a readable text file")
    if not text:
        return []
    # split("\n"), not splitlines(): a caption holding "\u2028" or "\x0c" must not shift the alignment
    return text.removesuffix("\n").split("\n")


def load_line_aligned(hyp_path: str, ref_paths: list[str]) -> tuple[dict, dict]:
    """Line i of hyp_path is scored against line i of every ref file -> (predictions, references) by line index."""
    hypotheses = read_caption_lines(hyp_path)
    if not hypotheses:
        raise UserError(f"{hyp_path}: no captions; pass a file with one generated caption per line")
    references = {i: [] for i in range(len(hypotheses))}
    for ref_path in ref_paths:
        ref_lines = read_caption_lines(ref_path)
        if len(ref_lines) != len(hypotheses):
            raise UserError(f"{ref_path}: {len(ref_lines)} lines but {hyp_path} has {len(hypotheses)}; "
                             f"reference files must be line-aligned with the hypotheses")
        for i, ref_line in enumerate(ref_lines):
            references[i].append(ref_line)
    return dict(enumerate(hypotheses)), references


def evaluate_caption_files(hyp_path: str, ref_paths: list[str], java: bool | None = None) -> dict:
    """Score line-aligned caption files -> {"metrics": {...}, "diagnostics": {...},
    "predictions": [{"id", "caption", "references", "scores"}]}."""
    predictions, references = load_line_aligned(hyp_path, ref_paths)
    metrics, per_video = score_captions_per_video(predictions, references, java=java)
    records = [{"id": i, "caption": predictions[i], "references": references[i], "scores": per_video[i]}
               for i in predictions]
    return {"metrics": metrics, "diagnostics": caption_diagnostics(predictions, references), "predictions": records}


def control_features(features, control, seed=0):
    """Controls that should destroy caption quality: features shuffled across videos, or all zero."""
    if control == "shuffled":
        return features[torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))]
    if control == "zeros":
        return torch.zeros_like(features)
    return features


def same_data_as_training(args, checkpoint) -> None:
    """Dataset flags left out default to what the checkpoint was trained on; another split scheme of the same
    dataset gets a warning (MSR-VTT's 1k-A training videos include official test videos, and so on)."""
    trained_on = checkpoint.get("data") or {}
    if args.dataset is None and args.annotations is None and trained_on.get("dataset"):
        args.dataset = trained_on["dataset"]
    if args.scheme is None and trained_on.get("dataset") == args.dataset:
        args.scheme = trained_on.get("scheme")
    if trained_on.get("dataset") == args.dataset and args.scheme not in (None, trained_on.get("scheme")):
        warnings.warn(f"{args.model_path}: trained on the {trained_on.get('scheme')} split of {args.dataset}; some "
                      f"{args.split} videos of the {args.scheme} split may have been among its training videos",
                      stacklevel=2)


def split_inputs(args, checkpoint, dataset, decoder, encoder) -> tuple:
    """(video ids, features) of --split: from the latent cache (encoding what it lacks with encoder, the X-CLIP
    the checkpoint names), or from --features for a checkpoint trained on precomputed features."""
    record = checkpoint["encoder"]
    if record.get("kind") == "features":
        features_by_split, found = split_features(dataset, [args.split], args.features, decoder.config.uses_frames)
        if found["latent_dim"] != record["latent_dim"]:
            raise UserError(f"{args.features}: features of size {found['latent_dim']}, but {args.model_path} was "
                            f"trained on size {record['latent_dim']} ({record.get('name')})")
        return features_by_split[args.split]
    cache, preprocess = open_cache(encoder, args.cache_dir, record.get("dtype", "fp32"), args.views,
                                   with_frames=decoder.config.uses_frames)
    options = EncodeOptions(batch_size=args.encode_batch_size, num_workers=args.num_workers)
    features_by_split = split_latents(dataset, [args.split], encoder, cache, preprocess, options)
    video_ids, features = features_by_split[args.split]  # (N, D) or (N, F, D); (N, K, ...) with views
    return video_ids, features.mean(axis=1) if args.views > 1 else features


# Features larger than this many times the training features' scale are not video features.
ABSURD_SCALE = 1e4


def warn_absurd_features(video_ids, features, decoder) -> None:
    """A warning per video whose features are absurd: values beyond ABSURD_SCALE times the training features' scale
    (the largest |mean| + std of a dimension), as an edited or corrupt feature file or cache entry holding 1e38
    has. Its caption is scored but means nothing. (Not per dimension: a dimension constant in training, such as a
    ReLU feature that is always 0, has no spread to measure against.)"""
    if len(video_ids) == 0:
        return
    decoder = getattr(decoder, "members", [decoder])[0]  # an ensemble's members share the features
    scale = float((decoder.latent_mean.abs() + decoder.latent_std).max())
    worst = torch.as_tensor(features).float().cpu().abs().reshape(len(video_ids), -1).amax(dim=1)  # (N,)
    for video_id, largest in zip(video_ids, worst.tolist()):
        if not largest <= ABSURD_SCALE * scale:  # NaN too
            warnings.warn(f"{video_id}: its features reach {largest:.3g}, {largest / scale:.3g} times the scale of "
                          "the training features (a damaged or edited feature file or cache entry?); its caption "
                          "means nothing", stacklevel=2)


def evaluate_checkpoint(args, java=None) -> dict:
    """Caption every video of a split with a checkpoint and score it: the result dict --out writes, with the
    checkpoint's digest, which export.py checks before it puts the scores in a model card."""
    device = resolve_device(args.device)
    paths = model_paths(args.model_path)
    args.model_path = paths[0] if len(paths) == 1 else " + ".join(map(str, paths))  # as messages name it
    checkpoints = [load_checkpoint(path) for path in paths]
    checkpoint = checkpoints[0]
    same_data_as_training(args, checkpoint)
    record = checkpoint["encoder"]
    if (record.get("kind") == "features") != bool(args.features):
        raise UserError(f"{args.model_path}: trained on " + (
            f"precomputed features ({record.get('name')}, shape {record.get('shape')}); pass --features DIR of the "
            f"same kind" if args.features is None else "videos through X-CLIP; leave --features out"))
    dataset = load_dataset(args, check_videos=not args.features)
    check_outputs([("--out", getattr(args, "out", "")), ("--report", getattr(args, "report", ""))],
                  [("the annotations", source) for source in dataset.sources])
    encoder, decoder, tokenizer, _ = load_captioner(checkpoints, device, args.xclip_model,
                                                    with_encoder=not args.features, names=paths)
    video_ids, features = split_inputs(args, checkpoint, dataset, decoder, encoder)
    warn_absurd_features(video_ids, features, decoder)
    features = control_features(torch.from_numpy(features).to(device), args.control)
    decoding = Decoding.from_args(args)
    captions = caption_features(decoder, tokenizer, features, decoding.beam_size, decoding.max_len, args.batch_size,
                                decoding.length_penalty)
    predictions = dict(zip(video_ids, captions))
    references = {vid: dataset.captions[vid] for vid in video_ids}
    metrics, per_video = score_captions_per_video(predictions, references, java=java)
    attributes = load_attributes(dataset.root)
    if attributes is not None:  # a synthetic set: score what captions name
        metrics.update(synthetic_metrics(predictions, attributes))
    training_captions = [caption for vid in dataset.splits["train"] for caption in dataset.captions[vid]]
    records = [{"video_id": vid, "caption": predictions[vid], "references": references[vid],
                "scores": per_video[vid]} for vid in video_ids]
    return {"metrics": metrics, "diagnostics": caption_diagnostics(predictions, references, training_captions),
            "predictions": records, "split": args.split,
            "model_path": str(paths[0]) if len(paths) == 1 else [str(path) for path in paths],
            "checkpoint_digest": "+".join(checkpoint_digest(member) for member in checkpoints),
            "control": args.control, "views": args.views,
            "decoding": {"beam_size": decoding.beam_size, "length_penalty": decoding.length_penalty,
                         "max_len": decoding.max_len}}


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hyp", default="",
                        help="text file of generated captions, one per line (file mode, with --refs)")
    parser.add_argument("--refs", nargs="+", default=[],
                        help="reference files, line-aligned with --hyp: line i of each is a reference for "
                             "hypothesis i")
    parser.add_argument("--model_path", nargs="+", default=[],
                        help="checkpoint to evaluate (checkpoint mode): a .pt from train.py, a folder from "
                             "export.py, or a Hub repo id (user/name); captions every video of --split. Several: "
                             "an ensemble (same tokenizer and encoder) decoding with the mean of their "
                             "log-probabilities at every step")
    add_data_arguments(parser)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to caption")
    parser.add_argument("--xclip_model", default=None,
                        help="local copy of the checkpoint's X-CLIP (default: the name stored in the checkpoint)")
    parser.add_argument("--cache_dir", default="cache", help="where the latent cache lives")
    parser.add_argument("--features", default=None,
                        help="for a checkpoint trained on precomputed features: the folder of <video_id>.npy files")
    parser.add_argument("--views", type=positive_int, default=1,
                        help="caption from the mean latent of K jittered samplings per video (1 = the middle frames)")
    add_decoding_arguments(parser, num_captions=None, sampling=False)
    parser.add_argument("--batch_size", type=positive_int, default=256, help="videos per beam-search batch")
    parser.add_argument("--num_workers", type=count, default=None,
                        help="DataLoader workers decoding videos for the cache (default: one per available core; 0 = "
                             "in process)")
    parser.add_argument("--encode_batch_size", type=positive_int, default=8,
                        help="videos X-CLIP encodes at once while it builds the cache (a GPU takes more: try 32)")
    parser.add_argument("--device", default="auto", help="where to run: auto (a GPU when there is one), cpu, cuda or "
                                                          "cuda:N")
    parser.add_argument("--control", default="none", choices=["none", "shuffled", "zeros"],
                        help="sanity control: shuffle latents across videos, or zero them (scores should collapse)")
    parser.add_argument("--out", default="",
                        help="write {'metrics', 'diagnostics', 'predictions': [{caption, references, scores}]} as "
                             "JSON here ('' = do not write)")
    parser.add_argument("--report", default="",
                        help="write a Markdown report here: metrics, caption diagnostics, the best and worst videos "
                             "with their references ('' = do not write)")
    parser.add_argument("--java", choices=("auto", "yes", "no"), default="auto",
                        help="use Java for PTB tokenization and METEOR: auto = if `java` runs, "
                             "no = Python tokenizer and no METEOR")
    return parser.parse_args(argv)


def report_and_save(result: dict, out_path: str, report_path: str = "") -> None:
    """Print the metrics table and the caption diagnostics (a collapse warning on stderr); write the result JSON
    and the Markdown report atomically where their paths are set."""
    table = format_table(result["metrics"])
    print(table)
    print(format_diagnostics(result["diagnostics"]))
    warning = collapse_warning(result["diagnostics"])
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if out_path:
        save_output(out_path, write_json, result)
    if report_path:
        save_output(report_path, write_text, format_report(result, table) + "\n")


def save_output(path: str, writer, payload) -> None:
    """writer(path, payload) (an atomic writer of common.py); a failure is one line naming the path."""
    try:
        writer(path, payload)
    except OSError as error:
        raise UserError(f"{path}: cannot write ({one_line(error)}); choose a writable path") from None
    print(f"wrote {path}")


def run(args) -> dict:
    java = {"auto": None, "yes": True, "no": False}[args.java]
    if java and not java_available():
        raise UserError("--java yes: no working `java` on PATH; install a Java runtime or pass --java auto")
    check_writable(args.out, "--out")
    check_writable(args.report, "--report")
    check_outputs([("--out", args.out), ("--report", args.report)],
                  [("--hyp", args.hyp), *[("--refs", refs) for refs in args.refs],
                   *[("--model_path", path) for path in model_paths(args.model_path)],
                   ("--annotations", args.annotations), ("--features", args.features),
                   ("--xclip_model", args.xclip_model)])
    if args.model_path and (args.hyp or args.refs):
        raise UserError("--model_path captions a split; --hyp and --refs score caption files: pass one or the other")
    if args.model_path:
        return evaluate_checkpoint(args, java=java)
    if args.hyp or args.refs:
        if not (args.hyp and args.refs):
            raise UserError("--hyp and --refs go together: pass --hyp FILE --refs FILE [FILE ...]")
        return evaluate_caption_files(args.hyp, args.refs, java=java)
    raise UserError("nothing to score: pass --model_path CKPT, or --hyp FILE --refs FILE [FILE ...]")


def main(args) -> int:
    use_warning_lines()
    try:
        report_and_save(run(args), args.out, args.report)
    except UserError as error:
        return fail(error)
    except OSError as error:  # a cache folder that cannot be made or written, a disk that fills up
        return fail(f"{error.filename or args.cache_dir}: {one_line(error)}; check the path and free space")
    except KeyboardInterrupt:
        return interrupted("latents already encoded are kept in the cache for the next run")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
