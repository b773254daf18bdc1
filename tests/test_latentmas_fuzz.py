"""A seeded fuzzer of LatentMAS' batch-invariance promise: through run_method, each question gets
exactly the tokens (answer, finish reason, per-agent usage) it gets alone on a one-slot engine
with no prefix cache, whatever runs beside it (CPU, float32, tiny random Qwen3).

Each workload mixes what tests/test_latentmas.py checks one at a time, on the serving engine
the judgers run on, with test_engine_fuzz.py's engine knobs (which run no request with
handed-over KV): 1-9 questions, a window of 1-5 with fewer, as many or more engine slots, refill
shares 0 / 0.5 / 1 (groups of senders of any size, slots refilled as judgers end), 0-3 latent
steps, both topologies, realignment, think, the hand-over at 0 steps, private sender questions,
questions sharing a prefix and one much longer than the rest, max_new_tokens 1-20, greedy and
seeded sampled rows side by side, ignore_eos, stop strings that occur in the output, static
(whole-batch) scheduling, bucketed static shapes, a small attention bucket (the cache grows while
judgers run), a prefix cache that is off, tiny or large, and CUDA's run-ahead emulated on CPU."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from minitflow.engine import runner
from minitflow.engine.llm import LLM
from minitflow.engine.sampler import SamplingParams
from minitflow.tflow import latentmas as lm
from minitflow.tflow.methods import run_method
from helpers import EOS, LateRing, _kv_bucket
from conftest import fuzz_seeds

WORDS = "apple box seven red blue count sum three Tom has gives left how many 12 7".split()


def _alone(model, tok, question: str, sp: SamplingParams, sender_question: str, opts: dict):
    llm = LLM(model, tok, eos_token_ids=EOS, num_slots=1, prefix_cache_bytes=0)
    return lm.run_latentmas(llm, [question], "gsm8k", [sp], sender_questions=[sender_question], **opts)[0]


def _usage(res) -> dict:
    """Per-agent usage without cached_tokens (the planner's and judger's prefix cache hits depend on what ran before)."""
    return {name: {k: v for k, v in a.as_dict().items() if k != "cached_tokens"} for name, a in res.agents.items()}


def check(parts, seed: int) -> int:
    """Run workload `seed`; assert every question matches its run alone. Returns the question count."""
    model, tok = parts
    rnd = random.Random(seed)
    n = rnd.randint(1, 9)
    base = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 8)))
    qs = [(base + " " if rnd.random() < 0.5 else "")
          + " ".join(rnd.choice(WORDS) for _ in range(rnd.choice([1, 4, 12]))) for _ in range(n)]
    if rnd.random() < 0.3:  # one question much longer than the rest
        qs[rnd.randrange(n)] += " " + " ".join(rnd.choice(WORDS) for _ in range(150))
    private = [f"Context: {rnd.randint(1, 99)} boxes. {q}" if rnd.random() < 0.3 else q for q in qs]
    opts = {"latent_steps": rnd.choice([0, 1, 3]), "topology": rnd.choice(lm.TOPOLOGIES),
            "realign": rnd.random() < 0.5, "think": rnd.random() < 0.3, "handover_at_zero": rnd.random() < 0.3}
    # run_method refuses realign without a latent step, as the command lines do (the draw stays: same stream)
    opts["realign"] = opts["realign"] and opts["latent_steps"] > 0
    sps = []
    for _ in range(n):
        m = rnd.choice([1, 2, 5, 20])
        if rnd.random() < 0.4:
            sp = SamplingParams(max_new_tokens=m, temperature=0.0)
        else:
            sp = SamplingParams(max_new_tokens=m, temperature=rnd.choice([0.5, 0.9, 1.3]), top_p=rnd.choice([1.0, 0.9]),
                                top_k=rnd.choice([0, 5]), seed=rnd.randrange(1 << 30))
        sps.append(replace(sp, ignore_eos=rnd.random() < 0.3))
    free = [_alone(model, tok, q, sp, s, opts) for q, sp, s in zip(qs, sps, private)]
    for i in range(n):  # a stop string that occurs in the answer ends some rows early
        text = free[i].answer
        if len(text) > 3 and rnd.random() < 0.3:
            a = rnd.randrange(1, len(text) - 1)
            sps[i] = replace(sps[i], stop=(text[a:a + rnd.randint(1, 3)],))
            free[i] = _alone(model, tok, qs[i], sps[i], private[i], opts)
    window = rnd.randint(1, 5)
    llm = LLM(model, tok, eos_token_ids=EOS, num_slots=max(1, window + rnd.choice([-1, 0, 0, 2])),
              static=rnd.random() < 0.2, prefix_cache_bytes=rnd.choice([0, 1 << 14, 1 << 24]))
    llm.engine.runner.static_shapes = rnd.random() < 0.3
    ahead = rnd.choice([0, 0, 1, 4])
    if ahead:
        llm.engine.ring = LateRing(ahead)
    with _kv_bucket(rnd.choice([runner.KV_BUCKET, 16, 32])):
        got = run_method("latentmas", llm, qs, sampling=sps, seeds=[sp.seed for sp in sps], batch_size=window,
                         sender_questions=private, refill_share=rnd.choice([0.0, 0.5, 1.0]), **opts)
    for i, (g, a) in enumerate(zip(got, free)):
        who = f"seed {seed} question {i}"
        assert (g.token_ids, g.answer, g.finish_reason) == (a.token_ids, a.answer, a.finish_reason), who
        assert _usage(g) == _usage(a), who
        assert 1 <= len(g.token_ids) <= sps[i].max_new_tokens and g.batch_size == window, who
    assert not llm.engine.in_flight()
    return n


@pytest.mark.parametrize("seed", fuzz_seeds(40))
def test_random_workloads_get_what_each_question_gets_alone(parts, seed):
    check(parts, seed)
