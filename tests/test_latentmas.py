"""LatentMAS: greedy equality with the official HF path, W_a, batch invariance, user errors."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import GOLDEN, need_shared
from minitflow.engine.llm import LLM
from minitflow.engine.sampler import SamplingParams
from minitflow.errors import UserError
from minitflow.model.tokenizer import Tokenizer
from minitflow.model.weights import load_model
from minitflow.tflow import latentmas as lm
from helpers import write_tiny_qwen3

FIXTURE = Path(__file__).parent / "data" / "golden-latentmas-small"
DEMO = Path(lm.__file__).resolve().parents[1] / "data" / "demo"  # a 1,024-token tokenizer, for fast tests


# The fixture: models (knobs of write_tiny_qwen3), questions and the settings run through the official code.
# Every row is checked to come out the same at 1-4 torch threads: float32 reductions (the mean embedding
# norm) change in the last bit with the thread count, and the latent loop of these scaled-up random models
# amplifies that; (tied, hierarchical, realign, 8 steps) flipped a late token at one thread and was dropped.
MODELS = {
    "untied": {"tie": False, "seed": 11},  # W_out != W_in: realignment changes the latent vectors
    "tied": {"tie": True, "seed": 12},  # W_out = W_in: W_a is (almost) the identity
}
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "What is 7 times 6?",
    "A rectangle is 7 cm by 4 cm. What is its area?",
]
MAX_NEW_TOKENS = 24
RUNS = [
    *({"model": "untied", "topology": t, "task": "gsm8k", "think": False, "realign": r, "latent_steps": k}
      for t in ("sequential", "hierarchical") for r in (False, True) for k in (0, 3, 8)),
    {"model": "untied", "topology": "sequential", "task": "gsm8k", "think": True, "realign": True, "latent_steps": 3},
    {"model": "untied", "topology": "hierarchical", "task": "gsm8k", "think": True, "realign": False, "latent_steps": 8},
    {"model": "untied", "topology": "hierarchical", "task": "mbppplus", "think": False, "realign": True, "latent_steps": 3},
    {"model": "untied", "topology": "sequential", "task": "gpqa", "think": False, "realign": False, "latent_steps": 3},
    {"model": "tied", "topology": "sequential", "task": "gsm8k", "think": False, "realign": False, "latent_steps": 3},
    {"model": "tied", "topology": "hierarchical", "task": "gsm8k", "think": False, "realign": True, "latent_steps": 3},
    {"model": "tied", "topology": "sequential", "task": "gsm8k", "think": False, "realign": True, "latent_steps": 8},
    {"model": "tied", "topology": "sequential", "task": "gsm8k", "think": False, "realign": True, "latent_steps": 0},
]


def _sha(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((FIXTURE / "golden.json").read_text())


@pytest.fixture(scope="module")
def golden_llms(golden, tmp_path_factory) -> dict[str, LLM]:
    tok = need_shared(GOLDEN / "model")  # the real Qwen3 tokenizer
    assert golden["models"] == MODELS and golden["questions"] == QUESTIONS
    root = tmp_path_factory.mktemp("latentmas")
    return {name: LLM.load(write_tiny_qwen3(root / name, tok, **knobs), dtype="float32", device="cpu")
            for name, knobs in MODELS.items()}


STYLE_FOR = {"gpqa": "mmlu"}  # minitflow's style that maps onto the official task


@pytest.mark.parametrize("index", range(len(RUNS)))
def test_reproduces_official_greedy_outputs(golden, golden_llms, index):
    """A batch of the three questions gives, row by row, what the official code gave each alone."""
    run = golden["runs"][index]
    assert {k: run[k] for k in RUNS[index]} == RUNS[index]
    llm = golden_llms[run["model"]]
    k, style = run["latent_steps"], STYLE_FOR.get(run["task"], run["task"])
    results = lm.run_latentmas(llm, QUESTIONS, style, [SamplingParams(max_new_tokens=golden["max_new_tokens"])] * 3,
                               latent_steps=k, topology=run["topology"], realign=run["realign"], think=run["think"])
    for q, res, row in zip(QUESTIONS, results, run["rows"]):
        assert res.token_ids == row["token_ids"], (q, res.answer, row["text"])
        assert res.answer == row["text"]
        for agent in row["agents"]:
            ids = lm.agent_prompt_ids(llm, agent["role"], q, style, run["topology"], run["think"])
            assert [len(ids), _sha(ids)] == [agent["prompt_tokens"], agent["prompt_sha"]], agent["role"]
            usage = res.agents[agent["role"]]
            ran = agent["role"] == "judger" or k > 0  # at 0 steps the official judger ignores the senders
            assert usage.prompt_tokens == (agent["prompt_tokens"] if ran else 0)
            assert usage.latent_steps == (k if agent["role"] != "judger" else 0)
        assert res.agents["judger"].completion_tokens == len(row["token_ids"])
        assert res.official_usage["total_tokens"] == res.agents["judger"].prompt_tokens + len(row["token_ids"])
        assert res.processed_tokens == sum(a.prompt_tokens + a.completion_tokens for a in res.agents.values())
        assert res.processed_tokens == res.official_usage["total_tokens"] + (
            sum(a["prompt_tokens"] for a in row["agents"][:3]) + 3 * k if k else 0)


def test_prompts_data_reproduces_every_official_prompt(golden, golden_llms):
    llm = golden_llms["untied"]
    for key, want in golden["prompt_sha"].items():
        topology, task, role, think = key.split("/")
        ids = lm.agent_prompt_ids(llm, role, QUESTIONS[0], task, topology, think == "think")
        assert [len(ids), _sha(ids)] == want, key


def test_fixture_is_sensitive(golden):
    """Latent steps, realignment, topology and the tied head all change the judger's text."""
    by = {(r["model"], r["topology"], r["task"], r["think"], r["realign"], r["latent_steps"]):
          [row["token_ids"] for row in r["rows"]] for r in golden["runs"]}
    base = ("untied", "sequential", "gsm8k", False)
    assert by[(*base, False, 0)] == by[(*base, True, 0)]  # no latent step, nothing to realign
    outs = [by[(*base, r, k)] for r in (False, True) for k in (3, 8)] + [by[(*base, False, 0)]]
    assert all(outs[i][j] != outs[m][j] for i in range(len(outs)) for m in range(i) for j in range(3))
    assert by[("untied", "hierarchical", "gsm8k", False, True, 3)] != by[(*base, True, 3)]
    assert by[("untied", "sequential", "gsm8k", True, True, 3)] != by[(*base, True, 3)]


# ---- fast tests on a 1,024-token vocabulary (no ../shared needed) ---------------------------------

@pytest.fixture(scope="module")
def small_llm(tmp_path_factory) -> LLM:
    d = write_tiny_qwen3(tmp_path_factory.mktemp("latentmas-small"), DEMO, tie=False, seed=3, vocab=1024,
                         bos=1019, eos=(1021, 1019))
    return LLM.load(d, dtype="float32", device="cpu")


SMALL_QUESTIONS = ["What is 7 times 6?", "Tom has 3 apples and buys 5 more, then gives 2 away. How many are left?",
                   "Sum 1, 2 and 3."]


def test_realignment_matrix_equals_independent_float64(small_llm):
    model = small_llm.model
    for rows in (None, 1000):
        w_a, target = lm.realignment_matrix(model, rows=rows)
        n = rows or 1024
        w_in, w_out = model.embed_tokens.weight[:n].double(), model.lm_head.weight[:n].double()
        ref = torch.linalg.solve(w_out.T @ w_out + 1e-5 * torch.eye(w_out.shape[1], dtype=torch.float64),
                                 w_out.T @ w_in)
        assert w_a.dtype == torch.float32 and w_a.shape == (32, 32)
        assert (w_a.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
        assert abs(target.item() - w_in.norm(dim=1).mean().item()) <= 1e-5 * target.item()
        assert lm.realignment_matrix(model, rows=rows)[0] is w_a  # cached
    before = lm.realignment_matrix(model)[0]
    with torch.no_grad():  # an in-place weight update invalidates the cached matrix
        model.lm_head.weight.mul_(2.0)
    try:
        assert torch.allclose(lm.realignment_matrix(model)[0], before / 2, rtol=1e-4, atol=1e-6)
    finally:
        with torch.no_grad():
            model.lm_head.weight.div_(2.0)
    assert torch.equal(lm.realignment_matrix(model)[0], before)


def test_realignment_cache_keeps_no_matrix_of_old_weights(small_llm):
    """Each in-place weight update (a fine-tune step between runs) left its (H, H) W_a in the
    cache for good, keyed by the old version: memory grew with every update. Only the current
    weights' matrix stays."""
    import gc
    import weakref
    model = small_llm.model
    first = weakref.ref(lm.realignment_matrix(model)[0])
    try:
        for _ in range(3):
            with torch.no_grad():
                model.lm_head.weight.mul_(2.0)  # a power of two: dividing restores the weights bitwise
            latest = lm.realignment_matrix(model)[0]
        gc.collect()
        assert first() is None
        assert lm.realignment_matrix(model)[0] is latest  # still cached while the weights stand
    finally:
        with torch.no_grad():
            model.lm_head.weight.div_(8.0)


def test_realignment_matrix_of_a_model_built_in_inference_mode():
    """A model made under torch.inference_mode (tests/test_gpu.py's LatentMAS check builds its
    LLM so) has inference-tensor weights, which keep no version counter: reading `_version`
    raised a RuntimeError before any latent step. The matrix is built and cached all the same."""
    from minitflow.model.config import Qwen3Config
    from minitflow.model.weights import empty_model
    cfg = Qwen3Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=8, tie_word_embeddings=True, max_position_embeddings=32)
    with torch.inference_mode():
        model = empty_model(cfg, torch.float32, "cpu")
        model.embed_tokens.weight.copy_(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
    assert model.embed_tokens.weight.is_inference()
    w_a, target = lm.realignment_matrix(model)
    assert w_a.shape == (16, 16) and torch.isfinite(w_a).all() and target > 0
    assert lm.realignment_matrix(model)[0] is w_a  # cached


def test_realignment_ridge_term_is_the_official_one(small_llm):
    """λ = 1e-5 as in the official code: with an lm_head scaled down until W_outᵀW_out is of the
    order of λ (a scale at which λ shows; at the model's own scale a 100x larger λ stays within
    the float64 comparison's tolerance), W_a equals the float64 solve with λ = 1e-5, and not
    with 1e-6 or 1e-4."""
    model = small_llm.model
    scale = 2.0 ** -13  # a power of two: dividing restores the weights bitwise
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    try:
        w_a, _ = lm.realignment_matrix(model)
        w_in, w_out = model.embed_tokens.weight.double(), model.lm_head.weight.double()
        gram = w_out.T @ w_out
        assert 1e-6 < torch.linalg.eigvalsh(gram).min() < 1e-4  # λ is of the order of the gram's eigenvalues
        ref = {lam: torch.linalg.solve(gram + lam * torch.eye(32, dtype=torch.float64), w_out.T @ w_in)
               for lam in (1e-6, 1e-5, 1e-4)}
        err = {lam: ((w_a.double() - r).abs().max() / r.abs().max()).item() for lam, r in ref.items()}
        assert err[1e-5] <= 1e-4 and err[1e-6] > 1e-2 and err[1e-4] > 1e-2, err
    finally:
        with torch.no_grad():
            model.lm_head.weight.div_(scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_embedding_norm_copies_a_chunk_of_rows_at_a_time(monkeypatch, dtype):
    """Without realignment each run took the target norm from a float32 copy of the whole embedding
    table (about 1.5 GB at Qwen3-4B): now a chunk of rows at a time, and the same value bitwise."""
    from types import SimpleNamespace
    w = (torch.randn(1000, 48, generator=torch.Generator().manual_seed(0)) * 0.05).to(dtype)
    model = SimpleNamespace(embed_tokens=SimpleNamespace(weight=w))
    copies: list[int] = []
    as_float = torch.Tensor.float
    monkeypatch.setattr(torch.Tensor, "float", lambda t, *a, **k: (copies.append(t.numel()), as_float(t, *a, **k))[1])
    monkeypatch.setattr(lm, "NORM_CHUNK_ROWS", 300, raising=False)
    for rows in (None, 999, 301, 7):
        copies.clear()
        got = lm.embedding_norm(model, rows)
        n = rows or 1000
        assert copies and max(copies) <= 300 * 48 and sum(copies) == n * 48
        assert torch.equal(got, as_float(w[:n]).norm(dim=1).mean())


def test_latent_embedding_rescales_to_target_norm():
    h, w = torch.randn(4, 8), torch.randn(8, 8)
    assert lm.latent_embedding(h.bfloat16(), w, torch.tensor(3.0)).dtype == torch.bfloat16  # math in float32
    e = lm.latent_embedding(h, w, torch.tensor(3.0))
    assert torch.allclose(e.norm(dim=-1), torch.full((4,), 3.0), atol=1e-5)
    assert torch.allclose(e / e.norm(dim=-1, keepdim=True), (h @ w) / (h @ w).norm(dim=-1, keepdim=True), atol=1e-5)
    assert torch.allclose(lm.latent_embedding(h, None, torch.tensor(2.0)), 2.0 * h / h.norm(dim=-1, keepdim=True),
                          atol=1e-6)


def _uncached(usage) -> dict:
    """An agent's usage without its cached_tokens."""
    return {k: v for k, v in usage.as_dict().items() if k != "cached_tokens"}


def test_run_latentmas_takes_the_style_aliases_run_method_takes(small_llm):
    """run_latentmas called directly refused "humaneval", "mbpp" and "math", which run_method
    resolves before it calls it: the same names now mean the same styles on both paths."""
    sp = [SamplingParams(max_new_tokens=3, temperature=0.0)]
    for alias, style in (("humaneval", "humanevalplus"), ("math", "minerva_math")):
        a = lm.run_latentmas(small_llm, SMALL_QUESTIONS[:1], alias, sp, latent_steps=1)[0]
        b = lm.run_latentmas(small_llm, SMALL_QUESTIONS[:1], style, sp, latent_steps=1)[0]
        assert (a.token_ids, a.style) == (b.token_ids, b.style)
        assert {n: _uncached(u) for n, u in a.agents.items()} == {n: _uncached(u) for n, u in b.agents.items()}
        planner = b.agents["planner"]  # a's prompt, just cached: every whole block but the last token's
        assert planner.cached_tokens == (planner.prompt_tokens - 1) // 16 * 16 > 0


@pytest.mark.parametrize("greedy", [True, False])
@pytest.mark.parametrize("setting", [("sequential", True, 3, False), ("hierarchical", False, 0, False),
                                     ("hierarchical", False, 4, True)])
def test_batch_invariance(small_llm, greedy, setting):
    """Each question gets what it gets alone, at any batch size and with rows that stop early."""
    topology, realign, k, think = setting
    sps = [SamplingParams(max_new_tokens=m, temperature=0.0 if greedy else 0.9, top_p=1.0 if greedy else 0.9,
                          seed=100 + i) for i, m in enumerate((12, 5, 9))]
    kw = dict(latent_steps=k, topology=topology, realign=realign, think=think)
    batch = lm.run_latentmas(small_llm, SMALL_QUESTIONS, "gsm8k", sps, **kw)
    for q, sp, res in zip(SMALL_QUESTIONS, sps, batch):
        alone = lm.run_latentmas(small_llm, [q], "gsm8k", [sp], **kw)[0]
        assert (res.token_ids, res.answer, res.finish_reason) == (alone.token_ids, alone.answer, alone.finish_reason)
        # all but the judger's prefix cache hits, which depend on what ran before (the batch, here)
        assert {n: _uncached(a) for n, a in res.agents.items()} == {n: _uncached(a) for n, a in alone.agents.items()}
        assert res.batch_size == 3 and len(res.token_ids) <= sp.max_new_tokens
        assert (res.finish_reason == "length") == (len(res.token_ids) == sp.max_new_tokens)


def test_eos_ends_a_row_inside_a_batch(small_llm):
    sps = [SamplingParams(max_new_tokens=10)] * 3
    full = lm.run_latentmas(small_llm, SMALL_QUESTIONS, "gsm8k", sps, latent_steps=2)
    stop = full[1].token_ids[3]
    old = small_llm.eos_token_ids
    small_llm.eos_token_ids = {stop}
    try:
        cut = lm.run_latentmas(small_llm, SMALL_QUESTIONS, "gsm8k", sps, latent_steps=2)
    finally:
        small_llm.eos_token_ids = old
    for f, c in zip(full, cut):
        n = f.token_ids.index(stop) + 1 if stop in f.token_ids else len(f.token_ids)
        assert c.token_ids == f.token_ids[:n]
        assert c.finish_reason == ("stop" if stop in f.token_ids else "length")
    assert cut[1].finish_reason == "stop" and len(cut[1].token_ids) <= 4


# greedy, and a draw (seed 34) that ends on an EOS token inside max_new_tokens
@pytest.mark.parametrize("sp", [SamplingParams(max_new_tokens=8),
                                SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=20, seed=34)])
def test_cache_handover_equals_one_long_prompt(small_llm, sp):
    """With no latent step the hand-over is plain KV reuse: the judger continues the concatenation of the
    agents' prompts. Official 0 steps: the judger alone. Both against the engine's own generate, so the
    judger samples with the caller's temperature, top-p, top-k and seed; its answer is the official
    decode(skip_special_tokens=True).strip() of its ids (the EOS token they end on dropped)."""
    q = SMALL_QUESTIONS[1]
    ids = {r: lm.agent_prompt_ids(small_llm, r, q, "gsm8k", "sequential", False) for r in (*lm.SENDERS, lm.JUDGER)}
    kept = lm.run_latentmas(small_llm, [q], "gsm8k", [sp], latent_steps=0, handover_at_zero=True)[0]
    chain = small_llm.generate([sum(ids.values(), [])], sp)[0]
    assert kept.token_ids == chain.token_ids
    if sp.temperature:  # the draw ends on EOS, which the answer drops
        assert kept.finish_reason == "stop" and kept.token_ids[-1] in small_llm.eos_token_ids
    assert kept.answer == small_llm.tokenizer.decode(kept.token_ids, skip_special_tokens=True).strip()
    dropped = lm.run_latentmas(small_llm, [q], "gsm8k", [sp], latent_steps=0)[0]
    assert dropped.token_ids == small_llm.generate([ids[lm.JUDGER]], sp)[0].token_ids
    assert dropped.processed_tokens == len(ids[lm.JUDGER]) + len(dropped.token_ids)
    assert kept.processed_tokens == sum(map(len, ids.values())) + len(kept.token_ids)
    # senders may read other text than the judger (a private context): only the senders' prompts change
    private = "Context: the answer is 9. " + q
    for role in lm.SENDERS:
        ids[role] = lm.agent_prompt_ids(small_llm, role, private, "gsm8k", "sequential", False)
    told = lm.run_latentmas(small_llm, [q], "gsm8k", [sp], latent_steps=0, handover_at_zero=True,
                            sender_questions=[private])[0]
    assert told.token_ids == small_llm.generate([sum(ids.values(), [])], sp)[0].token_ids


def test_accounting_and_metadata(small_llm):
    res = lm.run_latentmas(small_llm, SMALL_QUESTIONS[:2], "mmlu", [SamplingParams(max_new_tokens=4)] * 2,
                           latent_steps=5, topology="hierarchical")[0]
    meta = res.metadata()
    per = meta["token_usage"]["per_agent"]
    assert list(per) == ["planner", "critic", "refiner", "judger"]
    for role in lm.SENDERS:
        assert per[role]["latent_steps"] == 5 and per[role]["completion_tokens"] == 5
        assert per[role]["generates"] is False and per[role]["prompt_tokens"] > 0
    assert per["judger"]["generates"] is True and per["judger"]["latent_steps"] == 0
    # cut at max_new_tokens: the judger's alone (4 tokens of a random model: no EOS)
    assert per["judger"]["finish_reason"] == res.finish_reason == "length" and meta["truncated"] is True
    assert meta["token_usage"]["total_tokens"] == per["judger"]["total_tokens"]
    assert meta["token_usage"]["processed_tokens"] == sum(a["total_tokens"] for a in per.values())
    assert {"planner_prefill_s", "planner_latent_s", "critic_prefill_s", "refiner_latent_s", "judger_prefill_s",
            "decode_s", "queue_s", "total_s"} <= set(meta["timings"])
    assert res.method == "latentmas" and meta["batch_size"] == 2


@pytest.mark.parametrize("method", ["baseline", "textmas", "latentmas"])
def test_a_result_records_whether_its_decode_steps_were_compiled(small_llm, method, monkeypatch):
    """--compile was in no row's record (only the summary's config, the last session's flags): a
    resumed folder's rows from a compiled and an eager session could not be told apart, though
    float32 decoding may differ between them in the last bits. Each row says, beside batch_size."""
    from minitflow.tflow.methods import run_method
    sampling = SamplingParams(max_new_tokens=3)
    eager = run_method(method, small_llm, SMALL_QUESTIONS[:1], style="gsm8k", sampling=sampling, batch_size=1)
    assert eager[0].metadata()["compiled"] is False
    monkeypatch.setattr(small_llm, "compiled", True)  # what LLM.load(compile=True) sets; the steps are not rerun
    compiled = run_method(method, small_llm, SMALL_QUESTIONS[:1], style="gsm8k", sampling=sampling, batch_size=1)
    assert compiled[0].metadata()["compiled"] is True


def test_a_judgers_prefix_cache_hit_is_counted(small_llm):
    """With latent_steps 0 the judger takes no handed-over KV, so its prompt start comes from the
    prefix cache when an earlier judger's shared it; its usage read cached_tokens 0 all the same
    (the other methods count their requests' hits)."""
    sp = [SamplingParams(max_new_tokens=2)]
    lm.run_latentmas(small_llm, SMALL_QUESTIONS[:1], "gsm8k", sp, latent_steps=0)
    res = lm.run_latentmas(small_llm, SMALL_QUESTIONS[1:2], "gsm8k", sp, latent_steps=0)[0]
    judger = res.agents["judger"]
    assert 0 < judger.cached_tokens < judger.prompt_tokens
    assert res.metadata()["token_usage"]["per_agent"]["judger"]["cached_tokens"] == judger.cached_tokens


def test_senders_take_the_shared_prompt_from_the_prefix_cache(small_llm, monkeypatch):
    """The planner's prompt starts with the system prompt and the role prompt, the same for every
    question: it was prefilled anew for each. Its whole cached blocks now come from the engine's
    prefix cache (the only sender prompt that can: the critic's and refiner's follow the question's
    own KV), the rest is computed, and the answer is what a cold cache gives."""
    sp, kw = [SamplingParams(max_new_tokens=6)], dict(latent_steps=2, realign=True)
    computed: list[int] = []
    prefill = lm.Rows.prefill
    monkeypatch.setattr(lm.Rows, "prefill", lambda self, prompts, **k: (
        computed.append(sum(map(len, prompts))), prefill(self, prompts, **k))[1])
    small_llm.engine.prefix_cache.clear()
    lm.run_latentmas(small_llm, SMALL_QUESTIONS[:1], "gsm8k", sp, **kw)
    computed.clear()
    warm = lm.run_latentmas(small_llm, SMALL_QUESTIONS[1:2], "gsm8k", sp, **kw)[0]
    planner = warm.agents["planner"]
    ids = [lm.agent_prompt_ids(small_llm, "planner", q, "gsm8k", "sequential", False) for q in SMALL_QUESTIONS[:2]]
    shared = next(i for i, (a, b) in enumerate(zip(*ids)) if a != b)
    assert planner.cached_tokens == shared // 16 * 16 > 0
    assert sum(computed) == sum(warm.agents[r].prompt_tokens for r in lm.SENDERS) - planner.cached_tokens
    assert warm.metadata()["token_usage"]["per_agent"]["planner"]["cached_tokens"] == planner.cached_tokens
    small_llm.engine.prefix_cache.clear()
    cold = lm.run_latentmas(small_llm, SMALL_QUESTIONS[1:2], "gsm8k", sp, **kw)[0]
    assert cold.agents["planner"].cached_tokens == 0
    assert (cold.token_ids, cold.answer) == (warm.token_ids, warm.answer)


def _one_line_error(fn, match: str) -> None:
    with pytest.raises(UserError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_user_errors(small_llm):
    q, sp = ["q"], [SamplingParams(max_new_tokens=2)]
    run = lm.run_latentmas
    _one_line_error(lambda: run(small_llm, q, "gsm8k", sp, latent_steps=-1), "latent_steps must be an integer >= 0")
    _one_line_error(lambda: run(small_llm, q, "gsm8k", sp, latent_steps=2, topology="star"), "unknown LatentMAS topology")
    _one_line_error(lambda: run(small_llm, q, "poetry", sp, latent_steps=2), "unknown dataset style 'poetry'")
    _one_line_error(lambda: run(small_llm, q, 5, sp, latent_steps=2), "dataset style must be a name such as 'gsm8k', got 5")
    _one_line_error(lambda: run(small_llm, q, "gsm8k", sp * 2, latent_steps=2), "2 sampling params for 1 questions")
    _one_line_error(lambda: run(small_llm, q, "gsm8k", sp, latent_steps=2, sender_questions=["a", "b"]),
                    "2 sender questions for 1 questions")
    _one_line_error(lambda: run(small_llm, q, "gsm8k", [SamplingParams(max_new_tokens=5000)], latent_steps=2),
                    "more than max_seq_len")
    _one_line_error(lambda: run(small_llm, [], "gsm8k", [], latent_steps=2), "^no questions given$")
    _one_line_error(lambda: run(small_llm, q, "gsm8k", sp, latent_steps=2, labels=["a", "b"]), "^2 labels for 1 questions$")
    _one_line_error(lambda: run(LLM(small_llm.model), q, "gsm8k", sp, latent_steps=2),
                    r"^latentmas needs a tokenizer \(the model directory has no tokenizer.json\)$")
    lm.validate_options("tflow")
    lm.validate_options("latentmas", latent_steps=1, topology="hierarchical", realign=True, think=True)


def test_option_errors_name_the_setting_as_the_caller_spelt_it(small_llm):
    """run_method's keywords for a Python caller, the flags for the command lines (CLI_FLAGS): a
    caller of run_method(realign=True) was told about --latent_realign and --latent_steps."""
    from minitflow.tflow.methods import run_method
    sp = SamplingParams(max_new_tokens=2)
    api = [(lambda f: lm.validate_options("tflow", latent_steps=3, flags=f),
            re.escape("latent_steps only applies to method=latentmas (got method=tflow)"),
            re.escape("--latent_steps only applies to --method latentmas (got --method tflow)")),
           (lambda f: lm.validate_options("baseline", topology="sequential", realign=True, flags=f),
            "topology, realign only apply to method=latentmas",
            "--mas_topology, --latent_realign only apply to --method latentmas"),
           (lambda f: lm.validate_options("latentmas", latent_steps=-1, flags=f),
            "latent_steps must be an integer >= 0, got -1", "--latent_steps must be an integer >= 0, got -1")]
    for steps in (0, None):  # no latent step to realign: the setting would change nothing
        api.append((lambda f: lm.validate_options("latentmas", latent_steps=steps, realign=True, flags=f),
                    "realign has no effect with latent_steps=0 .*pass latent_steps=K .* leave realign out",
                    "--latent_realign has no effect with --latent_steps 0 .*pass --latent_steps K .*"
                    "leave --latent_realign out"))
    for fn, words, flags in api:
        _one_line_error(lambda: fn(None), words)
        with pytest.raises(UserError) as e:
            fn(None)
        assert "--" not in str(e.value)
        _one_line_error(lambda: fn(lm.CLI_FLAGS), flags)
    with pytest.raises(UserError, match=r"^think only applies to method=latentmas \(got method=baseline\)$"):
        run_method("baseline", small_llm, ["q"], style="gsm8k", sampling=sp, think=True)
    with pytest.raises(UserError, match=r"^handover_at_zero only applies to method=latentmas \(got method=textmas\)$"):
        run_method("textmas", small_llm, ["q"], style="gsm8k", sampling=sp, handover_at_zero=True)  # was run without it
    for steps in ({}, {"latent_steps": 0}):  # run_method refuses it as the CLIs do (run_latentmas takes it: golden runs)
        with pytest.raises(UserError, match=r"^realign has no effect with latent_steps=0 "):
            run_method("latentmas", small_llm, ["q"], style="gsm8k", sampling=sp, realign=True, **steps)
    with pytest.raises(UserError, match=r"tflow needs a ParameterGenerator: pass generator=") as e:
        run_method("tflow", small_llm, ["q"], style="gsm8k", sampling=sp)
    assert "--" not in str(e.value)


def test_realignment_impossible_is_a_user_error(tmp_path):
    d = write_tiny_qwen3(tmp_path, DEMO, tie=False, seed=5, vocab=1024, bos=1019, eos=(1021, 1019))
    model = load_model(d, torch.float32, "cpu")
    model.lm_head = torch.nn.Linear(32, 1000, bias=False)  # a head over fewer rows than the embedding
    llm = LLM(model, Tokenizer(d))
    _one_line_error(lambda: lm.realignment_matrix(model), "input embeddings and lm_head of one shape")
    _one_line_error(lambda: lm.run_latentmas(llm, ["q"], "gsm8k", [SamplingParams(max_new_tokens=2)], latent_steps=1,
                                             realign=True), "input embeddings and lm_head of one shape")
    with pytest.raises(UserError, match="over 2000 vocabulary rows"):
        lm.embedding_norm(model, rows=2000)
    model.lm_head = torch.nn.Linear(32, 1024, bias=False)
    for rows in (0, 1025):
        _one_line_error(lambda: lm.realignment_matrix(model, rows=rows),
                        rf"^realignment over {rows} vocabulary rows: the model has 1024$")


def test_vocabulary_cut_draws_as_masking():
    """The judger samples over the tokenizer's rows only (the official code resizes the vocabulary):
    slicing the logits must draw what masking the extra rows to -inf draws."""
    from minitflow.engine.sampler import Sampler
    logits = 4 * torch.randn(3, 300, generator=torch.Generator().manual_seed(0))
    sps = [SamplingParams(temperature=1.0, top_p=0.9, seed=s) for s in (1, 2, 3)]
    masked = logits.clone()
    masked[:, 250:] = float("-inf")
    for step in range(20):
        assert Sampler(sps, torch.device("cpu"))(logits[:, :250], step).tolist() == \
            Sampler(sps, torch.device("cpu"))(masked, step).tolist()


@pytest.fixture(scope="module")
def golden_dirs(golden, tmp_path_factory) -> dict[str, Path]:
    tok = need_shared(GOLDEN / "model")
    root = tmp_path_factory.mktemp("latentmas-cli")
    return {name: write_tiny_qwen3(root / name, tok, **knobs) for name, knobs in MODELS.items()}


@pytest.mark.parametrize("index", [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 19])
def test_cli_reproduces_official_greedy_outputs(golden, golden_dirs, index, tmp_path):
    """python -m minitflow.generate --method latentmas: sequential and hierarchical, with and
    without realignment, 0 / 3 / 8 latent steps, as the official HF path gave them."""
    from minitflow.errors import run_cli
    from minitflow.generate import main
    run = golden["runs"][index]
    inp = tmp_path / "q.jsonl"
    inp.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    out = tmp_path / "out.json"
    argv = ["--method", "latentmas", "--model", str(golden_dirs[run["model"]]), "--dataset", "gsm8k",
            "--input_file", str(inp), "--output", str(out), "--greedy", "--max_new_tokens",
            str(golden["max_new_tokens"]), "--dtype", "float32", "--device", "cpu", "--batch_size", "3",
            "--latent_steps", str(run["latent_steps"]), "--mas_topology", run["topology"]]
    argv += ["--think"] * run["think"]
    if run["realign"] and not run["latent_steps"]:  # nothing to realign: the flag is refused, the output the same
        assert run_cli(main, [*argv, "--latent_realign"]) == 2 and not out.exists()
    argv += ["--latent_realign"] * (run["realign"] and run["latent_steps"] > 0)
    assert run_cli(main, argv) == 0
    got = json.loads(out.read_text())
    assert [g["answer"] for g in got] == [row["text"] for row in run["rows"]]
    assert [g["metadata"]["token_usage"]["completion_tokens"] for g in got] == [len(r["token_ids"]) for r in run["rows"]]


def test_judgers_are_engine_requests_whatever_the_slots(small_llm):
    """The judger decodes as a request on the serving engine with its question's KV handed
    over: through one slot (judgers queue) it gets what it gets with a slot each."""
    sps = [SamplingParams(max_new_tokens=m, temperature=0.9, top_p=0.9, seed=7 + i) for i, m in enumerate((6, 3, 8))]
    wide = lm.run_latentmas(small_llm, SMALL_QUESTIONS, "gsm8k", sps, latent_steps=2)
    one = LLM(small_llm.model, small_llm.tokenizer, eos_token_ids=small_llm.eos_token_ids, num_slots=1)
    narrow = lm.run_latentmas(one, SMALL_QUESTIONS, "gsm8k", sps, latent_steps=2)
    assert [r.token_ids for r in narrow] == [r.token_ids for r in wide]
    assert one.engine.steps > max(len(r.token_ids) for r in wide)  # they ran one after another


def test_run_method_streams_without_a_batch_barrier(small_llm):
    """run_method("latentmas") streams: a question's output is what it gets alone, whatever group it
    ran in; results come through on_result as they finish; the senders read `sender_questions`
    (a private context; run_method used to drop it); and the window refills as judgers end,
    so a long judger no longer holds back the questions after it."""
    from minitflow.tflow.methods import run_method
    qs = [SMALL_QUESTIONS[i % 3] + " " * (i // 3) for i in range(7)]
    private = [f"Context: {i} boxes. {q}" for i, q in enumerate(qs)]
    lengths = (12, 1, 1, 1, 12, 1, 1)
    sps = [SamplingParams(max_new_tokens=m, temperature=0.9, top_p=0.9, seed=30 + i, ignore_eos=True)
           for i, m in enumerate(lengths)]
    seen: list[int] = []
    steps0 = small_llm.engine.steps
    streamed = run_method("latentmas", small_llm, qs, sampling=sps, seeds=[sp.seed for sp in sps], batch_size=4,
                          sender_questions=private, latent_steps=2, on_result=lambda i, r: seen.append(i))
    steps = small_llm.engine.steps - steps0
    assert sorted(seen) == list(range(7)) and seen != list(range(7))  # in finishing order
    for i, res in enumerate(streamed):
        alone = lm.run_latentmas(small_llm, [qs[i]], "gsm8k", [sps[i]], latent_steps=2, sender_questions=[private[i]])[0]
        assert (res.token_ids, res.answer) == (alone.token_ids, alone.answer)
        # all but the prefix cache hits (the planner's and a judger's), which depend on what ran before
        assert {n: _uncached(a) for n, a in res.agents.items()} == {n: _uncached(a) for n, a in alone.agents.items()}
        assert len(res.token_ids) == lengths[i] and res.batch_size == 4
        assert {"planner_latent_s", "judger_prefill_s", "total_s"} <= set(res.timings)
    with pytest.raises(UserError, match="unknown option.s. latent_step;"):  # misspelt: not run as 0 steps
        run_method("latentmas", small_llm, qs[:1], latent_step=2)
    with pytest.raises(UserError, match="window must be an integer >= 1"):  # not a loop that never starts a question
        lm.stream_latentmas(small_llm, qs[:1], "gsm8k", sps[:1], window=0, latent_steps=2)
    # checked as run_method checks them: window 2.5 ran (in the results' batch_size), "2" and a nan share were a
    # TypeError and a ValueError, a share of 2 ran, and one string was a question per character
    for bad, words in ((dict(window=2.5), r"^window must be an integer >= 1, got 2.5$"),
                       (dict(window="2"), r"^window must be an integer >= 1, got '2'$"),
                       (dict(refill_share=2.0), r"^refill_share must be in \[0, 1\], got 2.0$"),
                       (dict(refill_share=float("nan")), r"^refill_share must be in \[0, 1\], got nan$")):
        with pytest.raises(UserError, match=words):
            lm.stream_latentmas(small_llm, qs[:2], "gsm8k", sps[:2], latent_steps=2, **{"window": 2, **bad})
    for run in (lm.run_latentmas, lambda *a, **kw: lm.stream_latentmas(*a, window=1, **kw)):
        with pytest.raises(UserError, match=r"^questions is one string: pass a list, e.g. \[question\]$"):
            run(small_llm, "Tom", "gsm8k", sps[:3], latent_steps=2)
    assert not small_llm.engine.in_flight()
    plain = lm.run_latentmas(small_llm, qs[:1], "gsm8k", sps[:1], latent_steps=2)[0]
    assert streamed[0].agents["planner"].prompt_tokens > plain.agents["planner"].prompt_tokens
    # chunks of 4 would decode 12 + 12 steps; the stream refills the 3 short questions' slots at once
    assert steps < 20, steps


@pytest.mark.parametrize("method", ["baseline", "latentmas"])
def test_refill_share_changes_when_questions_start_not_what_they_get(small_llm, method):
    """refill_share 1: new questions wait for the whole window and start together (chunks);
    0: each starts as a place frees. The same tokens either way (and as the method's default),
    and the chunked run decodes the long questions one after the other."""
    from minitflow.tflow.methods import run_method
    qs = [SMALL_QUESTIONS[i % 3] + " " * (i // 3) for i in range(9)]
    lengths = (12, 1, 1, 1, 12, 1, 1, 1, 1)  # more than the 3 freed places can take: share 1 waits
    sps = [SamplingParams(max_new_tokens=m, temperature=0.9, top_p=0.9, seed=50 + i, ignore_eos=True)
           for i, m in enumerate(lengths)]
    opts = {"latent_steps": 1} if method == "latentmas" else {}
    runs, steps = {}, {}
    for share in (None, 0.0, 1.0):
        before = small_llm.engine.steps
        runs[share] = [r.token_ids for r in run_method(method, small_llm, qs, sampling=sps, batch_size=4,
                                                        refill_share=share, **opts)]
        steps[share] = small_llm.engine.steps - before
    assert runs[0.0] == runs[1.0] == runs[None] and [len(t) for t in runs[0.0]] == list(lengths)
    assert steps[1.0] >= 24 > 20 > steps[0.0], steps  # chunks: 12 + 12 decode steps; refilled: both at once
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match="refill_share must be in"):
            run_method(method, small_llm, qs[:1], refill_share=bad, **opts)


@pytest.mark.parametrize("window,share,durations,starts", [
    (3, 0.5, [1, 5, 5, 1, 1], [(0, [0, 1, 2]), (5, [3, 4])]),  # half of 3 places: 2 must be free (ceil)
    (3, 0.0, [1, 5, 5, 1, 1], [(0, [0, 1, 2]), (1, [3]), (2, [4])]),  # each place as it frees
    (4, 1.0, [1, 9, 9, 9, 1], [(0, [0, 1, 2, 3]), (1, [4])]),  # the rest fits the free places: no wait
    (4, 1.0, [1, 9, 9, 9, 1, 1], [(0, [0, 1, 2, 3]), (9, [4, 5])]),  # it does not: the whole window
])
def test_stream_window_starts_questions_once_their_share_is_free(window, share, durations, starts):
    """stream_window on a fake engine (question i finishes durations[i] steps after it starts):
    new questions start, together, once ceil(share x window) places are free, or when the
    remaining questions fit the free places; results in input order, each once."""
    from minitflow.tflow.stream import MethodResult, stream_window
    clock, running, got, seen = [0], {}, [], []

    def start(group):
        got.append((clock[0], list(group)))
        running.update({i: clock[0] + durations[i] for i in group})

    def step():
        clock[0] += 1
        done = sorted(i for i, t in running.items() if t <= clock[0])
        for i in done:
            del running[i]
        return [(i, MethodResult("baseline", "gsm8k", str(i), "", "length", {}, {}, window)) for i in done]

    out = stream_window(len(durations), window, start, step, refill_share=share, on_result=lambda i, r: seen.append(i))
    assert got == starts
    assert [r.question for r in out] == [str(i) for i in range(len(durations))] and sorted(seen) == list(range(len(durations)))


def test_stream_frees_each_groups_sender_rows_once_its_judgers_are_in(small_llm, monkeypatch):
    """The senders' KV reaches the judgers' slots at admission; after that no request holds the
    group's rows, so a long judger does not keep its whole group's sender cache alive."""
    import weakref
    caches = []
    allocate = lm.Rows.allocate

    def tracked(*a, **k):
        rows = allocate(*a, **k)
        caches.append(weakref.ref(rows.cache.k.untyped_storage()))  # what the judgers' KV views keep alive
        return rows
    monkeypatch.setattr(lm.Rows, "allocate", tracked)
    sps = [SamplingParams(max_new_tokens=m, ignore_eos=True) for m in (30, 1, 1)]
    alive_at_end = []

    def on_result(i, _):
        if i == 1:  # question 0's judger still decodes: its group's rows must be gone
            alive_at_end.append(caches[0]() is not None)
    lm.stream_latentmas(small_llm, SMALL_QUESTIONS, "gsm8k", sps, window=3, latent_steps=1, on_result=on_result)
    assert alive_at_end == [False]


def test_memory_check_counts_a_later_groups_longer_sender_rows():
    """cli.kv_cache_bytes counted the first group's sender rows only: a later question whose senders
    hold 4,000 positions (a long question) was sized as if its rows were the first group's 100."""
    from minitflow.cli import kv_cache_bytes
    from minitflow.model.config import Qwen3Config
    from minitflow.model.kv_cache import kv_bytes
    cfg = Qwen3Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=40960)
    per = kv_bytes(2, 1, 32, torch.float32)
    short = [(300, 100)] * 5
    # 2 in flight: 2 slots x 512 positions (made for question 0, admitted before any later group
    # starts) beside question 4's own row of 4,000, more than the first group's 2 x 100
    got = kv_cache_bytes(cfg, torch.float32, "latentmas", 2, [*short[:4], (300, 4000)])
    assert got == ((2 * 512 + 4000) * per, 2, 512)
    # the judgers surely admitted by then grow the engine's cache: question 5's group starts after
    # three judgers (questions 0-2: first in, first out) are in, so 2 slots x 2,048 (question 1's
    # 2,000) beside 4,000
    run = [(300, 100), (2000, 100), (300, 100), (300, 100), (300, 100), (300, 4000)]
    assert kv_cache_bytes(cfg, torch.float32, "latentmas", 2, run)[0] == (2 * 2048 + 4000) * per
    assert kv_cache_bytes(cfg, torch.float32, "latentmas", 2, short)[0] == (2 * 512 + 2 * 100) * per  # as before


def test_stream_refuses_an_llm_with_requests_in_flight_and_leaves_none(small_llm):
    """stream_latentmas takes every request step() returns for one of its judgers: with another
    request in flight it raised a bare StopIteration, swallowed that request's result and left
    its own judger in the engine. Now one UserError before any work; the other request goes on.
    And a run that fails midway (called directly, without run_method's abort) left its judgers
    in flight, so the next run on the LLM was refused."""
    other = small_llm.add_request("hello there", SamplingParams(max_new_tokens=2, ignore_eos=True))
    sp = [SamplingParams(max_new_tokens=3)]
    _one_line_error(lambda: lm.stream_latentmas(small_llm, SMALL_QUESTIONS[:1], "gsm8k", sp, window=2, latent_steps=1),
                    "requests are in flight")
    done = []
    while small_llm.has_unfinished():
        done += small_llm.step()
    assert done == [other] and len(other.output_ids) == 2
    # an error mid-run (here on_result's) leaves none of its judgers behind: the LLM takes the next run
    sps = [SamplingParams(max_new_tokens=m, ignore_eos=True) for m in (1, 8)]

    def fail(i, _):
        raise ValueError("on_result failed")
    with pytest.raises(ValueError, match="on_result failed"):
        lm.stream_latentmas(small_llm, SMALL_QUESTIONS[:2], "gsm8k", sps, window=2, latent_steps=1, on_result=fail)
    assert not small_llm.engine.in_flight()
    assert len(lm.stream_latentmas(small_llm, SMALL_QUESTIONS[:1], "gsm8k", sp, window=2, latent_steps=1)) == 1


def test_run_method_options_are_latentmas_options():
    """methods.OPTIONS (run_method's check) holds every LatentMAS option: none is refused there."""
    from minitflow.tflow import methods
    assert set(lm.OPTIONS) <= set(methods.OPTIONS)


# ---- an independent reference: the official HF algorithm re-derived on transformers -----------------

def _official_hf_reference(hf, prompts: dict[str, list[int]], latent_steps: int, realign: bool,
                           vocab: int, eos: set[int], max_new_tokens: int) -> list[int]:
    """One question through the official HF path's algorithm (methods/latent_mas.py run_batch, models.py
    generate_latent_batch / _build_latent_realign_matrix / _apply_latent_realignment, commit 1430ad6),
    written from its description on a transformers Qwen3ForCausalLM: the vocabulary resized to the
    tokenizer's; each sender prefills on the whole cache so far, reads outputs.hidden_states[-1] at the
    last position, and feeds `latent_steps` vectors h·W_a rescaled to the mean input-embedding norm (W_a
    the identity without `realign`); the judger decodes greedily on that cache (none at 0 steps)."""
    from transformers import DynamicCache
    hf.resize_token_embeddings(vocab)
    w_in = hf.get_input_embeddings().weight.detach().float()
    w_out = hf.get_output_embeddings().weight.detach().float()
    w_a = (torch.linalg.solve(w_out.T @ w_out + 1e-5 * torch.eye(w_out.shape[1]), w_out.T @ w_in) if realign
           else torch.eye(w_out.shape[1]))
    target = w_in.norm(dim=1).mean()
    past = DynamicCache()

    def forward(**kw):
        length = past.get_seq_length() + (kw["input_ids"] if "input_ids" in kw else kw["inputs_embeds"]).shape[1]
        out = hf(**kw, attention_mask=torch.ones(1, length, dtype=torch.long), past_key_values=past,
                 use_cache=True, output_hidden_states=True, return_dict=True)
        return out.hidden_states[-1][:, -1], out.logits[:, -1]

    for role in lm.SENDERS:
        h, _ = forward(input_ids=torch.tensor([prompts[role]]))
        for _ in range(latent_steps):
            x = h.float() @ w_a
            x = x * (target / x.norm(dim=-1, keepdim=True).clamp_min(1e-6))
            h, _ = forward(inputs_embeds=x.to(h.dtype)[:, None])
    if latent_steps == 0:
        past = DynamicCache()  # past_for_decoding = None
    out: list[int] = []
    _, logits = forward(input_ids=torch.tensor([prompts[lm.JUDGER]]))
    while True:
        out.append(int(logits[0].argmax()))
        if out[-1] in eos or len(out) == max_new_tokens:
            return out
        _, logits = forward(input_ids=torch.tensor([[out[-1]]]))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 renames past_key_values
@pytest.mark.parametrize("setting", [("sequential", False, 3, False, False), ("sequential", True, 4, True, False),
                                     ("hierarchical", True, 2, False, False), ("hierarchical", False, 3, True, True),
                                     ("sequential", True, 3, False, True), ("sequential", True, 0, False, False)])
def test_equals_official_algorithm_on_transformers(tmp_path, setting):
    """Greedy ids equal the official HF algorithm run on transformers' own Qwen3 (no ../shared needed):
    where the latent vector comes from (after the final norm, last position), W_a and the rescale, the
    whole cache (prompts and latent steps) handed down the chain, positions continuing, the vocabulary
    cut to the tokenizer's (the model has 1,088 rows, the tokenizer 1,024), and think mode. Checked
    sensitive: one latent step less, no rescale, the pre-norm state, no vocabulary cut, the judger's
    positions restarting at 0 or only the last sender's latent KV handed over each fail 2-5 settings."""
    Qwen3ForCausalLM = pytest.importorskip("transformers").Qwen3ForCausalLM
    topology, realign, k, think, tie = setting
    d = write_tiny_qwen3(tmp_path, DEMO, tie=tie, seed=21 + tie, vocab=1088, bos=1019, eos=(1021, 1019))
    llm = LLM.load(d, dtype="float32", device="cpu")
    hf = Qwen3ForCausalLM.from_pretrained(d).float().eval()
    sps = [SamplingParams(max_new_tokens=12)] * len(SMALL_QUESTIONS)
    got = lm.run_latentmas(llm, SMALL_QUESTIONS, "gsm8k", sps, latent_steps=k, topology=topology, realign=realign,
                           think=think)
    with torch.no_grad():
        for q, res in zip(SMALL_QUESTIONS, got):
            prompts = {r: lm.agent_prompt_ids(llm, r, q, "gsm8k", topology, think) for r in (*lm.SENDERS, lm.JUDGER)}
            want = _official_hf_reference(hf, prompts, k, realign, 1024, {1021, 1019}, 12)
            assert res.token_ids == want, (q, setting)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 renames past_key_values
def test_rows_past_the_tokenizers_count_nowhere(tmp_path):
    """The official code drops the rows past the tokenizer's ids (resize_token_embeddings; Qwen3's are
    untrained) before it takes the latent target norm, W_a and the judger's logits. Here those rows are 8
    times the others, so that counting them in the mean input-embedding norm (which the random rows of
    test_equals_official_algorithm_on_transformers leave almost unchanged) changes the greedy ids."""
    Qwen3ForCausalLM = pytest.importorskip("transformers").Qwen3ForCausalLM
    from safetensors.torch import load_file, save_file
    d = write_tiny_qwen3(tmp_path, DEMO, tie=False, seed=21, vocab=1088, bos=1019, eos=(1021, 1019))
    weights = load_file(d / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        weights[name][1024:] *= 8
    save_file(weights, str(d / "model.safetensors"), metadata={"format": "pt"})
    llm = LLM.load(d, dtype="float32", device="cpu")
    hf = Qwen3ForCausalLM.from_pretrained(d).float().eval()
    got = lm.run_latentmas(llm, SMALL_QUESTIONS, "gsm8k", [SamplingParams(max_new_tokens=12)] * len(SMALL_QUESTIONS),
                           latent_steps=3)
    with torch.no_grad():
        for q, res in zip(SMALL_QUESTIONS, got):
            prompts = {r: lm.agent_prompt_ids(llm, r, q, "gsm8k", "sequential", False) for r in (*lm.SENDERS, lm.JUDGER)}
            assert res.token_ids == _official_hf_reference(hf, prompts, 3, False, 1024, {1021, 1019}, 12), q
