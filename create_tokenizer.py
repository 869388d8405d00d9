"""Train the caption tokenizer: sentencepiece BPE on the training split's captions only.

    python create_tokenizer.py --data_dir data --scheme official --vocab_size 10000 --out_prefix tokenizer

Writes tokenizer.model and tokenizer.vocab. Ids: pad 0, unk 1, bos 2, eos 3. Captions are
normalised with annotations.normalize_caption (the one normalisation used for training targets);
sentencepiece itself changes nothing more (identity rule) and falls back to bytes for characters it
has not seen, so every normalised caption decodes back to itself exactly.
"""
import argparse
import os
import re
import sys
from pathlib import Path

import sentencepiece as spm

from annotations import add_data_arguments, load_dataset, normalize_caption
from common import UserError, check_outputs, fail, one_line, positive_int, temporary_path, use_warning_lines

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def _train(sentences, model_prefix, vocab_size):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=str(model_prefix), vocab_size=int(vocab_size),
        model_type="bpe", character_coverage=1.0, byte_fallback=True,
        normalization_rule_name="identity",  # normalize_caption already did all the normalising
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        num_threads=max(1, os.cpu_count() or 1), minloglevel=2)  # minloglevel 2: errors only


def tokenizer_prefix(out_prefix) -> Path:
    """--out_prefix as the files' prefix: a folder given, the files go inside it as tokenizer.model/.vocab."""
    out_prefix = Path(out_prefix)
    return out_prefix / "tokenizer" if out_prefix.is_dir() else out_prefix


def train_tokenizer(captions, out_prefix, vocab_size=10000):
    """Train sentencepiece BPE on the normalised captions; write out_prefix.model/.vocab; return the .model path.

    A vocab_size larger than the corpus supports is lowered to the largest that works, with a
    one-line note on stderr; one too small for the characters (plus 256 byte pieces) is a ValueError.
    """
    sentences = [caption for caption in map(normalize_caption, captions) if caption]
    if not sentences:
        raise ValueError("no captions to train the tokenizer on")
    out_prefix = tokenizer_prefix(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    # Train under a temporary prefix, renamed (.vocab, then .model) once both are written: a failed run never
    # leaves a half-written tokenizer.
    with temporary_path(out_prefix, suffixes=(".vocab", ".model")) as temp_prefix:
        try:
            _train(sentences, temp_prefix, vocab_size)
        except RuntimeError as error:
            too_high = re.search(r"Vocabulary size too high.*value <= (\d+)", str(error))
            too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(error))
            if too_high:
                cap = int(too_high.group(1))
                print(f"note: vocab_size {vocab_size} is more than {len(sentences)} captions "
                      f"support; using {cap}", file=sys.stderr)
                _train(sentences, temp_prefix, cap)
            elif too_low:
                raise ValueError(f"vocab_size {vocab_size} is too small for these captions: it needs at least "
                                 f"{too_low.group(1)} (special ids, 256 byte pieces and every character)") from None
            elif "insert_id" in str(error):  # fewer pieces than the four special ids
                raise ValueError(f"vocab_size {vocab_size} is too small: pass at least a few hundred") from None
            else:
                raise ValueError(f"sentencepiece failed: {str(error).splitlines()[0]}") from None
    return Path(f"{out_prefix}.model")


def train_captions(dataset):
    """The training split's captions (raw): the tokenizer never sees a caption of a val or test video."""
    return [caption for video_id in dataset.splits["train"] for caption in dataset.captions.get(video_id, [])]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--vocab_size", type=positive_int, default=10000,
                        help="sentencepiece vocabulary size; lowered with a note if the corpus is too small "
                             "(default: 10000)")
    parser.add_argument("--out_prefix", default="tokenizer",
                        help="writes OUT_PREFIX.model and OUT_PREFIX.vocab; given a folder, FOLDER/tokenizer.model "
                             "(default: tokenizer)")
    return parser.parse_args(argv)


def main(args) -> int:
    use_warning_lines()
    try:
        dataset = load_dataset(args, check_videos=False)
        check_outputs([("--out_prefix", f"{tokenizer_prefix(args.out_prefix)}.model"),
                       ("--out_prefix", f"{tokenizer_prefix(args.out_prefix)}.vocab")],
                      [("the annotations", source) for source in dataset.sources])
        captions = train_captions(dataset)
        if not captions:
            raise UserError(f"{args.data_dir}: the {args.scheme} train split has no captions")
        model_path = train_tokenizer(captions, args.out_prefix, args.vocab_size)
    except (UserError, ValueError) as error:
        return fail(error)
    except OSError as error:
        return fail(f"{error.filename or args.out_prefix}: {one_line(error)}; pass a writable --out_prefix")
    size = spm.SentencePieceProcessor(model_file=str(model_path)).get_piece_size()
    print(f"{model_path}: {size} pieces from {len(captions)} training captions")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
