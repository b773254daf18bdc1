"""The Triton kernels of the CUDA path (model/lora_kernel.py, model/qkv_kernel.py) on a machine
without a GPU: against the ops they replace under Triton's interpreter, and compiled ahead of
time for A100 and H100 from the arguments the launchers really pass (the interpreter runs code
the compiler refuses). Each check runs in a child process (TRITON_INTERPRET must be set before
Triton is imported, and must not reach this process's real kernels). Skips where Triton is not
installed (CPU wheels of PyTorch do not bring it: `pip install triton` to run them);
tests/test_gpu.py runs the compiled kernels on CUDA."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (pip install triton)")


def interpreted(check: str, **env: str) -> str:
    """Run `check` (a Python script) with Triton's interpreter (or with `env` instead); its last
    line of output."""
    env = {**os.environ, **(env or {"TRITON_INTERPRET": "1"})}
    out = subprocess.run([sys.executable, "-c", check], env=env,
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


LORA_CHECK = r'''
import torch, torch.nn.functional as F
from minitflow.model.lora_kernel import lora_decode_
from minitflow.model.lora_linear import Folded, lora_linear_ref
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
        u = torch.bmm(x, a.transpose(1, 2))  # given: the programs only expand
        expanded = lora_decode_(F.linear(x, w), x, a, blocks, block_n=16, block_k=16, u=u)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(got, want, **tol)
        torch.testing.assert_close(expanded, want, **tol)
        if ranks[0] == 0:
            assert torch.equal(got[..., :outs[0]], F.linear(x, w)[..., :outs[0]])
        # folded: 5 slots' A beneath W, rows = slots 1..3; u and y are strided columns of one matmul
        full = torch.cat([w, torch.zeros(5 * sum(ranks), k, dtype=dtype)])
        full[len(w):].view(5, sum(ranks), k)[1:4] = a
        y, uf = Folded(full, len(w), 1, blocks).project(x)
        torch.testing.assert_close(lora_decode_(y, None, None, blocks, block_n=16, u=uf), want, **tol)
try:
    lora_decode_(torch.zeros(2, 3, 4), torch.randn(2, 3, 8), torch.zeros(2, 2, 8), (torch.zeros(2, 4, 2),))
    raise SystemExit("a prefill was accepted")
except ValueError as e:
    assert "one token per row" in str(e)
try:
    lora_decode_(torch.zeros(2, 1, 4), torch.randn(2, 1, 8), torch.zeros(2, 2, 8), (torch.zeros(2, 4, 2),),
                 u=torch.zeros(2, 1, 3))
    raise SystemExit("a u of the wrong rank was accepted")
except ValueError as e:
    assert "u (B, 1, R)" in str(e)
print("ok", len(cases) * 2)
'''

QKV_CHECK = r'''
import torch
from minitflow.model.kv_cache import KVCache
from minitflow.model.layers import Rotary, qk_norm_rope
from minitflow.model.lora_linear import expanded
from minitflow.model.qkv_kernel import qkv_to_cache
g = torch.Generator().manual_seed(0)
rot = Rotary(32, 1e6, 64)
n = 0
for dtype in (torch.float32, torch.bfloat16):
    for b, t, rows, padded in ((3, 1, None, False), (2, 1, torch.tensor([4, 1]), False),
                               (3, 5, torch.tensor([0, 5, 2]), True), (2, 4, None, False),
                               (1, 6, None, False)):  # one row: its expanded row index is stride 0
        qkv = torch.randn(b, t, (4 + 2 + 2) * 32, generator=g).to(dtype)  # q 4 heads, k and v 2
        qw, kw = (1 + 0.2 * torch.randn(2, 32, generator=g)).to(dtype)
        # distinct positions per row: no two writes to one place
        positions = torch.stack([torch.randperm(40, generator=g)[:t] for _ in range(b)])
        cos, sin = rot(positions, dtype)
        real = (torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 0, 0, 1, 4])) if padded else None
        targets = KVCache.targets(positions, rows, real)
        want, got = (KVCache(2, 6, 40, 2, 32, dtype, "cpu") for _ in range(2))
        qk = qk_norm_rope(qkv[..., :6 * 32].view(b, t, 6, 32), qw, kw, 4, 1e-6, cos, sin)
        v = qkv[..., 6 * 32:].view(b, t, 2, 32).transpose(1, 2)
        want.update(1, qk[:, 4:], v, targets, 40, rows)
        q = qkv_to_cache(qkv, qw, kw, 4, 2, 1e-6, cos, sin, got.k[1], got.v[1], targets.flat())
        # bf16 within a few ulps: the interpreter rounds float32 to bf16 by truncation (the GPU
        # to nearest; tests/test_gpu.py compares there), and the norm's sum runs in another order
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=3e-2, atol=6e-2)
        torch.testing.assert_close(q, qk[:, :4], **tol)
        torch.testing.assert_close(got.k, want.k, **tol)
        assert torch.equal(got.v, want.v) and want.k.abs().sum() > 0
        assert torch.equal(got.k == 0, want.k == 0)  # the same places written, nothing else
        n += 1
        # a Folded LoRA's pending B u (u strided columns of the projection's output, as
        # Folded.project gives them): the same as adding it first (lora_linear.expanded)
        for ranks in ((8, 8, 8), (0, 5, 3)):  # a projection no sender adapts: rank 0
            z = torch.randn(b, t, qkv.shape[-1] + 6 + sum(ranks), generator=g).to(dtype)
            y, u = z[..., :qkv.shape[-1]], z[..., qkv.shape[-1] + 6:]
            blocks = tuple((0.3 * torch.randn(b, o, r, generator=g)).to(dtype) for o, r in zip((128, 64, 64), ranks))
            want, got = (KVCache(2, 6, 40, 2, 32, dtype, "cpu") for _ in range(2))
            q_want = qkv_to_cache(expanded(y, (u, blocks)), qw, kw, 4, 2, 1e-6, cos, sin, want.k[1], want.v[1],
                                  targets.flat())
            q_got = qkv_to_cache(y, qw, kw, 4, 2, 1e-6, cos, sin, got.k[1], got.v[1], targets.flat(), (u, blocks))
            torch.testing.assert_close(q_got, q_want, **tol)
            torch.testing.assert_close(got.k, want.k, **tol)
            torch.testing.assert_close(got.v, want.v, **tol)
            assert torch.equal(got.k == 0, want.k == 0) and not torch.equal(expanded(y, (u, blocks)), y)
            n += 1
try:
    qkv_to_cache(torch.zeros(1, 1, 8 * 32), torch.ones(32), torch.ones(32), 4, 2, 1e-6, torch.zeros(1, 1, 1, 32),
                 torch.zeros(1, 1, 1, 32), torch.zeros(2, 2, 8, 32), torch.zeros(2, 2, 8, 32),
                 KVCache.targets(torch.zeros(1, 1, dtype=torch.long)).flat(),
                 (torch.zeros(1, 1, 4), (torch.zeros(1, 128, 2), torch.zeros(1, 32, 2))))
    raise SystemExit("LoRA without a v block was accepted")
except ValueError as e:
    assert "q, k, v blocks" in str(e)
try:
    qkv_to_cache(torch.zeros(1, 1, 8 * 24), torch.ones(24), torch.ones(24), 4, 2, 1e-6, torch.zeros(1, 1, 1, 24),
                 torch.zeros(1, 1, 1, 24), torch.zeros(2, 2, 8, 24), torch.zeros(2, 2, 8, 24),
                 KVCache.targets(torch.zeros(1, 1, dtype=torch.long)).flat())
    raise SystemExit("head_dim 24 was accepted")
except ValueError as e:
    assert "power of two" in str(e)
print("ok", n)
'''


ENGINE_CHECK = r'''
import torch
from minitflow import LLM, SamplingParams, build_lora
from minitflow.model import layers, lora_linear
from minitflow.model.config import Qwen3Config
from minitflow.model.lora import PROJECTIONS, projection_shapes
from minitflow.model.weights import empty_model
cfg = Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, tie_word_embeddings=True, max_position_embeddings=512)
g = torch.Generator().manual_seed(0)
model = empty_model(cfg, torch.float32, "cpu")
with torch.no_grad():
    for name, p in model.named_parameters():
        p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g) if "norm" in name else 0.1 * torch.randn(p.shape, generator=g))
shapes = projection_shapes(cfg)
sender = lambda: {(l, p): (0.1 * torch.randn(3, 4, shapes[p][0], generator=g), 0.1 * torch.randn(3, shapes[p][1], 4, generator=g))
                  for l in range(cfg.num_hidden_layers) for p in PROJECTIONS}
lora = build_lora(cfg, [sender(), sender()], [1.0, 0.5])
prompts = [list(range(5, 40)), list(range(100, 117)), [7] * 23]   # padded prefill: three lengths
sp = [SamplingParams(max_new_tokens=12), SamplingParams(temperature=0.7, top_k=20, seed=1, max_new_tokens=12),
      SamplingParams(temperature=0.6, top_p=0.9, seed=2, max_new_tokens=12)]
def run():
    llm = LLM(model, eos_token_ids=[], num_slots=2)   # 2 slots for 3 requests: one admitted mid-flight
    return [o.token_ids for o in llm.generate(prompts, sp, lora=lora)]
want = run()
calls = []
def kernels_on(x):  # the CUDA path's Triton kernels, for CPU tensors (the fused functions stay op by op)
    calls.append(1)
    return not torch.is_grad_enabled()
lora_linear.cuda_inference = kernels_on
layers.cuda_inference = kernels_on
got = run()
assert got == want and calls and len(want[0]) == 12, (got, want)
for path in ("bmm+expand", "bmm", "folded"):  # lora_linear.DECODE_LORA's other ways
    lora_linear.DECODE_LORA = path
    assert run() == want, path
lora_linear.DECODE_LORA = "no such path"
try:
    run()
    raise SystemExit("an unknown DECODE_LORA ran")
except ValueError as e:
    assert "DECODE_LORA" in str(e)
print("ok", len(calls))
'''


def test_the_engine_with_both_kernels_gives_the_reference_tokens():
    """The whole engine (padded prefill, an admission mid-flight, LoRA, greedy, top-k and top-p
    rows) with the two Triton kernels forced on for CPU tensors, under the interpreter: the same
    tokens as the op-by-op path, so the layers hand the kernels the strides they expect; the
    same with each of lora_linear.DECODE_LORA's paths, and an unknown one refused."""
    assert interpreted(ENGINE_CHECK).startswith("ok ")


def test_decode_lora_kernel_equals_the_reference_projection():
    """q/k/v-, gate/up- and single-block layouts, a rank-0 block, float32 and bf16, tiles that
    straddle block boundaries, several tiles per program and a K loop of several steps, and u
    given (a bmm's) instead of computed; a prefill and a u of the wrong shape are refused."""
    assert interpreted(LORA_CHECK) == "ok 8"


def test_qkv_kernel_equals_the_norm_rope_and_the_indexed_writes():
    """Decode and prefill shapes, cache rows given or not, one row, a padded batch's real tokens
    only, float32 and bf16: q and the cache as the fused q/k norm + RoPE and the two indexed
    writes give them (v bitwise, and the same places written); with a `Folded` LoRA's pending
    `B u` (ranks per block, one of them 0), what adding it first gives; a head_dim that is not a
    power of two and LoRA blocks that do not fit are refused."""
    assert interpreted(QKV_CHECK) == "ok 30"


COMPILE_CHECK = r"""
import os
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from minitflow.model import lora_kernel, qkv_kernel
from minitflow.model.kv_cache import KVCache
from minitflow.model.layers import Rotary
assert not os.environ.get("TRITON_INTERPRET")

class Launches:
    # stands in for a kernel: records each launch's arguments instead of running it
    def __init__(self, kernel):
        self.kernel, self.seen = kernel, []
    def __getitem__(self, grid):
        return lambda *args, **consts: self.seen.append((args, consts))

TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int64: "i64", torch.int32: "i32"}

OPTIONS = ("num_warps", "num_stages", "num_ctas")  # launch options, not kernel parameters


def source(kernel, args, consts):
    # what a launch with these arguments compiles: ints equal to 1 become constants, as Triton's
    # launcher specialises them (its 16-byte alignment hints only change the generated code)
    consts = {k: v for k, v in consts.items() if k not in OPTIONS}
    names = kernel.arg_names
    assert len(args) + len(consts) == len(names), (len(args), len(consts), names)  # every parameter passed
    consts = {**consts, **{name: 1 for name, a in zip(names, args) if type(a) is int and a == 1}}
    sig = {}
    for name, a in zip(names, args):
        if name in consts:
            sig[name] = "constexpr"
        elif isinstance(a, torch.Tensor):
            sig[name] = "*" + TYPES[a.dtype]
        elif isinstance(a, float):
            sig[name] = "fp32"
        else:
            assert type(a) is int, (name, type(a))
            sig[name] = "i32" if -2**31 <= a < 2**31 else "i64"
    sig.update({name: "constexpr" for name in names[len(args):]})
    return ASTSource(fn=kernel, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items()})

lora = Launches(lora_kernel._lora_decode_kernel)
qkv = Launches(qkv_kernel._qkv_kernel)
lora_kernel._lora_decode_kernel, qkv_kernel._qkv_kernel = lora, qkv
# Qwen3-4B: hidden 2560, 32 q and 8 kv heads of 128, intermediate 9728; rank 8 (two senders)
H, HQ, HKV, D, I, R = 2560, 32, 8, 128, 9728, 8
rot = Rotary(D, 1e6, 256)
for dtype in (torch.bfloat16, torch.float16, torch.float32):
    for b in (1, 20, 64):  # one, two and eight column tiles per program
        x, xi, xo = (torch.zeros(b, 1, n, dtype=dtype) for n in (H, I, HQ * D))
        for inp, outs in ((x, (HQ * D, HKV * D, HKV * D)), (x, (I, I)), (xo, (H,)), (xi, (H,))):
            blocks = tuple(torch.zeros(b, o, R, dtype=dtype) for o in outs)
            for u in (None, torch.zeros(b, 1, R * len(outs), dtype=dtype)):  # u computed, or given
                lora_kernel.lora_decode_(torch.zeros(b, 1, sum(outs), dtype=dtype), inp,
                                         torch.zeros(b, R * len(outs), inp.shape[-1], dtype=dtype), blocks, u=u)
            z = torch.zeros(b, 1, sum(outs) + b * R * len(outs), dtype=dtype)  # folded: each slot's u beside W x
            r = R * len(outs)
            lora_kernel.lora_decode_(z[..., :sum(outs)], None, None, blocks,
                                     u=z.as_strided((b, 1, r), (z.shape[-1] + r, z.shape[-1], 1), sum(outs)))
    cache = KVCache(1, 20, 256, HKV, D, dtype, "cpu")
    for b, t in ((1, 1), (20, 1), (4, 100)):
        positions = torch.arange(t).repeat(b, 1)
        cos, sin = rot(positions, dtype)
        qkv_kernel.qkv_to_cache(torch.zeros(b, t, (HQ + 2 * HKV) * D, dtype=dtype), torch.ones(D, dtype=dtype),
                                torch.ones(D, dtype=dtype), HQ, HKV, 1e-6, cos, sin, cache.k[0], cache.v[0],
                                KVCache.targets(positions).flat())
        if t == 1:  # a folded LoRA's pending B u: u strided columns beside W x (Folded.project)
            z = torch.zeros(b, 1, (HQ + 2 * HKV) * D + b * 3 * R, dtype=dtype)
            blocks = tuple(torch.zeros(b, o, R, dtype=dtype) for o in (HQ * D, HKV * D, HKV * D))
            u = z.as_strided((b, 1, 3 * R), (z.shape[-1] + 3 * R, z.shape[-1], 1), (HQ + 2 * HKV) * D)
            qkv_kernel.qkv_to_cache(z[..., :(HQ + 2 * HKV) * D], torch.ones(D, dtype=dtype), torch.ones(D, dtype=dtype),
                                    HQ, HKV, 1e-6, cos, sin, cache.k[0], cache.v[0], KVCache.targets(positions).flat(),
                                    (u, blocks))
n = 0
for launches in (lora, qkv):
    variants = {}
    for args, consts in launches.seen:
        src = source(launches.kernel, args, consts)
        options = {k: v for k, v in consts.items() if k in OPTIONS}
        key = (tuple(src.signature.values()), tuple(sorted(src.constants.items())), tuple(sorted(options.items())))
        variants[key] = (src, options)
    for src, options in variants.values():
        for arch in (80, 90):  # A100; H100 and H200
            assert triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options).asm["cubin"]
            n += 1
print("ok", n)
"""


def test_both_kernels_compile_for_a100_and_h100(tmp_path):
    """Each kernel compiled to a cubin for sm_80 and sm_90, with no GPU present, from the
    argument types and constants its launcher passes at Qwen3-4B's shapes (decode at batch 1, 20
    and 64, the LoRA kernel with u computed and given, the q/k/v kernel with a folded LoRA's B u
    and without, and a prefill; bf16, fp16, float32). The interpreter runs Python, so it accepted a
    name bound to a pointer in one branch of an `if` and to an integer in the other, which the
    compiler refuses: this is the check that caught it. Timing and results on a real GPU are
    tests/test_gpu.py's; register spills are checked by no test (README: one float16 case spills)."""
    import inspect
    from triton.backends import backends
    from triton.compiler import ASTSource
    if "nvidia" not in backends:
        pytest.skip("this Triton has no NVIDIA backend")
    if "constexprs" not in inspect.signature(ASTSource.__init__).parameters:
        pytest.skip("compiling ahead of time this way needs a newer Triton (3.5 and later are known to work)")
    assert interpreted(COMPILE_CHECK, TRITON_CACHE_DIR=str(tmp_path), TRITON_INTERPRET="") == "ok 114"
