"""A layer's q/k/v after the projection as one Triton kernel (CUDA, inference): Qwen3's per-head
RMSNorm of q and k, RoPE, q written out, k and v written into the KV cache.

Op by op this is the fused q/k norm + RoPE kernel and two indexed cache writes: three launches
per layer at decode. Here a program per (token, head) does its head: a q head is normalised,
rotated and stored; a k head is normalised, rotated and written to its cache row and position
together with the v head of the same index. The roundings follow the op-by-op functions
(`layers._rms_norm`, `layers.apply_rotary`): float32 norm, then each product and sum rounded to
the activations' dtype. Imports Triton: imported only where it runs (model/layers.py, on CUDA);
tests/test_triton_kernels.py checks it on CPU under Triton's interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _qkv_kernel(qkv_ptr, q_ptr, kc_ptr, vc_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr,
                bi_ptr, ti_ptr, row_ptr, pos_ptr, N, T, HQ, HKV, eps,
                s_b, s_t, sq_b, sq_h, sq_t, sc_b, sc_t, skc_row, skc_h, skc_p,
                D: tl.constexpr, HALF: tl.constexpr):
    pid = tl.program_id(0)  # a q head: token pid of the batch; a k head: the pid-th written token
    h = tl.program_id(1)    # heads 0..HQ-1 are q, HQ..HQ+HKV-1 are k (each with its v)
    lo = tl.arange(0, HALF)
    is_q = h < HQ
    n = tl.minimum(pid, N - 1)
    b = tl.where(is_q, pid // T, tl.load(bi_ptr + n)).to(tl.int64)
    t = tl.where(is_q, pid % T, tl.load(ti_ptr + n)).to(tl.int64)
    ok = lo < tl.where(is_q | (pid < N), HALF, 0)  # a vector: loads and stores take element masks
    base = qkv_ptr + b * s_b + t * s_t + h * D
    x_lo = tl.load(base + lo, mask=ok, other=0.0).to(tl.float32)
    x_hi = tl.load(base + HALF + lo, mask=ok, other=0.0).to(tl.float32)
    dt = q_ptr.dtype.element_ty
    r = 1.0 / tl.sqrt((tl.sum(x_lo * x_lo, axis=0) + tl.sum(x_hi * x_hi, axis=0)) / D + eps)
    n_lo = (x_lo * r).to(dt).to(tl.float32)
    n_hi = (x_hi * r).to(dt).to(tl.float32)
    w_lo = tl.where(is_q, tl.load(qw_ptr + lo), tl.load(kw_ptr + lo)).to(tl.float32)
    w_hi = tl.where(is_q, tl.load(qw_ptr + HALF + lo), tl.load(kw_ptr + HALF + lo)).to(tl.float32)
    y_lo = (w_lo * n_lo).to(dt).to(tl.float32)
    y_hi = (w_hi * n_hi).to(dt).to(tl.float32)
    rope = b * sc_b + t * sc_t
    c_lo = tl.load(cos_ptr + rope + lo).to(tl.float32)
    c_hi = tl.load(cos_ptr + rope + HALF + lo).to(tl.float32)
    s_lo = tl.load(sin_ptr + rope + lo).to(tl.float32)
    s_hi = tl.load(sin_ptr + rope + HALF + lo).to(tl.float32)
    out_lo = ((y_lo * c_lo).to(dt).to(tl.float32) + (-y_hi * s_lo).to(dt).to(tl.float32)).to(dt)
    out_hi = ((y_hi * c_hi).to(dt).to(tl.float32) + (y_lo * s_hi).to(dt).to(tl.float32)).to(dt)
    if is_q:
        q_dst = q_ptr + b * sq_b + h * sq_h + t * sq_t
        tl.store(q_dst + lo, out_lo)
        tl.store(q_dst + HALF + lo, out_hi)
    else:
        kv_h = h - HQ
        # names differ from the q branch's: Triton's `if` needs a name bound in both to keep one type
        kv_at = tl.load(row_ptr + n).to(tl.int64) * skc_row + kv_h * skc_h + tl.load(pos_ptr + n).to(tl.int64) * skc_p
        tl.store(kc_ptr + kv_at + lo, out_lo, mask=ok)
        tl.store(kc_ptr + kv_at + HALF + lo, out_hi, mask=ok)
        v_src = qkv_ptr + b * s_b + t * s_t + (HQ + HKV + kv_h) * D
        tl.store(vc_ptr + kv_at + lo, tl.load(v_src + lo, mask=ok), mask=ok)
        tl.store(vc_ptr + kv_at + HALF + lo, tl.load(v_src + HALF + lo, mask=ok), mask=ok)


def qkv_to_cache(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, q_heads: int, kv_heads: int,
                 eps: float, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 flat: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """qkv (B, T, (Hq + 2 Hkv) D) -> q (B, Hq, T, D), normalised and rotated; k (normalised,
    rotated) and v written into one layer's k_cache / v_cache (slots, Hkv, max_len, D) for the
    tokens `flat` = (batch index, token index, cache row, position), each (N,) and contiguous.
    cos, sin (B, 1, T, D) as `layers.Rotary` gives them. D must be a power of two and every last
    dimension contiguous (a wrong stride would write elsewhere in memory, so it is refused)."""
    b, t, width = qkv.shape
    d = width // (q_heads + 2 * kv_heads)
    if d & (d - 1) or any(z.stride(-1) != 1 for z in (qkv, cos, sin, k_cache, v_cache, q_weight, k_weight, *flat)):
        raise ValueError("qkv_to_cache: head_dim a power of two, contiguous last dimensions and index arrays")
    q = torch.empty(b, q_heads, t, d, dtype=qkv.dtype, device=qkv.device)
    bi, ti, rows, pos = flat
    _qkv_kernel[(b * t, q_heads + kv_heads)](
        qkv, q, k_cache, v_cache, q_weight, k_weight, cos, sin, bi, ti, rows, pos, bi.shape[0], t, q_heads, kv_heads,
        eps, qkv.stride(0), qkv.stride(1), q.stride(0), q.stride(1), q.stride(2), cos.stride(0), cos.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), D=d, HALF=d // 2)
    return q
