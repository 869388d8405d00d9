"""A local demo page: upload a video, or pick an example, and read what the captioner says about it.

    python demo.py --model_path models/best.pt --examples clips/

Serves http://127.0.0.1:7860 (--host, --port). The page shows the video, its n best captions with their
length-normalised log-probabilities, and for a video longer than one --segment_seconds window the timeline of
segment captions with SRT and WebVTT downloads. Every caption comes from the functions inference.py runs
(checkpoint.load_captioner; captioning.py's caption_video, caption_segments, format_srt, format_vtt): the page says
what inference.py prints for the same video and flags. A video that cannot be read shows inference.py's one-line
error. Runs on the GPU when there is one (--device auto), else on the CPU. Needs the optional extra gradio:
pip install -r requirements-extras.txt.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

from captioning import (Decoding, add_decoding_arguments, caption_segments, caption_video, format_srt,
                        format_timestamp, format_vtt)
from common import UserError, expand_video_paths, fail, is_video_file, non_negative, use_warning_lines, write_text

# gradio is imported inside build_page: it is an optional extra, and `demo.py --help` or a missing install
# answer at once.
GRADIO_MISSING = ("demo.py: the gradio package is not installed; pip install -r requirements-extras.txt "
                  "(or caption from the command line with inference.py)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_path", default="models/best.pt",
                        help="a .pt from train.py, a folder from export.py, or a Hub repo id (user/name)")
    parser.add_argument("--tokenizer_path", default=None,
                        help="only to check against the checkpoint's own tokenizer (it is stored inside)")
    parser.add_argument("--xclip_model", default=None,
                        help="local copy of the checkpoint's X-CLIP (default: the name stored in the checkpoint)")
    parser.add_argument("--device", default="auto", help="where to run: auto (a GPU when there is one), cpu, cuda or "
                                                          "cuda:N")
    parser.add_argument("--examples", nargs="*", default=[],
                        help="videos offered as examples under the upload box: files, folders or glob patterns")
    add_decoding_arguments(parser, num_captions=3, sampling=False)
    parser.add_argument("--segment_seconds", type=non_negative, default=5.0,
                        help="a video longer than this also gets a caption for each window of this many seconds "
                             "(0 = never)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    return parser.parse_args(argv)


def check_args(args):
    """None, or one line saying what is wrong with the flags."""
    missing = [str(path) for path in expand_video_paths(args.examples) if not is_video_file(path) or not path.is_file()]
    if missing:
        return f"--examples: {missing[0]} is not a video file; pass video files, folders holding videos, or globs"
    return None


def describe_video(path, captioner, args, subtitle_dir) -> dict:
    """One video as the page shows it: inference.py's n-best captions ({"captions", "warnings", ...}) and, for a
    video longer than one window, "segments" with their subtitles written to subtitle_dir ("subtitles": paths).
    Raises UserError (dataset.VideoError) for a video that cannot be read, with inference.py's message."""
    decoding = Decoding.from_args(args)
    result = caption_video(path, *captioner, decoding=decoding)
    result["segments"], result["subtitles"] = [], []
    if args.segment_seconds:
        timeline = caption_segments(path, *captioner, args.segment_seconds, decoding)
        if timeline["windows"] > 1:
            result["segments"] = timeline["segments"]
            result["warnings"] += [warning for warning in timeline["warnings"] if warning not in result["warnings"]]
            folder = Path(tempfile.mkdtemp(dir=subtitle_dir))  # one folder per request: the names never clash
            result["subtitles"] = [str(write_text(folder / f"{Path(path).stem}{suffix}", write(result["segments"])))
                                   for suffix, write in ((".srt", format_srt), (".vtt", format_vtt))]
    return result


def page_outputs(result: dict) -> tuple:
    """describe_video's result -> the page's outputs: captions table, timeline table, subtitle files, notes."""
    captions = [[item["score"], item["caption"]] for item in result["captions"]]
    timeline = [[format_timestamp(segment["start"]), format_timestamp(segment["end"]), segment["caption"]]
                for segment in result["segments"]]
    notes = "\n".join(f"warning: {warning}" for warning in result["warnings"])
    return captions, timeline, result["subtitles"] or None, notes


def build_page(captioner, args, subtitle_dir):
    """The Gradio page: upload box and examples on the left; captions, timeline and downloads on the right. Its
    button's API name is "caption" (gradio_client: predict(video, api_name="/caption"))."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    import gradio as gr  # optional extra, see the note at the top

    def caption(video_path):
        if not video_path:
            raise gr.Error("error: no video: upload one or pick an example", print_exception=False)
        try:
            return page_outputs(describe_video(video_path, captioner, args, subtitle_dir))
        except UserError as error:  # the line inference.py prints for the same file
            raise gr.Error(f"error: {error}", print_exception=False) from None

    with gr.Blocks(title="Video captioning demo", analytics_enabled=False) as page:
        gr.Markdown(f"## Video captioning: X-CLIP + LSTM\nCheckpoint `{args.model_path}`; beam {args.beam_size}, "
                    f"{args.num_captions} best captions" + (f"; segments of {args.segment_seconds:g} s for longer "
                                                            "videos" if args.segment_seconds else ""))
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="video", sources=["upload"], include_audio=True, format=None)
                button = gr.Button("Caption", variant="primary")
                examples = [str(path) for path in expand_video_paths(args.examples)]
            with gr.Column(scale=1):
                captions = gr.Dataframe(headers=["score", "caption"], label="best captions (score: log-probability "
                                        "/ length)", interactive=False, wrap=True, column_widths=["18%", "82%"])
                timeline = gr.Dataframe(headers=["start", "end", "caption"], label="timeline", interactive=False,
                                        wrap=True, column_widths=["22%", "22%", "56%"])
                subtitles = gr.File(label="subtitles (SRT, WebVTT)", file_count="multiple", interactive=False)
                notes = gr.Markdown()
        outputs = [captions, timeline, subtitles, notes]
        if examples:
            gr.Examples(examples, inputs=video, outputs=outputs, fn=caption, run_on_click=True, cache_examples=False,
                        label="examples")
        button.click(caption, inputs=video, outputs=outputs, api_name="caption")
    return page


def serve(args, prevent_thread_lock=False):
    """Load the checkpoint once, build the page and serve it on --host:--port; returns the page (running, when
    prevent_thread_lock is set, as tests use it)."""
    try:
        import gradio as gr
    except ImportError:
        raise UserError(GRADIO_MISSING) from None
    from checkpoint import load_captioner
    from common import resolve_device

    captioner = load_captioner(args.model_path, resolve_device(args.device), args.xclip_model,
                               args.tokenizer_path)
    subtitle_dir = tempfile.mkdtemp(prefix="demo-subtitles-")
    page = build_page(captioner, args, subtitle_dir)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],  # system fonts: no font download
                              font_mono=["ui-monospace", "monospace"])
    allowed = sorted({str(Path(path).resolve().parent) for path in expand_video_paths(args.examples)})
    page.launch(server_name=args.host, server_port=args.port, share=False, theme=theme, allowed_paths=allowed,
                prevent_thread_lock=prevent_thread_lock, quiet=prevent_thread_lock)
    return page


def main(args) -> int:
    use_warning_lines()
    try:
        problem = check_args(args)
        if problem:
            raise UserError(problem)
        serve(args)
    except UserError as error:
        return fail(error)
    except OSError as error:  # the port is taken, or the address cannot be bound
        return fail(f"--host {args.host} --port {args.port}: cannot serve ({error}); pass another --port")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
