"""The decode LoRA kernel (model/lora_kernel.py) against the reference projection, on CPU under
Triton's interpreter, in a child process (TRITON_INTERPRET must be set before Triton is imported,
and must not reach this process's real kernels). Skips where Triton is not installed (CPU wheels
of PyTorch do not bring it; `pip install triton` to run it); tests/test_gpu.py runs the compiled
kernel on CUDA."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (pip install triton)")

CHECK = r'''
import torch, torch.nn.functional as F
from minitflow.model.lora_kernel import lora_decode_
from minitflow.model.lora_linear import lora_linear_ref
g = torch.Generator().manual_seed(0)
cases = [((20, 7, 7), (8, 8, 8)),   # q/k/v: blocks straddle the 16-column tiles
         ((24, 24), (4, 8)),        # gate/up
         ((33,), (16,)),            # o, down
         ((12, 5, 5), (0, 4, 4))]   # a projection no sender adapts: its columns stay W x
for dtype in (torch.float32, torch.bfloat16):
    for outs, ranks in cases:
        b, k = 3, 40
        x = torch.randn(b, 1, k, generator=g).to(dtype)
        w = (0.1 * torch.randn(sum(outs), k, generator=g)).to(dtype)
        a = (0.1 * torch.randn(b, sum(ranks), k, generator=g)).to(dtype)
        blocks = tuple((0.1 * torch.randn(b, o, r, generator=g)).to(dtype) for o, r in zip(outs, ranks))
        want = lora_linear_ref(x, w, (a, blocks))
        got = lora_decode_(F.linear(x, w), x, a, blocks, block_n=16, block_k=16)
        several = lora_decode_(F.linear(x, w), x, a, blocks, block_n=8, block_k=16, programs=2)  # 4 tiles a program
        assert torch.equal(several, got) or dtype == torch.float32 and torch.allclose(several, got)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(got, want, **tol)
        if ranks[0] == 0:
            assert torch.equal(got[..., :outs[0]], F.linear(x, w)[..., :outs[0]])
try:
    lora_decode_(torch.zeros(2, 3, 4), torch.randn(2, 3, 8), torch.zeros(2, 2, 8), (torch.zeros(2, 4, 2),))
    raise SystemExit("a prefill was accepted")
except ValueError as e:
    assert "one token per row" in str(e)
print("ok", len(cases) * 2)
'''


def test_decode_kernel_equals_the_reference_projection_interpreted():
    """q/k/v-, gate/up- and single-block layouts, a rank-0 block, float32 and bf16, tiles that
    straddle block boundaries, several tiles per program and a K loop of several steps; a
    prefill is refused."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "ok 8", out.stdout + out.stderr[-3000:]
