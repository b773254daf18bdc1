"""Elementwise chains as one kernel on CUDA (`fused_on_cuda`), op by op elsewhere."""

from __future__ import annotations

from contextlib import contextmanager

import torch

_FUSED: dict = {}
# Where the fused functions run compiled on CUDA: "everywhere" (every inference call), or
# "decode" (only inside `decoding()`: the engine's decode steps and their graph captures;
# prefills, the generator and LatentMAS's latent steps then run op by op). A compiled call costs
# its guard checks on the host, and an eager stage that is bound by launching kernels may be
# faster with more, cheaper launches: bench/profile_stages.py times tflow's stages both ways.
FUSE = "everywhere"
FUSE_MODES = ("everywhere", "decode")
_decoding = 0


@contextmanager
def decoding():
    """Marks a decode step (and its graph capture) for FUSE = "decode"."""
    global _decoding
    _decoding += 1
    try:
        yield
    finally:
        _decoding -= 1


def cuda_inference(x: torch.Tensor) -> bool:
    """Whether an op on `x` takes the CUDA path's kernels (fused functions, the Triton kernels):
    on CUDA, with no gradient being recorded, and outside a whole-step torch.compile
    (LLM(compile=True)), where inductor fuses the op-by-op reference itself."""
    return x.is_cuda and not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def fused_on_cuda(fn):
    """`fn` as one fused kernel (torch.compile, dynamic shapes) when its first argument is on
    CUDA and no gradient is being recorded, op by op elsewhere. A decode step is hundreds of
    tiny kernels at batch 1, and each costs its launch even inside a CUDA graph; fusing the
    elementwise chains (RMSNorm, the residual add with the RMSNorm after it, q/k norm with RoPE,
    SiLU·up) folds 34 ops per layer into 4 kernels (bench/op_count.py), and the step's attention
    mask, rotary tables and sampling noise are one kernel each. CPU keeps the op-by-op
    reference that matches transformers, and training keeps it too (its backward is the tested
    one); on CUDA the fused kernel may round bf16 intermediates differently."""
    def call(x: torch.Tensor, *args):
        if not cuda_inference(x):
            return fn(x, *args)
        if FUSE != "everywhere":
            if FUSE not in FUSE_MODES:
                raise ValueError(f"fused.FUSE={FUSE!r}: choose one of {', '.join(FUSE_MODES)}")
            if not _decoding:
                return fn(x, *args)
        compiled = _FUSED.get(fn)
        if compiled is None:
            allow_recompiles(RECOMPILE_LIMIT)
            compiled = _FUSED[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
        return compiled(x, *args)
    call.eager = fn  # type: ignore[attr-defined]
    return call


# Compiled variants one fused function may need in one process: each dtype, size 1 against the
# other sizes (dynamo specializes 0 and 1), inference tensors against plain ones, several models.
# dynamo's default of 8 made a process that ran float32 and bf16 models fail (fullgraph raises).
RECOMPILE_LIMIT = 64


def allow_recompiles(limit: int) -> None:
    """Raise dynamo's per-function recompile limit (a process-wide setting) to at least `limit`."""
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # torch < 2.6
    setattr(cfg, name, max(getattr(cfg, name), limit))
