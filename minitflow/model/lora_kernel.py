"""Per-row LoRA at decode as one Triton kernel per fused weight: y += B (A x), in place.

At decode (one token per row) the LoRA of a fused weight is a chain of tiny kernels: a bmm for
`A x` and one `baddbmm_` per B block (q/k/v: 4, gate/up: 3, o and down: 2 each; 11 per layer,
half of a decode step's kernels, bench/op_count.py). Each is a launch, also inside a CUDA graph,
and the bmm of one row against a (R x in) matrix keeps few SMs busy. Here one program per (row,
run of output-column tiles) computes the whole `u = A x` itself (R x in multiply-adds, a few dozen
thousand; A is read from L2 by all the row's programs) and adds its tiles of `B u` into `y`: 4
kernels per layer. `u` is rounded to the activations' dtype, as the bmm's output is, and every
sum runs in float32; only the summation order differs from `lora_linear_ref`. Given `u` (from a
cuBLAS bmm, 8 kernels per layer) the programs only expand: each recomputing u loops over the
whole input serially (9,728 for `down`), which may cost more than the bmm's launch; which wins
is the GPU's to say (lora_linear.DECODE_LORA, bench/test_micro.py's decode step).

Triton ships with PyTorch's CUDA wheels; on CPU the kernel runs only under Triton's interpreter
(TRITON_INTERPRET=1, tests/test_triton_kernels.py). This module imports Triton, so it is
imported only where the kernel runs (model/lora_linear.py, on CUDA).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_BLOCKS = 3  # q/k/v; gate/up has 2, o and down 1
PROGRAMS = 512  # about how many programs a launch aims at (a few per SM), see lora_decode_


@triton.jit
def _lora_decode_kernel(y_ptr, x_ptr, a_ptr, u_ptr, b0_ptr, b1_ptr, b2_ptr, N, K, R,
                        sy, sx, sa, sa_r, su, sb0, sb0_o, sb1, sb1_o, sb2, sb2_o,
                        c1, c2, r1, r2,
                        R_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, TILES: tl.constexpr,
                        SHRINK: tl.constexpr):
    # block j holds columns [c_j, c_{j+1}) and reads u[r_j : r_{j+1}]; c0 = r0 = 0, c3 = N, r3 = R.
    # SHRINK: compute u = A x here; else read it from u_ptr (a bmm's output: lora_decode_'s `u`).
    row = tl.program_id(0).to(tl.int64)  # row x row stride can pass 2^31 in a large engine
    rr = tl.arange(0, R_PAD)
    if SHRINK:
        u = tl.zeros([R_PAD], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            xk = tl.load(x_ptr + row * sx + kk, mask=kk < K, other=0.0).to(tl.float32)
            ak = tl.load(a_ptr + row * sa + rr[:, None] * sa_r + kk[None, :],
                         mask=(rr[:, None] < R) & (kk[None, :] < K), other=0.0).to(tl.float32)
            u += tl.sum(ak * xk[None, :], axis=1)
        u = u.to(y_ptr.dtype.element_ty).to(tl.float32)  # rounded like the bmm's output
    else:
        u = tl.load(u_ptr + row * su + rr, mask=rr < R, other=0.0).to(tl.float32)
    for tile in range(TILES):
        nn = (tl.program_id(1) * TILES + tile) * BLOCK_N + tl.arange(0, BLOCK_N)
        col, rank = nn[:, None], rr[None, :]
        m0 = (col < c1) & (rank < r1)
        t0 = tl.load(b0_ptr + row * sb0 + col * sb0_o + rank, mask=m0, other=0.0).to(tl.float32)
        m1 = (col >= c1) & (col < c2) & (rank >= r1) & (rank < r2)
        t1 = tl.load(b1_ptr + row * sb1 + (col - c1) * sb1_o + (rank - r1), mask=m1, other=0.0).to(tl.float32)
        m2 = (col >= c2) & (col < N) & (rank >= r2) & (rank < R)
        t2 = tl.load(b2_ptr + row * sb2 + (col - c2) * sb2_o + (rank - r2), mask=m2, other=0.0).to(tl.float32)
        delta = tl.sum((t0 + t1 + t2) * u[None, :], axis=1)
        keep = nn < N
        y = tl.load(y_ptr + row * sy + nn, mask=keep, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * sy + nn, (y + delta).to(y_ptr.dtype.element_ty), mask=keep)


def lora_decode_(y: torch.Tensor, x: torch.Tensor | None, a: torch.Tensor | None, blocks: tuple[torch.Tensor, ...],
                 block_n: int = 128, block_k: int = 256, programs: int = PROGRAMS, num_warps: int = 4,
                 u: torch.Tensor | None = None) -> torch.Tensor:
    """y (B, 1, N) += [B_1 u_1; B_2 u_2; ...] with u = A x: x (B, 1, K), A (B, R, K), blocks
    B_j (B, N_j, r_j) with sum N_j = N and sum r_j = R (at most MAX_BLOCKS; a rank-0 block adds
    nothing). Every last dimension must be contiguous, which the engine's buffers are; the rows of
    y and u may have any stride. `u` (B, 1, R), when given, is A x already (a cuBLAS bmm:
    lora_linear.DECODE_LORA "bmm+expand"), and each program only expands (x and A may be None then);
    without it each program recomputes u. The tiling (block_n, block_k, programs, num_warps) is
    untuned: bench/lora_kernel_sweep.py times the alternatives on a GPU."""
    b, t, n = y.shape
    r = sum(blk.shape[2] for blk in blocks)
    given = [z for z in (y, x, a, *blocks) if z is not None]
    if t != 1 or len(blocks) > MAX_BLOCKS or any(z.stride(-1) != 1 for z in given) or \
            (u is None and (x is None or a is None or a.shape[1] != r)) or \
            u is not None and (u.shape != (b, 1, r) or u.stride(-1) != 1):
        raise ValueError("lora_decode_: one token per row, at most 3 blocks, contiguous last dimensions, u (B, 1, R)"
                         " or x and A")
    k = 0 if x is None else x.shape[-1]
    cols = [0]
    ranks = [0]
    for blk in blocks:
        cols.append(cols[-1] + blk.shape[1])
        ranks.append(ranks[-1] + blk.shape[2])
    pad = list(blocks) + [blocks[0]] * (MAX_BLOCKS - len(blocks))  # absent blocks: empty ranges
    cols += [n] * (MAX_BLOCKS + 1 - len(cols))
    ranks += [r] * (MAX_BLOCKS + 1 - len(ranks))
    # Each program recomputes its row's u, reading A (tens of KB) from L2; at a large batch a
    # program takes several column tiles so that these reads stay near `programs` programs' worth.
    n_tiles = -(-n // block_n)
    tiles = min(1 << (max(1, -(-b * n_tiles // programs)) - 1).bit_length(), 1 << (n_tiles - 1).bit_length())
    grid = (b, -(-n_tiles // tiles))
    shrink = u is None
    if shrink:
        u, su = a, 0  # u_ptr unread: each program computes u
    else:
        x = a = u  # x_ptr and a_ptr unread: u is given
        su = u.stride(0)
    _lora_decode_kernel[grid](y, x, a, u, pad[0], pad[1], pad[2], n, k, r,
                              y.stride(0), x.stride(0), a.stride(0), a.stride(1), su,
                              pad[0].stride(0), pad[0].stride(1), pad[1].stride(0), pad[1].stride(1),
                              pad[2].stride(0), pad[2].stride(1),
                              cols[1], cols[2], ranks[1], ranks[2],
                              R_PAD=max(16, 1 << (r - 1).bit_length()), BLOCK_N=block_n, BLOCK_K=block_k,
                              TILES=tiles, SHRINK=shrink, num_warps=num_warps)
    return y
