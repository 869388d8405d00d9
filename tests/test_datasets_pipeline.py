"""Every kind of dataset end to end: tokenizer, cache or precomputed features, train, evaluate, inference.

MSVD on its six real clips (skipped without ../shared), a captions file of synthetic clips without a split
column, and the real MSR-VTT features of ../shared/realdata/features (skipped without it)."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import create_tokenizer
import evaluate
import inference
import train
from checkpoint import load_checkpoint
from synthetic import make_synthetic_msrvtt, make_tiny_xclip

SMALL_DECODER = ["--batch_size", "32", "--embed_dim", "32", "--hidden_dim", "64", "--num_layers", "1",
                 "--dropout", "0.1", "--warmup_steps", "10", "--learning_rate", "3e-3", "--num_workers", "0",
                 "--beam_size", "2", "--patience", "0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: two threads only wait for each other


def make_tokenizer(data_flags, out_prefix, vocab_size=300):
    assert create_tokenizer.main(create_tokenizer.parse_args([*data_flags, "--vocab_size", str(vocab_size),
                                                              "--out_prefix", str(out_prefix)])) == 0
    return Path(f"{out_prefix}.model")


def evaluate_json(flags, tmp_path, name="results.json"):
    out = tmp_path / name
    assert evaluate.main(evaluate.parse_args([*flags, "--java", "no", "--out", str(out)])) == 0
    return json.loads(out.read_text())


def msvd_layout(realdata, root):
    """The six real MSVD clips as an MSVD dataset: YouTubeClips/, the mapping, the S2VT captions of these clips."""
    clips = sorted((realdata / "msvd" / "clips").glob("*.avi"))
    (root / "YouTubeClips").mkdir(parents=True)
    for clip in clips:
        shutil.copy(clip, root / "YouTubeClips" / clip.name)
    mapping = (realdata / "msvd" / "youtube_mapping.txt").read_text()
    shutil.copy(realdata / "msvd" / "youtube_mapping.txt", root / "youtube_mapping.txt")
    vids = {line.split()[1] for line in mapping.splitlines() if line.split() and line.split()[0] in
            {clip.stem for clip in clips}}
    for split in ("train", "val", "test"):
        lines = (realdata / "msvd" / f"sents_{split}_lc_nopunc.txt").read_text().splitlines()
        (root / f"sents_{split}_lc_nopunc.txt").write_text(
            "".join(line + "\n" for line in lines if line.split("\t")[0] in vids))
    return root


def test_msvd_six_real_clips_end_to_end(realdata, tmp_path, capsys):
    data = msvd_layout(realdata, tmp_path / "msvd")
    xclip = make_tiny_xclip(tmp_path / "xclip")
    data_flags = ["--dataset", "msvd", "--data_dir", str(data)]
    tokenizer = make_tokenizer(data_flags, tmp_path / "tokenizer", vocab_size=300)
    run = ["--xclip_model", str(xclip), "--cache_dir", str(tmp_path / "cache")]
    assert train.main(train.parse_args([*data_flags, *run, "--tokenizer_path", str(tokenizer), "--out_dir",
                                        str(tmp_path / "models"), "--epochs", "2", *SMALL_DECODER])) == 0
    checkpoint = load_checkpoint(tmp_path / "models" / "best.pt")
    assert checkpoint["data"]["dataset"] == "msvd" and checkpoint["data"]["scheme"] == "standard"
    # evaluate.py takes the dataset from the checkpoint when its flags are left out
    result = evaluate_json(["--model_path", str(tmp_path / "models" / "best.pt"), "--data_dir", str(data), *run,
                            "--num_workers", "0", "--beam_size", "2"], tmp_path)
    assert len(result["predictions"]) == 2 and "CIDEr" in result["metrics"]
    capsys.readouterr()
    clip = next(p["video_id"] for p in result["predictions"])
    assert inference.main(inference.parse_args(["--model_path", str(tmp_path / "models" / "best.pt"),
                                                "--xclip_model", str(xclip), "--beam_size", "2", "--video_path",
                                                str(data / "YouTubeClips" / f"{clip}.avi")])) == 0
    assert capsys.readouterr().out.strip() == next(p["caption"] for p in result["predictions"]
                                                   if p["video_id"] == clip)


def test_captions_file_of_synthetic_clips_without_split_trains_and_evaluates(tmp_path):
    make_synthetic_msrvtt(tmp_path / "synthetic", num_videos=30, seed=4, progress=False)
    messy = json.loads((tmp_path / "synthetic" / "MSRVTT" / "annotation" / "MSR_VTT.json").read_text())
    rows = [{"video": f"synthetic/MSRVTT/videos/all/{entry['image_id']}.mp4", "caption": entry["caption"]}
            for entry in messy["annotations"]]
    annotations = tmp_path / "mine.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data_flags = ["--dataset", "captions", "--annotations", str(annotations)]
    tokenizer = make_tokenizer(data_flags, tmp_path / "tokenizer")
    xclip = make_tiny_xclip(tmp_path / "xclip")
    run = ["--xclip_model", str(xclip), "--cache_dir", str(tmp_path / "cache")]
    assert train.main(train.parse_args([*data_flags, *run, "--tokenizer_path", str(tokenizer), "--out_dir",
                                        str(tmp_path / "models"), "--epochs", "2", *SMALL_DECODER])) == 0
    split = json.loads((tmp_path / "mine.splits.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (24, 3, 3)
    result = evaluate_json(["--model_path", str(tmp_path / "models" / "best.pt"), "--annotations", str(annotations),
                            *run, "--num_workers", "0"], tmp_path)
    assert [p["video_id"] for p in result["predictions"]] == split["test"]
    assert load_checkpoint(tmp_path / "models" / "best.pt")["data"]["annotations"] == "mine.jsonl"


# ---- precomputed features ------------------------------------------------------------------------------------------

def features_run(realdata, tmp_path, run_cli):
    """A decoder trained on the real VGG features of MSR-VTT video0-499, captions from MSR-VTT, split by video."""
    features = realdata / "features" / "msrvtt_vggae"
    annotations = tmp_path / "msrvtt500.jsonl"
    assert run_cli("tools/captions_file.py", "--data_dir", realdata / "msrvtt", "--with_features", features,
                   "--out", annotations).returncode == 0
    data_flags = ["--dataset", "captions", "--annotations", str(annotations)]
    # The first reader draws the split and saves it beside the file: 350 / 50 / 100 videos, so that the test
    # split's CIDEr is not down to a few videos.
    tokenizer = make_tokenizer([*data_flags, "--split_fractions", "0.7", "0.1", "0.2"], tmp_path / "tokenizer",
                               vocab_size=600)
    flags = [*data_flags, "--features", str(features), "--tokenizer_path", str(tokenizer), "--out_dir",
             str(tmp_path / "models"), "--epochs", "12", "--batch_size", "128", "--embed_dim", "64", "--hidden_dim",
             "128", "--num_layers", "1", "--dropout", "0.2", "--warmup_steps", "20", "--learning_rate", "5e-3",
             "--beam_size", "2", "--patience", "0"]
    assert train.main(train.parse_args(flags)) == 0
    return annotations, features


@pytest.mark.slow
def test_features_train_evaluate_and_beat_their_controls(realdata, tmp_path, capsys, run_cli):
    annotations, features = features_run(realdata, tmp_path, run_cli)
    checkpoint = load_checkpoint(tmp_path / "models" / "best.pt")
    assert checkpoint["encoder"]["kind"] == "features" and checkpoint["encoder"]["shape"] == [50, 128]
    assert checkpoint["data"]["features"] == {"folder": "msrvtt_vggae", "shape": [50, 128]}
    flags = ["--model_path", str(tmp_path / "models" / "best.pt"), "--annotations", str(annotations),
             "--features", str(features), "--split", "test"]
    scores = {control: evaluate_json([*flags, "--control", control, "--beam_size", "2"], tmp_path,
                                     f"{control}.json")["metrics"]["CIDEr"] for control in ("none", "shuffled", "zeros")}
    assert scores["none"] > 1.4 * max(scores["shuffled"], scores["zeros"]), scores
    # The same checkpoint given a video: one line saying it needs features.
    capsys.readouterr()
    assert inference.main(inference.parse_args(["--model_path", str(tmp_path / "models" / "best.pt"),
                                                "--video_path", str(tmp_path / "any.mp4")])) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "needs precomputed features" in lines[0]
    # evaluate.py without --features on it: one line too.
    assert evaluate.main(evaluate.parse_args(flags[:4] + ["--java", "no"])) == 2
    assert "pass --features DIR" in capsys.readouterr().err


@pytest.mark.parametrize("bad, words", [(np.zeros((2, 3, 4), np.float32), "shape (2, 3, 4)"),
                                        (np.zeros(7, np.float32), "same feature size"),
                                        (b"not an array", "not a readable .npy")])
def test_a_bad_feature_file_is_one_line_exit_2(tmp_path, capsys, bad, words):
    folder = tmp_path / "features"
    folder.mkdir()
    rows = []
    for n in range(10):
        np.save(folder / f"v{n}.npy", np.random.default_rng(n).normal(size=(4, 8)).astype(np.float32))
        rows += [{"video": f"v{n}", "caption": f"a caption about clip {n}"}]
    if isinstance(bad, bytes):
        (folder / "v3.npy").write_bytes(bad)
    else:
        np.save(folder / "v3.npy", bad)
    annotations = tmp_path / "c.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokenizer = make_tokenizer(["--annotations", str(annotations)], tmp_path / "tok", vocab_size=280)
    code = train.main(train.parse_args(["--annotations", str(annotations), "--features", str(folder),
                                        "--tokenizer_path", str(tokenizer), "--out_dir", str(tmp_path / "m"),
                                        "--epochs", "1", *SMALL_DECODER]))
    lines = [line for line in capsys.readouterr().err.splitlines() if not re.match(r"^[\w ]+: +\d+%\|", line)]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines


def test_a_dataset_folder_without_videos_is_one_line_exit_2(tmp_path, capsys):
    make_synthetic_msrvtt(tmp_path / "data", num_videos=6, seed=1, progress=False)
    shutil.rmtree(tmp_path / "data" / "MSRVTT" / "videos")
    tokenizer = make_tokenizer(["--data_dir", str(tmp_path / "data")], tmp_path / "tok", vocab_size=300)
    code = train.main(train.parse_args(["--data_dir", str(tmp_path / "data"), "--tokenizer_path", str(tokenizer),
                                        "--out_dir", str(tmp_path / "m"), "--epochs", "1", *SMALL_DECODER]))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "none of the 6 listed videos found" in lines[0], lines


def test_vatex_layout_of_synthetic_clips_end_to_end(tmp_path):
    """VATEX's official files over synthetic clips named as VATEX names them (some without zero padding)."""
    make_synthetic_msrvtt(tmp_path / "synthetic", num_videos=15, seed=6, progress=False)
    annotation = json.loads((tmp_path / "synthetic" / "MSRVTT" / "annotation" / "MSR_VTT.json").read_text())
    captions = {}
    for entry in annotation["annotations"]:
        captions.setdefault(entry["image_id"], []).append(entry["caption"])
    data = tmp_path / "vatex"
    (data / "clips").mkdir(parents=True)
    parts = {"training": [], "validation": [], "public_test_english": []}
    for n, (source, its_captions) in enumerate(sorted(captions.items())):
        video_id = f"yt-{n}_x_{n:06d}_{n + 10:06d}"
        name = f"yt-{n}_x_{n}_{n + 10}.mp4" if n % 2 else f"{video_id}.mp4"
        shutil.copy(tmp_path / "synthetic" / "MSRVTT" / "videos" / "all" / f"{source}.mp4", data / "clips" / name)
        part = "training" if n < 11 else "validation" if n < 13 else "public_test_english"
        parts[part].append({"videoID": video_id, "enCap": its_captions, "chCap": ["一个视频"] * 2})
    for part, entries in parts.items():
        (data / f"vatex_{part}_v1.0.json").write_text(json.dumps(entries, ensure_ascii=False))
    data_flags = ["--data_dir", str(data)]  # detected as VATEX
    tokenizer = make_tokenizer(data_flags, tmp_path / "tokenizer")
    xclip = make_tiny_xclip(tmp_path / "xclip")
    run = ["--xclip_model", str(xclip), "--cache_dir", str(tmp_path / "cache")]
    assert train.main(train.parse_args([*data_flags, *run, "--tokenizer_path", str(tokenizer), "--out_dir",
                                        str(tmp_path / "models"), "--epochs", "1", *SMALL_DECODER])) == 0
    assert load_checkpoint(tmp_path / "models" / "best.pt")["data"]["dataset"] == "vatex"
    result = evaluate_json(["--model_path", str(tmp_path / "models" / "best.pt"), *data_flags, *run,
                            "--num_workers", "0"], tmp_path)
    assert [p["video_id"] for p in result["predictions"]] == ["yt-13_x_000013_000023", "yt-14_x_000014_000024"]
