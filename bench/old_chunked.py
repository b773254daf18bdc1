"""tflow or textmas on 64 long-tailed questions, run by one version of minitflow (whichever
PYTHONPATH gives).

    PYTHONPATH=<checkout> python bench/old_chunked.py old|new TOKENIZER_DIR [top_p|qwen3] [tflow|textmas]

`old`: the code before the serving core (e6c0488): `run_method` in chunks of 8 questions, each
chunk generating up to its longest question's length (that API has one max_new_tokens per
call, and a static batch runs to its slowest row anyway). `new`: the pipeline with 8 questions
in flight and each question's own length. Same tiny Qwen3 (random, seed 0, Qwen3's vocabulary),
same random generator, same questions, seeds and lengths as bench/test_serving.py's pipeline
benchmark. Sampling (SAMPLING): temperature 0.6 and top-p 0.95, the official settings as
written, or `qwen3`, what the official code samples with on Qwen3-4B (plus its
generation_config's top-k 20). textmas senders generate SENDER_NEW tokens each (the old API
has one sender length per call); the new engine gets two slots per textmas question, the rows
the old code's sender batch has (2 x 8); `methods.slots_per_question` says the same, but this
script imports only APIs both versions have. Prints one JSON line: the time of one run of all
the questions after a warm-up on the first SLOTS of them (which also fills the prefix cache with
the role prompts, as a full run would), and each question's tokens cut to its own length (to
compare the versions). The benchmark takes the best of its rounds, each a fresh process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import torch

from minitflow.engine.llm import LLM
from minitflow.engine.sampler import SamplingParams
from minitflow.model.config import QWEN3_4B, Qwen3Config
from minitflow.model.tokenizer import Tokenizer
from minitflow.model.weights import empty_model
from minitflow.tflow.checkpoint import arch_for, random_generator
from minitflow.tflow.methods import run_method

QUESTIONS, SLOTS, MAX_NEW, SENDER_NEW = 64, 8, 32, 16
SAMPLING = {"top_p": dict(temperature=0.6, top_p=0.95), "qwen3": dict(temperature=0.6, top_p=0.95, top_k=20)}


def long_tail(n: int, cap: int, seed: int = 0) -> list[int]:
    """Lognormal output lengths with median cap/4 (sigma 1), capped at cap, at least 1 (the
    serving benchmarks' workload; defined here because this script must import nothing that
    the old code lacks)."""
    g = torch.Generator().manual_seed(seed)
    return [max(1, min(cap, int(round(cap / 4 * math.exp(float(v)))))) for v in torch.randn(n, generator=g)]


def pipeline_questions(n: int) -> list[str]:
    """The pipeline benchmarks' GSM8K-style questions."""
    return [f"A shop sells {i + 3} boxes of {2 * i + 5} pens and {i} more pens. How many pens?" for i in range(n)]


def main(mode: str, tokenizer_dir: str, sampling: str = "top_p", method: str = "tflow") -> dict:
    torch.set_num_threads(1)
    cfg = Qwen3Config(vocab_size=QWEN3_4B.vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                      max_position_embeddings=2048, eos_token_ids=QWEN3_4B.eos_token_ids)
    torch.manual_seed(0)
    model = empty_model(cfg, torch.float32, "cpu", 4096)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if name.endswith("norm.weight") else p.normal_(0.0, 0.02)
    tokenizer = Tokenizer(tokenizer_dir)
    arch = arch_for(cfg, dict(d_model=128, head_dim=32, output_dim=32, token_dim=32))
    gen = random_generator(cfg, seed=0, arch=arch).eval().requires_grad_(False)
    questions = pipeline_questions(QUESTIONS)
    lengths = long_tail(QUESTIONS, MAX_NEW, seed=2)
    base = SamplingParams(max_new_tokens=MAX_NEW, ignore_eos=True, **SAMPLING[sampling])
    if mode == "old":
        llm = LLM(model, tokenizer, eos_token_ids=[])

        def run(n: int = QUESTIONS):
            return [r for i in range(0, n, SLOTS)
                    for r in run_method(method, llm, questions[i:i + SLOTS], generator=gen, batch_size=SLOTS,
                                        sampling=dataclasses.replace(base, max_new_tokens=max(lengths[i:i + SLOTS])),
                                        seeds=list(range(i, i + SLOTS)), sender_max_new_tokens=SENDER_NEW)]
    else:
        llm = LLM(model, tokenizer, eos_token_ids=[], num_slots=SLOTS * (2 if method == "textmas" else 1))
        sps = [dataclasses.replace(base, max_new_tokens=m) for m in lengths]

        def run(n: int = QUESTIONS):
            return run_method(method, llm, questions[:n], sampling=sps[:n], generator=gen, batch_size=SLOTS,
                              sender_max_new_tokens=SENDER_NEW)
    run(SLOTS)  # warm-up
    t0 = time.perf_counter()
    results = run()
    took = time.perf_counter() - t0
    return {"mode": mode, "method": method, "sampling": sampling, "s": took,
            "tokens": [r.token_ids[:m] for r, m in zip(results, lengths)]}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
