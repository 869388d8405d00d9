"""Checkpoints: one save/load helper for train, evaluate and inference.

    python checkpoint.py models/best.pt    # print what a checkpoint holds

A checkpoint is plain data (state_dicts, numbers, strings, bytes), loadable with
torch.load(weights_only=True): the decoder's config and weights, the tokenizer itself, the encoder's
name, fingerprint, frame count and preprocessing, the training args and metrics. It is written to a
temporary name and renamed into place, so a failed save leaves the previous file intact.
"""
import argparse
import json
import os
import sys
from pathlib import Path

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("version", "decoder_config", "decoder", "tokenizer", "encoder")


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message is one line naming the file and the problem."""


def save_checkpoint(path, payload):
    """Write payload atomically: temp file, fsync, os.replace. Adds the format version."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(temp, "wb") as handle:
            try:
                torch.save({"version": CHECKPOINT_VERSION, **payload}, handle)
            except RuntimeError as error:  # torch's zip writer hides a failed write (disk full) behind its own error
                if isinstance(error.__context__, OSError):
                    raise error.__context__ from None
                raise
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint safely (weights_only=True) and check it has what inference needs."""
    import pickle
    import torch

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


def decoder_from_checkpoint(checkpoint):
    """The CaptionDecoder a checkpoint describes, weights loaded, in eval mode."""
    from model import CaptionDecoder, DecoderConfig

    try:
        decoder = CaptionDecoder(DecoderConfig(**checkpoint["decoder_config"]))
        decoder.load_state_dict(checkpoint["decoder"])
    except (TypeError, ValueError, KeyError, RuntimeError) as error:  # made by another version or edited
        raise CheckpointError(f"the checkpoint's decoder does not fit this repo's CaptionDecoder "
                              f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
    return decoder.eval()


def tokenizer_from_checkpoint(checkpoint, tokenizer_path=None):
    """The checkpoint's own sentencepiece model; tokenizer_path, if given, must be the same model."""
    import sentencepiece as spm

    proto = checkpoint["tokenizer"]
    if tokenizer_path is not None:
        tokenizer_path = Path(tokenizer_path)
        if not tokenizer_path.is_file():
            raise CheckpointError(f"{tokenizer_path}: no such tokenizer file")
        if tokenizer_path.read_bytes() != proto:
            raise CheckpointError(f"{tokenizer_path}: not the tokenizer this checkpoint was trained with; "
                                  "leave --tokenizer_path out to use the checkpoint's own")
    return spm.SentencePieceProcessor(model_proto=proto)


def encoder_from_checkpoint(checkpoint, xclip_model=None, dtype=None, device="cpu"):
    """Load the X-CLIP the checkpoint was trained on (or a local copy of it) and check it is the same one."""
    import torch
    from model import XClipEncoder

    info = checkpoint["encoder"]
    encoder = XClipEncoder(xclip_model or info["name"], dtype=dtype or torch.float32).to(device)
    if encoder.fingerprint() != info["fingerprint"]:
        raise CheckpointError(f"{xclip_model or info['name']}: not the X-CLIP this checkpoint was trained with "
                              f"(fingerprint {encoder.fingerprint()} != {info['fingerprint']}, "
                              f"trained with {info['name']})")
    return encoder


def summary(checkpoint):
    """Plain-data description of a checkpoint, for printing."""
    return {"version": checkpoint["version"], "encoder": checkpoint["encoder"],
            "decoder_config": checkpoint["decoder_config"], "epoch": checkpoint.get("epoch"),
            "metrics": checkpoint.get("metrics"), "tokenizer_bytes": len(checkpoint["tokenizer"])}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Print what a captioner checkpoint holds.")
    parser.add_argument("model_path", help="checkpoint file, e.g. models/best.pt")
    return parser.parse_args(argv)


def main(args):
    try:
        checkpoint = load_checkpoint(args.model_path)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary(checkpoint), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
