"""Qwen3 building blocks, computed as transformers computes them."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitflow.model.kv_cache import KVCache
from minitflow.model.attention import cache_attention
from minitflow.model.lora_linear import LoraPair, lora_linear_ref
from minitflow.model.config import Qwen3Config


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


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
        return self.cos[positions][:, None].to(dtype), self.sin[positions][:, None].to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class DecoderLayer(nn.Module):
    """One Qwen3 block. q/k/v and gate/up are fused into one weight each (like nano-vllm);
    per-request LoRA for a fused weight has one B block per projection (see model/lora.py)."""

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

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor, cache: KVCache | None, kv_len: int,
                lora: dict[str, LoraPair] | None, rows: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        b, t, _ = x.shape
        lo = lora or {}
        qkv = lora_linear_ref(self.input_layernorm(x), self.qkv_proj.weight, lo.get("qkv"))
        q, k, v = qkv.split([cfg.q_size, cfg.kv_size, cfg.kv_size], dim=-1)
        q = self.q_norm(q.view(b, t, cfg.num_attention_heads, cfg.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(b, t, cfg.num_key_value_heads, cfg.head_dim)).transpose(1, 2)
        v = v.view(b, t, cfg.num_key_value_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # without a cache (training, scoring a full sequence) attention reads this call's k/v
        k_all, v_all = (k, v) if cache is None else cache.update(self.index, k, v, positions, kv_len, rows, valid)
        attn = cache_attention(q, k_all, v_all, mask).transpose(1, 2).reshape(b, t, cfg.q_size)
        x = x + lora_linear_ref(attn, self.o_proj.weight, lo.get("o"))
        gate, up = lora_linear_ref(self.post_attention_layernorm(x), self.gate_up_proj.weight,
                                   lo.get("gate_up")).chunk(2, dim=-1)
        return x + lora_linear_ref(F.silu(gate) * up, self.down_proj.weight, lo.get("down"))
