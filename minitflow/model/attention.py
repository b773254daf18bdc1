"""Attention over the preallocated KV cache with per-row positions.

Grouped-query attention without copying the cache: the query heads that share a KV head
are folded into the query-length axis, so SDPA sees equal head counts for q and k/v.
The mask allows `key_position <= query_position`; rows of different lengths therefore never
see each other's padding, which is what makes batching invariant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitflow.model.fused import fused_on_cuda


@fused_on_cuda
def causal_mask(positions: torch.Tensor, kv_len: int, group: int, dtype: torch.dtype) -> torch.Tensor:
    """positions (B, T) -> additive mask (B, 1, group * T, kv_len) of `dtype`: 0 where attention
    is allowed, -inf elsewhere; `group` query heads per KV head (see cache_attention), repeated
    once here rather than in every layer. Additive, not bool: SDPA turns a bool mask into this
    (two kernels) in every layer. Every row allows key 0 (positions are >= 0, padding sits at
    0), so no row is all -inf. Once per forward; one kernel on CUDA."""
    keys = torch.arange(kv_len, device=positions.device)
    allowed = keys[None, None, None, :] <= positions[:, None, :, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=positions.device).masked_fill_(~allowed, float("-inf"))
    return mask if group == 1 else mask.repeat(1, 1, group, 1)


def cache_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """q (B, Hq, T, D), k/v (B, Hkv, S, D), mask (B, 1, Hq/Hkv * T, S) from
    causal_mask(..., group=Hq/Hkv) -> (B, Hq, T, D)."""
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    rep = hq // hkv
    if rep == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    qg = q.reshape(b, hkv, rep * t, d)
    out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)
    return out.reshape(b, hq, t, d)
