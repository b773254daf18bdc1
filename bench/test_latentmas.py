"""LatentMAS vs textmas vs tflow per question on one workload: processed tokens and time.

All three run on the same LLM and questions with the official decoding on Qwen3-4B
(temperature 0.6, top_p 0.95, and its generation_config's top_k 20) and `ignore_eos`, so every generating agent produces exactly NEW_TOKENS tokens
on random weights (textmas senders too). latentmas runs LATENT_STEPS latent steps per sender
(the official class default; its README tunes 0-80) and hands the KV cache down the chain;
textmas and tflow go through `run_method`. Each record carries its time and processed tokens
per question and their ratios to latentmas, measured interleaved (benchlib.pedantic_vs).
On CPU only the ratios mean anything. Needs a real Qwen3 tokenizer, as bench/test_e2e.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from benchlib import QUESTIONS, Setup, bench_generator, make_setup, pedantic_vs, record, tokenized_model
from minitflow.engine.llm import LLM
from minitflow.engine.sampler import SamplingParams
from minitflow.model.qwen3 import Qwen3Model
from old_chunked import SAMPLING

SETUP = make_setup()
ON_CUDA = SETUP.device.type == "cuda"
NEW_TOKENS = 256 if ON_CUDA else 32
QUESTION_COUNTS = (1, 20) if ON_CUDA else (1, 4)
LATENT_STEPS = 10
ROUNDS, WARMUP = 2, 1



@pytest.fixture(scope="module")
def workload(setup: Setup, model: Qwen3Model):
    """(LLM with a Qwen3 tokenizer, random TFlowGenerator); the tiny CPU model gets Qwen3's
    vocabulary so that the tokenizer's ids fit."""
    net, tokenizer = tokenized_model(setup, model)
    llm = LLM(net, tokenizer, eos_token_ids=[tokenizer.eos_token_id])
    gen = bench_generator(setup, net.cfg)
    return llm, gen


def run_questions(workload, method: str, n: int) -> list:
    from minitflow.tflow.latentmas import run_latentmas
    from minitflow.tflow.methods import run_method
    llm, gen = workload
    questions = (QUESTIONS * n)[:n]
    sampling = SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True, **SAMPLING["qwen3"])
    if method == "latentmas":
        sps = [dataclasses.replace(sampling, seed=sampling.seed + i) for i in range(n)]
        return run_latentmas(llm, questions, "gsm8k", sps, latent_steps=LATENT_STEPS)
    return run_method(method, llm, questions, style="gsm8k", sampling=sampling, generator=gen, batch_size=n,
                      sender_max_new_tokens=NEW_TOKENS)


def per_question(results: list, n: int) -> tuple[float, float]:
    """(processed, official) tokens per question."""
    return (sum(r.processed_tokens for r in results) / n, sum(r.official_usage["total_tokens"] for r in results) / n)


@pytest.mark.parametrize("questions", QUESTION_COUNTS)
@pytest.mark.parametrize("method", ("latentmas", "textmas", "tflow"))
def test_latentmas_vs(benchmark, setup: Setup, workload, method: str, questions: int) -> None:
    """One batch of questions through `method`, timed against latentmas on the same questions."""
    benchmark.group = f"latentmas-vs-q{questions}"
    last: dict[str, list] = {}

    def run() -> None:
        last["results"] = run_questions(workload, method, questions)

    def latent() -> None:
        last["latent"] = run_questions(workload, "latentmas", questions)

    s, latent_s = pedantic_vs(benchmark, run, (lambda: None) if method == "latentmas" else latent,
                              setup.device, ROUNDS, WARMUP)
    if method == "latentmas":
        latent_s, last["latent"] = s, last["results"]
    results = last["results"]
    processed, official = per_question(results, questions)
    latent_processed, _ = per_question(last["latent"], questions)
    stages = {k: v for k, v in results[0].timings.items() if k != "total_s"}
    record(benchmark, setup, method=method, questions=questions, new_tokens=NEW_TOKENS, latent_steps=LATENT_STEPS,
           s_per_question=s / questions, processed_tokens_per_question=processed,
           official_tokens_per_question=official, time_vs_latentmas=s / latent_s,
           processed_vs_latentmas=processed / latent_processed,
           **{f"stage_{k}": v for k, v in stages.items()})
