"""What the captions of an evaluation look like, beside their scores, and the readable report of evaluate.py.

    python evaluate.py --model_path models/best.pt --data_dir data --split test --report report.md

A captioner that fails often fails visibly: every video gets the same sentence (its decoder ignores the
latents), captions are short and generic, or they are copied from the training set; one tuned on CIDEr-D may cut
captions off on a function word ("a man is playing a") or repeat a phrase. caption_diagnostics
counts these; collapse_warning names the classic collapse; format_report lists the best and worst videos
with the caption beside its references.
"""
from collections import Counter

from annotations import normalize_caption

# A decoder that ignores its input gives one caption to every video; a working one gives its most frequent
# caption to a small share. The threshold sits far from both (measured on the quickstart: docs/inspection.md).
COLLAPSE_SHARE = 0.25
COLLAPSE_MIN_VIDEOS = 10  # below this a repeated caption says little
# Words a finished English caption does not end on; self-critical training learns to cut captions off after them
# ("a man is playing a"), since CIDEr-D rewards the n-grams before the cut.
DANGLING_WORDS = frozenset({"a", "an", "the", "with", "and", "of", "on", "in", "to", "is"})
REPEAT_NGRAM = 2  # a caption "repeats itself" when a word n-gram of this length occurs twice in it


def ends_dangling(caption: str) -> bool:
    """Whether a normalised caption ends on a function word (DANGLING_WORDS), or is empty."""
    words = caption.split()
    return not words or words[-1].strip(".,!?;:") in DANGLING_WORDS


def repeats_ngram(caption: str, n: int = REPEAT_NGRAM) -> bool:
    """Whether some word n-gram occurs twice in a normalised caption ("a man is a man is")."""
    words = caption.split()
    ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(ngrams)) < len(ngrams)


def caption_diagnostics(captions: dict, references: dict, training_captions=None, top: int = 5) -> dict:
    """{id: caption} and {id: [reference, ...]} -> distinct captions (count and share of videos), vocabulary,
    mean length in words beside the references', the shares ending on a dangling word and repeating a word n-gram, the share
    copied verbatim from training_captions (when given),
    the `top` most frequent captions with their counts, and whether one caption covers COLLAPSE_SHARE or more
    of the videos. Captions are compared after annotations.normalize_caption."""
    normalised = [normalize_caption(caption) for caption in captions.values()]
    counts = Counter(normalised)
    videos = len(normalised)
    reference_lengths = [len(normalize_caption(reference).split())
                         for reference_list in references.values() for reference in reference_list]
    diagnostics = {
        "videos": videos,
        "distinct_captions": len(counts),
        "distinct_share": len(counts) / videos,
        "vocabulary": len({word for caption in counts for word in caption.split()}),
        "mean_length": sum(len(caption.split()) for caption in normalised) / videos,
        "dangling_share": sum(ends_dangling(caption) for caption in normalised) / videos,
        "repeated_ngram_share": sum(repeats_ngram(caption) for caption in normalised) / videos,
        "reference_mean_length": sum(reference_lengths) / max(1, len(reference_lengths)),
        "most_frequent": [{"caption": caption, "count": count, "share": count / videos}
                          for caption, count in counts.most_common(top)],
    }
    if training_captions is not None:
        seen = {normalize_caption(caption) for caption in training_captions}
        diagnostics["copied_from_training"] = sum(caption in seen for caption in normalised) / videos
    top_share = diagnostics["most_frequent"][0]["share"]
    diagnostics["collapsed"] = videos >= COLLAPSE_MIN_VIDEOS and top_share >= COLLAPSE_SHARE
    return diagnostics


def format_diagnostics(diagnostics: dict) -> str:
    """The diagnostics as a few aligned lines, printed under the metrics table."""
    lines = [(f"distinct captions  {diagnostics['distinct_captions']} of {diagnostics['videos']} videos "
              f"({diagnostics['distinct_share']:.1%})"),
             f"vocabulary         {diagnostics['vocabulary']} words",
             (f"dangling ending    {diagnostics.get('dangling_share', 0):.1%} of captions end on "
              f"{'/'.join(sorted(DANGLING_WORDS))}"),
             (f"repeated phrase    {diagnostics.get('repeated_ngram_share', 0):.1%} of captions repeat a "
              f"{REPEAT_NGRAM}-word phrase"),
             (f"mean length        {diagnostics['mean_length']:.1f} words (references "
              f"{diagnostics['reference_mean_length']:.1f})")]
    if "copied_from_training" in diagnostics:
        lines.append(f"copied from train  {diagnostics['copied_from_training']:.1%} of captions appear verbatim "
                     "among the training captions")
    lines.append("most frequent captions:")
    lines += [f"  {item['count']:>5}  {item['caption']}" for item in diagnostics["most_frequent"]]
    return "\n".join(lines)


def collapse_warning(diagnostics: dict) -> str | None:
    """One line when one caption covers COLLAPSE_SHARE or more of the videos, else None."""
    if not diagnostics["collapsed"]:
        return None
    top = diagnostics["most_frequent"][0]
    return (f"collapse: {top['share']:.0%} of the videos ({top['count']} of {diagnostics['videos']}) get the same "
            f"caption \"{top['caption']}\"; the decoder is not reading the video (check the latents and the "
            f"training curves; evaluate.py --control zeros shows a decoder without input)")


def escape_markdown(text: str) -> str:
    """Text shown as itself in Markdown: the characters that would format it escaped."""
    return "".join(f"\\{char}" if char in "\\`*_[]<>|#" else char for char in str(text))


def video_section(record: dict) -> list:
    """One video in the report: its id and scores, its caption, then its references."""
    scores = record["scores"]
    lines = [f"### {escape_markdown(record_id(record))}: CIDEr-D {scores['CIDEr']:.3f}, BLEU-4 {scores['Bleu_4']:.3f}",
             "", f"**caption:** {escape_markdown(record['caption'])}", "", "references:", ""]
    lines += [f"- {escape_markdown(reference)}" for reference in record["references"]]
    return lines + [""]


def record_id(record: dict) -> str:
    """A prediction's id: the video id (checkpoint mode) or the line number (file mode)."""
    return str(record["video_id"] if "video_id" in record else record["id"])


def format_report(result: dict, metrics_table: str, count: int = 5) -> str:
    """evaluate.py's result -> a Markdown report: what was evaluated, the metrics, the diagnostics, and the
    `count` best and worst videos by CIDEr-D (ties broken by BLEU-4), each caption beside its references."""
    ranked = sorted(result["predictions"], key=lambda record: (record["scores"]["CIDEr"], record["scores"]["Bleu_4"]))
    count = min(count, len(ranked))
    source = result.get("model_path") or "caption files"
    header = [f"# Evaluation of {escape_markdown(source)}", ""]
    if "split" in result:
        header += [(f"Split `{result['split']}`, control `{result['control']}`, views {result['views']}, "
                    f"{len(ranked)} videos."), ""]
    lines = header + ["## Scores", "", "```", metrics_table, "```", "", "## Captions", ""]
    warning = collapse_warning(result["diagnostics"])
    if warning:
        lines += [f"**Warning:** {escape_markdown(warning)}", ""]
    lines += ["```", format_diagnostics(result["diagnostics"]), "```", "", f"## The {count} best (CIDEr-D)", ""]
    for record in reversed(ranked[-count:]):
        lines += video_section(record)
    lines += [f"## The {count} worst (CIDEr-D)", ""]
    for record in ranked[:count]:
        lines += video_section(record)
    return "\n".join(lines)
