"""End-to-end benchmarks: the three methods per question, and `LLM.generate` vs transformers.

The methods run through `minitflow.tflow.methods.run_method` with the decoding the official
code uses on Qwen3-4B (temperature 0.6 and top_p 0.95 as it passes them, top_k 20 from the
model's generation_config.json, which HF fills in) and `ignore_eos`, so every generating agent produces
exactly `NEW_TOKENS` tokens on random weights (textmas senders too:
`sender_max_new_tokens=NEW_TOKENS` instead of the official 1024). On CUDA at the Qwen3-4B shape
each method also records its peak memory and its speed-up over the official release's
figures in issue 4 (H100, random Qwen3-4B, ~120-token prompts, 256 new tokens, sampling).
They need a real Qwen3 tokenizer: `MINITFLOW_BENCH_TOKENIZER` (a directory with
tokenizer.json) or ../shared/reference/golden-small/model; otherwise they skip.
"""

from __future__ import annotations


import pytest
import torch

from benchlib import QUESTIONS, Setup, bench_generator, make_setup, pedantic_vs, random_ids, record, tokenized_model
from minitflow.engine.llm import LLM, Generation
from minitflow.engine.sampler import SamplingParams
from minitflow.model.qwen3 import Qwen3Model
from old_chunked import SAMPLING

SETUP = make_setup()
ON_CUDA = SETUP.device.type == "cuda"
NEW_TOKENS = 256 if ON_CUDA else 32
QUESTION_COUNTS = (1, 20) if ON_CUDA else (1, 4)
E2E_ROUNDS, E2E_WARMUP = 2, 1  # seconds-long calls; the best of 2 rounds is reported
# graphs: the eager step captured as CUDA graphs (seconds); compiled: torch.compile (minutes at
# 4B, select it with -k); compiling on 2 CPU cores costs minutes too, so CPU runs eager only
MODES = ("eager", "graphs", "compiled") if ON_CUDA else ("eager",)



# ---- the three methods -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def e2e(setup: Setup, model: Qwen3Model):
    """(methods module, {(mode, slots): LLM with a Qwen3 tokenizer}, random TFlowGenerator); the tiny CPU
    model gets Qwen3's vocabulary so that the tokenizer's ids fit."""
    methods = pytest.importorskip("minitflow.tflow.methods", reason="minitflow.tflow.methods not importable yet")
    net, tokenizer = tokenized_model(setup, model)
    # one engine per slot count, as the CLI sizes it: questions x slots_per_question (textmas: 2),
    # so the batch-1 peak memory holds one slot's KV cache and LoRA buffers, not twenty
    llms = {(mode, n * k): LLM(net, tokenizer, eos_token_ids=[tokenizer.eos_token_id], compile=(mode == "compiled"),
                               cuda_graphs=(mode == "graphs"), num_slots=n * k)
            for mode in MODES for n in QUESTION_COUNTS for k in (1, 2)}
    gen = bench_generator(setup, net.cfg)
    return methods, llms, gen


# the official release on an H100 (issue 4): wall seconds per batch and peak GiB, by (method, batch)
OFFICIAL = {("baseline", 1): (10.5, 7.6), ("tflow", 1): (28.0, 8.2),
            ("baseline", 20): (26.4, 8.7), ("tflow", 20): (34.7, 18.8)}


def run_questions(e2e, method: str, n: int, mode: str, **generator_options) -> list:
    methods, llms, gen = e2e
    questions = (QUESTIONS * n)[:n]
    sampling = SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True, **SAMPLING["qwen3"])
    llm = llms[(mode, n * methods.slots_per_question(method))]
    return methods.run_method(method, llm, questions, style="gsm8k", sampling=sampling, generator=gen,
                              batch_size=n, sender_max_new_tokens=NEW_TOKENS, **generator_options)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("questions", QUESTION_COUNTS)
@pytest.mark.parametrize("method", ("baseline", "textmas", "tflow"))
def test_method(benchmark, setup: Setup, e2e, method: str, questions: int, mode: str) -> None:
    """A batch of questions through one method vs baseline on the same questions, interleaved.

    `graphs` / `compiled` (CUDA only) matter here: textmas and tflow alternate batch sizes (2n sender
    rows, n receiver rows) on one LLM, which is where a compiled engine can lose its graphs."""
    benchmark.group = f"method-q{questions}-{mode}"
    last: dict[str, list] = {}

    def run() -> None:
        last["results"] = run_questions(e2e, method, questions, mode)

    if method == "baseline":
        baseline = lambda: None  # noqa: E731
    else:
        baseline = lambda: run_questions(e2e, "baseline", questions, mode)  # noqa: E731
    for llm in e2e[1].values():  # caches of earlier benchmarks must not count in this peak
        llm.release_memory()
    if ON_CUDA:
        torch.cuda.reset_peak_memory_stats()
    s, base_s = pedantic_vs(benchmark, run, baseline, setup.device, E2E_ROUNDS, E2E_WARMUP)
    extra = {}
    if ON_CUDA:  # process-wide: the weights, the LLM's caches, the generator, the methods' tensors
        extra["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if setup.name == "qwen3-4b" and NEW_TOKENS == 256 and (method, questions) in OFFICIAL:
            official_s, official_gib = OFFICIAL[(method, questions)]
            extra.update(official_s=official_s, speedup_vs_official=official_s / s, official_peak_gib=official_gib)
    results = last["results"]
    official = sum(r.official_usage["total_tokens"] for r in results) / questions
    processed = sum(r.processed_tokens for r in results) / questions
    generated = sum(r.official_usage["completion_tokens"] for r in results)
    stages = {k: v for k, v in results[0].timings.items() if k != "total_s"}
    record(benchmark, setup, method=method, questions=questions, mode=mode, new_tokens=NEW_TOKENS,
           s_per_question=s / questions, generated_tokens_per_s=generated / s,
           official_tokens_per_question=official, processed_tokens_per_question=processed,
           **{f"stage_{k}": v for k, v in stages.items()},
           time_vs_baseline=(s / base_s) if method != "baseline" else 1.0, **extra)


GENERATOR_OPTIONS = {"one-question-pieces": {"generator_batch": 1},  # the CPU default (GENERATOR_BATCH)
                     "all-questions-pieces": {"generator_batch": None},  # the CUDA default
                     "one-question-whole": {"generator_piece": None}}


@pytest.mark.parametrize("options", list(GENERATOR_OPTIONS))
def test_tflow_generator_options(benchmark, setup: Setup, e2e, options: str) -> None:
    """tflow on the most questions (CUDA graphs on a GPU) with the generator three ways: one
    question per call (stages in pieces: the least memory, the most kernel launches; the CPU
    default, and against itself the row shows the noise), every question whose senders are done
    in one call (the CUDA default), or whole stages. Records the time against one question per
    call (interleaved) and, on CUDA, the peak memory: the evidence for the defaults
    (methods.GENERATOR_BATCH, generator.PIECE_TOKENS)."""
    n, mode = max(QUESTION_COUNTS), "graphs" if ON_CUDA else "eager"
    benchmark.group = f"tflow-generator-q{n}-{mode}"
    for llm in e2e[1].values():
        llm.release_memory()
    if ON_CUDA:
        torch.cuda.reset_peak_memory_stats()
    s, one_s = pedantic_vs(benchmark, lambda: run_questions(e2e, "tflow", n, mode, **GENERATOR_OPTIONS[options]),
                               lambda: run_questions(e2e, "tflow", n, mode, generator_batch=1), setup.device,
                               E2E_ROUNDS, E2E_WARMUP)
    extra = {"peak_gib": torch.cuda.max_memory_allocated() / 2**30} if ON_CUDA else {}
    record(benchmark, setup, options=options, questions=n, mode=mode, time_vs_one_per_call=s / one_s, **extra)


# ---- LLM.generate vs transformers ------------------------------------------------------------
PROMPT_TOKENS = 120


@pytest.fixture(scope="module")
def hf_model(setup: Setup, model: Qwen3Model):
    """transformers' Qwen3ForCausalLM with our model's weights (q,k,v and gate,up un-fused)."""
    transformers = pytest.importorskip("transformers")
    c = model.cfg
    hc = transformers.Qwen3Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=c.tie_word_embeddings, max_position_embeddings=4096,
        eos_token_id=None, bos_token_id=None, pad_token_id=0)
    with torch.device(setup.device):
        hf = transformers.AutoModelForCausalLM.from_config(hc, dtype=setup.dtype)
    hf = hf.eval().requires_grad_(False)
    q, kv, inter = c.q_size, c.kv_size, c.intermediate_size
    with torch.no_grad():
        hf.model.embed_tokens.weight.copy_(model.embed_tokens.weight)
        hf.model.norm.weight.copy_(model.norm.weight)
        if not c.tie_word_embeddings:
            hf.lm_head.weight.copy_(model.lm_head.weight)
        for ours, theirs in zip(model.layers, hf.model.layers):
            at, mlp = theirs.self_attn, theirs.mlp
            at.q_proj.weight.copy_(ours.qkv_proj.weight[:q])
            at.k_proj.weight.copy_(ours.qkv_proj.weight[q:q + kv])
            at.v_proj.weight.copy_(ours.qkv_proj.weight[q + kv:])
            at.o_proj.weight.copy_(ours.o_proj.weight)
            at.q_norm.weight.copy_(ours.q_norm.weight)
            at.k_norm.weight.copy_(ours.k_norm.weight)
            mlp.gate_proj.weight.copy_(ours.gate_up_proj.weight[:inter])
            mlp.up_proj.weight.copy_(ours.gate_up_proj.weight[inter:])
            mlp.down_proj.weight.copy_(ours.down_proj.weight)
            theirs.input_layernorm.weight.copy_(ours.input_layernorm.weight)
            theirs.post_attention_layernorm.weight.copy_(ours.post_attention_layernorm.weight)
    return hf


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", (1, 20) if ON_CUDA else (1, 8))
def test_generate_vs_transformers(benchmark, setup: Setup, model: Qwen3Model, hf_model, batch: int,
                                  mode: str) -> None:
    """~120-token prompts, NEW_TOKENS greedy tokens per row: LLM.generate vs HF generate."""
    benchmark.group = f"generate-b{batch}"
    ids = random_ids(model.cfg, batch, PROMPT_TOKENS, setup.device, seed=3)
    prompts = ids.tolist()
    llm = LLM(model, compile=(mode == "compiled"), cuda_graphs=(mode == "graphs"), num_slots=batch)
    sampling = SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)
    last: dict[str, object] = {}

    def ours() -> None:
        last["ours"] = llm.generate(prompts, sampling)

    def theirs() -> None:
        with torch.inference_mode():
            last["hf"] = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                           min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)

    ours()  # compile / allocate the cache outside the timing
    if ON_CUDA:
        torch.cuda.reset_peak_memory_stats()
    rounds = E2E_ROUNDS if ON_CUDA else 5  # sub-second on CPU: more rounds against scheduler noise
    s, hf_s = pedantic_vs(benchmark, ours, theirs, setup.device, rounds, E2E_WARMUP)
    gens: list[Generation] = last["ours"]  # type: ignore[assignment]
    hf_tokens = last["hf"][:, PROMPT_TOKENS:].tolist()  # type: ignore[index]
    same = sum(a == b for g, h in zip(gens, hf_tokens) for a, b in zip(g.token_ids, h)) / (batch * NEW_TOKENS)
    new = batch * NEW_TOKENS
    record(benchmark, setup, batch=batch, mode=mode, prompt_tokens=PROMPT_TOKENS, new_tokens=NEW_TOKENS,
           tokens_per_s=new / s, decode_tokens_per_s=batch * (NEW_TOKENS - 1) / gens[0].decode_s,
           prefill_s=gens[0].prefill_s, hf_s=hf_s, hf_tokens_per_s=new / hf_s, speedup_vs_transformers=hf_s / s,
           same_tokens_as_hf=same,
           **({"peak_gib_both": torch.cuda.max_memory_allocated() / 2**30} if ON_CUDA else {}))
