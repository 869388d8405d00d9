"""Train the LSTM caption decoder on cached X-CLIP latents of MSR-VTT.

    python train.py --data_dir data --tokenizer_path tokenizer.model --epochs 20

Latents come from the on-disk cache (missing ones are encoded first, once). Each epoch prints
train loss, validation loss and validation CIDEr (beam search on the val videos, all references),
writes models/last.pt, models/best.pt (by CIDEr) and a line in models/log.jsonl. --resume continues
a killed run from last.pt; on CPU with a fixed seed it ends with the same weights as an unbroken run.
"""
import argparse
import json
import math
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
    data.add_argument("--max_len", type=int, default=30, help="max caption length in tokens (EOS included)")
    data.add_argument("--num_workers", type=int, default=2, help="DataLoader workers decoding videos for the cache")
    model = parser.add_argument_group("decoder")
    model.add_argument("--embed_dim", type=int, default=256, help="token embedding size")
    model.add_argument("--hidden_dim", type=int, default=512, help="LSTM hidden size")
    model.add_argument("--num_layers", type=int, default=2, help="LSTM layers")
    model.add_argument("--dropout", type=float, default=0.3, help="dropout on embeddings, between layers and outputs")
    model.add_argument("--latent_every_step", action="store_true", help="also feed the latent at every step")
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


def lr_lambda(warmup_steps, total_steps):
    """Linear warm-up to 1, then cosine decay to 0 at total_steps."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def run_epoch(decoder, latents, video_index, rows, batch_size, device, optimizer=None, scheduler=None,
              grad_clip=0.0, generator=None, desc="train"):
    """One pass over the captions; trains when an optimizer is given. Returns the mean loss."""
    import torch
    from tqdm import tqdm

    training = optimizer is not None
    decoder.train(training)
    order = torch.randperm(len(rows), generator=generator) if training else torch.arange(len(rows))
    rows, video_index = torch.from_numpy(rows), torch.from_numpy(video_index)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    total_loss, total_count = 0.0, 0
    bar = tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False, dynamic_ncols=True)
    for start in bar:
        batch = order[start:start + batch_size]
        batch_rows = rows[batch]
        length = int((batch_rows != decoder.config.pad_id).sum(1).max())  # trim padding columns
        batch_rows = batch_rows[:, :length].to(device, non_blocking=True)
        batch_latents = latents[video_index[batch].to(latents.device)]  # (B, D)
        with torch.set_grad_enabled(training), autocast:
            _, loss = decoder(batch_latents, batch_rows[:, :-1], batch_rows[:, 1:])
        if training:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(decoder.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
        total_loss += loss.item() * len(batch)
        total_count += len(batch)
        bar.set_postfix(loss=f"{total_loss / total_count:.3f}")
    return total_loss / max(1, total_count)


def make_decoder(args, vocab_size, latent_dim, tokenizer):
    from model import CaptionDecoder, DecoderConfig

    config = DecoderConfig(vocab_size=vocab_size, latent_dim=latent_dim, embed_dim=args.embed_dim,
                           hidden_dim=args.hidden_dim, num_layers=args.num_layers, dropout=args.dropout,
                           latent_every_step=args.latent_every_step, label_smoothing=args.label_smoothing,
                           pad_id=tokenizer.pad_id(), bos_id=tokenizer.bos_id(), eos_id=tokenizer.eos_id())
    return CaptionDecoder(config)


def main(args):
    import torch
    import sentencepiece as spm
    from checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from dataset import DatasetError, VideoError, load_msrvtt
    from encode import CacheError, load_encoder, resolve_device, split_latents
    from evaluate import caption_latents, score_captions
    from model import EncoderLoadError

    out_dir = Path(args.out_dir)
    device = torch.device(resolve_device(args.device))
    try:
        if not Path(args.tokenizer_path).is_file():
            raise DatasetError(f"{args.tokenizer_path}: no tokenizer; run create_tokenizer.py first")
        tokenizer_proto = Path(args.tokenizer_path).read_bytes()
        tokenizer = spm.SentencePieceProcessor(model_proto=tokenizer_proto)
        resume = load_checkpoint(out_dir / "last.pt") if args.resume else None
        if resume is not None and resume["tokenizer"] != tokenizer_proto:
            raise CheckpointError(f"{args.tokenizer_path}: differs from the tokenizer of {out_dir / 'last.pt'}")
        msrvtt = load_msrvtt(args.data_dir, scheme=args.scheme)
        encoder, _ = load_encoder(args.xclip_model, args.encode_dtype, device.type)
        latents_by_split, cache = split_latents(msrvtt, ["train", "val"], encoder, args.cache_dir,
                                                args.encode_dtype, args.num_workers)
        del encoder  # the cache is all training needs
    except (DatasetError, VideoError, EncoderLoadError, CacheError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    train_ids, train_latents = latents_by_split["train"]
    val_ids, val_latents = latents_by_split["val"]
    if not train_ids or not val_ids:
        print(f"error: {args.data_dir}: need videos in both train and val splits "
              f"(found {len(train_ids)} and {len(val_ids)})", file=sys.stderr)
        return 2
    train_index, train_rows = caption_table(train_ids, msrvtt.captions, tokenizer, args.max_len)
    val_index, val_rows = caption_table(val_ids, msrvtt.captions, tokenizer, args.max_len)
    caption_val_ids = val_ids[: args.val_videos] if args.val_videos else val_ids
    print(f"train: {len(train_ids)} videos, {len(train_rows)} captions; val: {len(val_ids)} videos, "
          f"{len(val_rows)} captions; device {device}")

    torch.manual_seed(args.seed)
    decoder = make_decoder(args, tokenizer.get_piece_size(), train_latents.shape[1], tokenizer)
    decoder.set_latent_stats(train_latents.mean(0), train_latents.std(0))
    decoder.to(device)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(min(args.warmup_steps, steps_per_epoch * args.epochs // 10 + 1),
                             steps_per_epoch * args.epochs))
    start_epoch, best_cider, bad_epochs = 0, -1.0, 0
    if resume is not None:
        decoder.load_state_dict(resume["decoder"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch, best_cider, bad_epochs = resume["epoch"], resume["best_cider"], resume["bad_epochs"]
        print(f"resumed from {out_dir / 'last.pt'} after epoch {start_epoch}")

    train_latents_t = torch.from_numpy(train_latents).to(device)
    val_latents_t = torch.from_numpy(val_latents).to(device)
    encoder_info = {**cache.meta}
    references = {vid: msrvtt.captions[vid] for vid in caption_val_ids}
    out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(start_epoch, args.epochs):
        if args.patience and bad_epochs >= args.patience:
            print(f"early stop: no better val CIDEr for {bad_epochs} epochs")
            break
        started = time.time()
        torch.manual_seed(args.seed * 100003 + epoch)  # dropout; resumable without saving RNG state
        generator = torch.Generator().manual_seed(args.seed * 100003 + epoch)
        train_loss = run_epoch(decoder, train_latents_t, train_index, train_rows, args.batch_size, device,
                               optimizer, scheduler, args.grad_clip, generator, desc=f"epoch {epoch + 1}")
        with torch.no_grad():
            val_loss = run_epoch(decoder, val_latents_t, val_index, val_rows, args.batch_size, device, desc="val loss")
        captions = caption_latents(decoder, tokenizer, val_latents_t[: len(caption_val_ids)],
                                   beam_size=args.beam_size, max_len=args.max_len)
        metrics = score_captions(dict(zip(caption_val_ids, captions)), references, meteor=False)
        cider = metrics["CIDEr"]
        improved = cider > best_cider
        best_cider, bad_epochs = (cider, 0) if improved else (best_cider, bad_epochs + 1)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                  "val": metrics, "lr": scheduler.get_last_lr()[0], "seconds": time.time() - started}
        payload = {"decoder_config": decoder.config.to_dict(), "decoder": decoder.state_dict(),
                   "tokenizer": tokenizer_proto, "encoder": encoder_info, "args": vars(args),
                   "metrics": record, "epoch": epoch + 1, "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "best_cider": best_cider, "bad_epochs": bad_epochs}
        if improved:
            save_checkpoint(out_dir / "best.pt", payload)
        save_checkpoint(out_dir / "last.pt", payload)
        with open(out_dir / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.3f}, val loss {val_loss:.3f}, "
              f"val CIDEr {cider:.3f}, BLEU-4 {metrics['Bleu_4']:.3f}{' (best)' if improved else ''}, "
              f"{record['seconds']:.0f}s  e.g. \"{captions[0]}\"")
    print(f"best val CIDEr {best_cider:.3f}; checkpoints in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
