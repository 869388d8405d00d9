"""Captions along a long video: time windows, merging, SRT / WebVTT subtitles (inference.py --segment_seconds)."""
import json

import numpy as np
import pytest

import captioning
import inference
from dataset import read_video_windows



@pytest.fixture(scope="module")
def world(colour_world):
    """conftest.colour_world: a 6 s red-then-blue clip, a tiny X-CLIP, a captioner that names the colour."""
    return colour_world


def test_windows_cover_the_video_and_show_what_happens_in_them(world):
    windows = list(read_video_windows(world["long_clip"], 2.0, 16, world["preprocess"]))
    assert [(w["start"], w["end"]) for w in windows] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert all(w["frames"].shape == (16, 3, 32, 32) for w in windows)
    # The square sits at the centre of the crop: red (channel 0) beats blue (channel 2) exactly in red windows.
    red_minus_blue = [float(w["frames"][:, 0, 12:20, 12:20].mean() - w["frames"][:, 2, 12:20, 12:20].mean())
                      for w in windows]
    assert red_minus_blue[0] > 1 and red_minus_blue[1] > 1 and red_minus_blue[2] < -1
    # A window longer than what is left ends with the video; one pass per window reads the same frames.
    uneven = list(read_video_windows(world["long_clip"], 2.5, 16, world["preprocess"], windows_per_pass=1))
    assert [(w["start"], w["end"]) for w in uneven] == [(0.0, 2.5), (2.5, 5.0), (5.0, 6.0)]
    together = list(read_video_windows(world["long_clip"], 2.5, 16, world["preprocess"]))
    assert all(np.array_equal(a["frames"], b["frames"]) for a, b in zip(uneven, together))


def test_merge_and_subtitle_formats():
    windows = [{"start": 0.0, "end": 2.0, "caption": "a"}, {"start": 2.0, "end": 4.0, "caption": "a"},
               {"start": 4.0, "end": 6.0, "caption": "b"}, {"start": 6.0, "end": 7.25, "caption": "a"}]
    merged = captioning.merge_segments(windows)
    assert merged == [{"start": 0.0, "end": 4.0, "caption": "a"}, {"start": 4.0, "end": 6.0, "caption": "b"},
                      {"start": 6.0, "end": 7.25, "caption": "a"}]
    assert windows[0]["end"] == 2.0  # the input is left alone
    assert captioning.format_timestamp(3725.5) == "01:02:05.500"
    assert captioning.format_timestamp(59.9996, ",") == "00:01:00,000"
    assert captioning.format_srt(merged[:2]) == ("1\n00:00:00,000 --> 00:00:04,000\na\n\n"
                                                "2\n00:00:04,000 --> 00:00:06,000\nb\n")
    assert captioning.format_vtt(merged[:2]) == ("WEBVTT\n\n00:00:00.000 --> 00:00:04.000\na\n\n"
                                                "00:00:04.000 --> 00:00:06.000\nb\n")


def run_inference(world, *flags):
    return inference.main(inference.parse_args(["--model_path", str(world["model_path"]), "--xclip_model",
                                                str(world["xclip"]), "--beam_size", "2", "--max_len", "8", *flags]))


def test_inference_captions_each_window_and_writes_subtitles(world, tmp_path, capsys):
    srt, vtt = tmp_path / "long.srt", tmp_path / "long.vtt"
    assert run_inference(world, "--video_path", str(world["long_clip"]), "--segment_seconds", "2", "--json",
                         "--srt", str(srt), "--vtt", str(vtt)) == 0
    result = json.loads(capsys.readouterr().out)
    expected = [{"start": 0.0, "end": 4.0, "caption": "a red square"},
                {"start": 4.0, "end": 6.0, "caption": "a blue square"}]
    assert result["segments"] == expected and result["windows"] == 3
    assert srt.read_text() == ("1\n00:00:00,000 --> 00:00:04,000\na red square\n\n"
                               "2\n00:00:04,000 --> 00:00:06,000\na blue square\n")
    assert vtt.read_text() == ("WEBVTT\n\n00:00:00.000 --> 00:00:04.000\na red square\n\n"
                               "00:00:04.000 --> 00:00:06.000\na blue square\n")
    assert run_inference(world, "--video_path", str(world["long_clip"]), "--segment_seconds", "2") == 0
    assert capsys.readouterr().out.splitlines() == ["00:00:00.000 --> 00:00:04.000  a red square",
                                                    "00:00:04.000 --> 00:00:06.000  a blue square"]


@pytest.mark.parametrize("flags, videos, words", [
    (["--srt", "x.srt"], 1, "--segment_seconds"),
    (["--segment_seconds", "2", "--srt", "x.srt"], 2, "one video"),
    (["--segment_seconds", "2", "--views", "3"], 1, "do not go together"),
])
def test_flags_that_do_not_go_together_are_one_line(world, capsys, flags, videos, words):
    assert run_inference(world, "--video_path", *[str(world["long_clip"])] * videos, *flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
