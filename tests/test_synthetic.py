"""synthetic.py: the MSRVTT.zip layout, decodable clips that show what the captions say, determinism,
and a tiny X-CLIP that round-trips through from_pretrained."""
import json

import numpy as np
import pytest

import synthetic

NUM_VIDEOS = 20
NUM_FRAMES = 12
WIDTH, HEIGHT = 64, 48


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("synthetic")
    returned = synthetic.make_synthetic_msrvtt(out_dir, num_videos=NUM_VIDEOS, seed=3, num_frames=NUM_FRAMES,
                                               progress=False)
    assert returned == out_dir
    return out_dir


def decode(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return frames, stream.codec_context.name, stream.codec_context.pix_fmt  # (T, H, W, 3)


def read_lists(root):
    lists = {}
    for path in (root / synthetic.SPLIT_FILES).iterdir():
        text = path.read_text()
        assert not text.endswith("\n"), f"{path.name} must not end with a newline, as in MSRVTT.zip"
        lists[path.name] = text.split("\n")
    return lists


def test_layout_matches_msrvtt_zip(synthetic_dir):
    root = synthetic_dir / "MSRVTT"
    annotation = json.loads((root / "annotation" / "MSR_VTT.json").read_text())
    video_ids = [f"video{index}" for index in range(NUM_VIDEOS)]
    assert [image["id"] for image in annotation["images"]] == video_ids
    assert sorted(path.name for path in (root / "videos" / "all").iterdir()) == sorted(f"{v}.mp4" for v in video_ids)
    ids = [entry["id"] for entry in annotation["annotations"]]
    assert ids == list(range(len(ids)))
    per_video = {}
    for entry in annotation["annotations"]:
        assert set(entry) == {"caption", "id", "image_id"}
        per_video.setdefault(entry["image_id"], []).append(entry["caption"])
    assert sorted(per_video) == sorted(video_ids)
    assert all(8 <= len(captions) <= 12 and len(set(captions)) == len(captions) for captions in per_video.values())

    lists = read_lists(root)
    train, val, test = lists["train_list_full.txt"], lists["val_list_full.txt"], lists["test_list_full.txt"]
    assert (len(train), len(val), len(test)) == (14, 2, 4)
    assert sorted(train + val + test) == sorted(video_ids)
    assert not set(lists["val_list_jsfusion.txt"]) & set(lists["train_list_jsfusion.txt"])
    assert sorted(lists["val_list_jsfusion.txt"] + lists["train_list_jsfusion.txt"]) == sorted(video_ids)
    assert set(lists["val_list_jsfusion.txt"]) <= set(test)

    attributes = synthetic.load_attributes(synthetic_dir)
    assert sorted(attributes) == sorted(video_ids)
    for values in attributes.values():
        assert values["colour"] in synthetic.COLOURS and values["size"] in synthetic.SIZES
        assert values["shape"] in synthetic.SHAPES and values["direction"] in synthetic.DIRECTIONS


def test_clips_decode_to_stated_size_and_frame_count(synthetic_dir):
    for index in range(3):
        frames, codec, pix_fmt = decode(synthetic_dir / "MSRVTT" / "videos" / "all" / f"video{index}.mp4")
        assert frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
        assert codec == ("h264" if "libx264" in synthetic.pick_codec() else "mpeg4")
        assert pix_fmt == "yuv420p"


def object_mask(frame):
    """Pixels that differ clearly from the plain background (the most common colour)."""
    pixels = frame.reshape(-1, 3).astype(int)
    values, counts = np.unique(pixels, axis=0, return_counts=True)
    background = values[counts.argmax()]
    return np.abs(frame.astype(int) - background).sum(-1) > 60  # (H, W)


def test_clips_show_what_the_captions_say(synthetic_dir):
    """Colour, size and direction in the decoded pixels agree with attributes.json and the captions."""
    attributes = synthetic.load_attributes(synthetic_dir)
    annotation = json.loads((synthetic_dir / "MSRVTT" / "annotation" / "MSR_VTT.json").read_text())
    areas = {}  # (shape, size) -> object areas in pixels
    for video_id, truth in attributes.items():
        frames, _, _ = decode(synthetic_dir / "MSRVTT" / "videos" / "all" / f"{video_id}.mp4")
        masks = [object_mask(frame) for frame in frames]
        centres = np.array([np.argwhere(mask).mean(0) for mask in masks])  # (T, 2) as (row, col)
        shift_row, shift_col = centres[-1] - centres[0]
        expected = {"left": shift_col < -8, "right": shift_col > 8, "up": shift_row < -8, "down": shift_row > 8}
        assert expected[truth["direction"]], (video_id, truth, shift_row, shift_col)
        middle = frames[len(frames) // 2][masks[len(frames) // 2]].astype(int)  # object pixels
        observed = np.median(middle, axis=0)
        nearest = min(synthetic.COLOURS, key=lambda name: np.abs(np.array(synthetic.COLOURS[name]) - observed).sum())
        assert nearest == truth["colour"], (video_id, truth, observed)
        areas.setdefault((truth["shape"], truth["size"]), []).append(masks[0].sum())
    assert {size for _, size in areas} == {"small", "large"}
    for (shape, size), shape_areas in areas.items():
        if size == "small" and (shape, "large") in areas:  # clearly different sizes
            assert max(shape_areas) * 3 < min(areas[(shape, "large")]), (shape, areas)

    captions = [entry["caption"] for entry in annotation["annotations"]]
    named = [synthetic.caption_attributes(caption) for caption in captions]
    assert np.mean([bool(n["colour"] and n["size"]) for n in named]) >= 0.7
    for entry, names in zip(annotation["annotations"], named):
        truth = attributes[entry["image_id"]]
        for key in ("colour", "size", "shape", "direction"):
            assert names[key] in (None, truth[key]), (entry, truth)


def test_attribute_accuracy_scores_captions():
    truth = {"video0": {"colour": "red", "size": "small", "shape": "circle", "direction": "left"},
             "video1": {"colour": "blue", "size": "large", "shape": "square", "direction": "up"}}
    captions = {"video0": "a little red ball moves to the left", "video1": "a green block going upwards"}
    accuracy = synthetic.attribute_accuracy(captions, truth)
    assert accuracy == {"colour": 0.5, "size": 0.5, "shape": 1.0, "direction": 1.0}


def test_same_seed_same_dataset_other_seed_differs(synthetic_dir, tmp_path):
    again = synthetic.make_synthetic_msrvtt(tmp_path / "again", num_videos=NUM_VIDEOS, seed=3,
                                            num_frames=NUM_FRAMES, progress=False)
    other = synthetic.make_synthetic_msrvtt(tmp_path / "other", num_videos=NUM_VIDEOS, seed=4,
                                            num_frames=NUM_FRAMES, progress=False)
    for relative in ("annotation/MSR_VTT.json", "annotation/attributes.json", "videos/all/video0.mp4",
                     "videos/all/video7.mp4", f"{synthetic.SPLIT_FILES}/test_list_full.txt"):
        original = (synthetic_dir / "MSRVTT" / relative).read_bytes()
        assert (again / "MSRVTT" / relative).read_bytes() == original, relative
    original_annotation = (synthetic_dir / "MSRVTT" / "annotation" / "MSR_VTT.json").read_bytes()
    assert (other / "MSRVTT" / "annotation" / "MSR_VTT.json").read_bytes() != original_annotation


def test_existing_dataset_is_kept_and_real_data_never_overwritten(tmp_path):
    made = synthetic.make_synthetic_msrvtt(tmp_path, num_videos=5, num_frames=4, progress=False)
    clip = made / "MSRVTT" / "videos" / "all" / "video0.mp4"
    stamp = clip.stat().st_mtime_ns
    synthetic.make_synthetic_msrvtt(tmp_path, num_videos=5, num_frames=4, progress=False)
    assert clip.stat().st_mtime_ns == stamp  # same parameters: nothing rewritten
    synthetic.make_synthetic_msrvtt(tmp_path, num_videos=4, num_frames=4, progress=False)
    assert not (made / "MSRVTT" / "videos" / "all" / "video4.mp4").exists()  # other parameters: replaced
    assert not list(tmp_path.glob(".MSRVTT.partial*"))

    real = tmp_path / "real"
    (real / "MSRVTT" / "annotation").mkdir(parents=True)
    (real / "MSRVTT" / "annotation" / "MSR_VTT.json").write_text("{}")
    with pytest.raises(FileExistsError):
        synthetic.make_synthetic_msrvtt(real, num_videos=5, num_frames=4, progress=False)
    assert (real / "MSRVTT" / "annotation" / "MSR_VTT.json").read_text() == "{}"


def test_order_task_depends_on_order(tmp_path):
    synthetic.make_synthetic_msrvtt(tmp_path, num_videos=12, seed=1, num_frames=16, task="order", progress=False)
    attributes = synthetic.load_attributes(tmp_path)
    annotation = json.loads((tmp_path / "MSRVTT" / "annotation" / "MSR_VTT.json").read_text())
    kinds = {values["kind"] for values in attributes.values()}
    assert kinds == {"path", "colour_change"}
    for video_id, truth in attributes.items():
        frames, _, _ = decode(tmp_path / "MSRVTT" / "videos" / "all" / f"{video_id}.mp4")
        captions = [entry["caption"] for entry in annotation["annotations"] if entry["image_id"] == video_id]
        if truth["kind"] == "path":
            first, second = truth["directions"]
            assert {first, second} in ({"left", "up"}, {"left", "down"}, {"right", "up"}, {"right", "down"})
            centres = np.array([np.argwhere(object_mask(frame)).mean(0) for frame in frames])  # (T, 2)
            half = len(frames) // 2
            moves = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
            for direction, (start, end) in ((first, (0, half - 1)), (second, (half, len(frames) - 1))):
                axis, sign = (1, moves[direction][1]) if direction in ("left", "right") else (0, moves[direction][0])
                assert sign * (centres[end][axis] - centres[start][axis]) > 4, (video_id, truth)
            assert all(first in caption and second in caption for caption in captions)
        else:
            before, after = truth["colours"]
            assert before != after
            for frame, colour in ((frames[0], before), (frames[-1], after)):
                observed = np.median(frame[object_mask(frame)].astype(int), axis=0)
                nearest = min(synthetic.COLOURS,
                              key=lambda name: np.abs(np.array(synthetic.COLOURS[name]) - observed).sum())
                assert nearest == colour, (video_id, truth)
            assert all(caption.index(before) < caption.index(after) for caption in captions)


def test_mpeg4_fallback_decodes(tmp_path):
    synthetic.make_synthetic_msrvtt(tmp_path, num_videos=3, num_frames=6, codec="mpeg4", progress=False)
    frames, codec, pix_fmt = decode(tmp_path / "MSRVTT" / "videos" / "all" / "video0.mp4")
    assert frames.shape == (6, HEIGHT, WIDTH, 3) and codec == "mpeg4" and pix_fmt == "yuv420p"


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    args = synthetic.parse_args(["--out_dir", str(tmp_path), "--num_videos", "1"])
    assert synthetic.main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "num_videos" in error


def test_tiny_xclip_round_trips(tmp_path):
    import torch
    from transformers import XCLIPModel

    first = synthetic.make_tiny_xclip(tmp_path / "a", seed=0, num_frames=8)
    second = synthetic.make_tiny_xclip(tmp_path / "b", seed=0, num_frames=8)
    model = XCLIPModel.from_pretrained(first).eval()
    assert model.config.vision_config.num_frames == 8 and model.config.projection_dim == 512
    again = XCLIPModel.from_pretrained(second).eval()
    for (name, weight), (_, weight_again) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(weight, weight_again), name  # same seed, same weights
    pixel_values = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (B, T, 3, H, W)
    with torch.inference_mode():
        output = model.get_video_features(pixel_values=pixel_values)
    latents = output if torch.is_tensor(output) else output.pooler_output  # (B, 512)
    assert latents.shape == (2, 512) and torch.isfinite(latents).all()
    assert not torch.allclose(latents[0], latents[1])
    # No preprocessor_config.json, as with any save_pretrained model: X-CLIP's defaults at the config's size.
    assert not (first / "preprocessor_config.json").exists()
    from encode import load_preprocess

    preprocess = load_preprocess(str(first), model.config.vision_config.image_size)
    assert (preprocess.image_size, preprocess.shortest_edge) == (32, 32)
    assert preprocess.mean == (0.485, 0.456, 0.406) and preprocess.std == (0.229, 0.224, 0.225)


def test_dataset_loader_reads_it(synthetic_dir):
    import annotations
    import dataset

    official = annotations.load_msrvtt(synthetic_dir, scheme="official")
    assert {split: len(ids) for split, ids in official.splits.items()} == {"train": 14, "val": 2, "test": 4}
    assert not any(official.missing.values())
    annotation = json.loads((synthetic_dir / "MSRVTT" / "annotation" / "MSR_VTT.json").read_text())
    assert sum(len(captions) for captions in official.captions.values()) == len(annotation["annotations"])
    one_k = annotations.load_msrvtt(synthetic_dir, scheme="1k-A")
    assert one_k.splits["test"] == read_lists(synthetic_dir / "MSRVTT")["val_list_jsfusion.txt"]
    pixel_values, info = dataset.read_video(official.video_path("video0"), num_frames=8)
    assert pixel_values.shape[:2] == (8, 3) and info["frames_decoded"] == NUM_FRAMES
