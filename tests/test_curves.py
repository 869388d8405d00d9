"""Training curves (training_curves.py, drawn by train.py and curves.py): log.jsonl read back, runs overlaid in their own colours, TensorBoard scalars."""
import json

import numpy as np
import pytest
from PIL import Image

import train
import training_curves as curves

RUN_COLOURS = {"C0": (0x1F, 0x77, 0xB4), "C1": (0xFF, 0x7F, 0x0E)}  # matplotlib's first two cycle colours


def write_log(path, ciders, lr=1e-3):
    """A log.jsonl as train.py writes it, one line per epoch, val CIDEr from ciders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [{"epoch": epoch, "train_loss": 5.0 / epoch, "val_loss": 4.0 / epoch + 0.1,
              "val": {"Bleu_4": cider / 5, "CIDEr": cider}, "lr": lr * (1 - epoch / 10), "seconds": 1.0}
             for epoch, cider in enumerate(ciders, start=1)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def colour_pixels(png, rgb, tolerance=12):
    """How many pixels of png are within tolerance of the colour rgb."""
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tolerance).sum())


def test_log_is_read_in_epoch_order_and_the_best_epoch_is_the_first_highest_cider(tmp_path):
    log = write_log(tmp_path / "run" / "log.jsonl", [0.5, 1.5, 1.5, 1.0])
    with open(log, "a") as handle:  # a resumed run that logged epoch 2 again: the last line wins
        handle.write(json.dumps({"epoch": 2, "train_loss": 1.0, "val": {"CIDEr": 0.2}}) + "\n\n")
    records = curves.read_log(log)
    assert [record["epoch"] for record in records] == [1, 2, 3, 4]
    assert records[1]["val"]["CIDEr"] == 0.2
    assert curves.best_record(records)["epoch"] == 3


def test_one_run_is_drawn_in_one_colour_and_two_runs_in_two(tmp_path, run_cli):
    first = write_log(tmp_path / "lr1e-3" / "log.jsonl", [0.4, 1.2, 1.8, 1.6])
    second = write_log(tmp_path / "lr3e-4" / "log.jsonl", [0.2, 0.6, 0.9, 1.1, 1.3, 1.2], lr=3e-4)
    single = curves.plot_curves([first], tmp_path / "single.png")
    assert colour_pixels(single, RUN_COLOURS["C0"]) > 500 and colour_pixels(single, RUN_COLOURS["C1"]) == 0
    assert not list(tmp_path.glob(".single.png.tmp*"))  # written atomically
    result = run_cli("curves", first, second, "--out", tmp_path / "both.png")
    assert result.returncode == 0, result.stderr
    both = tmp_path / "both.png"
    assert colour_pixels(both, RUN_COLOURS["C0"]) > 500 and colour_pixels(both, RUN_COLOURS["C1"]) > 500
    assert Image.open(both).size == Image.open(single).size


def test_bad_logs_are_one_line_errors(tmp_path, run_cli):
    broken = tmp_path / "log.jsonl"
    broken.write_text('{"epoch": 1, "train_loss": 2.0}\nnot json\n')
    for logs, expected in (([str(tmp_path / "missing.jsonl")], "missing.jsonl: cannot read"),
                           ([str(broken)], "line 2 is not an epoch record"),
                           ([str(broken), str(broken), "--labels", "a"], "1 labels for 2 logs")):
        result = run_cli("curves", *logs, "--out", tmp_path / "c.png")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith("error: ") and expected in result.stderr and result.stderr.count("\n") == 1


def test_a_failure_to_draw_is_a_warning_not_the_end_of_training(tmp_path, capsys):
    (tmp_path / "log.jsonl").write_text("garbage\n")
    curves.redraw(tmp_path)  # does not raise
    assert capsys.readouterr().err.startswith(f"warning: {tmp_path / 'curves.png'}: not drawn")


def test_tensorboard_missing_stops_training_before_it_starts(monkeypatch, capsys):
    monkeypatch.setattr(train, "tensorboard_available", lambda: False)
    assert train.main(train.parse_args(["--tensorboard", "--data_dir", "/nonexistent"])) == 2
    assert capsys.readouterr().err.strip() == f"error: {curves.TENSORBOARD_MISSING}"


def test_tensorboard_gets_the_log_scalars_and_a_resume_drops_the_epochs_it_redoes(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = curves.read_log(write_log(tmp_path / "log.jsonl", [0.5, 1.0, 1.5]))
    writer = curves.open_tensorboard(tmp_path / "tb")
    for record in records:
        curves.add_scalars(writer, record)
    writer.close()
    writer = curves.open_tensorboard(tmp_path / "tb", start_epoch=1)  # killed after epoch 1's checkpoint
    curves.add_scalars(writer, {**records[1], "val": {"CIDEr": 9.0}})
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"loss/train", "loss/val", "learning_rate", "val/CIDEr", "val/Bleu_4"} <= set(events.Tags()["scalars"])
    cider = [(event.step, event.value) for event in events.Scalars("val/CIDEr")]
    assert cider == [(1, 0.5), (2, 9.0)]
