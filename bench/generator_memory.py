"""Peak memory of tflow's generator stage, one way per process:

    python bench/generator_memory.py QUESTIONS_PER_CALL [QUESTIONS [LAYERS [pipeline|pieces|whole]]]

QUESTIONS (default 8) questions whose senders finished in the same step go through the
generator, at most QUESTIONS_PER_CALL per call, every call's factors kept, as the receivers hold
them. `pipeline` (default): through `methods.generated_lora`, as the tflow pipeline sends them
(factors and the receivers' LoRA); `pieces`: the generator's factors alone, every stage in pieces
of `generator.PIECE_TOKENS` parameter tokens (what the pipeline runs); `whole`: the same with
each stage on all the call's parameter tokens at once (the generator before it ran in pieces).
Generator: the official dimensions (d_model 1024, token_dim 256, rank 4) for Qwen3-4B's
projection shapes over LAYERS layers (default 4; the real receiver has 36, and the parameter
tokens grow with them: 448 per layer and sender), random, float32, CPU; conditions of 120
tokens per sender. Prints one JSON line: how far the process's peak resident set rose during
the stage (MiB), its seconds, and the calls' sizes.
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
from minitflow.tflow.condition import generator_factors

COND_TOKENS = 120


def main(per_call: int, questions: int = 8, layers: int = 4, mode: str = "pipeline") -> dict:
    torch.set_num_threads(1)
    cfg = dataclasses.replace(QWEN3_4B, num_hidden_layers=layers)
    gen = random_generator(cfg, seed=0, arch=arch_for(cfg)).eval().requires_grad_(False)
    cond = torch.randn(2 * questions, COND_TOKENS, cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    llm = SimpleNamespace(cfg=cfg, dtype=torch.float32)  # what generated_lora reads of the LLM
    before, kept, calls = peak_rss_kib(), [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, questions, per_call):
            group = list(range(i, min(i + per_call, questions)))
            rows = cond[group + [questions + q for q in group]]  # senders outermost
            if mode == "pipeline":
                kept.append(methods.generated_lora(llm, gen, rows, None, len(group), aggregated=True))
            else:
                kept.append(generator_factors(gen, rows, None, **({"piece": None} if mode == "whole" else {})))
            calls.append(len(group))
    return {"per_call": per_call, "layers": layers, "mode": mode, "stage_peak_mib": (peak_rss_kib() - before) / 1024,
            "s": time.perf_counter() - t0, "calls": calls}


if __name__ == "__main__":
    print(json.dumps(main(*map(int, sys.argv[1:4]), *sys.argv[4:5])))
