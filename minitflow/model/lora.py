"""Per-request LoRA factors in the layout the decoder consumes.

Senders produce factors for the seven HF projections of every layer. The decoder fuses
q/k/v and gate/up into one weight each, so their factors are stacked along the rank:
A = [A_q; A_k; A_v], and B is kept as one block per projection, (B_q, B_k, B_v), each
applied to its own slice of A x: exactly [B_q A_q x; B_k A_k x; B_v A_v x] without the
zeros of a block-diagonal B (at decode the factors are read for every row, every step).
Senders are stacked along the rank too, with B_s scaled by the sender's weight times the
LoRA scale, so Σ_s w_s·scale·B_s(A_s x) has no cross terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from minitflow.errors import UserError
from minitflow.model.lora_linear import Folded, LoraPair
from minitflow.model.config import Qwen3Config

# HF projection names (relative to a decoder layer) per fused weight of our decoder.
GROUPS: dict[str, tuple[str, ...]] = {
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o": ("self_attn.o_proj",),
    "gate_up": ("mlp.gate_proj", "mlp.up_proj"),
    "down": ("mlp.down_proj",),
}
PROJECTIONS: tuple[str, ...] = tuple(p for group in GROUPS.values() for p in group)


def projection_shapes(cfg: Qwen3Config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each HF projection."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    return {
        "self_attn.q_proj": (h, cfg.q_size), "self_attn.k_proj": (h, cfg.kv_size),
        "self_attn.v_proj": (h, cfg.kv_size), "self_attn.o_proj": (cfg.q_size, h),
        "mlp.gate_proj": (h, i), "mlp.up_proj": (h, i), "mlp.down_proj": (i, h),
    }


@dataclass
class LoraWeights:
    """layers[i][group] = (A (B, R, in), (B_p (B, out_p, r_p) per projection p of the group));
    groups absent from a layer are skipped. An engine's decode step may hand the model
    `lora_linear.Folded` projections instead of pairs (its buffers under DECODE_LORA "folded")."""

    layers: list[dict[str, LoraPair | Folded]]
    batch: int

    def row(self, i: int) -> "LoraWeights":
        """Row i alone, as one request's factors (batch 1; views, no copies)."""
        return LoraWeights([{k: (a[i:i + 1], tuple(b[i:i + 1] for b in bs)) for k, (a, bs) in layer.items()}
                            for layer in self.layers], 1)


SenderFactors = Mapping[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]
"""One sender: {(layer, HF projection name): (A (B, r, in), B (B, out, r))}."""


def build_lora(cfg: Qwen3Config, senders: Sequence[SenderFactors], coefs: Sequence[float]) -> LoraWeights:
    """Stack senders (coefficient w_s·scale each) and fuse projections into our weight layout."""
    if len(senders) != len(coefs) or not senders:
        raise UserError(f"build_lora: {len(senders)} senders but {len(coefs)} coefficients")
    shapes = projection_shapes(cfg)
    first = next(iter(senders[0].values()))[0]
    batch, device, dtype = first.shape[0], first.device, first.dtype
    layers: list[dict[str, LoraPair]] = []
    for layer in range(cfg.num_hidden_layers):
        groups: dict[str, LoraPair] = {}
        for group, projs in GROUPS.items():
            if not any((layer, p) in s for p in projs for s in senders):
                continue
            a_parts, blocks = [], []
            for p in projs:  # A rows: projection-major, then sender, matching the B blocks
                n_in, n_out = shapes[p]
                cols = []
                for s, coef in zip(senders, coefs):
                    if (layer, p) not in s:
                        continue
                    a, b = s[(layer, p)]
                    if a.shape != (batch, a.shape[1], n_in) or b.shape != (batch, n_out, a.shape[1]):
                        raise UserError(
                            f"LoRA factors for layer {layer} {p}: A {tuple(a.shape)} / B {tuple(b.shape)} "
                            f"do not fit (batch {batch}, in {n_in}, out {n_out})")
                    a_parts.append(a)
                    cols.append(b * coef)
                # a projection no sender adapts gets a rank-0 block: its slice of A x is empty
                blocks.append(torch.cat(cols, dim=2) if cols else
                              torch.zeros(batch, n_out, 0, device=device, dtype=dtype))
            groups[group] = (torch.cat(a_parts, dim=1), tuple(blocks))
        layers.append(groups)
    return LoraWeights(layers=layers, batch=batch)
