"""Qwen3 building blocks, computed as transformers computes them."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitflow.model.kv_cache import KVCache, WriteTargets
from minitflow.model.attention import cache_attention
from minitflow.model.lora_linear import Folded, LoraPair, Pending, expanded, expanded_parts, project
from minitflow.model.config import Qwen3Config
from minitflow.model.fused import cuda_inference, fused_on_cuda


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


rms_norm = fused_on_cuda(_rms_norm)
expand = fused_on_cuda(expanded)  # a folded q/k/v LoRA where the Triton kernel does not run (CPU)


@fused_on_cuda
def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float,
                 pending: Pending | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual add and the RMSNorm that reads it: (x + delta, its norm), one kernel on CUDA;
    with `pending`, delta's LoRA is added into delta first, in the same kernel."""
    x = x + expanded(delta, pending)
    return x, _rms_norm(x, weight, eps)


@fused_on_cuda
def qk_norm_rope(qk: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, q_heads: int, eps: float,
                 cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Qwen3's per-head RMSNorm of q and of k (each with its own weight), then RoPE, over the q
    and k heads side by side as the qkv projection lays them out: qk (B, T, Hq + Hkv, D) ->
    (B, Hq + Hkv, T, D). One kernel on CUDA for both; each head's values are those of
    normalising q and k apart."""
    d = qk.shape[-1]
    weight = torch.cat([q_weight.expand(q_heads, d), k_weight.expand(qk.shape[2] - q_heads, d)])
    return apply_rotary(_rms_norm(qk, weight, eps).transpose(1, 2), cos, sin)


@fused_on_cuda
def silu_mul(gate_up: torch.Tensor, pending: Pending | None = None) -> torch.Tensor:
    """SiLU(gate)·up; with `pending`, gate/up's LoRA (a B block each) added to each half first."""
    gate, up = gate_up.chunk(2, dim=-1) if pending is None else expanded_parts(gate_up, pending)
    return F.silu(gate) * up


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Rotary(nn.Module):
    """cos/sin tables for every position up to max_positions, in float32."""

    def __init__(self, head_dim: int, theta: float, max_positions: int):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        freqs = torch.arange(max_positions, dtype=torch.float)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, sin (B, 1, T, D) ready to broadcast over heads."""
        return rotary_tables(self.cos, self.sin, positions, dtype)


@fused_on_cuda
def rotary_tables(cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of the float32 tables at `positions`, in `dtype`: one kernel on CUDA."""
    return cos[positions][:, None].to(dtype), sin[positions][:, None].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class DecoderLayer(nn.Module):
    """One Qwen3 block. q/k/v and gate/up are fused into one weight each (like nano-vllm);
    per-request LoRA for a fused weight has one B block per projection (see model/lora.py)."""

    # spare_rows calls in this process, any model's: a CUDA graph captured before one reads the
    # weight it replaced, freed (the runner drops its graphs when this moves)
    restores = 0

    def __init__(self, cfg: Qwen3Config, index: int):
        super().__init__()
        self.cfg, self.index = cfg, index
        h = cfg.hidden_size
        self.input_layernorm = RMSNorm(h, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(h, cfg.rms_norm_eps)
        self.qkv_proj = nn.Linear(h, cfg.q_size + 2 * cfg.kv_size, bias=False)
        self.o_proj = nn.Linear(cfg.q_size, h, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.gate_up_proj = nn.Linear(h, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, h, bias=False)

    def spare_rows(self, group: str, rows: int) -> torch.Tensor:
        """Re-store the fused weight of `group` ("qkv", "o", "gate_up", "down") as the first rows
        of a new (out + rows, in) tensor, zeros below, and return that tensor; the parameter
        becomes a view of it with the same values (rows = 0: a tight copy again). The engine
        keeps each slot's LoRA A in the spare rows so that one matmul gives W x and A x at decode
        (lora_linear.Folded). Made outside inference mode, so the model stays usable for
        autograd after an engine served with it."""
        linear = getattr(self, f"{group}_proj")
        w = linear.weight
        with torch.inference_mode(False), torch.no_grad():
            full = torch.zeros(w.shape[0] + rows, w.shape[1], dtype=w.dtype, device=w.device)
            full[: w.shape[0]].copy_(w)
        linear.weight = nn.Parameter(full[: w.shape[0]], requires_grad=w.requires_grad)
        DecoderLayer.restores += 1
        return full

    def forward(self, x: torch.Tensor, delta: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor, cache: KVCache | None, kv_len: int, lora: dict[str, LoraPair | Folded] | None,
                rows: torch.Tensor | None = None, targets: WriteTargets | None = None,
                pending: Pending | None = None) -> tuple[torch.Tensor, torch.Tensor, Pending | None]:
        """(residual stream, the previous layer's MLP output not yet added to it, or None, and that
        output's LoRA not yet added to it, or None) -> the same three after this layer. Each
        residual add is done by the RMSNorm that reads its sum, one kernel on CUDA, instead of a
        separate add; the model adds the last one (or where it captures a layer's output). A
        `Folded` LoRA's `B u` (lora_linear.project) is added by the next kernel that reads the
        projection's output. `targets`: where the cache is written (KVCache.targets)."""
        cfg = self.cfg
        b, t, _ = x.shape
        lo = lora or {}
        norm = self.input_layernorm
        if delta is None:
            h = rms_norm(x, norm.weight, norm.eps)
        else:
            x, h = add_rms_norm(x, delta, norm.weight, norm.eps, pending)
        qkv, pending = project(h, self.qkv_proj.weight, lo.get("qkv"))
        if cache is not None and cuda_inference(qkv) and not cfg.head_dim & (cfg.head_dim - 1):
            from minitflow.model.qkv_kernel import qkv_to_cache  # imports Triton: only where it runs
            q = qkv_to_cache(qkv, self.q_norm.weight, self.k_norm.weight, cfg.num_attention_heads,
                             cfg.num_key_value_heads, self.q_norm.eps, cos, sin, cache.k[self.index],
                             cache.v[self.index], targets.flat(), pending)
            k_all, v_all = cache.attended(self.index, kv_len, rows, b)
        else:
            qkv = qkv if pending is None else expand(qkv, pending)
            heads = cfg.num_attention_heads + cfg.num_key_value_heads
            qk = qk_norm_rope(qkv[..., :heads * cfg.head_dim].view(b, t, heads, cfg.head_dim), self.q_norm.weight,
                              self.k_norm.weight, cfg.num_attention_heads, self.q_norm.eps, cos, sin)
            q, k = qk.split([cfg.num_attention_heads, cfg.num_key_value_heads], dim=1)
            v = qkv[..., heads * cfg.head_dim:].view(b, t, cfg.num_key_value_heads, cfg.head_dim).transpose(1, 2)
            # without a cache (training, scoring a full sequence) attention reads this call's k/v
            k_all, v_all = (k, v) if cache is None else cache.update(self.index, k, v, targets, kv_len, rows)
        attn = cache_attention(q, k_all, v_all, mask).transpose(1, 2).reshape(b, t, cfg.q_size)
        norm = self.post_attention_layernorm
        o, pending = project(attn, self.o_proj.weight, lo.get("o"))
        x, h = add_rms_norm(x, o, norm.weight, norm.eps, pending)
        gate_up, pending = project(h, self.gate_up_proj.weight, lo.get("gate_up"))
        down, pending = project(silu_mul(gate_up, pending), self.down_proj.weight, lo.get("down"))
        return x, down, pending
