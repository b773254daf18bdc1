"""The scheduler's prefill token budget counts the tokens a step computes: prefix-cache hits
are not charged (CPU, float32, tiny random Qwen3)."""

from __future__ import annotations

import pytest
import torch

from minitflow import LLM, SamplingParams
from minitflow.engine.prefix_cache import BLOCK
from minitflow.engine.request import Request
from minitflow.engine.scheduler import Scheduler
from minitflow.model.weights import load_model


@pytest.fixture(scope="module")
def model(sharp_dir):
    return load_model(sharp_dir, torch.float32, "cpu")


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
