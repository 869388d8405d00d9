"""create_tokenizer.py: normalisation, special ids, vocab capping, exact round-trips, train split only."""
import json

import numpy as np
import pytest
import sentencepiece as spm

import create_tokenizer
from annotations import normalize_caption
from create_tokenizer import train_tokenizer

TOY_CAPTIONS = [
    "A man is  playing a guitar", "a woman is cooking pasta in a kitchen", "Two dogs run on the beach",
    "a cartoon character runs around", "people are dancing at a party", "a man talks about cars",
    "a girl sings a song on stage", "a chef slices onions with a knife", "kids play football in a park",
    "a news anchor reports the weather",
] * 5


def load(model_path):
    return spm.SentencePieceProcessor(model_file=str(model_path))


@pytest.mark.parametrize("raw, expected", [
    ("A Man  is\tPlaying\n", "a man is playing"),
    ("   ", ""),
    ("Beyoncé SINGING", "beyoncé singing"),
    ("already normal", "already normal"),
])
def test_normalize_caption(raw, expected):
    assert normalize_caption(raw) == expected


def test_toy_corpus_trains_with_fixed_special_ids(tmp_path, capfd):
    model_path = train_tokenizer(TOY_CAPTIONS, tmp_path / "tok", vocab_size=320)
    assert model_path == tmp_path / "tok.model" and (tmp_path / "tok.vocab").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tok.model", "tok.vocab"]  # no temp files left
    tokenizer = load(model_path)
    assert (tokenizer.pad_id(), tokenizer.unk_id(), tokenizer.bos_id(), tokenizer.eos_id()) == (0, 1, 2, 3)
    assert tokenizer.id_to_piece([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tokenizer.get_piece_size() == 320
    assert capfd.readouterr().err == ""  # sentencepiece's training log is kept quiet


def test_too_large_vocab_is_capped_with_one_line_note(tmp_path, capfd):
    model_path = train_tokenizer(TOY_CAPTIONS, tmp_path / "tok", vocab_size=100_000)
    error = capfd.readouterr().err
    assert error.count("\n") == 1 and "vocab_size 100000" in error
    size = load(model_path).get_piece_size()
    assert size < 100_000 and f"using {size}" in error


def test_too_small_vocab_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="too small .* at least \\d+"):
        train_tokenizer(TOY_CAPTIONS, tmp_path / "tok", vocab_size=20)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no captions"):
        train_tokenizer(["   ", ""], tmp_path / "tok", vocab_size=300)


def test_captions_round_trip_exactly_even_with_unseen_characters(tmp_path):
    tokenizer = load(train_tokenizer(TOY_CAPTIONS, tmp_path / "tok", vocab_size=300))
    for caption in TOY_CAPTIONS[:10] + ["A chef makes étouffée — naïve 100% «ЖЖ» 🎸", "x  y\tz"]:
        normalised = normalize_caption(caption)
        ids = tokenizer.encode(normalised)
        assert tokenizer.unk_id() not in ids  # unseen characters fall back to bytes, never <unk>
        assert tokenizer.decode(ids) == normalised


def write_tiny_msrvtt(data_dir):
    """An MSRVTT.zip-shaped folder (annotations and split lists, no videos)."""
    root = data_dir / "MSRVTT"
    (root / "annotation").mkdir(parents=True)
    lists = root / "high-quality" / "structured-symlinks"
    lists.mkdir(parents=True)
    splits = {"train": [f"video{i}" for i in range(0, 6)], "val": ["video6"], "test": ["video7", "video8"]}
    annotations = []
    for split, video_ids in splits.items():
        for video_id in video_ids:
            # Train captions use plain ASCII; val/test ones carry a character train never has.
            text = TOY_CAPTIONS[int(video_id[5:])] if split == "train" else "the жук crawls away"
            for _ in range(3):
                annotations.append({"caption": text, "id": len(annotations), "image_id": video_id})
    images = [{"id": video_id} for ids in splits.values() for video_id in ids]
    (root / "annotation" / "MSR_VTT.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    for split, video_ids in splits.items():
        (lists / f"{split}_list_full.txt").write_text("\n".join(video_ids))


def test_command_line_trains_on_train_split_only(tmp_path, capsys):
    write_tiny_msrvtt(tmp_path / "data")
    args = create_tokenizer.parse_args(["--data_dir", str(tmp_path / "data"), "--vocab_size", "300",
                                        "--out_prefix", str(tmp_path / "out" / "tokenizer")])
    assert create_tokenizer.main(args) == 0
    assert "18 training captions" in capsys.readouterr().out  # 6 train videos x 3 captions
    tokenizer = load(tmp_path / "out" / "tokenizer.model")
    assert tokenizer.piece_to_id("ж") == tokenizer.unk_id()  # never saw the test captions
    assert tokenizer.piece_to_id("k") != tokenizer.unk_id()  # from "kitchen", a train caption


def test_command_line_errors_are_one_line_exit_2(tmp_path, capsys):
    args = create_tokenizer.parse_args(["--data_dir", str(tmp_path / "missing"), "--out_prefix", str(tmp_path / "t")])
    assert create_tokenizer.main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(tmp_path / "missing") in error
    write_tiny_msrvtt(tmp_path / "data")
    args = create_tokenizer.parse_args(["--data_dir", str(tmp_path / "data"), "--vocab_size", "10",
                                        "--out_prefix", str(tmp_path / "t")])
    assert create_tokenizer.main(args) == 2
    assert "too small" in capsys.readouterr().err


def test_real_test_captions_round_trip(realdata, tmp_path):
    """Trained on the real train split (vocab 10000), every normalised test caption decodes to itself."""
    from annotations import load_msrvtt

    data_dir = realdata / "msrvtt"
    msrvtt = load_msrvtt(data_dir, scheme="official", check_videos=False)
    train = create_tokenizer.train_captions(msrvtt)
    assert len(train) == sum(len(msrvtt.captions[video_id]) for video_id in msrvtt.splits["train"])
    tokenizer = load(train_tokenizer(train, tmp_path / "tokenizer", vocab_size=10000))
    assert tokenizer.get_piece_size() == 10000
    test = [normalize_caption(caption) for video_id in msrvtt.splits["test"] for caption in msrvtt.captions[video_id]]
    assert len(test) > 50_000
    ids = tokenizer.encode(test)
    mismatches = [(caption, decoded) for caption, decoded in zip(test, tokenizer.decode(ids)) if caption != decoded]
    assert mismatches == []
    lengths = np.array([len(caption_ids) for caption_ids in ids])
    print(f"\ntest captions: {len(test)}, tokens per caption: mean {lengths.mean():.2f}, "
          f"p99 {np.percentile(lengths, 99):.0f}, max {lengths.max()}")
