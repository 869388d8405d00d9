"""Score generated captions with the COCO caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D).

Scores come from the reference implementation (pycocoevalcap) on its 0-1 scale, after the same
PTB tokenization (Stanford's Java tokenizer). Without Java, captions are tokenized by a Python
imitation of it, METEOR is left out, and a warning says so.

Examples:
    python evaluate.py --model_path models/best.pt --data_dir data --split test --out results.json
    python evaluate.py --hyp hyp.txt --refs ref1.txt ref2.txt --out results.json

With --model_path, every video of the split is captioned by batched beam search from the cached
latents (encoded first where missing) and scored against all its references; --views K captions
from the mean of K jittered samplings' latents. On a synthetic set the captions are also scored on
what they name (attributes.json), and on its "order" task on whether they tell the order right.
"""
import argparse
import contextlib
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

# Tokens PTBTokenizer's wrapper drops after tokenizing (pycocoevalcap/tokenizer/ptbtokenizer.py).
# "-LRB-" and friends never match there because the tokenizer lower-cases them to "-lrb-", which stays.
PTB_PUNCTUATIONS = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                    ".", "?", "!", ",", ":", "-", "--", "...", ";")

_warned_no_java = False  # "METEOR skipped" is printed once per process, not once per call


class UsageError(Exception):
    """Bad user input: main() prints the message as one line and exits with code 2."""


# ----------------------------------------------------------------------------- Java detection

@functools.lru_cache(maxsize=1)
def java_available() -> bool:
    """True when a `java` executable is on PATH and actually starts (checked once per process)."""
    java_path = shutil.which("java")
    if java_path is None:
        return False
    try:
        completed = subprocess.run([java_path, "-version"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return completed.returncode == 0


# ----------------------------------------------------------------------------- tokenization

def _one_line(caption: str) -> str:
    """Collapse all whitespace (newlines included) so one caption stays one line for the line-based tools."""
    return " ".join(caption.split())


def ptb_tokenize_java(captions: list[str]) -> list[str]:
    """Tokenize with Stanford's PTBTokenizer exactly as pycocoevalcap's PTBTokenizer does.

    Same jar, flags and punctuation removal as the reference wrapper, but the temporary file goes to
    a temporary directory instead of site-packages and the tokenizer's stderr chatter is swallowed.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar_path = os.path.join(os.path.dirname(os.path.abspath(ptbtokenizer.__file__)),
                            ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    with tempfile.TemporaryDirectory(prefix="ptb_tokenize_") as tmp_dir:
        captions_path = os.path.join(tmp_dir, "captions.txt")
        with open(captions_path, "w", encoding="utf-8") as captions_file:
            captions_file.write("\n".join(_one_line(caption) for caption in captions))
        completed = subprocess.run(
            ["java", "-cp", jar_path, "edu.stanford.nlp.process.PTBTokenizer",
             "-preserveLines", "-lowerCase", captions_path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if completed.returncode != 0:
        raise RuntimeError(f"PTBTokenizer (java) failed with exit code {completed.returncode}: "
                           f"{completed.stderr.decode(errors='replace').strip()[-500:]}")
    token_lines = completed.stdout.decode("utf-8").split("\n")
    if len(token_lines) != len(captions):
        raise RuntimeError(f"PTBTokenizer returned {len(token_lines)} lines for {len(captions)} captions")
    return [" ".join(token for token in line.rstrip().split(" ") if token not in ptbtokenizer.PUNCTUATIONS)
            for line in token_lines]


# Python imitation of `PTBTokenizer -preserveLines -lowerCase` (CoreNLP 3.4.1), for when Java is absent.
# Mostly the splitting matters: quote, "." "," ":" ";" "!" "?" "-" "--" "..." tokens are dropped afterwards.
_UNICODE_TO_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                                   "\u2013": "--", "\u2014": "--", "\u2026": "..."})
_BRACKET_TOKENS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "wanna": "wan na", "gotta": "got ta"}
_LETTER = r"[^\W\d_]"
_ALNUM = r"[^\W_]"
_PTB_TOKEN = re.compile(rf"""
    n't(?!{_ALNUM}) | '(?:s|m|d|ll|re|ve)(?!{_ALNUM})          # contractions: "is n't", "man 's"
  | (?:mr|mrs|ms|dr|st|jr|sr|vs|etc)\.(?!{_ALNUM})             # abbreviations keep their period
  | {_LETTER}(?:\.{_LETTER})+\.? | {_LETTER}\.(?!{_ALNUM})    # "u.s.", "e.g.", initials "j."
  | (?>[+-]?\d+(?:[.,:/]\d+)*)(?!{_ALNUM}|-)                   # numbers: "1,000" "3.5" "10:30" "1/2" "+14"
  | [#@]{_LETTER}\w*                                          # "#tag" and "@user" stay whole; "#1" splits
  | '\d0s                                                     # "'90s"
  | {_ALNUM}+(?=n't(?!{_ALNUM}))                               # "is" of "isn't", "ca" of "can't"
  | {_ALNUM}\w*(?:[-/.@]\w+)*                                 # words: "t-shirt", "man/woman", "vlog_1"
  | \.\.\. | -- | [!?]{{2,}} | `` | ''                          # multi-character punctuation tokens
  | \S                                                         # anything else is a token by itself
""", re.VERBOSE)


def ptb_tokenize_python(caption: str) -> str:
    """Imitate `PTBTokenizer -preserveLines -lowerCase` + pycocoevalcap's punctuation removal, without Java.

    Matches the Java tokenizer on all but 2 of MSR-VTT's 200,000 captions; close for punctuation,
    contractions, quotes and brackets. Used only when Java is missing.
    """
    text = _one_line(caption).lower().translate(_UNICODE_TO_ASCII)
    tokens = []
    for token in _PTB_TOKEN.findall(text):
        token = _BRACKET_TOKENS.get(token, token)
        tokens.extend(_SPLIT_WORDS.get(token, token).split(" "))
    return " ".join(token for token in tokens if token not in PTB_PUNCTUATIONS and token != '"')


def tokenize_captions(captions_by_id: dict, java: bool) -> dict:
    """{id: [caption, ...]} -> {id: [tokenized caption, ...]}, in one Java call when java is True."""
    flat_ids = [caption_id for caption_id, captions in captions_by_id.items() for _ in captions]
    flat_captions = [caption for captions in captions_by_id.values() for caption in captions]
    if java:
        flat_tokenized = ptb_tokenize_java(flat_captions)
    else:
        flat_tokenized = [ptb_tokenize_python(caption) for caption in flat_captions]
    tokenized_by_id = {caption_id: [] for caption_id in captions_by_id}
    for caption_id, tokenized in zip(flat_ids, flat_tokenized):
        tokenized_by_id[caption_id].append(tokenized)
    return tokenized_by_id


# ----------------------------------------------------------------------------- scoring

def compute_meteor(references_tok: dict, predictions_tok: dict) -> float:
    """Corpus METEOR from pycocoevalcap's Meteor wrapper; its java process is always shut down after.

    pycocoevalcap 1.2's Meteor only stops the process in __del__, whose timing is up to the garbage
    collector, so it is closed here explicitly (a second close from __del__ is harmless).
    """
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(references_tok, predictions_tok)
    except ValueError as error:  # a dead JVM answers b"" and float() fails
        stderr_text = b""
        if meteor.meteor_p.poll() is not None:
            stderr_text = meteor.meteor_p.stderr.read()
        raise RuntimeError(f"METEOR (java) failed: {stderr_text.decode(errors='replace').strip()[-500:]}"
                           ) from error
    finally:
        if meteor.lock.locked():  # compute_score raised while holding it; __del__ would block forever
            meteor.lock.release()
        process = meteor.meteor_p
        if not process.stdin.closed:
            process.stdin.close()
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    return float(score)


def score_captions(predictions: dict, references: dict, java: bool | None = None, meteor: bool = True) -> dict:
    """COCO caption metrics for {id: caption} against {id: [reference, ...]}, on pycocoevalcap's 0-1 scale.

    Returns {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} as floats; CIDEr is pycocoevalcap's
    (CIDEr-D). java=None detects Java; without it METEOR is omitted (with a warning, once) and the
    captions are tokenized by ptb_tokenize_python. meteor=False skips METEOR (its JVM start costs
    seconds), as training's per-epoch validation does.
    """
    global _warned_no_java
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not predictions:
        raise ValueError("no predictions to score")
    if set(predictions) != set(references):
        missing = sorted(map(str, set(predictions) - set(references)))[:5]
        extra = sorted(map(str, set(references) - set(predictions)))[:5]
        raise ValueError(f"predictions and references have different ids "
                         f"(without references: {missing}, without prediction: {extra})")
    for caption_id, reference_list in references.items():
        if isinstance(reference_list, str) or not reference_list or \
                not all(isinstance(reference, str) for reference in reference_list):
            raise ValueError(f"references[{caption_id!r}] must be a non-empty list of strings")
        if not isinstance(predictions[caption_id], str):
            raise ValueError(f"predictions[{caption_id!r}] must be a string")
    if java is None:
        java = java_available()
    if not java and meteor and not _warned_no_java:
        warnings.warn("METEOR skipped: Java not found (BLEU/ROUGE_L/CIDEr use a Python PTB-style tokenizer)",
                      RuntimeWarning, stacklevel=2)
        _warned_no_java = True

    ids = list(predictions)  # one order for both dicts; the scorers iterate over gts.keys()
    tokenized = tokenize_captions({**{("hyp", i): [predictions[i]] for i in ids},
                                   **{("ref", i): list(references[i]) for i in ids}}, java)
    predictions_tok = {i: tokenized[("hyp", i)] for i in ids}
    references_tok = {i: tokenized[("ref", i)] for i in ids}

    metrics = {}
    with contextlib.redirect_stdout(io.StringIO()):  # the scorers print progress on stdout
        bleu_scores, _ = Bleu(4).compute_score(references_tok, predictions_tok, verbose=0)
        for n, bleu in enumerate(bleu_scores, start=1):
            metrics[f"Bleu_{n}"] = float(bleu)
        if java and meteor:
            metrics["METEOR"] = compute_meteor(references_tok, predictions_tok)
        rouge_score, _ = Rouge().compute_score(references_tok, predictions_tok)
        metrics["ROUGE_L"] = float(rouge_score)
        cider_score, _ = Cider().compute_score(references_tok, predictions_tok)
        metrics["CIDEr"] = float(cider_score)
    return metrics


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
    """One caption per line (trailing newline optional); raises UsageError when the file is unreadable."""
    try:
        with open(path, encoding="utf-8") as caption_file:
            text = caption_file.read()  # universal newlines: "\r\n" and "\r" arrive as "\n"
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found; pass a text file with one caption per line")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; pass a UTF-8 text file with one caption per line")
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error.strerror}); pass a readable text file")
    if not text:
        return []
    # split("\n"), not splitlines(): a caption holding "\u2028" or "\x0c" must not shift the alignment
    return text.removesuffix("\n").split("\n")


def load_line_aligned(hyp_path: str, ref_paths: list[str]) -> tuple[dict, dict]:
    """Line i of hyp_path is scored against line i of every ref file -> (predictions, references) by line index."""
    hypotheses = read_caption_lines(hyp_path)
    if not hypotheses:
        raise UsageError(f"{hyp_path}: no captions; pass a file with one generated caption per line")
    references = {i: [] for i in range(len(hypotheses))}
    for ref_path in ref_paths:
        ref_lines = read_caption_lines(ref_path)
        if len(ref_lines) != len(hypotheses):
            raise UsageError(f"{ref_path}: {len(ref_lines)} lines but {hyp_path} has {len(hypotheses)}; "
                             f"reference files must be line-aligned with the hypotheses")
        for i, ref_line in enumerate(ref_lines):
            references[i].append(ref_line)
    return dict(enumerate(hypotheses)), references


def write_json_atomic(path: str, payload: dict) -> None:
    """Write JSON to a temporary name next to path, then os.replace it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp_file:
            json.dump(payload, tmp_file, indent=2, ensure_ascii=False)
            tmp_file.write("\n")
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def evaluate_caption_files(hyp_path: str, ref_paths: list[str], java: bool | None = None) -> dict:
    """Score line-aligned caption files -> {"metrics": {...}, "predictions": [{"id", "caption", "references"}]}."""
    predictions, references = load_line_aligned(hyp_path, ref_paths)
    metrics = score_captions(predictions, references, java=java)
    records = [{"id": i, "caption": predictions[i], "references": references[i]} for i in predictions]
    return {"metrics": metrics, "predictions": records}


def caption_latents(decoder, tokenizer, latents, beam_size=5, max_len=30, batch_size=256):
    """Latents (N, D) (or per-frame features (N, T, D) for the attention decoder) -> N captions (text), by beam
    search over batches of videos."""
    from model import beam_search

    captions = []
    for start in range(0, len(latents), batch_size):
        beams = beam_search(decoder, latents[start:start + batch_size], beam_size=beam_size, max_len=max_len)
        captions += [tokenizer.decode(best[0][0]) for best in beams]
    return captions


def caption_events(caption):
    """What a caption says happened first and second: {"directions": (first, second), "colours": (first, second)},
    each None when the caption names fewer than two different ones. "B after A" counts as A, then B."""
    from synthetic import COLOURS, DIRECTION_WORDS

    words = caption.lower().replace(",", " ").split()
    lookups = {"directions": {word: name for name, synonyms in DIRECTION_WORDS.items() for word in synonyms},
               "colours": {name: name for name in COLOURS}}
    events = {}
    for kind, lookup in lookups.items():
        named = []  # (word position, canonical name) of the first two different names
        for position, word in enumerate(words):
            if word in lookup and lookup[word] not in [name for _, name in named]:
                named.append((position, lookup[word]))
            if len(named) == 2:
                break
        if len(named) < 2:
            events[kind] = None
            continue
        (first_at, first), (second_at, second) = named
        events[kind] = (second, first) if "after" in words[first_at:second_at] else (first, second)
    return events


def order_accuracy(captions_by_video, attributes_by_video):
    """On the synthetic "order" task: share of videos whose caption names their two events (directions of a path
    with a turn, or colours of a colour change) in the right order ("order_accuracy"), and in any order
    ("order_content_accuracy"), so that knowing what happens and knowing when can be told apart; the same for
    each kind of clip alone ("..._path", "..._colour_change"). {} for a set without the order task."""
    field = {"path": "directions", "colour_change": "colours"}
    video_ids = [vid for vid in captions_by_video if attributes_by_video.get(vid, {}).get("kind") in field]
    if not video_ids:
        return {}
    in_order, any_order = {}, {}  # video id -> 0/1
    for vid in video_ids:
        attributes = attributes_by_video[vid]
        truth = tuple(attributes[field[attributes["kind"]]])
        named = caption_events(captions_by_video[vid])[field[attributes["kind"]]]
        in_order[vid] = int(named == truth)
        any_order[vid] = int(named is not None and sorted(named) == sorted(truth))
    result = {}
    for suffix, kinds in (("", tuple(field)), ("_path", ("path",)), ("_colour_change", ("colour_change",))):
        chosen = [vid for vid in video_ids if attributes_by_video[vid]["kind"] in kinds]
        if chosen:
            result[f"order_accuracy{suffix}"] = sum(in_order[vid] for vid in chosen) / len(chosen)
            result[f"order_content_accuracy{suffix}"] = sum(any_order[vid] for vid in chosen) / len(chosen)
    return result


def control_latents(latents, control, seed=0):
    """Controls that should destroy caption quality: latents shuffled across videos, or all zero."""
    import torch

    if control == "shuffled":
        return latents[torch.randperm(len(latents), generator=torch.Generator().manual_seed(seed))]
    if control == "zeros":
        return torch.zeros_like(latents)
    return latents


def evaluate_checkpoint(args, java=None) -> dict:
    """Caption every video of a split with a checkpoint and score it: the result dict --out writes."""
    import torch
    from checkpoint import decoder_from_checkpoint, encoder_from_checkpoint, load_checkpoint, tokenizer_from_checkpoint
    from dataset import load_msrvtt
    from encode import resolve_device, split_latents

    device = resolve_device(args.device)
    checkpoint = load_checkpoint(args.model_path)
    decoder = decoder_from_checkpoint(checkpoint).to(device)
    tokenizer = tokenizer_from_checkpoint(checkpoint)
    msrvtt = load_msrvtt(args.data_dir, scheme=args.scheme)
    info = checkpoint["encoder"]
    dtype = torch.bfloat16 if info.get("dtype") == "bf16" else torch.float32
    encoder = encoder_from_checkpoint(checkpoint, args.xclip_model, dtype=dtype, device=device)
    if args.views < 1:
        raise UsageError(f"--views {args.views}: pass 1 (middle frames) or more (mean of jittered samplings)")
    latents_by_split, _ = split_latents(msrvtt, [args.split], encoder, args.cache_dir, info.get("dtype", "fp32"),
                                        args.num_workers, views=args.views, per_frame=decoder.config.uses_frames)
    del encoder
    video_ids, latents = latents_by_split[args.split]  # (N, D) or (N, T, D); (N, K, ...) with views
    if args.views > 1:
        latents = latents.mean(axis=1)
    latents = control_latents(torch.from_numpy(latents).to(device), args.control)
    captions = caption_latents(decoder, tokenizer, latents, args.beam_size, args.max_len, args.batch_size)
    predictions = dict(zip(video_ids, captions))
    metrics = score_captions(predictions, {vid: msrvtt.captions[vid] for vid in video_ids}, java=java)
    if (msrvtt.root / "annotation" / "attributes.json").is_file():  # a synthetic set: score what captions name
        from synthetic import attribute_accuracy, load_attributes

        attributes = load_attributes(msrvtt.root.parent)
        metrics.update({f"{name}_accuracy": value
                        for name, value in attribute_accuracy(predictions, attributes).items()})
        metrics.update(order_accuracy(predictions, attributes))
    return {"metrics": metrics, "predictions": [{"video_id": vid, "caption": predictions[vid]} for vid in video_ids],
            "split": args.split, "model_path": str(args.model_path), "control": args.control, "views": args.views}


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hyp", default="",
                        help="text file of generated captions, one per line (file mode, with --refs)")
    parser.add_argument("--refs", nargs="+", default=[],
                        help="reference files, line-aligned with --hyp: line i of each is a reference for "
                             "hypothesis i")
    parser.add_argument("--model_path", default="",
                        help="checkpoint to evaluate (checkpoint mode): captions every video of --split")
    parser.add_argument("--data_dir", default="data", help="folder holding MSRVTT/ (or MSRVTT/ itself)")
    parser.add_argument("--scheme", default="official", choices=["official", "1k-A"], help="MSR-VTT split scheme")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to caption")
    parser.add_argument("--xclip_model", default=None,
                        help="local copy of the checkpoint's X-CLIP (default: the name stored in the checkpoint)")
    parser.add_argument("--cache_dir", default="cache", help="where the latent cache lives")
    parser.add_argument("--views", type=int, default=1,
                        help="caption from the mean latent of K jittered samplings per video (1 = the middle frames)")
    parser.add_argument("--beam_size", type=int, default=5, help="beam width (1 = greedy)")
    parser.add_argument("--max_len", type=int, default=30, help="max caption length in tokens")
    parser.add_argument("--batch_size", type=int, default=256, help="videos per beam-search batch")
    parser.add_argument("--num_workers", type=int, default=2, help="DataLoader workers decoding videos for the cache")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    parser.add_argument("--control", default="none", choices=["none", "shuffled", "zeros"],
                        help="sanity control: shuffle latents across videos, or zero them (scores should collapse)")
    parser.add_argument("--out", default="",
                        help="write {'metrics': ..., 'predictions': [...]} as JSON here ('' = do not write)")
    parser.add_argument("--java", choices=("auto", "yes", "no"), default="auto",
                        help="use Java for PTB tokenization and METEOR: auto = if `java` runs, "
                             "no = Python tokenizer and no METEOR")
    return parser.parse_args(argv)


def report_and_save(result: dict, out_path: str) -> None:
    """Print the metrics table; write the result JSON atomically when out_path is set."""
    print(format_table(result["metrics"]))
    if out_path:
        write_json_atomic(out_path, result)
        print(f"wrote {out_path}")


def main(args: argparse.Namespace) -> dict:
    java = {"auto": None, "yes": True, "no": False}[args.java]
    if java and not java_available():
        raise UsageError("--java yes: no working `java` on PATH; install a Java runtime or pass --java auto")
    if args.model_path:
        result = evaluate_checkpoint(args, java=java)
    elif args.hyp or args.refs:
        if not (args.hyp and args.refs):
            raise UsageError("--hyp and --refs go together: pass --hyp FILE --refs FILE [FILE ...]")
        result = evaluate_caption_files(args.hyp, args.refs, java=java)
    else:
        raise UsageError("nothing to score: pass --model_path CKPT, or --hyp FILE --refs FILE [FILE ...]")
    report_and_save(result, args.out)
    return result


if __name__ == "__main__":
    from checkpoint import CheckpointError
    from dataset import DatasetError, VideoError
    from encode import CacheError
    from model import EncoderLoadError

    try:
        main(parse_args())
    except (UsageError, CheckpointError, DatasetError, VideoError, CacheError, EncoderLoadError) as error:
        print(f"evaluate.py: {error}", file=sys.stderr)
        sys.exit(2)
