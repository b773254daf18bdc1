"""The scheduler's prefill token budget counts the tokens a step computes: prefix-cache hits
are not charged; and the runner splits a step's prefill into forwards of similar lengths (CPU,
float32, tiny random Qwen3)."""

from __future__ import annotations

import pytest
import torch

from minitflow import LLM, SamplingParams
from minitflow.engine.prefix_cache import BLOCK
from minitflow.engine.request import Request
from minitflow.engine.runner import FORWARD_TOKENS, length_groups
from minitflow.engine.scheduler import Scheduler
from minitflow.model.qwen3 import Capture
from helpers import _random_factors


def _forwards(llm: LLM) -> list[int]:
    """The tokens each prefill forward of `llm` computes, appended as they run."""
    runner, seen = llm.engine.runner, []
    forward = runner._forward
    runner._forward = lambda reqs: (seen.append(sum(runner.prefill_len(r) - r.cached_tokens for r in reqs)),
                                    forward(reqs))[1]
    return seen


def test_prefix_cache_hits_are_not_charged_against_the_prefill_budget(model):
    """Four prompts of 4 cached blocks and 5 tokens of their own, under a budget of 80 tokens: they
    compute 4 x 4 tokens, one prefill. Charged their whole 69-token prompts, one came per step."""
    g = torch.Generator().manual_seed(0)
    shared = torch.randint(0, 150, (4 * BLOCK,), generator=g).tolist()
    prompts = [shared + torch.randint(0, 150, (5,), generator=g).tolist() for _ in range(4)]
    sp = SamplingParams(max_new_tokens=6)
    alone = [LLM(model, eos_token_ids=[], num_slots=1, prefix_cache_bytes=0).generate([p], sp)[0].token_ids
             for p in prompts]
    llm = LLM(model, eos_token_ids=[], num_slots=4)
    llm.engine.scheduler.max_prefill_tokens = 80
    llm.generate([shared + [1]], SamplingParams(max_new_tokens=1))  # the shared blocks into the cache
    seen = _forwards(llm)
    reqs = llm.engine.run([Request(p, sp) for p in prompts])
    assert seen == [4 * 4] and [r.cached_tokens for r in reqs] == [4 * BLOCK] * 4
    assert [r.output_ids for r in reqs] == alone


def test_a_prompt_longer_than_the_budget_comes_alone_even_when_mostly_cached(model):
    """What the budget bounded stays bounded: a row whose keys (cached ones included) pass the
    budget never shares a prefill, though it computes only a few tokens; the short ones after it
    come together in the next step."""
    g = torch.Generator().manual_seed(1)
    shared = torch.randint(0, 150, (4 * BLOCK,), generator=g).tolist()
    long = shared + [7, 8, 9]
    llm = LLM(model, eos_token_ids=[], num_slots=4)
    llm.engine.scheduler.max_prefill_tokens = 40
    llm.generate([shared + [1]], SamplingParams(max_new_tokens=1))
    seen = _forwards(llm)
    sp = SamplingParams(max_new_tokens=2)
    reqs = llm.engine.run([Request([5, 6, 7, 8], sp), Request(long, sp), Request([9, 10, 11], sp),
                           Request([12, 13], sp)])
    assert seen == [3, 2, 2 + 1]
    assert [r.cached_tokens for r in reqs] == [0, 4 * BLOCK, 0, 0]


def test_the_scheduler_charges_what_cost_says():
    """`cost` replaces the whole prompt in the budget's count; without it the prompt is charged."""
    sched = Scheduler(4, max_prefill_tokens=10)
    for n in (8, 8, 8, 12):
        sched.add(Request(list(range(n))))
    cost = {8: 3, 12: 1}
    assert [len(r.prompt_ids) for r in sched.admit(lambda r: True, lambda r: cost[len(r.prompt_ids)])] == [8, 8, 8]
    assert [len(r.prompt_ids) for r in sched.admit(lambda r: True)] == [12]  # alone: longer than the budget


# ---- a request waits a step for the blocks a request admitted beside it is about to cache ----
def _alone(model, prompts, sps):
    return [LLM(model, eos_token_ids=[], num_slots=1, prefix_cache_bytes=0).generate([p], sp)[0].token_ids
            for p, sp in zip(prompts, sps)]


def test_samples_of_one_prompt_prefill_it_once_on_a_cold_cache(model):
    """Four samples of a 3-block prompt admitted together: the first computes all 52 prefill
    tokens, the other three wait one step and compute 4 each (their blocks from the cache). Each
    gets what it gets alone. Without waiting, all four computed 52."""
    g = torch.Generator().manual_seed(4)
    prompt = torch.randint(0, 150, (3 * BLOCK + 5,), generator=g).tolist()
    sps = [SamplingParams(max_new_tokens=5, temperature=0.8, seed=s) for s in range(4)]
    llm = LLM(model, eos_token_ids=[], num_slots=4)
    seen = _forwards(llm)
    reqs = llm.engine.run([Request(prompt, sp) for sp in sps])
    assert seen == [3 * BLOCK + 4, 3 * 4]
    assert [r.cached_tokens for r in reqs] == [0] + [3 * BLOCK] * 3
    assert [r.output_ids for r in reqs] == _alone(model, [prompt] * 4, sps)

    off = LLM(model, eos_token_ids=[], num_slots=4)
    off.engine._waits = lambda r, batch: False  # what admission did before
    seen = _forwards(off)
    off.engine.run([Request(prompt, sp) for sp in sps])
    assert seen == [4 * (3 * BLOCK + 4)]


def test_samples_do_not_wait_for_a_block_the_cache_cannot_hold(model):
    """A prefix cache with room for one block of KV: the first sample stores the prompt's first block
    and no more, so the other three take it and come together in the next step, computing the rest
    themselves. Before, each waited for the second block, which no one stores: one sample a step."""
    g = torch.Generator().manual_seed(7)
    prompt = torch.randint(0, 150, (3 * BLOCK + 5,), generator=g).tolist()
    sps = [SamplingParams(max_new_tokens=5, temperature=0.8, seed=s) for s in range(4)]
    llm = LLM(model, eos_token_ids=[], num_slots=4)
    llm.generate([[1, 2]], SamplingParams(max_new_tokens=1))  # makes the KV cache; no whole block to store
    llm.engine.prefix_cache.budget = llm.engine.runner.cache.nbytes(BLOCK) * 3 // 2
    seen = _forwards(llm)
    reqs = llm.engine.run([Request(prompt, sp) for sp in sps])
    assert seen == [3 * BLOCK + 4, 3 * (2 * BLOCK + 4)]
    assert [r.cached_tokens for r in reqs] == [0] + [BLOCK] * 3
    assert [r.output_ids for r in reqs] == _alone(model, [prompt] * 4, sps)


def test_only_requests_that_would_take_new_blocks_wait(model):
    """Admitted beside the first prompt: one sharing no whole block with it, one sharing only its
    second block (a block is keyed by its whole prefix: another chain), one whose first block is
    cached and one whose every block is. Only the one that would take blocks the first is about to
    store waits, and admission stops there, in arrival order."""
    g = torch.Generator().manual_seed(5)
    a, b, c = (torch.randint(0, 150, (BLOCK,), generator=g).tolist() for _ in range(3))
    llm = LLM(model, eos_token_ids=[], num_slots=8)
    llm.generate([c + c + [1]], SamplingParams(max_new_tokens=1))  # c + c cached
    sp = SamplingParams(max_new_tokens=2)
    first = Request(a + b + [7], sp)
    others = [Request(b + b + [8], sp), Request(c + b + [9], sp), Request(c + c + [3], sp)]
    follower, last = Request(a + b + [5, 6], sp), Request(c + [4], sp)
    seen = _forwards(llm)
    reqs = llm.engine.run([first, *others, follower, last])
    assert seen == [2 * BLOCK + 2 * BLOCK + BLOCK + 0, 1 + 0]
    assert [r.cached_tokens for r in reqs] == [0, 0, BLOCK, 2 * BLOCK, 2 * BLOCK, BLOCK]
    assert follower.admitted_t > first.admitted_t == others[-1].admitted_t


def test_a_static_batch_never_waits(model):
    """Static scheduling admits its batch at once (the old path, kept for comparison)."""
    g = torch.Generator().manual_seed(6)
    prompt = torch.randint(0, 150, (2 * BLOCK + 3,), generator=g).tolist()
    llm = LLM(model, eos_token_ids=[], num_slots=3, static=True)
    seen = _forwards(llm)
    llm.engine.run([Request(prompt, SamplingParams(max_new_tokens=2)) for _ in range(3)])
    assert seen == [3 * (2 * BLOCK + 2)]


def test_the_scheduler_stops_at_a_request_that_waits():
    sched = Scheduler(4)
    reqs = [Request([i]) for i in range(4)]
    for r in reqs:
        sched.add(r)
    assert sched.admit(lambda r: True, waits=lambda r, batch: r is reqs[2]) == reqs[:2]
    assert sched.admit(lambda r: True, waits=lambda r, batch: r is reqs[2] and bool(batch)) == reqs[2:]


# ---- LoRA requests with one key share their prompts' KV -----------------------------------------
def test_lora_requests_share_prompt_kv_only_under_one_key(model):
    """Samples of one prompt with one set of factors (one `context_key`): the first prefills, the
    others take its blocks from the cache and get what each gets alone without a cache. Other
    factors under another key, the same prompt: nothing shared (their KV differs). Factors
    without a key are never cached; a key without factors is refused."""
    from minitflow import UserError, build_lora
    from minitflow.engine.request import new_context_key
    g = torch.Generator().manual_seed(7)
    prompt = torch.randint(0, 150, (2 * BLOCK + 3,), generator=g).tolist()
    lora = build_lora(model.cfg, [_random_factors(model.cfg, 2, 4, 11)], [1.0])
    f0, f1 = lora.row(0), lora.row(1)
    sps = [SamplingParams(max_new_tokens=4, temperature=0.8, seed=s) for s in range(3)]
    alone = [LLM(model, eos_token_ids=[], num_slots=1, prefix_cache_bytes=0).generate([prompt], sp, lora=f)[0].token_ids
             for sp, f in ((sps[0], f0), (sps[1], f0), (sps[2], f1))]
    llm = LLM(model, eos_token_ids=[], num_slots=4)
    k0, k1 = new_context_key(), new_context_key()
    reqs = llm.engine.run([Request(prompt, sps[0], lora=f0, context_key=k0), Request(prompt, sps[1], lora=f0, context_key=k0),
                           Request(prompt, sps[2], lora=f1, context_key=k1)])
    assert [r.cached_tokens for r in reqs] == [0, 2 * BLOCK, 0]
    assert [r.output_ids for r in reqs] == alone
    again = llm.engine.run([Request(prompt, sps[1], lora=f0)])  # no key: the blocks under k0 are not its
    assert again[0].cached_tokens == 0 and again[0].output_ids == alone[1]
    plain = llm.engine.run([Request(prompt, SamplingParams(max_new_tokens=1))])
    assert plain[0].cached_tokens == 0  # LoRA blocks never serve a request without those factors
    with pytest.raises(UserError, match="context_key must be a key from new_context_key"):
        llm.engine.run([Request(prompt, context_key=new_context_key())])


def test_handed_over_kv_requests_share_prompt_kv_only_under_one_key(model):
    """Judgers of one senders' run (latentmas' samples): requests with one handed-over KV and one
    `context_key` share their prompt's blocks, read from the slot after that KV. Each gets what it
    gets alone without a cache; without a key nothing is cached."""
    from minitflow.engine.request import new_context_key
    cfg, g = model.cfg, torch.Generator().manual_seed(3)
    past = tuple(torch.randn(cfg.num_hidden_layers, cfg.num_key_value_heads, 5, cfg.head_dim, generator=g)
                 for _ in range(2))
    prompt = torch.randint(0, 150, (2 * BLOCK + 3,), generator=g).tolist()
    sps = [SamplingParams(max_new_tokens=6, temperature=0.8, seed=s) for s in range(3)]
    alone = [LLM(model, eos_token_ids=[], num_slots=1, prefix_cache_bytes=0).engine.run(
        [Request(prompt, sp, past=past)])[0].output_ids for sp in sps]
    assert len(set(map(tuple, alone))) > 1
    llm = LLM(model, eos_token_ids=[], num_slots=3)
    key = new_context_key()
    reqs = llm.engine.run([Request(prompt, sp, past=past, context_key=key) for sp in sps])
    assert [r.cached_tokens for r in reqs] == [0, 2 * BLOCK, 2 * BLOCK]
    assert [r.output_ids for r in reqs] == alone
    again = llm.engine.run([Request(prompt, sps[0], past=past)])  # no key: not its blocks, nor stored
    assert again[0].cached_tokens == 0 and again[0].output_ids == alone[0]


def test_a_context_key_is_one_context(model):
    """A key brought back with other factors or other handed-over KV would take the first
    context's prompt KV without a word: refused, before it runs."""
    from minitflow import UserError, build_lora
    from minitflow.engine.request import new_context_key
    cfg, prompt = model.cfg, list(range(10, 10 + BLOCK + 2))
    lora = build_lora(cfg, [_random_factors(cfg, 2, 4, 11)], [1.0])
    past = tuple(torch.zeros(cfg.num_hidden_layers, cfg.num_key_value_heads, 3, cfg.head_dim) for _ in range(2))
    llm, sp = LLM(model, eos_token_ids=[], num_slots=2), SamplingParams(max_new_tokens=1)
    k_lora, k_past = new_context_key(), new_context_key()
    f0 = lora.row(0)
    llm.engine.run([Request(prompt, sp, lora=f0, context_key=k_lora), Request(prompt, sp, past=past, context_key=k_past)])
    llm.engine.run([Request(prompt, sp, lora=f0, context_key=k_lora)])  # the same objects: fine
    for bad in (dict(lora=lora.row(1), context_key=k_lora), dict(lora=lora.row(0), context_key=k_lora),
                dict(past=tuple(t.clone() for t in past), context_key=k_past),
                dict(lora=f0, past=past, context_key=k_lora), dict(past=past, context_key=k_lora)):
        with pytest.raises(UserError, match="came with other LoRA factors or handed-over KV"):
            llm.engine.add_request(Request(prompt, sp, **bad))
    assert not llm.engine.has_unfinished()
    k_new, bad_past = new_context_key(), tuple(t[:, :1] for t in past)  # one KV head: not the model's
    with pytest.raises(UserError, match="does not fit the model"):
        llm.engine.add_request(Request(prompt, sp, past=bad_past, context_key=k_new))
    llm.engine.run([Request(prompt, sp, past=past, context_key=k_new)])  # a refused request took no key
    with pytest.raises(UserError, match="without either"):
        llm.engine.add_request(Request(prompt, sp, context_key=new_context_key()))


def test_prefix_cache_chains_under_other_roots_never_meet():
    from minitflow.engine.prefix_cache import PrefixCache
    pc = PrefixCache(1 << 20)
    ids = list(range(2 * BLOCK + 1))
    kv = lambda a, b: (torch.zeros(1, 1, b - a, 2), torch.zeros(1, 1, b - a, 2))  # noqa: E731
    pc.insert(ids, kv, root=-3)
    assert len(pc.chain(ids, len(ids), root=-3)) == 2  # blocks
    assert pc.chain(ids, len(ids)) == [] and pc.chain(ids, len(ids), root=-4) == []
    assert pc.lookup(ids, len(ids), root=-4)[0] == 0


def test_length_groups_minimise_padded_token_rows_plus_a_cost_per_forward():
    # one long prompt beside fifteen short ones: its own forward (1,504 token-rows + 2 x 128, not 16,384 + 128)
    assert length_groups([32] * 7 + [1024] + [32] * 8, FORWARD_TOKENS) == [[0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15], [7]]
    assert length_groups([5, 5, 5], 128) == [[0, 1, 2]] and length_groups([], 128) == []
    assert length_groups([40, 10, 30, 20], overhead=0) == [[1], [3], [2], [0]]  # padding only: one per length
    assert length_groups([40, 10, 30, 20], overhead=10**9) == [[0, 1, 2, 3]]  # forwards only: one padded forward
    # near lengths share (3 x 100 + 128 < 2 x 100 + 10 + 2 x 128), the 200 does not (4 x 200 + 128 > 428 + 328)
    assert length_groups([100, 90, 10, 200], 128) == [[0, 1, 2], [3]]
    lens = torch.randint(1, 600, (24,), generator=torch.Generator().manual_seed(3)).tolist()
    groups = length_groups(lens, FORWARD_TOKENS)
    assert sorted(i for g in groups for i in g) == list(range(24))
    cost = sum(FORWARD_TOKENS + len(g) * max(lens[i] for i in g) for g in groups)
    assert cost <= FORWARD_TOKENS + 24 * max(lens)  # never worse than one padded forward
    assert cost < 0.7 * 24 * max(lens)


def test_prompts_of_very_different_lengths_prefill_in_forwards_of_similar_lengths(model):
    """One long prompt admitted beside short ones runs in a forward of its own (the padded
    forward computed rows x the longest), and every request gets the tokens it gets alone; a
    capture split across the forwards takes the hidden states it takes alone."""
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 150, (n,), generator=g).tolist() for n in (6, 300, 5, 7, 6)]
    sp = SamplingParams(max_new_tokens=4)
    alone = [LLM(model, eos_token_ids=[], num_slots=1, prefix_cache_bytes=0).generate([p], sp)[0].token_ids
             for p in prompts]
    llm = LLM(model, eos_token_ids=[], num_slots=5, prefix_cache_bytes=0)
    runner, shapes = llm.engine.runner, []
    forward = runner._forward
    runner._forward = lambda reqs: (shapes.append(sorted(runner.prefill_len(r) for r in reqs)), forward(reqs))[1]
    reqs = llm.engine.run([Request(p, sp) for p in prompts])
    assert shapes == [[4, 5, 5, 6], [299]]  # one admission (5 slots, 322 tokens under the budget), two forwards
    assert [r.output_ids for r in reqs] == alone
    layers = [0, 1, model.cfg.num_hidden_layers]
    spans = [(1, 5), (2, 290), (0, 5), (3, 7), (1, 6)]
    shapes.clear()
    caps = [Request(p, capture=Capture(layers, [s], [e]), generate=False) for p, (s, e) in zip(prompts, spans)]
    llm.engine.run(caps)
    assert shapes == [[5, 6, 6, 7], [300]]
    for p, (s, e), r in zip(prompts, spans, caps):
        one = LLM(model, eos_token_ids=[], num_slots=1, prefix_cache_bytes=0)
        want = one.engine.run([Request(p, capture=Capture(layers, [s], [e]), generate=False)])[0]
        # within float32's rounding over other row counts (a row mixed up with another is off by ~1)
        assert r.capture.lengths == [e - s]
        torch.testing.assert_close(r.capture.hidden, want.capture.hidden, rtol=0, atol=1e-5)
