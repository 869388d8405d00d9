"""The networks: a frozen X-CLIP video encoder, an LSTM caption decoder, and decoding.

    from model import XClipEncoder, CaptionDecoder, DecoderConfig, beam_search
    encoder = XClipEncoder("microsoft/xclip-base-patch32-16-frames")
    latents = encoder.encode(pixel_values)                       # (B, 512)
    captions = beam_search(decoder, latents, beam_size=5, max_len=30)

Names: a video's "latent" is X-CLIP's pooled vector (D,); its "frame features" are the per-frame
vectors before that pooling (F, D). The decoder is "pooled" (the latent sets the LSTM's initial state)
or "attention" (it attends over the frame features at every step and starts from their mean); what it
reads, either one, is called its "features". Shapes: B batch, F frames, D feature size, T tokens,
V vocabulary, L layers, H hidden size, K beams.

Only nn.Modules, their config and decoding live here; files and flags belong to the scripts.
"""
import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import DEFAULT_XCLIP, UserError, is_hub_id


class EncoderLoadError(UserError):
    """The X-CLIP weights could not be loaded; the message is one line saying what to do."""


# What the latents depend on among X-CLIP's vision settings: the fingerprint hashes these (and no path, library
# version or default that a newer transformers adds), so that a hub model and any copy of it agree.
VIDEO_CONFIG_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                       "patch_size", "num_channels", "num_frames", "hidden_act", "layer_norm_eps", "mit_hidden_size",
                       "mit_intermediate_size", "mit_num_hidden_layers", "mit_num_attention_heads")
# XCLIPModel's parts that get_video_features never runs (the text tower and the prompt generator that reads it).
TEXT_SIDE = ("text_model", "prompts_generator", "prompts_visual_layernorm", "prompts_visual_projection", "logit_scale")


@functools.cache
def video_model_class():
    """XCLIPModel without its text side: from_pretrained loads only the vision model, the visual projection and the
    multi-frame integration transformer (what get_video_features runs, with the very same code), plus the small
    text projection that the legacy fingerprint hashes. transformers builds the model on the meta device before
    loading, so the text side is never materialised."""
    from transformers import XCLIPModel

    class XCLIPVideoModel(XCLIPModel):
        _keys_to_ignore_on_load_unexpected = [rf"^{name}(\.|$)" for name in TEXT_SIDE]

        def __init__(self, config):
            super().__init__(config)
            for name in TEXT_SIDE:
                delattr(self, name)

    return XCLIPVideoModel


class XClipEncoder(nn.Module):
    """Frozen X-CLIP video tower: pixel values (B, F, 3, S, S) -> one latent per video (B, D)."""

    def __init__(self, name_or_path=DEFAULT_XCLIP, dtype=torch.float32):
        super().__init__()
        # transformers is imported here, not at the top: training and evaluating from the cache never load X-CLIP,
        # and importing it costs those processes ~115 MiB.
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the text side's weights, left unloaded, are not news
        hf_logging.disable_progress_bar()  # keep stderr to warnings and one-line errors
        if not Path(name_or_path).is_dir() and not is_hub_id(name_or_path, bare_name=True):  # a path, not there
            raise EncoderLoadError(f"{name_or_path}: no such folder; pass --xclip_model a folder written by "
                                   f"save_pretrained or a Hub name such as {DEFAULT_XCLIP}")
        try:
            model = video_model_class().from_pretrained(name_or_path)
        except (OSError, ValueError) as error:
            raise EncoderLoadError(
                f"{name_or_path}: cannot load X-CLIP ({str(error).splitlines()[0][:160]}); "
                "if offline, download it elsewhere (hf download "
                f"{DEFAULT_XCLIP} --local-dir xclip) and pass --xclip_model xclip") from None
        self.name_or_path = str(name_or_path)
        # The projections the fingerprints hash, kept as loaded (before any cast), so that an encoder cast to bf16
        # has the fingerprint of its fp32 weights: a checkpoint trained on a bf16 cache names the same X-CLIP.
        self.projections = {name: getattr(model, name).weight.detach().float().cpu().clone()
                            for name in ("visual_projection", "text_projection")}
        self.model = model.to(dtype).eval().requires_grad_(False)
        self.dtype = dtype
        vision = model.config.vision_config
        self.num_frames = int(vision.num_frames)
        self.image_size = int(vision.image_size)
        self.latent_dim = int(model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self, rounded_to=None):
        """Short hash of the video side's config and the visual projection's weights as loaded: equal for a hub
        model and a local copy of it, whatever their paths, and whatever dtype the encoder runs in. rounded_to
        (torch.bfloat16): the weights rounded to that dtype first, as caches and checkpoints made in bf16 by
        earlier versions recorded them."""
        config = self.model.config
        described = {name: getattr(config.vision_config, name, None) for name in VIDEO_CONFIG_FIELDS}
        described["projection_dim"] = config.projection_dim
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
        weight = self.projections["visual_projection"]
        digest.update((weight if rounded_to is None else weight.to(rounded_to).float()).numpy().tobytes())
        return digest.hexdigest()[:12]

    def legacy_fingerprint(self, name_or_path=None):
        """The fingerprint older caches and checkpoints carry: a hash of the whole config as JSON, whose
        "_name_or_path" is the name the model was loaded by (name_or_path; default: this encoder's), and of the
        visual and text projections' weights."""
        config = self.model.config
        loaded_as = config._name_or_path
        config._name_or_path = self.name_or_path if name_or_path is None else str(name_or_path)
        try:
            digest = hashlib.sha256(config.to_json_string(use_diff=False).encode())
        finally:
            config._name_or_path = loaded_as
        for name in ("visual_projection", "text_projection"):
            digest.update(self.projections[name].numpy().tobytes())
        return digest.hexdigest()[:12]

    def made(self, fingerprint, name_or_path=None) -> bool:
        """Whether latents recorded with this fingerprint (and encoder name) came from this encoder's weights:
        its fingerprint, the one earlier versions recorded for it in bf16, or the legacy one of the name they
        were recorded with."""
        return fingerprint in (self.fingerprint(), self.fingerprint(rounded_to=torch.bfloat16),
                               self.legacy_fingerprint(name_or_path))

    @torch.inference_mode()
    def encode(self, pixel_values):
        """(B, F, 3, S, S) float -> (B, D) float32 latents."""
        device = next(self.model.parameters()).device
        pixel_values = pixel_values.to(device=device, dtype=self.dtype, non_blocking=True)
        output = self.model.get_video_features(pixel_values=pixel_values)
        # transformers 4.x returns the tensor; 5.x an output object holding it as pooler_output.
        latents = output if torch.is_tensor(output) else output.pooler_output  # (B, D)
        return latents.float()

    @torch.inference_mode()
    def encode_with_frames(self, pixel_values):
        """(B, F, 3, S, S) -> latents (B, D) as encode() gives them, and frame features (B, F, D).

        The per-frame features are X-CLIP's frame embeddings after its multi-frame integration
        transformer (MIT), before the mean over frames that makes the latent: the same path as
        get_video_features, with outputs indexed by position so that transformers 4.x (tuples)
        and 5.x (output objects) both work.
        """
        device = next(self.model.parameters()).device
        pixel_values = pixel_values.to(device=device, dtype=self.dtype, non_blocking=True)
        batch, num_frames = pixel_values.shape[:2]
        frame_embeds = self.model.vision_model(pixel_values=pixel_values.flatten(0, 1))[1]  # (B*F, hidden)
        frame_embeds = self.model.visual_projection(frame_embeds).view(batch, num_frames, -1)  # (B, F, D)
        mit_output = self.model.mit(frame_embeds)
        return mit_output[1].float(), mit_output[0].float()  # (B, D), (B, F, D)

    def train(self, mode=True):
        return super().train(False)  # frozen: always in eval mode


DECODER_TYPES = ("pooled", "attention")
# Where the LSTM runs outside autocast, in fp32: CUDA autocast may run cuDNN's LSTM in fp16 even under bf16
# autocast, and without a gradient scaler its small gradients could vanish. CPU autocast runs it in bf16, which has
# fp32's range (and trains measurably faster: docs/performance.md).
LSTM_IN_FP32_ON = ("cuda",)


@dataclass
class DecoderConfig:
    vocab_size: int
    latent_dim: int = 512
    embed_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 2
    dropout: float = 0.3
    latent_every_step: bool = False  # also feed the latent as input at every step
    label_smoothing: float = 0.1
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    decoder_type: str = "pooled"  # "pooled": latents (B, D); "attention": frame features (B, F, D)
    attention_dim: int = 256  # size of the additive attention's hidden layer (attention decoder only)
    num_frames: int = 16  # frames the attention decoder has position embeddings for

    def to_dict(self):
        return asdict(self)

    @property
    def uses_frames(self):
        """True when the decoder reads frame features (B, F, D) rather than latents (B, D)."""
        return self.decoder_type == "attention"


class FrameAttention(nn.Module):
    """Soft (additive) attention over frame features, as in Show-Attend-Tell and Yao et al. 2015.

    score(t) = w . tanh(W_f frame_t + P_t + W_h h): P_t is a learned embedding of frame position t,
    so the decoder can ask for "later frames" as well as for content.
    """

    def __init__(self, frame_dim, hidden_dim, attention_dim, num_frames):
        super().__init__()
        self.frame_proj = nn.Linear(frame_dim, attention_dim)
        self.position = nn.Parameter(torch.randn(num_frames, attention_dim) * 0.02)
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim, bias=False)
        self.score = nn.Linear(attention_dim, 1)

    def keys(self, frames):
        """Frame features (B, F, D) -> their attention keys (B, F, A), computed once per decoding call."""
        return self.frame_proj(frames) + self.position[: frames.size(1)]

    def forward(self, frames, keys, hidden):
        """frames (B, F, D), keys (B, F, A), hidden (B, H) -> context (B, D), weights (B, F) summing to 1."""
        scores = self.score(torch.tanh(keys + self.hidden_proj(hidden)[:, None])).squeeze(-1)  # (B, F)
        weights = F.softmax(scores.float(), dim=-1).to(frames.dtype)  # (B, F)
        return torch.bmm(weights[:, None], frames)[:, 0], weights  # (B, D), (B, F)


class CaptionDecoder(nn.Module):
    """LSTM language model whose (h, c) in every layer start from a projection of the video's features.

    Features arrive raw; they are standardised here with the training split's mean and std
    (buffers saved in the checkpoint), so every caller feeds the encoder's output unchanged.
    The pooled decoder reads latents (B, D); the attention decoder reads frame features (B, F, D),
    starts from their mean, and at every step also reads an attention-weighted mix of them.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        if config.decoder_type not in DECODER_TYPES:
            raise ValueError(f"decoder_type must be one of {DECODER_TYPES}, got {config.decoder_type!r}")
        if config.uses_frames and config.latent_every_step:
            raise ValueError("latent_every_step is for the pooled decoder; the attention decoder already "
                             "reads the frames at every step")
        self.config = config
        self.register_buffer("latent_mean", torch.zeros(config.latent_dim))
        self.register_buffer("latent_std", torch.ones(config.latent_dim))
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_id)
        self.init_state_proj = nn.Linear(config.latent_dim, 2 * config.num_layers * config.hidden_dim)
        self.attention = (FrameAttention(config.latent_dim, config.hidden_dim, config.attention_dim,
                                         config.num_frames) if config.uses_frames else None)
        input_dim = config.embed_dim + (config.latent_dim if config.latent_every_step or config.uses_frames else 0)
        self.lstm = nn.LSTM(input_dim, config.hidden_dim, config.num_layers, batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_dim, config.vocab_size)

    def set_latent_stats(self, mean, std):
        """Store the training split's feature mean and std (D,) used to standardise inputs."""
        self.latent_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.latent_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))

    def init_state(self, features):
        """Raw features -> decoding state (h, c, features): h, c (L, B, H), features standardised (B, D) or (B, F, D).

        The state keeps the features, so that beam search's select_state reorders them along with h and c.
        """
        cfg = self.config
        if features.dim() != (3 if cfg.uses_frames else 2):
            wanted = "per-frame features (B, F, D)" if cfg.uses_frames else "latents (B, D)"
            raise ValueError(f"the {cfg.decoder_type} decoder takes {wanted}, got shape {tuple(features.shape)}")
        features = (features.float() - self.latent_mean) / self.latent_std  # (B, D) or (B, F, D)
        pooled = features.mean(dim=1) if cfg.uses_frames else features  # (B, D)
        projected = self.init_state_proj(pooled).view(-1, 2, cfg.num_layers, cfg.hidden_dim)
        h = torch.tanh(projected[:, 0]).transpose(0, 1).contiguous()  # (L, B, H)
        c = projected[:, 1].transpose(0, 1).contiguous()  # (L, B, H)
        return h, c, features

    def _run(self, tokens, state):
        """tokens (B, T), state -> hidden outputs (B, T, H), new state."""
        h, c, features = state
        inputs = self.dropout(self.embed(tokens))  # (B, T, E)
        if self.attention is not None:
            return self._run_attending(inputs, h, c, features)
        if self.config.latent_every_step:
            inputs = torch.cat([inputs, features[:, None].expand(-1, tokens.size(1), -1)], dim=-1)
        outputs, (h, c) = self._lstm(inputs, h, c)  # (B, T, H)
        return self.dropout(outputs), (h, c, features)

    def _lstm(self, inputs, h, c):
        """The LSTM, in fp32 on the devices of LSTM_IN_FP32_ON whatever autocast is on; the layers around it (the
        projections, attention, the output head) still take autocast's dtype."""
        if inputs.device.type not in LSTM_IN_FP32_ON:
            return self.lstm(inputs, (h, c))
        with torch.autocast(inputs.device.type, enabled=False):
            return self.lstm(inputs.float(), (h.float(), c.float()))

    def _run_attending(self, inputs, h, c, frames):
        """Embedded tokens (B, T, E) one step at a time, each step's input joined by the frame context
        the previous top-layer hidden state asks for -> hidden outputs (B, T, H), new state."""
        keys = self.attention.keys(frames)  # (B, F, A)
        outputs = []
        for position in range(inputs.size(1)):
            context, _ = self.attention(frames, keys, h[-1])  # (B, D)
            step_input = torch.cat([inputs[:, position], context.to(inputs.dtype)], dim=-1)[:, None]  # (B, 1, E+D)
            output, (h, c) = self._lstm(step_input, h, c)  # (B, 1, H)
            outputs.append(output)
        return self.dropout(torch.cat(outputs, dim=1)), (h, c, frames)

    def forward(self, features, tokens, targets=None):
        """features: latents (B, D), or frame features (B, F, D) for the attention decoder; tokens (B, T) starting
        with BOS -> logits (B, T, V), loss (padding ignored)."""
        outputs, _ = self._run(tokens, self.init_state(features))
        logits = self.head(outputs)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                   ignore_index=self.config.pad_id,
                                   label_smoothing=self.config.label_smoothing)
        return logits, loss

    def step(self, tokens, state):
        """One decoding step: tokens (B,) -> log-probabilities (B, V), next state."""
        outputs, state = self._run(tokens[:, None], state)
        return F.log_softmax(self.head(outputs[:, 0]).float(), dim=-1), state


class Ensemble(nn.Module):
    """Several trained decoders as one: step() takes the mean of their log-probabilities (renormalised), so greedy,
    beam search and sampling decode an ensemble with their own code. The members share the tokenizer's ids and
    read the same kind of features (latents, or frame features); their sizes may differ."""

    def __init__(self, decoders):
        super().__init__()
        first = decoders[0].config
        for decoder in decoders[1:]:
            config = decoder.config
            if (config.vocab_size, config.pad_id, config.bos_id, config.eos_id, config.uses_frames) != \
                    (first.vocab_size, first.pad_id, first.bos_id, first.eos_id, first.uses_frames):
                raise ValueError("ensemble members must share the vocabulary and read the same kind of features")
        self.members = nn.ModuleList(decoders)
        self.config = first

    def init_state(self, features):
        """Raw features -> one decoding state per member."""
        return EnsembleState(member.init_state(features) for member in self.members)

    def step(self, tokens, state):
        """tokens (B,) -> log of the members' geometric-mean distribution (B, V), next states."""
        steps = [member.step(tokens, member_state) for member, member_state in zip(self.members, state)]
        mean = torch.stack([log_probs for log_probs, _ in steps]).mean(0)  # (B, V)
        return F.log_softmax(mean, dim=-1), EnsembleState(member_state for _, member_state in steps)


class EnsembleState(tuple):
    """The decoding states of an Ensemble's members, one per member."""


def select_state(state, index):
    """Pick rows `index` (N,) of a decoding state (or of each of an ensemble's states) along its batch dimension."""
    if isinstance(state, EnsembleState):
        return EnsembleState(select_state(member_state, index) for member_state in state)
    h, c, features = state
    return h[:, index], c[:, index], features[index]


def _strip(ids, config):
    """Token ids -> list without anything from EOS on, and without padding."""
    out = []
    for token in ids:
        if token == config.eos_id:
            break
        if token != config.pad_id:
            out.append(token)
    return out


def _decode_one_token_at_a_time(decoder, features, max_len, pick):
    """Feed each step's choice back in: pick(log_probs (B, V)) -> tokens (B,). One id list per video."""
    cfg = decoder.config
    state = decoder.init_state(features)
    tokens = torch.full((features.size(0),), cfg.bos_id, dtype=torch.long, device=features.device)
    finished = torch.zeros_like(tokens, dtype=torch.bool)
    steps = []
    for _ in range(max_len):
        log_probs, state = decoder.step(tokens, state)
        tokens = pick(log_probs).masked_fill(finished, cfg.pad_id)  # (B,)
        steps.append(tokens)
        finished |= tokens == cfg.eos_id
        if finished.all():
            break
    return [_strip(row, cfg) for row in torch.stack(steps, dim=1).tolist()]


@torch.inference_mode()
def greedy(decoder, features, max_len=30):
    """Most likely token at every step. Returns one list of token ids per video."""
    return _decode_one_token_at_a_time(decoder, features, max_len, lambda log_probs: log_probs.argmax(dim=-1))


@torch.inference_mode()
def beam_search(decoder, features, beam_size=5, max_len=30, length_penalty=1.0, n_best=1):
    """Beam search batched over videos and beams in one (B * K) tensor.

    Beams are ranked by summed log-probability while searching; at the end each is scored by
    sum / length ** length_penalty. A beam that never emits EOS ends at max_len and still counts,
    so there is always an answer. Returns per video a list of n_best (token ids, score), best first.
    Beam size 1 picks the same tokens as greedy().
    """
    cfg = decoder.config
    batch, beams = features.size(0), beam_size
    device = features.device
    state = decoder.init_state(features)
    state = select_state(state, torch.arange(batch, device=device).repeat_interleave(beams))
    tokens = torch.full((batch * beams,), cfg.bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(batch, beams, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep only the first alive
    finished = torch.zeros(batch * beams, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * beams, dtype=torch.long, device=device)
    sequences = torch.zeros(batch * beams, 0, dtype=torch.long, device=device)
    row_offsets = (torch.arange(batch, device=device) * beams)[:, None]  # (B, 1)
    for _ in range(max_len):
        log_probs, state = decoder.step(tokens, state)  # (B*K, V)
        vocab = log_probs.size(-1)
        # A finished beam can only be extended by padding, at no cost: it keeps its score.
        done_row = torch.full_like(log_probs[0], float("-inf"))
        done_row[cfg.pad_id] = 0.0
        log_probs = torch.where(finished[:, None], done_row, log_probs)
        candidates = (scores.view(-1, 1) + log_probs).view(batch, beams * vocab)  # (B, K*V)
        scores, flat_index = candidates.topk(beams, dim=-1)  # (B, K)
        source = (row_offsets + flat_index // vocab).view(-1)  # (B*K,)
        tokens = (flat_index % vocab).view(-1)  # (B*K,)
        sequences = torch.cat([sequences[source], tokens[:, None]], dim=1)
        state = select_state(state, source)
        lengths = lengths[source] + (~finished[source]).long()
        finished = finished[source] | (tokens == cfg.eos_id)
        if finished.all():
            break
    normalised = scores / lengths.view(batch, beams).clamp_min(1).float() ** length_penalty  # (B, K)
    order = normalised.argsort(dim=-1, descending=True)[:, :n_best]
    results = []
    for video, ranked in enumerate(order.tolist()):
        results.append([(_strip(sequences[video * beams + k].tolist(), cfg), normalised[video, k].item())
                        for k in ranked])
    return results


@torch.inference_mode()
def sample(decoder, features, max_len=30, temperature=1.0, top_p=1.0, seed=None):
    """Ancestral sampling with temperature and nucleus (top-p) filtering, reproducible from seed."""
    generator = torch.Generator(device=features.device)
    generator.manual_seed(0 if seed is None else seed)

    def pick(log_probs):
        probs = F.softmax(log_probs / max(temperature, 1e-5), dim=-1)  # (B, V)
        if top_p < 1.0:
            sorted_probs, sorted_index = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # keep the nucleus
            probs = torch.zeros_like(probs).scatter(-1, sorted_index, sorted_probs.masked_fill(outside, 0.0))
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    return _decode_one_token_at_a_time(decoder, features, max_len, pick)


def caption_features(decoder, tokenizer, features, beam_size=5, max_len=30, batch_size=256, length_penalty=1.0):
    """Features of N videos (latents (N, D), or frame features (N, F, D) for the attention decoder) -> N captions
    (text): beam search over batches of videos, greedy decoding when beam_size is 1 (the same tokens, faster)."""
    captions = []
    for start in range(0, len(features), batch_size):
        batch = features[start:start + batch_size]
        if beam_size == 1:
            ids = greedy(decoder, batch, max_len=max_len)
        else:
            ids = [best[0][0] for best in beam_search(decoder, batch, beam_size=beam_size, max_len=max_len,
                                                      length_penalty=length_penalty)]
        captions += [tokenizer.decode(caption_ids) for caption_ids in ids]
    return captions
