"""Output flags of the measurement scripts in tools/: a scratch folder holding files the tool did not write is refused
without --overwrite, and a JSON or PNG output never replaces an input of its run or another output of it. Each
refusal is one `error:` line and exit 2 before any work, and every file that was there before keeps its bytes. Where
a folder is accepted, the tool's first piece of work is replaced by a stand-in: no benchmark runs here."""

import pytest

from inputs import one_error, snapshot
from tools import bench_gpu, compare, hostile_load, scst_bench, soak
from tools.bench import cli as bench_cli
from tools.scratch import check_scratch_folder, make_scratch_folder


class Reached(Exception):
    """Raised by the stand-in for a tool's first piece of work: the checks let the run through."""


def stand_in(*args, **kwargs):
    raise Reached


# tool -> (its marker's name, how to run it on a scratch folder, its first piece of work, a name its earlier versions
# left in their folders)
TOOLS = {
    "tools.bench": ("tools.bench", lambda folder, *extra: bench_cli.main(bench_cli.parse_args(
        ["--work_dir", str(folder), "--out", str(folder / "results.json"), "--quick", "--encoder", "tiny", *extra])),
        (bench_cli, "run_stage_process"), "workspace.json"),
    "bench_gpu": ("bench_gpu", lambda folder, *extra: bench_gpu.main(bench_gpu.parse_args(
        ["--out_dir", str(folder), "--device", "cpu", "--quick", *extra])), (bench_gpu, "Bench"), "results.json"),
    "compare": ("compare", lambda folder, *extra: compare.main(compare.parse_args(
        ["--out_dir", str(folder), "--parts", "views", *extra])), (compare, "compare_views"), "views"),
    "hostile_load": ("hostile_load", lambda folder, *extra: hostile_load.main(["--out_dir", str(folder), *extra]),
                     (hostile_load, "prepare"), "exported"),
    "soak": ("soak", lambda folder, *extra: soak.main(soak.parse_args(["--out_dir", str(folder), *extra])),
             (soak, "prepare"), "untrained.pt"),
}


@pytest.fixture
def foreign(tmp_path):
    """A folder holding someone's model and notes."""
    folder = tmp_path / "theirs"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "xclip"}\n')
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub" / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.mark.parametrize("tool", TOOLS)
def test_a_scratch_folder_holding_foreign_files_is_refused(tool, foreign, monkeypatch, capsys):
    marker, run, (module, work), _ = TOOLS[tool]
    monkeypatch.setattr(module, work, stand_in)
    before = snapshot(foreign)
    assert run(foreign) == 2
    one_error(capsys, str(foreign), "config.json", "notes.txt", "--overwrite")
    assert snapshot(foreign) == before and not (foreign / f".made_by_{marker}").exists()


@pytest.mark.parametrize("tool", TOOLS)
def test_a_scratch_folder_that_is_a_file_is_refused(tool, tmp_path, monkeypatch, capsys):
    _, run, (module, work), _ = TOOLS[tool]
    monkeypatch.setattr(module, work, stand_in)
    path = tmp_path / "results.txt"
    path.write_text("someone's results\n")
    assert run(path) == 2
    one_error(capsys, str(path), "not a folder")
    assert path.read_text() == "someone's results\n"


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("state", ["missing", "empty", "marked", "earlier version", "overwrite"])
def test_the_tools_own_folder_is_accepted_and_marked(tool, state, tmp_path, foreign, monkeypatch):
    marker, run, (module, work), earlier = TOOLS[tool]
    monkeypatch.setattr(module, work, stand_in)
    folder = foreign if state == "overwrite" else tmp_path / "scratch"
    if state != "missing" and state != "overwrite":
        folder.mkdir()
    if state == "marked":
        (folder / f".made_by_{marker}").write_text("")
        (folder / "clips").mkdir()
        (folder / "clips" / "video0.mp4").write_bytes(b"a clip")
    if state == "earlier version":
        (folder / earlier).mkdir() if "." not in earlier else (folder / earlier).write_text("{}\n")
        (folder / "tokenizer.model").write_bytes(b"an earlier run's")
    before = snapshot(folder) if folder.exists() else {}
    with pytest.raises(Reached):
        run(folder, *(["--overwrite"] if state == "overwrite" else []))
    assert (folder / f".made_by_{marker}").is_file()
    assert snapshot(folder) == {**before, folder / f".made_by_{marker}": (folder / f".made_by_{marker}").read_bytes()}


def test_a_marker_of_another_tool_does_not_make_a_folder_ours(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hostile_load, "prepare", stand_in)
    folder = make_scratch_folder(tmp_path / "soak", "--out_dir", "soak")
    (folder / "long-1min.mp4").write_bytes(b"soak's clip")
    before = snapshot(folder)
    assert hostile_load.main(["--out_dir", str(folder)]) == 2
    one_error(capsys, "--out_dir", ".made_by_soak", "long-1min.mp4")
    assert snapshot(folder) == before


def test_bench_results_never_replace_the_workspace_manifest(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_cli, "run_stage_process", stand_in)
    (tmp_path / "workspace.json").write_text('{"clips": []}\n')
    before = snapshot(tmp_path)
    argv = ["--work_dir", str(tmp_path), "--out", str(tmp_path / "workspace.json"), "--quick"]
    assert bench_cli.main(bench_cli.parse_args(argv)) == 2
    one_error(capsys, "--out", "workspace.json", "--work_dir")
    assert snapshot(tmp_path) == before


@pytest.fixture
def inputs(tmp_path):
    """Files a run reads: clips, a tokenizer, captions, a checkpoint, an X-CLIP folder."""
    (tmp_path / "videos").mkdir()
    (tmp_path / "xclip").mkdir()
    files = {"clip": tmp_path / "videos" / "clip.mp4", "tokenizer": tmp_path / "tok.model",
             "captions": tmp_path / "captions.jsonl", "model": tmp_path / "model.pt",
             "xclip": tmp_path / "xclip", "config": tmp_path / "xclip" / "config.json", "dir": tmp_path}
    for name in ("clip", "tokenizer", "captions", "model", "config"):
        files[name].write_bytes(f"the {name}".encode())
    return files


@pytest.mark.parametrize("flags, words", [
    (["--out", "{dir}/r.json", "--markdown", "{dir}/r.json"], ["--markdown", "--out"]),
    (["--out", "{dir}/videos/clip.mp4"], ["--out", "--real_videos"]),
    (["--markdown", "{config}", "--real_xclip", "{xclip}"], ["--markdown", "--real_xclip"])])
def test_compare_outputs_never_replace_an_input_or_each_other(inputs, flags, words, monkeypatch, capsys):
    monkeypatch.setattr(compare, "compare_views", stand_in)
    before = snapshot(inputs["dir"])
    argv = ["--out_dir", str(inputs["dir"] / "runs"), "--parts", "real", "--real_videos", str(inputs["dir"] / "videos"),
            *[flag.format(**inputs) for flag in flags]]
    assert compare.main(compare.parse_args(argv)) == 2
    one_error(capsys, *words)
    assert snapshot(inputs["dir"]) == before


@pytest.mark.parametrize("flags, words", [
    (["--json", "{tokenizer}", "--tokenizer_path", "{tokenizer}"], ["--json", "--tokenizer_path"]),
    (["--json", "{captions}", "--annotations", "{captions}"], ["--json", "--annotations"]),
    (["--json", "{model}", "--init", "{model}"], ["--json", "--init"]),
    (["--json", "{dir}/./tok.model", "--tokenizer_path", "{tokenizer}"], ["--json", "--tokenizer_path"]),
    (["--json", "{config}", "--xclip_model", "{xclip}"], ["--json", "--xclip_model"])])
def test_scst_bench_json_never_replaces_an_input(inputs, flags, words, monkeypatch, capsys):
    monkeypatch.setattr(scst_bench, "bench", stand_in)
    before = snapshot(inputs["dir"])
    assert scst_bench.main([flag.format(**inputs) for flag in flags]) == 2
    one_error(capsys, *words)
    assert snapshot(inputs["dir"]) == before


@pytest.mark.parametrize("out, words", [
    ("{model}", ["--out", "--model_path"]), ("{clip}", ["--out", "--videos"]),
    ("{config}", ["--out", "--xclip_model"])])
def test_the_demo_screenshot_never_replaces_an_input(inputs, out, words, monkeypatch, capsys):
    pytest.importorskip("PIL")
    from tools import screenshot_demo

    monkeypatch.setattr(screenshot_demo, "join_clips", stand_in)
    before = snapshot(inputs["dir"])
    argv = ["--model_path", str(inputs["model"]), "--xclip_model", str(inputs["xclip"]),
            "--videos", str(inputs["clip"]), "--out", out.format(**inputs)]
    assert screenshot_demo.main(screenshot_demo.parse_args(argv)) == 2
    one_error(capsys, *words)
    assert snapshot(inputs["dir"]) == before


def test_check_scratch_folder_names_at_most_three_foreign_files(tmp_path):
    for name in ("a", "b", "c", "d", "e"):
        (tmp_path / name).write_text(name)
    with pytest.raises(Exception, match=r"a, b, c and 2 more"):
        check_scratch_folder(tmp_path, "--out_dir", "soak")
