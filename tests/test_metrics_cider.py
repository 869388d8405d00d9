"""metrics.CiderD, the CIDEr-D that rewards self-critical training, against pycocoevalcap's CIDEr-D: per caption
equal to 1e-6 on the same tokens and document frequencies (synthetic captions always; real ones when
../shared/realdata is there)."""
import contextlib
import io
import json
import random

import pytest
from pycocoevalcap.cider.cider import Cider

import metrics


def reference_cider(hypotheses: dict, references: dict) -> dict:
    """pycocoevalcap's per-caption CIDEr-D, {id: score}."""
    ids = list(hypotheses)
    with contextlib.redirect_stdout(io.StringIO()):
        _, per_caption = Cider().compute_score({i: references[i] for i in ids}, {i: [hypotheses[i]] for i in ids})
    return dict(zip(ids, per_caption))


def assert_equal_to_pycocoevalcap(hypotheses: dict, references: dict):
    expected = reference_cider(hypotheses, references)
    cider = metrics.CiderD(references)
    ours = {i: cider.score(i, hypotheses[i]) for i in hypotheses}
    assert max(abs(ours[i] - expected[i]) for i in hypotheses) < 1e-6
    assert sum(value > 0 for value in expected.values()) > len(expected) // 4  # not a test of zeros
    again = cider.scores(list(hypotheses), [hypotheses[i] for i in hypotheses])  # from the cache
    assert again == [ours[i] for i in hypotheses]


def synthetic_corpus(seed=0, videos=40):
    rng = random.Random(seed)
    subjects, verbs, objects = ["a man", "a woman", "a dog", "two kids", "a cat"], \
        ["is playing", "plays with", "is eating", "runs after", "is holding"], \
        ["a ball", "the guitar", "some food", "a red car", "a toy", "a ball and a toy"]
    def sentence():
        words = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}".split()
        return " ".join(words + ["in the park"] * rng.randint(0, 1) + ["a"] * rng.randint(0, 1))
    references = {f"v{i}": [sentence() for _ in range(rng.randint(1, 6))] for i in range(videos)}
    hypotheses = {key: rng.choice([sentence(), refs[0], "a", "", "a a a a a a a a"]) for key, refs in
                  references.items()}
    return hypotheses, references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_captions_equal_pycocoevalcap(seed):
    assert_equal_to_pycocoevalcap(*synthetic_corpus(seed))


def test_document_frequencies_come_from_the_given_corpus():
    """Scoring a few ids with the document frequencies of a larger corpus equals pycocoevalcap run on that
    corpus (where the other ids carry captions too), and differs from scoring the few alone."""
    hypotheses, references = synthetic_corpus(3, videos=30)
    expected = reference_cider(hypotheses, references)
    cider = metrics.CiderD(references)
    few = list(hypotheses)[:5]
    assert all(abs(cider.score(i, hypotheses[i]) - expected[i]) < 1e-6 for i in few)
    alone = metrics.CiderD({i: references[i] for i in few})
    assert any(abs(alone.score(i, hypotheses[i]) - expected[i]) > 1e-3 for i in few)


def test_real_caption_files_equal_pycocoevalcap(realdata):
    folder = realdata / "captions"
    hyp = (folder / "hyp.txt").read_text().splitlines()
    refs = [(folder / name).read_text().splitlines() for name in ("ref1.txt", "ref2.txt")]
    tokenized = metrics.tokenize_captions({i: [h] + [r[i] for r in refs] for i, h in enumerate(hyp)}, java=False)
    hypotheses = {i: captions[0] for i, captions in tokenized.items()}
    references = {i: captions[1:] for i, captions in tokenized.items()}
    expected = reference_cider(hypotheses, references)
    cider = metrics.CiderD(references)
    assert all(abs(cider.score(i, hypotheses[i]) - expected[i]) < 1e-6 for i in hypotheses)
    assert sum(expected.values()) / len(expected) == pytest.approx(1.242192, abs=1e-5)  # the README's score


def test_msrvtt_captions_equal_pycocoevalcap(realdata):
    """Some 600 MSR-VTT captions of 30 videos, PTB-tokenized: each video's first caption, or another video's,
    scored against its other 19."""
    path = realdata / "msrvtt" / "MSRVTT" / "annotation" / "MSR_VTT.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    videos = [f"video{i}" for i in range(30)]
    captions = {video: [] for video in videos}
    for annotation in json.loads(path.read_text())["annotations"]:
        if annotation["image_id"] in captions:
            captions[annotation["image_id"]].append(annotation["caption"])
    tokenized = metrics.tokenize_captions(captions, java=False)
    hypotheses = {video: tokenized[videos[(i + i % 2) % len(videos)]][0] for i, video in enumerate(videos)}
    references = {video: tokenized[video][1:] for video in videos}
    assert sum(len(refs) for refs in references.values()) >= 500
    assert_equal_to_pycocoevalcap(hypotheses, references)
