"""Stage 5, evaluation: captions/s of model.caption_features (beam search over cached latents in batches, as
evaluate.py captions a split) beside one video at a time."""
from statistics import median

from tools.measure import timed


def bench_evaluation(checkpoint_path, num_latents: int = 1000, single_videos: int = 40, beam_size: int = 5,
                     max_len: int = 30, batch_size: int = 256, repeats: int = 1, seed: int = 0) -> dict:
    """Captions/s of model.caption_features (beam search, as evaluate.py captions a split) over num_latents cached
    latents in batches, beside one video at a time over single_videos of them."""
    import torch
    from checkpoint import decoder_from_checkpoint, load_checkpoint, tokenizer_from_checkpoint
    from model import caption_features

    checkpoint = load_checkpoint(checkpoint_path)
    decoder = decoder_from_checkpoint(checkpoint)
    tokenizer = tokenizer_from_checkpoint(checkpoint)
    latents = torch.randn(num_latents, decoder.config.latent_dim, generator=torch.Generator().manual_seed(seed))
    latents = latents * decoder.latent_std + decoder.latent_mean  # (N, D) like the cache the stats came from
    caption_features(decoder, tokenizer, latents[:2], beam_size, max_len, batch_size)  # warm-up
    batched_runs, single_runs, captions = [], [], []
    for _ in range(repeats):
        seconds, captions = timed(caption_features, decoder, tokenizer, latents, beam_size, max_len, batch_size)
        batched_runs.append(seconds)
        single_runs.append(timed(caption_features, decoder, tokenizer, latents[:single_videos], beam_size, max_len,
                                 1)[0])
    batched = num_latents / median(batched_runs)
    single = single_videos / median(single_runs)
    return {"num_latents": num_latents, "single_videos": single_videos, "beam_size": beam_size,
            "batch_size": batch_size, "batched_captions_per_s": batched, "single_captions_per_s": single,
            "batched_to_single": batched / single,
            "mean_caption_words": sum(len(caption.split()) for caption in captions) / max(1, len(captions)),
            "mean_caption_tokens": sum(len(tokenizer.encode(caption)) for caption in captions) / max(1, len(captions)),
            "runs_s": {"batched": [round(s, 3) for s in batched_runs], "single": [round(s, 3) for s in single_runs]}}


def run(workspace: dict, plan: dict, work_dir) -> dict:
    """The stage: caption_features over random latents shaped like the checkpoint's cache."""
    return bench_evaluation(workspace["checkpoint"], plan["eval_latents"], plan["eval_single"],
                            repeats=plan["eval_repeats"])


def targets(results: dict, add) -> None:
    """add(target, value, holds, text) for each of this stage's targets that was measured."""
    if "evaluation" in results:
        ratio = results["evaluation"]["batched_to_single"]
        add("evaluation: batched beam search >= 5x one video at a time", ratio, ratio >= 5, f"{ratio:.1f}x")
