"""Train the LSTM caption decoder on cached X-CLIP latents.

    python train.py --data_dir data --tokenizer_path tokenizer.model --epochs 20

Latents come from the on-disk cache (missing ones are encoded first, once). Each epoch prints
train loss, validation loss and validation CIDEr (beam search on the val videos, all references),
writes models/last.pt, models/best.pt (by CIDEr), a line in models/log.jsonl and redraws models/curves.png
(curves.py; --tensorboard also writes the scalars for TensorBoard). --resume continues
a killed run from last.pt; on CPU with a fixed seed it ends with the same weights as an unbroken run.

Under `torchrun --nproc_per_node N train.py ...` it trains with DistributedDataParallel (NCCL on GPUs,
gloo on CPU): each rank encodes its shard of the missing videos, takes its slice of every global
batch, and rank 0 validates and writes the files.

--views K trains on K cached samplings per video, one drawn per video each epoch (seeded by the epoch,
so --resume stays exact); validation averages them. --decoder attention trains the decoder that
attends over X-CLIP's per-frame features (cached beside the latents) instead of the pooled latent.
"""
import argparse
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
from tqdm import tqdm

from annotations import add_data_arguments, load_dataset, normalize_caption
from checkpoint import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from common import (DEFAULT_XCLIP, UserError, count, fail, fraction, interrupted, non_negative, one_line,
                    positive_float, positive_int, resolve_device, write_text)
from curves import TENSORBOARD_MISSING, add_scalars, open_tensorboard, redraw, tensorboard_available
from encode import load_encoder, split_features, split_latents
from metrics import score_captions
from model import CaptionDecoder, DecoderConfig, caption_features


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    data.add_argument("--num_workers", type=count, default=2, help="DataLoader workers decoding videos for the cache")
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
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=positive_int, default=20, help="maximum epochs")
    optim.add_argument("--batch_size", type=positive_int, default=128, help="captions per batch (global, under torchrun)")
    optim.add_argument("--learning_rate", type=positive_float, default=1e-3, help="peak AdamW learning rate")
    optim.add_argument("--weight_decay", type=non_negative, default=0.01, help="AdamW weight decay")
    optim.add_argument("--warmup_steps", type=count, default=500,
                       help="linear warm-up steps, then cosine decay; capped at a tenth of all steps + 1, so that "
                            "short runs still spend most of their steps at a useful learning rate")
    optim.add_argument("--grad_clip", type=non_negative, default=1.0, help="max gradient norm (0 = off)")
    optim.add_argument("--label_smoothing", type=fraction, default=0.1, help="label smoothing of the loss")
    optim.add_argument("--patience", type=count, default=5, help="stop after this many epochs without a better val CIDEr (0 = never)")
    optim.add_argument("--length_buckets", action=argparse.BooleanOptionalAction, default=True,
                       help="batch captions of similar length together (shuffled pools of batches, sorted by length, "
                            "batches in random order), so that little of a batch is padding")
    optim.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                       help="bf16 autocast of the decoder: auto = on a GPU and on CPUs with native bf16 "
                            "(AVX512-BF16 or AMX), off elsewhere")
    run = parser.add_argument_group("run")
    run.add_argument("--beam_size", type=positive_int, default=3, help="beam size for validation captions")
    run.add_argument("--val_videos", type=count, default=0, help="caption only the first N val videos for CIDEr (0 = all)")
    run.add_argument("--out_dir", default="models", help="where last.pt, best.pt and log.jsonl go")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
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
    features_by_split, cache = split_latents(dataset, ["train", "val"], encoder, args.cache_dir, args.encode_dtype,
                                             args.num_workers, barrier=dist.barrier if world_size > 1 else None,
                                             views=args.views, frame_features=frame_features)
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
    decoder.set_latent_stats(flat.mean(0), flat.std(0))
    return decoder


def lr_lambda(warmup_steps, total_steps):
    """Linear warm-up to 1, then cosine decay to 0 at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def make_optimizer(args, decoder, num_captions):
    """AdamW, and a scheduler warming up for --warmup_steps (at most a tenth of all steps + 1), then cosine."""
    # fused: one kernel per step instead of a dozen passes over every parameter (the same update to ~1e-7)
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
    """--bf16 auto|on|off on this device: auto is on for GPUs and for CPUs with native bf16."""
    if choice != "auto":
        return choice == "on"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def run_epoch(model, features, video_index, rows, batch_size, device, optimizer=None, scheduler=None,
              grad_clip=0.0, generator=None, desc="train", rank=0, world_size=1, buckets=False, bf16=None):
    """One pass over the captions; trains when an optimizer is given. Returns the mean loss.

    Batches come from epoch_batches (shuffled by generator, of similar lengths with buckets). bf16: autocast the
    decoder to bfloat16 (None: on CUDA only). Under torchrun every rank draws the same global batches and takes
    its slice rank::world_size of each; the loss is rescaled so that DDP's gradient average equals the
    single-process gradient of the whole batch (a token-weighted mean), whatever the ranks' token counts.
    """
    pad_id = getattr(model, "module", model).config.pad_id
    training = optimizer is not None
    model.train(training)
    rows, video_index = torch.from_numpy(rows), torch.from_numpy(video_index)
    lengths = (rows != pad_id).sum(1)  # (N,) tokens per caption
    batches = epoch_batches(lengths, batch_size, training, generator, buckets)
    bf16 = device.type == "cuda" if bf16 is None else bf16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    # Bucketed batches differ in length, and a batch's loss is its tokens' mean: weigh each batch by its tokens
    # (against the epoch's mean per batch), so that every token counts alike, as in batches of mixed lengths.
    mean_batch_tokens = float((lengths - 1).sum()) / len(batches) if buckets and training else None
    total_loss, total_count = 0.0, 0
    bar = tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=rank != 0)
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
        total_loss += loss.item() * len(batch)
        total_count += len(batch)
        bar.set_postfix(loss=f"{total_loss / total_count:.3f}")
    return total_loss / max(1, total_count)


def validate(decoder, tokenizer, val: Split, features, references, args, device):
    """Validation loss (teacher forcing) on every val caption, and caption metrics (beam search, all references,
    no METEOR) on the videos in `references`."""
    with torch.no_grad():
        loss = run_epoch(decoder, features, val.video_index, val.rows, args.batch_size, device, desc="val loss",
                         bf16=use_bf16(args.bf16, device))
    position = {video_id: row for row, video_id in enumerate(val.video_ids)}
    video_ids = list(references)
    rows = torch.tensor([position[video_id] for video_id in video_ids], device=features.device)
    captions = caption_features(decoder, tokenizer, features[rows], beam_size=args.beam_size, max_len=args.max_len)
    # No JVM per epoch: the Python PTB tokenizer (equal to Java's on all but 2 of MSR-VTT's 200k captions), no METEOR.
    metrics = score_captions(dict(zip(video_ids, captions)), references, java=False, meteor=False)
    return loss, metrics, captions


# ----------------------------------------------------------------------------------------------------------------------
# The run: distributed set-up, resume, the epoch loop and its files

def setup_distributed(device_name):
    """(rank, world_size, device). torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; plain python is rank 0 of 1."""
    device = torch.device(resolve_device(device_name))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def restore(resume, decoder, optimizer, scheduler, out_dir) -> tuple:
    """Load last.pt's weights and optimiser state: (epochs done, best val CIDEr, epochs without improvement)."""
    if resume is None:
        return 0, -1.0, 0
    if DecoderConfig(**resume["decoder_config"]) != decoder.config:
        ours = asdict(decoder.config)
        differ = [f"{key} {value} (now {ours.get(key)})" for key, value in resume["decoder_config"].items()
                  if ours.get(key) != value]
        raise CheckpointError(f"{out_dir / 'last.pt'}: trained with other decoder settings ({', '.join(differ[:4])}); "
                              "pass the flags it was trained with, or another --out_dir")
    decoder.load_state_dict(resume["decoder"])
    optimizer.load_state_dict(resume["optimizer"])
    scheduler.load_state_dict(resume["scheduler"])
    return resume["epoch"], resume["best_cider"], resume["bad_epochs"]


def keep_log_until(log_path, epoch):
    """Drop log.jsonl lines after `epoch` (0 = start afresh), so a resumed run never repeats an epoch's line."""
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


def end_epoch(args, data, val_features, decoder, optimizer, scheduler, epoch, train_loss, started, best, device,
              tensorboard=None):
    """Rank 0 after an epoch: validate, write log.jsonl, best.pt and last.pt, redraw curves.png (and the
    TensorBoard scalars), print the epoch's line. best is (best val CIDEr, epochs without improvement); returns it
    updated."""
    caption_ids = data.val.video_ids[: args.val_videos] if args.val_videos else data.val.video_ids
    references = {vid: data.captions[vid] for vid in caption_ids}
    val_loss, metrics, captions = validate(decoder, data.tokenizer, data.val, val_features,
                                           references, args, device)
    improved = metrics["CIDEr"] > best[0]
    best = (metrics["CIDEr"], 0) if improved else (best[0], best[1] + 1)
    record = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val": metrics,
              "lr": scheduler.get_last_lr()[0], "seconds": time.time() - started}
    training_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "best_cider": best[0], "bad_epochs": best[1]}
    payload = make_checkpoint(decoder, data.tokenizer_proto, data.encoder_meta, vars(args), record, epoch + 1,
                              training_state, data=data.data_record)
    save_epoch(Path(args.out_dir), payload, improved)
    redraw(args.out_dir)
    if tensorboard is not None:
        add_scalars(tensorboard, record)
    print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.3f}, val loss {val_loss:.3f}, "
          f"val CIDEr {metrics['CIDEr']:.3f}, BLEU-4 {metrics['Bleu_4']:.3f}{' (best)' if improved else ''}, "
          f"{record['seconds']:.0f}s  e.g. \"{captions[0]}\"", flush=True)
    return best


def train(args, data: TrainingData, decoder, rank, world_size, device) -> None:
    """The epoch loop: train on every caption, then (rank 0) validate and save; early stop after --patience."""
    out_dir = Path(args.out_dir)
    decoder.to(device)
    optimizer, scheduler = make_optimizer(args, decoder, len(data.train.rows))
    start_epoch, *best = restore(data.resume, decoder, optimizer, scheduler, out_dir)
    if rank == 0 and data.resume is not None:
        print(f"resumed from {out_dir / 'last.pt'} after epoch {start_epoch}")
    model = decoder
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(decoder, device_ids=[device] if device.type == "cuda" else None)
    train_features = torch.from_numpy(data.train.features).to(device)
    val_features = torch.from_numpy(data.val.features).to(device)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        keep_log_until(out_dir / "log.jsonl", start_epoch)
    tensorboard = open_tensorboard(out_dir / "tensorboard", start_epoch) if args.tensorboard and rank == 0 else None
    for epoch in range(start_epoch, args.epochs):
        if args.patience and best[1] >= args.patience:
            if rank == 0:
                print(f"early stop: no better val CIDEr for {best[1]} epochs")
            break
        started = time.time()
        torch.manual_seed(args.seed * 100003 + epoch)  # dropout; resumable without saving RNG state
        generator = torch.Generator().manual_seed(args.seed * 100003 + epoch)  # same batches on every rank
        epoch_features = train_features if args.views == 1 else pick_views(train_features, args.seed, epoch)
        train_loss = run_epoch(model, epoch_features, data.train.video_index, data.train.rows, args.batch_size,
                               device, optimizer, scheduler, args.grad_clip, generator, desc=f"epoch {epoch + 1}",
                               rank=rank, world_size=world_size, buckets=args.length_buckets,
                               bf16=use_bf16(args.bf16, device))
        if rank == 0:  # validation and files on rank 0 only: metrics equal the single-process ones
            best = end_epoch(args, data, val_features, decoder, optimizer, scheduler, epoch, train_loss, started,
                             best, device, tensorboard)
        if world_size > 1:  # every rank takes the same early-stopping decision
            best = list(best)
            dist.broadcast_object_list(best, src=0)
    if tensorboard is not None:
        tensorboard.close()
    if rank == 0:
        print(f"best val CIDEr {best[0]:.3f}; checkpoints in {out_dir}")


def check_args(args):
    """None, or one line saying which flags do not go together."""
    if args.features and args.views > 1:
        return "--views samples videos again; precomputed --features have one sampling: leave --views out"
    if args.decoder == "attention" and args.latent_every_step:
        return ("--latent_every_step goes with --decoder pooled; the attention decoder reads the frames at "
                "every step already")
    if args.tensorboard and not tensorboard_available():
        return TENSORBOARD_MISSING
    out_dir = Path(args.out_dir)
    if args.resume and args.overwrite:
        return "--resume goes on with the run in --out_dir, --overwrite starts it again: pass one"
    held = [name for name in ("last.pt", "best.pt", "log.jsonl") if (out_dir / name).is_file()]
    if held and not (args.resume or args.overwrite):
        return (f"{out_dir}: holds a run ({', '.join(held)}); pass --resume to go on with it, --overwrite to start "
                "it again, or another --out_dir")
    return None


def main(args) -> int:
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
