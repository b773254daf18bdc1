"""run_method's `samples`: K outputs per question, sample j of question i exactly what question i
gives alone with samples=1 and seed sample_seed(seeds[i], j), whatever runs beside it (baseline,
tflow, textmas, latentmas; seeded sampling; several slot counts and windows); tflow runs its
senders and generator once per question; bad `samples` are refused before any request.
The pipelines and model are test_pipeline_fuzz.py's (word tokenizer, sharp tiny Qwen3)."""

from __future__ import annotations

import random

import pytest

from minitflow import SamplingParams
from minitflow.engine.llm import LLM
from minitflow.errors import UserError
from minitflow.tflow import methods
from minitflow.tflow.methods import SAMPLE_STRIDE, SEEDS, run_method, sample_seed
from test_latentmas_fuzz import EOS, parts  # noqa: F401  (a fixture)
from test_pipeline_fuzz import _block_bytes, _clean, _llm, generator, model  # noqa: F401  (fixtures)

K = 3


def _workload(rng: random.Random, method: str):
    qs = [" ".join(rng.choice("apple seven train clips friends April".split()) for _ in range(rng.randint(1, 12)))
          for _ in range(rng.randint(2, 4))]
    sps = [SamplingParams(max_new_tokens=rng.randint(2, 8), temperature=rng.choice([0.8, 1.2]), top_p=0.95,
                          top_k=rng.choice([0, 20]), seed=rng.randint(0, 99)) for _ in qs]
    opts = {"generator_batch": rng.choice([1, 2, None])} if method == "tflow" else \
        {"sender_max_new_tokens": rng.randint(1, 5)} if method == "textmas" else {}
    return qs, sps, opts


def _out(r):
    return r.token_ids, r.answer, r.finish_reason


def test_sample_seeds_keep_sample_0_and_never_take_a_neighbours_seed():
    assert sample_seed(41, 0) == 41 and SAMPLE_STRIDE % 2 == 1
    assert sample_seed(SEEDS - 1, 1) == (SEEDS - 1 + SAMPLE_STRIDE) % SEEDS  # wraps, no error
    base = 12345
    neighbours = {base + d for d in range(-10_000, 10_000)}  # default seeds: sampling.seed + i
    assert not neighbours & {sample_seed(base, j) for j in range(1, 1000)}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", ["baseline", "tflow", "textmas"])
def test_each_sample_gets_what_its_seed_gets_alone(model, generator, method, seed):  # noqa: F811
    rng = random.Random(100 * seed + len(method))
    qs, sps, opts = _workload(rng, method)
    seeds = [sp.seed for sp in sps]
    alone = [[_out(run_method(method, _llm(model), [q], sampling=[sp], seeds=[sample_seed(s, j)],
                              generator=generator, **opts)[0]) for j in range(K)]
             for q, sp, s in zip(qs, sps, seeds)]
    assert len({a for row in alone for a in map(str, row)}) > len(qs), "the samples all agree: seeds not tested"
    block = _block_bytes(model)
    for slots, batch, cache in ((1, 1, 0), (3, 2, block * 3), (8, 4, 1 << 30), (rng.randint(2, 6), rng.randint(1, 5), 0)):
        llm = _llm(model, slots, cache)
        calls = []
        res = run_method(method, llm, qs, sampling=sps, seeds=seeds, generator=generator, samples=K, batch_size=batch,
                         on_result=lambda i, r: calls.append((i, r.sample)), **opts)
        assert [_out(r) for r in res] == [a for row in alone for a in row], (slots, batch, cache)
        assert [(r.question, r.sample) for r in res] == [(q, j) for q in qs for j in range(K)]
        assert [r.sampling.seed for r in res] == [sample_seed(s, j) for s in seeds for j in range(K)]
        assert sorted(calls) == [(i, j) for i in range(len(qs)) for j in range(K)]
        _clean(llm, slots, cache)


def test_samples_1_is_the_run_without_it(model, generator):  # noqa: F811
    qs, sps, opts = _workload(random.Random(7), "tflow")
    one = run_method("tflow", _llm(model), qs, sampling=sps, generator=generator, **opts)
    same = run_method("tflow", _llm(model), qs, sampling=sps, generator=generator, samples=1, **opts)
    assert [_out(r) for r in one] == [_out(r) for r in same] and all(r.sample == 0 for r in same)


def test_tflow_runs_senders_and_generator_once_per_question(model, generator, monkeypatch):  # noqa: F811
    qs, sps, _ = _workload(random.Random(3), "tflow")
    rows, senders = [], []
    real_lora, real_sender = methods.generated_lora, methods.sender_request
    monkeypatch.setattr(methods, "generated_lora", lambda *a, **kw: rows.append(a[4]) or real_lora(*a, **kw))
    monkeypatch.setattr(methods, "sender_request", lambda *a, **kw: senders.append(a[2]) or real_sender(*a, **kw))
    res = run_method("tflow", _llm(model, 4), qs, sampling=sps, generator=generator, samples=4, batch_size=2)
    assert len(res) == 4 * len(qs)
    assert sum(rows) == len(qs), "the generator ran per sample, not per question"
    assert sorted(senders) == sorted(2 * qs)
    # the senders' usage is counted once: on sample 0
    assert [sorted(r.agents) for r in res[:4]] == [["receiver", "sender_A", "sender_B"]] + [["receiver"]] * 3


def test_latentmas_samples_get_what_their_seed_gets_alone(parts):  # noqa: F811
    lm_model, tok = parts
    qs = ["Tom has 7 apple", "how many red box sum three"]
    sps = [SamplingParams(max_new_tokens=6, temperature=1.0, seed=s) for s in (5, 9)]

    def llm(slots):
        return LLM(lm_model, tok, eos_token_ids=EOS, num_slots=slots, prefix_cache_bytes=0)

    opts = dict(latent_steps=2)
    alone = [_out(run_method("latentmas", llm(1), [q], sampling=[sp], seeds=[sample_seed(sp.seed, j)], **opts)[0])
             for q, sp in zip(qs, sps) for j in range(K)]
    for slots, batch in ((1, 1), (4, 2)):
        res = run_method("latentmas", llm(slots), qs, sampling=sps, seeds=[5, 9], samples=K, batch_size=batch, **opts)
        assert [_out(r) for r in res] == alone and [r.sample for r in res] == [0, 1, 2] * 2


@pytest.mark.parametrize("bad", [True, 0, -1, 1.5, "2", None])
@pytest.mark.parametrize("method", ["baseline", "tflow", "latentmas"])
def test_bad_samples_are_refused_before_any_request(model, generator, method, bad, monkeypatch):  # noqa: F811
    llm = _llm(model)
    monkeypatch.setattr(llm.engine, "add_request", lambda *a, **kw: pytest.fail("a request ran"))
    with pytest.raises(UserError, match=r"^samples must be an integer >= 1, got "):
        run_method(method, llm, ["apple seven"], generator=generator, samples=bad)


def test_baseline_samples_take_the_prompt_from_the_prefix_cache(model):  # noqa: F811
    """One slot: each sample after the first finds the prompt cached (samples prefilled in one step
    each compute it: the prefix cache shares with later requests only)."""
    llm = _llm(model, 1, 1 << 30)
    sp = SamplingParams(max_new_tokens=2, temperature=1.0, seed=1)
    res = run_method("baseline", llm, ["apple seven train " * 20], sampling=sp, samples=4, batch_size=1)
    cached = [r.agents["single"].cached_tokens for r in res]
    assert cached[0] == 0 and len(set(cached[1:])) == 1 and cached[1] > 0
