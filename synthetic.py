"""Synthetic stand-ins for MSR-VTT and X-CLIP, for tests, the offline quickstart and benchmarks.

    python synthetic.py --out_dir data --num_videos 300 --tiny_xclip models/tiny-xclip
    python synthetic.py --out_dir data --num_videos 400 --task order     # colour changes and turns

make_synthetic_msrvtt writes clips of one coloured shape moving over a plain background, laid out
exactly as MSRVTT.zip unpacks (data/MSRVTT/annotation/MSR_VTT.json, data/MSRVTT/videos/all/videoN.mp4,
data/MSRVTT/high-quality/structured-symlinks/*_list_*.txt), with captions that name the colour,
size, shape and direction, and the ground truth in annotation/attributes.json so that generated
captions can be scored on what they name. make_tiny_xclip writes a tiny, randomly initialised
X-CLIP that loads like the real one. Everything is deterministic from the seed.
"""
import argparse
import contextlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import av
import numpy as np
import torch
from transformers import XCLIPConfig, XCLIPModel

from common import fail, progress_bar, temporary_path, use_warning_lines, write_json, write_text
from synthetic_scoring import (COLOURS, DIRECTION_WORDS, SHAPE_WORDS, SIZE_WORDS, attribute_accuracy,
                               caption_attributes, caption_events, load_attributes, order_accuracy, synthetic_metrics)

SIZES = {"small": 0.11, "large": 0.28}  # half-extent of the shape as a fraction of min(width, height)
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
TASKS = ("simple", "order")

DIRECTION_PHRASES = {
    "left": ("left", "to the left", "towards the left"),
    "right": ("right", "to the right", "towards the right"),
    "up": ("up", "upwards", "up the screen"),
    "down": ("down", "downwards", "down the screen"),
}

# {size} {colour} {shape} {dir} (a bare direction word) {dir_phrase} (any phrasing of it).
SIMPLE_TEMPLATES_FULL = (
    "a {size} {colour} {shape} moves {dir_phrase}",
    "a {size} {colour} {shape} is moving {dir}",
    "{size} {colour} {shape} going {dir}",
    "there is a {size} {colour} {shape} moving {dir}",
    "a {size} {colour} {shape} slides {dir_phrase}",
    "a {colour} {shape} which is {size} moves {dir_phrase}",
    "the {size} {colour} {shape} travels {dir_phrase} across the screen",
    "a {size} {colour} {shape} on a dark background moving {dir}",
    "a {size} {colour} {shape} moving {dir_phrase}",
)
SIMPLE_TEMPLATES_PARTIAL = (  # a minority of captions leave out the size or the colour
    "a {colour} {shape} is moving {dir}",
    "a {colour} {shape} moves {dir_phrase}",
    "a {size} {shape} moves {dir_phrase}",
)
PATH_TEMPLATES = (  # order task, two directions: {dir1} happens before {dir2}
    "a {size} {colour} {shape} moves {dir1_phrase}, then {dir2_phrase}",
    "a {size} {colour} {shape} moves {dir1} and then {dir2}",
    "a {size} {colour} {shape} goes {dir1} first and then {dir2}",
    "first a {size} {colour} {shape} moves {dir1}, then it moves {dir2}",
    "a {size} {colour} {shape} turns {dir2} after moving {dir1}",
    "a {colour} {shape} moving {dir1} then {dir2}",
)
COLOUR_CHANGE_TEMPLATES = (  # order task, colour change: {colour1} is seen before {colour2}
    "a {size} {shape} turns from {colour1} to {colour2}",
    "a {size} {colour1} {shape} turns {colour2}",
    "a {size} {shape} changes colour from {colour1} to {colour2}",
    "a {size} {colour1} {shape} becomes {colour2} while moving {dir}",
    "a {size} {shape} moving {dir_phrase} changes from {colour1} to {colour2}",
    "a {size} {colour1} {shape} moves {dir_phrase} and turns {colour2}",
)

SPLIT_FILES = "high-quality/structured-symlinks"
BACKGROUND_LEVELS = (0, 60)  # plain grey background, level drawn per clip in this range


def video_rng(seed, index):
    """The random generator for clip `index`: depends only on (seed, index), not on the clip count."""
    return np.random.default_rng([int(seed), int(index)])


def sample_attributes(rng, task="simple"):
    """Draw one clip's ground truth: colour, size, shape, direction (and, for "order", the sequence)."""
    colour = str(rng.choice(list(COLOURS)))
    size = str(rng.choice(list(SIZES)))
    shape = str(rng.choice(SHAPES))
    direction = str(rng.choice(DIRECTIONS))
    attributes = {"colour": colour, "size": size, "shape": shape, "direction": direction}
    if task == "simple":
        return attributes
    if task != "order":
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if rng.random() < 0.5:  # a path with a turn: two perpendicular directions
        horizontal = direction in ("left", "right")
        second = str(rng.choice(("up", "down") if horizontal else ("left", "right")))
        attributes.update(kind="path", colours=[colour, colour], directions=[direction, second])
    else:  # one direction, the colour changes half way
        second_colour = str(rng.choice([name for name in COLOURS if name != colour]))
        attributes.update(kind="colour_change", colours=[colour, second_colour],
                          directions=[direction, direction])
    return attributes


def _fill(rng, template, attributes):
    """Fill a caption template, drawing a synonym for each slot independently."""
    def pick(options):
        return str(rng.choice(options))

    directions = attributes.get("directions", [attributes["direction"]] * 2)
    colours = attributes.get("colours", [attributes["colour"]] * 2)
    return template.format(
        size=pick(SIZE_WORDS[attributes["size"]]),
        colour=colours[0],
        colour1=colours[0],
        colour2=colours[1],
        shape=pick(SHAPE_WORDS[attributes["shape"]]),
        dir=pick(DIRECTION_WORDS[directions[0]]),
        dir_phrase=pick(DIRECTION_PHRASES[directions[0]]),
        dir1=directions[0],
        dir2=directions[1],
        dir1_phrase=pick(DIRECTION_PHRASES[directions[0]]),
        dir2_phrase=pick(DIRECTION_PHRASES[directions[1]]),
    )


def make_captions(rng, attributes, num_captions):
    """num_captions distinct captions naming what the clip shows, in several phrasings."""
    kind = attributes.get("kind", "simple")
    if kind == "path":
        templates, weights = PATH_TEMPLATES, None
    elif kind == "colour_change":
        templates, weights = COLOUR_CHANGE_TEMPLATES, None
    else:
        templates = SIMPLE_TEMPLATES_FULL + SIMPLE_TEMPLATES_PARTIAL
        # About 85% of captions name both the colour and the size.
        full_share, partial_share = 0.85, 0.15
        weights = ([full_share / len(SIMPLE_TEMPLATES_FULL)] * len(SIMPLE_TEMPLATES_FULL)
                   + [partial_share / len(SIMPLE_TEMPLATES_PARTIAL)] * len(SIMPLE_TEMPLATES_PARTIAL))
    captions = []
    for _ in range(num_captions * 20):  # bounded: duplicates are redrawn, a few tries each
        template = templates[rng.choice(len(templates), p=weights)]
        caption = _fill(rng, template, attributes)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == num_captions:
            break
    return captions


def _positions(rng, attributes, num_frames, width, height, half):
    """Centre (x, y) of the shape in each frame, (num_frames, 2), following the clip's directions."""
    directions = attributes.get("directions", [attributes["direction"]])
    margin = half + 1.0
    # Along each axis the shape travels between a start and an end near opposite edges.
    limits = {"x": (margin, width - 1 - margin), "y": (margin, height - 1 - margin)}

    def endpoints(direction):
        axis = "x" if direction in ("left", "right") else "y"
        low, high = limits[axis]
        shorten = rng.uniform(0.0, 0.15) * (high - low)  # vary the distance a little per clip
        start, end = (high, low + shorten) if direction in ("left", "up") else (low, high - shorten)
        return axis, start, end

    centre = {axis: rng.uniform(*limits[axis]) for axis in ("x", "y")}
    legs = [endpoints(direction) for direction in dict.fromkeys(directions)]
    for axis, start, _ in legs:
        centre[axis] = start
    positions = np.empty((num_frames, 2), dtype=np.float64)
    frames_per_leg = np.array_split(np.arange(num_frames), len(legs))
    for (axis, start, end), frame_ids in zip(legs, frames_per_leg):
        steps = np.linspace(0.0, 1.0, len(frame_ids)) if len(frame_ids) > 1 else np.ones(1)
        for step, frame_id in zip(steps, frame_ids):
            centre[axis] = start + step * (end - start)
            positions[frame_id] = (centre["x"], centre["y"])
    return positions


def _shape_mask(shape, grid_x, grid_y, centre_x, centre_y, half):
    """Boolean (H, W) mask of a shape with half-extent `half` centred at (centre_x, centre_y)."""
    dx, dy = grid_x - centre_x, grid_y - centre_y
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "triangle":  # apex up, base 2*half wide at the bottom
        inside_rows = (dy >= -half) & (dy <= half)
        return inside_rows & (np.abs(dx) <= (dy + half) / 2.0)
    raise ValueError(f"unknown shape {shape!r}")


def render_clip(rng, attributes, num_frames, width, height):
    """The clip's frames, uint8 (T, H, W, 3): one shape moving over a plain grey background."""
    half = SIZES[attributes["size"]] * min(width, height)
    positions = _positions(rng, attributes, num_frames, width, height, half)  # (T, 2)
    background = int(rng.integers(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1] + 1))
    colours = attributes.get("colours", [attributes["colour"]] * 2)
    switch_frame = int(round(num_frames * rng.uniform(0.4, 0.6)))  # colour change, if any
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float64)  # (H, W) each
    frames = np.full((num_frames, height, width, 3), background, dtype=np.uint8)  # (T, H, W, 3)
    for frame_id, (centre_x, centre_y) in enumerate(positions):
        mask = _shape_mask(attributes["shape"], grid_x, grid_y, centre_x, centre_y, half)  # (H, W)
        colour = colours[0] if frame_id < switch_frame else colours[1]
        frames[frame_id][mask] = COLOURS[colour]
    return frames


def pick_codec(codec=None):
    """libx264 when this PyAV build has it, else mpeg4; an explicit name is checked and returned."""
    available = av.codecs_available
    if codec is not None:
        if codec not in available:
            raise ValueError(f"codec {codec!r} is not available in this PyAV build")
        return codec
    return "libx264" if "libx264" in available else "mpeg4"


@contextlib.contextmanager
def video_stream(path, fps, width: int, height: int, codec: str = "libx264", options: dict | None = None):
    """An mp4 video stream (yuv420p) to encode frames into (encode_frame); the file is written under a temporary
    name and moved into place when the block ends without an error (common.temporary_path)."""
    with temporary_path(path) as temporary, av.open(str(temporary), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=int(fps), options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        yield stream
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)


def encode_frame(stream, frame) -> None:
    """Encode one av.VideoFrame into a video_stream."""
    for packet in stream.encode(frame):
        stream.container.mux(packet)


def write_clip(path, frames, fps, codec="libx264"):
    """Encode uint8 (T, H, W, 3) frames to an mp4 (yuv420p), atomically; single-threaded so the bytes repeat."""
    height, width = frames.shape[1:3]
    # Lossless H.264 (qp 0): the decoded pixels equal the encoded yuv420p frames exactly, which keeps
    # the colours true and the content identical from run to run (lossy x264 here was not always
    # bit-reproducible); flat synthetic frames make it as small as crf 18.
    options = {"qp": "0", "threads": "1"} if codec == "libx264" else {"threads": "1"}
    with video_stream(path, fps, width, height, codec, options) as stream:
        stream.codec_context.thread_count = 1
        if codec != "libx264":
            stream.bit_rate = 4_000_000  # near-lossless at these sizes
        for frame_index, frame_pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels, format="rgb24").reformat(format="yuv420p")
            frame.pts = frame_index
            encode_frame(stream, frame)


def split_video_ids(video_ids):
    """The split lists as MSRVTT.zip names them: official 70/10/20 by video, 1k-A (jsfusion) and 1k-B (miech)."""
    count = len(video_ids)
    num_train = max(1, round(0.7 * count))
    num_val = max(1, round(0.1 * count))
    num_train = min(num_train, count - num_val - 1)  # keep at least one test clip
    train, val, test = video_ids[:num_train], video_ids[num_train:num_train + num_val], video_ids[num_train + num_val:]
    # 1k-A: as in the real zip, the held-out list is every other test clip; everything else trains.
    held_out = test[::2]
    held_out_set = set(held_out)
    rest = [video_id for video_id in video_ids if video_id not in held_out_set]
    return {
        "train_list_full.txt": train,
        "val_list_full.txt": val,
        "test_list_full.txt": test,
        "train_list_jsfusion.txt": rest,
        "val_list_jsfusion.txt": held_out,
        "train_list_miech.txt": rest[:max(1, round(0.6656 * count))],
        "test_list_miech.txt": held_out,
    }


def _is_complete(root, params):
    """True when root holds a synthetic dataset made with exactly these parameters."""
    params_path = root / "annotation" / "synthetic.json"
    if not params_path.is_file():
        return False
    try:
        if json.loads(params_path.read_text(encoding="utf-8")) != params:
            return False
    except ValueError:
        return False
    videos = root / "videos" / "all"
    return all((videos / f"video{index}.mp4").is_file() for index in range(params["num_videos"]))


@dataclass(frozen=True)
class SyntheticSet:
    """What a synthetic MSR-VTT is made of (annotation/synthetic.json holds it); codec None: pick_codec's choice."""
    num_videos: int = 300
    seed: int = 0
    width: int = 64
    height: int = 48
    num_frames: int = 32
    fps: int = 8
    task: str = "simple"
    codec: str | None = None
    min_captions: int = 8
    max_captions: int = 12

    def checked(self) -> dict:
        """The parameters as synthetic.json records them (the codec picked); ValueError when they cannot be made."""
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.num_videos < 3:
            raise ValueError(f"num_videos must be at least 3 (one per split), got {self.num_videos}")
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(f"width and height must be even and at least 16 (yuv420p), got {self.width}x{self.height}")
        if self.num_frames < 2 or not 1 <= self.min_captions <= self.max_captions:
            raise ValueError("need num_frames >= 2 and 1 <= min_captions <= max_captions")
        return {name: value if name in ("task", "codec") else int(value)
                for name, value in asdict(replace(self, codec=pick_codec(self.codec))).items()}


def make_synthetic_msrvtt(out_dir, spec: SyntheticSet = SyntheticSet(), progress: bool = True, **changes):
    """Write a synthetic MSR-VTT under out_dir/MSRVTT/ and return out_dir (the data_dir for load_msrvtt).

    spec with changes (SyntheticSet's fields: num_videos=..., seed=..., task=...) says what to make. Same layout
    as MSRVTT.zip, plus annotation/attributes.json (video id -> colour, size, shape, direction; "order" adds
    kind, colours, directions) and annotation/synthetic.json (the parameters). A dataset already made with the
    same parameters is kept as it is. A real (non-synthetic) MSRVTT folder is never overwritten: FileExistsError.
    """
    params = replace(spec, **changes).checked()
    out_dir = Path(out_dir)
    root = out_dir / "MSRVTT"
    if _is_complete(root, params):
        return out_dir
    if root.exists() and not (root / "annotation" / "synthetic.json").is_file():
        raise FileExistsError(f"{root} exists and is not a synthetic dataset; choose another --out_dir")

    # Build in a scratch folder next to the target, then swap it in: a half-written dataset never
    # sits where load_msrvtt would find it.
    scratch = out_dir / f".MSRVTT.partial{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        write_dataset(scratch, params, progress)
        if root.exists():
            shutil.rmtree(root)
        os.replace(scratch, root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir


def write_dataset(root, params, progress=True):
    """Write the clips, MSR_VTT.json, attributes.json, the split lists, and last synthetic.json, under root."""
    (root / "annotation").mkdir(parents=True)
    (root / "videos" / "all").mkdir(parents=True)
    (root / SPLIT_FILES).mkdir(parents=True)
    video_ids = [f"video{index}" for index in range(params["num_videos"])]
    images, annotations, attributes_by_video = [], [], {}
    for index, video_id in enumerate(progress_bar(video_ids, desc="synthetic clips", disable=not progress)):
        rng = video_rng(params["seed"], index)
        attributes = sample_attributes(rng, params["task"])
        frames = render_clip(rng, attributes, params["num_frames"], params["width"], params["height"])  # (T, H, W, 3)
        write_clip(root / "videos" / "all" / f"{video_id}.mp4", frames, params["fps"], params["codec"])
        num_captions = int(rng.integers(params["min_captions"], params["max_captions"] + 1))
        for caption in make_captions(rng, attributes, num_captions):
            annotations.append({"caption": caption, "id": len(annotations), "image_id": video_id})
        images.append({"id": video_id})
        attributes_by_video[video_id] = attributes
    annotation = {
        "info": {"description": f"synthetic MSR-VTT stand-in ({params['task']}), made by synthetic.py",
                 "version": "1.0", "year": "2024"},
        "images": images, "licenses": [], "type": "captions", "annotations": annotations,
    }
    write_json(root / "annotation" / "MSR_VTT.json", annotation, indent=1)
    write_json(root / "annotation" / "attributes.json", attributes_by_video, indent=1)
    for name, ids in split_video_ids(video_ids).items():
        write_text(root / SPLIT_FILES / name, "\n".join(ids))  # no trailing newline, as shipped
    write_json(root / "annotation" / "synthetic.json", params, indent=1)  # last: marks the set complete


def make_tiny_xclip(out_dir, seed=0, num_frames=16):
    """Write a tiny randomly initialised XCLIPModel (loadable with XCLIPModel.from_pretrained) and return its folder.

    Video features are (B, 512) like the real model's; images are 32x32, patches 8x8, 2 vision layers.
    Like any model saved with save_pretrained, it has no preprocessor_config.json: dataset.load_preprocess
    then gives X-CLIP's defaults at the config's image size (32).
    """
    vision_config = dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        # The multi-frame integration transformer runs on the projected features, so it must be 512 wide.
        mit_hidden_size=512, mit_intermediate_size=256, mit_num_hidden_layers=1, mit_num_attention_heads=8,
        image_size=32, patch_size=8, num_frames=int(num_frames))
    text_config = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=77)
    config = XCLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=512,
                         prompt_layers=1, prompt_num_attention_heads=8)
    return save_random_xclip(out_dir, config, seed)


def full_size_xclip_config(num_frames: int = 16):
    """XCLIPConfig of microsoft/xclip-base-patch32-16-frames: transformers' defaults are xclip-base-patch32
    (ViT-B/32 at 224 px: 12 layers of width 768, 12 heads; a 1-layer 512-wide multi-frame transformer;
    2 prompt layers; projection 512; a 12-layer text tower), with 16 frames instead of 8. Random weights of this
    architecture cost what the real ones do (tools/bench, tools/compare)."""
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 224, "patch_size": 32, "num_frames": int(num_frames), "mit_hidden_size": 512,
              "mit_intermediate_size": 2048, "mit_num_hidden_layers": 1, "mit_num_attention_heads": 8}
    text = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 8, "max_position_embeddings": 77}
    return XCLIPConfig(text_config=text, vision_config=vision, projection_dim=512, prompt_layers=2,
                       prompt_num_attention_heads=8)


def save_random_xclip(out_dir, config, seed: int = 0) -> Path:
    """A randomly initialised XCLIPModel of config (seeded without disturbing the caller's RNG), written with
    save_pretrained into out_dir; its files move into place only once all are written. Returns out_dir."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = XCLIPModel(config).eval()
    with temporary_path(out_dir) as scratch:
        model.save_pretrained(scratch)
    return Path(out_dir)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default="data", help="folder that receives MSRVTT/ (default: data)")
    parser.add_argument("--num_videos", type=int, default=300, help="number of clips (default: 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default: 0)")
    parser.add_argument("--task", choices=TASKS, default="simple",
                        help="simple: colour/size/shape/direction; order: two directions or a colour change")
    parser.add_argument("--width", type=int, default=64, help="clip width in pixels, even (default: 64)")
    parser.add_argument("--height", type=int, default=48, help="clip height in pixels, even (default: 48)")
    parser.add_argument("--num_frames", type=int, default=32, help="frames per clip (default: 32)")
    parser.add_argument("--fps", type=int, default=8, help="frames per second (default: 8)")
    parser.add_argument("--tiny_xclip", default="",
                        help="also write a tiny random X-CLIP to this folder ('' = don't)")
    return parser.parse_args(argv)


def main(args) -> int:
    use_warning_lines()
    try:
        data_dir = make_synthetic_msrvtt(args.out_dir, num_videos=args.num_videos, seed=args.seed,
                                         width=args.width, height=args.height, num_frames=args.num_frames,
                                         fps=args.fps, task=args.task)
    except (ValueError, FileExistsError) as error:
        return fail(error)
    print(f"synthetic MSR-VTT ({args.num_videos} clips, task {args.task}) in {Path(data_dir) / 'MSRVTT'}")
    if args.tiny_xclip:
        print(f"tiny X-CLIP in {make_tiny_xclip(args.tiny_xclip, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
