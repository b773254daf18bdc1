"""GPU checks (skipped without CUDA): both CUDA-graph decode paths (torch.compile's, and the
eager step captured by the runner) against eager."""

from __future__ import annotations

import pytest
import torch

from minitflow import LLM, SamplingParams, build_lora
from minitflow.model.config import Qwen3Config
from minitflow.model.lora import PROJECTIONS, projection_shapes
from minitflow.model.weights import empty_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """The share of positions where two runs' tokens are equal."""
    return sum(u == v for x, y in zip(a, b) for u, v in zip(x, y)) / sum(len(x) for x in a)


MODES = ["graphs", "compiled"]  # graphs first: seconds to capture, where compiled takes minutes


def _random_llm(mode: str, dtype: torch.dtype = torch.bfloat16, **kw) -> LLM:
    cfg = Qwen3Config(vocab_size=4096, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=64, tie_word_embeddings=True,
                      max_position_embeddings=2048)
    model = empty_model(cfg, dtype, "cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.05 * torch.randn(p.shape, generator=g, device="cuda") if "norm" in name
                    else 0.05 * torch.randn(p.shape, generator=g, device="cuda"))
    return LLM(model, eos_token_ids=[], compile=mode == "compiled", cuda_graphs=mode == "graphs", **kw)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_decode_matches_eager_within_bf16(mode):
    eager, graphed = _random_llm("eager"), _random_llm(mode)
    prompts = [list(range(5, 40)), list(range(100, 117)), [7] * 60]
    cfg, shapes = eager.cfg, projection_shapes(eager.cfg)
    g = torch.Generator(device="cuda").manual_seed(1)
    sender = lambda: {(l, p): (0.05 * torch.randn(3, 4, shapes[p][0], generator=g, device="cuda", dtype=torch.bfloat16),  # noqa: E731
                               0.05 * torch.randn(3, shapes[p][1], 4, generator=g, device="cuda", dtype=torch.bfloat16))
                      for l in range(cfg.num_hidden_layers) for p in PROJECTIONS}
    lora = build_lora(cfg, [sender(), sender()], [1.0, 1.0])
    sp = SamplingParams(max_new_tokens=32)
    for lo in (None, lora, lora):
        a = [o.token_ids for o in eager.generate(prompts, sp, lora=lo)]
        b = [o.token_ids for o in graphed.generate(prompts, sp, lora=lo)]
        # bf16: the first tokens must agree; later ones may drift after a near-tie
        assert all(x[:8] == y[:8] for x, y in zip(a, b))
        agree = _agreement(a, b)
        assert agree > 0.9


def test_graph_captures_do_not_pile_up_cublas_workspaces():
    """Every capture warms up and captures on one side stream per device: cuBLAS keeps a
    workspace per stream it ran on for the life of the process (32 MiB on Hopper), and a new
    stream per capture grew the memory of a long run by up to a gigabyte. After one capture,
    twelve more (batch buckets 1, 2, 4, with and without LoRA, two attention buckets) add only
    their graphs' activations, a few MiB at this size."""
    from minitflow.engine.runner import capture_stream
    llm = _random_llm("graphs", num_slots=4)
    sp = SamplingParams(max_new_tokens=2)
    llm.generate([[5, 6, 7]], sp)  # the first capture: the side stream's workspaces exist now
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    cfg, shapes = llm.cfg, projection_shapes(llm.cfg)
    zeros = lambda n: build_lora(cfg, [{(l, p): (torch.zeros(n, 4, shapes[p][0], device="cuda", dtype=torch.bfloat16),  # noqa: E731
                                                 torch.zeros(n, shapes[p][1], 4, device="cuda", dtype=torch.bfloat16))
                                        for l in range(cfg.num_hidden_layers) for p in PROJECTIONS}], [1.0])
    for n in (1, 2, 4):
        for lora in (None, zeros(n)):
            for length in (3, 300):  # attention buckets of 256 and 512
                llm.generate([[5] * length] * n, sp, lora=lora)
    torch.cuda.synchronize()
    assert len(llm.engine.runner.graphs) >= 6
    assert capture_stream(torch.device("cuda")) is capture_stream(torch.device("cuda"))
    grown = (torch.cuda.memory_allocated() - before) / 2**20
    assert grown < 48, f"{grown:.0f} MiB"  # the cache grown to 512 positions is ~1 MiB here


def test_rows_stop_early_with_run_ahead():
    """On CUDA the host learns that all rows are done a few steps late: the extra steps must not
    change any row's tokens, and every row must equal its run alone."""
    llm = _random_llm("eager")
    prompts = [list(range(5, 40)), list(range(100, 117)), [7] * 60]
    free = [g.token_ids for g in llm.generate(prompts, SamplingParams(max_new_tokens=24))]
    llm.eos_token_ids = {free[0][3], free[1][5], free[2][7]}
    batch = llm.generate(prompts, SamplingParams(max_new_tokens=24))
    for p, f, g in zip(prompts, free, batch):
        first = next(i for i, t in enumerate(f) if t in llm.eos_token_ids)
        assert g.token_ids == f[: first + 1] and g.finish_reason == "stop"
        assert llm.generate([p], SamplingParams(max_new_tokens=24))[0].token_ids == g.token_ids


def test_sampler_draws_the_same_tokens_on_cpu_and_cuda():
    from minitflow.engine.sampler import Sampler
    logits = torch.randn(6, 4096, generator=torch.Generator().manual_seed(0)) * 3
    params = [SamplingParams(temperature=0.6, top_p=0.95, seed=1), SamplingParams(temperature=0.7, top_k=20, seed=2),
              SamplingParams(temperature=1.0, seed=3), SamplingParams(), SamplingParams(temperature=0.6, top_p=0.95, seed=4),
              SamplingParams(temperature=0.7, top_k=20, top_p=0.8, seed=5)]
    cpu, gpu = Sampler(params, torch.device("cpu")), Sampler(params, torch.device("cuda"))
    graphed = Sampler(params, torch.device("cuda"), compile=True)
    for step in range(5):
        want = cpu(logits, step)
        assert torch.equal(gpu(logits.cuda(), step).cpu(), want)
        assert torch.equal(graphed(logits.cuda(), step).cpu(), want)
        with torch.inference_mode():  # as the engine samples: the noise as one fused kernel
            assert torch.equal(gpu(logits.cuda(), step).cpu(), want)
    from minitflow.engine.sampler import gumbel_scores
    from minitflow.model.fused import _FUSED
    assert gumbel_scores.eager in _FUSED


def test_top_k_ties_past_the_candidates_same_tokens_on_cpu_and_cuda():
    """Every row with a top_k (the top-k candidates path): CUDA always runs the fused pass for
    tokens tied with the k-th past topk(k + 1), CPU eager only on rows that need it."""
    from minitflow.engine.sampler import Sampler
    logits = (torch.randn(4, 4096, generator=torch.Generator().manual_seed(1)) * 2).round()
    logits[0] = 0.0  # the whole vocabulary tied
    params = [SamplingParams(temperature=0.6, top_k=20, top_p=0.95, seed=1), SamplingParams(temperature=0.7, top_k=3, seed=2),
              SamplingParams(), SamplingParams(temperature=1.0, top_k=20, seed=4)]
    cpu, gpu = Sampler(params, torch.device("cpu")), Sampler(params, torch.device("cuda"))
    graphed = Sampler(params, torch.device("cuda"), compile=True)
    for step in range(5):
        want = cpu(logits, step)
        with torch.inference_mode():  # the fused kernels, as the engine samples
            assert torch.equal(gpu(logits.cuda(), step).cpu(), want)
        assert torch.equal(graphed(logits.cuda(), step).cpu(), want)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_decode_across_attention_buckets(mode):
    """A generation that crosses from the 256-slot attention bucket into the 512-slot one."""
    eager, graphed = _random_llm("eager"), _random_llm(mode)
    prompts = [[(7 * i) % 4000 for i in range(240)], list(range(3, 20))]
    sp = SamplingParams(max_new_tokens=40)
    a = [o.token_ids for o in eager.generate(prompts, sp)]
    b = [o.token_ids for o in graphed.generate(prompts, sp)]
    assert all(x[:8] == y[:8] for x, y in zip(a, b))
    agree = _agreement(a, b)
    assert agree > 0.9


@pytest.mark.parametrize("lora_path", ["kernel", "folded"])
def test_captured_graphs_serve_mixed_requests_like_eager_float32(lora_path, monkeypatch):
    """8 requests (greedy and sampled, half with LoRA) through 3 slots with captured graphs vs
    eager in float32: rows of the padded bucket, the longer attention and the replayed
    kernels change nothing beyond float noise, with the LoRA kernel computing u or with every
    slot's A beneath the weights (lora_linear.DECODE_LORA "folded"). Then a longer prompt grows
    the cache, which must drop the graphs that read the old one."""
    from minitflow.engine.request import Request
    from minitflow.model import lora_linear
    monkeypatch.setattr(lora_linear, "DECODE_LORA", lora_path)
    eager, graphed = _random_llm("eager", torch.float32, num_slots=3), _random_llm("graphs", torch.float32, num_slots=3)
    cfg, shapes = eager.cfg, projection_shapes(eager.cfg)
    g = torch.Generator(device="cuda").manual_seed(3)
    sender = lambda: {(l, p): (0.05 * torch.randn(8, 4, shapes[p][0], generator=g, device="cuda"),  # noqa: E731
                               0.05 * torch.randn(8, shapes[p][1], 4, generator=g, device="cuda"))
                      for l in range(cfg.num_hidden_layers) for p in PROJECTIONS}
    lora = build_lora(cfg, [sender(), sender()], [1.0, 1.0])
    prompts = [[(11 * i + 3 * j) % 4000 for j in range(5 + 7 * i)] for i in range(8)]
    params = [SamplingParams(max_new_tokens=m, temperature=0.8 * (i % 2), top_p=0.9, top_k=40 * (i % 3 == 1), seed=i)
              for i, m in enumerate([3, 17, 6, 25, 1, 11, 9, 30])]

    def run(llm):
        reqs = [Request(p, sp, lora=lora.row(i) if i % 2 else None) for i, (p, sp) in enumerate(zip(prompts, params))]
        llm.engine.run(reqs)
        return [r.output_ids for r in reqs]

    a, b = run(eager), run(graphed)
    agree = _agreement(a, b)
    assert [len(x) for x in a] == [len(x) for x in b] and agree > 0.97, agree
    assert graphed.engine.runner.graphs, "no graph was captured"
    long = [[(5 * j) % 4000 for j in range(300)]]
    sp = SamplingParams(max_new_tokens=8)
    assert graphed.generate(long, sp)[0].token_ids[:4] == eager.generate(long, sp)[0].token_ids[:4]


def test_another_engines_fold_does_not_leave_graphs_reading_freed_weights(monkeypatch):
    """An engine with captured graphs, then a second engine on the same model folding LoRA A
    beneath the weights (DECODE_LORA "folded"): the parameters are re-stored and the tensors the
    first engine's graphs read are freed, here overwritten with NaN as reused memory would be.
    The first engine's next generation drops its graphs and captures anew: the same tokens
    (its replays read the NaN: a refused request, or other tokens)."""
    from minitflow.model import lora_linear
    first = _random_llm("graphs", num_slots=2, prefix_cache_bytes=0)  # each prefill of the same shapes
    prompts, sp = [list(range(5, 40)), [7] * 20], SamplingParams(max_new_tokens=8)
    want = [o.token_ids for o in first.generate(prompts, sp)]
    assert first.engine.runner.graphs
    old = [(p.shape, p.dtype) for p in first.model.parameters()]
    monkeypatch.setattr(lora_linear, "DECODE_LORA", "folded")
    cfg, shapes = first.cfg, projection_shapes(first.cfg)
    lora = build_lora(cfg, [{(l, p): (0.05 * torch.ones(2, 4, shapes[p][0], device="cuda", dtype=torch.bfloat16),
                                      0.05 * torch.ones(2, shapes[p][1], 4, device="cuda", dtype=torch.bfloat16))
                             for l in range(cfg.num_hidden_layers) for p in PROJECTIONS}], [1.0])
    LLM(first.model, eos_token_ids=[], cuda_graphs=True, num_slots=2).generate(prompts, sp, lora=lora)
    junk = [torch.full(shape, float("nan"), dtype=dtype, device="cuda") for shape, dtype in old]  # noqa: F841
    assert [o.token_ids for o in first.generate(prompts, sp)] == want


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.inference_mode()  # the fused kernels serve inference; a recorded gradient takes the op-by-op path
def test_fused_cuda_kernels_match_the_op_by_op_functions(dtype):
    """On CUDA RMSNorm, the residual add + RMSNorm, q/k norms + RoPE and SiLU·up run as compiled
    kernels: the same values as the op-by-op functions (CPU's path), to float32 noise, or to bf16
    rounding; the step's attention mask and rotary tables exactly."""
    from minitflow.model import layers
    from minitflow.model.fused import _FUSED
    g = torch.Generator(device="cuda").manual_seed(0)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for b, t in ((1, 1), (3, 7)):
        x = torch.randn(b, t, 8, 128, generator=g, device="cuda").to(dtype)
        w = (1 + 0.1 * torch.randn(128, generator=g, device="cuda")).to(dtype)
        # real rotations (cos² + sin² = 1): random cos and sin cancel, and magnify the bf16
        # intermediates inductor keeps unrounded past any rounding the model can meet
        cos, sin = layers.Rotary(128, 1e6, 4096).cuda()(torch.randint(0, 4096, (b, t), generator=g, device="cuda"),
                                                       dtype)
        for fn, args in ((layers.rms_norm, (x, w, 1e-6)), (layers.qk_norm_rope, (x, w, w.flip(0), 6, 1e-6, cos, sin)),
                         (layers.add_rms_norm, (x, cos[:, 0, :, None], w, 1e-6)), (layers.silu_mul, (x,))):
            torch.testing.assert_close(fn(*args), fn.eager(*args), **tol)
            assert fn.eager in _FUSED  # the compiled kernel ran, not the op-by-op fallback
    from minitflow.model.attention import causal_mask
    from minitflow.model.layers import Rotary
    rot = Rotary(128, 1e6, 600).cuda()
    positions = torch.tensor([[5], [300], [0]], device="cuda")
    assert torch.equal(causal_mask(positions, 512, 4, dtype), causal_mask.eager(positions, 512, 4, dtype))
    want = (rot.cos[positions][:, None].to(dtype), rot.sin[positions][:, None].to(dtype))
    assert all(torch.equal(g, w) for g, w in zip(rot(positions, dtype), want))
    assert causal_mask.eager in _FUSED
    from minitflow.model import qwen3  # a capture's layer-sum terms
    h = torch.randn(3, 11, 64, generator=g, device="cuda").to(dtype)
    index, valid = qwen3.Capture([0], starts=[0, 2, 5], ends=[9, 6, 11])._index(h)
    acc, wt = torch.randn(3, 9, 64, generator=g, device="cuda"), torch.tensor(0.3, device="cuda")
    for fn, args in ((qwen3.weighted_span, (h, index, valid, wt)), (qwen3.add_weighted_span, (acc, h, index, valid, wt))):
        torch.testing.assert_close(fn(*args), fn.eager(*args), rtol=1e-6, atol=1e-6)  # float32 sums of exact products
        assert fn.eager in _FUSED


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_lora_kernel_matches_the_reference_projection(dtype, monkeypatch):
    """At decode on CUDA the layers' LoRA is one Triton kernel per fused weight (or a bmm for u
    and the kernel expanding, or u from the weight's own matmul and B u added by the compiled
    kernel that reads the projection next): the reference's values (bmm + a baddbmm_ per block)
    to float32 noise or bf16 rounding, for q/k/v-, gate/up- and single-block layouts at
    Qwen3-4B's widths, batch 1 and 20, a rank-0 block included."""
    import sys
    from minitflow.model import lora_linear
    from minitflow.model.fused import _FUSED
    from minitflow.model.layers import add_rms_norm, expand, silu_mul
    from minitflow.model.lora_linear import Folded, lora_linear_ref, lora_project, project
    g = torch.Generator(device="cuda").manual_seed(0)
    rand = lambda *s: (0.05 * torch.randn(*s, generator=g, device="cuda")).to(dtype)  # noqa: E731
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for k, outs, ranks in ((2560, (4096, 1024, 1024), (8, 8, 8)), (2560, (9728, 9728), (8, 8)),
                           (9728, (2560,), (8,)), (2560, (4096, 1024, 1024), (0, 8, 8))):
        for b in (1, 20):
            x, w, a = rand(b, 1, k), rand(sum(outs), k), rand(b, sum(ranks), k)
            blocks = tuple(rand(b, o, r) for o, r in zip(outs, ranks))
            want = lora_linear_ref(x, w, (a, blocks))
            for path in ("kernel", "bmm+expand"):  # lora_linear.DECODE_LORA: u computed or a bmm's
                monkeypatch.setattr(lora_linear, "DECODE_LORA", path)
                with torch.inference_mode():
                    torch.testing.assert_close(lora_project(x, w, (a, blocks)), want, **tol)
            full = torch.cat([w, torch.zeros(22 * sum(ranks), k, dtype=dtype, device="cuda")])  # "folded"
            full[len(w):].view(22, sum(ranks), k)[2:2 + b] = a  # slots 2..b+1 of 22
            with torch.inference_mode():  # B u left pending for the next kernel; `expand` adds it alone
                y, pending = project(x, w, Folded(full, len(w), 2, blocks))
                torch.testing.assert_close(expand(y, pending), want, **tol)
                if len(outs) == 2:  # gate/up: SiLU·up's kernel adds it
                    torch.testing.assert_close(silu_mul(y, pending), silu_mul.eager(want), **tol)
                if len(outs) == 1:  # o, down: the residual add + RMSNorm's kernel adds it
                    res, nw = rand(b, 1, outs[0]), 1 + rand(outs[0])
                    ref = add_rms_norm.eager(res, want, nw, 1e-6)
                    for got, r in zip(add_rms_norm(res, y, nw, 1e-6, pending), ref):
                        torch.testing.assert_close(got, r, **tol)
    assert "minitflow.model.lora_kernel" in sys.modules  # the kernel ran, not the reference
    assert expand.eager in _FUSED and silu_mul.eager in _FUSED and add_rms_norm.eager in _FUSED


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qkv_kernel_equals_the_norm_rope_and_the_indexed_writes(dtype):
    """At inference on CUDA a layer's q/k norm + RoPE and its cache write are one Triton kernel:
    q and the cache as the op-by-op norm + RoPE and the two indexed writes give them (v bitwise,
    the same places written), at Qwen3-4B's head counts, for a decode step, gathered cache rows,
    one row and a padded prefill's real tokens; with a folded LoRA's pending B u at decode."""
    from minitflow.model.kv_cache import KVCache
    from minitflow.model.layers import Rotary, qk_norm_rope
    from minitflow.model.lora_linear import expanded
    from minitflow.model.qkv_kernel import qkv_to_cache
    g = torch.Generator(device="cuda").manual_seed(0)
    rot = Rotary(128, 1e6, 300).cuda()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for b, t, rows, real in ((3, 1, None, None), (2, 1, torch.tensor([4, 1]), None), (1, 6, None, None),
                             (3, 5, torch.tensor([0, 5, 2]), (torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 0, 0, 1, 4])))):
        rows = None if rows is None else rows.cuda()
        real = None if real is None else tuple(i.cuda() for i in real)
        qkv = torch.randn(b, t, (32 + 16) * 128, generator=g, device="cuda").to(dtype)
        qw, kw = (1 + 0.2 * torch.randn(2, 128, generator=g, device="cuda")).to(dtype)
        positions = torch.stack([torch.randperm(300, device="cuda", generator=g)[:t] for _ in range(b)])
        cos, sin = rot(positions, dtype)
        targets = KVCache.targets(positions, rows, real)
        want, got = (KVCache(2, 6, 300, 8, 128, dtype, "cuda") for _ in range(2))
        for cache in (want, got):  # NaN marks what was not written (a rotated k may round to 0 on one side)
            cache.k.fill_(torch.nan), cache.v.fill_(torch.nan)
        qk = qk_norm_rope.eager(qkv[..., :40 * 128].view(b, t, 40, 128), qw, kw, 32, 1e-6, cos, sin)
        want.update(1, qk[:, 32:], qkv[..., 40 * 128:].view(b, t, 8, 128).transpose(1, 2), targets, 300, rows)
        q = qkv_to_cache(qkv, qw, kw, 32, 8, 1e-6, cos, sin, got.k[1], got.v[1], targets.flat())
        torch.testing.assert_close(q, qk[:, :32], **tol)
        torch.testing.assert_close(got.k, want.k, equal_nan=True, **tol)
        assert torch.equal(got.k.isnan(), want.k.isnan()) and torch.equal(got.v.isnan(), want.v.isnan())
        assert torch.equal(got.v.nan_to_num(), want.v.nan_to_num())
        if t == 1:  # a folded LoRA's pending B u (u strided beside W x): as adding it first
            z = torch.randn(b, 1, qkv.shape[-1] + 5 + 24, generator=g, device="cuda").to(dtype)
            y, u = z[..., :qkv.shape[-1]], z[..., qkv.shape[-1] + 5:]
            blocks = tuple((0.3 * torch.randn(b, o, 8, generator=g, device="cuda")).to(dtype)
                           for o in (4096, 1024, 1024))
            want, got = (KVCache(2, 6, 300, 8, 128, dtype, "cuda") for _ in range(2))
            q_want = qkv_to_cache(expanded(y, (u, blocks)), qw, kw, 32, 8, 1e-6, cos, sin, want.k[1], want.v[1],
                                  targets.flat())
            q_got = qkv_to_cache(y, qw, kw, 32, 8, 1e-6, cos, sin, got.k[1], got.v[1], targets.flat(), (u, blocks))
            # bf16: the kernel's sum of B u runs in another order, so a q/k input may differ by an
            # ulp, which the norm and RoPE carry to an ulp or two of outputs up to ~4 in size
            lora_tol = tol if dtype == torch.float32 else dict(rtol=2e-2, atol=6e-2)
            for a, b_ in ((q_got, q_want), (got.k, want.k), (got.v, want.v)):
                torch.testing.assert_close(a, b_, **lora_tol)


def test_serving_waits_for_the_device_only_to_read_tokens():
    """Admissions while other rows decode (prompts of different lengths, so padded prefills; a
    capturing prefill-only request; LoRA, greedy, top-p and top-k rows) under CUDA's sync debug
    mode "error": every implicit host sync (a copy from pageable memory, a device-side mask
    turned into indices, an .item()) raises. The engine reads tokens through events, run-ahead
    steps behind, and times prefills with events read afterwards. Eager steps, run once before
    to compile the fused kernels (a CUDA graph capture synchronizes by design)."""
    from minitflow.model.qwen3 import Capture
    llm = _random_llm("eager", num_slots=3)
    cfg, shapes = llm.cfg, projection_shapes(llm.cfg)
    g = torch.Generator(device="cuda").manual_seed(2)
    sender = {(l, p): (0.05 * torch.randn(1, 4, shapes[p][0], generator=g, device="cuda", dtype=torch.bfloat16),
                       0.05 * torch.randn(1, shapes[p][1], 4, generator=g, device="cuda", dtype=torch.bfloat16))
              for l in range(cfg.num_hidden_layers) for p in PROJECTIONS}
    lora = build_lora(cfg, [sender], [1.0])
    weights = torch.softmax(torch.arange(cfg.num_hidden_layers + 1.0, device="cuda"), 0)

    def work(k: int) -> list:  # other tokens each time: nothing comes from the prefix cache
        with torch.inference_mode():
            reqs = [llm.add_request(list(range(k + 5, k + 40)), SamplingParams(max_new_tokens=8)),
                    llm.add_request(list(range(k + 100, k + 117)), SamplingParams(temperature=0.6, top_p=0.95,
                                                                                  seed=1, max_new_tokens=20), lora=lora),
                    llm.add_request([k + 7] * 60, SamplingParams(temperature=0.7, top_k=20, seed=2, max_new_tokens=12)),
                    llm.add_request(list(range(k + 200, k + 240)), generate=False,
                                    capture=Capture(list(range(cfg.num_hidden_layers + 1)), [3], [30],
                                                    layer_weights=weights)),
                    llm.add_request(list(range(k + 9, k + 18)), SamplingParams(max_new_tokens=16))]
            while llm.has_unfinished():
                llm.step()
        return reqs

    work(0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        reqs = work(1000)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [len(r.output_ids) for r in reqs] == [8, 20, 12, 0, 16]
    assert all(r.prefill_s > 0 and r.cached_tokens == 0 for r in reqs) and reqs[3].capture.hidden.shape[-2] == 27


@torch.inference_mode()
def test_latentmas_senders_do_not_wait_for_the_device():
    """LatentMAS's senders run between engine steps (stream_latentmas): a read of a device value
    or a pageable copy in their prefill or latent steps would drain the engine's queued decode
    steps. Under sync debug mode "error" after a warm-up run (the fused kernels compile), with
    prompts of different lengths, W_a, and a step over a subset of the rows; same hidden states."""
    from minitflow.tflow.latentmas import Rows, realignment_matrix
    llm = _random_llm("eager")
    w_a, target = realignment_matrix(llm.model)

    def senders() -> torch.Tensor:
        rows = Rows.allocate(llm, 2, 64)
        _, hidden = rows.prefill([list(range(5, 40)), list(range(100, 117))], need_logits=False)
        rows.latent_steps(hidden, 3, w_a, target)
        _, hidden = rows.step(embeds=hidden[1:], rows=[1], need_logits=False)
        assert rows.lengths == [38, 21]
        return hidden

    first = senders()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = senders()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(first, again)


@torch.inference_mode()
def test_generator_in_pieces_on_cuda_matches_cpu():
    """The generator on CUDA at inference (pieces, apply_rope as a compiled kernel) against
    the CPU's whole-stage float32 factors, for padded conditions."""
    from minitflow.model.fused import _FUSED
    from minitflow.tflow.checkpoint import arch_for, random_generator
    from minitflow.tflow.condition import generator_factors
    from minitflow.tflow.generator import apply_rope
    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    gen = random_generator(cfg, seed=3, arch=arch_for(cfg, dict(d_model=64, head_dim=16, output_dim=16, token_dim=16)))
    gen.eval().requires_grad_(False)
    cond = torch.randn(3, 11, cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    mask = torch.arange(11)[None, :] < torch.tensor([11, 4, 7])[:, None]
    want = generator_factors(gen, cond, mask, piece=None)
    got = generator_factors(gen.cuda(), cond.cuda(), mask.cuda(), piece=37)
    for key, (a, b) in want.items():
        torch.testing.assert_close(got[key][0].cpu(), a, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got[key][1].cpu(), b, rtol=1e-4, atol=1e-6)
    assert apply_rope.eager in _FUSED
