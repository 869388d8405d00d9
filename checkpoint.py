"""Checkpoints: what they hold, and the one save/load helper for train, evaluate and inference.

    python checkpoint.py models/best.pt    # print what a checkpoint holds

A checkpoint is plain data (state_dicts, numbers, strings, bytes), loadable with
torch.load(weights_only=True): the decoder's config and weights, the tokenizer itself, the encoder's
name, fingerprint, frame count and preprocessing, the training args and metrics, and (in last.pt)
what --resume needs. It is written to a temporary name and renamed into place, so a failed save
leaves the previous file intact.
"""
import argparse
import json
import pickle
import sys
from pathlib import Path

import sentencepiece as spm
import torch

from common import UserError, atomic_write, fail
from model import CaptionDecoder, DecoderConfig, XClipEncoder

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("version", "decoder_config", "decoder", "tokenizer", "encoder")


class CheckpointError(UserError):
    """A checkpoint cannot be used; the message is one line naming the file and the problem."""


def make_checkpoint(decoder, tokenizer_proto: bytes, encoder_meta: dict, args: dict, metrics: dict | None = None,
                    epoch: int = 0, training_state: dict | None = None, data: dict | None = None) -> dict:
    """The payload of a checkpoint: the decoder (config and weights), the tokenizer's bytes, the encoder record
    (the cache's meta: name, fingerprint, frames, preprocessing, dtype), the training args and metrics, what it
    was trained on (data: {"dataset", "scheme", ...}), and training_state (optimizer, scheduler, best_cider,
    bad_epochs) for --resume."""
    return {"decoder_config": decoder.config.to_dict(), "decoder": decoder.state_dict(), "tokenizer": tokenizer_proto,
            "encoder": dict(encoder_meta), "args": dict(args), "metrics": metrics or {}, "epoch": epoch,
            "data": dict(data or {}), **(training_state or {})}


def save_checkpoint(path, payload: dict) -> None:
    """Write payload atomically (temp file, fsync, os.replace), adding the format version."""
    def write(handle):
        try:
            torch.save({"version": CHECKPOINT_VERSION, **payload}, handle)
        except RuntimeError as error:  # torch's zip writer hides a failed write (disk full) behind its own error
            if isinstance(error.__context__, OSError):
                raise error.__context__ from None
            raise

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint safely (weights_only=True) and check it has what inference needs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train one with train.py or pass --model_path")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused, it holds pickled objects that could run code "
                              f"({str(error).splitlines()[0][:120]})") from None
    except Exception as error:  # torch raises RuntimeError/EOFError/zip errors for damaged files
        raise CheckpointError(f"{path}: unreadable, truncated or not a checkpoint "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''})") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        missing = [key for key in REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
        raise CheckpointError(f"{path}: not a captioner checkpoint (missing {', '.join(missing)})")
    if checkpoint["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: made by a newer version of this repo (format {checkpoint['version']})")
    return checkpoint


def decoder_from_checkpoint(checkpoint: dict) -> CaptionDecoder:
    """The CaptionDecoder a checkpoint describes, weights loaded, in eval mode."""
    try:
        decoder = CaptionDecoder(DecoderConfig(**checkpoint["decoder_config"]))
        decoder.load_state_dict(checkpoint["decoder"])
    except (TypeError, ValueError, KeyError, RuntimeError) as error:  # made by another version or edited
        raise CheckpointError(f"the checkpoint's decoder does not fit this repo's CaptionDecoder "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
    return decoder.eval()


def tokenizer_from_checkpoint(checkpoint: dict, tokenizer_path=None) -> spm.SentencePieceProcessor:
    """The checkpoint's own sentencepiece model; tokenizer_path, if given, must be the same model."""
    proto = checkpoint["tokenizer"]
    if tokenizer_path is not None:
        tokenizer_path = Path(tokenizer_path)
        if not tokenizer_path.is_file():
            raise CheckpointError(f"{tokenizer_path}: no such tokenizer file")
        if tokenizer_path.read_bytes() != proto:
            raise CheckpointError(f"{tokenizer_path}: not the tokenizer this checkpoint was trained with; "
                                  "leave --tokenizer_path out to use the checkpoint's own")
    return spm.SentencePieceProcessor(model_proto=proto)


def encoder_from_checkpoint(checkpoint: dict, xclip_model=None, dtype=None, device="cpu") -> XClipEncoder:
    """Load the X-CLIP the checkpoint was trained on (or a local copy of it) and check it is the same one."""
    info = checkpoint["encoder"]
    encoder = XClipEncoder(xclip_model or info["name"], dtype=dtype or torch.float32).to(device)
    if not encoder.made(info["fingerprint"], info["name"]):
        raise CheckpointError(f"{xclip_model or info['name']}: not the X-CLIP this checkpoint was trained with "
                              f"(fingerprint {encoder.fingerprint()} != {info['fingerprint']}, "
                              f"trained with {info['name']})")
    return encoder


def summary(checkpoint: dict) -> dict:
    """Plain-data description of a checkpoint, for printing."""
    return {"version": checkpoint["version"], "encoder": checkpoint["encoder"],
            "decoder_config": checkpoint["decoder_config"], "epoch": checkpoint.get("epoch"),
            "metrics": checkpoint.get("metrics"), "tokenizer_bytes": len(checkpoint["tokenizer"])}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Print what a captioner checkpoint holds.")
    parser.add_argument("model_path", help="checkpoint file, e.g. models/best.pt")
    return parser.parse_args(argv)


def main(args) -> int:
    try:
        checkpoint = load_checkpoint(args.model_path)
    except CheckpointError as error:
        return fail(error)
    print(json.dumps(summary(checkpoint), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
