"""A seeded fuzzer of the request pipelines (tflow, textmas) on the serving engine: each question
gets exactly the tokens, text and finish reason it gets alone, in a fresh engine without a
prefix cache, whatever runs beside it (CPU, float32, tiny random Qwen3 with conftest's sharp
weights).

Each workload draws what test_tflow.py's golden tests take one at a time: 3-9 questions, some
repeated, some sharing a long prefix inside the senders' question span (the condition rows the
prefix cache keeps), private sender contexts, per-question max_tokens 1-12, greedy and seeded
rows, stop strings, 1-8 slots, 1-6 questions in flight, refill shares, generator batches,
static scheduling, a small prefill budget, the CUDA-graph step's bucketed shapes and CUDA's
run-ahead (tokens read steps late; both emulated as test_engine_fuzz.py does), and a prefix
cache that is off, one block, a few blocks (evicting mid-run) or large; each run twice on one
LLM (cold, then warm), the questions shuffled. After every run nothing is left in flight, every
slot is free and the prefix cache's byte count is its entries' and within its budget.

The text is made by a word tokenizer (crc32 of each word), so prompts fit the tiny model's 512
positions; the generator is random, scaled so that its LoRA changes the receiver's tokens and
a condition row moved by one position changes them too (at random init its factors are ~0: a
wrong condition row would not show).
"""

from __future__ import annotations

import random

import pytest
import torch

from minitflow import LLM, SamplingParams, build_lora
from minitflow.engine.prefix_cache import BLOCK
from minitflow.errors import UserError
from minitflow.tflow import prompts
from minitflow.tflow.condition import sender_request
from minitflow.tflow.methods import chat, positions_needed, run_method
from helpers import EOS, LateRing, WordTokenizer, _block_bytes, _clean, _random_factors, _word_llm
from conftest import fuzz_seeds

WORDS = "apple seven train clips friends April May half legs spiders prime above ten".split()


def _workload(rng: random.Random, method: str):
    shared = " ".join(rng.choice(WORDS) for _ in range(3 * BLOCK))  # a 4-shot block: inside the senders' span
    qs = [(shared + " " if rng.random() < 0.6 else "") + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20)))
          for _ in range(rng.randint(3, 7))]
    qs += qs[:rng.randint(0, 2)]  # the same question twice: its requests may prefill in one step
    senders = [rng.choice(["", "context " * rng.randint(1, 20)]) + q for q in qs] if rng.random() < 0.5 else None
    sps = [SamplingParams(max_new_tokens=rng.randint(1, 12), temperature=rng.choice([0.0, 0.8]), top_p=0.9,
                          top_k=rng.choice([0, 20]), seed=rng.randint(0, 99),
                          stop=[f"w{rng.randint(0, 149)}"] if rng.random() < 0.3 else [])
           for _ in qs]
    opts = {"generator_batch": rng.choice([1, 2, None])} if method == "tflow" else \
        {"sender_max_new_tokens": rng.randint(1, 6)}
    return qs, senders, sps, opts


def _run(llm, method, generator, qs, senders, sps, order, **kw):
    pick = (lambda xs: None if xs is None else [xs[i] for i in order])
    res = run_method(method, llm, pick(qs), sampling=pick(sps), seeds=[sps[i].seed for i in order],
                     sender_questions=pick(senders), generator=generator, **kw)
    return [(r.token_ids, r.answer, r.finish_reason) for r in res]


@pytest.mark.parametrize("seed", fuzz_seeds(5))
@pytest.mark.parametrize("method", ["tflow", "textmas"])
def test_each_question_gets_what_it_gets_alone(model, generator, method, seed):
    rng = random.Random(1000 * seed + len(method))
    qs, senders, sps, opts = _workload(rng, method)
    alone = [_run(_word_llm(model), method, generator, qs, senders, sps, [i], **opts)[0] for i in range(len(qs))]
    block = _block_bytes(model)
    for _ in range(3):
        slots, cache = rng.randint(1, 8), rng.choice([0, block, 3 * block, 6 * block, 1 << 30])
        llm = _word_llm(model, slots, cache, static=rng.random() < 0.2)
        llm.engine.scheduler.max_prefill_tokens = rng.choice([8192, 100])
        llm.engine.runner.static_shapes = rng.random() < 0.3  # the CUDA-graph step's bucketed rows and length
        run_ahead = rng.choice([0, 0, 1, 4])
        if run_ahead:  # tokens read steps late, as on CUDA
            llm.engine.ring = LateRing(run_ahead)
        order = rng.sample(range(len(qs)), len(qs))
        kw = dict(batch_size=rng.randint(1, 6), refill_share=rng.choice([None, 0.0, 0.5, 1.0]), **opts)
        for warm in (False, True):
            got = _run(llm, method, generator, qs, senders, sps, order, **kw)
            assert got == [alone[i] for i in order], (slots, cache, order, kw, warm, run_ahead)
            _clean(llm, slots, cache)
        if cache >= 3 * block:
            assert llm.engine.prefix_cache.entries, "the prefix cache took no block: the fuzz tests no reuse"


def test_the_generated_lora_changes_the_receivers_tokens(model, generator):
    """What makes the fuzz above see a wrong condition row or factor: the receiver's tokens with
    its generated LoRA differ from its tokens without it, and between questions."""
    qs = ["apple seven train", "clips friends April May half legs", "spiders prime above ten"]
    sp = SamplingParams(max_new_tokens=8)
    llm = _word_llm(model)
    tflow = [r.token_ids for r in run_method("tflow", llm, qs, sampling=sp, generator=generator, batch_size=3)]
    bare = [g.token_ids for g in llm.generate([chat(llm, prompts.tflow_agents("gsm8k")[2], q) for q in qs], sp)]
    assert all(t != b for t, b in zip(tflow, bare)) and len({tuple(t) for t in tflow}) == len(qs)


def test_no_receivers_lora_stays_held_by_unread_junk_steps_after_run_method(model, generator, monkeypatch):
    """On CUDA up to RUN_AHEAD junk steps of the last receivers stay unread when run_method returns;
    they named those requests, which held their generated LoRA factors until the next step. They
    name none once nothing is in flight: the factors go with the run, and the junk is still read."""
    import gc
    import weakref

    from minitflow.tflow import methods

    factors = []  # each receiver's own factors (views of its generator call's)
    add = methods._Pipeline.add

    def watch(self, q, agent, req):
        factors.extend(weakref.ref(a) for layer in (req.lora.layers if req.lora else []) for a, _ in layer.values())
        add(self, q, agent, req)

    monkeypatch.setattr(methods._Pipeline, "add", watch)
    llm = _word_llm(model, slots=4)
    llm.engine.ring = LateRing(4)
    qs = ["apple seven train", "clips friends April May half legs"]
    run_method("tflow", llm, qs, sampling=SamplingParams(max_new_tokens=3), generator=generator, batch_size=2)
    gc.collect()
    assert factors and all(f() is None for f in factors)
    assert llm.engine.ring.pending  # the junk steps themselves are still there, read by the next step
    _clean(llm, 4, 0)
    assert llm.generate([[5, 6, 7]], SamplingParams(max_new_tokens=2))[0].token_ids == \
        _word_llm(model, slots=1).generate([[5, 6, 7]], SamplingParams(max_new_tokens=2))[0].token_ids


@pytest.mark.parametrize("budget_blocks", [1, 2, 40])
def test_condition_rows_from_the_prefix_cache_are_the_computed_ones(model, generator, budget_blocks):
    """A sender whose question span starts inside a cached prefix takes that prefix's KV and its
    condition rows from the cache: in float32 its condition is bitwise the one computed without a
    cache, also where a tiny budget evicts blocks between the two senders."""
    w = generator.pg_layer_aggregator.weights().float()
    system = prompts.tflow_agents("gsm8k")[0]
    shared = " ".join(random.Random(1).choice(WORDS) for _ in range(70))

    def condition(llm, question):
        req = sender_request(llm, system, question, w)
        llm.engine.run([req])
        return req.capture.hidden, req.cached_tokens, req.capture.starts[0]

    cold, n, _ = condition(_word_llm(model), shared + " gamma delta")
    assert n == 0
    llm = _word_llm(model, cache=budget_blocks * _block_bytes(model) + 4096)  # a block's KV, and rows beside it
    condition(llm, shared + " alpha beta")
    warm, n, start = condition(llm, shared + " gamma delta")
    assert torch.equal(warm, cold)
    if budget_blocks == 40:
        assert n > start + BLOCK, (n, start)  # rows of whole blocks inside the span came from the cache
    _clean(llm, 2, budget_blocks * _block_bytes(model) + 4096)


def test_tflow_senders_take_a_shared_blocks_condition_rows_from_the_prefix_cache(model, generator):
    """run_method's senders sum the layers with the generator's weights. The engine keeps condition
    rows only under weights whose version counter shows a change in place, which an inference
    tensor has not (a sweep's changed weights were served the old rows): tflow makes its weights
    under no_grad, so the 4-shot block inside the second question's span still comes from the cache."""
    from minitflow.tflow.condition import encode_with_span, sender_prompt
    shared = " ".join(random.Random(2).choice(WORDS) for _ in range(3 * BLOCK))
    qs = [shared + " alpha", shared + " beta gamma"]
    kw = dict(sampling=SamplingParams(max_new_tokens=3), generator=generator, batch_size=1)
    llm = _word_llm(model, cache=1 << 30)
    res = run_method("tflow", llm, qs, **kw)
    text = sender_prompt(prompts.tflow_agents("gsm8k")[0], qs[1])
    _, start, _ = encode_with_span(llm, text, qs[1])
    assert res[1].agents["sender_A"].cached_tokens >= start + 2 * BLOCK
    assert [r.token_ids for r in res] == [run_method("tflow", _word_llm(model), [q], **kw)[0].token_ids for q in qs]


@pytest.mark.parametrize("method", ["baseline", "textmas", "tflow"])
def test_a_question_too_long_is_refused_before_any_request_runs(model, generator, method):
    """The engine refuses a request only at its turn: a question too long for the LLM's positions
    failed after every question before it had run (their results lost; tflow's after its own
    senders and generator too). Now nothing runs, the error names the question, and the LLM
    runs the others as they run alone."""
    qs = ["apple seven", "train " * 250, "May half"]
    sp = SamplingParams(max_new_tokens=4)
    kw = dict(sampling=sp, generator=generator, sender_max_new_tokens=3)
    llm = _word_llm(model, slots=2, cache=1 << 30, max_seq_len=256)
    done = []
    limit = " and sender_max_new_tokens 3" if method == "textmas" else ""
    with pytest.raises(UserError, match=rf"^question 1: its {method} prompts need \d+ positions with max_new_tokens 4"
                                        rf"{limit}, more than max_seq_len 256$"):
        run_method(method, llm, qs, batch_size=1, on_result=lambda i, r: done.append(i), **kw)
    assert done == [] and llm.engine.steps == 0 and not llm.engine.prefix_cache.entries
    _clean(llm, 2, 1 << 30)
    alone = [run_method(method, _word_llm(model), [q], **kw)[0].token_ids for q in (qs[0], qs[2])]
    assert [r.token_ids for r in run_method(method, llm, [qs[0], qs[2]], batch_size=2, **kw)] == alone


def test_a_textmas_receiver_refused_mid_run_leaves_the_llm_clean(model):
    """The one prompt no check before the run can size (the textmas receiver's holds its senders'
    texts) is refused when its turn comes: loudly, naming the question, with no slot, request or
    prefix-cache byte left behind, and the next run gets what each question gets alone."""
    qs = ["apple seven train", "clips friends April May"]
    sp = SamplingParams(max_new_tokens=4, ignore_eos=True)
    need = max(positions_needed("textmas", WordTokenizer().encode, "gsm8k", q, q, 4, sender_max_new_tokens=8)
               for q in qs)
    llm = _word_llm(model, slots=3, cache=4 * _block_bytes(model), max_seq_len=need + 4)  # the texts add 16 tokens
    with pytest.raises(UserError, match=r"\(question [01], Summarizer\): .*its prompt holds the senders' texts"):
        run_method("textmas", llm, qs, sampling=sp, batch_size=2, sender_max_new_tokens=8)
    _clean(llm, 3, 4 * _block_bytes(model))
    alone = [run_method("textmas", _word_llm(model), [q], sampling=sp, sender_max_new_tokens=2)[0].token_ids
             for q in qs]
    assert [r.token_ids for r in run_method("textmas", llm, qs, sampling=sp, batch_size=2,
                                            sender_max_new_tokens=2)] == alone


@pytest.mark.parametrize("method", ["tflow", "textmas"])
def test_an_interrupt_mid_run_leaves_the_llm_clean(model, generator, method):
    """Ctrl-C (here from on_result, with tokens read two steps late as on CUDA) while other
    questions are in flight: it propagates, their requests go, no slot or unread step is left,
    and the next run gets what each question gets alone."""
    qs = ["apple seven", "train clips", "May half legs", "ten"]
    kw = dict(sampling=SamplingParams(max_new_tokens=6), generator=generator, sender_max_new_tokens=3)
    llm = _word_llm(model, slots=3, cache=1 << 30)
    llm.engine.ring = LateRing(2)

    def interrupt(i, result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_method(method, llm, qs, batch_size=2, on_result=interrupt, **kw)
    _clean(llm, 3, 1 << 30)
    assert not llm.engine.ring.pending
    alone = [run_method(method, _word_llm(model), [q], seeds=[i], **kw)[0].token_ids for i, q in enumerate(qs)]
    assert [r.token_ids for r in run_method(method, llm, qs, batch_size=2, **kw)] == alone


@pytest.mark.parametrize("method", ["baseline", "tflow", "textmas", "latentmas"])
def test_a_generate_from_on_result_that_fails_ends_the_run_in_one_line(model, generator, parts, method, monkeypatch):
    """A generate() from on_result that fails inside a step (NaN logits, here from NaN LoRA
    factors) aborts every request in flight, the run's too. A caller that caught its error went
    back to a run whose questions could never finish: run_method stepped an empty engine forever.
    Now the run stops with one line, and the LLM runs on."""
    if method == "latentmas":
        llm = LLM(parts[0], parts[1], eos_token_ids=EOS, num_slots=3)
    else:
        llm = _word_llm(model, slots=3, cache=1 << 30)
    row = build_lora(llm.cfg, [_random_factors(llm.cfg, 1, 4, 2)], [1.0])
    a, bs = row.layers[0]["down"]
    row.layers[0]["down"] = (a, tuple(torch.full_like(b, float("nan")) for b in bs))
    real, steps, caught = llm.engine.step, [], []

    def bounded():
        steps.append(1)
        assert len(steps) < 500, "run_method waits forever for its aborted questions"
        return real()

    def on_result(i, result):
        if not caught and llm.engine.in_flight():  # other questions of the run are in flight
            with pytest.raises(UserError, match="logits are NaN"):
                llm.generate([[4, 5, 6]], SamplingParams(max_new_tokens=2), lora=row)
            caught.append(i)

    monkeypatch.setattr(llm.engine, "step", bounded)
    qs = ["apple seven", "train clips", "May half legs", "ten"]
    sps = [SamplingParams(max_new_tokens=m, ignore_eos=True) for m in (1, 6, 2, 6)]  # others in flight at the first
    kw = dict(sampling=sps, generator=generator, batch_size=2,
              **{"latentmas": dict(latent_steps=1), "textmas": dict(sender_max_new_tokens=3)}.get(method, {}))
    with pytest.raises(UserError, match=r"^this run's requests were aborted under it \(by a call to this LLM from "):
        run_method(method, llm, qs, on_result=on_result, **kw)
    assert caught and not llm.has_unfinished()
    fresh = LLM(parts[0], parts[1], eos_token_ids=EOS, num_slots=3) if method == "latentmas" else _word_llm(model, 3)
    assert [r.token_ids for r in run_method(method, llm, qs, **kw)] == \
        [r.token_ids for r in run_method(method, fresh, qs, **kw)]
