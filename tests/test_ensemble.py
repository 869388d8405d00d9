"""Ensembles: model.Ensemble averages its members' log-probabilities at every step, so greedy and beam search
decode it with their own code; evaluate.py and inference.py take several --model_path values."""
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evaluate
import train
from checkpoint import CheckpointError, ensemble_from_checkpoints, load_checkpoint
from create_tokenizer import train_tokenizer
from model import CaptionDecoder, DecoderConfig, Ensemble, beam_search, greedy


def decoder(seed, **overrides):
    torch.manual_seed(seed)
    settings = {"vocab_size": 30, "latent_dim": 6, "embed_dim": 8, "hidden_dim": 12, "num_layers": 1, "dropout": 0.0}
    config = DecoderConfig(**{**settings, **overrides})
    return CaptionDecoder(config).eval()


def test_ensemble_step_is_the_renormalised_mean_of_log_probabilities():
    members = [decoder(0), decoder(1), decoder(2, hidden_dim=16)]
    ensemble = Ensemble(members).eval()
    features = torch.randn(4, 6)
    tokens = torch.full((4,), 2)
    log_probs, _ = ensemble.step(tokens, ensemble.init_state(features))
    expected = F.log_softmax(torch.stack([m.step(tokens, m.init_state(features))[0] for m in members]).mean(0), -1)
    assert torch.allclose(log_probs, expected, atol=1e-6)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(4), atol=1e-5)


def test_an_ensemble_of_copies_decodes_as_its_member_and_beam_1_equals_greedy():
    member = decoder(0)
    features = torch.randn(5, 6)
    copies = Ensemble([member, member])
    assert greedy(copies, features, max_len=8) == greedy(member, features, max_len=8)
    assert [b[0][0] for b in beam_search(copies, features, beam_size=3, max_len=8)] == \
           [b[0][0] for b in beam_search(member, features, beam_size=3, max_len=8)]
    mixed = Ensemble([decoder(0), decoder(1)])
    assert [b[0][0] for b in beam_search(mixed, features, beam_size=1, max_len=8)] == greedy(mixed, features, 8)


def test_members_must_read_the_same_features():
    with pytest.raises(ValueError, match="same kind of features"):
        Ensemble([decoder(0), decoder(1, decoder_type="attention")])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two checkpoints trained on tiny per-frame features with one tokenizer, and one with another tokenizer."""
    root = tmp_path_factory.mktemp("ensemble")
    features = root / "features"
    features.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for n in range(12):
        np.save(features / f"v{n}.npy", (rng.normal(size=(3, 6)) + n % 3).astype(np.float32))
        split = "train" if n < 8 else "val" if n < 10 else "test"
        rows += [{"video": f"v{n}", "caption": f"a {word} thing moves", "split": split}
                 for word in (["red", "blue", "green"][n % 3], "small")]
    annotations = root / "captions.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    captions = [row["caption"] for row in rows]
    tokenizers = [train_tokenizer(captions, root / "tok", 280), train_tokenizer(captions + ["other words"] * 3,
                                                                                root / "tok2", 281)]
    paths = []
    for seed, tokenizer in ((0, tokenizers[0]), (1, tokenizers[0]), (2, tokenizers[1])):
        out = root / f"m{seed}"
        assert train.main(train.parse_args([
            "--annotations", str(annotations), "--features", str(features), "--tokenizer_path", str(tokenizer),
            "--out_dir", str(out), "--epochs", "2", "--batch_size", "4", "--embed_dim", "8", "--hidden_dim", "8",
            "--num_layers", "1", "--beam_size", "1", "--device", "cpu", "--bf16", "off", "--seed", str(seed)])) == 0
        paths.append(out / "best.pt")
    return {"annotations": annotations, "features": features, "paths": paths}


def test_evaluate_decodes_an_ensemble(trained, tmp_path):
    a, b, _ = trained["paths"]
    out = tmp_path / "results.json"
    args = evaluate.parse_args(["--model_path", str(a), str(b), "--annotations", str(trained["annotations"]),
                                "--features", str(trained["features"]), "--split", "test", "--java", "no",
                                "--out", str(out)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "METEOR skipped", once per process
        assert evaluate.main(args) == 0
    result = json.loads(out.read_text())
    assert result["model_path"] == [str(a), str(b)] and result["checkpoint_digest"].count("+") == 1
    single = ensemble_from_checkpoints([load_checkpoint(a)], [a])
    assert isinstance(single, CaptionDecoder)


def test_an_ensemble_of_other_tokenizers_is_one_line(trained, capsys):
    a, _, other = trained["paths"]
    args = evaluate.parse_args(["--model_path", str(a), str(other), "--annotations", str(trained["annotations"]),
                                "--features", str(trained["features"]), "--java", "no"])
    assert evaluate.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {other}: another tokenizer")
    with pytest.raises(CheckpointError, match="another tokenizer"):
        ensemble_from_checkpoints([load_checkpoint(a), load_checkpoint(other)], [a, other])


def test_export_refuses_an_ensemble_in_one_line(trained, tmp_path, capsys):
    import export
    a, b, _ = trained["paths"]
    args = export.parse_args(["--model_path", str(a), str(b), "--out_dir", str(tmp_path / "folder")])
    assert export.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "export each member" in lines[0] and not (tmp_path / "folder").exists()
