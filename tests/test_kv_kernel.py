"""The cache write kernel (model/kv_kernel.py) against the indexed writes it replaces, on CPU
under Triton's interpreter, in a child process (TRITON_INTERPRET must be set before Triton is
imported, and must not reach this process's real kernels). Skips where Triton is not
installed; tests/test_gpu.py runs the model with the compiled kernel on CUDA."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (pip install triton)")

CHECK = r'''
import torch
from minitflow.model.kv_cache import KVCache
from minitflow.model.kv_kernel import kv_store_
g = torch.Generator().manual_seed(0)
n = 0
for dtype in (torch.float32, torch.bfloat16):
    for b, t, rows, padded in ((3, 1, None, False), (2, 1, torch.tensor([4, 1]), False),
                               (3, 5, torch.tensor([0, 5, 2]), True), (2, 4, None, False)):
        qk = torch.randn(b, 6, t, 32, generator=g).to(dtype)           # q heads 0-3, k heads 4-5
        qkv = torch.randn(b, t, 8 * 32, generator=g).to(dtype)         # v: heads 6-7 of a qkv row
        k, v = qk[:, 4:], qkv[..., 6 * 32:].view(b, t, 2, 32).transpose(1, 2)
        # distinct positions per row: no two writes to one place
        positions = torch.stack([torch.randperm(40, generator=g)[:t] for _ in range(b)])
        real = (torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 0, 0, 1, 4])) if padded else None
        targets = KVCache.targets(positions, rows, real)
        want, got = (KVCache(2, 6, 40, 2, 32, dtype, "cpu") for _ in range(2))
        want.update(1, k, v, targets, 40, rows)
        kv_store_(k, v, got.k[1], got.v[1], targets.flat())
        assert torch.equal(got.k, want.k) and torch.equal(got.v, want.v) and want.k.abs().sum() > 0
        n += 1
try:
    kv_store_(torch.zeros(1, 2, 1, 24), torch.zeros(1, 2, 1, 24), torch.zeros(2, 2, 8, 24), torch.zeros(2, 2, 8, 24),
              KVCache.targets(torch.zeros(1, 1, dtype=torch.long)).flat())
    raise SystemExit("head_dim 24 was accepted")
except ValueError as e:
    assert "power of two" in str(e)
print("ok", n)
'''


def test_kv_store_kernel_writes_what_the_indexed_writes_write_interpreted():
    """Decode and prefill shapes, cache rows given or not, a padded batch's real tokens only,
    k and v as the strided views the layer passes, float32 and bf16: the same cache, bitwise;
    a head_dim that is not a power of two is refused."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "ok 8", out.stdout + out.stderr[-3000:]
