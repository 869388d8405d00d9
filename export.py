"""Share a trained captioner as the Hugging Face ecosystem does: a folder with safetensors weights, config.json,
the tokenizer and a model card, uploaded to the Hub if asked.

    python export.py --model_path models/best.pt --out_dir captioner --results results.json
    python export.py --model_path models/best.pt --out_dir captioner --results results.json --push_to_hub user/name

The folder, and the Hub repo id it is pushed to, are taken by every --model_path (inference.py, evaluate.py)
like the .pt they came from, with identical captions; loading them never unpickles. The model card
(README.md) is written from the checkpoint's training args and metrics, log.jsonl beside the .pt, and the
test scores of evaluate.py --out. Exporting the same checkpoint twice gives byte-identical files.
"""
import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from huggingface_hub import HfApi, ModelCardData

from checkpoint import (CONFIG_FILE, FOLDER_FILES, TOKENIZER_FILE, WEIGHTS_FILE, checkpoint_digest, is_repo_id,
                        load_checkpoint, save_folder, scst_record, shareable_args, written_by_export)
from common import UserError, check_output_folder, check_outputs, fail, one_line, use_warning_lines
from metrics import METRIC_NAMES

SHARED_FILES = FOLDER_FILES + ("README.md",)
METRIC_LABELS = {"Bleu_1": "BLEU-1", "Bleu_2": "BLEU-2", "Bleu_3": "BLEU-3", "Bleu_4": "BLEU-4",
                 "ROUGE_L": "ROUGE-L", "METEOR": "METEOR", "CIDEr": "CIDEr"}
# The Hub has no video-to-text task; video captioners are listed under video-text-to-text.
PIPELINE_TAG = "video-text-to-text"
DATASET_NAMES = {"msrvtt": "MSR-VTT", "msvd": "MSVD", "vatex": "VATEX"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_path", nargs="+", default=["models/best.pt"],
                        help="what to export: a checkpoint from train.py (or an exported folder, or a Hub repo id); "
                             "one: an ensemble is shared as its members' folders")
    parser.add_argument("--out_dir", required=True,
                        help="folder to write model.safetensors, config.json, tokenizer.model and README.md into")
    parser.add_argument("--results", default="",
                        help="test scores for the model card: the JSON evaluate.py --out wrote for this checkpoint "
                             "(refused when measured on another)")
    parser.add_argument("--license", default="other",
                        help="license id for the model card (a Hub license id such as mit or apache-2.0; "
                             "'other' when the training data's terms decide)")
    parser.add_argument("--push_to_hub", default="", metavar="USER/NAME",
                        help="also upload the folder to this Hub model repo (created if missing; token from "
                             "`hf auth login` or HF_TOKEN)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out_dir that holds files export.py did not write (its four file names "
                             "are replaced, the rest is left alone)")
    parser.add_argument("--private", action="store_true",
                        help="with --push_to_hub: create the repo private (an existing repo keeps its visibility)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- inputs

def read_results(path) -> dict:
    """evaluate.py --out's JSON, checked to be a plain (not a control) evaluation with metrics."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read the results ({one_line(error)}); pass the JSON written by "
                        "evaluate.py --out") from None
    if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict) or not results["metrics"]:
        raise UserError(f"{path}: no metrics in it; pass the JSON written by evaluate.py --model_path ... --out")
    if results.get("control", "none") != "none":
        raise UserError(f"{path}: the scores of a --control {results['control']} run, not of the model; pass "
                        "the results of an evaluation without --control")
    return results


def check_results_checkpoint(results: dict, results_path, checkpoint: dict, model_path) -> None:
    """A UserError when the results' digest says they were measured on another checkpoint; results from before the
    digest was recorded get a warning when they name another model_path."""
    measured_on = results.get("model_path")
    digest = results.get("checkpoint_digest")
    if digest is not None and digest != checkpoint_digest(checkpoint):
        raise UserError(f"{results_path}: measured on another checkpoint ({measured_on}), not on {model_path}; score "
                        f"this one with evaluate.py --model_path {model_path} ... --out FILE and pass that FILE")
    if digest is None and not same_file(measured_on, model_path):
        warnings.warn(f"{results_path}: records no checkpoint digest (an older evaluate.py) and was measured on "
                      f"{measured_on}, not on {model_path}; its scores may be another checkpoint's", stacklevel=2)


def same_file(first, second) -> bool:
    """True when two --model_path values name the same file or folder (or, when either is not there, read alike)."""
    try:
        return first is not None and os.path.samefile(str(first), str(second))
    except OSError:
        return str(first) == str(second)


def read_log(model_path) -> list:
    """The epochs of log.jsonl beside a .pt checkpoint (the last record of each epoch), or [] when there is none."""
    log = Path(model_path).with_name("log.jsonl")
    if not Path(model_path).is_file() or not log.is_file():
        return []
    records = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed run says nothing
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records[record["epoch"]] = record
    return [records[epoch] for epoch in sorted(records)]


def dataset_name(checkpoint: dict) -> str:
    """The training set's name as people write it (MSR-VTT), from the checkpoint's data record."""
    dataset = (checkpoint.get("data") or {}).get("dataset")
    return DATASET_NAMES.get(dataset, dataset or "its training set")


def encoder_on_hub(encoder: dict) -> bool:
    """True when the encoder's name is a Hub repo id others can download, not a folder on the trainer's machine."""
    name = str(encoder.get("name", ""))
    return is_repo_id(name) and not os.path.isdir(name)


# ----------------------------------------------------------------------------- model card

def xclip_flag(encoder: dict) -> str:
    """The flag the card's commands need for the encoder: none for a Hub X-CLIP, --xclip_model for a local one."""
    return "" if encoder_on_hub(encoder) else " --xclip_model path/to/xclip"


def front_matter(checkpoint: dict, license_id: str) -> str:
    """The card's YAML metadata, with the Hub's own field names (huggingface_hub.ModelCardData)."""
    dataset = (checkpoint.get("data") or {}).get("dataset")
    encoder = checkpoint["encoder"]
    card_data = ModelCardData(
        license=license_id, library_name="pytorch", pipeline_tag=PIPELINE_TAG,
        tags=["video-captioning", "x-clip", "lstm"], datasets=[dataset] if dataset else None,
        metrics=["bleu", "meteor", "rouge", "cider"], base_model=encoder["name"] if encoder_on_hub(encoder) else None)
    return f"---\n{card_data.to_yaml()}\n---\n"


def describe(checkpoint: dict) -> str:
    """What the model is: a paragraph and a table of its parts."""
    decoder, encoder = checkpoint["decoder_config"], checkpoint["encoder"]
    data = checkpoint.get("data") or {}
    weights = sum(tensor.numel() for tensor in checkpoint["decoder"].values())
    layers = f"{decoder['num_layers']}-layer LSTM (hidden size {decoder['hidden_dim']})"
    if decoder.get("decoder_type") == "attention":
        reads = (f"a {layers} starts from their mean and, at every word, attends over the {encoder['num_frames']} "
                 "per-frame features to choose what to look at")
    else:
        reads = f"a {layers} whose memory starts from that one vector writes the caption"
    preprocess = encoder.get("preprocess") or {}
    rows = [("Encoder", f"`{encoder['name']}`, frozen; weight fingerprint `{encoder['fingerprint']}`"),
            ("Frames", f"{encoder['num_frames']} per clip ({encoder.get('sampling', 'mid')} sampling), "
                       f"{preprocess.get('image_size', '?')} px, {encoder.get('dtype', 'fp32')}"),
            ("Decoder", f"{decoder.get('decoder_type', 'pooled')} LSTM, {decoder['num_layers']} layers, hidden "
                        f"{decoder['hidden_dim']}, embeddings {decoder['embed_dim']}; {weights:,} weights"),
            ("Tokenizer", f"sentencepiece, {decoder['vocab_size']} pieces (`{TOKENIZER_FILE}`)"),
            ("Trained on", f"{dataset_name(checkpoint)}, {data.get('scheme', 'unrecorded')} split")]
    table = "\n".join(["| part | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows])
    return ("A video captioner. A frozen X-CLIP video encoder turns "
            f"{encoder['num_frames']} frames of a clip into one {encoder.get('latent_dim', decoder['latent_dim'])}-d "
            f"vector, and {reads}, one word piece at a time, by beam search. This repository holds the decoder "
            "and its tokenizer; the encoder is loaded separately and checked against the weight fingerprint "
            f"in `{CONFIG_FILE}`.\n\n{table}\n")


def usage(checkpoint: dict, model_id: str) -> str:
    """How to run it: the exact commands, and what the encoder needs."""
    encoder = checkpoint["encoder"]
    flag = xclip_flag(encoder)
    if encoder_on_hub(encoder):
        encoder_note = (f"X-CLIP (`{encoder['name']}`) is downloaded from the Hub on first use; offline, pass a "
                        "local copy with `--xclip_model`.")
    else:
        encoder_note = (f"This model was trained with an X-CLIP loaded from a local folder (`{encoder['name']}`): "
                        "pass a copy of the same weights with `--xclip_model`. Any other X-CLIP is refused, since "
                        f"its fingerprint differs from `{encoder['fingerprint']}`.")
    return (f"## How to use\n\nWith the code of the captioning repository this model was trained with "
            "(`pip install -r requirements.txt`):\n\n```bash\n"
            f"python inference.py --model_path {model_id}{flag} --video_path clip.mp4\n"
            f"python inference.py --model_path {model_id}{flag} --video_path long.mp4 --segment_seconds 5 "
            "--srt long.srt\n"
            f"python evaluate.py --model_path {model_id}{flag} --data_dir data --split test --out results.json\n"
            f"```\n\n{encoder_note}\n\n"
            f"Files: `{WEIGHTS_FILE}` (the decoder's weights, and the training split's latent mean and std that "
            f"standardise its input), `{CONFIG_FILE}` (decoder config, encoder record, tokenizer ids, training "
            f"data and arguments), `{TOKENIZER_FILE}`. They are read with safetensors and json: nothing is "
            "unpickled, and weights that do not fit the config, or a tokenizer that does not match it, are refused.\n")


def training(checkpoint: dict, log: list) -> str:
    """How it was trained: the main settings in a sentence, the curve from log.jsonl, every argument folded away."""
    args = shareable_args(checkpoint.get("args") or {})
    epoch = checkpoint.get("epoch", 0)
    settings = ", ".join(f"{label} {args[key]}" for key, label in (
        ("batch_size", "batch"), ("learning_rate", "learning rate"), ("warmup_steps", "warm-up steps"),
        ("weight_decay", "weight decay"), ("dropout", "dropout"), ("label_smoothing", "label smoothing"),
        ("views", "views per video"), ("seed", "seed")) if key in args)
    best = log and max(log, key=lambda record: record.get("val", {}).get("CIDEr", float("-inf")))["epoch"] == epoch
    text = (f"## Training\n\nCross-entropy on the training split's captions from cached X-CLIP latents (the encoder "
            f"stays frozen), for up to {args.get('epochs', '?')} epochs ({settings}). The exported weights are "
            f"those of epoch {epoch}{', the best validation CIDEr' if best else ''}.\n")
    scst = scst_record(checkpoint)
    if scst:
        baseline = ("the mean reward of the video's other samples" if scst["baseline"] == "mean"
                    else "the reward of its greedy caption")
        text += (f"\nThen fine-tuned by self-critical sequence training (SCST) after epoch {scst['after_epoch']}: "
                 f"{scst['samples']} captions sampled per video and rewarded by {scst['reward']}, against "
                 f"{baseline}, learning rate {scst['learning_rate']}"
                 + (f", cross-entropy weight {scst['ce_weight']}" if scst.get("ce_weight") else "")
                 + (f", entropy bonus {scst['entropy']}" if scst.get("entropy") else "") + ".\n")
    if log:
        minutes = sum(record.get("seconds", 0) for record in log) / 60
        rows = [f"| {record['epoch']}{' (exported)' if record['epoch'] == epoch else ''} | "
                f"{train_cell(record)} | {record.get('val_loss', float('nan')):.3f} | "
                f"{100 * record.get('val', {}).get('Bleu_4', float('nan')):.1f} | "
                f"{100 * record.get('val', {}).get('CIDEr', float('nan')):.1f} |" for record in log]
        text += ("\n| epoch | train loss | val loss | val BLEU-4 | val CIDEr |\n|---|---:|---:|---:|---:|\n"
                 + "\n".join(rows) + f"\n\nScores ×100. {len(log)} epochs took {minutes:.1f} min in all.\n")
    argument_rows = "\n".join(f"| `{key}` | `{json.dumps(args[key])}` |" for key in sorted(args))
    return text + ("\n<details><summary>All training arguments (those naming local files left out)</summary>\n\n"
                   f"| argument | value |\n|---|---|\n{argument_rows}\n\n</details>\n")


def train_cell(record: dict) -> str:
    """An epoch's training figure in the card's table: its loss, or for an SCST epoch its mean reward."""
    if "scst" in record:
        return f"SCST reward {record['scst'].get('reward', float('nan')):.3f}"
    loss = record.get("train_loss")
    return "" if loss is None else f"{loss:.3f}"


def scores(checkpoint: dict, results: dict | None, model_id: str) -> str:
    """The test scores from evaluate.py's results, or, without them, the validation scores of the exported epoch."""
    if results:
        metrics, split = results["metrics"], results.get("split", "test")
        views, decoding = results.get("views", 1), results.get("decoding") or {}
        flags = xclip_flag(checkpoint["encoder"]) + (f" --views {views}" if views > 1 else "")
        flags += "".join(f" --{name} {decoding[name]}" for name in ("beam_size", "length_penalty") if name in decoding)
        search = "greedy decoding" if decoding.get("beam_size") == 1 else "beam search"
        where = (f"On the {split} split of {dataset_name(checkpoint)}, captions by {search} (`python evaluate.py "
                 f"--model_path {model_id}{flags} --data_dir data --split {split} --out results.json`):")
    else:
        metrics = (checkpoint.get("metrics") or {}).get("val") or {}
        where = ("Not scored on a test split in this export (export again with `--results results.json` from "
                 "`evaluate.py --out`). Validation scores of the exported epoch, as training measured them:")
    names = [name for name in METRIC_NAMES if name in metrics] + sorted(name for name in metrics
                                                                        if name not in METRIC_NAMES)
    rows = "\n".join(f"| {METRIC_LABELS.get(name, name)} | {100 * metrics[name]:.1f} |" for name in names
                     if isinstance(metrics[name], (int, float)))
    return f"## Results\n\n{where}\n\n| metric | score ×100 |\n|---|---:|\n{rows}\n"


def limits(checkpoint: dict) -> str:
    """What a single pooled latent and an LSTM cannot say."""
    decoder, encoder = checkpoint["decoder_config"], checkpoint["encoder"]
    frames = encoder["num_frames"]
    if decoder.get("decoder_type") == "attention":
        pooled = (f"- **{frames} frame features.** The decoder attends over {frames} per-frame vectors, so it can "
                  "tell the order of what it sees, but nothing finer than one frame per segment of the clip.")
    else:
        pooled = (f"- **One vector per clip.** The decoder sees X-CLIP's mean over {frames} frames: it cannot tell "
                  "the order of events (a door opening or closing), count repetitions, or say when something "
                  "happens.")
    dataset = dataset_name(checkpoint)
    return ("## Limitations\n\n" + pooled + "\n"
            f"- **{frames} frames, no sound.** Whatever falls between the sampled frames (a short action, a cut) is "
            "unseen, and speech and sound are ignored. A long video gets one caption for all of it "
            "(`--segment_seconds` captions windows instead).\n"
            f"- **A small LSTM trained from scratch.** It writes short, generic sentences in the words and style "
            f"of {dataset}'s captions ({decoder['vocab_size']} word pieces), in English only, with that data's "
            "biases; it does not follow prompts or answer questions.\n"
            f"- **Scores on {dataset} say little about other kinds of video.**\n")


def model_card(checkpoint: dict, results: dict | None, log: list, model_id: str, license_id: str) -> str:
    """README.md of the exported folder: the Hub's YAML front matter, then the model, its use, training, scores
    and limits. Everything comes from its inputs (no dates), so the same inputs give the same bytes."""
    sections = [f"# Video captioner: X-CLIP + LSTM\n\n{describe(checkpoint)}", usage(checkpoint, model_id),
                training(checkpoint, log), scores(checkpoint, results, model_id), limits(checkpoint)]
    return front_matter(checkpoint, license_id) + "\n" + "\n".join(sections)


# ----------------------------------------------------------------------------- Hub

def push_to_hub(folder: Path, repo_id: str, private: bool) -> str:
    """Upload the exported files of folder to the Hub model repo repo_id (created if missing); its URL."""
    api = HfApi()  # the token comes from HF_TOKEN or `hf auth login`, as for every huggingface_hub call
    try:
        api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                          allow_patterns=list(SHARED_FILES), commit_message="Upload captioner (export.py)")
    # Any failure here is the Hub's or the network's (no token, no write access, offline, a proxy), and
    # huggingface_hub's HTTP client raises its own transport errors besides HfHubHTTPError: all become one line.
    except Exception as error:
        raise UserError(f"--push_to_hub {repo_id}: the upload failed ({type(error).__name__}: {one_line(error)}); "
                        "check the connection, the name, and that you are logged in with a write token "
                        "(`hf auth login` or HF_TOKEN)") from None
    return f"https://huggingface.co/{repo_id}"


def main(args) -> int:
    use_warning_lines()
    try:
        paths = [args.model_path] if isinstance(args.model_path, str) else list(args.model_path)
        if len(paths) > 1:
            raise UserError(f"--model_path: {len(paths)} checkpoints; a folder holds one decoder, so export each member "
                            "of an ensemble to its own folder and pass them all to evaluate.py or inference.py")
        args.model_path = paths[0]
        if args.push_to_hub and not is_repo_id(args.push_to_hub):
            raise UserError(f"--push_to_hub {args.push_to_hub}: not a Hub repo id; pass user/name")
        out_dir = Path(args.out_dir)
        check_outputs([("--out_dir", out_dir / name) for name in SHARED_FILES],
                      [("--model_path", args.model_path), ("--results", args.results),
                       ("log.jsonl", Path(args.model_path).with_name("log.jsonl"))])
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out_dir {out_dir}: is a file, not a folder; pass a folder")
        check_output_folder(out_dir, "--out_dir", written_by_export, args.overwrite)
        checkpoint = load_checkpoint(args.model_path)
        results = read_results(args.results) if args.results else None
        if results:
            check_results_checkpoint(results, args.results, checkpoint, args.model_path)
        model_id = args.push_to_hub or str(args.out_dir)
        card = model_card(checkpoint, results, read_log(args.model_path), model_id, args.license)
        try:
            out_dir = save_folder(checkpoint, args.out_dir, readme=card)
        except OSError as error:
            raise UserError(f"{args.out_dir}: cannot write the export ({one_line(error)}); choose a writable "
                            "folder") from None
        print(f"wrote {', '.join(SHARED_FILES)} to {out_dir}")
        if not encoder_on_hub(checkpoint["encoder"]):
            print(f"note: the encoder is a local folder ({checkpoint['encoder']['name']}): users of this export "
                  "need a copy of the same weights (--xclip_model)", file=sys.stderr)
        if args.push_to_hub:
            print(f"uploaded to {push_to_hub(out_dir, args.push_to_hub, args.private)}")
    except UserError as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
