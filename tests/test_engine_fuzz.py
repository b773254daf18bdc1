"""A seeded fuzzer of the engine's batch-invariance promise: a request gets exactly the tokens
(and finish reason, text and token counts) it gets alone in a fresh one-slot engine, whatever
runs beside it and whenever it arrives (CPU, float32, tiny random Qwen3).

Each workload mixes what the hand-picked tests in test_serving.py take one or two at a time:
1-5 slots, static (whole-batch) scheduling, bucketed static shapes (the compiled / CUDA-graph
decode path, run eagerly here), a prefix cache that is off, tiny (evicting) or large, prompts
sharing prefixes of 0-3 blocks, max_tokens 1..40, greedy and seeded sampled rows side by side,
ignore_eos, vocab_rows, EOS ids and stop strings that do occur in the outputs, per-slot LoRA
factors of two layouts on some rows, prefill-only neighbours, requests arriving between steps or
run through Engine.run mid-flight, a small prefill budget, a small attention bucket (the cache
grows while others run) and CUDA's run-ahead (tokens read steps late), emulated on CPU.

The model's weights are 3x conftest's: at 1x greedy rows repeat one token, and a planted bug
(the prefix cache storing a block's last, not yet written, key) went unseen in 150 workloads."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest

from minitflow import LLM, SamplingParams, build_lora
from minitflow.engine import runner
from minitflow.engine.prefix_cache import BLOCK
from minitflow.engine.request import Request, Status
from minitflow.engine.runner import ModelRunner
from helpers import LateRing, _kv_bucket, _random_factors
from conftest import fuzz_seeds

VOCAB = 150  # prompt ids below the tiny model's EOS (159) and BOS (158)


class PieceTokenizer:
    """Text for token ids: each id a piece of 1-3 letters of a five-letter alphabet, so short stop
    strings occur in outputs, also across token boundaries. No id is special (Tokenizer.special_ids)."""

    special_ids: frozenset[int] = frozenset()

    def decode(self, ids: list[int]) -> str:
        return "".join("abcde"[i % 5] * (1 + i // 5 % 3) for i in ids)


@dataclass
class Workload:
    slots: int
    static: bool  # the scheduler's whole-batch mode
    static_shapes: bool  # bucketed rows and attention length (compile / CUDA graphs), run eagerly
    cache_bytes: int
    max_len: int
    eos: list[int]
    prompts: list[list[int]]
    params: list[SamplingParams]
    lora: list  # LoraWeights row or None per request
    arrive: list[int]  # the step before which each request is added
    kv_bucket: int  # runner.KV_BUCKET: small ones make the cache grow and static shapes cross buckets
    prefill_budget: int  # the scheduler's max_prefill_tokens: small ones split an admission over steps
    generate: list[bool]  # False: a prefill-only request (a sender's forward pass) beside the others
    run_ahead: int  # steps the host reads tokens late, as on CUDA (finished rows run junk steps meanwhile)
    blocking: list[bool]  # True: run to its end through Engine.run when it arrives


def _engine(model, w: Workload, alone: bool = False) -> LLM:
    if alone:
        return LLM(model, PieceTokenizer(), eos_token_ids=w.eos, num_slots=1, prefix_cache_bytes=0,
                   max_seq_len=w.max_len)
    llm = LLM(model, PieceTokenizer(), eos_token_ids=w.eos, num_slots=w.slots, static=w.static,
              prefix_cache_bytes=w.cache_bytes, max_seq_len=w.max_len)
    llm.engine.runner.static_shapes = w.static_shapes
    llm.engine.scheduler.max_prefill_tokens = w.prefill_budget
    if w.run_ahead:
        llm.engine.ring = LateRing(w.run_ahead)
    return llm


def _alone(model, w: Workload) -> list[Request]:
    out = []
    with _kv_bucket(w.kv_bucket):
        for p, sp, lo, gen in zip(w.prompts, w.params, w.lora, w.generate):
            req = Request(p, sp, lora=lo, generate=gen)
            _engine(model, w, alone=True).engine.run([req])
            out.append(req)
    return out


def workload(model, seed: int) -> Workload:
    """A random workload whose EOS ids and stop strings are taken from its requests' own
    outputs (run alone first), so that some rows do stop on them."""
    rnd = random.Random(seed)
    n = rnd.randint(3, 9)
    max_len = rnd.choice([64, 96, 128, 200])
    bases = [[rnd.randrange(VOCAB) for _ in range(rnd.choice([0, BLOCK - 1, BLOCK, BLOCK + 3, 2 * BLOCK, 3 * BLOCK]))]
             for _ in range(2)]
    senders = [_random_factors(model.cfg, n, 4, seed), _random_factors(model.cfg, n, 4, seed + 1)]
    loras = [build_lora(model.cfg, senders, [1.0, 1.0]),  # and another layout, which waits for the first's rows
             build_lora(model.cfg, [_random_factors(model.cfg, n, 2, seed + 2)], [0.5])]
    other = rnd.random() < 0.3
    prompts, params, rows = [], [], []
    for i in range(n):
        base = rnd.choice(bases)
        p = base[: rnd.choice([len(base), len(base), rnd.randint(0, len(base))])] + [rnd.randrange(VOCAB) for _ in range(rnd.randint(1, 20))]
        if prompts and rnd.random() < 0.25:  # an earlier prompt again, or cut to whole blocks and extended
            p = list(rnd.choice(prompts))
            if rnd.random() < 0.6:
                p = p[:max(len(p) // BLOCK, 1) * BLOCK] + [rnd.randrange(VOCAB) for _ in range(rnd.randint(0, 5))]
        if len(p) >= BLOCK and rnd.random() < 0.25:  # whole blocks: the last one holds the token decode runs
            p = p[:len(p) // BLOCK * BLOCK]
        if rnd.random() < 0.05:  # a long prompt: the cache grows while others run
            p = p + [rnd.randrange(VOCAB) for _ in range(max_len - 45 - len(p))]
        p = p[: max_len - 2]
        m = max(1, min(rnd.randint(1, 40), max_len - len(p)))
        if rnd.random() < 0.4:
            sp = SamplingParams(max_new_tokens=m)
        else:
            sp = SamplingParams(max_new_tokens=m, temperature=rnd.choice([0.3, 0.8, 1.0, 1.5]),
                                top_p=rnd.choice([1.0, 0.95, 0.7, 0.3]), top_k=rnd.choice([0, 0, 1, 3, 20]),
                                seed=rnd.randrange(1 << 20))
        if rnd.random() < 0.2:
            sp = replace(sp, ignore_eos=True)
        if rnd.random() < 0.15:  # only the first ids may be chosen (LatentMAS's judger)
            sp = replace(sp, vocab_rows=rnd.choice([1, 40, 120]))
        prompts.append(p), params.append(sp), rows.append(
            rnd.choice(loras[:1 + other]).row(i) if rnd.random() < 0.3 else None)
    w = Workload(slots=rnd.randint(1, 5), static=rnd.random() < 0.2, static_shapes=rnd.random() < 0.3,
                 cache_bytes=rnd.choice([0, 1 << 24, 3 * 2 * 2 * 2 * BLOCK * 16 * 4, 2 * 2 * 2 * BLOCK * 16 * 4]),
                 max_len=max_len, eos=[], prompts=prompts, params=params, lora=rows,
                 arrive=[rnd.choice([0, 0, rnd.randint(0, 30)]) for _ in range(n)],
                 kv_bucket=rnd.choice([runner.KV_BUCKET, 16, 32]), prefill_budget=rnd.choice([8192, 8192, 40]),
                 generate=[rnd.random() > 0.1 for _ in range(n)], run_ahead=rnd.choice([0, 0, 1, 4]),
                 blocking=[rnd.random() < 0.1 for _ in range(n)])
    free = [r.output_ids for r in _alone(model, w)]
    long = [i for i, out in enumerate(free) if len(out) > 2]
    for i in rnd.sample(long, min(len(long), rnd.randint(0, 2))):  # an id inside the output ends it there
        w.eos.append(rnd.choice(free[i][1:-1]))
    for i in rnd.sample(long, min(len(long), rnd.randint(0, 3))):  # a stop string that occurs in it
        text = PieceTokenizer().decode(free[i])
        a = rnd.randrange(1, len(text) - 1)
        stops = (text[a:a + rnd.randint(1, 4)],) + (("zz",) if rnd.random() < 0.5 else ())
        w.params[i] = replace(w.params[i], stop=stops)
    return w


def run_workload(model, w: Workload) -> list[Request]:
    """The workload through one engine, each request added before its arrival step."""
    with _kv_bucket(w.kv_bucket):
        return _run(model, w)


def _run(model, w: Workload) -> list[Request]:
    """Requests added between steps; a `blocking` one runs through Engine.run at its arrival (as
    a generate() inside run_method's on_result does), the others advancing meanwhile. step()
    must return each added request exactly once, and none that run() returned."""
    llm = _engine(model, w)
    reqs = [Request(p, sp, lora=lo, generate=gen, tag=i)
            for i, (p, sp, lo, gen) in enumerate(zip(w.prompts, w.params, w.lora, w.generate))]
    step, pending, returned = 0, sorted(range(len(reqs)), key=lambda i: w.arrive[i]), []
    while pending or llm.has_unfinished():
        while pending and w.arrive[pending[0]] <= step:
            i = pending.pop(0)
            if w.blocking[i]:
                assert llm.engine.run([reqs[i]]) == [reqs[i]] and reqs[i].finished
            else:
                llm.engine.add_request(reqs[i])
        returned += [r.tag for r in llm.step()]
        step += 1
        assert step < 2000, "the engine stopped making progress"
    assert sorted(returned) == [i for i in range(len(reqs)) if not w.blocking[i]], returned
    return reqs


def _common_blocks(a: list[int], b: list[int]) -> int:
    n = 0
    while n + BLOCK <= min(len(a), len(b)) and a[n:n + BLOCK] == b[n:n + BLOCK]:
        n += BLOCK
    return n


def check(model, seed: int) -> int:
    """Run workload `seed`; assert every request matches its run alone. Returns the request count."""
    w = workload(model, seed)
    want = _alone(model, w)
    got = run_workload(model, w)
    for g, a in zip(got, want):
        who = f"seed {seed} request {g.tag}"
        assert g.status is Status.FINISHED, who
        assert (g.output_ids, g.finish_reason, g.text) == (a.output_ids, a.finish_reason, a.text), who
        assert len(g.output_ids) <= g.sampling.max_new_tokens, who
    # cached tokens: whole blocks of the prompt but its last token, never more than an earlier
    # admission's prefill wrote (and with a cache that never evicts, exactly that)
    for g in got:
        earlier = [o for o in got if o.admitted_t < g.admitted_t and o.lora is None]
        bound = max([_common_blocks(o.prompt_ids[:ModelRunner.prefill_len(o)], g.prompt_ids[:len(g.prompt_ids) - 1])
                     for o in earlier], default=0)
        if g.lora is not None or w.cache_bytes == 0:
            bound = 0
        assert g.cached_tokens % BLOCK == 0 and g.cached_tokens <= bound, (seed, g.tag, g.cached_tokens, bound)
        if w.cache_bytes == 1 << 24:
            assert g.cached_tokens == bound, (seed, g.tag, g.cached_tokens, bound)
    return len(got)


@pytest.mark.parametrize("seed", fuzz_seeds(60))
def test_random_workloads_get_what_each_request_gets_alone(model, seed):
    check(model, seed)


def test_fuzz_seeds_take_a_side_runs_range_and_refuse_a_bad_one(monkeypatch):
    monkeypatch.delenv("MINITFLOW_FUZZ_SEEDS", raising=False)
    assert fuzz_seeds(60) == range(60)
    monkeypatch.setenv("MINITFLOW_FUZZ_SEEDS", "60:1060")
    assert fuzz_seeds(60) == range(60, 1060) and fuzz_seeds(3) == range(60, 1060)
    for bad in ("1000", "5:3", "4:4", "a:b", "-1:5"):
        monkeypatch.setenv("MINITFLOW_FUZZ_SEEDS", bad)
        with pytest.raises(pytest.UsageError, match="give A:B"):
            fuzz_seeds(60)
