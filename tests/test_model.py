"""The LSTM decoder, its decoding, and checkpoints."""
import io
import pickle

import pytest
import sentencepiece as spm
import torch

from checkpoint import CheckpointError, decoder_from_checkpoint, load_checkpoint, save_checkpoint
from model import CaptionDecoder, DecoderConfig, beam_search, greedy, sample


def small_decoder(seed=0, **overrides):
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=40, latent_dim=8, embed_dim=16, hidden_dim=32, num_layers=2, dropout=0.0,
                           label_smoothing=0.0, **overrides)
    return CaptionDecoder(config).eval()


def test_forward_shapes_and_padding_is_ignored():
    decoder = small_decoder()
    latents = torch.randn(3, 8)
    tokens = torch.tensor([[2, 5, 6, 7], [2, 8, 0, 0], [2, 9, 10, 0]])
    targets = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0], [9, 10, 3, 0]])
    logits, loss = decoder(latents, tokens, targets)
    assert logits.shape == (3, 4, 40)
    mask = targets != 0
    expected = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize("latent_every_step", [False, True])
def test_overfits_one_batch_and_greedy_reads_it_back(latent_every_step):
    decoder = small_decoder(latent_every_step=latent_every_step)
    decoder.train()
    latents = torch.randn(4, 8)
    captions = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    rows = torch.zeros(4, 6, dtype=torch.long)
    for row, ids in zip(rows, captions):
        seq = [2] + ids + [3]
        row[: len(seq)] = torch.tensor(seq)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(150):
        _, loss = decoder(latents, rows[:, :-1], rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    decoder.eval()
    assert greedy(decoder, latents, max_len=10) == captions
    assert [beams[0][0] for beams in beam_search(decoder, latents, beam_size=4, max_len=10)] == captions


def test_beam_size_one_equals_greedy():
    decoder = small_decoder(seed=3)
    latents = torch.randn(16, 8) * 3
    greedy_ids = greedy(decoder, latents, max_len=12)
    beam_ids = [beams[0][0] for beams in beam_search(decoder, latents, beam_size=1, max_len=12)]
    assert beam_ids == greedy_ids


def test_beam_search_n_best_is_sorted_and_batch_independent():
    decoder = small_decoder(seed=1)
    latents = torch.randn(5, 8) * 3
    batched = beam_search(decoder, latents, beam_size=4, max_len=10, n_best=3)
    for video, beams in enumerate(batched):
        scores = [score for _, score in beams]
        assert len(beams) == 3 and scores == sorted(scores, reverse=True)
        alone = beam_search(decoder, latents[video:video + 1], beam_size=4, max_len=10, n_best=3)[0]
        assert [ids for ids, _ in alone] == [ids for ids, _ in beams]


def test_beam_search_falls_back_when_no_beam_ends():
    decoder = small_decoder(seed=2)
    with torch.no_grad():
        decoder.head.bias[decoder.config.eos_id] = -1e4  # EOS never wins
    results = beam_search(decoder, torch.randn(2, 8), beam_size=3, max_len=7, n_best=2)
    for beams in results:
        assert len(beams) == 2
        assert all(len(ids) == 7 for ids, _ in beams)


def test_sampling_is_seeded_and_small_top_p_is_greedy():
    decoder = small_decoder(seed=4)
    latents = torch.randn(6, 8)
    assert sample(decoder, latents, max_len=10, seed=7) == sample(decoder, latents, max_len=10, seed=7)
    assert sample(decoder, latents, max_len=10, top_p=1e-6, seed=1) == greedy(decoder, latents, max_len=10)


def tokenizer_proto(vocab_size=40) -> bytes:
    """A sentencepiece model of vocab_size pieces with the decoder's special ids, trained on a toy corpus."""
    model = io.BytesIO()
    corpus = ["a man is cooking food in the kitchen", "a woman plays the guitar on a stage",
              "two dogs run across a green field"] * 20
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=vocab_size,
                                   model_type="bpe", pad_id=0, unk_id=1, bos_id=2, eos_id=3, hard_vocab_limit=False,
                                   minloglevel=2)
    return model.getvalue()


def payload_for(decoder):
    preprocess = {"image_size": 32, "shortest_edge": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    return {"decoder_config": decoder.config.to_dict(), "decoder": decoder.state_dict(), "tokenizer": tokenizer_proto(),
            "encoder": {"name": "x", "fingerprint": "f", "num_frames": 8, "preprocess": preprocess},
            "args": {"lr": 1e-3}, "metrics": {"CIDEr": 0.5}}


def test_checkpoint_round_trips_bit_for_bit(tmp_path):
    decoder = small_decoder(seed=5)
    decoder.set_latent_stats(torch.randn(8), torch.rand(8) + 0.5)
    save_checkpoint(tmp_path / "best.pt", payload_for(decoder))
    loaded = decoder_from_checkpoint(load_checkpoint(tmp_path / "best.pt"))
    for name, tensor in decoder.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    latents = torch.randn(3, 8)
    assert greedy(decoder, latents) == greedy(loaded, latents)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary files left


class Exploit:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({**payload_for(small_decoder()), "version": 1, "extra": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_or_missing_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload_for(small_decoder()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    decoder = small_decoder(seed=6)
    save_checkpoint(path, payload_for(decoder))
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        save_checkpoint(path, payload_for(small_decoder(seed=7)))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert decoder_from_checkpoint(load_checkpoint(path)) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
