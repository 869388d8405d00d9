"""Train the LSTM caption decoder on cached X-CLIP latents of MSR-VTT.

    python train.py --data_dir data --tokenizer_path tokenizer.model --epochs 20

Latents come from the on-disk cache (missing ones are encoded first, once). Under
`torchrun --nproc_per_node N train.py ...` it trains with DistributedDataParallel (NCCL on GPUs,
gloo on CPU): each rank encodes its shard of the missing videos, takes its slice of every global
batch, and rank 0 validates and writes the files. Each epoch prints
train loss, validation loss and validation CIDEr (beam search on the val videos, all references),
writes models/last.pt, models/best.pt (by CIDEr) and a line in models/log.jsonl. --resume continues
a killed run from last.pt; on CPU with a fixed seed it ends with the same weights as an unbroken run.

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
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", default="data", help="folder holding MSRVTT/ (or MSRVTT/ itself)")
    data.add_argument("--scheme", default="official", choices=["official", "1k-A"], help="MSR-VTT split scheme")
    data.add_argument("--tokenizer_path", default="tokenizer.model", help="sentencepiece model from create_tokenizer.py")
    data.add_argument("--xclip_model", default="microsoft/xclip-base-patch32-16-frames",
                      help="X-CLIP hub name or local folder (frozen video encoder)")
    data.add_argument("--cache_dir", default="cache", help="where the latent cache lives")
    data.add_argument("--encode_dtype", default="fp32", choices=["fp32", "bf16"], help="encoder precision for the cache")
    data.add_argument("--views", type=int, default=1,
                      help="samplings per video in the cache (1 = middle frames; K > 1 = K jittered ones, one "
                           "drawn per video each epoch, their mean used for validation)")
    data.add_argument("--max_len", type=int, default=30, help="max caption length in tokens (EOS included)")
    data.add_argument("--num_workers", type=int, default=2, help="DataLoader workers decoding videos for the cache")
    model = parser.add_argument_group("decoder")
    model.add_argument("--embed_dim", type=int, default=256, help="token embedding size")
    model.add_argument("--hidden_dim", type=int, default=512, help="LSTM hidden size")
    model.add_argument("--num_layers", type=int, default=2, help="LSTM layers")
    model.add_argument("--dropout", type=float, default=0.3, help="dropout on embeddings, between layers and outputs")
    model.add_argument("--latent_every_step", action="store_true", help="also feed the latent at every step")
    model.add_argument("--decoder", default="pooled", choices=["pooled", "attention"],
                       help="pooled: the video latent sets the LSTM state; attention: soft attention over the "
                            "per-frame features at every step")
    model.add_argument("--attention_dim", type=int, default=256, help="attention hidden size (--decoder attention)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=20, help="maximum epochs")
    optim.add_argument("--batch_size", type=int, default=128, help="captions per batch")
    optim.add_argument("--learning_rate", type=float, default=1e-3, help="peak AdamW learning rate")
    optim.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    optim.add_argument("--warmup_steps", type=int, default=500, help="linear warm-up steps, then cosine decay")
    optim.add_argument("--grad_clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    optim.add_argument("--label_smoothing", type=float, default=0.1, help="label smoothing of the loss")
    optim.add_argument("--patience", type=int, default=5, help="stop after this many epochs without a better val CIDEr (0 = never)")
    run = parser.add_argument_group("run")
    run.add_argument("--beam_size", type=int, default=3, help="beam size for validation captions")
    run.add_argument("--val_videos", type=int, default=0, help="caption only the first N val videos for CIDEr (0 = all)")
    run.add_argument("--out_dir", default="models", help="where last.pt, best.pt and log.jsonl go")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    run.add_argument("--seed", type=int, default=0, help="random seed (batches, dropout, init)")
    run.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
    return parser.parse_args(argv)


def encode_captions(captions, tokenizer, max_len):
    """Captions -> (N, max_len + 1) int64 array: BOS, the normalised caption's ids, EOS, padding."""
    from create_tokenizer import normalize_caption

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


def pick_views(latents, seed, epoch):
    """One view per video for this epoch: latents (N, K, ...) -> (N, ...), drawn from (seed, epoch) alone, so
    that every rank and a resumed run draw the same views."""
    import torch

    views = np.random.default_rng([seed, epoch]).integers(latents.size(1), size=latents.size(0))  # (N,)
    return latents[torch.arange(latents.size(0), device=latents.device), torch.from_numpy(views).to(latents.device)]


def lr_lambda(warmup_steps, total_steps):
    """Linear warm-up to 1, then cosine decay to 0 at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def run_epoch(model, latents, video_index, rows, batch_size, device, optimizer=None, scheduler=None,
              grad_clip=0.0, generator=None, desc="train", rank=0, world_size=1):
    """One pass over the captions; trains when an optimizer is given. Returns the mean loss.

    Under torchrun every rank draws the same global batches and takes its slice rank::world_size of
    each; the loss is rescaled so that DDP's gradient average equals the single-process gradient of
    the whole batch (a token-weighted mean), whatever the ranks' token counts.
    """
    import torch
    from tqdm import tqdm

    pad_id = getattr(model, "module", model).config.pad_id
    training = optimizer is not None
    model.train(training)
    order = torch.randperm(len(rows), generator=generator) if training else torch.arange(len(rows))
    rows, video_index = torch.from_numpy(rows), torch.from_numpy(video_index)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    total_loss, total_count = 0.0, 0
    bar = tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False, dynamic_ncols=True,
               disable=rank != 0)
    for start in bar:
        global_batch = order[start:start + batch_size]
        batch = global_batch[rank::world_size]
        scale = 1.0
        if world_size > 1:
            global_tokens = int((rows[global_batch, 1:] != pad_id).sum())
            if len(batch) == 0:  # fewer captions than ranks: join the gradient sync with zero weight
                batch, scale = global_batch[:1], 0.0
            else:
                scale = int((rows[batch, 1:] != pad_id).sum()) * world_size / global_tokens
        batch_rows = rows[batch]
        length = int((batch_rows != pad_id).sum(1).max())  # trim padding columns
        batch_rows = batch_rows[:, :length].to(device, non_blocking=True)
        batch_latents = latents[video_index[batch].to(latents.device)]  # (B, D)
        with torch.set_grad_enabled(training), autocast:
            _, loss = model(batch_latents, batch_rows[:, :-1], batch_rows[:, 1:])
        if training:
            optimizer.zero_grad(set_to_none=True)
            (loss * scale if world_size > 1 else loss).backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
        total_loss += loss.item() * len(batch)
        total_count += len(batch)
        bar.set_postfix(loss=f"{total_loss / total_count:.3f}")
    return total_loss / max(1, total_count)


def setup_distributed(device_name):
    """(rank, world_size, device). torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; plain python is rank 0 of 1."""
    import torch
    import torch.distributed as dist
    from encode import resolve_device

    device = torch.device(resolve_device(device_name))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def make_decoder(args, vocab_size, latent_dim, tokenizer, num_frames=16):
    from model import CaptionDecoder, DecoderConfig

    config = DecoderConfig(vocab_size=vocab_size, latent_dim=latent_dim, embed_dim=args.embed_dim,
                           hidden_dim=args.hidden_dim, num_layers=args.num_layers, dropout=args.dropout,
                           latent_every_step=args.latent_every_step, label_smoothing=args.label_smoothing,
                           pad_id=tokenizer.pad_id(), bos_id=tokenizer.bos_id(), eos_id=tokenizer.eos_id(),
                           decoder_type=args.decoder, attention_dim=args.attention_dim, num_frames=num_frames)
    return CaptionDecoder(config)


def validate(decoder, tokenizer, latents, video_index, rows, references, args, device):
    """Validation loss (teacher forcing) and caption metrics (beam search, all references; no METEOR)."""
    import torch
    from evaluate import caption_latents, score_captions

    with torch.no_grad():
        loss = run_epoch(decoder, latents, video_index, rows, args.batch_size, device, desc="val loss")
    video_ids = list(references)
    captions = caption_latents(decoder, tokenizer, latents[: len(video_ids)], beam_size=args.beam_size,
                               max_len=args.max_len)
    # No JVM per epoch: the Python PTB tokenizer (equal to Java's on all but 2 of MSR-VTT's 200k captions), no METEOR.
    metrics = score_captions(dict(zip(video_ids, captions)), references, java=False, meteor=False)
    return loss, metrics, captions


def keep_log_until(log_path, epoch):
    """Drop log.jsonl lines after `epoch` (0 = start afresh), so a resumed run never repeats an epoch's line."""
    if not log_path.exists():
        return
    records = [line for line in log_path.read_text().splitlines() if line.strip()]
    kept = [line for line in records if json.loads(line).get("epoch", 0) <= epoch]
    temp = log_path.with_name(f".{log_path.name}.tmp{os.getpid()}")
    temp.write_text("".join(line + "\n" for line in kept))
    os.replace(temp, log_path)


def save_epoch(out_dir, payload, improved):
    """log.jsonl line first, then best.pt and last.pt, each atomic: a kill anywhere loses at most this epoch."""
    from checkpoint import save_checkpoint

    with open(out_dir / "log.jsonl", "a") as log:
        log.write(json.dumps(payload["metrics"]) + "\n")
    if improved:
        save_checkpoint(out_dir / "best.pt", payload)
    save_checkpoint(out_dir / "last.pt", payload)


def main(args):
    import torch
    import torch.distributed as dist
    import sentencepiece as spm
    from checkpoint import CheckpointError, load_checkpoint
    from dataset import DatasetError, VideoError, load_msrvtt
    from encode import CacheError, load_encoder, split_latents
    from model import DecoderConfig, EncoderLoadError

    out_dir = Path(args.out_dir)
    if args.views < 1:
        print(f"error: --views {args.views}: pass 1 (middle frames) or more (jittered samplings)", file=sys.stderr)
        return 2
    if args.decoder == "attention" and args.latent_every_step:
        print("error: --latent_every_step goes with --decoder pooled; the attention decoder reads the frames at "
              "every step already", file=sys.stderr)
        return 2
    rank, world_size, device = setup_distributed(args.device)
    try:
        if not Path(args.tokenizer_path).is_file():
            raise DatasetError(f"{args.tokenizer_path}: no tokenizer; run create_tokenizer.py first")
        tokenizer_proto = Path(args.tokenizer_path).read_bytes()
        tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_proto)
        resume = load_checkpoint(out_dir / "last.pt") if args.resume else None
        if resume is not None and resume["tokenizer"] != tokenizer_proto:
            raise CheckpointError(f"{args.tokenizer_path}: differs from the tokenizer of {out_dir / 'last.pt'}")
        msrvtt = load_msrvtt(args.data_dir, scheme=args.scheme)
        encoder, _ = load_encoder(args.xclip_model, args.encode_dtype, device)
        latents_by_split, cache = split_latents(msrvtt, ["train", "val"], encoder, args.cache_dir,
                                                args.encode_dtype, args.num_workers,
                                                barrier=dist.barrier if world_size > 1 else None,
                                                views=args.views, per_frame=args.decoder == "attention")
        del encoder  # the cache is all training needs
    except (DatasetError, VideoError, EncoderLoadError, CacheError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    # Latents (N, D), or per-frame features (N, T, D) for the attention decoder; with views, (N, K, ...).
    train_ids, train_latents = latents_by_split["train"]
    val_ids, val_latents = latents_by_split["val"]
    if args.views > 1:
        val_latents = val_latents.mean(axis=1)  # validation sees the mean of the views, as evaluate.py --views does
    if not train_ids or not val_ids:
        print(f"error: {args.data_dir}: need videos in both train and val splits "
              f"(found {len(train_ids)} and {len(val_ids)})", file=sys.stderr)
        return 2
    train_index, train_rows = caption_table(train_ids, msrvtt.captions, tokenizer, args.max_len)
    val_index, val_rows = caption_table(val_ids, msrvtt.captions, tokenizer, args.max_len)
    caption_val_ids = val_ids[: args.val_videos] if args.val_videos else val_ids
    if rank == 0:
        print(f"train: {len(train_ids)} videos, {len(train_rows)} captions; val: {len(val_ids)} videos, "
              f"{len(val_rows)} captions; device {device}" + (f" x {world_size} processes" if world_size > 1 else ""))

    torch.manual_seed(args.seed)
    latent_dim = train_latents.shape[-1]
    num_frames = val_latents.shape[1] if args.decoder == "attention" else 16  # val: (N, T, D) after the view mean
    decoder = make_decoder(args, tokenizer.get_piece_size(), latent_dim, tokenizer, num_frames)
    flat_latents = train_latents.reshape(-1, latent_dim)  # every view and frame counts in the statistics
    decoder.set_latent_stats(flat_latents.mean(0), flat_latents.std(0))
    decoder.to(device)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(min(args.warmup_steps, steps_per_epoch * args.epochs // 10 + 1),
                             steps_per_epoch * args.epochs))
    start_epoch, best_cider, bad_epochs = 0, -1.0, 0
    if resume is not None:
        if DecoderConfig(**resume["decoder_config"]) != decoder.config:
            print(f"error: {out_dir / 'last.pt'}: trained with other decoder settings ({resume['decoder_config']}); "
                  "pass the flags it was trained with, or another --out_dir", file=sys.stderr)
            return 2
        decoder.load_state_dict(resume["decoder"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch, best_cider, bad_epochs = resume["epoch"], resume["best_cider"], resume["bad_epochs"]
        if rank == 0:
            print(f"resumed from {out_dir / 'last.pt'} after epoch {start_epoch}")
    model = decoder
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(decoder, device_ids=[device] if device.type == "cuda" else None)

    train_latents_t = torch.from_numpy(train_latents).to(device)
    val_latents_t = torch.from_numpy(val_latents).to(device)
    references = {vid: msrvtt.captions[vid] for vid in caption_val_ids}
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        keep_log_until(out_dir / "log.jsonl", start_epoch)
    for epoch in range(start_epoch, args.epochs):
        if args.patience and bad_epochs >= args.patience:
            if rank == 0:
                print(f"early stop: no better val CIDEr for {bad_epochs} epochs")
            break
        started = time.time()
        torch.manual_seed(args.seed * 100003 + epoch)  # dropout; resumable without saving RNG state
        generator = torch.Generator().manual_seed(args.seed * 100003 + epoch)  # same batches on every rank
        epoch_latents = train_latents_t if args.views == 1 else pick_views(train_latents_t, args.seed, epoch)
        train_loss = run_epoch(model, epoch_latents, train_index, train_rows, args.batch_size, device,
                               optimizer, scheduler, args.grad_clip, generator, desc=f"epoch {epoch + 1}",
                               rank=rank, world_size=world_size)
        if rank == 0:  # validation and files on rank 0 only: metrics equal the single-process ones
            val_loss, metrics, captions = validate(decoder, tokenizer, val_latents_t, val_index, val_rows,
                                                   references, args, device)
            improved = metrics["CIDEr"] > best_cider
            best_cider, bad_epochs = (metrics["CIDEr"], 0) if improved else (best_cider, bad_epochs + 1)
            record = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val": metrics,
                      "lr": scheduler.get_last_lr()[0], "seconds": time.time() - started}
            payload = {"decoder_config": decoder.config.to_dict(), "decoder": decoder.state_dict(),
                       "tokenizer": tokenizer_proto, "encoder": dict(cache.meta), "args": vars(args),
                       "metrics": record, "epoch": epoch + 1, "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "best_cider": best_cider, "bad_epochs": bad_epochs}
            try:
                save_epoch(out_dir, payload, improved)
            except OSError as error:
                print(f"error: {out_dir}: cannot save epoch {epoch + 1} ({error.strerror or error}); the previous "
                      "checkpoint is kept; free space and rerun with --resume", file=sys.stderr)
                return 2
            print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.3f}, val loss {val_loss:.3f}, "
                  f"val CIDEr {metrics['CIDEr']:.3f}, BLEU-4 {metrics['Bleu_4']:.3f}{' (best)' if improved else ''}, "
                  f"{record['seconds']:.0f}s  e.g. \"{captions[0]}\"", flush=True)
        if world_size > 1:  # every rank takes the same early-stopping decision
            state = [best_cider, bad_epochs]
            dist.broadcast_object_list(state, src=0)
            best_cider, bad_epochs = state
    if rank == 0:
        print(f"best val CIDEr {best_cider:.3f}; checkpoints in {out_dir}")
    if world_size > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
