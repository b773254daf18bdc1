"""A layer's q/k/v after the projection as one Triton kernel (CUDA, inference): Qwen3's per-head
RMSNorm of q and k, RoPE, q written out, k and v written into the KV cache.

Op by op this is the fused q/k norm + RoPE kernel and two indexed cache writes: three launches
per layer at decode. Here a program per (token, head) does its head: a q head is normalised,
rotated and stored; a k head is normalised, rotated and written to its cache row and position
together with the v head of the same index. The roundings follow the op-by-op functions
(`layers._rms_norm`, `layers.apply_rotary`): float32 norm, then each product and sum rounded to
the activations' dtype. With a `Folded` LoRA's pending `B u` (lora_linear.project) each program
first adds its head's columns of it, as `lora_linear.expanded` does: no kernel of its own for
q/k/v's LoRA. Imports Triton: imported only where it runs (model/layers.py, on CUDA);
tests/test_triton_kernels.py checks it on CPU under Triton's interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from minitflow.model.lora_linear import Pending


@triton.jit
def _tile(ptrs, mask):
    """A (HALF, R_PAD) tile of a B block in float32, zeros where masked."""
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _qkv_kernel(qkv_ptr, q_ptr, kc_ptr, vc_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr,
                bi_ptr, ti_ptr, row_ptr, pos_ptr, N, T, HQ, HKV, eps,
                s_b, s_t, sq_b, sq_h, sq_t, sc_b, sc_t, skc_row, skc_h, skc_p,
                u_ptr, bq_ptr, bk_ptr, bv_ptr, su_b, su_t, sbq_b, sbq_o, sbk_b, sbk_o, sbv_b, sbv_o, r1, r2, R,
                D: tl.constexpr, HALF: tl.constexpr, LORA: tl.constexpr, R_PAD: tl.constexpr):
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
    if LORA:  # + this head's columns of B u: a q head reads block q (ranks [0, r1)), a k head block k ([r1, r2))
        rk = tl.arange(0, R_PAD)
        r0 = tl.where(is_q, 0, r1)
        use = (rk >= r0) & (rk < tl.where(is_q, r1, r2))
        u = tl.load(u_ptr + b * su_b + t * su_t + rk, mask=use, other=0.0).to(tl.float32)[None, :]
        j = tl.where(use, rk - r0, 0)[None, :]
        col = (tl.where(is_q, h, h - HQ) * D + lo)[:, None]
        mq = (use & (rk < tl.where(is_q, R_PAD, 0)))[None, :] & ok[:, None]  # masks as vectors (see `ok`)
        mk = (use & (rk < tl.where(is_q, 0, R_PAD)))[None, :] & ok[:, None]
        bq, bk = bq_ptr + b * sbq_b + j, bk_ptr + b * sbk_b + j
        lo_terms = _tile(bq + col * sbq_o, mq) + _tile(bk + col * sbk_o, mk)
        hi_terms = _tile(bq + (col + HALF) * sbq_o, mq) + _tile(bk + (col + HALF) * sbk_o, mk)
        x_lo = (x_lo + tl.sum(lo_terms * u, axis=1)).to(dt).to(tl.float32)  # rounded as lora_linear.expanded
        x_hi = (x_hi + tl.sum(hi_terms * u, axis=1)).to(dt).to(tl.float32)
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
        v_lo = tl.load(v_src + lo, mask=ok)
        v_hi = tl.load(v_src + HALF + lo, mask=ok)
        if LORA:  # + block v's columns of B u (ranks [r2, R))
            rk = tl.arange(0, R_PAD)
            use = (rk >= r2) & (rk < R)
            u = tl.load(u_ptr + b * su_b + t * su_t + rk, mask=use, other=0.0).to(tl.float32)[None, :]
            bv = bv_ptr + b * sbv_b + tl.where(use, rk - r2, 0)[None, :] + (kv_h * D + lo)[:, None] * sbv_o
            mv = use[None, :] & ok[:, None]
            v_lo = (v_lo.to(tl.float32) + tl.sum(_tile(bv, mv) * u, axis=1)).to(dt)
            v_hi = (v_hi.to(tl.float32) + tl.sum(_tile(bv + HALF * sbv_o, mv) * u, axis=1)).to(dt)
        tl.store(vc_ptr + kv_at + lo, v_lo, mask=ok)
        tl.store(vc_ptr + kv_at + HALF + lo, v_hi, mask=ok)


def qkv_to_cache(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, q_heads: int, kv_heads: int,
                 eps: float, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 flat: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                 lora: Pending | None = None) -> torch.Tensor:
    """qkv (B, T, (Hq + 2 Hkv) D) -> q (B, Hq, T, D), normalised and rotated; k (normalised,
    rotated) and v written into one layer's k_cache / v_cache (slots, Hkv, max_len, D) for the
    tokens `flat` = (batch index, token index, cache row, position), each (N,) and contiguous.
    cos, sin (B, 1, T, D) as `layers.Rotary` gives them. D must be a power of two and every last
    dimension contiguous (a wrong stride would write elsewhere in memory, so it is refused).
    `lora`: a `Folded` projection's pending (u (B, T, R), (B_q, B_k, B_v)) (lora_linear.project),
    added into q, k and v first; u's rows and blocks may have any stride but the last."""
    b, t, width = qkv.shape
    d = width // (q_heads + 2 * kv_heads)
    u, blocks = lora if lora is not None else (qkv, (qkv,) * 3)  # without LoRA: unread
    outs = (q_heads * d, kv_heads * d, kv_heads * d)
    if d & (d - 1) or any(z.stride(-1) != 1 for z in (qkv, cos, sin, k_cache, v_cache, q_weight, k_weight, *flat,
                                                      u, *blocks)) or \
            lora is not None and (len(blocks) != 3 or tuple(blk.shape[1] for blk in blocks) != outs or
                                  u.shape != (b, t, sum(blk.shape[2] for blk in blocks))):
        raise ValueError("qkv_to_cache: head_dim a power of two, contiguous last dimensions and index arrays, "
                         "LoRA as u (B, T, R) and q, k, v blocks")
    rq, rk, rv = (blk.shape[2] for blk in blocks) if lora is not None else (0, 0, 0)
    q = torch.empty(b, q_heads, t, d, dtype=qkv.dtype, device=qkv.device)
    bi, ti, rows, pos = flat
    _qkv_kernel[(b * t, q_heads + kv_heads)](
        qkv, q, k_cache, v_cache, q_weight, k_weight, cos, sin, bi, ti, rows, pos, bi.shape[0], t, q_heads, kv_heads,
        eps, qkv.stride(0), qkv.stride(1), q.stride(0), q.stride(1), q.stride(2), cos.stride(0), cos.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        u, *blocks, u.stride(0), u.stride(1), blocks[0].stride(0), blocks[0].stride(1), blocks[1].stride(0),
        blocks[1].stride(1), blocks[2].stride(0), blocks[2].stride(1), rq, rq + rk, rq + rk + rv,
        D=d, HALF=d // 2, LORA=lora is not None, R_PAD=max(16, 1 << max(rq + rk + rv - 1, 0).bit_length()))
    return q
