"""The demo page (demo.py) served on 127.0.0.1 and called with gradio's own client: it says what inference.py says."""
import importlib.util
import json
import socket
import sys
from pathlib import Path

import pytest

import demo
import inference

needs_gradio = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                  reason="gradio not installed (pip install -r requirements-extras.txt)")
DECODING = ["--beam_size", "2", "--max_len", "8"]


@pytest.fixture(scope="module")
def world(colour_world):
    """conftest.colour_world: a 6 s red-then-blue clip, a tiny X-CLIP, a captioner that names the colour."""
    return colour_world


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def client(world):
    """The page on a free port of 127.0.0.1, and a gradio_client.Client talking to it."""
    from gradio_client import Client

    args = demo.parse_args(["--model_path", str(world["model_path"]), "--xclip_model", str(world["xclip"]),
                            "--examples", str(world["root"] / "red.mp4"), "--num_captions", "2",
                            "--segment_seconds", "2", "--port", str(free_port()), *DECODING])
    page = demo.serve(args, prevent_thread_lock=True)
    assert page.local_url.startswith("http://127.0.0.1:")
    yield Client(page.local_url, verbose=False)
    page.close()


def run_inference(world, capsys, *flags):
    """inference.py's exit code, stdout and stderr for the checkpoint of the world and the given flags."""
    code = inference.main(inference.parse_args(["--model_path", str(world["model_path"]), "--xclip_model",
                                                str(world["xclip"]), "--device", "cpu", *DECODING, *flags]))
    printed = capsys.readouterr()
    return code, printed.out, printed.err


@needs_gradio
def test_the_page_gives_the_captions_inference_gives(client, world, capsys):
    from gradio_client import handle_file

    clip = world["root"] / "red.mp4"
    captions, timeline, subtitles, _ = client.predict(handle_file(str(clip)), api_name="/caption")
    code, out, _ = run_inference(world, capsys, "--video_path", str(clip), "--num_captions", "2", "--json")
    expected = json.loads(out)["captions"]
    assert code == 0 and captions["data"] == [[item["score"], item["caption"]] for item in expected]
    assert captions["data"][0][1] == "a red square"
    assert timeline["data"] == [] and subtitles is None  # a 2 s clip is one window: no timeline


@needs_gradio
def test_a_long_video_gets_the_timeline_and_subtitles_of_inference(client, world, capsys, tmp_path):
    from gradio_client import handle_file

    _, timeline, subtitles, _ = client.predict(handle_file(str(world["long_clip"])), api_name="/caption")
    assert [row[2] for row in timeline["data"]] == ["a red square", "a blue square"]
    code, _, _ = run_inference(world, capsys, "--video_path", str(world["long_clip"]), "--segment_seconds", "2",
                               "--srt", str(tmp_path / "long.srt"), "--vtt", str(tmp_path / "long.vtt"))
    assert code == 0
    downloads = {Path(path).suffix: Path(path).read_text(encoding="utf-8") for path in subtitles}
    assert downloads == {".srt": (tmp_path / "long.srt").read_text(), ".vtt": (tmp_path / "long.vtt").read_text()}


@needs_gradio
def test_a_bad_upload_shows_the_line_inference_prints(client, world, capsys, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(AppError) as raised:
        client.predict(handle_file(str(bad)), api_name="/caption")
    code, _, err = run_inference(world, capsys, "--video_path", str(bad))
    expected = err.strip().splitlines()[-1]
    assert code == 2 and expected.startswith(f"error: {bad}: ")
    shown = str(raised.value)  # the same line, naming the copy the page received
    assert shown.startswith("error: ") and shown.endswith("bad.mp4" + expected.split(str(bad), 1)[1])


def test_without_gradio_the_demo_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert demo.main(demo.parse_args(["--model_path", str(tmp_path / "missing.pt")])) == 2
    assert capsys.readouterr().err.strip() == f"error: {demo.GRADIO_MISSING}"


def test_examples_that_are_not_videos_are_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert demo.main(demo.parse_args(["--examples", str(tmp_path / "notes.txt")])) == 2
    assert "--examples: " in capsys.readouterr().err
