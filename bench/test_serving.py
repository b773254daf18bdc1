"""The serving core: continuous batching on a long-tailed workload, and the prefix cache.

Both sides of every ratio run in the same test, interleaved round by round (see benchlib).

- Long tail: 64 requests whose output lengths are lognormal with median MAX/4, capped at MAX
  (`ignore_eos`, per-request max_new_tokens), through 8 slots: continuous batching vs the
  static path (a batch runs until its slowest row ends, finished rows still computing).
  Useful tokens/s and useful / computed row-steps for both.
  The static path's step count bounds the gain: for this draw, 842 static steps against a
  floor of 370 (useful tokens / slots) for any continuous schedule.
- Prefix cache: the prefill of 16 questions with the official prompts (real Qwen3 tokenizer),
  as prefill-only requests (no logits), with a warm prefix cache vs without one: gsm8k (the
  baseline prompt) and minerva_math sender A (its 4-shot block is the same for every question).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from benchlib import Setup, bench_generator, check_same_tokens, make_setup, pedantic_vs, random_ids, record, tokenized_model
from minitflow.engine.llm import LLM
from minitflow.engine.request import Request
from minitflow.engine.sampler import SamplingParams
from old_chunked import SAMPLING, long_tail, pipeline_questions

SETUP = make_setup()
ON_CUDA = SETUP.device.type == "cuda"
MAX_NEW = 1024 if ON_CUDA else 128
REQUESTS, SLOTS = 64, (20 if ON_CUDA else 8)
ROUNDS, WARMUP = 2, 1


@pytest.fixture(scope="module")
def workload(setup: Setup):
    lengths = long_tail(REQUESTS, MAX_NEW)
    prompts = random_ids(setup.cfg, REQUESTS, 64, "cpu", seed=1)
    # prompts of different lengths, as questions have
    plen = [16 + (7 * i) % 48 for i in range(REQUESTS)]
    return [p[:n].tolist() for p, n in zip(prompts, plen)], lengths


def test_long_tail_continuous_vs_static(benchmark, setup: Setup, model, workload) -> None:
    benchmark.group = "serving-long-tail"
    prompts, lengths = workload
    params = [SamplingParams(max_new_tokens=m, ignore_eos=True, temperature=0.6, top_p=0.95, seed=i)
              for i, m in enumerate(lengths)]
    llms = {static: LLM(model, eos_token_ids=[], num_slots=SLOTS, static=static, prefix_cache_bytes=0,
                        cuda_graphs=ON_CUDA) for static in (False, True)}
    outs: dict[bool, list] = {}

    def run(static: bool):
        e = llms[static].engine
        e.steps = e.row_steps = e.useful_row_steps = 0
        outs[static] = llms[static].generate(prompts, params)

    cont_s, static_s = pedantic_vs(benchmark, lambda: run(False), lambda: run(True), setup.device, ROUNDS, WARMUP)
    agree = check_same_tokens([g.token_ids for g in outs[False]], [g.token_ids for g in outs[True]], setup.device)
    useful = sum(lengths)
    eff = {s: llms[s].engine.useful_row_steps / max(llms[s].engine.row_steps, 1) for s in (False, True)}
    record(benchmark, setup, requests=REQUESTS, slots=SLOTS, max_new_tokens=MAX_NEW, useful_tokens=useful,
           useful_tokens_per_s=useful / cont_s, static_useful_tokens_per_s=useful / static_s,
           speedup_vs_static=static_s / cont_s, row_step_use=eff[False], static_row_step_use=eff[True],
           same_tokens_as_static=agree)


@pytest.fixture(scope="module")
def tokenized(setup: Setup, model):
    return tokenized_model(setup, model)


PROBLEMS = [f"Let $x_{{{i}}}$ satisfy ${i + 2}x - {3 * i + 1} = {i * i + 5}$. What is $x_{{{i}}}$?" for i in range(16)]


def _prompts(llm: LLM, style: str) -> list[list[int]]:
    from minitflow.eval.data import minerva_question
    from minitflow.tflow import prompts
    if style == "gsm8k":
        system = prompts.baseline_system("gsm8k")
        questions = PROBLEMS
    else:  # minerva_math sender A: the 4-shot Minerva block is part of every question
        system = prompts.tflow_agents("minerva_math")[0]
        questions = [minerva_question(p) for p in PROBLEMS]
    return [llm.chat_ids([{"role": "system", "content": system}, {"role": "user", "content": q}]) for q in questions]


@pytest.mark.parametrize("style", ["gsm8k", "minerva_math", "minerva_math-condition"])
def test_prefix_cache_prefill(benchmark, setup: Setup, tokenized, style: str) -> None:
    """`-condition`: tflow's sender A requests themselves, capturing the condition (the
    aggregator's sum) over the question, 4-shot block included: its rows come from the cache too."""
    from minitflow.eval.data import minerva_question
    from minitflow.tflow import prompts as official
    from minitflow.tflow.condition import sender_request
    benchmark.group = "serving-prefix-cache"
    net, tokenizer = tokenized
    cached = LLM(net, tokenizer, eos_token_ids=[], num_slots=16)
    plain = LLM(net, tokenizer, eos_token_ids=[], num_slots=16, prefix_cache_bytes=0)
    prompts = _prompts(cached, style.split("-")[0])
    weights = torch.softmax(torch.randn(net.cfg.num_hidden_layers + 1, generator=torch.Generator().manual_seed(0)),
                            0).to(setup.device)

    def prefill(llm: LLM) -> list[Request]:
        if style.endswith("condition"):
            system = official.tflow_agents("minerva_math")[0]
            return llm.engine.run([sender_request(llm, system, minerva_question(p), weights) for p in PROBLEMS])
        return llm.engine.run([Request(p, generate=False) for p in prompts])

    prefill(cached)  # the shared prefix is in the cache from here on
    last = {}

    def run_cached():
        last["reqs"] = prefill(cached)

    s, plain_s = pedantic_vs(benchmark, run_cached, lambda: prefill(plain), setup.device, ROUNDS + 1, WARMUP)
    prompt_tokens = sum(len(r.prompt_ids) for r in last["reqs"])
    reused = sum(r.cached_tokens for r in last["reqs"])
    record(benchmark, setup, style=style, questions=len(prompts), prompt_tokens=prompt_tokens,
           cached_share=reused / prompt_tokens, speedup_vs_no_cache=plain_s / s)


def test_prefill_by_length_vs_one_padded_forward(benchmark, setup: Setup, model) -> None:
    """16 prefill-only requests admitted in one step, prompt lengths lognormal (median 128, cap
    512), no prefix cache: the runner's forwards of similar lengths (runner.length_groups) vs one
    forward right-padded to the longest prompt, the path before (FORWARD_TOKENS infinite)."""
    from minitflow.engine import runner as runner_module
    benchmark.group = "serving-prefill-lengths"
    lens = long_tail(16, 512, seed=3)
    prompts = [p[:n].tolist() for p, n in zip(random_ids(setup.cfg, 16, 512, "cpu", seed=2), lens)]
    llm = LLM(model, eos_token_ids=[], num_slots=16, prefix_cache_bytes=0, cuda_graphs=ON_CUDA)
    forwards: dict[bool, list[int]] = {}
    real = llm.engine.runner._forward

    def prefill(padded: bool) -> None:
        cost = runner_module.FORWARD_TOKENS
        runner_module.FORWARD_TOKENS = float("inf") if padded else cost
        llm.engine.runner._forward = lambda reqs: (forwards[padded].append(len(reqs) * max(len(r.prompt_ids) for r in reqs)),
                                                   real(reqs))[1]
        try:
            forwards[padded] = []
            llm.engine.run([Request(p, generate=False) for p in prompts])
        finally:
            runner_module.FORWARD_TOKENS, llm.engine.runner._forward = cost, real

    s, padded_s = pedantic_vs(benchmark, lambda: prefill(False), lambda: prefill(True), setup.device, ROUNDS + 1, WARMUP)
    record(benchmark, setup, requests=16, prompt_tokens=sum(lens), longest=max(lens), forwards=len(forwards[False]),
           token_rows=sum(forwards[False]), padded_token_rows=sum(forwards[True]), speedup_vs_padded=padded_s / s)


# ---- the methods as pipelines vs chunked stage barriers ----------------------------------------
PIPE_QUESTIONS = 64
PIPE_MAX_NEW = 256 if ON_CUDA else 32


@pytest.mark.parametrize("sampling", list(SAMPLING))
@pytest.mark.parametrize("method", ["textmas", "tflow"])
def test_pipeline_vs_chunked(benchmark, setup: Setup, tokenized, method: str, sampling: str) -> None:
    """64 questions (official gsm8k prompts, long-tailed output lengths for every generating
    agent, ignore_eos; `sampling` as in bench/old_chunked.py) through
    run_method with SLOTS questions in flight (SLOTS x slots_per_question engine slots, as the CLI
    sizes them: textmas' two senders generate at once), vs the chunked path: SLOTS questions at a
    time on a static engine of 2 x SLOTS slots, each stage waiting for the chunk's slowest question."""
    from minitflow.tflow.methods import run_method, slots_per_question
    benchmark.group = "serving-pipelines"
    net, tokenizer = tokenized
    gen = bench_generator(setup, net.cfg)
    questions = pipeline_questions(PIPE_QUESTIONS)
    sps = [SamplingParams(max_new_tokens=m, ignore_eos=True, **SAMPLING[sampling])
           for m in long_tail(PIPE_QUESTIONS, PIPE_MAX_NEW, seed=2)]
    # senders' outputs are long-tailed too (textmas: up to PIPE_MAX_NEW / 2 tokens each)
    kw = dict(style="gsm8k", generator=gen,
              sender_max_new_tokens=long_tail(PIPE_QUESTIONS, PIPE_MAX_NEW // 2, seed=3))
    piped = LLM(net, tokenizer, eos_token_ids=[], num_slots=SLOTS * slots_per_question(method), cuda_graphs=ON_CUDA)
    chunked = LLM(net, tokenizer, eos_token_ids=[], num_slots=2 * SLOTS, static=True, prefix_cache_bytes=0,
                  cuda_graphs=ON_CUDA)
    out = {}

    def run_piped():
        piped.engine.steps = piped.engine.row_steps = 0
        out["piped"] = run_method(method, piped, questions, sampling=sps, batch_size=SLOTS, **kw)

    def run_chunked():
        chunked.engine.steps = chunked.engine.row_steps = 0
        res = []
        for i in range(0, PIPE_QUESTIONS, SLOTS):
            part = {**kw, "sender_max_new_tokens": kw["sender_max_new_tokens"][i:i + SLOTS]}
            res += run_method(method, chunked, questions[i:i + SLOTS], sampling=sps[i:i + SLOTS],
                              seeds=[sp.seed + j for j, sp in enumerate(sps)][i:i + SLOTS], batch_size=SLOTS, **part)
        out["chunked"] = res

    s, chunked_s = pedantic_vs(benchmark, run_piped, run_chunked, setup.device, 1, 0)
    agree = check_same_tokens([r.token_ids for r in out["piped"]], [r.token_ids for r in out["chunked"]], setup.device)
    record(benchmark, setup, method=method, sampling=sampling, questions=PIPE_QUESTIONS, slots=SLOTS,
           questions_per_s=PIPE_QUESTIONS / s, chunked_questions_per_s=PIPE_QUESTIONS / chunked_s,
           speedup_vs_chunked=chunked_s / s, same_tokens_as_chunked=agree,
           # what bounds the speed-up: decode steps (a step's fixed cost) and rows computed
           # (the per-row cost: on CPU at tiny shapes, the LM head and the sampler over 151,936 logits)
           decode_steps=piped.engine.steps, chunked_decode_steps=chunked.engine.steps,
           steps_ratio=chunked.engine.steps / max(piped.engine.steps, 1),
           row_steps_ratio=chunked.engine.row_steps / max(piped.engine.row_steps, 1),
           cached_share=sum(r.metadata()["token_usage"]["cached_tokens"] for r in out["piped"]) /
           sum(r.processed_tokens for r in out["piped"]))


@pytest.mark.parametrize("share", [0.25, 0.5])
def test_tflow_refill_share(benchmark, setup: Setup, tokenized, share: float) -> None:
    """tflow on the pipeline benchmark's 64 questions (Qwen3-4B's sampling), new questions
    starting together once `share` of the SLOTS window is free vs each as a place frees (the
    default), interleaved on one engine: on a GPU each question's eager stages (senders'
    prefill, generator, receiver's prefill) cost about the same for one question as for
    several, which a group shares; on CPU they cost about their rows. Same tokens either way."""
    from minitflow.tflow.methods import run_method
    benchmark.group = "serving-refill-share"
    net, tokenizer = tokenized
    gen = bench_generator(setup, net.cfg)
    questions = pipeline_questions(PIPE_QUESTIONS)
    sps = [SamplingParams(max_new_tokens=m, ignore_eos=True, **SAMPLING["qwen3"])
           for m in long_tail(PIPE_QUESTIONS, PIPE_MAX_NEW, seed=2)]
    llm = LLM(net, tokenizer, eos_token_ids=[], num_slots=SLOTS, cuda_graphs=ON_CUDA)
    out, steps = {}, {}

    def run(refill: float):
        before = llm.engine.steps
        out[refill] = run_method("tflow", llm, questions, sampling=sps, batch_size=SLOTS, generator=gen,
                                 refill_share=refill)
        steps[refill] = llm.engine.steps - before

    s, each_s = pedantic_vs(benchmark, lambda: run(share), lambda: run(0.0), setup.device, 1, 0)
    agree = check_same_tokens([r.token_ids for r in out[share]], [r.token_ids for r in out[0.0]], setup.device)
    record(benchmark, setup, share=share, questions=PIPE_QUESTIONS, slots=SLOTS, questions_per_s=PIPE_QUESTIONS / s,
           speedup_vs_each=each_s / s, decode_steps=steps[share], each_decode_steps=steps[0.0],
           same_tokens_as_each=agree)


SAMPLES = 4


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_baseline_samples_wait_for_the_shared_prompt(benchmark, setup: Setup, tokenized, cache: str) -> None:
    """baseline with samples=SAMPLES on SLOTS questions (official gsm8k prompt, Qwen3-4B's
    sampling, long-tailed lengths), SLOTS slots: a question's samples that would start in one
    engine step wait a step for the blocks the first of them stores in the prefix cache (the
    default), vs each prefilling the prompt beside the others (`Engine._waits` off). `cold`: the
    cache emptied before each run (a run's start); `warm`: the shared instruction cached, each
    question's own text not (the steady state). The same tokens either way."""
    from minitflow.tflow.methods import run_method
    benchmark.group = "serving-samples"
    net, tokenizer = tokenized
    questions = pipeline_questions(SLOTS)
    sps = [SamplingParams(max_new_tokens=m, ignore_eos=True, **SAMPLING["qwen3"])
           for m in long_tail(SLOTS, PIPE_MAX_NEW, seed=4)]
    llms = {w: LLM(net, tokenizer, eos_token_ids=[], num_slots=SLOTS, cuda_graphs=ON_CUDA) for w in (True, False)}
    llms[False].engine._waits = lambda r, batch: False
    warm = pipeline_questions(2 * SLOTS)[SLOTS:]  # other questions: the instruction, not these texts
    out, prefilled = {}, {}

    def run(waits: bool):
        llm = llms[waits]
        llm.engine.prefix_cache.clear()
        if cache == "warm":
            run_method("baseline", llm, warm[:1], sampling=SamplingParams(max_new_tokens=1))
        out[waits] = run_method("baseline", llm, questions, sampling=sps, seeds=list(range(SLOTS)),
                                samples=SAMPLES, batch_size=SLOTS)
        prefilled[waits] = sum(a.prompt_tokens - a.cached_tokens for r in out[waits] for a in r.agents.values())

    s, off_s = pedantic_vs(benchmark, lambda: run(True), lambda: run(False), setup.device, 3, 1)
    agree = check_same_tokens([r.token_ids for r in out[True]], [r.token_ids for r in out[False]], setup.device)
    record(benchmark, setup, questions=SLOTS, samples=SAMPLES, slots=SLOTS, cache=cache,
           prefilled_tokens=prefilled[True], prefilled_tokens_without_waiting=prefilled[False],
           outputs_per_s=SLOTS * SAMPLES / s, speedup_vs_no_waiting=off_s / s, same_tokens=agree)


LATENT_STEPS = 10


@pytest.mark.parametrize("method, window", [("tflow", "questions"), ("tflow", "receivers"), ("latentmas", "questions")])
def test_samples_vs_repeated(benchmark, setup: Setup, tokenized, method: str, window: str) -> None:
    """samples=4 on PIPE_QUESTIONS / 4 questions (Qwen3-4B's sampling, long-tailed lengths) vs the
    same samples as 4x repeated questions (samples=1, seeds sample_seed(seed, j)), interleaved on
    one engine of SLOTS slots; the same tokens either way. tflow: senders and generator once per
    question, its 4 receivers on the same factors (the first one's prompt KV through the prefix
    cache); `questions`: batch_size SLOTS on both sides (what evaluate --batch_size passes: the
    samples' receivers queue for the slots), `receivers`: SLOTS // 4 questions with samples=4, as
    many receivers in flight as the repeated side's. latentmas (10 latent steps per sender): its
    senders once per question, 4 judgers on copies of their KV, against batch_size 4 x SLOTS on
    the repeated side (what samples=4 ran before: each sample a question of its own)."""
    from minitflow.tflow.methods import run_method, sample_seed
    benchmark.group = "serving-samples"
    net, tokenizer = tokenized
    opts = dict(generator=bench_generator(setup, net.cfg)) if method == "tflow" else dict(latent_steps=LATENT_STEPS)
    n = PIPE_QUESTIONS // SAMPLES
    questions = pipeline_questions(n)
    sps = [SamplingParams(max_new_tokens=m, ignore_eos=True, **SAMPLING["qwen3"])
           for m in long_tail(n, PIPE_MAX_NEW, seed=2)]
    seeds = list(range(n))
    llm = LLM(net, tokenizer, eos_token_ids=[], num_slots=SLOTS, cuda_graphs=ON_CUDA)
    out = {}

    def shared():
        out["shared"] = run_method(method, llm, questions, sampling=sps, seeds=seeds, samples=SAMPLES,
                                   batch_size=SLOTS if window == "questions" else max(1, SLOTS // SAMPLES), **opts)

    def repeated():
        out["repeated"] = run_method(method, llm, [q for q in questions for _ in range(SAMPLES)],
                                     sampling=[sp for sp in sps for _ in range(SAMPLES)],
                                     seeds=[sample_seed(x, j) for x in seeds for j in range(SAMPLES)],
                                     batch_size=SLOTS * (SAMPLES if method == "latentmas" else 1), **opts)

    s, repeated_s = pedantic_vs(benchmark, shared, repeated, setup.device, 3, 1)
    agree = check_same_tokens([r.token_ids for r in out["shared"]], [r.token_ids for r in out["repeated"]],
                              setup.device)
    record(benchmark, setup, method=method, questions=n, samples=SAMPLES, slots=SLOTS, window=window,
           outputs_per_s=n * SAMPLES / s, speedup_vs_repeated=repeated_s / s, same_tokens_as_repeated=agree)


def test_latentmas_pipeline_vs_chunks(benchmark, setup: Setup, tokenized) -> None:
    """LatentMAS on the same 64 long-tailed questions (Qwen3-4B's sampling, 10 latent steps per
    sender): run_method, which streams SLOTS questions in flight and starts a group's senders
    as half the window frees up (stream.REFILL_SHARE), vs chunks of SLOTS through
    run_latentmas, each waiting for its slowest judger (what run_method did before). Every
    question's tokens must be equal."""
    from minitflow.tflow.latentmas import run_latentmas
    from minitflow.tflow.methods import run_method
    benchmark.group = "serving-pipelines"
    net, tokenizer = tokenized
    questions = pipeline_questions(PIPE_QUESTIONS)
    sps = [SamplingParams(max_new_tokens=m, ignore_eos=True, **SAMPLING["qwen3"])
           for m in long_tail(PIPE_QUESTIONS, PIPE_MAX_NEW, seed=2)]
    seeded = [dataclasses.replace(sp, seed=sp.seed + i) for i, sp in enumerate(sps)]  # run_method's seeds
    llm = LLM(net, tokenizer, eos_token_ids=[], num_slots=SLOTS, cuda_graphs=ON_CUDA)
    out = {}

    def run_piped():
        llm.engine.steps = 0
        out["piped"] = run_method("latentmas", llm, questions, sampling=sps, batch_size=SLOTS,
                                  latent_steps=LATENT_STEPS)
        out["piped_steps"] = llm.engine.steps

    def run_chunked():
        llm.engine.steps = 0
        out["chunked"] = [r for i in range(0, PIPE_QUESTIONS, SLOTS)
                          for r in run_latentmas(llm, questions[i:i + SLOTS], "gsm8k", seeded[i:i + SLOTS],
                                                 latent_steps=LATENT_STEPS)]
        out["chunked_steps"] = llm.engine.steps

    s, chunked_s = pedantic_vs(benchmark, run_piped, run_chunked, setup.device, 1, 0)
    agree = check_same_tokens([r.token_ids for r in out["piped"]], [r.token_ids for r in out["chunked"]], setup.device)
    record(benchmark, setup, method="latentmas", sampling="qwen3", latent_steps=LATENT_STEPS, questions=PIPE_QUESTIONS,
           slots=SLOTS, questions_per_s=PIPE_QUESTIONS / s, chunked_questions_per_s=PIPE_QUESTIONS / chunked_s,
           speedup_vs_chunked=chunked_s / s, same_tokens_as_chunked=agree, decode_steps=out["piped_steps"],
           chunked_decode_steps=out["chunked_steps"], steps_ratio=out["chunked_steps"] / max(out["piped_steps"], 1))


def test_condition_memory(benchmark, setup: Setup) -> None:
    """Peak memory the senders' condition adds to their prefill: all L+1 layers + aggregator
    vs the sum taken as the layers run (each in a fresh process; see bench/condition_memory.py)."""
    import subprocess
    import sys
    from pathlib import Path
    benchmark.group = "serving-condition-memory"
    script = Path(__file__).with_name("condition_memory.py")

    # glibc raises its mmap threshold whenever a large block is freed; blocks of that size then come
    # from the heap and stay resident, so the peak depends on the order of frees: plain's moved by
    # ~50 MiB between runs on a 2-core machine, more than the bound (52 MiB) the streamed condition
    # is held to. A threshold set (to glibc's default) stays fixed: peaks repeat within 0.5 MiB.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}

    def peak(mode: str) -> int:
        out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, check=True, env=env)
        return int(out.stdout.split()[-1]) * 1024

    got = {}
    benchmark.pedantic(lambda: got.update(streamed=peak("streamed")), rounds=1, iterations=1)
    got.update(plain=peak("plain"), full=peak("full"))
    full, streamed = got["full"] - got["plain"], max(got["streamed"] - got["plain"], 0)
    from condition_memory import MID
    record(benchmark, setup, layers_plus_one=MID.num_hidden_layers + 1, condition_full_mib=full / 2**20,
           condition_streamed_mib=streamed / 2**20, memory_vs_full=streamed / full,
           bound=2 / (MID.num_hidden_layers + 1))
    assert streamed <= 2 / (MID.num_hidden_layers + 1) * full


def test_generator_memory(benchmark, setup: Setup) -> None:
    """Peak memory and time of the generator stage for 8 questions whose senders finish
    together: one call for all (the pipeline before GENERATOR_BATCH) vs one question per call
    (the default), each in a fresh process (see bench/generator_memory.py)."""
    from benchlib import script_json
    benchmark.group = "serving-generator-memory"

    def run(per_call: int) -> dict:
        return script_json("generator_memory.py", per_call)

    got = {}
    benchmark.pedantic(lambda: got.update(one=run(1)), rounds=1, iterations=1)
    got["all"] = run(8)
    record(benchmark, setup, questions=8, stage_peak_mib_one_by_one=got["one"]["stage_peak_mib"],
           stage_peak_mib_one_call=got["all"]["stage_peak_mib"],
           memory_vs_one_call=got["one"]["stage_peak_mib"] / got["all"]["stage_peak_mib"],
           time_vs_one_call=got["one"]["s"] / got["all"]["s"])
    assert got["one"]["stage_peak_mib"] < got["all"]["stage_peak_mib"]


def test_generator_in_pieces_memory(benchmark, setup: Setup) -> None:
    """Peak memory and time of the generator on one question at Qwen3-4B's 36 layers (16,128
    parameter tokens per sender): every stage in pieces of PIECE_TOKENS (inference's default)
    vs all tokens at once, each in a fresh process (see bench/generator_memory.py); the same
    factors bitwise (tests/test_tflow.py checks that)."""
    from benchlib import script_json
    from minitflow.tflow.generator import PIECE_TOKENS
    benchmark.group = "serving-generator-memory"

    def run(mode: str) -> dict:
        return script_json("generator_memory.py", 1, 1, 36, mode)

    got = {}
    benchmark.pedantic(lambda: got.update(pieces=run("pieces")), rounds=1, iterations=1)
    got["whole"] = run("whole")
    record(benchmark, setup, layers=36, piece_tokens=PIECE_TOKENS, stage_peak_mib_pieces=got["pieces"]["stage_peak_mib"],
           stage_peak_mib_whole=got["whole"]["stage_peak_mib"],
           memory_vs_whole=got["pieces"]["stage_peak_mib"] / got["whole"]["stage_peak_mib"],
           time_vs_whole=got["pieces"]["s"] / got["whole"]["s"])
    assert got["pieces"]["stage_peak_mib"] < got["whole"]["stage_peak_mib"]


def test_tflow_memory_at_the_4b_shape(benchmark, setup: Setup) -> None:
    """tflow on one question at Qwen3-4B's shape on CPU (bf16, random weights, the official
    generator dimensions, 16 new tokens), each way in a fresh process (bench/tflow_memory.py):
    how far the peak resident set rises above the weights during the run, with the generator
    in pieces (the pipeline's default) vs each of its stages on all its tokens at once. The
    official release peaks at 8.2 GiB on an H100 for this run (Qwen3-4B's weights alone are
    7.5 GiB). CPU only (with CUDA, test_method records the device's peak); needs a Qwen3
    tokenizer and about 11 GiB of memory, and skips without them."""
    import os
    from benchlib import script_json, tokenizer_dir
    if ON_CUDA:
        pytest.skip("a CPU stand-in for the GPU's peak; test_method measures it there")
    tok = tokenizer_dir()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if tok is None or memory < 16 * 2**30:
        pytest.skip("needs a Qwen3 tokenizer and 16 GiB of memory")
    benchmark.group = "serving-generator-memory"

    def run(mode: str) -> dict:
        return script_json("tflow_memory.py", tok, 16, mode)

    got = {}
    benchmark.pedantic(lambda: got.update(pieces=run("pieces")), rounds=1, iterations=1)
    got["whole"] = run("whole")
    record(benchmark, setup, shape="qwen3-4b bf16 cpu", weights_gib=got["pieces"]["weights_gib"],
           peak_rise_mib_pieces=got["pieces"]["peak_rise_mib"], peak_rise_mib_whole=got["whole"]["peak_rise_mib"],
           peak_gib_pieces=got["pieces"]["peak_gib"], peak_gib_whole=got["whole"]["peak_gib"],
           s_pieces=got["pieces"]["s"], s_whole=got["whole"]["s"])
    assert got["pieces"]["peak_rise_mib"] < got["whole"]["peak_rise_mib"]


OLD_COMMIT = "e6c0488"  # main before the serving core: run_method in chunks with stage barriers


@pytest.mark.parametrize("sampling", list(SAMPLING))
@pytest.mark.parametrize("method", ["tflow", "textmas"])
def test_pipeline_vs_the_old_chunked_code(benchmark, setup: Setup, tmp_path, method: str, sampling: str) -> None:
    """64 long-tailed questions: this checkout's pipeline vs the code of OLD_COMMIT itself
    (extracted with `git archive`), each in its own process (bench/old_chunked.py: a warm-up on
    one chunk, then one timed run), old and new alternating for 3 rounds, the best of each side
    compared; every question's tokens must be equal. CPU only (the old code
    has no CUDA graphs to compare with); skips without git history or a tokenizer.
    `sampling`: top-p 0.95 alone, where the old code sorts the whole vocabulary per row and step
    (this one selects the nucleus without a sort), so the rows the chunked path computes in vain
    cost most; `qwen3` adds Qwen3-4B's top-k 20 (what the official code samples with there),
    where both samplers are cheap and the rest of the work weighs more.
    textmas senders all generate 16 tokens (the old API has one sender length per call)."""
    import os
    import subprocess
    from pathlib import Path
    from benchlib import script_json, tokenizer_dir
    if ON_CUDA:
        pytest.skip("a CPU comparison")
    tok = tokenizer_dir()
    repo = Path(__file__).resolve().parents[1]
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", OLD_COMMIT, "minitflow"],
                             capture_output=True)
    if tok is None or archive.returncode != 0:
        pytest.skip(f"needs a Qwen3 tokenizer and {OLD_COMMIT} in the git history")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    benchmark.group = "serving-pipelines"

    def run(mode: str, path: Path) -> dict:
        return script_json("old_chunked.py", mode, tok, sampling, method, env={**os.environ, "PYTHONPATH": str(path)},
                           cwd=str(tmp_path))

    got: dict[str, list[dict]] = {"old": [], "new": []}
    benchmark.pedantic(lambda: [got[m].append(run(m, p)) for _ in range(3) for m, p in (("old", old), ("new", repo))],
                       rounds=1, iterations=1)
    assert all(r["tokens"] == got["new"][0]["tokens"] for r in got["old"] + got["new"])
    new_s, old_s = min(r["s"] for r in got["new"]), min(r["s"] for r in got["old"])
    record(benchmark, setup, method=method, sampling=sampling, questions=64, slots=8, old_commit=OLD_COMMIT, s=new_s, old_s=old_s,
           questions_per_s=64 / new_s, old_questions_per_s=64 / old_s, speedup_vs_old_code=old_s / new_s,
           speedups_per_round=[o["s"] / n["s"] for o, n in zip(got["old"], got["new"])])
