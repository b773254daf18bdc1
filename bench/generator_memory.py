"""Peak memory of tflow's generator stage, one way per process:
`python bench/generator_memory.py QUESTIONS_PER_CALL`.

8 questions whose senders finished in the same step go through the generator as the tflow
pipeline sends them (`methods.generated_lora`, at most QUESTIONS_PER_CALL per call; every
call's factors are kept, as the receivers hold them). Generator: the official dimensions
(d_model 1024, token_dim 256, rank 4) for Qwen3-4B's projection shapes over 4 layers (the
real receiver has 36: per question the activations grow with the layers), random, float32,
CPU; conditions of 120 tokens per sender. Prints one JSON line: how far the process's peak
resident set rose during the stage (MiB), its seconds, and the calls' sizes.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from types import SimpleNamespace

import torch

from benchlib import peak_rss_kib
from minitflow.model.config import QWEN3_4B
from minitflow.tflow import methods
from minitflow.tflow.checkpoint import arch_for, random_generator

QUESTIONS, COND_TOKENS = 8, 120
CFG = dataclasses.replace(QWEN3_4B, num_hidden_layers=4)


def main(per_call: int) -> dict:
    torch.set_num_threads(1)
    gen = random_generator(CFG, seed=0, arch=arch_for(CFG)).eval().requires_grad_(False)
    cond = torch.randn(2 * QUESTIONS, COND_TOKENS, CFG.hidden_size, generator=torch.Generator().manual_seed(0))
    llm = SimpleNamespace(cfg=CFG, dtype=torch.float32)  # what generated_lora reads of the LLM
    before, kept, calls = peak_rss_kib(), [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, QUESTIONS, per_call):
            group = list(range(i, min(i + per_call, QUESTIONS)))
            rows = cond[group + [QUESTIONS + q for q in group]]  # senders outermost
            kept.append(methods.generated_lora(llm, gen, rows, None, len(group), aggregated=True))
            calls.append(len(group))
    return {"per_call": per_call, "stage_peak_mib": (peak_rss_kib() - before) / 1024, "s": time.perf_counter() - t0,
            "calls": calls}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
