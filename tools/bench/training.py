"""Stage 3, training from the cache: captions/s of train.run_epoch the way train.py trains (length buckets, bf16
where the CPU has it, fused AdamW) beside the plain fp32 path, how much of each batch is padding, and the
validation loss after the same epochs each way (synthetic captions, and real MSR-VTT features where present)."""
import json
from pathlib import Path
from statistics import median

from tools.bench.workspace import LATENT_DIM, REALDATA, training_settings
from tools.measure import timed

MSRVTT_EPOCH_CAPTIONS = 130_000  # MSR-VTT's training split: 6,513 videos x 20 captions (130,260)


def synthetic_caption_rows(num_captions: int, vocab_size: int, max_len: int = 30, seed: int = 0):
    """(N, max_len + 1) int64 rows as train.encode_captions makes them (BOS, tokens, EOS, padding), with MSR-VTT's
    length distribution (about 9 words: 11 +- 4 pieces, a tail to the cap)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.gamma(7.0, 11.0 / 7.0, num_captions)), 3, max_len - 1).astype(int)
    rows = np.zeros((num_captions, max_len + 1), dtype=np.int64)  # pad 0
    for row, length in zip(rows, lengths):
        row[0] = 2  # BOS
        row[1:length + 1] = rng.integers(4, vocab_size, length)
        row[length + 1] = 3  # EOS
    return rows


def training_ways(device) -> dict:
    """run_epoch's options and the optimiser of today's way and of train.py's defaults: length buckets, bf16
    autocast where the CPU has it, fused AdamW."""
    from train import use_bf16
    return {"today": {"buckets": False, "bf16": False, "fused": False},
            "new": {"buckets": True, "bf16": use_bf16("auto", device), "fused": True}}


def make_trainee(config, settings, num_captions: int, fused: bool, seed: int = 0) -> tuple:
    """(decoder, optimizer, scheduler) as train.py makes them (train.make_optimizer with settings, the flags it
    reads), seeded."""
    import torch
    from model import CaptionDecoder
    from train import make_optimizer
    torch.manual_seed(seed)
    decoder = CaptionDecoder(config)
    return (decoder, *make_optimizer(settings, decoder, num_captions, fused=fused))


def bench_training(num_batches: int = 12, repeats: int = 2, vocab_size: int = 10000, batch_size: int = 128,
                   num_videos: int = 6513, epoch_captions: int = MSRVTT_EPOCH_CAPTIONS, one_thread: bool = True,
                   seed: int = 0) -> dict:
    """Captions/s of train.run_epoch (default decoder, AdamW, clipping, schedule) over cached latents, train.py's
    way (training_ways "new") beside today's, each on its own decoder, interleaved; timed over num_batches
    batches, extrapolated to an epoch of epoch_captions. one_thread: also the new way with torch on one thread
    (on a busy machine two threads wait for each other). And how much of each batch is padding, each way."""
    import numpy as np
    import torch
    from model import DecoderConfig
    from train import EpochOptions, epoch_batches, run_epoch

    device = torch.device("cpu")
    ways = training_ways(device)
    settings = training_settings(1e-3, 20, batch_size)  # train.py's defaults over 20 epochs
    trainees = {name: make_trainee(DecoderConfig(vocab_size=vocab_size, latent_dim=LATENT_DIM), settings,
                                   epoch_captions, way["fused"], seed) for name, way in ways.items()}
    latents = torch.randn(num_videos, LATENT_DIM)  # (V, D): the cache, in memory as train.py holds it
    rows = synthetic_caption_rows(num_batches * batch_size, vocab_size, seed=seed)
    video_index = np.random.default_rng(seed).integers(0, num_videos, len(rows))
    default_threads = torch.get_num_threads()

    def epoch_slice(name, count, threads=default_threads):
        torch.set_num_threads(threads)
        try:
            options = EpochOptions(batch_size, desc="bench training", generator=torch.Generator().manual_seed(seed),
                                   buckets=ways[name]["buckets"], grad_clip=1.0, bf16=ways[name]["bf16"])
            run_epoch(*trainees[name][:1], latents, video_index[:count], rows[:count], device, options,
                      *trainees[name][1:])
        finally:
            torch.set_num_threads(default_threads)

    for name in ways:
        epoch_slice(name, 2 * batch_size)  # warm-up
    seconds = {name: [] for name in ways}
    one_thread_seconds = []
    for repeat in range(repeats):
        for name in ways:
            seconds[name].append(timed(epoch_slice, name, len(rows))[0])
        if one_thread and default_threads > 1 and repeat == 0:  # once: a comparison, not a target
            one_thread_seconds.append(timed(epoch_slice, "new", len(rows), 1)[0])
    lengths = torch.from_numpy((rows != 0).sum(1))  # tokens per caption, BOS and EOS included

    def padding_share(buckets):
        batches = epoch_batches(lengths, batch_size, generator=torch.Generator().manual_seed(seed), buckets=buckets)
        return 1.0 - float(lengths.sum()) / sum(int(lengths[batch].max()) * len(batch) for batch in batches)

    captions_per_s = {name: len(rows) / median(values) for name, values in seconds.items()}
    result = {"batches": num_batches, "batch_size": batch_size, "vocab_size": vocab_size, "threads": default_threads,
              "decoder_parameters": sum(p.numel() for p in trainees["new"][0].parameters()), "ways": ways,
              "captions_per_s": captions_per_s["new"], "today_captions_per_s": captions_per_s["today"],
              "speedup_vs_today": captions_per_s["new"] / captions_per_s["today"], "epoch_captions": epoch_captions,
              "epoch_s": epoch_captions / captions_per_s["new"],
              "today_epoch_s": epoch_captions / captions_per_s["today"],
              "padding_share": padding_share(False), "bucketed_padding_share": padding_share(True),
              "runs_s": {name: [round(s, 3) for s in values] for name, values in seconds.items()}}
    if one_thread_seconds:
        result["one_thread_captions_per_s"] = len(rows) / median(one_thread_seconds)
        result["one_thread_runs_s"] = [round(s, 3) for s in one_thread_seconds]
    return result


def val_loss_both_ways(train_split: tuple, val_split: tuple, config, epochs: int, batch_size: int = 64,
                       seed: int = 0) -> dict:
    """Validation loss (fp32, teacher forcing) after `epochs` epochs of training today's way and train.py's way,
    from the same seed. Splits are (features (N, D), video index (C,), token rows (C, T))."""
    import torch
    from train import EpochOptions, run_epoch
    device = torch.device("cpu")
    features = torch.from_numpy(train_split[0])
    losses = {}
    for name, way in training_ways(device).items():
        decoder, optimizer, scheduler = make_trainee(config, training_settings(3e-3, epochs, batch_size),
                                                     len(train_split[2]), way["fused"], seed)
        decoder.set_latent_stats(features.mean(0), features.std(0))
        for epoch in range(epochs):
            torch.manual_seed(seed * 100003 + epoch)
            options = EpochOptions(batch_size, desc="bench loss",
                                   generator=torch.Generator().manual_seed(seed * 100003 + epoch),
                                   buckets=way["buckets"], grad_clip=1.0, bf16=way["bf16"])
            run_epoch(decoder, features, train_split[1], train_split[2], device, options, optimizer, scheduler)
        with torch.no_grad():
            losses[name] = run_epoch(decoder, torch.from_numpy(val_split[0]), val_split[1], val_split[2], device,
                                     EpochOptions(batch_size, desc="bench val loss"))
    return {"epochs": epochs, "today_val_loss": losses["today"], "val_loss": losses["new"],
            "relative_change": losses["new"] / losses["today"] - 1.0}


def synthetic_splits(num_videos: int, captions_per_video: int, vocab_size: int, seed: int = 0) -> tuple:
    """(train, val) splits of random latents and synthetic caption rows (val: a fifth of the videos)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((num_videos, LATENT_DIM)).astype(np.float32)
    rows = synthetic_caption_rows(num_videos * captions_per_video, vocab_size, seed=seed)
    video_index = np.repeat(np.arange(num_videos), captions_per_video)
    cut = num_videos * 4 // 5
    in_train = video_index < cut
    return ((latents[:cut], video_index[in_train], rows[in_train]),
            (latents[cut:], video_index[~in_train] - cut, rows[~in_train]))


def real_feature_splits(work_dir, num_videos: int, vocab_size: int = 1000):
    """(train, val) splits of real MSR-VTT features (realdata/features/msrvtt_vggae, (50, 128) per video, mean over
    frames) with their real captions, tokenised by a sentencepiece model trained here on the train captions
    (val: the last fifth of the videos); None without the real data."""
    import numpy as np
    import sentencepiece as spm
    from create_tokenizer import train_tokenizer
    from train import caption_table
    features_dir = REALDATA / "features" / "msrvtt_vggae"
    annotation = REALDATA / "msrvtt" / "MSRVTT" / "annotation" / "MSR_VTT.json"
    if not features_dir.is_dir() or not annotation.is_file():
        return None
    video_ids = [f"video{index}" for index in range(num_videos) if (features_dir / f"video{index}.npy").is_file()]
    wanted, captions = set(video_ids), {}
    for entry in json.loads(annotation.read_text())["annotations"]:
        if entry["image_id"] in wanted:
            captions.setdefault(entry["image_id"], []).append(entry["caption"])
    cut = len(video_ids) * 4 // 5
    prefix = Path(work_dir) / f"realdata-tokenizer-{num_videos}-{vocab_size}"
    if not Path(f"{prefix}.model").is_file():
        train_tokenizer([caption for video_id in video_ids[:cut] for caption in captions[video_id]], prefix,
                        vocab_size)
    tokenizer = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    splits = []
    for ids in (video_ids[:cut], video_ids[cut:]):
        features = np.stack([np.load(features_dir / f"{video_id}.npy").mean(0) for video_id in ids])  # (N, 128)
        splits.append((features.astype(np.float32), *caption_table(ids, captions, tokenizer, 30)))
    return tuple(splits), tokenizer.get_piece_size()


def bench_training_loss(work_dir, epochs: int = 3, synthetic_videos: int = 150, real_videos: int = 500) -> dict:
    """Validation loss after the same epochs, today's way and train.py's, on synthetic captions over random latents
    and on real MSR-VTT features with their captions (a smaller decoder than the default: the comparison is of the
    way of training)."""
    from model import DecoderConfig
    small = {"embed_dim": 128, "hidden_dim": 256, "dropout": 0.1}
    result = {"synthetic": val_loss_both_ways(*synthetic_splits(synthetic_videos, 20, 2000),
                                              DecoderConfig(vocab_size=2000, latent_dim=LATENT_DIM, **small), epochs)}
    real = real_feature_splits(work_dir, real_videos)
    if real is not None:
        (train_split, val_split), vocab_size = real
        config = DecoderConfig(vocab_size=vocab_size, latent_dim=train_split[0].shape[1], **small)
        result["real_features"] = val_loss_both_ways(train_split, val_split, config, epochs)
    return result


def run(workspace: dict, plan: dict, work_dir) -> dict:
    """The stage: run_epoch's speed each way, then the validation loss after the same epochs."""
    result = bench_training(plan["train_batches"], plan["train_repeats"])
    result["loss"] = bench_training_loss(work_dir, plan["loss_epochs"], real_videos=plan["loss_real_videos"])
    return result


def add_original_training(results: dict) -> None:
    """The original repo's epoch: decode (its way) and encode a video for every caption, plus the same decoder work,
    from the per-video costs measured by the sampling and encoding stages."""
    sampling, encoding, training = results.get("sampling"), results.get("encoding"), results.get("training")
    if not (sampling and encoding and training and "320x240" in sampling):
        return
    per_caption = sampling["320x240"]["original_s"] + encoding["encode_one_video_s"]
    training["original_per_caption_s"] = per_caption
    training["original_epoch_s"] = training["epoch_s"] + training["epoch_captions"] * per_caption
    training["original_to_cached"] = training["original_epoch_s"] / training["epoch_s"]



def targets(results: dict, add) -> None:
    """add(target, value, holds, text) for each of this stage's targets that was measured."""
    training = results.get("training", {})
    if "original_epoch_s" in training:
        ratio = training["original_to_cached"]
        add("training from the cache >= 100x the original way", ratio, ratio >= 100, f"{ratio:.0f}x")
    if "speedup_vs_today" in training:
        speedup = training["speedup_vs_today"]
        add("training epoch from the cache >= 3x today's way", speedup, speedup >= 3, f"{speedup:.1f}x")
    for data, entry in training.get("loss", {}).items():
        change = entry["relative_change"]
        add(f"val loss after {entry['epochs']} epochs within 1% of today's ({data})", change, abs(change) <= 0.01,
            f"{100 * change:+.2f}%")


