"""Screenshot of the demo page after it captioned a video, taken by a real headless Chromium.

    python tools/screenshot_demo.py --model_path quickstart/models/best.pt --xclip_model quickstart/tiny-xclip \
        --videos quickstart/data/MSRVTT/videos/all/video480.mp4 quickstart/data/MSRVTT/videos/all/video481.mp4 \
        --out docs/demo.png

Joins --videos into one longer clip (so that the page shows its timeline), serves demo.py on a free port of
127.0.0.1 with the videos as examples, uploads the joined clip in the browser, presses Caption, waits for the
timeline and saves a PNG. Needs playwright (pip install playwright) and Debian's chromium (apt-get install
chromium); playwright drives the installed browser, it downloads none.
"""
import argparse
import io
import socket
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python tools/screenshot_demo.py`, only tools/ is on the path
    sys.path.insert(0, str(REPO))

import av
import numpy as np
from PIL import Image

import demo
from common import UserError, atomic_write, check_outputs, fail, use_warning_lines
from synthetic import write_clip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_path", required=True, help="checkpoint for the demo")
    parser.add_argument("--xclip_model", default=None, help="local copy of the checkpoint's X-CLIP")
    parser.add_argument("--videos", nargs="+", required=True,
                        help="clips joined into the one the browser uploads, and offered as examples")
    parser.add_argument("--segment_seconds", type=float, default=4.0, help="the demo's window length")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser to drive")
    parser.add_argument("--width", type=int, default=1280, help="browser window width in pixels")
    parser.add_argument("--colours", type=int, default=256,
                        help="reduce the PNG to this many colours to keep it small (0 = keep every colour)")
    parser.add_argument("--out", default="docs/demo.png", help="PNG to write")
    return parser.parse_args(argv)


def join_clips(paths, out_path, fps=8) -> Path:
    """The frames of every clip one after the other, as one mp4 (clips of one size, as the synthetic ones are)."""
    frames = []
    for path in paths:
        with av.open(str(path)) as container:
            frames += [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    write_clip(out_path, np.stack(frames), fps)  # (T, H, W, 3)
    return Path(out_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def screenshot(url, video, args) -> None:
    """Open url in headless Chromium, upload video, press Caption, wait for the timeline, save args.out (with
    --colours, reduced to that many colours)."""
    from playwright.sync_api import sync_playwright  # a documentation tool's own dependency, not the repo's

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": args.width, "height": 800})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(video))
        page.get_by_role("button", name="Caption").click()
        page.get_by_text("00:00:00.000").filter(visible=True).first.wait_for(timeout=120_000)
        page.wait_for_timeout(1000)  # let the video player and tables settle
        picture = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        browser.close()
    if args.colours:
        picture = picture.quantize(colors=args.colours, method=Image.Quantize.MEDIANCUT)
    atomic_write(args.out, lambda handle: picture.save(handle, format="PNG", optimize=True))


def main(args) -> int:
    use_warning_lines()
    try:
        check_outputs([("--out", args.out)], [("--model_path", args.model_path), ("--xclip_model", args.xclip_model),
                                              *(("--videos", video) for video in args.videos)])
    except UserError as error:
        return fail(error)
    with tempfile.TemporaryDirectory() as work:
        try:
            video = join_clips(args.videos, Path(work) / "joined.mp4")
            demo_args = demo.parse_args(["--model_path", args.model_path, "--port", str(free_port()),
                                         "--segment_seconds", str(args.segment_seconds), "--examples", *args.videos]
                                        + (["--xclip_model", args.xclip_model] if args.xclip_model else []))
            page = demo.serve(demo_args, prevent_thread_lock=True)
        except UserError as error:
            return fail(error)
        try:
            screenshot(page.local_url, video, args)
        finally:
            page.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
