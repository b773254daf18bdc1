"""The fused per-request LoRA projection: y = W x + B (A x), factors per batch row.

`A` stacks every sender's factors along the rank axis and `B` carries the sender weight and
the LoRA scale, so several senders cost one batched matmul for `A x` and one per `B` block,
with no cross terms (see `minitflow.model.lora`). A fused weight (q/k/v, gate/up) has one `B`
block per projection, each reading its own slice of `A x` and adding into its own columns of
`W x`, so no block-diagonal zeros are stored or read. `lora_linear_ref` is the eager reference;
`project` what the layers call (the reference, or on CUDA at decode one Triton kernel, or a
`Folded` projection whose `B u` is left for the layer's next fused kernel to add: `expanded`);
`lora_linear` is the reference under `torch.compile` (a compiled decode step inlines
`lora_linear_ref` instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minitflow.model.fused import cuda_inference


LoraPair = tuple[torch.Tensor, tuple[torch.Tensor, ...]]
# (u (B, T, R), (B_1 (B, out_1, r_1), ...)): a projection's `B u`, not yet added to its output
Pending = tuple[torch.Tensor, tuple[torch.Tensor, ...]]

# How decode on CUDA runs each fused weight's LoRA: "kernel", one Triton kernel that also
# computes u = A x in every program (model/lora_kernel.py); "bmm+expand", a cuBLAS bmm for u and
# the kernel for the rest; "bmm", the chain of `lora_linear_ref` (a bmm and a baddbmm_ per B
# block); "folded", every slot's A stored beneath W so that the projection's own matmul gives
# u too (`Folded`), and `B u` is added by the kernel that reads the projection's output next (q/k
# norm and RoPE, the residual add with its RMSNorm, SiLU·up): no kernel of its own for LoRA, the
# 9 kernels a layer has without it (bench/op_count.py). Read when a step runs (so when a CUDA
# graph is captured), and by the engine when it allocates its LoRA buffers ("folded" needs them
# beneath the weights; a decode with other buffers runs as "bmm+expand").
# On an H200 the step's LoRA overhead grew from 1.42x to 1.70x at batch 1 between two sessions
# that changed this path and others, so which is fastest is open: bench/test_micro.py's decode
# step times all four.
DECODE_LORA = "kernel"
DECODE_LORA_PATHS = ("kernel", "bmm+expand", "bmm", "folded")


@dataclass
class Folded:
    """A fused weight's LoRA at decode (one token per row) for the consecutive slots
    [first, first + B) of an engine that stores every slot's A beneath W: `weight` is
    (out + slots x R, in), W in its first `out` rows, then each slot's A (R rows), so the one
    matmul `weight[:out + (first + B) R] x` gives W x and every slot's A x; row i keeps the R
    columns of slot first + i (`project`). `blocks`: the rows' B blocks (B, out_j, r_j), sum r_j = R.
    The extra columns cost (first + B) R / out more of the matmul, a few percent at 20 slots,
    instead of a launch per weight for u."""

    weight: torch.Tensor
    out: int
    first: int
    blocks: tuple[torch.Tensor, ...]

    @property
    def rank(self) -> int:
        return sum(b.shape[2] for b in self.blocks)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, in) -> (W x (B, 1, out), u (B, 1, R)): views into one matmul's output."""
        b, r = x.shape[0], self.rank
        if x.shape[1] != 1:
            raise ValueError("Folded LoRA: one token per row (decode)")
        z = F.linear(x, self.weight[: self.out + (self.first + b) * r])
        n = z.shape[-1]
        u = z.as_strided((b, 1, r), (n + r, n, 1), z.storage_offset() + self.out + self.first * r)
        return z[..., : self.out], u


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
    return expand_(y, torch.bmm(x, a.transpose(1, 2)), blocks)


def expand_(y: torch.Tensor, u: torch.Tensor, blocks: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """y (B, T, out) += [B_1 u_1; B_2 u_2; ...] in place, u (B, T, R): each block a `baddbmm_`
    into its columns."""
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
    u = torch.bmm(x, lora[0].transpose(1, 2)) if DECODE_LORA in ("bmm+expand", "folded") else None
    return lora_decode_(F.linear(x, weight), x, *lora, u=u)


def project(x: torch.Tensor, weight: torch.Tensor,
            lora: LoraPair | Folded | None) -> tuple[torch.Tensor, Pending | None]:
    """What a decoder layer's projection gives: (y, None) with y = `lora_project`, or for a
    `Folded` LoRA (the engine's buffers under DECODE_LORA "folded", at decode) (W x, (u, B blocks)),
    `B u` left for the layer's next kernel to add (`expanded`, inside a fused function): its own
    launch per projection would cost as much as the work, r multiply-adds per output."""
    if isinstance(lora, Folded):
        y, u = lora.project(x)
        return y, (u, lora.blocks)
    return lora_project(x, weight, lora), None


def expanded(y: torch.Tensor, pending: Pending | None) -> torch.Tensor:
    """y (B, T, out) + [B_1 u_1; B_2 u_2; ...] out of place, or y itself without LoRA. Op by op
    (CPU), a `baddbmm_` per block, as `lora_linear_ref` adds pairs; compiled (a fused function on
    CUDA), `expanded_parts`' elementwise form, which the function's kernel takes in."""
    if pending is None:
        return y
    if not torch.compiler.is_compiling():
        return expand_(y.clone(), *pending)
    parts = expanded_parts(y, pending)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def expanded_parts(y: torch.Tensor, pending: Pending) -> list[torch.Tensor]:
    """Each B block's columns of `expanded(y, pending)`. Compiled, as elementwise ops: each column
    adds its r_j products to y in float32 and is rounded once, as `baddbmm_` does (the summation
    order differs), unrolled over the rank so that a fused function's kernel takes it in with
    its own elementwise work instead of a reduction or a concatenation of its own (op by op that
    would be ~230 more ops a layer)."""
    u, blocks = pending
    if not torch.compiler.is_compiling():
        return list(expanded(y, pending).split([b.shape[1] for b in blocks], dim=-1))
    parts, start, col = [], 0, 0
    for b in blocks:
        out, rank = b.shape[1], b.shape[2]
        acc = y[..., col:col + out].float()
        for j in range(start, start + rank):
            acc = acc + u[..., j:j + 1].float() * b[:, None, :, j - start].float()
        parts.append(acc.to(y.dtype))
        start, col = start + rank, col + out
    return parts


_compiled = None


def lora_linear(x: torch.Tensor, weight: torch.Tensor, lora: LoraPair | None = None) -> torch.Tensor:
    """`lora_linear_ref` compiled on first use (dynamic shapes: prefill lengths vary)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(lora_linear_ref, dynamic=True)
    return _compiled(x, weight, lora)
