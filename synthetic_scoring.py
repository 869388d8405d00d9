"""Scoring captions of the synthetic clips on what they name: colour, size, shape, direction, and order.

    from synthetic_scoring import load_attributes, synthetic_metrics
    metrics = synthetic_metrics(captions_by_video, load_attributes("data"))

The vocabulary of the synthetic captions lives here, beside the scorers, so that evaluate.py scores a synthetic
set without importing what writes one (PyAV and transformers' X-CLIP, in synthetic.py).
"""
import json
from pathlib import Path

COLOURS = {  # name -> RGB; bright enough to stand out on the dark backgrounds below
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 235),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
    "purple": (150, 50, 200),
}

# Words a caption may use for each attribute value (the first is the canonical name).
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
SHAPE_WORDS = {"square": ("square", "block"), "circle": ("circle", "ball"), "triangle": ("triangle",)}
DIRECTION_WORDS = {"left": ("left",), "right": ("right",), "up": ("up", "upwards"), "down": ("down", "downwards")}


def load_attributes(folder):
    """Ground truth of a synthetic dataset: video id -> {colour, size, shape, direction, ...}, from
    folder/annotation/attributes.json or folder/MSRVTT/annotation/attributes.json; None when there is none
    (the dataset is not synthetic)."""
    for path in (Path(folder) / "annotation" / "attributes.json", Path(folder) / "MSRVTT" / "annotation" / "attributes.json"):
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def caption_attributes(caption):
    """What a caption names, canonicalised: {colour, size, shape, direction} (None where it names none).

    The first word naming each attribute counts, so "a red ball turns blue" names colour "red".
    """
    words = caption.lower().replace(",", " ").split()
    vocab = {
        "colour": {name: name for name in COLOURS},
        "size": {word: name for name, words_ in SIZE_WORDS.items() for word in words_},
        "shape": {word: name for name, words_ in SHAPE_WORDS.items() for word in words_},
        "direction": {word: name for name, words_ in DIRECTION_WORDS.items() for word in words_},
    }
    named = {}
    for attribute, lookup in vocab.items():
        named[attribute] = next((lookup[word] for word in words if word in lookup), None)
    return named


def attribute_accuracy(captions_by_video, attributes_by_video, keys=("colour", "size", "shape", "direction")):
    """Share of videos whose caption names the right value of each attribute: {key: accuracy}.

    A caption that names no value for an attribute counts as wrong for it.
    """
    video_ids = [video_id for video_id in captions_by_video if video_id in attributes_by_video]
    if not video_ids:
        raise ValueError("no captioned video has ground-truth attributes")
    correct = {key: 0 for key in keys}
    for video_id in video_ids:
        named = caption_attributes(captions_by_video[video_id])
        for key in keys:
            correct[key] += int(named[key] == attributes_by_video[video_id][key])
    return {key: correct[key] / len(video_ids) for key in keys}


def caption_events(caption):
    """What a caption says happened first and second: {"directions": (first, second), "colours": (first, second)},
    each None when the caption names fewer than two different ones. "B after A" counts as A, then B."""
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


def synthetic_metrics(captions_by_video, attributes_by_video):
    """What evaluate.py adds on a synthetic set: {colour,size,shape,direction}_accuracy, and on the "order" task
    the order accuracies."""
    metrics = {f"{name}_accuracy": value
               for name, value in attribute_accuracy(captions_by_video, attributes_by_video).items()}
    metrics.update(order_accuracy(captions_by_video, attributes_by_video))
    return metrics
