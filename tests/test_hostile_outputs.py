"""Output paths from outside: an output never replaces an input of its run or another output of it, and a folder
holding someone else's files is refused without --overwrite. Each refusal is one `error:` line and exit 2, and every
file that was there before the run keeps its bytes."""
import json
import os

import pytest

import export
import inference
from inputs import one_error, snapshot
from tools import soak


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three synthetic clips, a tiny X-CLIP, a tokenizer and an untrained checkpoint."""
    root = tmp_path_factory.mktemp("hostile_outputs")
    return {**soak.prepare(root, 3, seed=3), "root": root}


def inference_argv(world, video, *extra):
    return ["--model_path", str(world["model_path"]), "--xclip_model", str(world["xclip_model"]), "--device", "cpu",
            "--beam_size", "1", "--max_len", "4", "--video_path", str(video), *extra]


@pytest.fixture
def clip(world, tmp_path):
    """A copy of one clip in a fresh folder, and a symlink and a hard link to it."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(world["videos"][0].read_bytes())
    (tmp_path / "link.mp4").symlink_to(path)
    os.link(path, tmp_path / "hard.mp4")
    return path


@pytest.mark.parametrize("flags", [
    ["--srt", "{clip}"], ["--vtt", "{clip}"], ["--srt", "{dir}/link.mp4"], ["--vtt", "{dir}/hard.mp4"],
    ["--srt", "{dir}/sub/../clip.mp4"], ["--srt", "{dir}/x.txt", "--vtt", "{dir}/x.txt"],
    ["--srt", "{dir}/x.txt", "--vtt", "{dir}/./x.txt"], ["--srt", "{model}"], ["--vtt", "{xclip}/config.json"]])
def test_inference_subtitles_never_replace_an_input_or_each_other(world, clip, flags, capsys):
    values = {"clip": clip, "dir": clip.parent, "model": world["model_path"], "xclip": world["xclip_model"]}
    (clip.parent / "x.txt").write_text("notes\n")
    (clip.parent / "sub").mkdir()
    before = snapshot(clip.parent, world["xclip_model"], world["model_path"].parent)
    argv = inference_argv(world, clip, "--segment_seconds", "1", *[flag.format(**values) for flag in flags])
    assert inference.main(inference.parse_args(argv)) == 2
    one_error(capsys, "pass")
    assert snapshot(clip.parent, world["xclip_model"], world["model_path"].parent) == before


def test_inference_subtitles_to_new_files_still_work(world, clip, capsys):
    argv = inference_argv(world, clip, "--segment_seconds", "1", "--srt", str(clip.parent / "a.srt"),
                          "--vtt", str(clip.parent / "a.vtt"))
    assert inference.main(inference.parse_args(argv)) == 0
    assert (clip.parent / "a.srt").read_text().startswith("1\n") and (clip.parent / "a.vtt").read_text().startswith(
        "WEBVTT")


@pytest.fixture(scope="module")
def exported(world):
    folder = world["root"] / "exported"
    assert export.main(export.parse_args(["--model_path", str(world["model_path"]), "--out_dir", str(folder)])) == 0
    return folder


def export_argv(world, out_dir, *extra):
    return ["--model_path", str(world["model_path"]), "--out_dir", str(out_dir), *extra]


@pytest.mark.parametrize("foreign", ["xclip copy", "config.json only", "model.safetensors only", "README.md only",
                                     "tokenizer.model only", "notes", "folder"])
def test_export_refuses_a_folder_holding_another_model(world, tmp_path, foreign, capsys):
    out_dir = tmp_path / "out"
    if foreign == "xclip copy":
        out_dir = world["xclip_model"]
    else:
        out_dir.mkdir()
        source = {"config.json only": world["xclip_model"] / "config.json",
                  "model.safetensors only": world["xclip_model"] / "model.safetensors"}.get(foreign)
        name = foreign.split()[0]
        if source is not None:
            (out_dir / name).write_bytes(source.read_bytes())
        elif foreign == "folder":
            (out_dir / "runs").mkdir()
        else:
            (out_dir / ("notes.txt" if foreign == "notes" else name)).write_text("someone's file\n")
    before = snapshot(out_dir)
    assert export.main(export.parse_args(export_argv(world, out_dir))) == 2
    one_error(capsys, "--out_dir", "did not write", "--overwrite")
    assert snapshot(out_dir) == before


def test_export_overwrite_writes_its_files_and_keeps_the_rest(world, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("keep me\n")
    assert export.main(export.parse_args(export_argv(world, out_dir, "--overwrite"))) == 0
    assert (out_dir / "notes.txt").read_text() == "keep me\n" and (out_dir / "config.json").is_file()


def test_export_again_into_its_own_folder_needs_no_flag(world, exported, capsys):
    before = snapshot(exported)
    assert export.main(export.parse_args(export_argv(world, exported))) == 0
    assert snapshot(exported) == before  # same checkpoint, same bytes


def test_export_of_a_killed_export_goes_on(world, exported, tmp_path):
    out_dir = tmp_path / "killed"
    out_dir.mkdir()
    for name in ("model.safetensors", "tokenizer.model"):  # config.json is removed first and written last
        (out_dir / name).write_bytes((exported / name).read_bytes())
    (out_dir / ".README.md.tmp1234").write_text("half")
    assert export.main(export.parse_args(export_argv(world, out_dir))) == 0


@pytest.mark.parametrize("case", ["onto itself", "results in out_dir", "file as out_dir"])
def test_export_outputs_never_replace_its_inputs(world, exported, tmp_path, case, capsys):
    if case == "onto itself":
        argv = ["--model_path", str(exported), "--out_dir", str(exported.parent / "x" / ".." / exported.name)]
        words = ["would replace"]
    elif case == "results in out_dir":
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        (out_dir / "README.md").write_text('{"metrics": {"CIDEr": 1.0}}')
        argv = export_argv(world, out_dir, "--results", str(out_dir / "README.md"))
        words = ["would replace", "--results"]
    else:
        (tmp_path / "file").write_text("x")
        argv = export_argv(world, tmp_path / "file")
        words = ["--out_dir"]
    before = snapshot(exported, tmp_path)
    assert export.main(export.parse_args(argv)) == 2
    one_error(capsys, *words)
    assert snapshot(exported, tmp_path) == before


# ---- the other scripts' output flags ---------------------------------------------------------------------------------

def run_main(module, argv, capsys):
    """module.main(argv) -> (exit code, stderr lines without progress bars)."""
    capsys.readouterr()
    code = module.main(module.parse_args(argv))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    return code, lines


@pytest.fixture
def caption_files(tmp_path):
    """Line-aligned hypothesis and reference files, and a captions file (.jsonl) of four videos."""
    (tmp_path / "hyp.txt").write_text("a cat sits\na dog runs\n")
    (tmp_path / "refs.txt").write_text("a cat is sitting\na dog is running\n")
    rows = [{"video": f"v{index}.mp4", "caption": f"a caption number {index}", "split": split}
            for index, split in enumerate(["train", "train", "val", "test"])]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return tmp_path


EVALUATE_CASES = {
    "--out is --hyp": (["--out", "{d}/hyp.txt"], "--hyp"),
    "--report is --refs": (["--report", "{d}/refs.txt"], "--refs"),
    "--out is --report": (["--out", "{d}/r.json", "--report", "{d}/./r.json"], "--report"),
    "--out is a link to --hyp": (["--out", "{d}/link.txt"], "--hyp"),
    "--report through ..": (["--report", "{d}/sub/../refs.txt"], "--refs"),
}


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_outputs_never_replace_its_inputs(caption_files, case, capsys):
    import evaluate
    flags, words = EVALUATE_CASES[case]
    (caption_files / "link.txt").symlink_to(caption_files / "hyp.txt")
    (caption_files / "sub").mkdir()
    before = snapshot(caption_files)
    code, lines = run_main(evaluate, ["--hyp", str(caption_files / "hyp.txt"), "--refs",
                                      str(caption_files / "refs.txt"), "--java", "no", *[flag.format(d=caption_files) for flag in flags]], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert snapshot(caption_files) == before


def test_train_refuses_an_out_dir_of_someone_elses_files(world, caption_files, tmp_path, capsys):
    import train
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    (out_dir / "paper.tex").write_text("\\section{Results}\n")
    before = snapshot(tmp_path)
    code, lines = run_main(train, ["--annotations", str(caption_files / "captions.jsonl"), "--tokenizer_path",
                                   str(tmp_path / "absent.model"), "--out_dir", str(out_dir)], capsys)
    assert code == 2 and len(lines) == 1 and "paper.tex" in lines[0] and "--overwrite" in lines[0], lines
    assert snapshot(tmp_path) == before


def test_train_outputs_never_replace_its_inputs(caption_files, tmp_path, capsys):
    import train
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "log.jsonl").symlink_to(caption_files / "captions.jsonl")  # a run's log that is the captions file
    before = snapshot(tmp_path)
    code, lines = run_main(train, ["--annotations", str(caption_files / "captions.jsonl"), "--out_dir", str(out_dir),
                                   "--overwrite"], capsys)
    assert code == 2 and len(lines) == 1 and "would replace --annotations" in lines[0], lines
    assert snapshot(tmp_path) == before


def test_create_tokenizer_never_writes_over_its_annotations(caption_files, capsys):
    import create_tokenizer
    (caption_files / "tok.model").symlink_to(caption_files / "captions.jsonl")
    before = snapshot(caption_files)
    code, lines = run_main(create_tokenizer, ["--annotations", str(caption_files / "captions.jsonl"), "--out_prefix",
                                              str(caption_files / "tok"), "--vocab_size", "280"], capsys)
    assert code == 2 and len(lines) == 1 and "--out_prefix" in lines[0] and "annotations" in lines[0], lines
    assert snapshot(caption_files) == before


def test_curves_never_draws_over_a_log(tmp_path, capsys):
    import curves
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"epoch": 1, "train_loss": 3.0, "val_loss": 3.1, "val": {"CIDEr": 0.1}}) + "\n")
    before = snapshot(tmp_path)
    code, lines = run_main(curves, [str(log), "--out", str(tmp_path / "." / "log.jsonl")], capsys)
    assert code == 2 and len(lines) == 1 and "would replace log" in lines[0], lines
    assert snapshot(tmp_path) == before


def test_captions_file_never_writes_over_the_annotations_it_reads(caption_files, capsys):
    from tools import captions_file
    before = snapshot(caption_files)
    code, lines = run_main(captions_file, ["--annotations", str(caption_files / "captions.jsonl"), "--out",
                                           str(caption_files / "sub" / ".." / "captions.jsonl")], capsys)
    assert code == 2 and len(lines) == 1 and "would replace the annotations" in lines[0], lines
    assert snapshot(caption_files) == before


@pytest.mark.parametrize("case", ["folder of someone's files", "a video file", "a cache folder with other files"])
def test_encode_cache_dir_holds_caches_only(world, tmp_path, case, capsys):
    import encode
    cache_dir = tmp_path / "cache"
    if case == "folder of someone's files":
        cache_dir.mkdir()
        (cache_dir / "thesis.pdf").write_bytes(b"%PDF")
    elif case == "a video file":
        cache_dir = tmp_path / "clip.mp4"
        cache_dir.write_bytes(world["videos"][0].read_bytes())
    else:  # the folder the cache would be made in already holds another tool's files
        assert encode.main(encode.parse_args(["--video_path", str(world["videos"][0]), "--xclip_model",
                                              str(world["xclip_model"]), "--cache_dir", str(cache_dir),
                                              "--num_workers", "0"])) == 0
        (folder,) = cache_dir.iterdir()
        (folder / "meta.json").unlink()
        (folder / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    code, lines = run_main(encode, ["--video_path", str(world["videos"][1]), "--xclip_model", str(world["xclip_model"]),
                                    "--cache_dir", str(cache_dir), "--num_workers", "0"], capsys)
    assert code == 2 and len(lines) == 1 and "--cache_dir" in lines[0], lines
    assert snapshot(tmp_path) == before


def test_dataset_save_never_writes_over_the_video(world, clip, capsys):
    import dataset
    before = snapshot(clip.parent)
    for target in (clip, clip.parent / "link.mp4"):
        code, lines = run_main(dataset, ["--video_path", str(clip), "--num_frames", "2", "--image_size", "32",
                                         "--save", str(target)], capsys)
        assert code == 2 and len(lines) == 1 and "would replace --video_path" in lines[0], lines
    assert snapshot(clip.parent) == before
