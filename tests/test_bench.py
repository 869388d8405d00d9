"""tools/bench at minimal sizes: the workspace it makes, each stage's result structure, the targets and the table.
Timings are not asserted (this machine is shared); what is asserted is what the numbers are made of."""
import json
import math
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from common import write_json
from dataset import Preprocess, decode_sampled_frames, read_video
from tools.bench import captioning, cli, encoding, evaluation, report, sampling, training
from tools.bench import workspace as workspace_module

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny X-CLIP, one 1-second 320x240 clip, a 400-piece tokenizer and an untrained checkpoint."""
    work_dir = tmp_path_factory.mktemp("bench")
    return workspace_module.prepare_workspace(work_dir, encoder="tiny", clip_seconds=1.0, msrvtt_clips=1, hd_clip=False,
                                   vocab_size=400, checkpoint_batches=0, log=lambda text: None)


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here on one torch thread (conftest.one_torch_thread)."""


def finite_positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_help_is_fast_and_importing_bench_loads_no_heavy_module():
    completed = subprocess.run([sys.executable, "-m", "tools.bench", "--help"], cwd=REPO, capture_output=True,
                               text=True)
    assert completed.returncode == 0 and "--quick" in completed.stdout
    probe = ("import sys; import tools.bench.cli; "
             "print(sorted({'torch', 'transformers', 'av', 'numpy'} & set(sys.modules)))")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert completed.stdout.strip() == "[]", completed.stderr


def test_bench_clip_is_lossy_h264_with_b_frames_and_a_keyframe_interval(tmp_path):
    path = workspace_module.write_bench_clip(tmp_path / "clip.mp4", 96, 64, seconds=2.0, fps=30, keyframe_interval=20, seed=1)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (96, 64)
        packets = [packet for packet in container.demux(stream) if packet.size]
    assert len(packets) == 60
    keyframes = [index for index, packet in enumerate(packets) if packet.is_keyframe]
    assert keyframes[0] == 0 and 3 <= len(keyframes) <= 6  # every 20 frames (scene cuts may add one)
    decode_order_pts = [packet.pts for packet in packets]
    assert decode_order_pts != sorted(decode_order_pts)  # B-frames: decode order differs from presentation order
    assert not list(tmp_path.glob(".*tmp*"))  # written under a temporary name, then renamed


def test_skipping_unreferenced_frames_gives_the_same_frames_from_fewer_decoded(tmp_path):
    """read_video's speed-up (the decoder skips unsampled non-reference frames) must not change a single pixel."""
    path = workspace_module.write_bench_clip(tmp_path / "clip.mp4", 160, 120, seconds=3.0, keyframe_interval=30, seed=2)
    frame_indices = [5, 17, 40, 41, 63, 88]
    preprocess = Preprocess()
    decoded = {}
    for mode in ("counting", "by_pts"):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frame_pts = sorted(packet.pts for packet in container.demux(stream) if packet.size)
            container.seek(0)
            decoded[mode] = decode_sampled_frames(container.demux(stream), frame_indices, preprocess,
                                                  frame_pts if mode == "by_pts" else None)
    assert decoded["counting"].filled.all() and decoded["by_pts"].filled.all()
    assert np.array_equal(decoded["counting"].frames, decoded["by_pts"].frames)
    seen = (decoded["by_pts"].frames_seen, decoded["counting"].frames_seen)
    assert seen[0] == seen[1] >= 89, seen
    frames, info = read_video(path, num_frames=16)
    last_index = max(info["frame_indices"])
    table = sampling.frames_by_pts(path, info["frame_indices"])
    assert sampling.decode_floor(path, last_index, "SLICE", table) < sampling.decode_floor(path, last_index, "SLICE")


def test_sampling_stage_reports_floors_the_original_way_and_memory(workspace):
    clip = workspace["clips"]["320x240"][0]
    result = sampling.bench_sampling({"320x240": ([clip], 1)})["320x240"]
    for key in ("read_video_s", "floor_s", "skipping_floor_s", "original_s", "ratio_to_floor",
                "ratio_to_skipping_floor", "speedup_vs_original", "read_video_peak_rss_mib", "original_peak_rss_mib",
                "full_decode_s", "ratio_to_full_decode"):
        assert finite_positive(result[key]), key
    assert result["ratio_to_floor"] == pytest.approx(result["read_video_s"] / result["floor_s"])
    assert result["full_decode_s"] == min(result["full_by_threading_s"].values())
    assert set(result["read_by_threading_s"]) == set(sampling.THREADINGS) and result["read_threading"] == "slice"
    assert result["frames_in_stream"] == 30 and result["last_sampled_index"] == 29
    assert result["frames_decoded_skipping"] < result["last_sampled_index"] + 1
    assert result["floor_threading"] in ("slice", "frame")
    assert all(len(run["runs_s"]) == 1 for run in result["runs"].values())


def test_original_way_matches_read_video_frames(workspace):
    """The baseline must do the same job: X-CLIP's preprocessing of 16 frames (the frames chosen differ a little)."""
    clip = workspace["clips"]["320x240"][0]
    original = sampling.original_sampling(clip, sampling.original_processor())
    ours, _ = read_video(clip)
    assert original.shape == ours.shape == (16, 3, 224, 224)
    assert abs(float(original.mean()) - float(ours.mean())) < 0.05


def test_encoding_stage_compares_the_pipeline_with_the_encoder_alone(workspace, tmp_path):
    clip = workspace["clips"]["320x240"][0]
    result = encoding.bench_encoding(workspace["xclip"], [clip], num_videos=3, batch_size=2, num_workers=1,
                                  repeats=1, ready_repeats=1, work_dir=tmp_path)
    assert result["pipeline_to_ready"] == pytest.approx(
        result["pipeline_fp32_videos_per_s"] / result["ready_fp32_videos_per_s"])
    assert result["bf16_speedup"] == pytest.approx(result["ready_bf16_videos_per_s"] / result["ready_fp32_videos_per_s"])
    assert 0.9 < result["bf16_cosine_min"] <= result["bf16_cosine_mean"] <= 1.0 + 1e-6
    for key in ("encoder_load_s", "decode_one_video_s", "fp32_peak_rss_mib", "bf16_peak_rss_mib"):
        assert finite_positive(result[key]), key
    assert not [path for path in tmp_path.iterdir()]  # the scratch caches are removed


def test_training_stage_runs_the_real_run_epoch(monkeypatch):
    import train
    calls = []
    real_run_epoch = train.run_epoch

    def counting_run_epoch(*args, **kwargs):
        calls.append(len(args[3]))  # the caption rows of this call
        return real_run_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "run_epoch", counting_run_epoch)
    result = training.bench_training(num_batches=3, repeats=2, vocab_size=300, batch_size=8, num_videos=10,
                                  epoch_captions=1000, one_thread=False)
    assert calls == [16, 16, 24, 24, 24, 24]  # each way: a 2-batch warm-up, then two timed passes over 3 batches
    assert result["epoch_s"] == pytest.approx(1000 / result["captions_per_s"])
    assert result["speedup_vs_today"] == pytest.approx(result["captions_per_s"] / result["today_captions_per_s"])
    assert len(result["runs_s"]["today"]) == len(result["runs_s"]["new"]) == 2
    assert 0 <= result["bucketed_padding_share"] < result["padding_share"] < 1


def test_training_loss_is_compared_after_the_same_epochs_each_way():
    from model import DecoderConfig
    train_split, val_split = training.synthetic_splits(10, 4, vocab_size=100)
    assert len(train_split[2]) == 32 and len(val_split[2]) == 8 and val_split[1].max() == 1
    config = DecoderConfig(vocab_size=100, embed_dim=16, hidden_dim=32, num_layers=1)
    result = training.val_loss_both_ways(train_split, val_split, config, epochs=1, batch_size=8)
    assert result["relative_change"] == pytest.approx(result["val_loss"] / result["today_val_loss"] - 1)
    assert abs(result["relative_change"]) < 0.05


@pytest.mark.slow
def test_pipeline_threading_and_folder_stages(workspace, tmp_path):
    clip = workspace["clips"]["320x240"][0]
    pipeline = sampling.pipeline_threading([clip] * 2, repeats=1, batch_size=1, num_workers=1)
    assert set(pipeline["seconds"]) == {"rule", "slice", "frame"} and all(map(finite_positive, pipeline["seconds"].values()))
    folder = tmp_path / "folder"
    folder.mkdir()
    for index in range(2):
        (folder / f"{index}.mp4").symlink_to(clip)
    result = captioning.bench_folder(workspace["xclip"], workspace["checkpoint"], folder, repeats=1, beam_size=2,
                                work_dir=tmp_path)
    assert result["videos"] == 2 and result["inference_to_encode"] == pytest.approx(
        result["inference_s"] / result["encode_s"])
    assert [path.name for path in tmp_path.iterdir()] == ["folder"]  # its scratch cache is removed


def test_caption_rows_look_like_encoded_msrvtt_captions():
    rows = training.synthetic_caption_rows(2000, vocab_size=10000, max_len=30)
    assert rows.shape == (2000, 31) and (rows[:, 0] == 2).all()
    lengths = (rows != 0).sum(1)  # BOS + pieces + EOS
    assert 10 <= lengths.mean() <= 16 and lengths.max() <= 31
    assert ((rows == 3).sum(1) == 1).all()  # one EOS each


@pytest.mark.slow
def test_evaluation_and_inference_stages(workspace):
    evaluated = evaluation.bench_evaluation(workspace["checkpoint"], num_latents=6, single_videos=2, beam_size=2,
                                       max_len=5, batch_size=4)
    assert evaluated["batched_to_single"] == pytest.approx(
        evaluated["batched_captions_per_s"] / evaluated["single_captions_per_s"])
    inference = captioning.bench_inference(workspace["checkpoint"], workspace["clips"]["320x240"][0], repeats=1)
    stages = inference["decode_s"] + inference["encode_s"] + inference["generate_s"]
    assert inference["startup_s"] == pytest.approx(inference["total_s"] - stages, abs=1e-3)
    assert inference["generate_share"] == pytest.approx(inference["generate_s"] / inference["total_s"])
    for key in ("help_s", "import_floor_s", "peak_rss_mib"):
        assert finite_positive(float(inference[key])), key


def test_workspace_is_made_once_and_reused(workspace):
    paths = [Path(workspace["xclip"]) / "config.json", Path(workspace["tokenizer"]), Path(workspace["checkpoint"])]
    stamps = [path.stat().st_mtime_ns for path in paths]
    work_dir = Path(workspace["tokenizer"]).parent
    again = workspace_module.prepare_workspace(work_dir, encoder="tiny", clip_seconds=1.0, msrvtt_clips=1, hd_clip=False,
                                    vocab_size=400, checkpoint_batches=0, log=lambda text: pytest.fail(text))
    assert again == workspace and [path.stat().st_mtime_ns for path in paths] == stamps


def fake_results(sampling_ratio, pipeline_ratio, generate_share):
    results = {
        "sampling": {"320x240": {"ratio_to_floor": sampling_ratio, "speedup_vs_original": 4.0, "original_s": 0.4},
                     "1280x720": {"ratio_to_floor": 1.0, "speedup_vs_original": 3.5, "original_s": 2.0}},
        "encoding": {"pipeline_to_ready": pipeline_ratio, "encode_one_video_s": 1.0},
        "training": {"epoch_s": 100.0, "epoch_captions": 130_000},
        "inference": {"generate_share": generate_share, "help_s": 0.05},
        "evaluation": {"batched_to_single": 20.0},
    }
    training.add_original_training(results)
    return results


def test_targets_say_which_hold():
    results = fake_results(sampling_ratio=1.29, pipeline_ratio=0.95, generate_share=0.02)
    holds = {row["target"]: row["holds"] for row in report.targets(results)}
    assert len(holds) == 8 and all(holds.values())
    # 130,000 captions x (0.4 s original sampling + 1 s encoding) + the cached epoch, over the cached epoch
    assert results["training"]["original_to_cached"] == pytest.approx((100 + 130_000 * 1.4) / 100)
    failing = fake_results(sampling_ratio=1.31, pipeline_ratio=0.85, generate_share=0.2)
    failed = [row["target"] for row in report.targets(failing) if not row["holds"]]
    assert failed == ["sampling 320x240 <= 1.3x decode floor", "encoding pipeline >= 0.9x the encoder alone",
                      "inference: generation <= 10% of the total"]


def test_main_writes_json_atomically_and_a_bad_work_dir_is_one_line(tmp_path, capsys):
    payload = {"a": [1, 2.5]}
    write_json(tmp_path / "out" / "results.json", payload)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == payload
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["results.json"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(cli.parse_args(["--work_dir", str(blocker / "sub"), "--quick"])) == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: --work_dir")
