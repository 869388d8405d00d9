"""Training curves from log.jsonl (loss, validation CIDEr and BLEU-4, learning rate, against epochs), drawn into
a PNG, and the same scalars for TensorBoard. train.py redraws models/curves.png after every epoch; curves.py is
the command line that draws or overlays any logs.
"""
import json
import sys
from pathlib import Path

from matplotlib.figure import Figure  # the object API with no pyplot: no display, no global state (Agg for PNG)
from matplotlib.ticker import MaxNLocator

from common import UserError, atomic_write, one_line

# The per-epoch scalars, as log.jsonl names them and as TensorBoard shows them.
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "lr": "learning_rate"}


def read_log(path) -> list:
    """log.jsonl -> its epoch records sorted by epoch; a repeated epoch keeps its last line. UserError when the
    file is missing, not JSON lines, or has no epoch."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({one_line(error)}); pass the log.jsonl that train.py writes") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not text; pass the log.jsonl that train.py writes") from None
    records = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[int(record["epoch"])] = record
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}: line {number} is not an epoch record of train.py's log.jsonl; pass a "
                            "log.jsonl (one JSON object with an \"epoch\" per line)") from None
    if not records:
        raise UserError(f"{path}: no epoch recorded yet; draw it after the first epoch")
    return [records[epoch] for epoch in sorted(records)]


def best_record(records: list) -> dict:
    """The epoch train.py keeps as best.pt: the first with the highest val CIDEr."""
    return max(records, key=lambda record: (record.get("val", {}).get("CIDEr", float("-inf")), -record["epoch"]))


def default_labels(log_paths) -> list:
    """Each run named by its folder ("models"); by the whole folder path where two folders share a name."""
    names = [Path(path).parent.name or str(Path(path).parent) for path in log_paths]
    if len(set(names)) < len(names):
        names = [str(Path(path).parent) for path in log_paths]
    return names


def run_summary(label, records) -> str:
    """"models: 10 epochs, best epoch 9 (val CIDEr 2.563)": a run in the figure's title."""
    best = best_record(records)
    epochs = f"{len(records)} epoch{'s' if len(records) != 1 else ''}"
    cider = best.get("val", {}).get("CIDEr")
    return f"{label}: {epochs}" + (f", best epoch {best['epoch']} (val CIDEr {cider:.3f})" if cider is not None else "")


def draw_run(axes, records, label, colour) -> None:
    """One run on the three panels: losses, val metrics, learning rate; its best epoch marked on each. Legend
    entries start with label when it is not empty (several runs)."""
    loss_axes, metric_axes, lr_axes = axes
    epochs = [record["epoch"] for record in records]
    prefix = f"{label}: " if label else ""

    def series(key, panel, style, name, source=lambda record, key: record.get(key)):
        values = [source(record, key) for record in records]
        points = [(epoch, value) for epoch, value in zip(epochs, values) if value is not None]
        if points:
            panel.plot(*zip(*points), style, color=colour, label=prefix + name, markersize=4)

    def val(record, key):
        return record.get("val", {}).get(key)

    series("train_loss", loss_axes, "-o", "train")
    series("val_loss", loss_axes, "--s", "val")
    series("CIDEr", metric_axes, "-o", "val CIDEr", val)
    series("Bleu_4", metric_axes, "--s", "val BLEU-4", val)
    series("lr", lr_axes, "-", "learning rate")
    series("reward", metric_axes, "-^", "train reward (SCST)", lambda record, key: record.get("scst", {}).get(key))
    scst_epochs = [record["epoch"] for record in records if "scst" in record]
    if scst_epochs:  # self-critical training began after the epoch before the first of these
        for panel in axes:
            panel.axvline(min(scst_epochs) - 0.5, color=colour, linestyle="-.", linewidth=1.2,
                          label=f"{prefix}SCST from here" if panel is metric_axes else None)
    best = best_record(records)
    cider = best.get("val", {}).get("CIDEr")
    if cider is not None:
        for panel in axes:
            panel.axvline(best["epoch"], color=colour, linestyle=":", linewidth=1.2)
        metric_axes.plot([best["epoch"]], [cider], "*", color=colour, markersize=16, markeredgecolor="black",
                         label=f"{prefix}best: epoch {best['epoch']}, CIDEr {cider:.3f}")


def plot_curves(log_paths, out_png, labels=None) -> Path:
    """Draw the runs of log_paths (one colour each, labelled by labels or their folders) into out_png,
    written atomically. Returns out_png."""
    log_paths = [Path(path) for path in log_paths]
    labels = list(labels) if labels else default_labels(log_paths)
    if len(labels) != len(log_paths):
        raise UserError(f"--labels: {len(labels)} labels for {len(log_paths)} logs; pass one label per log")
    runs = [read_log(path) for path in log_paths]
    figure = Figure(figsize=(15, 4.6), layout="constrained")
    axes = figure.subplots(1, 3)
    colours = [f"C{index % 10}" for index in range(len(runs))]
    for records, label, colour in zip(runs, labels, colours):
        draw_run(axes, records, label if len(runs) > 1 else "", colour)
    titles = ("loss (solid: train, dashed: val)", "validation (solid: CIDEr, dashed: BLEU-4; star: best)",
              "learning rate")
    for panel, title in zip(axes, titles):
        panel.set_title(title, fontsize=11)
        panel.set_xlabel("epoch")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.grid(alpha=0.3)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for panel in axes[:2] if len(runs) == 1 else axes:
        panel.legend(fontsize=8, loc="best")
    figure.suptitle("   |   ".join(run_summary(label, records) for label, records in zip(labels, runs)), fontsize=12)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out_png, lambda handle: figure.savefig(handle, format="png", dpi=80))


def redraw(out_dir) -> None:
    """train.py after each epoch: out_dir/curves.png from out_dir/log.jsonl. A failure to draw is one warning
    line, never the end of a training run."""
    try:
        plot_curves([Path(out_dir) / "log.jsonl"], Path(out_dir) / "curves.png")
    except Exception as error:  # noqa: BLE001 - whatever goes wrong in plotting, training goes on
        print(f"warning: {Path(out_dir) / 'curves.png'}: not drawn ({one_line(error)})", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# TensorBoard (optional: pip install -r requirements-extras.txt)

TENSORBOARD_MISSING = ("--tensorboard: the tensorboard package is not installed; pip install -r "
                       "requirements-extras.txt, or train without --tensorboard (curves.png is drawn either way)")


def tensorboard_available() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401 - imported here: tensorboard is an optional extra
    except ImportError:
        return False
    return True


def open_tensorboard(log_dir, start_epoch=0):
    """A SummaryWriter on log_dir; when resuming after start_epoch, the events a killed run wrote past it are
    dropped, so that no epoch shows twice."""
    from torch.utils.tensorboard import SummaryWriter  # optional extra, see tensorboard_available

    return SummaryWriter(str(log_dir), purge_step=start_epoch + 1 if start_epoch else None)


def add_scalars(writer, record: dict) -> None:
    """One log.jsonl record as TensorBoard scalars at step = epoch: losses, learning rate, every val metric."""
    for key, tag in SCALARS.items():
        if record.get(key) is not None:
            writer.add_scalar(tag, record[key], record["epoch"])
    for name, value in record.get("val", {}).items():
        writer.add_scalar(f"val/{name}", value, record["epoch"])
    writer.flush()
