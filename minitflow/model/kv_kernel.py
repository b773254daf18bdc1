"""The cache write of a layer's new keys and values as one Triton kernel (CUDA, inference).

Writing keys and values with advanced indexing is two kernels per layer (one `index_put_`
each); this is one, a program per (token, KV head) copying both rows of `head_dim` values to
their cache row and position (as nano-vllm's store kernel does). Imports Triton: imported only
where it runs (model/kv_cache.py, on CUDA); tests/test_triton_kernels.py checks it on CPU under
Triton's interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _kv_store_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, bi_ptr, ti_ptr, row_ptr, pos_ptr,
                     sk_b, sk_h, sk_t, sv_b, sv_h, sv_t, sc_row, sc_h, sc_p, D: tl.constexpr):
    n = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.load(bi_ptr + n).to(tl.int64)
    t = tl.load(ti_ptr + n).to(tl.int64)
    dst = tl.load(row_ptr + n).to(tl.int64) * sc_row + h * sc_h + tl.load(pos_ptr + n).to(tl.int64) * sc_p
    d = tl.arange(0, D)
    tl.store(kc_ptr + dst + d, tl.load(k_ptr + b * sk_b + h * sk_h + t * sk_t + d))
    tl.store(vc_ptr + dst + d, tl.load(v_ptr + b * sv_b + h * sv_h + t * sv_t + d))


def kv_store_(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              flat: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """k, v (B, Hkv, T, D) -> k_cache, v_cache (slots, Hkv, max_len, D) of one layer, for the
    tokens `flat` = (batch index, token index, cache row, position), each (N,) and contiguous. D
    must be a power of two and every last dimension contiguous (a wrong stride would write
    elsewhere in memory, so it is refused)."""
    d = k.shape[-1]
    if d & (d - 1) or any(z.stride(-1) != 1 for z in (k, v, k_cache, v_cache, *flat)):
        raise ValueError("kv_store_: head_dim a power of two, contiguous last dimensions and index arrays")
    bi, ti, rows, pos = flat
    _kv_store_kernel[(bi.shape[0], k.shape[1])](
        k, v, k_cache, v_cache, bi, ti, rows, pos,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), D=d)
