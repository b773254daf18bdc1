"""Micro benchmarks: one LoRA projection, one decode step, a prefill, capture, the generator.

Each test times its subject with benchmark.pedantic and its side-by-side comparison in the
same test, interleaved with the rounds where possible (`pedantic_vs`), and puts tokens/s and
the ratio in extra_info. Rates and ratios use each side's fastest round; ratios are time
ratios, this / comparison: below 1 is faster.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from benchlib import (COEF, RANK, SENDERS, Setup, copy_bandwidth, make_setup, new_cache, pedantic_vs,
                      random_ids, random_lora, record, tensor_bytes)
from minitflow.model.kv_cache import KVCache
from minitflow.engine.request import Request
from minitflow.engine.runner import ModelRunner, kv_bucket
from minitflow.engine.sampler import Sampler, SamplingParams, _bits, _hash32, _nucleus_unsorted, filter_logits
from minitflow.model.lora_linear import lora_linear, lora_linear_naive, lora_linear_ref, lora_project
from minitflow.model.qwen3 import Capture, Qwen3Model

SETUP = make_setup()  # collection-time view of the shape, for the parametrisations below
ON_CUDA = SETUP.device.type == "cuda"


# ---- 1. one LoRA projection at decode shape ----------------------------------------------------
PROJ_VARIANTS = ("fused_eager", "fused_compiled", "naive", "merged_per_row", "plain_linear") + \
    (("decode_kernel",) if ON_CUDA else ())  # the Triton kernel the layers run at decode on CUDA


def projection_inputs(setup: Setup, batch: int) -> dict:
    """gate_up of the model's shape (in hidden, out 2*intermediate) at T=1, 2 senders of rank 4."""
    cfg, dev, dt = setup.cfg, setup.device, setup.dtype
    n_in, n_out = cfg.hidden_size, 2 * cfg.intermediate_size
    g = torch.Generator(device=dev).manual_seed(0)
    rand = lambda *s, std=1.0: torch.randn(*s, generator=g, device=dev, dtype=dt) * std  # noqa: E731
    w = rand(n_out, n_in, std=0.02)
    x = rand(batch, 1, n_in)
    senders = [(rand(batch, RANK, n_in, std=0.01), rand(batch, n_out, RANK, std=0.01), COEF) for _ in range(SENDERS)]
    fused = (torch.cat([a for a, _, _ in senders], dim=1), (torch.cat([b * c for _, b, c in senders], dim=2),))
    # merged weights are per row: W_b = W + sum_s c_s B_s A_s, a (B, out, in) tensor built once per request
    merged = w[None] + sum(torch.bmm(b * c, a) for a, b, c in senders)
    return {"w": w, "x": x, "senders": senders, "fused": fused, "merged": merged}


def projection_fn(variant: str, t: dict):
    x, w = t["x"], t["w"]
    return {
        "fused_eager": lambda: lora_linear_ref(x, w, t["fused"]),
        "fused_compiled": lambda: lora_linear(x, w, t["fused"]),
        "decode_kernel": lambda: lora_project(x, w, t["fused"]),
        "naive": lambda: lora_linear_naive(x, w, t["senders"]),
        # a batched matmul with one merged weight per row (merge cost not included)
        "merged_per_row": lambda: torch.bmm(x, t["merged"].transpose(1, 2)),
        # no LoRA at all: the lower bound any LoRA variant is measured against
        "plain_linear": lambda: F.linear(x, w),
    }[variant]


@pytest.mark.parametrize("batch", (1, 8, 20))
@pytest.mark.parametrize("variant", PROJ_VARIANTS)
@torch.inference_mode()
def test_lora_projection(benchmark, setup: Setup, variant: str, batch: int) -> None:
    """gate_up projection, decode shape (T=1), rank 4 x 2 senders; ratio against the naive
    per-sender `x @ A.T @ B.T` of the official release."""
    benchmark.group = f"lora-projection-b{batch}"
    t = projection_inputs(setup, batch)
    fn = projection_fn(variant, t)
    if variant == "fused_compiled":
        fn()  # compile outside the timing (recompiles per new batch size are also here)
    # microsecond calls: 20 per round and twice the usual rounds, still well under a second
    s, naive_s = pedantic_vs(benchmark, fn, projection_fn("naive", t), setup.device, 2 * setup.rounds,
                             setup.warmup, iterations=20)
    info = {"batch": batch, "tokens_per_s": batch / s, "naive_s": naive_s, "time_vs_naive": s / naive_s}
    if variant == "merged_per_row":
        info["note"] = "per-row merged weight via bmm; the per-request merge itself is not timed"
    if variant == "plain_linear":
        info["note"] = "no LoRA: lower bound (merged weights cost this only at batch 1)"
    record(benchmark, setup, **info)


# ---- 2. one decode step of the whole model ---------------------------------------------------
DECODE_CONTEXT = 256  # tokens already in the cache when the step runs


def fill(model: Qwen3Model, setup: Setup, cache: KVCache) -> None:
    """Prefill DECODE_CONTEXT random tokens into every row of the cache."""
    b = cache.batch
    ids = random_ids(setup.cfg, b, DECODE_CONTEXT, setup.device)
    pos = torch.arange(DECODE_CONTEXT, device=setup.device)[None].expand(b, -1)
    model(ids, pos, cache, DECODE_CONTEXT, need_logits=False)


def runner_step(model: Qwen3Model, setup: Setup, batch: int, mode: str, lora) -> tuple[Callable, int]:
    """The engine's own decode step (ModelRunner.decode) for `batch` slots holding
    DECODE_CONTEXT tokens, each row with its LoRA row or none: (step, attended positions).
    The step puts every slot back at DECODE_CONTEXT first, so each round does the same work."""
    runner = ModelRunner(model, batch, DECODE_CONTEXT + 1, compile=mode == "compiled", cuda_graphs=mode == "graphs")
    for i in range(batch):
        req = Request([0] * DECODE_CONTEXT, SamplingParams(max_new_tokens=1), lora=None if lora is None else lora.row(i))
        req.slot = i
        assert runner.fits(req, running=())
        runner.load(req, None)
    assert runner.cache is not None
    fill(model, setup, runner.cache)
    slots = list(range(batch))

    def step():
        runner.positions.fill_(DECODE_CONTEXT)
        runner.next_pos = [DECODE_CONTEXT] * batch
        return runner.decode(slots)[1]
    return step, kv_bucket(DECODE_CONTEXT + 1, runner.cache.max_len) if runner.static_shapes else DECODE_CONTEXT + 1


@pytest.mark.parametrize("mode", ("eager", "graphs", "graphs-bmm+expand", "graphs-bmm", "graphs-folded", "compiled")
                         if ON_CUDA else ("eager",))
@pytest.mark.parametrize("batch", SETUP.decode_batches)
@torch.inference_mode()
def test_decode_step(benchmark, setup: Setup, model: Qwen3Model, batch: int, mode: str, monkeypatch) -> None:
    """One decode token per row with per-row LoRA on all projections vs the same step without.

    `eager` is the bare model call. `graphs` and `compiled` are the engine's decode step
    (ModelRunner.decode, greedy sampling included) with the eager kernels captured as CUDA
    graphs, or through torch.compile; `graphs-bmm+expand`, `graphs-bmm` and `graphs-folded`
    capture LoRA the other ways (lora_linear.DECODE_LORA: a cuBLAS bmm for u then the Triton
    kernel, the bmm chain, or u from the projection's own matmul with every slot's A beneath
    the weight and B u added by the next kernel) instead of the one Triton kernel, set beside
    `graphs` for that choice.
    CPU runs eager only because compiling the whole step costs ~15 s per variant on 2 cores.
    `bandwidth_fraction` = bytes the step must read (weights, KV over the attended slots, LoRA
    factors) per second over a device-to-device copy's bytes per second."""
    benchmark.group = f"decode-step-b{batch}"
    captured = mode
    if mode.startswith("graphs-"):
        from minitflow.model import lora_linear
        monkeypatch.setattr(lora_linear, "DECODE_LORA", mode.removeprefix("graphs-"))
        captured = "graphs"
    lora = random_lora(setup.cfg, batch, setup.device, setup.dtype)
    if mode == "eager":
        tok = random_ids(setup.cfg, batch, 1, setup.device, seed=1)
        pos = torch.full((batch, 1), DECODE_CONTEXT, device=setup.device)
        kv_len = DECODE_CONTEXT + 1
        cache = new_cache(setup.cfg, batch, kv_len, setup.device, setup.dtype)
        fill(model, setup, cache)
        step = lambda lo: model(tok, pos, cache, kv_len, lora=lo)  # noqa: E731
    else:
        with_lora, _ = runner_step(model, setup, batch, captured, lora)
        without, kv_len = runner_step(model, setup, batch, captured, None)
        step = lambda lo: with_lora() if lo is not None else without()  # noqa: E731
    for lo in (None, lora):  # compile both graphs before any timing
        step(lo)
    s, base_s = pedantic_vs(benchmark, lambda: step(lora), lambda: step(None), setup.device, 2 * setup.rounds,
                            setup.warmup)
    cfg, el = setup.cfg, model.embed_tokens.weight.element_size()
    plain = tensor_bytes(model.parameters()) + \
        2 * cfg.num_hidden_layers * batch * cfg.num_key_value_heads * cfg.head_dim * kv_len * el
    lora_bytes = tensor_bytes(t for layer in lora.layers for a, bs in layer.values() for t in (a, *bs))
    # on CPU the tiny model sits in the processor's caches: a fraction of copy bandwidth means nothing
    bw = copy_bandwidth(setup.device) if ON_CUDA else None
    record(benchmark, setup, batch=batch, context=DECODE_CONTEXT, attended=kv_len, mode=mode, tokens_per_s=batch / s,
           tokens_per_s_no_lora=batch / base_s, no_lora_s=base_s, lora_overhead=s / base_s,
           bytes_per_step=plain + lora_bytes, lora_bytes=lora_bytes,
           **(dict(copy_bytes_per_s=bw, bandwidth_fraction=(plain + lora_bytes) / s / bw,
                   bandwidth_fraction_no_lora=plain / base_s / bw) if bw else {}))


# ---- 3. prefill --------------------------------------------------------------------------------
PREFILL_TOKENS = 512


@torch.inference_mode()
def test_prefill(benchmark, setup: Setup, model: Qwen3Model) -> None:
    """One 512-token prompt, logits of the last token only (the engine's prefill), with LoRA
    on every projection vs without."""
    benchmark.group = "prefill"
    cfg, t = setup.cfg, PREFILL_TOKENS
    cache = new_cache(cfg, 1, t, setup.device, setup.dtype)
    ids = random_ids(cfg, 1, t, setup.device)
    pos = torch.arange(t, device=setup.device)[None]
    last = torch.tensor([t - 1], device=setup.device)
    lora = random_lora(cfg, 1, setup.device, setup.dtype)
    run = lambda lo: model(ids, pos, cache, t, lora=lo, logits_index=last)  # noqa: E731
    s, lora_s = pedantic_vs(benchmark, lambda: run(None), lambda: run(lora), setup.device, setup.rounds, 1)
    record(benchmark, setup, tokens=t, tokens_per_s=t / s, tokens_per_s_lora=t / lora_s, lora_s=lora_s,
           lora_overhead=lora_s / s)


# ---- 4. hidden-state capture -------------------------------------------------------------------
@torch.inference_mode()
def test_capture(benchmark, setup: Setup, model: Qwen3Model) -> None:
    """Two senders' prefill (2 rows x 512 tokens, no logits) capturing all L+1 hidden states
    over the whole prompt vs the same prefill without capture."""
    benchmark.group = "capture"
    cfg, t, b = setup.cfg, PREFILL_TOKENS, SENDERS
    cache = new_cache(cfg, b, t, setup.device, setup.dtype)
    ids = random_ids(cfg, b, t, setup.device)
    pos = torch.arange(t, device=setup.device)[None].expand(b, -1)
    layers = list(range(cfg.num_hidden_layers + 1))
    run = lambda cap: model(ids, pos, cache, t, capture=cap, need_logits=False)  # noqa: E731
    rounds = max(3, setup.rounds // 2)
    s, plain_s = pedantic_vs(benchmark, lambda: run(Capture(layers, [0] * b, [t] * b)), lambda: run(None),
                             setup.device, rounds, 1)
    record(benchmark, setup, rows=b, tokens=b * t, layers=len(layers), tokens_per_s=b * t / s,
           plain_s=plain_s, capture_overhead=s / plain_s)


# ---- 5. the ParameterGenerator -----------------------------------------------------------------
QUESTION_TOKENS = 64  # a typical question span (the condition's length)
SENDER_PROMPT_TOKENS = 160  # a sender prompt around it (system prompt + chat tokens)


def pg_arch(setup: Setup):
    """The official Qwen3-4B dimensions on GPU; a small arch of the same structure on CPU."""
    from minitflow.tflow.generator import PGArch
    if setup.name == "qwen3-4b":
        return PGArch(num_base_model_layers=setup.cfg.num_hidden_layers)
    return PGArch(d_model=128, head_dim=32, num_pg_layers=2, output_dim=32, token_dim=32, rank=4, alpha=8,
                  dim_accumulation=2, num_base_model_layers=setup.cfg.num_hidden_layers)


@pytest.mark.parametrize("questions", (1, 20) if ON_CUDA else (1, 4))
@torch.inference_mode()
def test_parameter_generator(benchmark, setup: Setup, model: Qwen3Model, questions: int) -> None:
    """ParameterGenerator forward for 2 senders x `questions` conditions vs the senders'
    capture prefill that produces them (tflow's other pre-receiver cost)."""
    gen_mod = pytest.importorskip("minitflow.tflow.generator", reason="minitflow.tflow.generator not importable yet")
    from minitflow.model.lora import projection_shapes
    benchmark.group = "parameter-generator"
    cfg, dev = setup.cfg, setup.device
    arch = pg_arch(setup)
    torch.manual_seed(0)
    pg = gen_mod.ParameterGenerator(arch, cfg.hidden_size, projection_shapes(cfg)).to(dev, setup.dtype).eval()
    rows = SENDERS * questions
    cond = torch.randn(rows, QUESTION_TOKENS, cfg.hidden_size, device=dev, dtype=setup.dtype)
    t = SENDER_PROMPT_TOKENS
    cache = new_cache(cfg, rows, t, dev, setup.dtype)
    ids = random_ids(cfg, rows, t, dev)
    pos = torch.arange(t, device=dev)[None].expand(rows, -1)
    layers = list(range(cfg.num_hidden_layers + 1))
    senders = lambda: model(ids, pos, cache, t, need_logits=False,  # noqa: E731
                            capture=Capture(layers, [t - QUESTION_TOKENS] * rows, [t] * rows))
    s, senders_s = pedantic_vs(benchmark, lambda: pg(cond), senders, dev, max(3, setup.rounds // 2), 1)
    params = sum(p.numel() for p in pg.parameters())
    record(benchmark, setup, questions=questions, rows=rows, cond_tokens=QUESTION_TOKENS, arch=str(arch.to_dict()),
           generator_params_M=params / 1e6, questions_per_s=questions / s, sender_prefill_s=senders_s,
           time_vs_sender_prefill=s / senders_s)


def rope_on_heads(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The generator's rotation as it ran before: on the heads-split (transposed) view, with one
    head's table broadcast over the heads, the pair swap as a flip."""
    cos, sin = rot
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x * cos + swapped * sin).type_as(x)


@torch.inference_mode()
def test_generator_rope(benchmark, setup: Setup) -> None:
    """q's rotation in the generator's within-layer attention, for one sender row:
    generator.rotate_heads, as MultiHeadAttention calls it (on the contiguous (tokens, heads,
    head_dim) view with the table broadcast over the heads, then transposed; eager on CPU, fused
    on CUDA) vs rope_on_heads; the results must be bitwise equal."""
    from minitflow.model.lora import projection_shapes
    from minitflow.tflow.generator import ParameterGenerator, rotate_heads
    benchmark.group = "parameter-generator"
    arch, dev = pg_arch(setup), setup.device
    tm = ParameterGenerator(arch, setup.cfg.hidden_size, projection_shapes(setup.cfg)).model
    hw, heads, hd = tm.h * tm.w, arch.d_model // arch.head_dim, arch.head_dim
    cos, sin = (t.to(dev, setup.dtype) for t in tm.rotations(1, dev)["hw"])
    x = torch.randn(tm.n, hw, arch.d_model, device=dev, dtype=setup.dtype, generator=torch.Generator(dev).manual_seed(0))
    split = lambda y: y.view(tm.n, hw, heads, hd).transpose(1, 2)  # noqa: E731
    on_rows = lambda: rotate_heads(x, (cos, sin), heads)  # noqa: E731
    on_heads = lambda: rope_on_heads(split(x), (cos, sin))  # noqa: E731
    assert torch.equal(on_rows(), on_heads())
    s, heads_s = pedantic_vs(benchmark, on_rows, on_heads, dev, 2 * setup.rounds, setup.warmup)
    record(benchmark, setup, tokens=tm.n * hw, d_model=arch.d_model, heads_s=heads_s, time_vs_on_heads=s / heads_s)


# ---- 6. sampling ---------------------------------------------------------------------------------
SAMPLING = {  # the official release's decoding settings, and Qwen3's recommended non-thinking ones
    "official": dict(temperature=0.6, top_p=0.95),
    "qwen3": dict(temperature=0.7, top_p=0.8, top_k=20),
}


def per_row_sampling(logits: torch.Tensor, params: list[SamplingParams], gens: list[torch.Generator]) -> torch.Tensor:
    """What the engine did before Sampler: one filter + draw per row, a torch.Generator each."""
    tokens = logits.argmax(-1)
    for i, (p, g) in enumerate(zip(params, gens)):
        probs = filter_logits(logits[i] / p.temperature, p.top_k, p.top_p).softmax(-1)
        tokens[i] = (probs / torch.empty_like(probs).exponential_(generator=g)).argmax()
    return tokens


@pytest.mark.parametrize("settings", list(SAMPLING))
@pytest.mark.parametrize("batch", (1, 20))
@torch.inference_mode()
def test_sampling(benchmark, setup: Setup, batch: int, settings: str) -> None:
    """One sampling step over the model's vocabulary: the batched Sampler vs a per-row loop."""
    benchmark.group = f"sampling-b{batch}"
    dev = setup.device
    params = [SamplingParams(seed=i, **SAMPLING[settings]) for i in range(batch)]
    logits = torch.randn(batch, setup.cfg.vocab_size, device=dev, generator=torch.Generator(dev).manual_seed(0)) * 3
    sampler = Sampler(params, dev)
    gens = [torch.Generator(device=dev).manual_seed(p.seed) for p in params]
    s, loop_s = pedantic_vs(benchmark, lambda: sampler(logits, 7), lambda: per_row_sampling(logits, params, gens),
                            dev, 2 * setup.rounds, setup.warmup)
    record(benchmark, setup, batch=batch, settings=settings, vocab=setup.cfg.vocab_size, tokens_per_s=batch / s,
           per_row_s=loop_s, time_vs_per_row=s / loop_s)


def sorted_nucleus(vals: torch.Tensor, top_p: float) -> torch.Tensor:
    """The batched nucleus the sampler took before (and e6c0488 takes): sort, softmax, cumsum."""
    sorted_vals, order = torch.sort(vals, descending=True)
    probs = sorted_vals.softmax(-1)
    drop = probs.cumsum(-1) - probs > top_p
    return ~torch.zeros_like(drop).scatter(1, order, drop)


@pytest.mark.parametrize("batch", (8, 20))
@torch.inference_mode()
def test_nucleus_without_a_sort(benchmark, setup: Setup, batch: int) -> None:
    """top-p 0.95 over Qwen3's 151,936 logits at temperature 0.6: the sampler's radix select vs
    the sort it replaced, the same rows. The logits are spread like the tiny random model's
    (std 0.53 after the temperature), so the nucleus holds most of the vocabulary, as in the
    pipeline benchmarks. The kept sets must agree but for float32 rounding at the boundary."""
    from minitflow.model.config import QWEN3_4B
    benchmark.group = f"sampling-b{batch}"
    dev = setup.device
    vals = torch.randn(batch, QWEN3_4B.vocab_size, device=dev, generator=torch.Generator(dev).manual_seed(0)) * 0.53
    top_p = torch.full((batch, 1), 0.95, dtype=torch.float64, device=dev)
    s, sort_s = pedantic_vs(benchmark, lambda: _nucleus_unsorted(vals, top_p), lambda: sorted_nucleus(vals, 0.95),
                            dev, 2 * setup.rounds, setup.warmup)
    differ = int((_nucleus_unsorted(vals, top_p) != sorted_nucleus(vals, 0.95)).sum())
    assert differ <= batch * 8, differ  # the old float32 cumsum drifts by a few tokens at most
    record(benchmark, setup, batch=batch, vocab=QWEN3_4B.vocab_size, rows_per_s=batch / s, sort_s=sort_s,
           boundary_tokens_that_differ=differ, time_vs_sort=s / sort_s)


def hash32_int64(x: torch.Tensor) -> torch.Tensor:
    """The sampler's noise hash as it was: int64 values, each product split in 16-bit halves so
    that none overflows."""
    def mul(x: torch.Tensor, c: int) -> torch.Tensor:
        return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & 0xFFFFFFFF
    x = mul(x ^ (x >> 16), 0x7FEB352D)
    x = mul(x ^ (x >> 15), 0x846CA68B)
    return x ^ (x >> 16)


@pytest.mark.parametrize("batch", (8, 20))
@torch.inference_mode()
def test_noise_hash(benchmark, setup: Setup, batch: int) -> None:
    """The per-token noise hash over Qwen3's vocabulary: int32 words with wrapping products vs
    the overflow-free int64 form it replaced; the values must be equal."""
    from minitflow.model.config import QWEN3_4B
    benchmark.group = f"sampling-b{batch}"
    dev = setup.device
    words = torch.randint(0, 2**32, (batch, QWEN3_4B.vocab_size), dtype=torch.int64, device=dev,
                          generator=torch.Generator(dev).manual_seed(0))
    w32 = _bits(words)
    assert torch.equal(_hash32(w32).long() & 0xFFFFFFFF, hash32_int64(words))
    s, old_s = pedantic_vs(benchmark, lambda: _hash32(w32), lambda: hash32_int64(words), dev,
                           2 * setup.rounds, setup.warmup)
    record(benchmark, setup, batch=batch, vocab=QWEN3_4B.vocab_size, rows_per_s=batch / s, int64_s=old_s,
           time_vs_int64=s / old_s)
