"""Self-critical sequence training in train.py (--scst_epochs, --init): rewards, baselines, what the log and the
checkpoint record, best.pt never below the cross-entropy start, exact resume; and the caption diagnostics that
watch for the ways SCST games CIDEr-D (dangling endings, repeated phrases)."""
import json

import numpy as np
import pytest
import torch

import export
import train
from checkpoint import folder_config, load_checkpoint
from create_tokenizer import train_tokenizer
from diagnostics import caption_diagnostics, ends_dangling, repeats_ngram
from model import DecoderConfig, CaptionDecoder

SUBJECTS = ["a man", "a woman", "a dog", "a child"]
ACTIONS = ["is cooking food", "is playing guitar", "runs on the beach", "is talking to the camera"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread is faster


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """24 videos of 4 kinds (a subject and an action each), per-frame features that say which, 3 captions each."""
    root = tmp_path_factory.mktemp("scst")
    features = root / "features"
    features.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for n in range(24):
        subject, action = n % 4, (n // 4) % 4
        frames = rng.normal(scale=0.3, size=(4, 8)).astype(np.float32)
        frames[:, subject] += 2.0
        frames[:, 4 + action] += 2.0
        np.save(features / f"v{n}.npy", frames)
        split = "train" if n < 16 else "val" if n < 20 else "test"
        captions = [f"{SUBJECTS[subject]} {ACTIONS[action]}", f"{SUBJECTS[subject]} {ACTIONS[action]} today",
                    f"there {SUBJECTS[subject]} {ACTIONS[action]}"]
        rows += [{"video": f"v{n}", "caption": caption, "split": split} for caption in captions]
    annotations = root / "captions.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokenizer = train_tokenizer([row["caption"] for row in rows], root / "tokenizer", vocab_size=300)
    return {"root": root, "features": features, "annotations": annotations, "tokenizer": tokenizer}


def train_flags(world, out_dir, *extra):
    return ["--annotations", str(world["annotations"]), "--features", str(world["features"]),
            "--tokenizer_path", str(world["tokenizer"]), "--out_dir", str(out_dir), "--batch_size", "8",
            "--embed_dim", "16", "--hidden_dim", "32", "--num_layers", "1", "--dropout", "0", "--warmup_steps", "2",
            "--learning_rate", "1e-2", "--beam_size", "1", "--max_len", "10", "--device", "cpu", "--bf16", "off",
            "--scst_batch_size", "4", "--scst_learning_rate", "1e-3", "--patience", "0", *extra]


def run_train(*flags) -> int:
    return train.main(train.parse_args(list(flags)))


def log_records(out_dir):
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("decoder", ["pooled", "attention"])
def test_scst_after_cross_entropy_rewards_and_records(world, tmp_path, decoder):
    out = tmp_path / "run"
    assert run_train(*train_flags(world, out, "--epochs", "3", "--scst_epochs", "3", "--decoder", decoder,
                                  "--scst_ce_weight", "0.2", "--scst_entropy", "0.01", "--scst_advantage", "std")) == 0
    records = log_records(out)
    assert [record["epoch"] for record in records] == [1, 2, 3, 4, 5, 6]
    assert all("scst" not in record and record["train_loss"] > 0 for record in records[:3])
    for record in records[3:]:
        scst = record["scst"]
        assert record["train_loss"] is None and 0 <= scst["reward"] <= 10 and 0 <= scst["baseline"] <= 10
        assert scst["baseline"] == pytest.approx(scst["reward"], abs=1e-5)  # mean of the others: equal on average
        assert 0 <= scst["reward_seconds"] < record["seconds"]
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    ce_best = max(record["val"]["CIDEr"] for record in records[:3])
    assert best["metrics"]["val"]["CIDEr"] == max(record["val"]["CIDEr"] for record in records) >= ce_best
    assert last["scst"]["after_epoch"] == 3 and last["scst"]["reward"].startswith("CIDEr-D")
    assert last["scst"]["samples"] == 5 and last["scst"]["baseline"] == "mean" and last["scst"]["advantage"] == "std"
    assert (out / "curves.png").stat().st_size > 0


def test_scst_from_init_starts_at_its_score_and_greedy_baseline(world, tmp_path):
    ce = tmp_path / "ce"
    assert run_train(*train_flags(world, ce, "--epochs", "4")) == 0
    out = tmp_path / "scst"
    assert run_train(*train_flags(world, out, "--epochs", "0", "--scst_epochs", "2", "--init", str(ce / "best.pt"),
                                  "--scst_baseline", "greedy", "--scst_samples", "3")) == 0
    records = log_records(out)
    assert [record["epoch"] for record in records] == [0, 1, 2]
    start = load_checkpoint(ce / "best.pt")["metrics"]["val"]["CIDEr"]
    assert records[0]["val"]["CIDEr"] == pytest.approx(start)  # the init as it is, validated first
    assert load_checkpoint(out / "best.pt")["metrics"]["val"]["CIDEr"] >= start
    assert all(record["scst"]["baseline"] >= 0 for record in records[1:])
    assert load_checkpoint(out / "last.pt")["scst"]["init"] == str(ce / "best.pt")
    assert records[0].get("scst") is None and load_checkpoint(ce / "best.pt").get("scst") is None
    # The exported model card says how the weights were fine-tuned (or, for the start, that they were not).
    last = load_checkpoint(out / "last.pt")
    card = export.training(last, records)
    assert "self-critical sequence training (SCST) after epoch 0" in card and "CIDEr-D" in card
    assert "greedy caption" in card and "SCST reward" in card
    assert "self-critical" not in export.training(load_checkpoint(ce / "best.pt"), log_records(ce))
    assert folder_config(last)["training"]["scst"]["samples"] == 3


def test_scst_resumed_after_a_kill_equals_an_unbroken_run(world, tmp_path, monkeypatch):
    flags = ("--epochs", "2", "--scst_epochs", "3", "--scst_samples", "3")
    unbroken = tmp_path / "unbroken"
    assert run_train(*train_flags(world, unbroken, *flags)) == 0
    killed = tmp_path / "killed"
    real_epoch, calls = train.scst_epoch, []

    def dies_in_the_second(run, epoch, features):
        calls.append(epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(run, epoch, features)

    monkeypatch.setattr(train, "scst_epoch", dies_in_the_second)
    assert run_train(*train_flags(world, killed, *flags)) == 130
    monkeypatch.setattr(train, "scst_epoch", real_epoch)
    assert load_checkpoint(killed / "last.pt")["epoch"] == 3
    assert run_train(*train_flags(world, killed, *flags, "--resume")) == 0
    a, b = load_checkpoint(unbroken / "last.pt"), load_checkpoint(killed / "last.pt")
    assert all(torch.equal(a["decoder"][name], b["decoder"][name]) for name in a["decoder"])
    assert [r["scst"]["reward"] for r in log_records(unbroken)[2:]] == [r["scst"]["reward"] for r in
                                                                        log_records(killed)[2:]]


def test_mean_of_others_baseline_and_advantage():
    """The policy-gradient loss of a batch whose rewards are all equal is zero: no caption is preferred."""
    config = DecoderConfig(vocab_size=20, latent_dim=4, embed_dim=8, hidden_dim=8, num_layers=1, dropout=0.0)
    rows = train.sequence_rows([[5, 6], [7], [5, 6, 7, 8]], config, max_len=4)
    assert rows.tolist() == [[2, 5, 6, 3, 0], [2, 7, 3, 0, 0], [2, 5, 6, 7, 8]]  # no EOS after max_len tokens
    decoder = CaptionDecoder(config)
    logits, _ = decoder(torch.zeros(3, 4), rows[:, :-1])
    assert logits.shape == (3, 4, 20)


def test_advantage_plain_std_and_best():
    """--scst_advantage: plain is reward - baseline; std divides a video's by the spread of its rewards (+ 0.01), so
    videos whose samples differ little pull as hard as the others; best keeps only each video's best sample."""
    rewards = torch.tensor([[0.1, 0.3, 0.2], [1.0, 1.0, 1.0], [2.0, 0.0, 2.0]])
    baselines = torch.tensor([[0.25, 0.15, 0.2], [1.0, 1.0, 1.0], [1.0, 2.0, 1.0]])
    plain = train.scst_advantage(rewards, baselines, "plain")
    assert torch.allclose(plain, rewards - baselines)
    std = train.scst_advantage(rewards, baselines, "std")
    spread = torch.tensor([(2 / 3) ** 0.5 * 0.1, 0.0, (8 / 9) ** 0.5 * 1.0])[:, None] + 0.01
    assert torch.allclose(std, plain / spread) and std[1].abs().sum() == 0
    best = train.scst_advantage(rewards, baselines, "best")
    assert torch.allclose(best, torch.tensor([[0.0, 0.15, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))


def test_flags_that_do_not_go_together(world, tmp_path, capsys):
    assert run_train(*train_flags(world, tmp_path / "a", "--epochs", "0")) == 2
    assert "--init" in capsys.readouterr().err
    assert run_train(*train_flags(world, tmp_path / "b", "--epochs", "0", "--scst_epochs", "1", "--init",
                                  str(tmp_path / "missing.pt"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.pt" in err[0]
    own = tmp_path / "c"
    own.mkdir()
    (own / "best.pt").write_bytes(b"a checkpoint")
    assert run_train(*train_flags(world, own, "--epochs", "0", "--scst_epochs", "1", "--init", str(own / "best.pt"),
                                  "--overwrite")) == 2
    assert "overwrites" in capsys.readouterr().err and (own / "best.pt").read_bytes() == b"a checkpoint"


def test_diagnostics_count_dangling_endings_and_repeated_phrases():
    captions = {"a": "a man is playing a", "b": "a man is a man is", "c": "a dog runs on the beach",
                "d": "a woman is cooking with", "e": "a man is talking"}
    diagnostics = caption_diagnostics(captions, {key: ["a reference"] for key in captions})
    assert diagnostics["dangling_share"] == pytest.approx(3 / 5)  # "a", "is", "with"
    assert diagnostics["repeated_ngram_share"] == pytest.approx(1 / 5)
    assert ends_dangling("") and ends_dangling("someone is slicing an") and not ends_dangling("a cat sleeps")
    assert repeats_ngram("the dog and the dog") and not repeats_ngram("a dog and a cat")


def test_scst_under_torchrun_two_processes(world, tmp_path):
    """Two gloo processes on CPU: each samples its own half of every batch, DDP averages the gradients; rank 0
    alone validates and writes one log line per epoch."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    ce = tmp_path / "ce"
    assert run_train(*train_flags(world, ce, "--epochs", "2")) == 0
    out = tmp_path / "double"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               *train_flags(world, out, "--epochs", "0", "--scst_epochs", "2", "--init", str(ce / "best.pt"),
                            "--scst_samples", "3")]
    result = subprocess.run(command, cwd=Path(train.__file__).parent, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    records = log_records(out)
    assert [record["epoch"] for record in records] == [0, 1, 2]
    assert all(record["scst"]["reward"] >= 0 for record in records[1:])
    start, last = load_checkpoint(ce / "best.pt"), load_checkpoint(out / "last.pt")
    assert any(not torch.equal(start["decoder"][name], last["decoder"][name]) for name in start["decoder"])
    assert result.stdout.count("epoch 2/2") == 1



def test_scst_from_the_latent_cache_with_views(tmp_path):
    """Videos through a tiny X-CLIP into the cache, two views per video: SCST draws a view per video each epoch."""
    from annotations import load_msrvtt
    from create_tokenizer import train_captions
    from synthetic import make_synthetic_msrvtt, make_tiny_xclip
    make_synthetic_msrvtt(tmp_path / "data", num_videos=20, seed=3, progress=False)
    xclip = make_tiny_xclip(tmp_path / "xclip", seed=0)
    tokenizer = train_tokenizer(train_captions(load_msrvtt(tmp_path / "data")), tmp_path / "tokenizer", vocab_size=300)
    out = tmp_path / "run"
    assert run_train("--data_dir", str(tmp_path / "data"), "--tokenizer_path", str(tokenizer), "--xclip_model",
                     str(xclip), "--cache_dir", str(tmp_path / "cache"), "--num_workers", "0", "--views", "2",
                     "--out_dir", str(out), "--epochs", "2", "--scst_epochs", "2", "--batch_size", "8", "--embed_dim",
                     "16", "--hidden_dim", "32", "--num_layers", "1", "--beam_size", "1", "--max_len", "10",
                     "--device", "cpu", "--bf16", "off", "--scst_batch_size", "4", "--scst_samples", "2") == 0
    records = log_records(out)
    assert [record["epoch"] for record in records] == [1, 2, 3, 4]
    assert all("scst" in record for record in records[2:]) and load_checkpoint(out / "last.pt")["args"]["views"] == 2


def test_scst_samples_within_a_tiny_nucleus_are_the_greedy_caption(world, tmp_path):
    """--scst_top_p near 0 samples only the likeliest piece: every sample is the greedy caption, every advantage
    is zero, and SCST leaves the weights as they were; the checkpoint records the sampling settings."""
    ce = tmp_path / "ce"
    assert run_train(*train_flags(world, ce, "--epochs", "2")) == 0
    out = tmp_path / "scst"
    assert run_train(*train_flags(world, out, "--epochs", "0", "--scst_epochs", "1", "--init", str(ce / "best.pt"),
                                  "--scst_samples", "3", "--scst_top_p", "1e-9", "--scst_temperature", "0.5")) == 0
    start, after = load_checkpoint(ce / "best.pt")["decoder"], load_checkpoint(out / "last.pt")
    assert all(torch.equal(start[name], after["decoder"][name]) for name in start)
    scst = log_records(out)[1]["scst"]
    assert scst["reward"] == pytest.approx(scst["baseline"], abs=1e-6)
    assert after["scst"]["top_p"] == 1e-9 and after["scst"]["temperature"] == 0.5


@pytest.mark.parametrize("flag, value", [("--scst_top_p", "0"), ("--scst_top_p", "1.5"), ("--scst_temperature", "0"),
                                         ("--scst_temperature", "nan")])
def test_sampling_flags_out_of_range(world, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(train_flags(world, tmp_path / "run", flag, value))
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err
