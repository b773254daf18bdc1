"""run_method's `samples`: K outputs per question, sample j of question i exactly what question i
gives alone with samples=1 and seed sample_seed(seeds[i], j), whatever runs beside it (baseline,
tflow, textmas, latentmas; seeded sampling; several slot counts and windows); tflow runs its
senders and generator once per question; bad `samples` are refused before any request.
The pipelines and model are test_pipeline_fuzz.py's (helpers' word tokenizer, conftest's sharp tiny
Qwen3 and generator)."""

from __future__ import annotations

import random
import re

import pytest

from minitflow import SamplingParams
from minitflow.engine.llm import LLM
from minitflow.errors import UserError
from minitflow.tflow import methods
from minitflow.tflow.methods import run_method
from minitflow.tflow.stream import SAMPLE_STRIDE, SEEDS, sample_seed
from helpers import EOS, _block_bytes, _box_rows, _clean, _demo_args, _last_plan, _partial_ids, _word_llm
from conftest import fuzz_seeds

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
    return r.token_ids, r.answer, r.finish_reason, r.conversation_log  # the log: textmas' (its senders' texts)


def test_sample_seeds_keep_sample_0_and_never_take_a_neighbours_seed():
    assert sample_seed(41, 0) == 41 and SAMPLE_STRIDE % 2 == 1
    assert sample_seed(SEEDS - 1, 1) == (SEEDS - 1 + SAMPLE_STRIDE) % SEEDS  # wraps, no error
    base = 12345
    neighbours = {base + d for d in range(-10_000, 10_000)}  # default seeds: sampling.seed + i
    assert not neighbours & {sample_seed(base, j) for j in range(1, 1000)}


@pytest.mark.parametrize("seed", fuzz_seeds(3))
@pytest.mark.parametrize("method", ["baseline", "tflow", "textmas"])
def test_each_sample_gets_what_its_seed_gets_alone(model, generator, method, seed):
    rng = random.Random(100 * seed + len(method))
    qs, sps, opts = _workload(rng, method)
    seeds = [sp.seed for sp in sps]
    alone = [[_out(run_method(method, _word_llm(model), [q], sampling=[sp], seeds=[sample_seed(s, j)],
                              generator=generator, **opts)[0]) for j in range(K)]
             for q, sp, s in zip(qs, sps, seeds)]
    assert len({a for row in alone for a in map(str, row)}) > len(qs), "the samples all agree: seeds not tested"
    block = _block_bytes(model)
    for slots, batch, cache in ((1, 1, 0), (3, 2, block * 3), (8, 4, 1 << 30), (rng.randint(2, 6), rng.randint(1, 5), 0)):
        llm = _word_llm(model, slots, cache)
        calls = []
        res = run_method(method, llm, qs, sampling=sps, seeds=seeds, generator=generator, samples=K, batch_size=batch,
                         on_result=lambda i, r: calls.append((i, r.sample)), **opts)
        assert [_out(r) for r in res] == [a for row in alone for a in row], (slots, batch, cache)
        assert [(r.question, r.sample) for r in res] == [(q, j) for q in qs for j in range(K)]
        assert [r.sampling.seed for r in res] == [sample_seed(s, j) for s in seeds for j in range(K)]
        assert sorted(calls) == [(i, j) for i in range(len(qs)) for j in range(K)]
        _clean(llm, slots, cache)


def test_samples_1_is_the_run_without_it(model, generator):
    qs, sps, opts = _workload(random.Random(7), "tflow")
    one = run_method("tflow", _word_llm(model), qs, sampling=sps, generator=generator, **opts)
    same = run_method("tflow", _word_llm(model), qs, sampling=sps, generator=generator, samples=1, **opts)
    assert [_out(r) for r in one] == [_out(r) for r in same] and all(r.sample == 0 for r in same)


def test_tflow_runs_senders_and_generator_once_per_question(model, generator, monkeypatch):
    qs, sps, _ = _workload(random.Random(3), "tflow")
    rows, senders = [], []
    real_lora, real_sender = methods.generated_lora, methods.sender_request
    monkeypatch.setattr(methods, "generated_lora", lambda *a, **kw: rows.append(a[4]) or real_lora(*a, **kw))
    monkeypatch.setattr(methods, "sender_request", lambda *a, **kw: senders.append(a[2]) or real_sender(*a, **kw))
    res = run_method("tflow", _word_llm(model, 4, 1 << 24), qs, sampling=sps, generator=generator, samples=4,
                     batch_size=2)
    assert len(res) == 4 * len(qs)
    assert sum(rows) == len(qs), "the generator ran per sample, not per question"
    assert sorted(senders) == sorted(2 * qs)
    # the senders' usage and the shared stages' times are counted once: on sample 0 (as latentmas does)
    assert [sorted(r.agents) for r in res[:4]] == [["receiver", "sender_A", "sender_B"]] + [["receiver"]] * 3
    # the official token usage (token_usage_stats) is the receiver's alone, sample 0's too: the senders only prefill
    for r in res:
        rec = r.agents["receiver"]
        assert r.official_usage["total_tokens"] == rec.prompt_tokens + rec.completion_tokens > 0
    for r in res:
        assert ("sender_prefill_s" in r.timings, "generator_s" in r.timings) == (r.sample == 0,) * 2, r.timings
        assert "receiver_prefill_s" in r.timings and "decode_s" in r.timings
    # the receivers share the factors, so the prompt KV too: the first prefills it, the others take its blocks
    from minitflow.engine.prefix_cache import BLOCK
    for i in range(len(qs)):
        got = [r.agents["receiver"] for r in res[4 * i:4 * i + 4]]
        assert got[0].cached_tokens == 0 and all(a.cached_tokens == (a.prompt_tokens - 1) // BLOCK * BLOCK > 0
                                                 for a in got[1:])
    one = run_method("tflow", _word_llm(model, 4, 1 << 24), qs, sampling=sps, generator=generator, batch_size=2)
    assert all(r.agents["receiver"].cached_tokens == 0 for r in one)  # one sample: its factors' KV is not cached


def test_latentmas_samples_get_what_their_seed_gets_alone(parts):
    lm_model, tok = parts
    qs = ["Tom has 7 apple", "how many red box sum three"]
    sps = [SamplingParams(max_new_tokens=6, temperature=1.0, seed=s) for s in (5, 9)]

    def llm(slots, cache=0):
        return LLM(lm_model, tok, eos_token_ids=EOS, num_slots=slots, prefix_cache_bytes=cache)

    opts = dict(latent_steps=2)
    alone = [_out(run_method("latentmas", llm(1), [q], sampling=[sp], seeds=[sample_seed(sp.seed, j)], **opts)[0])
             for q, sp in zip(qs, sps) for j in range(K)]
    for slots, batch, cache in ((1, 1, 0), (4, 2, 0), (4, 2, 1 << 24), (1, 1, 1 << 24)):
        res = run_method("latentmas", llm(slots, cache), qs, sampling=sps, seeds=[5, 9], samples=K, batch_size=batch,
                         **opts)
        assert [_out(r) for r in res] == alone and [r.sample for r in res] == [0, 1, 2] * 2
        # with a cache a question's judgers share the judger prompt's KV: the first prefills it
        from minitflow.engine.prefix_cache import BLOCK
        got = [r.agents["judger"] for r in res]
        assert [a.cached_tokens for a in got] == \
            [0 if not cache or r.sample == 0 else (a.prompt_tokens - 1) // BLOCK * BLOCK for r, a in zip(res, got)]
        assert all(a.prompt_tokens > BLOCK for a in got)


def test_latentmas_runs_its_senders_once_per_question(parts, monkeypatch):
    """The latent stage does not sample: a question's K judgers take copies of one run of its
    senders' KV. Its senders' usage and stage times are on sample 0 alone."""
    from minitflow.tflow import latentmas
    lm_model, tok = parts
    qs = ["Tom has 7 apple", "how many red box sum three", "seven apple"]
    rows, real = [], latentmas._senders
    monkeypatch.setattr(latentmas, "_senders", lambda plan, idx: rows.extend(idx) or real(plan, idx))
    res = run_method("latentmas", LLM(lm_model, tok, eos_token_ids=EOS, num_slots=2), qs, samples=K, batch_size=2,
                     latent_steps=2, sampling=SamplingParams(max_new_tokens=4, temperature=1.0))
    assert sorted(rows) == [0, 1, 2], "the senders ran per sample, not per question"
    assert [(r.question, r.sample) for r in res] == [(q, j) for q in qs for j in range(K)]
    for r in res:
        ran = r.sample == 0
        assert (r.agents["planner"].latent_steps, r.agents["planner"].prompt_tokens > 0) == (2 * ran, ran)
        assert ("planner_latent_s" in r.timings) == ran
        # the official token usage (token_usage_stats) is the judger's alone, sample 0's too: no sender generates
        judger = r.agents["judger"]
        assert r.official_usage["total_tokens"] == judger.prompt_tokens + judger.completion_tokens > 0


@pytest.mark.parametrize("bad", [True, 0, -1, 1.5, "2", None])
@pytest.mark.parametrize("method", ["baseline", "tflow", "latentmas"])
def test_bad_samples_are_refused_before_any_request(model, generator, method, bad, monkeypatch):
    llm = _word_llm(model)
    monkeypatch.setattr(llm.engine, "add_request", lambda *a, **kw: pytest.fail("a request ran"))
    with pytest.raises(UserError, match=r"^samples must be an integer >= 1, got "):
        run_method(method, llm, ["apple seven"], generator=generator, samples=bad)


@pytest.mark.parametrize("method", ["baseline", "tflow", "latentmas"])
def test_samples_past_the_seed_bound_are_refused_before_any_request(model, generator, method, monkeypatch):
    """Above MAX_SAMPLES a sample's seed (sample_seed) may come near another question's; 10**20 also hung
    building the per-request lists. Up to the bound the seeds of one question's samples stay 2**47 apart
    from every multiple of SEEDS, as the bound's comment says."""
    from minitflow.tflow.stream import MAX_SAMPLES, SAMPLE_STRIDE, SEEDS
    llm = _word_llm(model)
    monkeypatch.setattr(llm.engine, "add_request", lambda *a, **kw: pytest.fail("a request ran"))
    for bad in (MAX_SAMPLES + 1, 10 ** 20):
        with pytest.raises(UserError, match=rf"^samples must be <= {MAX_SAMPLES} .*, got {bad}$"):
            run_method(method, llm, ["apple seven"], generator=generator, samples=bad)
    offsets = [j * SAMPLE_STRIDE % SEEDS for j in range(1, MAX_SAMPLES)]
    assert min(min(o, SEEDS - o) for o in offsets) >= 2 ** 47


@pytest.mark.parametrize("bad", [True, 0, 1.5])
def test_stream_latentmas_refuses_bad_samples(parts, bad):
    from minitflow.tflow.latentmas import stream_latentmas
    lm_model, tok = parts
    with pytest.raises(UserError, match=r"^samples must be an integer >= 1, got "):
        stream_latentmas(LLM(lm_model, tok, eos_token_ids=EOS), ["Tom"], "gsm8k", [SamplingParams()], window=1,
                         latent_steps=1, samples=bad)


@pytest.mark.parametrize("slots", [1, 4])
def test_baseline_samples_take_the_prompt_from_the_prefix_cache(model, slots):
    """Each sample after the first finds the prompt cached: with one slot they come one by one; with
    four, the three admitted beside the first wait a step for the blocks it stores (they each
    prefilled the prompt before)."""
    llm = _word_llm(model, slots, 1 << 30)
    sp = SamplingParams(max_new_tokens=2, temperature=1.0, seed=1)
    res = run_method("baseline", llm, ["apple seven train " * 20], sampling=sp, samples=4, batch_size=1)
    cached = [r.agents["single"].cached_tokens for r in res]
    assert cached[0] == 0 and len(set(cached[1:])) == 1 and cached[1] > 0


# ---- evaluate --n_samples --------------------------------------------------------------------

def _sampled_args(data, out, *extra: str) -> list[str]:
    return [a for a in _demo_args(data, out, "--temperature", "3", *extra) if a != "--greedy"]


def _results(out, method: str = "baseline") -> dict:
    import json
    return json.loads((out / f"{method}_results.json").read_text())


def test_pass_at_k_is_the_unbiased_estimator():
    from itertools import combinations

    from minitflow.eval.rows import pass_at_k
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):  # the share of the k-subsets of n holding a correct one
                subsets = list(combinations([True] * c + [False] * (n - c), k))
                assert pass_at_k(n, c, k) == pytest.approx(sum(map(any, subsets)) / len(subsets))


def test_sampled_summary_averages_samples_and_reads_pass_at_powers_of_two():
    from minitflow.eval.rows import sampled_summary
    rows = [{"n_correct": c, "n_correct_official": o, "processed_tokens": 50, "official_tokens": 10}
            for c, o in ((0, 0), (1, 2), (5, 5))]
    s = sampled_summary(rows, 5, "mbpp")
    assert s["accuracy"] == pytest.approx(6 / 15) and s["accuracy_official"] == pytest.approx(7 / 15)
    assert list(s["pass_at_k"]) == ["1", "2", "4"]
    assert s["pass_at_k"]["1"] == pytest.approx((0 + 1 / 5 + 1) / 3)
    assert s["pass_at_k"]["4"] == pytest.approx((0 + 4 / 5 + 1) / 3)  # 1 - C(4,4)/C(5,4)
    assert s["mean_processed_tokens"] == 10 and s["mean_official_tokens"] == 2  # per sample


def _votes(*answers, correct=None):
    return [{"prediction": f"\\boxed{{{a}}}" if a else "", "extracted": a, "correct": a == "18" if correct is None else c,
             "extracted_official": a, "correct_official": False} for a, c in zip(answers, correct or answers)]


def test_majority_votes_by_the_answer_not_its_spelling():
    """gsm8k groups by the number ("18", "18.00", "$18" agree: 3 votes beat "20" twice); a tie goes to
    the answer given first; samples without an answer do not vote (a question none answered is
    wrong); the official scorer reads its own fields."""
    from minitflow.eval.scoring import majority_correct, vote_key
    assert majority_correct("gsm8k", _votes("20", "18", "18.00", "20", "$18", correct=[0, 1, 1, 0, 1]))
    assert not majority_correct("gsm8k", _votes("20", "18", "18", "20"))  # tie: "20" came first
    assert majority_correct("gsm8k", _votes("", "", "18", ""))
    assert not majority_correct("gsm8k", _votes("", ""))
    assert not majority_correct("gsm8k", _votes("18", "18"), scorer="official")
    assert vote_key("minerva_math", "\\frac12") == vote_key("minerva_math", "x = \\frac{1} {2}")
    assert vote_key("mmlu", "B") == "B" and vote_key("humaneval", "def f(): pass") is None


def test_official_majority_leaves_out_samples_the_release_finds_no_answer_in():
    """Where the release's extractor finds no answer it logs the text's first 100 characters (MATH:
    "[invalidanswer]") as the sample's answer: those did vote, so two cut-off outputs outvoted the one
    answer given (official maj@K wrong where the strict one, over the same samples, is right)."""
    from minitflow.eval.data import Sample
    from minitflow.eval.scoring import majority_correct, score_both

    def scored(dataset, sample, predictions):
        verdicts = score_both(dataset, predictions, [sample] * len(predictions))
        return [{**v, "prediction": p} for p, v in zip(predictions, verdicts)]

    cases = [("gsm8k", Sample("gsm8k/0", "How many?", "18"), ["No idea at all.", "No idea at all.", "So \\boxed{18}."]),
             ("gsm8k", Sample("gsm8k/0", "How many?", "18"), ["I am not sure.", "So \\boxed{18}."]),  # a tie, no answer first
             ("minerva_math", Sample("math/0", "x?", "\\frac{1}{2}", {"solution": "So $\\boxed{\\frac{1}{2}}$."}),
              ["Let me think step by", "Let me think step by", "So $\\boxed{\\frac{1}{2}}$.", "So $\\boxed{3}$."]),
             ("mmlu", Sample("mmlu/0", "Which?", "B"), ["Not sure.", "Not sure.", "So \\boxed{B}."])]
    for dataset, sample, predictions in cases:
        rows = scored(dataset, sample, predictions)
        assert [r["correct_official"] for r in rows] == [r["correct"] for r in rows]  # the same verdicts
        assert majority_correct(dataset, rows) and majority_correct(dataset, rows, "official"), (dataset, rows)
    # a sample the official scorer does answer still votes: two "20" outvote one "18"
    rows = scored("gsm8k", Sample("gsm8k/0", "How many?", "18"), ["So 20.", "So \\boxed{18}.", "It is 20"])
    assert not majority_correct("gsm8k", rows, "official")


def test_sampled_summary_reads_maj_at_k_for_answers_not_programs():
    from minitflow.eval.rows import sampled_summary
    rows = [{"n_correct": 1, "n_correct_official": 0, "processed_tokens": 5, "official_tokens": 1,
             "samples": _votes("18", "7", "18")},
            {"n_correct": 1, "n_correct_official": 0, "processed_tokens": 5, "official_tokens": 1,
             "samples": _votes("7", "18", "9")}]
    s = sampled_summary(rows, 3, "gsm8k")
    assert s["maj_at_k"] == {"3": 0.5} and s["maj_at_k_official"] == {"3": 0.0}
    assert "maj_at_k" not in sampled_summary(rows, 3, "mbpp")


def test_evaluate_n_samples_writes_k_samples_per_question_and_sample_0_is_the_one_sample_run(tmp_path, capsys):
    from minitflow.errors import run_cli
    from minitflow.evaluate import main
    from minitflow.report import main as report
    data = _box_rows(tmp_path / "box.jsonl", n=4)
    assert run_cli(main, _sampled_args(data, tmp_path / "one")) == 0
    capsys.readouterr()
    assert run_cli(main, _sampled_args(data, tmp_path / "k", "--n_samples", "3")) == 0
    assert re.search(r"avg@3 [\d.]+; pass@1 [\d.]+, pass@2 [\d.]+, maj@3 [\d.]+\n", capsys.readouterr().err)
    one, k = _results(tmp_path / "one"), _results(tmp_path / "k")
    assert not {"n_samples", "pass_at_k"} & (one["summary"].keys() | one["summary"]["settings"].keys()
                                             | one["summary"]["config"].keys())
    assert k["summary"]["config"]["n_samples"] == k["summary"]["settings"]["n_samples"] == 3
    assert all("samples" not in r and "correct" in r for r in one["samples"])
    s = k["summary"]
    assert s["n"] == 4 and s["complete"] and s["n_samples"] == 3 and list(s["pass_at_k"]) == ["1", "2"]
    assert [r["id"] for r in k["samples"]] == [r["id"] for r in one["samples"]]
    assert all(r["n_samples"] == 3 and len(r["samples"]) == 3 for r in k["samples"])
    # cut at max_new_tokens counted per sample, as the official evaluator counts each of its outputs
    outputs = [x for r in k["samples"] for x in r["samples"]]
    assert all(x["truncated"] == (x["finish_reason"] == "length") for x in outputs)
    right = [x["truncated"] for x in outputs if x["correct_official"]]
    wrong = [x["truncated"] for x in outputs if not x["correct_official"]]
    assert s["truncation_stats"] == {
        "total_truncated": sum(right) + sum(wrong), "truncated_among_correct": sum(right),
        "truncated_among_incorrect": sum(wrong), "rate_truncated_in_correct": sum(right) / len(right) if right else None,
        "rate_truncated_in_incorrect": sum(wrong) / len(wrong) if wrong else None, "unknown": 0}
    # the official token_usage_stats per sample too: each output's official token_usage, summed and averaged
    sums = {k: sum(x["token_usage"][k] for x in outputs) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    assert s["token_usage_stats"] == {**{f"avg_{k}": v / 12 for k, v in sums.items()},
                                      **{f"sum_{k}": v for k, v in sums.items()}}
    # sample 0 seeds as the one-sample run does: the same prediction, the same verdict
    assert [r["samples"][0]["prediction"] for r in k["samples"]] == [r["prediction"] for r in one["samples"]]
    preds = [x["prediction"] for r in k["samples"] for x in r["samples"]]
    assert len(set(preds)) > 4, "every sample of a question the same: the seeds are not tested"
    n_correct = [sum(x["correct"] for x in r["samples"]) for r in k["samples"]]
    assert [r["n_correct"] for r in k["samples"]] == n_correct
    assert s["accuracy"] == pytest.approx(sum(n_correct) / 12)
    assert s["pass_at_k"]["1"] == pytest.approx(s["accuracy"])
    assert s["mean_processed_tokens"] == pytest.approx(sum(x["processed_tokens"] for r in k["samples"]
                                                           for x in r["samples"]) / 12)
    from minitflow.eval.scoring import majority_correct
    for key, scorer in (("maj_at_k", "strict"), ("maj_at_k_official", "official")):
        assert s[key] == {"3": pytest.approx(sum(majority_correct("gsm8k", r["samples"], scorer)
                                                 for r in k["samples"]) / 4)}
    capsys.readouterr()
    assert run_cli(report, [str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert f"Single/gsm8k: avg@3 {100 * s['accuracy']:.1f}, pass@1 " in out and "pass@2 " in out
    assert f"maj@3 {100 * s['maj_at_k']['3']:.1f}" in out
    from minitflow.score import main as score
    assert run_cli(score, ["--results", str(tmp_path / "k")]) == 2
    assert "--n_samples 3" in capsys.readouterr().err


def test_evaluate_n_samples_keeps_each_textmas_samples_conversation_log(tmp_path):
    """--n_samples K with textmas: each sample runs the whole method, and each keeps the official
    conversation_log of its own agents (its senders' texts as its receiver read them, then its answer)."""
    from minitflow import demo_dir
    from minitflow.errors import run_cli
    from minitflow.evaluate import main
    from minitflow.model.tokenizer import Tokenizer
    from minitflow.tflow import prompts
    from minitflow.tflow.methods import chat_text, textmas_context
    data = _box_rows(tmp_path / "box.jsonl", n=2)
    args = [a if a != "baseline" else "textmas"
            for a in _sampled_args(data, tmp_path / "k", "--n_samples", "3", "--sender_max_new_tokens", "3")]
    assert run_cli(main, args) == 0
    rows = _results(tmp_path / "k", "textmas")["samples"]
    tok, c_sys = Tokenizer(demo_dir()), prompts.textmas_roles("gsm8k")[2][1]
    for r in rows:
        for x in r["samples"]:
            log = x["conversation_log"]
            assert [e["round"] for e in log] == [0, 0, 1] and log[2]["text"] == x["prediction"]
            receiver = chat_text(c_sys, r["question"], textmas_context("gsm8k", [e["text"] for e in log[:2]]))
            assert len(tok.encode(receiver)) == x["token_usage"]["per_agent"][log[2]["agent"]]["prompt_tokens"]
    senders = [tuple(e["text"] for e in x["conversation_log"][:2]) for r in rows for x in r["samples"]]
    assert len(set(senders)) > 2, "every sample's senders said the same: the samples' own logs are not tested"


def test_evaluate_n_samples_interrupted_resumes_to_the_same_rows(tmp_path, monkeypatch):
    """Ctrl-C after 7 of 4 x 3 samples: the questions whose 3 samples were all written are kept, a
    question with only some is redone whole; the resumed rows are the uninterrupted run's."""
    from minitflow import evaluate
    from minitflow.errors import run_cli
    from minitflow.eval.rows import BackgroundScorer
    data = _box_rows(tmp_path / "box.jsonl", n=4)
    assert run_cli(evaluate.main, _sampled_args(data, tmp_path / "whole", "--n_samples", "3", "--batch_size", "1")) == 0
    real, calls = BackgroundScorer.put, []

    def put(self, *a):
        calls.append(a)
        if len(calls) == 8:
            self.close()  # the 7 before it scored and written: questions 0 and 1 whole, question 2 in part
            raise KeyboardInterrupt
        return real(self, *a)

    out = tmp_path / "cut"
    args = _sampled_args(data, out, "--n_samples", "3", "--batch_size", "1")
    with monkeypatch.context() as m:
        m.setattr(BackgroundScorer, "put", put)
        assert run_cli(evaluate.main, args) == 130
    part = out / "baseline_partial.rank0.jsonl"
    assert _partial_ids(part) == ["gsm8k/0", "gsm8k/1"]
    assert run_cli(evaluate.main, args) == 0
    assert "4 samples, 2 already done, 2 for rank 0/1" in _last_plan(out)
    assert _partial_ids(part) == [f"gsm8k/{i}" for i in range(4)]
    # the verdicts and texts (not the usage: the resumed run's prefix cache starts cold)
    strip = lambda rows: [(r["id"], r["n_correct"], r["n_correct_official"],  # noqa: E731
                           [(x["prediction"], x["correct"], x["correct_official"]) for x in r["samples"]]) for r in rows]
    assert strip(_results(out)["samples"]) == strip(_results(tmp_path / "whole")["samples"])


def test_evaluate_resuming_with_another_n_samples_is_one_line(tmp_path, capsys):
    from minitflow.errors import run_cli
    from minitflow.evaluate import main
    data = _box_rows(tmp_path / "box.jsonl", n=2)
    for first, then in ((1, 3), (3, 2), (2, 1)):
        out = tmp_path / f"{first}-{then}"
        assert run_cli(main, _sampled_args(data, out, "--n_samples", str(first))) == 0
        capsys.readouterr()
        assert run_cli(main, _sampled_args(data, out, "--n_samples", str(then))) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--n_samples {first}, this one has --n_samples {then}" in err[0]
        assert run_cli(main, _sampled_args(data, out, "--n_samples", str(then), "--overwrite")) == 0


@pytest.mark.parametrize("extra", [["--n_samples", "0"], ["--n_samples", "-2"], ["--n_samples", str(10 ** 20)]])
def test_evaluate_bad_n_samples_is_one_line(tmp_path, capsys, extra):
    """10**20 hung building the memory check's per-request list before any work: refused at once."""
    from minitflow.errors import run_cli
    from minitflow.evaluate import main
    data = _box_rows(tmp_path / "box.jsonl", n=2)
    assert run_cli(main, _sampled_args(data, tmp_path / "out", *extra)) == 2
    assert "--n_samples must be " + ("<= 65536" if len(extra[1]) > 5 else "an integer >= 1") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    oracle = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(tmp_path / "o"), "--n_samples", "2"]
    assert run_cli(main, oracle) == 2
    assert "--n_samples has no effect with --method oracle" in capsys.readouterr().err


@pytest.mark.parametrize("greedy", [["--greedy"], ["--temperature", "0"]], ids=["greedy", "temperature0"])
def test_evaluate_n_samples_with_greedy_decoding_is_one_line(tmp_path, capsys, greedy):
    """--n_samples 3 --greedy ran 3 identical outputs per question (pass@k = pass@1, 3 times the work)."""
    from minitflow.errors import run_cli
    from minitflow.evaluate import main
    data = _box_rows(tmp_path / "box.jsonl", n=2)
    args = [a for a in _demo_args(data, tmp_path / "out", "--n_samples", "3") if a != "--greedy"] + greedy
    assert run_cli(main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--n_samples 3 with greedy decoding" in err[0]
    assert not (tmp_path / "out").exists()


def test_two_ranks_split_questions_not_samples(tmp_path):
    """--n_samples 2 on two ranks (RANK / WORLD_SIZE as torchrun sets them): each rank file holds whole
    questions (i % 2 == rank), and the merge is the single process's rows."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from minitflow.errors import run_cli
    from minitflow.evaluate import main
    data = _box_rows(tmp_path / "box.jsonl", n=5)
    assert run_cli(main, _sampled_args(data, tmp_path / "single", "--n_samples", "2")) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(20000 + os.getpid() % 20000)}
    procs = [subprocess.Popen([sys.executable, "-m", "minitflow.evaluate",
                               *_sampled_args(data, tmp_path / "multi", "--n_samples", "2")],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    shares = [_partial_ids(tmp_path / "multi" / f"baseline_partial.rank{r}.jsonl") for r in (0, 1)]
    assert sorted(shares[0]) == ["gsm8k/0", "gsm8k/2", "gsm8k/4"] and sorted(shares[1]) == ["gsm8k/1", "gsm8k/3"]
    one, two = _results(tmp_path / "single"), _results(tmp_path / "multi")
    pick = lambda rows: [[x["prediction"] for x in r["samples"]] for r in rows]  # noqa: E731
    assert pick(two["samples"]) == pick(one["samples"])
    assert {k: two["summary"][k] for k in ("accuracy", "pass_at_k", "n_samples", "n", "complete")} == \
        {k: one["summary"][k] for k in ("accuracy", "pass_at_k", "n_samples", "n", "complete")}


@pytest.mark.parametrize("method", ["baseline", "tflow", "textmas"])
def test_a_question_too_long_is_named_by_its_own_label_with_samples(model, generator, method):
    """The check before any request names the question (its label), not a sample of another one."""
    llm = _word_llm(model)
    qs = ["apple seven", "apple " * 600]
    with pytest.raises(UserError, match=r"^q1: its "):
        run_method(method, llm, qs, generator=generator, samples=2, labels=["q0", "q1"],
                   sampling=SamplingParams(max_new_tokens=4), **({"sender_max_new_tokens": 4} if method == "textmas" else {}))
    assert not llm.engine.in_flight()


def test_latentmas_names_a_question_too_long_by_its_own_label_with_samples(parts):
    """latentmas' plan counts each question once, whatever its samples, before any forward."""
    lm_model, tok = parts
    llm = LLM(lm_model, tok, eos_token_ids=EOS, num_slots=1, prefix_cache_bytes=0, max_seq_len=64)
    with pytest.raises(UserError, match=r"^q1 needs "):
        run_method("latentmas", llm, ["Tom", "Tom has " * 40], samples=2, labels=["q0", "q1"], latent_steps=1,
                   sampling=SamplingParams(max_new_tokens=4))


def test_evaluate_n_samples_gives_the_samples_slots_of_their_own(tmp_path, monkeypatch):
    """2 questions x 3 samples with --batch_size 6: the engine has 6 slots (one per sample), not the 2 that
    2 questions fill alone (the slots were capped at the question count, the samples queued for them)."""
    from minitflow.errors import run_cli
    from minitflow.evaluate import main
    data = _box_rows(tmp_path / "box.jsonl", n=2)
    real, slots = methods.run_method, []
    monkeypatch.setattr(methods, "run_method", lambda m, llm, *a, **kw: slots.append(llm.engine.scheduler.num_slots)
                        or real(m, llm, *a, **kw))
    assert run_cli(main, _sampled_args(data, tmp_path / "k", "--n_samples", "3", "--batch_size", "6")) == 0
    assert run_cli(main, _sampled_args(data, tmp_path / "one", "--batch_size", "6")) == 0
    assert slots == [6, 2]


def test_latentmas_samples_at_zero_latent_steps(parts):
    """With latent_steps 0 no sender runs and no KV is handed over: the K judgers are plain prompts
    (a context key without KV was refused by the engine at the first judger, a crash on valid input)."""
    lm_model, tok = parts
    qs, sp = ["Tom has 7 apple", "how many red box"], SamplingParams(max_new_tokens=4, temperature=1.0, seed=5)

    def llm(slots, cache=0):
        return LLM(lm_model, tok, eos_token_ids=EOS, num_slots=slots, prefix_cache_bytes=cache)

    alone = [_out(run_method("latentmas", llm(1), [q], sampling=[sp], seeds=[sample_seed(5 + i, j)])[0])
             for i, q in enumerate(qs) for j in range(K)]
    for slots, batch, cache in ((1, 1, 0), (4, 2, 1 << 24)):
        res = run_method("latentmas", llm(slots, cache), qs, sampling=sp, samples=K, batch_size=batch)
        assert [_out(r) for r in res] == alone and [r.sample for r in res] == [0, 1, 2] * 2


@pytest.mark.parametrize("method", ["baseline", "tflow", "textmas", "latentmas"])
def test_keep_results_false_hands_each_output_to_on_result_and_holds_none(model, generator, parts, method):
    """evaluate's run: thousands of outputs (~90 KiB each at 2,048 tokens) were all held until the
    run returned. With keep_results=False each goes to on_result only: the same outputs, [] back,
    and none alive past the engine step that finished it (at most the window's 2 x 2 outputs)."""
    import gc
    import weakref
    rng = random.Random(11)
    qs = [" ".join(rng.choice("apple seven train clips friends April".split()) for _ in range(rng.randint(1, 8)))
          for _ in range(7)]
    sps = [SamplingParams(max_new_tokens=rng.randint(2, 6), temperature=1.0, top_p=0.95, seed=i) for i in range(7)]
    if method == "latentmas":
        lm_model, tok = parts

        def llm():
            return LLM(lm_model, tok, eos_token_ids=EOS, num_slots=4)
    else:
        def llm():
            return _word_llm(model, 4)
    opts = {"latentmas": dict(latent_steps=2), "textmas": dict(sender_max_new_tokens=3)}.get(method, {})
    want = run_method(method, llm(), qs, sampling=sps, generator=generator, samples=2, batch_size=2, **opts)
    got, alive, refs = [], [], []

    def on_result(i, r):
        gc.collect()
        alive.append(sum(ref() is not None for ref in refs))
        refs.append(weakref.ref(r))
        got.append((i, r.sample, _out(r)))

    assert run_method(method, llm(), qs, sampling=sps, generator=generator, samples=2, batch_size=2,
                      on_result=on_result, keep_results=False, **opts) == []
    assert sorted(got) == sorted((i // 2, r.sample, _out(r)) for i, r in enumerate(want))
    assert len(alive) == 14 and max(alive) < 4, alive
    for bad, match in (("no", "keep_results must be True or False, got 'no'"),
                       (False, "keep_results=False hands each result to on_result only, and none is given")):
        with pytest.raises(UserError, match=match):
            run_method(method, llm(), qs, sampling=sps, generator=generator, keep_results=bad, **opts)
