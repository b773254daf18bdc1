"""The prefill token budget charged with the tokens a step computes against its old charge, the
whole prompt (cache hits included), in one process: `python bench/prefill_budget.py`.

16 requests share a role / few-shot prefix already in the prefix cache (PREFIX tokens, each adds
SUFFIX of its own) and generate NEW tokens each; the engine has 16 slots and the default budget
(8192 tokens). Prints, per charge, the prefill steps the batch took, the tokens each computed, and
the best wall time of ROUNDS; then new/old. CPU, tiny shape (benchlib.TINY), float32, one thread.
"""

from __future__ import annotations

import time

import torch

from benchlib import TINY, random_model
from minitflow.engine.llm import LLM
from minitflow.engine.request import Request
from minitflow.engine.sampler import SamplingParams

PREFIX, SUFFIX, NEW, ROWS, ROUNDS = 1504, 48, 8, 16, 3


def run(model, prompts: list[list[int]], old: bool) -> tuple[float, list[int]]:
    llm = LLM(model, eos_token_ids=[], num_slots=ROWS, max_seq_len=2048)
    if old:  # the old charge: every prompt token, cached or not
        llm.engine._prefill_cost = lambda r: len(r.prompt_ids)
    sp = SamplingParams(max_new_tokens=NEW, ignore_eos=True)
    llm.engine.run([Request(prompts[0][:PREFIX + 1], sp)])  # the shared prefix into the cache
    computed: list[int] = []
    forward = llm.engine.runner._forward
    llm.engine.runner._forward = lambda reqs: (computed.append(sum(llm.engine.runner.prefill_len(r) - r.cached_tokens
                                                                   for r in reqs)), forward(reqs))[1]
    t0 = time.perf_counter()
    llm.engine.run([Request(p, sp) for p in prompts])
    return time.perf_counter() - t0, computed


def main() -> None:
    torch.set_num_threads(1)
    model = random_model(TINY, torch.float32, torch.device("cpu"), max_positions=2048)
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 4000, (PREFIX,), generator=g).tolist()
    prompts = [prefix + torch.randint(0, 4000, (SUFFIX,), generator=g).tolist() for _ in range(ROWS)]
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, old in (("old", True), ("new", False)):
            dt, _ = run(model, prompts, old)
            best[name] = min(best.get(name, dt), dt)
    for name in ("old", "new"):
        _, computed = run(model, prompts, name == "old")
        print(f"{name}: {len(computed)} prefill forwards computing {computed} tokens; best {best[name]:.3f} s")
    print(f"new/old wall: {best['new'] / best['old']:.2f}x")


if __name__ == "__main__":
    main()
