"""Several views per video (--views K) and the attention decoder over per-frame features (--decoder attention)."""
import json

import numpy as np
import pytest
import torch

import captioning
import encode
import evaluate
import inference
import train
from checkpoint import decoder_from_checkpoint, load_checkpoint
from annotations import load_msrvtt
from dataset import read_video, read_views, view_seed
from model import CaptionDecoder, DecoderConfig, beam_search, greedy, sample
from synthetic import caption_events, order_accuracy
from tools.compare import view_spread, view_variance_share


@pytest.fixture(scope="module")
def world(synthetic_world):
    """A 24-clip synthetic MSR-VTT of the "order" task, a tiny X-CLIP and a tokenizer (conftest.synthetic_world)."""
    world = synthetic_world(num_videos=24, seed=2, vocab_size=300, task="order")
    encoder, _ = encode.load_encoder(str(world["xclip"]))
    return {**world, "encoder": encoder, "msrvtt": load_msrvtt(world["data"])}


# ---- encoder: per-frame features -----------------------------------------------------------------------------------

def test_frame_features_are_what_the_latent_is_the_mean_of(world):
    encoder = world["encoder"]
    pixels = torch.randn(2, 16, 3, 32, 32)
    latents, frame_features = encoder.encode_with_frames(pixels)
    assert latents.shape == (2, 512) and frame_features.shape == (2, 16, 512)
    assert torch.allclose(latents, encoder.encode(pixels), atol=1e-6)
    assert torch.allclose(frame_features.mean(dim=1), latents, atol=1e-5)
    # The features depend on when each frame is shown, not only on which frames there are.
    _, reversed_features = encoder.encode_with_frames(pixels.flip(1))
    assert not torch.allclose(reversed_features.flip(1), frame_features, atol=1e-3)


# ---- views ----------------------------------------------------------------------------------------------------------

def test_views_are_seeded_by_video_and_view_and_one_view_is_the_middle_frames(world):
    msrvtt, encoder = world["msrvtt"], world["encoder"]
    vid = msrvtt.splits["train"][0]
    path = msrvtt.video_path(vid)
    assert view_seed(vid, 1) == view_seed(vid, 1)
    assert len({view_seed(vid, view) for view in range(4)} | {view_seed("video999", 0)}) == 5
    preprocess = encode.open_cache(encoder, world["root"] / "probe")[1]
    views, _ = read_views(path, vid, 3, 16, preprocess)
    again, _ = read_views(path, vid, 3, 16, preprocess)
    assert views.shape == (3, 16, 3, 32, 32) and np.array_equal(views, again)
    assert not np.array_equal(views[0], views[1])
    one, _ = read_views(path, vid, 1, 16, preprocess)
    assert np.array_equal(one[0], read_video(path, 16, preprocess)[0])


def test_cache_of_views_and_frames_is_named_shaped_and_matches_direct_encoding(world, tmp_path):
    msrvtt, encoder = world["msrvtt"], world["encoder"]
    items = [(vid, msrvtt.video_path(vid)) for vid in msrvtt.splits["val"]]
    plain, preprocess = encode.open_cache(encoder, tmp_path)
    views, _ = encode.open_cache(encoder, tmp_path, views=3, with_frames=True)
    assert "-mid-" in plain.root.name and "-jit3s0-" in views.root.name
    quiet = encode.EncodeOptions(num_workers=0, progress=False)
    assert encode.encode_videos(items, encoder, views, preprocess, quiet)["encoded"] == 2
    vid, path = items[0]
    assert views.load(vid).shape == (3, 512) and views.load_frame_features(vid).shape == (3, 16, 512)
    frames, _ = read_video(path, 16, preprocess, jitter=True, seed=view_seed(vid, 2))
    latent, frame_features = encoder.encode_with_frames(torch.from_numpy(frames)[None])
    assert np.allclose(views.load(vid)[2], latent[0].numpy(), atol=1e-5)
    assert np.allclose(views.load_frame_features(vid)[2], frame_features[0].numpy(), atol=1e-5)
    assert views.read([v for v, _ in items]).shape == (2, 3, 512)
    latents = views.read([v for v, _ in items])
    assert 0.5 < view_spread(latents) < 1.0 and 0.0 < view_variance_share(latents) < 1.0
    assert view_spread(latents, centred=True) < view_spread(latents)
    # One view keeps the (D,) layout; asking for frames later fills them in beside the same latents.
    encode.encode_videos(items, encoder, plain, preprocess, quiet)
    first = plain.read([vid])
    assert first.shape == (1, 512) and not plain.frame_entries.exists()
    with_frames, _ = encode.open_cache(encoder, tmp_path, with_frames=True)
    assert with_frames.root == plain.root and not with_frames.has(vid)
    assert encode.encode_videos(items, encoder, with_frames, preprocess, quiet)["encoded"] == 2
    assert np.allclose(with_frames.read([vid]), first, atol=1e-6) and with_frames.read_frame_features([vid]).shape == (1, 16, 512)


def test_training_draws_one_view_per_video_from_seed_and_epoch():
    latents = torch.arange(5 * 4 * 2, dtype=torch.float32).view(5, 4, 2)  # (N, K, D)
    picked = train.pick_views(latents, seed=0, epoch=3)
    assert picked.shape == (5, 2) and torch.equal(picked, train.pick_views(latents, seed=0, epoch=3))
    assert all(any(torch.equal(row, view) for view in latents[video]) for video, row in enumerate(picked))
    draws = {tuple(train.pick_views(latents, seed=0, epoch=epoch)[:, 0].tolist()) for epoch in range(6)}
    assert len(draws) > 1


# ---- attention decoder ----------------------------------------------------------------------------------------------

def small_decoder(decoder_type, seed=0, num_layers=2):
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=30, latent_dim=8, embed_dim=16, hidden_dim=32, num_layers=num_layers,
                           dropout=0.0, label_smoothing=0.0, decoder_type=decoder_type, attention_dim=16,
                           num_frames=6)
    return CaptionDecoder(config)


def overfit(decoder, inputs, rows, steps=200):
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    decoder.train()
    for _ in range(steps):
        _, loss = decoder(inputs, rows[:, :-1], rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return decoder.eval(), loss.item()


@pytest.mark.slow
def test_attention_tells_apart_clips_whose_mean_is_the_same():
    """Two clips: the same frames, in opposite order, with captions "A then B" and "B then A". Their pooled
    latents are equal, so the pooled decoder cannot tell them apart; the attention decoder learns both."""
    frames = torch.randn(1, 6, 8)
    clips = torch.cat([frames, frames.flip(1)])  # (2, T, D)
    rows = torch.tensor([[2, 5, 6, 7, 3], [2, 5, 7, 6, 3]])  # captions differ only in the order of 6 and 7
    attention, attention_loss = overfit(small_decoder("attention"), clips, rows)
    assert greedy(attention, clips, max_len=6) == [[5, 6, 7], [5, 7, 6]]
    pooled, pooled_loss = overfit(small_decoder("pooled"), clips.mean(dim=1), rows)
    captions = greedy(pooled, clips.mean(dim=1), max_len=6)
    assert captions[0] == captions[1] and attention_loss < 0.05 < pooled_loss


def test_attention_decoder_decodes_like_the_pooled_one():
    decoder = small_decoder("attention", seed=3).eval()
    clips = torch.randn(5, 6, 8) * 3
    greedy_ids = greedy(decoder, clips, max_len=10)
    assert [beams[0][0] for beams in beam_search(decoder, clips, beam_size=1, max_len=10)] == greedy_ids
    batched = beam_search(decoder, clips, beam_size=4, max_len=10, n_best=3)  # select_state reorders the frames
    for video, beams in enumerate(batched):
        alone = beam_search(decoder, clips[video:video + 1], beam_size=4, max_len=10, n_best=3)[0]
        assert [ids for ids, _ in alone] == [ids for ids, _ in beams]
    assert sample(decoder, clips, max_len=10, seed=1) == sample(decoder, clips, max_len=10, seed=1)
    with pytest.raises(ValueError, match="per-frame features"):
        decoder.init_state(torch.randn(5, 8))
    with pytest.raises(ValueError, match="latent_every_step"):
        CaptionDecoder(DecoderConfig(vocab_size=30, decoder_type="attention", latent_every_step=True))


# ---- the scripts ----------------------------------------------------------------------------------------------------

def test_order_scorer_reads_which_event_came_first():
    assert caption_events("a big red ball moves left, then up the screen")["directions"] == ("left", "up")
    assert caption_events("a red ball turns up after moving left")["directions"] == ("left", "up")
    assert caption_events("a small circle turns from blue to red")["colours"] == ("blue", "red")
    assert caption_events("a red ball moves left")["directions"] is None
    attributes = {"a": {"kind": "path", "directions": ["left", "up"]},
                  "b": {"kind": "colour_change", "colours": ["red", "blue"]},
                  "c": {"kind": "path", "directions": ["down", "right"]},
                  "d": {"colour": "red"}}  # the simple task does not count
    captions = {"a": "a square moves left then up", "b": "a blue square turns red", "c": "a ball moves down", "d": ""}
    assert order_accuracy(captions, attributes) == {
        "order_accuracy": 1 / 3, "order_content_accuracy": 2 / 3, "order_accuracy_path": 1 / 2,
        "order_content_accuracy_path": 1 / 2, "order_accuracy_colour_change": 0.0,
        "order_content_accuracy_colour_change": 1.0}
    assert order_accuracy({"d": "x"}, attributes) == {}


@pytest.fixture(scope="module")
def small_train_args(train_args):
    """conftest.train_args with a smaller decoder, attention and captions for the order task."""
    def make(world, out_dir, epochs, *extra):
        return train_args(world, out_dir, epochs, "--embed_dim", "32", "--hidden_dim", "64", "--warmup_steps", "5",
                          "--learning_rate", "1e-3", "--attention_dim", "32", "--max_len", "16", *extra)
    return make


@pytest.fixture(scope="module")
def attention_run(world, small_train_args):
    out_dir = world["root"] / "attention"
    assert train.main(small_train_args(world, out_dir, 2, "--views", "2", "--decoder", "attention")) == 0
    return out_dir


@pytest.mark.slow
def test_training_with_views_and_attention_stores_its_decoder(attention_run, world):
    checkpoint = load_checkpoint(attention_run / "last.pt")
    config = checkpoint["decoder_config"]
    assert config["decoder_type"] == "attention" and config["num_frames"] == 16
    assert checkpoint["encoder"]["sampling"] == "jit2s0" and checkpoint["encoder"]["views"] == 2
    decoder = decoder_from_checkpoint(checkpoint)
    assert decoder.config.uses_frames
    cache_roots = [path.name for path in (world["root"] / "cache").iterdir()]
    assert any("-jit2s0-" in name for name in cache_roots)
    frames_cache = next((world["root"] / "cache").glob("*-jit2s0-*/frames"))
    assert np.load(next(frames_cache.glob("*.npy"))).shape == (2, 16, 512)


@pytest.mark.slow
def test_evaluate_and_inference_average_views_for_the_attention_decoder(attention_run, world, capsys):
    args = evaluate.parse_args(["--model_path", str(attention_run / "last.pt"), "--data_dir", str(world["data"]),
                                "--split", "test", "--xclip_model", str(world["xclip"]), "--cache_dir",
                                str(world["root"] / "cache"), "--java", "no", "--num_workers", "0",
                                "--beam_size", "2", "--max_len", "16", "--views", "2"])
    result = evaluate.evaluate_checkpoint(args, java=False)
    capsys.readouterr()
    assert result["views"] == 2 and {"CIDEr", "order_accuracy", "order_content_accuracy"} <= set(result["metrics"])
    # Inference with --views 2 captions what evaluate.py captioned from the cache's mean of the same 2 views.
    vid = world["msrvtt"].splits["test"][0]
    flags = ["--model_path", str(attention_run / "last.pt"), "--xclip_model", str(world["xclip"]), "--beam_size", "2",
             "--max_len", "16", "--json", "--views", "2", "--video_path", str(world["msrvtt"].video_path(vid))]
    assert inference.main(inference.parse_args(flags)) == 0
    caption = json.loads(capsys.readouterr().out)["captions"][0]["caption"]
    assert caption == next(p["caption"] for p in result["predictions"] if p["video_id"] == vid)
    cache, preprocess = encode.open_cache(world["encoder"], world["root"] / "cache", views=2, with_frames=True)
    frames, _ = read_views(world["msrvtt"].video_path(vid), vid, 2, 16, preprocess)
    decoder = decoder_from_checkpoint(load_checkpoint(attention_run / "last.pt"))
    inputs = captioning.decoder_inputs(world["encoder"], decoder, torch.from_numpy(frames))  # (K, F, D)
    assert torch.allclose(inputs, torch.from_numpy(cache.read_frame_features([vid])[0]), atol=1e-5)


@pytest.mark.slow
def test_resume_with_views_equals_an_unbroken_run(world, tmp_path, monkeypatch, small_train_args):
    straight = tmp_path / "straight"
    assert train.main(small_train_args(world, straight, 2, "--views", "2")) == 0
    real_save = train.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if path.name == "last.pt":
            raise KeyboardInterrupt

    broken = tmp_path / "broken"
    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    assert train.main(small_train_args(world, broken, 2, "--views", "2")) == 130
    monkeypatch.undo()
    assert train.main(small_train_args(world, broken, 2, "--views", "2", "--resume")) == 0
    a, b = load_checkpoint(straight / "last.pt")["decoder"], load_checkpoint(broken / "last.pt")["decoder"]
    assert all(torch.equal(a[name], b[name]) for name in a)
    # Resuming with another decoder is refused in one line, not a traceback.
    assert train.main(small_train_args(world, broken, 3, "--views", "2", "--decoder", "attention", "--resume")) == 2


@pytest.mark.parametrize("extra, words", [(["--views", "2", "--features", "feats"], "--views"),
                                          (["--decoder", "attention", "--latent_every_step"], "latent_every_step")])
def test_bad_flag_combinations_are_one_line(world, tmp_path, capsys, extra, words, small_train_args):
    assert train.main(small_train_args(world, tmp_path, 1, *extra)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
