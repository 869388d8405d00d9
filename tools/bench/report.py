"""The printed table (TABLE: one Row per line kind, over the results of every stage) and the targets' lines."""
import itertools
from typing import Callable, NamedTuple

from tools.bench import captioning, encoding, evaluation, sampling, training
from tools.bench.workspace import CLIP_LABELS

STAGE_MODULES = {"sampling": sampling, "encoding": encoding, "training": training, "inference": captioning,
                 "evaluation": evaluation}


def targets(results: dict) -> list:
    """Each target of every stage: what it is, the measured value, and whether it holds."""
    rows = []

    def add(name, value, holds, text):
        rows.append({"target": name, "value": value, "holds": holds, "text": text})

    for stage in STAGE_MODULES.values():
        stage.targets(results, add)
    return rows


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class Row(NamedTuple):
    """A row of the printed table. Its texts are format strings over one entry of the results (a stage's, or in
    the "sampling" section one clip's, whose {label} is its size), or functions of the entry. With needs, the
    row is printed only when the entry holds that key (a figure some runs do not measure)."""
    stage: str
    section: str
    measure: str | Callable
    value: str | Callable
    reference: str | Callable = ""
    needs: str | None = None


def by_threading(figures: dict) -> str:
    return " / ".join(f"{name} {ms(seconds)}" for name, seconds in figures.items())


TABLE = (
    Row("1 sampling", "sampling", "{label} read_video ({read_threading} threads)", lambda e: ms(e["read_video_s"]),
        lambda e: f"full decode {ms(e['full_decode_s'])} ({e['full_threading']} threads, the best): "
                  f"{e['ratio_to_full_decode']:.2f}x"),
    Row("1 sampling", "sampling", "{label} read_video by threading", lambda e: by_threading(e["read_by_threading_s"]),
        lambda e: f"full decode {by_threading(e['full_by_threading_s'])}"),
    Row("1 sampling", "sampling", "{label} OpenCV, the same 16 frames (no resize)", lambda e: ms(e["opencv_s"]),
        "read_video {ratio_to_opencv:.2f}x this", needs="opencv_s"),
    Row("1 sampling", "sampling", "{label} decord get_batch, the same 16 frames", lambda e: ms(e["decord_s"]),
        "read_video {ratio_to_decord:.2f}x this", needs="decord_s"),
    Row("1 sampling", "sampling", "{label} floor: decode to the last sampled frame", lambda e: ms(e["floor_s"]),
        lambda e: f"(frame {e['last_sampled_index']}, {e['floor_threading']} threads): read_video "
                  f"{e['ratio_to_floor']:.2f}x", needs="floor_s"),
    Row("1 sampling", "sampling", "{label} decode skipping unsampled non-reference frames",
        lambda e: ms(e["skipping_floor_s"]),
        lambda e: f"{e['frames_decoded_skipping']} of {e['last_sampled_index'] + 1} frames; read_video "
                  f"{e['ratio_to_skipping_floor']:.2f}x this", needs="skipping_floor_s"),
    Row("1 sampling", "sampling", "{label} original way (all frames to RGB + processor)",
        lambda e: ms(e["original_s"]), "read_video {speedup_vs_original:.1f}x faster", needs="original_s"),
    Row("1 sampling", "pipeline", "{label}: {videos} clips decoded by {num_workers} workers, costless encoder",
        lambda e: f"rule {e['seconds']['rule']:.2f} s", lambda e: f"slice {e['seconds']['slice']:.2f} s, "
                                                                  f"frame {e['seconds']['frame']:.2f} s"),
    Row("2 encoding", "encoding", "encode_videos, {num_videos} videos, batch {batch_size}, {num_workers} workers",
        "{pipeline_fp32_videos_per_s:.2f} videos/s",
        "encoder alone {ready_fp32_videos_per_s:.2f} videos/s: {pipeline_to_ready:.2f}x"),
    Row("2 encoding", "encoding", "bf16 encoder alone (ready tensors)", "{ready_bf16_videos_per_s:.2f} videos/s",
        "{bf16_speedup:.2f}x fp32; cosine to fp32 mean {bf16_cosine_mean:.4f}, min {bf16_cosine_min:.4f}"),
    Row("2 encoding", "encoding", "bf16 encode_videos", "{pipeline_bf16_videos_per_s:.2f} videos/s",
        lambda e: f"decode alone {1 / e['decode_one_video_s']:.1f} videos/s per core"),
    Row("3 training", "training", "run_epoch from cache, vocab {vocab_size}, batch {batch_size}: buckets, bf16 "
        "where the CPU has it, fused AdamW", "{captions_per_s:.0f} captions/s",
        lambda e: f"today's way {e['today_captions_per_s']:.0f} captions/s: {e['speedup_vs_today']:.1f}x; epoch of "
                  f"{e['epoch_captions']:,} captions {format_duration(e['epoch_s'])} "
                  f"(today {format_duration(e['today_epoch_s'])})"),
    Row("3 training", "training", "share of each batch that is padding",
        lambda e: f"{100 * e['bucketed_padding_share']:.0f}%", lambda e: f"today {100 * e['padding_share']:.0f}%"),
    Row("3 training", "training", "the same, torch on 1 thread instead of {threads}",
        "{one_thread_captions_per_s:.0f} captions/s", needs="one_thread_captions_per_s"),
    Row("3 training", "loss", "val loss after {epochs} epochs, {label}", "{val_loss:.4f}",
        lambda e: f"today's way {e['today_val_loss']:.4f}: {100 * e['relative_change']:+.2f}%"),
    Row("3 training", "training", "original way (decode + encode per caption)",
        lambda e: f"{1 / e['original_per_caption_s']:.2f} captions/s",
        lambda e: f"epoch {format_duration(e['original_epoch_s'])}: cache {e['original_to_cached']:.0f}x faster",
        needs="original_epoch_s"),
    Row("4 inference", "inference", "inference.py one 320x240 clip, beam 5", "{total_s:.2f} s",
        lambda e: f"start-up {e['startup_s']:.2f} (imports alone {e['import_floor_s']:.2f}), decode "
                  f"{e['decode_s']:.2f}, encode {e['encode_s']:.2f}, generate {e['generate_s']:.2f} "
                  f"({100 * e['generate_share']:.1f}%)"),
    Row("4 inference", "inference", "inference.py --help", "{help_s:.2f} s"),
    Row("4 inference", "folders", "inference.py over {videos} clips, {label} X-CLIP", "{inference_s:.1f} s",
        lambda e: f"encode.py {e['encode_s']:.1f} s: {e['inference_to_encode']:.2f}x; one at a time "
                  f"{e['one_at_a_time_s']:.1f} s ({e['speedup_vs_one_at_a_time']:.2f}x the batched time)"),
    Row("5 evaluation", "evaluation", "caption_features, {num_latents} latents, beam {beam_size}, batch {batch_size}",
        "{batched_captions_per_s:.1f} captions/s",
        "one at a time {single_captions_per_s:.2f} captions/s: {batched_to_single:.1f}x"),
    Row("6 memory", "sampling", "sampling one {label} clip, fresh process", "{read_video_peak_rss_mib:.0f} MiB",
        "original way {original_peak_rss_mib:.0f} MiB", needs="read_video_peak_rss_mib"),
    Row("6 memory", "encoding", "encoding fp32: main process", "{fp32_peak_rss_mib:.0f} MiB",
        "largest DataLoader worker {fp32_worker_peak_rss_mib:.0f} MiB (counts pages it shares with the main process)"),
    Row("6 memory", "encoding", "encoding bf16 (+ fp32 twin for the cosine)", "{bf16_peak_rss_mib:.0f} MiB"),
    Row("6 memory", "training", "training stage process", "{self_peak_rss_mib:.0f} MiB"),
    Row("6 memory", "evaluation", "evaluation stage process", "{self_peak_rss_mib:.0f} MiB"),
    Row("6 memory", "inference", "inference.py one clip", "{peak_rss_mib:.0f} MiB"),
    Row("6 memory", "inference", "load X-CLIP and encode one clip, fresh process: video side alone",
        "{video_side_peak_rss_mib:.0f} MiB", "whole model {whole_peak_rss_mib:.0f} MiB",
        needs="video_side_peak_rss_mib"),
    Row("6 memory", "folders", "inference.py over the folder, {label} X-CLIP",
        lambda e: f"{e['peak_rss_mib']['inference']:.0f} MiB",
        lambda e: f"encode.py {e['peak_rss_mib']['encode']:.0f} MiB; one at a time "
                  f"{e['peak_rss_mib']['one_at_a_time']:.0f} MiB"),
)

# Sections of the results whose entries are nested one level down: (stage, key), each entry labelled by its name.
NESTED_SECTIONS = {"pipeline": ("sampling", "pipeline"), "loss": ("training", "loss"),
                   "folders": ("inference", "folders")}


def section_entries(results: dict, section: str) -> list:
    """[(label, entry)] of one section of the results: one per clip size for "sampling", one per name for the
    nested sections, else the stage's own."""
    if section == "sampling":
        sampling = results.get("sampling", {})
        return [(label, sampling[label]) for label in CLIP_LABELS if label in sampling]
    if section in NESTED_SECTIONS:
        stage, key = NESTED_SECTIONS[section]
        return list(results.get(stage, {}).get(key, {}).items())
    return [(None, results[section])] if section in results else []


def table_rows(results: dict) -> list:
    """(stage, measure, value, reference) rows of the printed table: TABLE's rows, entry by entry within each run of
    rows of the same section."""
    def text(template, entry, label):
        return template(entry) if callable(template) else template.format(label=label, **entry)

    rows = []
    for section, specs in itertools.groupby(TABLE, key=lambda row: row.section):
        specs = list(specs)
        for label, entry in section_entries(results, section):
            rows += [(spec.stage, *(text(template, entry, label) for template in spec[2:5]))
                     for spec in specs if spec.needs is None or spec.needs in entry]
    return rows


def format_table(results: dict) -> str:
    rows = [("stage", "measure", "value", "floor / reference")] + table_rows(results)
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}" for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    for row in targets(results):
        lines.append(f"{'holds' if row['holds'] else 'DOES NOT HOLD':<13}  {row['target']}: {row['text']}")
    return "\n".join(lines)

