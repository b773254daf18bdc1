"""The fused per-request LoRA projection: y = W x + B (A x), factors per batch row.

`A` stacks every sender's factors along the rank axis and `B` carries the sender weight and
the LoRA scale, so several senders cost one batched matmul for `A x` and one per `B` block,
with no cross terms (see `minitflow.model.lora`). A fused weight (q/k/v, gate/up) has one `B`
block per projection, each reading its own slice of `A x` and adding into its own columns of
`W x`, so no block-diagonal zeros are stored or read. `lora_linear_ref` is the eager reference;
`lora_project` what the layers call (the reference, or on CUDA at decode one Triton kernel);
`lora_linear` is the reference under `torch.compile` (a compiled decode step inlines
`lora_linear_ref` instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitflow.model.fused import cuda_inference


LoraPair = tuple[torch.Tensor, tuple[torch.Tensor, ...]]

# How decode on CUDA runs each fused weight's LoRA: "kernel", one Triton kernel that also
# computes u = A x in every program (model/lora_kernel.py); "bmm+expand", a cuBLAS bmm for u and
# the kernel for the rest; "bmm", the chain of `lora_linear_ref` (a bmm and a baddbmm_ per B
# block). Read when a step runs (so when a CUDA graph is captured). On an H200 the step's LoRA
# overhead grew from 1.42x to 1.70x at batch 1 between two sessions that changed this path and
# others, so which is fastest is open: bench/test_micro.py's decode step times all three.
DECODE_LORA = "kernel"
DECODE_LORA_PATHS = ("kernel", "bmm+expand", "bmm")


def lora_linear_ref(x: torch.Tensor, weight: torch.Tensor, lora: LoraPair | None = None) -> torch.Tensor:
    """x (B, T, in), weight (out, in), lora = (A (B, R, in), (B_1 (B, out_1, r_1), ...)) with
    sum out_j = out and sum r_j = R -> (B, T, out).

    Each block adds its product into its columns of `W x` in place (`baddbmm_` on a column
    slice, which BLAS writes through its row stride): one kernel per block, no product tensor,
    no concatenation and no separate add; bitwise what `y + cat(bmm(...))` gives in float32."""
    y = F.linear(x, weight)
    if lora is None:
        return y
    a, blocks = lora
    u = torch.bmm(x, a.transpose(1, 2))
    start = col = 0
    for b in blocks:
        rank, out = b.shape[2], b.shape[1]
        if rank:
            y[..., col:col + out].baddbmm_(u[..., start:start + rank], b.transpose(1, 2))
        start, col = start + rank, col + out
    return y


def lora_linear_naive(
    x: torch.Tensor, weight: torch.Tensor, senders: list[tuple[torch.Tensor, torch.Tensor, float]]
) -> torch.Tensor:
    """The official release's approach, kept for benchmarks: one `x @ A.T @ B.T` per sender."""
    y = F.linear(x, weight)
    for a, b, coef in senders:
        y = y + torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2)) * coef
    return y


def lora_project(x: torch.Tensor, weight: torch.Tensor, lora: LoraPair | None = None) -> torch.Tensor:
    """The projection a decoder layer runs: `lora_linear_ref`, except at decode on CUDA (one
    token per row, inference, outside a whole-step torch.compile), where by default
    (DECODE_LORA) the LoRA part is one Triton kernel per fused weight (model/lora_kernel.py)
    instead of a bmm and a `baddbmm_` per B block: 4 kernels per layer instead of 11."""
    if lora is None or x.shape[1] != 1 or not cuda_inference(x):
        return lora_linear_ref(x, weight, lora)
    if DECODE_LORA not in DECODE_LORA_PATHS:
        raise ValueError(f"lora_linear.DECODE_LORA={DECODE_LORA!r}: choose one of {', '.join(DECODE_LORA_PATHS)}")
    if DECODE_LORA == "bmm":
        return lora_linear_ref(x, weight, lora)
    from minitflow.model.lora_kernel import lora_decode_  # imports Triton: only where it runs
    u = torch.bmm(x, lora[0].transpose(1, 2)) if DECODE_LORA == "bmm+expand" else None
    return lora_decode_(F.linear(x, weight), x, *lora, u=u)


_compiled = None


def lora_linear(x: torch.Tensor, weight: torch.Tensor, lora: LoraPair | None = None) -> torch.Tensor:
    """`lora_linear_ref` compiled on first use (dynamic shapes: prefill lengths vary)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(lora_linear_ref, dynamic=True)
    return _compiled(x, weight, lora)
