"""tflow on one question at Qwen3-4B's shape (36 layers, bf16, random weights, the official
generator dimensions, Qwen3's tokenizer) on CPU, one way per process:

    python bench/tflow_memory.py TOKENIZER_DIR NEW_TOKENS [pieces|whole]

`pieces`: the pipeline as it runs (each generator stage in pieces of generator.PIECE_TOKENS
parameter tokens); `whole`: each generator stage on all its tokens at once. Prints one JSON
line: the weights (receiver and generator, GiB), the resident set before the run and its peak
during it (GiB), how far the peak rose above the resident set before (MiB: the run's own
memory, what a GPU's peak adds to its weights) and the seconds. Needs about 11 GiB of memory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from benchlib import peak_rss_kib, random_model, resident_kib
from minitflow import LLM, SamplingParams
from minitflow.model.config import QWEN3_4B
from minitflow.model.tokenizer import Tokenizer
from minitflow.tflow.checkpoint import arch_for, random_generator
from minitflow.tflow.methods import run_method

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def main(tokenizer_dir: str, new_tokens: str, mode: str = "pieces") -> dict:
    torch.set_num_threads(2)
    model = random_model(QWEN3_4B, torch.bfloat16, torch.device("cpu"), max_positions=4096)
    gen = random_generator(QWEN3_4B, seed=0, arch=arch_for(QWEN3_4B))
    gen.parameter_generator.to(torch.bfloat16)  # as load_checkpoint does; the aggregator stays float32
    gen.eval().requires_grad_(False)
    tokenizer = Tokenizer(tokenizer_dir)
    llm = LLM(model, tokenizer, eos_token_ids=[tokenizer.eos_token_id], num_slots=1)
    weights = sum(p.numel() * p.element_size() for m in (model, gen) for p in m.parameters())
    before = resident_kib()
    if peak_rss_kib() > before:  # start the peak here: Linux resets VmHWM to VmRSS on "5"
        Path("/proc/self/clear_refs").write_text("5")
    sampling = SamplingParams(max_new_tokens=int(new_tokens), temperature=0.6, top_p=0.95, top_k=20,
                              ignore_eos=True, seed=0)
    t0 = time.perf_counter()
    result = run_method("tflow", llm, [QUESTION], sampling=sampling, generator=gen, batch_size=1,
                        **({"generator_piece": None} if mode == "whole" else {}))
    took = time.perf_counter() - t0
    peak = peak_rss_kib()
    return {"mode": mode, "new_tokens": len(result[0].token_ids), "weights_gib": weights / 2**30,
            "resident_before_gib": before / 2**20, "peak_gib": peak / 2**20, "peak_rise_mib": (peak - before) / 1024,
            "s": took}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
