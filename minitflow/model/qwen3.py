"""The Qwen3 decoder: embeddings, layers, final norm, lm_head, with two explicit hook points.

- `capture`: hidden states of chosen layers over a token span of each row, taken during the
  prefill itself (transformers' `output_hidden_states` convention: index 0 is the embedding
  output, index i the output of layer i, index L the last layer after the final norm).
- `lora`: per-row low-rank factors added to every projection while this forward runs.
- `input_embeds`: rows read these vectors instead of embedding `input_ids` (latent steps).
- `return_hidden`: also return the final-norm hidden state (what the lm_head reads).
All are plain arguments; nothing is patched onto the modules. The model knows nothing of
requests or slots: `rows` just says which cache row each batch row writes to.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.utils.checkpoint

from minitflow.model.kv_cache import KVCache
from minitflow.model.attention import causal_mask
from minitflow.errors import UserError
from minitflow.model.config import Qwen3Config
from minitflow.model.fused import fused_on_cuda
from minitflow.model.layers import DecoderLayer, RMSNorm, Rotary, add_rms_norm
from minitflow.model.lora import LoraWeights
from minitflow.model.lora_linear import expanded
from minitflow.model.transfer import host_to_device


def as_index(x: object) -> int:
    """An integer the model takes (a token id, a capture's layer or span bound) as a plain int:
    operator.index takes Python's, numpy's and one-element integer tensors', never a float (int()
    cut 1.7 to 1), but a bool as 0 or 1, refused here as SamplingParams refuses it (a mask passed
    as ids ran as tokens 0 and 1). A TypeError for anything else."""
    if isinstance(x, bool) or getattr(x, "dtype", None) == torch.bool:  # torch's bool tensors index too
        raise TypeError(f"{x!r} is not an integer")
    return operator.index(x)


@dataclass
class Capture:
    """What to capture: `layers` (indices in 0..L) over the span [start_b, end_b) of each row.

    After the forward, `hidden` is (B, len(layers), max_span, H) with zeros past each row's
    span and `lengths` holds each row's span length. With `layer_weights` (len(layers),) the
    layers are summed as they run instead, Σ w_i·h_i in float32, and `hidden` is (B, max_span, H):
    no (layers × span × hidden) tensor ever exists (TFlow's layer aggregator at inference).
    With `out` (one (len(layers), span_b, H) tensor per row, without layer weights) each row's
    layers are written there as they run and the forward leaves `hidden` None (an engine
    request's `hidden` is then its `out` tensor with a batch dimension): training's senders write
    into one batch made outside inference mode, which autograd may use as it is (no copy).
    """

    layers: list[int]
    starts: list[int]
    ends: list[int]
    layer_weights: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    lengths: list[int] = field(default_factory=list)
    out: list[torch.Tensor] | None = None

    def __post_init__(self):
        # plain ints, refused here when not integers: a float span passed every check and failed
        # inside a step (a TypeError from the prefix cache, aborting the requests beside it), and
        # a float layer was cut to an int without a word
        for name in ("layers", "starts", "ends"):
            try:
                setattr(self, name, [as_index(x) for x in getattr(self, name)])
            except TypeError:
                raise UserError(f"capture {name} must be integers, got {getattr(self, name)!r}") from None

    def layers_fit(self, num_layers: int) -> bool:
        """Whether `layers` are distinct layers of a model of `num_layers` (0, the embeddings, to
        num_layers, the final norm): each slot of the capture is then written exactly once."""
        return len(set(self.layers)) == len(self.layers) and all(0 <= i <= num_layers for i in self.layers)

    def _index(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For hidden states like `x` (B, T, H): the gather index of each row's span positions
        (B, S, H) and 1/0 for the real ones (B, S, 1) in x's dtype; built on the host, once per
        forward for every captured layer."""
        span = max(e - s for s, e in zip(self.starts, self.ends))
        offs = torch.arange(span)
        lengths = torch.tensor([e - s for s, e in zip(self.starts, self.ends)])
        index = (torch.tensor(self.starts)[:, None] + offs[None, :]).clamp(max=x.shape[1] - 1)
        valid = (offs[None, :] < lengths[:, None])[:, :, None].to(x.dtype)
        return host_to_device(index, x.device)[:, :, None].expand(-1, -1, x.shape[-1]), host_to_device(valid, x.device)


def span_rows(h: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each row's span of `h` (B, T, H) -> (B, S, H), zeros past a row's span."""
    return torch.gather(h, 1, index) * valid


def _weighted_span(h: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """weight x the span rows, in float32: one term of a capture's layer sum."""
    return weight * span_rows(h, index, valid).float()


weighted_span = fused_on_cuda(_weighted_span)  # the first term: one kernel on CUDA


@fused_on_cuda
def add_weighted_span(acc: torch.Tensor, h: torch.Tensor, index: torch.Tensor, valid: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
    """acc + the next term: gather, mask, scale and add as one kernel on CUDA (five ops apart)."""
    return acc + _weighted_span(h, index, valid, weight)


def stack_spans(hiddens: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
    """Per-row captures (1, ..., S_i, H) -> one batch (B, ..., max S_i, H), zero past each row's
    span, and the span lengths."""
    spans = [h.shape[-2] for h in hiddens]
    out = hiddens[0].new_zeros(len(hiddens), *hiddens[0].shape[1:-2], max(spans), hiddens[0].shape[-1])
    for i, h in enumerate(hiddens):
        out[i, ..., : spans[i], :] = h[0]
    return out, spans


def check_positions(positions: torch.Tensor, tokens: int | None, table: int) -> None:
    """Host positions against the rotary table and, without a cache, against this call's `tokens`
    (its keys), in one line each. Past the table was an IndexError from the table lookup; a
    negative position read a row from its end; without a cache, one at or past the call's length
    (an offset) attended the call's later tokens, no longer causal; both silently. With a cache a
    position may pass kv_len: the engine's rows that hold no request compute junk there. Positions
    on a device go unchecked (a sync each decode step): the engine bounds its requests
    (max_seq_len), and CUDA's bounds check stops the lookup."""
    low, high = (int(v) for v in torch.aminmax(positions))
    if low < 0 or high >= table:
        raise UserError(f"positions {low}..{high} are outside the model's rotary table of {table} "
                        "(max_position_embeddings; Qwen3Model(cfg, max_positions) builds a longer one)")
    if tokens is not None and high >= tokens:  # position p is key p, and its query attends keys 0..p
        raise UserError(f"position {high} is past this call's {tokens} tokens: without a cache the keys are "
                        "the call's tokens at positions 0..T-1 (an offset needs a KVCache holding the tokens before)")


class Qwen3Model(nn.Module):
    def __init__(self, cfg: Qwen3Config, max_positions: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta, max_positions or cfg.max_position_embeddings)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None,
        kv_len: int,
        *,
        rows: torch.Tensor | None = None,
        real: tuple[torch.Tensor, torch.Tensor] | None = None,
        input_embeds: torch.Tensor | None = None,
        lora: LoraWeights | None = None,
        capture: Capture | None = None,
        logits_index: torch.Tensor | None = None,
        need_logits: bool = True,
        return_hidden: bool = False,
        checkpoint_layers: bool = False,
    ):
        """input_ids/positions (B, T); the cache is written at `positions` of cache rows `rows`
        (default: batch row b is cache row b) and read up to kv_len; `real` (batch indices, token
        indices) lists the real tokens of a right-padded batch (only they are written; indices,
        not a mask, which the device would have to turn into indices and tell the host the
        count of). With cache=None (training)
        attention covers just this call's tokens (kv_len = T). `input_embeds` (B, T, H), where
        given, replaces the embedding of `input_ids`. `checkpoint_layers` (training only)
        recomputes each layer in the backward pass instead of keeping its activations.

        Returns logits (B, T, V), or (B, 1, V) at `logits_index` (B,) per row, or None; with
        `return_hidden`, a pair (logits or None, final-norm hidden at the same positions).
        """
        if cache is None and kv_len != positions.shape[1]:  # else an SDPA shape error inside the first layer
            raise UserError(f"without a cache the keys are this call's {positions.shape[1]} tokens: kv_len must be "
                            f"{positions.shape[1]}, got {kv_len}")
        if positions.device.type == "cpu" and positions.numel() and not torch.compiler.is_compiling():
            check_positions(positions, None if cache is not None else kv_len, self.rotary.cos.shape[0])
        x = self.embed_tokens(input_ids) if input_embeds is None else input_embeds.to(self.embed_tokens.weight.dtype)
        cos, sin = self.rotary(positions, x.dtype)
        mask = causal_mask(positions, kv_len, self.cfg.num_attention_heads // self.cfg.num_key_value_heads, x.dtype)
        want: set[int] = set()
        acc: torch.Tensor | None = None  # the capture: the layer sum, or every layer's slot of one tensor

        def keep(layer: int, h: torch.Tensor) -> None:
            nonlocal acc
            if capture.out is not None:
                rows = span_rows(h, index, span_valid)
                for b, dst in enumerate(capture.out):
                    dst[slot[layer]] = rows[b, :dst.shape[1]]
            elif capture.layer_weights is None:
                # written into its slot as it comes: a list of layers stacked at the end held
                # every layer twice for a moment, the peak of a capture of all L+1 layers
                if acc is None:
                    acc = h.new_empty(h.shape[0], len(capture.layers), *index.shape[1:])
                acc[:, slot[layer]] = span_rows(h, index, span_valid)
            else:
                w = capture.layer_weights[slot[layer]]
                acc = weighted_span(h, index, span_valid, w) if acc is None else \
                    add_weighted_span(acc, h, index, span_valid, w)

        n = len(self.layers)
        if capture is not None:
            if not capture.layers_fit(n):
                # a layer never reached (or a slot a duplicate takes) would leave its slot of the
                # capture unwritten: uninitialised memory, where the stack of a list was a TypeError
                raise UserError(f"capture layers {list(capture.layers)} are not distinct layers 0 (the embeddings) "
                                f"to {n} (the final norm)")
            index, span_valid = capture._index(x)
            want = set(capture.layers)
            slot = {layer: i for i, layer in enumerate(capture.layers)}
            if 0 in want:
                keep(0, x)
        recompute = checkpoint_layers and cache is None and torch.is_grad_enabled()
        targets = None if cache is None else cache.targets(positions, rows, real)
        delta: torch.Tensor | None = None  # the last layer's output not yet added into x
        pending = None  # delta's LoRA not yet added into it (lora_linear.project)
        for i, layer in enumerate(self.layers):
            lo = lora.layers[i] if lora else None
            if recompute:
                x, delta, pending = torch.utils.checkpoint.checkpoint(layer, x, delta, cos, sin, mask, None, kv_len,
                                                                      lo, use_reentrant=False)
            else:
                x, delta, pending = layer(x, delta, cos, sin, mask, cache, kv_len, lo, rows, targets, pending)
            if i + 1 < n and i + 1 in want:
                x, delta, pending = x + expanded(delta, pending), None, None
                keep(i + 1, x)
        x = self.norm(x) if delta is None else add_rms_norm(x, delta, self.norm.weight, self.norm.eps, pending)[1]
        if capture is not None:
            if n in want:
                keep(n, x)
            capture.hidden = acc
            capture.lengths = [e - s for s, e in zip(capture.starts, capture.ends)]
        if logits_index is not None:
            x = torch.gather(x, 1, logits_index[:, None, None].expand(-1, 1, x.shape[-1]))
        logits = self.lm_head(x) if need_logits else None
        return (logits, x) if return_hidden else logits
