"""Train the LSTM caption decoder on cached X-CLIP latents.

    python train.py --data_dir data --tokenizer_path tokenizer.model --epochs 20

Latents come from the on-disk cache (missing ones are encoded first, once). Each epoch prints
train loss, validation loss and validation CIDEr (beam search on the val videos, all references),
writes models/last.pt, models/best.pt (by CIDEr), a line in models/log.jsonl and redraws models/curves.png
(training_curves.py; --tensorboard also writes the scalars for TensorBoard). --resume continues
a killed run from last.pt; on CPU with a fixed seed it ends with the same weights as an unbroken run.

Under `torchrun --nproc_per_node N train.py ...` it trains with DistributedDataParallel (NCCL on GPUs,
gloo on CPU): each rank encodes its shard of the missing videos, takes its slice of every global
batch, and rank 0 validates and writes the files.

--scst_epochs N then fine-tunes the best epoch by self-critical sequence training (SCST): K captions sampled per
video (at temperature 0.5), each rewarded by its CIDEr-D against the video's references (metrics.CiderD, document
frequencies of the training references), less the mean reward of the video's other samples (or of its greedy
caption); best.pt moves only when val CIDEr beats the cross-entropy best. --init CKPT --epochs 0 fine-tunes a
finished run's checkpoint.

--views K trains on K cached samplings per video, one drawn per video each epoch (seeded by the epoch,
so --resume stays exact); validation averages them. --decoder attention trains the decoder that
attends over X-CLIP's per-frame features (cached beside the latents) instead of the pooled latent.
"""
import argparse
import datetime
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn.functional as F

from annotations import add_data_arguments, load_dataset, normalize_caption
from checkpoint import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from common import (DEFAULT_XCLIP, UserError, bounded, check_output_folder, check_outputs, count, fail, fraction,
                    interrupted, non_negative, one_line, positive_float, positive_int, progress_bar, resolve_device,
                    set_device, use_warning_lines, write_text)
from latents import EncodeOptions, load_encoder, open_cache, split_features, split_latents
from training_curves import TENSORBOARD_MISSING, add_scalars, open_tensorboard, redraw, tensorboard_available
from metrics import CiderD, ptb_tokenize_python, score_captions, tokenize_captions
from model import CaptionDecoder, DecoderConfig, caption_features, greedy, sample


def at_least_two(text: str) -> int:
    """argparse type: an integer of at least 2 (samples per video: each is compared with the others)."""
    return bounded(int, text, low=2)


def add_data_flags(parser) -> None:
    """train.py's data flags: the dataset, tokenizer, encoder and its latent cache, or precomputed features."""
    data = parser.add_argument_group("data")
    add_data_arguments(data)
    data.add_argument("--tokenizer_path", default="tokenizer.model", help="sentencepiece model from create_tokenizer.py")
    data.add_argument("--xclip_model", default=DEFAULT_XCLIP, help="X-CLIP hub name or local folder (frozen video encoder)")
    data.add_argument("--cache_dir", default="cache", help="where the latent cache lives")
    data.add_argument("--features", default=None,
                      help="train on precomputed features instead of videos: a folder with one <video_id>.npy per "
                           "video, (D,) or (T, D); no X-CLIP is loaded")
    data.add_argument("--encode_dtype", default="fp32", choices=["fp32", "bf16"], help="encoder precision for the cache")
    data.add_argument("--views", type=positive_int, default=1,
                      help="samplings per video in the cache (1 = middle frames; K > 1 = K jittered ones, one "
                           "drawn per video each epoch, their mean used for validation)")
    data.add_argument("--max_len", type=positive_int, default=30, help="max caption length in tokens (EOS included)")
    data.add_argument("--num_workers", type=count, default=None,
                      help="DataLoader workers decoding videos for the cache (default: one per available core, shared "
                           "among torchrun's processes; 0 = in process)")
    data.add_argument("--encode_batch_size", type=positive_int, default=8,
                      help="videos X-CLIP encodes at once while it builds the cache (a GPU takes more: try 32)")


def add_decoder_flags(parser) -> None:
    """train.py's decoder flags: its sizes and kind."""
    model = parser.add_argument_group("decoder")
    model.add_argument("--embed_dim", type=positive_int, default=256, help="token embedding size")
    model.add_argument("--hidden_dim", type=positive_int, default=512, help="LSTM hidden size")
    model.add_argument("--num_layers", type=positive_int, default=2, help="LSTM layers")
    model.add_argument("--dropout", type=fraction, default=0.3, help="dropout on embeddings, between layers and outputs")
    model.add_argument("--latent_every_step", action="store_true", help="also feed the latent at every step")
    model.add_argument("--decoder", default="pooled", choices=["pooled", "attention"],
                       help="pooled: the video latent sets the LSTM state; attention: soft attention over the "
                            "per-frame features at every step")
    model.add_argument("--attention_dim", type=positive_int, default=256, help="attention hidden size (--decoder attention)")


def add_scst_flags(parser) -> None:
    """The flags of self-critical sequence training (SCST)."""
    scst = parser.add_argument_group("self-critical sequence training (SCST, after the cross-entropy epochs)")
    scst.add_argument("--scst_epochs", type=count, default=0,
                      help="SCST epochs after the cross-entropy ones, starting from the best of them (best.pt), or "
                           "from --init with --epochs 0; best.pt is replaced only by a better val CIDEr (0 = no SCST)")
    scst.add_argument("--init", default=None,
                      help="start from this train.py checkpoint's decoder weights (same tokenizer and decoder flags) "
                           "instead of a fresh decoder; with --epochs 0 --scst_epochs N: fine-tune it by SCST")
    scst.add_argument("--scst_samples", type=at_least_two, default=5,
                      help="captions sampled per video (at --scst_temperature, within --scst_top_p), each rewarded "
                           "by its CIDEr-D against all of the video's references")
    scst.add_argument("--scst_temperature", type=positive_float, default=0.5,
                      help="temperature of the sampled captions (1 = the model's own distribution; the default 0.5 "
                           "keeps them near the greedy caption, where a cross-entropy model's samples at 1 are mostly "
                           "noise: docs/scst.md); the gradient is that of the model's own log-probabilities")
    scst.add_argument("--scst_top_p", type=probability_mass, default=1.0,
                      help="sample only within the smallest set of pieces holding this much probability (nucleus "
                           "sampling; 1 = the full vocabulary)")
    scst.add_argument("--scst_baseline", default="mean", choices=["mean", "greedy"],
                      help="what a sample's reward is compared with: mean = the mean reward of the video's other "
                           "samples; greedy = the reward of the video's greedy caption")
    scst.add_argument("--scst_advantage", default="plain", choices=["plain", "std", "best"],
                      help="each sample's weight in the policy gradient: plain = its reward minus the baseline; "
                           "std = that divided by the standard deviation of the video's K rewards (+ 0.01), so "
                           "that every video pulls alike; best = the best-rewarded sample of each video alone, "
                           "weighted by its reward minus the baseline, the others 0")
    scst.add_argument("--scst_batch_size", type=positive_int, default=16,
                      help="videos per SCST step (global, under torchrun); each gives --scst_samples captions")
    scst.add_argument("--scst_learning_rate", type=positive_float, default=5e-5, help="constant AdamW learning rate of SCST")
    scst.add_argument("--scst_ce_weight", type=non_negative, default=0.0,
                      help="weight of the cross-entropy loss on one reference caption per video, added to the "
                           "policy-gradient loss (0 = pure SCST)")
    scst.add_argument("--scst_entropy", type=non_negative, default=0.0,
                      help="weight of an entropy bonus on the sampled captions' tokens (0 = none)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_flags(parser)
    add_decoder_flags(parser)
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=count, default=20,
                       help="maximum cross-entropy epochs (0 = none: self-critical training of --init alone)")
    optim.add_argument("--batch_size", type=positive_int, default=128, help="captions per batch (global, under torchrun)")
    optim.add_argument("--learning_rate", type=positive_float, default=1e-3, help="peak AdamW learning rate")
    optim.add_argument("--weight_decay", type=non_negative, default=0.01, help="AdamW weight decay")
    optim.add_argument("--warmup_steps", type=count, default=500,
                       help="linear warm-up steps, then cosine decay; capped at a tenth of all steps + 1, so that "
                            "short runs still spend most of their steps at a useful learning rate")
    optim.add_argument("--grad_clip", type=non_negative, default=1.0, help="max gradient norm (0 = off)")
    optim.add_argument("--label_smoothing", type=fraction, default=0.1, help="label smoothing of the loss")
    optim.add_argument("--patience", type=count, default=5, help="stop after this many epochs without a better val CIDEr (0 = never)")
    optim.add_argument("--length_buckets", action=argparse.BooleanOptionalAction, default=False,
                       help="batch captions of similar length together (shuffled pools of batches, sorted by length, "
                            "batches in random order), so that little of a batch is padding: faster, but lower test "
                            "CIDEr on real features (docs/scst.md)")
    optim.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                       help="bf16 autocast of the decoder: auto = on CPUs with native bf16 (AVX512-BF16 or AMX), "
                            "where it is faster; off on GPUs, where it measured slower (docs/performance.md)")
    add_scst_flags(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--beam_size", type=positive_int, default=3, help="beam size for validation captions")
    run.add_argument("--val_videos", type=count, default=0, help="caption only the first N val videos for CIDEr (0 = all)")
    run.add_argument("--out_dir", default="models", help="where last.pt, best.pt and log.jsonl go")
    run.add_argument("--device", default="auto",
                     help="training device: auto (a GPU when there is one), cpu, cuda or cuda:N; under torchrun each "
                          "process takes cuda:LOCAL_RANK")
    run.add_argument("--seed", type=count, default=0, help="random seed (batches, dropout, init)")
    run.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an out_dir that holds a run (its checkpoints and log are replaced)")
    run.add_argument("--tensorboard", action="store_true",
                     help="also write the epoch scalars for TensorBoard to out_dir/tensorboard (optional extra: "
                          "pip install -r requirements-extras.txt); out_dir/curves.png is drawn either way")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------------
# Data: captions as token rows, features from the cache

def encode_captions(captions, tokenizer, max_len):
    """Captions -> (N, max_len + 1) int64 array: BOS, the normalised caption's ids, EOS, padding."""
    pad, bos, eos = tokenizer.pad_id(), tokenizer.bos_id(), tokenizer.eos_id()
    ids = tokenizer.encode([normalize_caption(c) for c in captions])
    rows = np.full((len(captions), max_len + 1), pad, dtype=np.int64)
    for row, caption_ids in zip(rows, ids):
        caption_ids = [bos] + caption_ids[: max_len - 1] + [eos]
        row[: len(caption_ids)] = caption_ids
    return rows


def caption_table(video_ids, captions_by_video, tokenizer, max_len):
    """All captions of the given videos: (video index per caption (N,), token rows (N, max_len + 1))."""
    video_index = np.array([i for i, vid in enumerate(video_ids) for _ in captions_by_video[vid]], dtype=np.int64)
    captions = [c for vid in video_ids for c in captions_by_video[vid]]
    return video_index, encode_captions(captions, tokenizer, max_len)


@dataclass
class Split:
    """One split as training reads it: its videos, their features and every caption as a token row."""

    video_ids: list
    features: np.ndarray      # latents (N, D), or frame features (N, F, D); with views (N, K, ...) for train
    video_index: np.ndarray   # (C,) row of features for each caption
    rows: np.ndarray          # (C, max_len + 1) BOS, caption ids, EOS, padding


@dataclass
class TrainingData:
    tokenizer: spm.SentencePieceProcessor
    tokenizer_proto: bytes
    captions: dict            # video id -> raw captions (references for validation)
    train: Split
    val: Split
    encoder_meta: dict        # what made the features (the cache's encoder record, or the feature files'), stored
    data_record: dict         # what the checkpoint says it was trained on: dataset, scheme, features
    resume: dict | None       # last.pt when --resume


def prepare_data(args, device, world_size) -> TrainingData:
    """Tokenizer, the checkpoint to resume from, the dataset, and the train/val features from the cache (encoding
    what it lacks: under torchrun each rank its shard)."""
    if not Path(args.tokenizer_path).is_file():
        raise UserError(f"{args.tokenizer_path}: no tokenizer; run create_tokenizer.py first")
    tokenizer_proto = Path(args.tokenizer_path).read_bytes()
    try:
        tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_proto)
    except RuntimeError:  # sentencepiece's error for bytes that are not a model
        raise UserError(f"{args.tokenizer_path}: not a sentencepiece model; make one with create_tokenizer.py") from None
    last = Path(args.out_dir) / "last.pt"
    if args.resume and not last.is_file():
        raise UserError(f"{last}: nothing to resume; leave --resume out to start a run in {args.out_dir}")
    resume = load_checkpoint(last) if args.resume else None
    if resume is not None and resume["tokenizer"] != tokenizer_proto:
        raise CheckpointError(f"{args.tokenizer_path}: differs from the tokenizer of {last}")
    dataset = load_dataset(args, check_videos=not args.features)
    features_by_split, encoder_meta = split_features_or_latents(args, dataset, device, world_size)
    (train_ids, train_features), (val_ids, val_features) = features_by_split["train"], features_by_split["val"]
    if not train_ids or not val_ids:
        raise UserError(f"{dataset.root}: need videos in both train and val splits "
                        f"(found {len(train_ids)} and {len(val_ids)})")
    if args.views > 1:
        val_features = val_features.mean(axis=1)  # validation sees the mean of the views, as evaluate.py --views does
    splits = [Split(ids, features, *caption_table(ids, dataset.captions, tokenizer, args.max_len))
              for ids, features in ((train_ids, train_features), (val_ids, val_features))]
    data_record = {"dataset": dataset.name, "scheme": dataset.scheme,
                   "annotations": Path(args.annotations).name if dataset.name == "captions" else None,
                   "features": {"folder": encoder_meta["name"], "shape": encoder_meta["shape"]} if args.features
                   else None}
    return TrainingData(tokenizer, tokenizer_proto, dataset.captions, *splits, encoder_meta, data_record, resume)


def split_features_or_latents(args, dataset, device, world_size) -> tuple:
    """({split: (ids, features)}, record of what made them) for train and val: from --features' files, or from
    the latent cache (encoding what it lacks; under torchrun each rank its shard)."""
    frame_features = args.decoder == "attention"
    if args.features:
        return split_features(dataset, ["train", "val"], args.features, frame_features)
    encoder, _ = load_encoder(args.xclip_model, args.encode_dtype, device)
    cache, preprocess = open_cache(encoder, args.cache_dir, args.encode_dtype, args.views, with_frames=frame_features)
    options = EncodeOptions(batch_size=args.encode_batch_size, num_workers=args.num_workers)
    features_by_split = split_latents(dataset, ["train", "val"], encoder, cache, preprocess, options,
                                      barrier=cache_barrier() if world_size > 1 else None)
    return features_by_split, dict(cache.meta)  # the encoder is let go: the cache is all training needs


def pick_views(features, seed, epoch):
    """One view per video for this epoch: features (N, K, ...) -> (N, ...), drawn from (seed, epoch) alone, so
    that every rank and a resumed run draw the same views."""
    views = np.random.default_rng([seed, epoch]).integers(features.size(1), size=features.size(0))  # (N,)
    return features[torch.arange(features.size(0), device=features.device), torch.from_numpy(views).to(features.device)]


# ----------------------------------------------------------------------------------------------------------------------
# Decoder and optimisation

def build_decoder(args, data: TrainingData) -> CaptionDecoder:
    """A fresh decoder (seeded by --seed) sized for the tokenizer and the features, standardising them with the
    training split's statistics."""
    torch.manual_seed(args.seed)
    features = data.train.features
    latent_dim = features.shape[-1]
    tokenizer = data.tokenizer
    config = DecoderConfig(vocab_size=tokenizer.get_piece_size(), latent_dim=latent_dim, embed_dim=args.embed_dim,
                           hidden_dim=args.hidden_dim, num_layers=args.num_layers, dropout=args.dropout,
                           latent_every_step=args.latent_every_step, label_smoothing=args.label_smoothing,
                           pad_id=tokenizer.pad_id(), bos_id=tokenizer.bos_id(), eos_id=tokenizer.eos_id(),
                           decoder_type=args.decoder, attention_dim=args.attention_dim,
                           num_frames=int(data.encoder_meta["num_frames"]))
    decoder = CaptionDecoder(config)
    flat = features.reshape(-1, latent_dim)  # every view and frame counts in the statistics
    mean, std = torch.as_tensor(flat.mean(0)), torch.as_tensor(flat.std(0))
    if len(flat) > 1 and not (torch.isfinite(mean).all() and torch.isfinite(std).all()):  # 1e38 overflows them
        raise UserError(f"the train split's features (--features or the latent cache) reach "
                        f"{float(abs(flat).max()):.3g}, too large for float32 statistics (their mean or spread "
                        "overflows): fix or remove those files")
    decoder.set_latent_stats(mean, std)
    return decoder


def lr_lambda(warmup_steps, total_steps):
    """Linear warm-up to 1, then cosine decay to 0 at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def make_optimizer(args, decoder, num_captions, fused=None):
    """AdamW, and a scheduler warming up for --warmup_steps (at most a tenth of all steps + 1), then cosine.
    fused None: AdamW's fused kernel where the device has one; False: its loop (the plain path tools/bench times)."""
    # fused: one kernel per step instead of a dozen passes over every parameter (the same update to ~1e-7)
    if fused is None:
        fused = next(decoder.parameters()).device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay,
                                  fused=fused)
    total_steps = math.ceil(num_captions / args.batch_size) * args.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(min(args.warmup_steps, total_steps // 10 + 1), total_steps))
    return optimizer, scheduler


BUCKET_POOL = 50  # batches sorted by length together: few enough that batches stay a mix of videos and words


def epoch_batches(lengths, batch_size, shuffle=True, generator=None, buckets=False) -> list:
    """The global batches of an epoch, as index tensors into the captions: in order, or shuffled by generator;
    with buckets, every pool of BUCKET_POOL shuffled batches is sorted by caption length before it is cut into
    batches, and the batches are shuffled again. The batches are a function of the generator alone (every rank
    and a resumed run draw the same ones) and as many as without buckets."""
    count = len(lengths)
    if not shuffle:
        return list(torch.arange(count).split(batch_size))
    order = torch.randperm(count, generator=generator)
    if not buckets:
        return list(order.split(batch_size))
    batches = []
    for pool in order.split(batch_size * BUCKET_POOL):
        batches += pool[torch.argsort(lengths[pool], stable=True)].split(batch_size)
    return [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), where bf16 autocast makes a step faster
    rather than slower."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def use_bf16(choice: str, device) -> bool:
    """--bf16 auto|on|off on this device: auto is on for CPUs with native bf16 only (on an H200, bf16 autocast
    trained this decoder at 0.91-0.97x fp32's speed: docs/performance.md); on and off are taken as asked."""
    if choice != "auto":
        return choice == "on"
    return device.type == "cpu" and cpu_has_native_bf16()


@dataclass(frozen=True)
class EpochOptions:
    """How run_epoch goes through the captions: batches of batch_size from epoch_batches (shuffled by generator
    when training, of similar lengths with buckets); gradients clipped to grad_clip (0 = not clipped); bf16:
    autocast the decoder to bfloat16 (None: on GPUs with native bf16 only); this process is rank of world_size;
    desc names the progress bar."""
    batch_size: int
    desc: str = "train"
    generator: torch.Generator | None = None
    buckets: bool = False
    grad_clip: float = 0.0
    bf16: bool | None = None
    rank: int = 0
    world_size: int = 1


def run_epoch(model, features, video_index, rows, device, options: EpochOptions, optimizer=None, scheduler=None):
    """One pass over the captions; trains when an optimizer (and its scheduler) is given. Returns the mean loss.

    Under torchrun every rank draws the same global batches and takes its slice rank::world_size of each; the
    loss is rescaled so that DDP's gradient average equals the single-process gradient of the whole batch (a
    token-weighted mean), whatever the ranks' token counts.
    """
    batch_size, grad_clip, desc = options.batch_size, options.grad_clip, options.desc
    generator, rank, world_size, buckets = options.generator, options.rank, options.world_size, options.buckets
    pad_id = getattr(model, "module", model).config.pad_id
    training = optimizer is not None
    model.train(training)
    rows, video_index = torch.from_numpy(rows), torch.from_numpy(video_index)
    lengths = (rows != pad_id).sum(1)  # (N,) tokens per caption
    batches = epoch_batches(lengths, batch_size, training, generator, buckets)
    bf16 = use_bf16("auto", device) if options.bf16 is None else options.bf16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    # Bucketed batches differ in length, and a batch's loss is its tokens' mean: weigh each batch by its tokens
    # (against the epoch's mean per batch), so that every token counts alike, as in batches of mixed lengths.
    mean_batch_tokens = float((lengths - 1).sum()) / len(batches) if buckets and training else None
    total_loss, total_count = 0.0, 0
    bar = progress_bar(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=rank != 0)
    for global_batch in bar:
        batch = global_batch[rank::world_size]
        scale = 1.0
        if world_size > 1 or mean_batch_tokens:
            global_tokens = int((rows[global_batch, 1:] != pad_id).sum())
        if world_size > 1:
            if len(batch) == 0:  # fewer captions than ranks: join the gradient sync with zero weight
                batch, scale = global_batch[:1], 0.0
            else:
                scale = int((rows[batch, 1:] != pad_id).sum()) * world_size / global_tokens
        if mean_batch_tokens:
            scale *= global_tokens / mean_batch_tokens
        batch_rows = rows[batch]
        length = int(lengths[batch].max())  # trim padding columns
        batch_rows = batch_rows[:, :length].to(device, non_blocking=True)
        batch_features = features[video_index[batch].to(features.device)]  # (B, D) or (B, F, D)
        with torch.set_grad_enabled(training), autocast:
            _, loss = model(batch_features, batch_rows[:, :-1], batch_rows[:, 1:])
        if training:
            optimizer.zero_grad(set_to_none=True)
            (loss * scale if scale != 1.0 else loss).backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
        value = loss.item()
        if not math.isfinite(value):  # features too large (1e38) or broken: stop before a NaN epoch is saved
            split = "train" if training else "val"
            raise UserError(f"{desc}: the loss became {value} on the {split} split; its features (--features or the "
                            f"latent cache) reach {features.abs().max().item():.3g}, too large to train on: fix or "
                            "remove those files; last.pt in --out_dir keeps the last finished epoch")
        total_loss += value * len(batch)
        total_count += len(batch)
        bar.set_postfix(loss=f"{total_loss / total_count:.3f}")
    return total_loss / max(1, total_count)


def validation_loss(decoder, features, val: Split, batch_size, device, bf16) -> float:
    """Mean teacher-forced loss on every val caption, in eval mode and without gradients."""
    with torch.no_grad():
        return run_epoch(decoder, features, val.video_index, val.rows, device,
                         EpochOptions(batch_size, desc="val loss", bf16=bf16))


def validate(decoder, tokenizer, val: Split, features, references, args, device):
    """Validation loss (teacher forcing) on every val caption, and caption metrics (beam search, all references,
    no METEOR) on the videos in `references`."""
    loss = validation_loss(decoder, features, val, args.batch_size, device, use_bf16(args.bf16, device))
    position = {video_id: row for row, video_id in enumerate(val.video_ids)}
    video_ids = list(references)
    rows = torch.tensor([position[video_id] for video_id in video_ids], device=features.device)
    captions = caption_features(decoder, tokenizer, features[rows], beam_size=args.beam_size, max_len=args.max_len)
    # No JVM per epoch: the Python PTB tokenizer (equal to Java's on all but 2 of MSR-VTT's 200k captions), no METEOR.
    metrics = score_captions(dict(zip(video_ids, captions)), references, java=False, meteor=False)
    return loss, metrics, captions


# ----------------------------------------------------------------------------------------------------------------------
# Self-critical sequence training: sampled captions rewarded by CIDEr-D, against a baseline

REWARD = "CIDEr-D (pycocoevalcap's, PTB-style tokens, document frequencies of the training references)"


def probability_mass(text: str) -> float:
    """argparse type of --scst_top_p: a share of the probability above 0 and at most 1."""
    return bounded(float, text, low=0.0, high=1.0, open_low=True)


class CaptionReward:
    """CIDEr-D of sampled token ids against a video's references, with the training split's document
    frequencies (computed once): the metric validation and evaluate.py report, on the same tokens."""

    def __init__(self, tokenizer, references: dict):
        self.tokenizer = tokenizer
        self.cider = CiderD(tokenize_captions(references, java=False))
        self.seconds = 0.0  # time spent scoring, for the benchmark

    def __call__(self, video_ids: list, caption_ids: list) -> torch.Tensor:
        started = time.perf_counter()
        captions = [ptb_tokenize_python(text) for text in self.tokenizer.decode(caption_ids)]
        rewards = torch.tensor(self.cider.scores(video_ids, captions), dtype=torch.float32)
        self.seconds += time.perf_counter() - started
        return rewards


def sequence_rows(caption_ids: list, config, max_len: int) -> torch.Tensor:
    """Decoded token ids -> (N, T + 1) rows BOS, ids, EOS (left out when the caption ran to max_len), padding."""
    rows = torch.full((len(caption_ids), max_len + 1), config.pad_id, dtype=torch.long)
    for row, ids in zip(rows, caption_ids):
        ids = [config.bos_id] + ids + ([config.eos_id] if len(ids) < max_len else [])
        row[: len(ids)] = torch.tensor(ids)
    length = int((rows != config.pad_id).sum(1).max())
    return rows[:, :length]


def scst_advantage(rewards: torch.Tensor, baselines: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, K) rewards and baselines -> (B, K) advantages by --scst_advantage (plain, std or best)."""
    advantage = rewards - baselines
    if mode == "std":
        return advantage / (rewards.std(1, unbiased=False, keepdim=True) + 0.01)
    if mode == "best":  # the first of the best when several tie
        best = F.one_hot(rewards.argmax(1), rewards.size(1)).bool()
        return torch.where(best, advantage, torch.zeros_like(advantage))
    return advantage


def scst_loss(run, features, videos, global_videos: int, sample_seed: int) -> tuple:
    """The SCST loss of one rank's videos (their rows in the training split): sample --scst_samples captions per
    video, reward each, subtract the baseline, and weigh each caption's log-probability by that advantage
    (plus the CE and entropy terms when asked). Scaled so that DDP's average over ranks is the loss of the global
    batch of global_videos. Returns (loss, rewards (B, K), baselines (B, K))."""
    args, decoder = run.args, run.decoder
    config, samples = decoder.config, args.scst_samples
    video_ids = [run.data.train.video_ids[index] for index in videos.tolist()]
    video_features = features[videos.to(features.device)]  # (B, D) or (B, F, D)
    repeated = video_features.repeat_interleave(samples, dim=0)  # (B*K, ...)
    caption_ids = sample(decoder, repeated, max_len=args.max_len, temperature=args.scst_temperature,
                         top_p=args.scst_top_p, seed=sample_seed)
    rewards = run.reward([vid for vid in video_ids for _ in range(samples)], caption_ids).view(-1, samples)  # (B, K)
    if args.scst_baseline == "greedy":
        baselines = run.reward(video_ids, greedy(decoder, video_features, args.max_len))[:, None].expand_as(rewards)
    else:  # the mean of the other samples of the same video (in float64: equal rewards give advantages of exactly 0)
        exact = rewards.double()
        baselines = ((exact.sum(1, keepdim=True) - exact) / (samples - 1)).float()
    rows = sequence_rows(caption_ids, config, args.max_len)  # (B*K, T + 1)
    inputs = repeated
    if args.scst_ce_weight:  # one reference caption per video, teacher-forced in the same forward pass
        references = run.reference_rows(videos, sample_seed)  # (B, T' + 1)
        width = max(rows.size(1), references.size(1))
        rows = torch.cat([F.pad(rows, (0, width - rows.size(1)), value=config.pad_id),
                          F.pad(references, (0, width - references.size(1)), value=config.pad_id)])
        inputs = torch.cat([repeated, video_features])
    rows = rows.to(run.device)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=use_bf16(args.bf16, run.device)):
        logits, _ = run.model(inputs, rows[:, :-1])  # (N, T, V)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    targets = rows[:, 1:]
    mask = (targets != config.pad_id).float()  # (N, T)
    sampled = len(caption_ids)
    token_log_probs = log_probs[:sampled].gather(-1, targets[:sampled, :, None])[..., 0] * mask[:sampled]
    advantage = scst_advantage(rewards, baselines, args.scst_advantage).view(-1).to(run.device)  # (B*K,)
    per_caption = run.world_size / (global_videos * samples)  # a mean over the global batch's captions
    loss = -(advantage * token_log_probs.sum(1)).sum() * per_caption
    if args.scst_entropy:
        entropy = -(log_probs[:sampled].exp() * log_probs[:sampled]).sum(-1) * mask[:sampled]  # (B*K, T)
        loss = loss - args.scst_entropy * entropy.sum() * per_caption
    if args.scst_ce_weight:
        reference_loss = F.cross_entropy(logits[sampled:].flatten(0, 1).float(), targets[sampled:].flatten(),
                                          ignore_index=config.pad_id, label_smoothing=config.label_smoothing)
        loss = loss + args.scst_ce_weight * reference_loss * len(videos) * run.world_size / global_videos
    return loss, rewards, baselines


def scst_epoch(run, epoch: int, features) -> dict:
    """One SCST epoch over the training videos in batches of --scst_batch_size (shuffled by (seed, epoch), the
    samples seeded by (seed, epoch, step, rank): a resumed run repeats it exactly). Under torchrun every rank
    samples its slice of each global batch. Returns the epoch's {"reward", "baseline"} means (rank 0's videos)
    and the seconds spent computing rewards."""
    args = run.args
    run.model.eval()  # sampled and scored without dropout: the gradient is that of the policy that sampled
    generator = torch.Generator().manual_seed(args.seed * 100003 + epoch)
    batches = torch.randperm(len(run.data.train.video_ids), generator=generator).split(args.scst_batch_size)
    reward_sum = baseline_sum = 0.0
    count = 0
    run.reward.seconds = 0.0
    bar = progress_bar(batches, desc=f"scst {epoch + 1}", unit="batch", leave=False, dynamic_ncols=True,
                       disable=run.rank != 0)
    for step, global_batch in enumerate(bar):
        videos, scale = global_batch[run.rank::run.world_size], 1.0
        if len(videos) == 0:  # fewer videos than ranks: join the gradient sync with zero weight
            videos, scale = global_batch[:1], 0.0
        seed = ((args.seed * 100003 + epoch) * 100003 + step) * 1009 + run.rank
        loss, rewards, baselines = scst_loss(run, features, videos, len(global_batch), seed)
        run.optimizer.zero_grad(set_to_none=True)
        (loss * scale).backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), args.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        reward_sum += float(rewards.sum()) * scale
        baseline_sum += float(baselines.sum()) * scale
        count += rewards.numel() * int(scale)
        bar.set_postfix(reward=f"{reward_sum / max(1, count):.3f}")
    return {"reward": reward_sum / max(1, count), "baseline": baseline_sum / max(1, count),
            "reward_seconds": run.reward.seconds}


def scst_optimizer(args, decoder):
    """AdamW at the constant --scst_learning_rate (a scheduler too, so that checkpoints keep one shape)."""
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=args.scst_learning_rate, weight_decay=0.0)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def start_scst(run, epoch: int) -> None:
    """Switch the run to SCST after `epoch` epochs: the best cross-entropy weights (best.pt of this run; the --init
    weights with --epochs 0), a fresh optimiser, and the reward over the training references."""
    best = Path(run.args.out_dir) / "best.pt"
    if run.args.epochs and best.is_file():
        run.decoder.load_state_dict(load_checkpoint(best)["decoder"])
    run.optimizer, run.scheduler = scst_optimizer(run.args, run.decoder)
    run.scst_from = epoch
    ensure_reward(run)
    if run.rank == 0:
        started = f"epoch {epoch}'s best.pt" if run.args.epochs else run.args.init
        print(f"SCST from {started}: {run.args.scst_samples} samples per video, {run.args.scst_baseline} baseline, "
              f"reward {REWARD}", flush=True)


def ensure_reward(run) -> None:
    """The reward and each video's reference rows, made once when SCST starts or resumes."""
    if run.reward is not None:
        return
    train = run.data.train
    run.reward = CaptionReward(run.data.tokenizer, {vid: run.data.captions[vid] for vid in train.video_ids})
    run.captions_of_video = [np.flatnonzero(train.video_index == index) for index in range(len(train.video_ids))]


# ----------------------------------------------------------------------------------------------------------------------
# The run: distributed set-up, resume, the epoch loop and its files

def setup_distributed(device_name):
    """(rank, world_size, device). torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; plain python is rank 0 of 1.
    The device is common.resolve_device's: under torchrun, cuda:LOCAL_RANK."""
    device = torch.device(resolve_device(device_name))
    set_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return 0, 1, device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


# Ranks wait at the cache for the slowest one to finish encoding its shard: hours for a large dataset, far beyond
# the process group's 10 minutes, so that wait has a group of its own (gloo, on the CPU) with this timeout.
CACHE_WAIT = datetime.timedelta(hours=24)


class OtherRankFailed(UserError):
    """Another torchrun process failed (and printed its own error); this one stops too."""


def cache_barrier():
    """barrier(problem) for split_latents under torchrun: wait for every rank to build its shard of the cache,
    then stop every rank when one failed; the failed rank raises its own error, the others OtherRankFailed."""
    group = dist.new_group(backend="gloo", timeout=CACHE_WAIT)

    def barrier(problem=None):
        failed = torch.tensor([int(problem is not None)])
        dist.all_reduce(failed, group=group)  # the number of ranks that failed
        if problem is not None:
            raise problem
        if failed.item():
            raise OtherRankFailed(f"{failed.item()} of the {dist.get_world_size()} processes failed while building "
                                  "the cache (their error is above); every process stops")
    return barrier


def check_same_decoder(config: dict, decoder, path) -> None:
    """CheckpointError unless a checkpoint's decoder config equals the decoder the flags build."""
    if DecoderConfig(**config) == decoder.config:
        return
    ours = asdict(decoder.config)
    differ = [f"{key} {value} (now {ours.get(key)})" for key, value in config.items() if ours.get(key) != value]
    raise CheckpointError(f"{path}: trained with other decoder settings ({', '.join(differ[:4])}); "
                          "pass the flags it was trained with, or another --out_dir")


def restore(resume, run) -> tuple:
    """Load last.pt's weights and optimiser state (SCST's, when it stopped during SCST): (epochs done, best val
    CIDEr, epochs without improvement)."""
    if resume is None:
        return 0, -1.0, 0
    check_same_decoder(resume["decoder_config"], run.decoder, Path(run.args.out_dir) / "last.pt")
    run.decoder.load_state_dict(resume["decoder"])
    run.scst_from = resume.get("scst_from")
    if run.scst_from is not None:
        run.optimizer, run.scheduler = scst_optimizer(run.args, run.decoder)
        ensure_reward(run)
    run.optimizer.load_state_dict(resume["optimizer"])
    run.scheduler.load_state_dict(resume["scheduler"])
    return resume["epoch"], resume["best_cider"], resume["bad_epochs"]


def keep_log_until(log_path, epoch):
    """Drop log.jsonl lines after `epoch` (-1 = start afresh), so a resumed run never repeats an epoch's line."""
    if not log_path.exists():
        return
    records = [line for line in log_path.read_text().splitlines() if line.strip()]
    write_text(log_path, "".join(line + "\n" for line in records if json.loads(line).get("epoch", 0) <= epoch))


def save_epoch(out_dir, payload, improved):
    """log.jsonl line first, then best.pt and last.pt, each atomic: a kill anywhere loses at most this epoch.
    A failed save is a UserError, the previous checkpoint kept."""
    try:
        with open(out_dir / "log.jsonl", "a") as log:
            log.write(json.dumps(payload["metrics"]) + "\n")
        if improved:
            save_checkpoint(out_dir / "best.pt", payload)
        save_checkpoint(out_dir / "last.pt", payload)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot save epoch {payload['epoch']} ({error.strerror or error}); the previous "
                        "checkpoint is kept; free space and rerun with --resume") from None


@dataclass
class Run:
    """What every epoch of a training run shares: flags, data, the decoder (and its DDP wrapper), the optimiser,
    the process's place under torchrun, the features on the device, and, once SCST starts, its reward."""

    args: argparse.Namespace
    data: TrainingData
    decoder: CaptionDecoder
    model: torch.nn.Module        # the decoder, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: object
    rank: int
    world_size: int
    device: torch.device
    train_features: torch.Tensor
    val_features: torch.Tensor
    tensorboard: object = None
    scst_from: int | None = None  # epochs done when SCST began (None: cross-entropy epochs)
    reward: CaptionReward | None = None
    captions_of_video: list | None = None

    def reference_rows(self, videos, seed) -> torch.Tensor:
        """One caption row of each video (rows of the training split), drawn by seed, trimmed of padding."""
        rng = np.random.default_rng(seed)
        picked = [int(rng.choice(self.captions_of_video[index])) for index in videos.tolist()]
        rows = torch.from_numpy(self.data.train.rows[picked])
        return rows[:, : int((rows != self.decoder.config.pad_id).sum(1).max())]

    @property
    def total_epochs(self) -> int:
        return self.args.epochs + self.args.scst_epochs if self.scst_from is None else \
            self.scst_from + self.args.scst_epochs

    def scst_record(self) -> dict:
        """What the checkpoint and the model card say about SCST."""
        return {"after_epoch": self.scst_from, "reward": REWARD, "samples": self.args.scst_samples,
                "baseline": self.args.scst_baseline, "advantage": self.args.scst_advantage,
                "learning_rate": self.args.scst_learning_rate,
                "temperature": self.args.scst_temperature, "top_p": self.args.scst_top_p,
                "ce_weight": self.args.scst_ce_weight, "entropy": self.args.scst_entropy,
                "init": self.args.init if not self.args.epochs else None}


def end_epoch(run: Run, epoch: int, record: dict, best: tuple) -> tuple:
    """Rank 0 after an epoch: validate, write log.jsonl, best.pt and last.pt, redraw curves.png (and the
    TensorBoard scalars), print the epoch's line. record holds the epoch's training figures; best is (best val
    CIDEr, epochs without improvement); returns it updated."""
    args, data = run.args, run.data
    caption_ids = data.val.video_ids[: args.val_videos] if args.val_videos else data.val.video_ids
    references = {vid: data.captions[vid] for vid in caption_ids}
    val_loss, metrics, captions = validate(run.decoder, data.tokenizer, data.val, run.val_features, references, args,
                                           run.device)
    improved = metrics["CIDEr"] > best[0]
    best = (metrics["CIDEr"], 0) if improved else (best[0], best[1] + 1)
    seconds = time.time() - record.pop("started")
    record = {"epoch": epoch + 1, **record, "val_loss": val_loss, "val": metrics,
              "lr": run.scheduler.get_last_lr()[0], "seconds": seconds}
    training_state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                      "best_cider": best[0], "bad_epochs": best[1], "scst_from": run.scst_from,
                      "scst": run.scst_record() if run.scst_from is not None and epoch + 1 > run.scst_from else None}
    payload = make_checkpoint(run.decoder, data.tokenizer_proto, data.encoder_meta, vars(args), record, epoch + 1,
                              training_state, data=data.data_record)
    save_epoch(Path(args.out_dir), payload, improved)
    redraw(args.out_dir)
    if run.tensorboard is not None:
        add_scalars(run.tensorboard, record)
    if "scst" in record:
        trained = f"reward {record['scst']['reward']:.3f} (baseline {record['scst']['baseline']:.3f})"
    else:
        trained = f"{args.init} as it is" if record["train_loss"] is None else f"train loss {record['train_loss']:.3f}"
    print(f"epoch {epoch + 1}/{run.total_epochs}: {trained}, val loss {val_loss:.3f}, "
          f"val CIDEr {metrics['CIDEr']:.3f}, BLEU-4 {metrics['Bleu_4']:.3f}{' (best)' if improved else ''}, "
          f"{record['seconds']:.0f}s  e.g. \"{captions[0]}\"", flush=True)
    return best


def train_epoch(run: Run, epoch: int, features) -> dict:
    """One cross-entropy epoch over every training caption: {"train_loss"}."""
    args = run.args
    generator = torch.Generator().manual_seed(args.seed * 100003 + epoch)  # same batches on every rank
    options = EpochOptions(args.batch_size, desc=f"epoch {epoch + 1}", generator=generator,
                           buckets=args.length_buckets, grad_clip=args.grad_clip, bf16=use_bf16(args.bf16, run.device), rank=run.rank,
                           world_size=run.world_size)
    loss = run_epoch(run.model, features, run.data.train.video_index, run.data.train.rows, run.device, options,
                     run.optimizer, run.scheduler)
    return {"train_loss": loss}


def start_run(args, data: TrainingData, decoder, rank, world_size, device) -> Run:
    """The Run: decoder on the device (with --init's weights), DDP under torchrun, the cross-entropy optimiser,
    the features on the device."""
    decoder.to(device)
    if args.init and data.resume is None:
        initial = load_checkpoint(args.init)
        if initial["tokenizer"] != data.tokenizer_proto:
            raise CheckpointError(f"{args.tokenizer_path}: differs from the tokenizer of {args.init}")
        check_same_decoder(initial["decoder_config"], decoder, args.init)
        decoder.load_state_dict(initial["decoder"])
    optimizer, scheduler = make_optimizer(args, decoder, len(data.train.rows))
    model = decoder
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(decoder, device_ids=[device] if device.type == "cuda" else None)
    return Run(args, data, decoder, model, optimizer, scheduler, rank, world_size, device,
               torch.from_numpy(data.train.features).to(device), torch.from_numpy(data.val.features).to(device))


def train(args, data: TrainingData, decoder, rank, world_size, device) -> None:
    """The epoch loop: --epochs of cross-entropy on every caption, then --scst_epochs of SCST from the best of
    them; after each, rank 0 validates and saves; early stop after --patience (which also ends the cross-entropy
    part early)."""
    out_dir = Path(args.out_dir)
    run = start_run(args, data, decoder, rank, world_size, device)
    epoch, *best = restore(data.resume, run)
    if rank == 0 and data.resume is not None:
        print(f"resumed from {out_dir / 'last.pt'} after epoch {epoch}")
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        keep_log_until(out_dir / "log.jsonl", epoch if data.resume is not None else -1)
    run.tensorboard = open_tensorboard(out_dir / "tensorboard", epoch) if args.tensorboard and rank == 0 else None
    while True:
        stalled = bool(args.patience) and best[1] >= args.patience
        if run.scst_from is None and args.scst_epochs and (epoch >= args.epochs or stalled):
            if stalled and rank == 0:
                print(f"cross-entropy stops early: no better val CIDEr for {best[1]} epochs")
            start_scst(run, epoch)
            best[1], stalled = 0, False
            if epoch == 0:  # from --init: its val CIDEr is the one to beat, and best.pt holds it until beaten
                if rank == 0:
                    best = list(end_epoch(run, -1, {"train_loss": None, "init": args.init, "started": time.time()},
                                          best))
                if world_size > 1:
                    dist.broadcast_object_list(best, src=0)
        if epoch >= run.total_epochs:
            break
        if stalled:
            if rank == 0:
                print(f"early stop: no better val CIDEr for {best[1]} epochs")
            break
        started = time.time()
        torch.manual_seed(args.seed * 100003 + epoch)  # dropout; resumable without saving RNG state
        features = run.train_features if args.views == 1 else pick_views(run.train_features, args.seed, epoch)
        if run.scst_from is None:
            record = train_epoch(run, epoch, features)
        else:
            record = {"train_loss": None, "scst": scst_epoch(run, epoch, features)}
        if rank == 0:  # validation and files on rank 0 only: metrics equal the single-process ones
            best = end_epoch(run, epoch, {**record, "started": started}, best)
        if world_size > 1:  # every rank takes the same early-stopping decision
            best = list(best)
            dist.broadcast_object_list(best, src=0)
        best = list(best)
        epoch += 1
    if run.tensorboard is not None:
        run.tensorboard.close()
    if rank == 0:
        print(f"best val CIDEr {best[0]:.3f}; checkpoints in {out_dir}")


# What train.py writes in --out_dir (and out_dir/tensorboard with --tensorboard).
RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "curves.png")


def check_args(args):
    """None, or one line saying which flags do not go together, or why --out_dir cannot take the run."""
    if args.features and args.views > 1:
        return "--views samples videos again; precomputed --features have one sampling: leave --views out"
    if args.decoder == "attention" and args.latent_every_step:
        return ("--latent_every_step goes with --decoder pooled; the attention decoder reads the frames at "
                "every step already")
    if args.tensorboard and not tensorboard_available():
        return TENSORBOARD_MISSING
    if not args.epochs and not (args.init and args.scst_epochs):
        return "--epochs 0 trains nothing: add --init CKPT --scst_epochs N to fine-tune a checkpoint by SCST"
    if args.init and not Path(args.init).is_file():
        return f"{args.init}: no such checkpoint; pass --init a best.pt or last.pt written by train.py"
    if args.init and Path(args.init).resolve() in {(Path(args.out_dir) / name).resolve() for name in ("best.pt", "last.pt")}:
        return (f"{args.init}: --init is this run's own checkpoint, which training overwrites; copy it elsewhere "
                "or pass another --out_dir")
    out_dir = Path(args.out_dir)
    if args.resume and args.overwrite:
        return "--resume goes on with the run in --out_dir, --overwrite starts it again: pass one"
    held = [name for name in ("last.pt", "best.pt", "log.jsonl") if (out_dir / name).is_file()]
    if held and not (args.resume or args.overwrite):
        return (f"{out_dir}: holds a run ({', '.join(held)}); pass --resume to go on with it, --overwrite to start "
                "it again, or another --out_dir")
    try:
        check_outputs([("--out_dir", out_dir / name) for name in RUN_FILES],
                      [("--tokenizer_path", args.tokenizer_path), ("--annotations", args.annotations),
                       ("--features", args.features), ("--xclip_model", args.xclip_model)])
        if not args.resume:  # a run's folder may hold the user's notes; a new one holds only what train.py writes
            check_output_folder(out_dir, "--out_dir", lambda entry: entry.name in RUN_FILES + ("tensorboard",),
                                args.overwrite)
    except UserError as error:
        return str(error)
    return None


def main(args) -> int:
    use_warning_lines()
    problem = check_args(args)
    if problem:
        return fail(problem)
    rank, world_size, device = 0, 1, None
    try:
        rank, world_size, device = setup_distributed(args.device)
        data = prepare_data(args, device, world_size)
        if rank == 0:
            print(f"train: {len(data.train.video_ids)} videos, {len(data.train.rows)} captions; val: "
                  f"{len(data.val.video_ids)} videos, {len(data.val.rows)} captions; device {device}"
                  + (f" x {world_size} processes" if world_size > 1 else ""))
        train(args, data, build_decoder(args, data), rank, world_size, device)
    except OtherRankFailed as error:
        return fail(error) if rank == 0 else 2  # one line for the run, beside the failed rank's own
    except UserError as error:
        return fail(error)
    except OSError as error:  # a folder that cannot be made or written, a disk that fills up
        return fail(f"{error.filename or args.out_dir}: {one_line(error)}; check the path and free space")
    except KeyboardInterrupt:
        return interrupted(f"{Path(args.out_dir) / 'last.pt'} holds the last finished epoch, if any: rerun with "
                           "--resume")
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
