"""The caption metrics: PTB-style tokenization, the COCO scorers (pycocoevalcap), and a fast CIDEr-D for rewards.

    from metrics import score_captions, CiderD
    score_captions({"v1": "a man is cooking"}, {"v1": ["a man cooks food", "someone is cooking"]}, java=False)

score_captions is what evaluate.py reports and train.py validates with; CiderD is the same CIDEr-D (equal to
pycocoevalcap's per caption on the same tokens and document frequencies) with the document frequencies of a
fixed reference corpus computed once, fast enough to reward thousands of sampled captions per epoch.
"""
import contextlib
import functools
import io
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections import Counter

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

# Tokens PTBTokenizer's wrapper drops after tokenizing (pycocoevalcap/tokenizer/ptbtokenizer.py).
# "-LRB-" and friends never match there because the tokenizer lower-cases them to "-lrb-", which stays.
PTB_PUNCTUATIONS = ("''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                    ".", "?", "!", ",", ":", "-", "--", "...", ";")

_warned_no_java = False  # "METEOR skipped" is printed once per process, not once per call


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
    return score_captions_per_video(predictions, references, java, meteor)[0]


def score_captions_per_video(predictions: dict, references: dict, java: bool | None = None,
                             meteor: bool = True) -> tuple:
    """score_captions' metrics, and each caption's own {"CIDEr", "Bleu_4"} by id from the same scorers' per-item
    scores (BLEU-4 of one sentence with its own brevity penalty; CIDEr-D with the corpus document frequencies)."""
    global _warned_no_java

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
    turned_off = java is False
    if java is None:
        java = java_available()
    if not java and meteor and not _warned_no_java:
        reason = "Java not used (--java no)" if turned_off else "Java not found"
        warnings.warn(f"METEOR skipped: {reason} (BLEU/ROUGE_L/CIDEr use a Python PTB-style tokenizer)",
                      RuntimeWarning, stacklevel=2)
        _warned_no_java = True

    ids = list(predictions)  # one order for both dicts; the scorers iterate over gts.keys()
    tokenized = tokenize_captions({**{("hyp", i): [predictions[i]] for i in ids},
                                   **{("ref", i): list(references[i]) for i in ids}}, java)
    predictions_tok = {i: tokenized[("hyp", i)] for i in ids}
    references_tok = {i: tokenized[("ref", i)] for i in ids}

    metrics = {}
    with contextlib.redirect_stdout(io.StringIO()):  # the scorers print progress on stdout
        bleu_scores, bleu_per_item = Bleu(4).compute_score(references_tok, predictions_tok, verbose=0)
        for n, bleu in enumerate(bleu_scores, start=1):
            metrics[f"Bleu_{n}"] = float(bleu)
        if java and meteor:
            metrics["METEOR"] = compute_meteor(references_tok, predictions_tok)
        rouge_score, _ = Rouge().compute_score(references_tok, predictions_tok)
        metrics["ROUGE_L"] = float(rouge_score)
        cider_score, cider_per_item = Cider().compute_score(references_tok, predictions_tok)
        metrics["CIDEr"] = float(cider_score)
    per_video = {i: {"CIDEr": float(cider), "Bleu_4": float(bleu)}  # both lists follow the order of ids
                 for i, cider, bleu in zip(ids, cider_per_item, bleu_per_item[3])}
    return metrics, per_video


# ----------------------------------------------------------------------------- CIDEr-D as a reward

CIDER_N = 4        # n-grams of 1..4 words
CIDER_SIGMA = 6.0  # width of CIDEr-D's Gaussian length penalty


def ngram_counts(words: list, n: int = CIDER_N) -> Counter:
    """Term frequencies of every 1..n-gram of a word list (tuples as keys), as pycocoevalcap's precook."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


class CiderD:
    """pycocoevalcap's CIDEr-D with the document frequencies of a fixed corpus computed once.

    references: {id: [tokenized reference, ...]} (PTB-tokenized, words joined by spaces): the corpus whose
    document frequencies weigh the n-grams (the training split's, for rewards), and the references each
    id's captions are scored against. score(id, caption) equals pycocoevalcap's per-caption CIDEr-D of that
    caption against references[id] when pycocoevalcap is given the same tokens and a corpus with the same
    document frequencies (for example: captions for exactly the ids of `references`). Each id's references are
    turned into tf-idf vectors once; scores are cached by (id, caption), since sampled captions repeat.
    """

    def __init__(self, references: dict, cache_size: int = 200_000):
        references = {key: list(refs) for key, refs in references.items()}
        counts = {key: [ngram_counts(ref.split()) for ref in refs] for key, refs in references.items()}
        document_frequency = Counter(ngram for ref_counts in counts.values()
                                     for ngram in set().union(*ref_counts))
        self.log_corpus_size = math.log(float(len(references)))
        self.log_document_frequency = {ngram: math.log(df) for ngram, df in document_frequency.items()}
        self.references = {key: [self._vector(ref) for ref in ref_counts] for key, ref_counts in counts.items()}
        self.cache, self.cache_size = {}, cache_size

    def _vector(self, counts: Counter) -> tuple:
        """n-gram counts -> (tf-idf weight per n-gram by order [dict] * n, norm per order, length), as
        pycocoevalcap's counts2vec (whose "length" counts bigrams)."""
        vectors = [{} for _ in range(CIDER_N)]
        for ngram, term_frequency in counts.items():
            idf = self.log_corpus_size - self.log_document_frequency.get(ngram, 0.0)
            vectors[len(ngram) - 1][ngram] = float(term_frequency) * idf
        norms = [math.sqrt(sum(weight * weight for weight in vector.values())) for vector in vectors]
        length = sum(count for ngram, count in counts.items() if len(ngram) == 2)
        return vectors, norms, length

    def score(self, key, caption: str) -> float:
        """CIDEr-D of one tokenized caption against references[key] (0-10 scale, as pycocoevalcap's per-caption
        scores)."""
        cached = self.cache.get((key, caption))
        if cached is not None:
            return cached
        vectors, norms, length = self._vector(ngram_counts(caption.split()))
        total = 0.0
        for ref_vectors, ref_norms, ref_length in self.references[key]:
            penalty = math.exp(-float(length - ref_length) ** 2 / (2 * CIDER_SIGMA ** 2))
            for vector, ref_vector, norm, ref_norm in zip(vectors, ref_vectors, norms, ref_norms):
                overlap = 0.0
                for ngram, weight in vector.items():
                    ref_weight = ref_vector.get(ngram)
                    if ref_weight is not None:
                        overlap += min(weight, ref_weight) * ref_weight
                if norm != 0 and ref_norm != 0:
                    overlap /= norm * ref_norm
                total += overlap * penalty
        value = total / CIDER_N / len(self.references[key]) * 10.0
        if len(self.cache) >= self.cache_size:
            self.cache.clear()
        self.cache[(key, caption)] = value
        return value

    def scores(self, keys: list, captions: list) -> list:
        """score() of each (key, caption) pair."""
        return [self.score(key, caption) for key, caption in zip(keys, captions)]

