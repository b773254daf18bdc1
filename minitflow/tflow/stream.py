"""What every method's pipeline shares: questions streamed through a window of places with no
batch barrier (`stream_window`, and how much of the window must be free before new questions
start, `REFILL_SHARE`), and what each question yields (`MethodResult`, per agent `AgentUsage`).
methods.py (baseline, textmas, tflow) and latentmas.py build on it.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from minitflow.engine.llm import LLM
from minitflow.engine.request import Request
from minitflow.engine.sampler import SamplingParams
from minitflow.errors import UserError, check_int

# The share of the window that must be free before new questions start (together). LatentMAS:
# a group's senders cost about the same forwards for one row as for many (3 prefills and
# 3 x latent_steps eager steps) while a free slot idles every decode step until refilled: half
# the window balances the two (bench/test_serving.py::test_latentmas_pipeline_vs_chunks, CPU).
# The others refill each place as it frees: on CPU their prefills cost about the rows they
# compute (tflow at 1/4 and 1/2: 1.00x and 0.99x, bench/test_serving.py::test_tflow_refill_share).
# On a GPU the eager stages look launch-bound (the H200's eager decode step took 30 ms for ~480
# kernels), costing about the same for one question as for several: what a share above 0
# would save there is unmeasured (bench/gpu_session.sh's `refill` part).
REFILL_SHARE = {"baseline": 0.0, "textmas": 0.0, "tflow": 0.0, "latentmas": 0.5}
SEEDS = 2 ** 64  # seeds derived by adding wrap around: a seed near the top is no error mid-run
# Sample j of a question seeded s samples with s + j * SAMPLE_STRIDE (mod SEEDS): odd (the 64-bit
# golden ratio), so the K seeds of a question differ, and for j < 65536 the offset is at least 2^47
# from any multiple of SEEDS: no sample takes the seed of a question within 2^47 of its own (the
# default seeds are sampling.seed + i: neighbours never collide).
SAMPLE_STRIDE = 0x9E3779B97F4A7C15


def sample_seed(seed: int, sample: int) -> int:
    """The seed of sample `sample` of a question seeded `seed` (sample 0 keeps it)."""
    return (seed + sample * SAMPLE_STRIDE) % SEEDS


MAX_SAMPLES = 2 ** 16  # samples per question: sample_seed's distance guarantee holds for j below it


def check_samples(samples: object, name: str = "samples") -> int:
    """Samples per question: an integer in [1, MAX_SAMPLES]. Past the bound a sample's seed may come
    near another question's; 10**20 also hung building the per-request lists before any work."""
    samples = check_int(samples, name)
    if samples > MAX_SAMPLES:
        raise UserError(f"{name} must be <= {MAX_SAMPLES} (each sample's seed stays apart from every other "
                        f"question's up to there), got {samples}")
    return samples


def check_refill_share(share: object) -> float:
    """stream_window's refill_share: a number in [0, 1] (nan was a ValueError from math.ceil)."""
    if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 <= share <= 1:  # nan too
        raise UserError(f"refill_share must be in [0, 1], got {share}")
    return float(share)


@dataclass
class AgentUsage:
    prompt_tokens: int
    completion_tokens: int
    generates: bool  # False: a forward pass only (tflow senders), left out of the official count
    cached_tokens: int = 0  # of prompt_tokens, those whose KV came from the prefix cache
    finish_reason: str | None = None  # its request's ("stop", "length", "prefill"); None: not recorded

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens, "generates": self.generates,
                "finish_reason": self.finish_reason}

    @classmethod
    def of(cls, req: Request) -> "AgentUsage":
        return cls(len(req.prompt_ids), len(req.output_ids), req.generate, req.cached_tokens, req.finish_reason)


@dataclass
class MethodResult:
    method: str
    style: str
    question: str
    answer: str
    finish_reason: str
    agents: dict[str, AgentUsage]
    timings: dict[str, float]  # seconds per stage of this question; total_s from its start to its answer
    batch_size: int  # questions in flight at once
    token_ids: list[int] = field(default_factory=list)
    wall_s_per_question: float | None = None  # the whole run's wall time / its questions (None until it ends)
    sampling: SamplingParams | None = None  # the answering agent's, as run (seed included)
    sample: int = 0  # which of its question's samples (run_method's `samples`) this output is
    compiled: bool = False  # its engine's decode steps through torch.compile (--compile): provenance, as batch_size
    # textmas: the official `conversation_log`, {agent (role name), round, text} per agent: senders A and B
    # (round 0, the texts the receiver read) then the receiver (round 1, the answer); None for the others
    conversation_log: list[dict] | None = None

    @property
    def processed_tokens(self) -> int:
        return sum(a.prompt_tokens + a.completion_tokens for a in self.agents.values())

    @property
    def truncated(self) -> bool:
        """Whether an agent that generates stopped at its max_new_tokens, not at EOS or a stop string: the
        official `truncated_by_max_new_tokens` (baseline and tflow: the answering agent; textmas: senders A,
        B or the receiver; tflow's senders only prefill)."""
        return self.finish_reason == "length" or any(a.generates and a.finish_reason == "length"
                                                     for a in self.agents.values())

    @property
    def official_usage(self) -> dict:
        gen = [a for a in self.agents.values() if a.generates]
        p, c = sum(a.prompt_tokens for a in gen), sum(a.completion_tokens for a in gen)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def metadata(self) -> dict:
        return {
            "method": self.method,
            "finish_reason": self.finish_reason, "truncated": self.truncated,
            "token_usage": {**self.official_usage, "processed_tokens": self.processed_tokens,
                            "cached_tokens": sum(a.cached_tokens for a in self.agents.values()),
                            "per_agent": {k: v.as_dict() for k, v in self.agents.items()}},
            "timings": dict(self.timings),
            "wall_time_per_question": self.wall_s_per_question,
            "batch_size": self.batch_size, "compiled": self.compiled,
            **({"conversation_log": [dict(e) for e in self.conversation_log]} if self.conversation_log is not None else {}),
            **({"sampling": {k: getattr(self.sampling, k) for k in ("temperature", "top_p", "top_k", "seed",
                                                                   "max_new_tokens")}}
               if self.sampling is not None else {}),
        }


def check_keep(keep_results: object, on_result: object) -> bool:
    """keep_results is a bool, and False needs on_result: results would go nowhere."""
    if keep_results not in (True, False):  # "no" is truthy: results kept
        raise UserError(f"keep_results must be True or False, got {keep_results!r}")
    if not keep_results and on_result is None:
        raise UserError("keep_results=False hands each result to on_result only, and none is given: pass on_result")
    return bool(keep_results)


def run_step(llm: LLM) -> list[Request]:
    """One engine step of a run (run_method's pipelines, stream_latentmas). A live question always
    has a request in the engine: none there means they were aborted under the run (a call to this
    LLM from on_result that failed inside a step, which aborts every request in flight; abort()),
    and stream_window waited forever for them."""
    if not llm.engine.in_flight():
        raise UserError("this run's requests were aborted under it (by a call to this LLM from on_result that failed, "
                        "which aborts every request in flight, or by abort()): the run cannot finish")
    return llm.step()


def stream_window(count: int, window: int, start: Callable[[list[int]], None],
                  step: Callable[[], list[tuple[int, MethodResult]]], refill_share: float = 0.0,
                  on_result: Callable[[int, MethodResult], None] | None = None,
                  samples: int = 1, keep_results: bool = True) -> list[MethodResult]:
    """Questions 0..count-1 with at most `window` in flight and no batch barrier. `start(group)`
    queues a group of new questions once `refill_share` of the window is free (at least one
    place; or nothing runs, or every remaining question fits); `step()` runs one engine step
    and returns the outputs it finished, with their results. Results in input order, each
    with the run's wall time per question; `on_result(i, result)` as each finishes.
    With `samples` K a question has K outputs: step() names output j of question i as
    i * K + j, a question leaves the window once its K are in, on_result gets i, and the
    results are question-major (K per question). `keep_results=False`: results go to on_result only and
    none is returned (a long evaluation holds what is in flight, not what it has done)."""
    refill = max(1, math.ceil(refill_share * window))
    todo = deque(range(count))
    results: dict[int, MethodResult] = {}
    left = [samples] * count  # outputs each question still owes
    live = 0
    t0 = time.perf_counter()
    while todo or live:
        free = window - live
        if todo and free > 0 and (free >= refill or not live or len(todo) <= free):
            group = [todo.popleft() for _ in range(min(free, len(todo)))]
            start(group)
            live += len(group)
        for item, result in step():
            if keep_results:
                results[item] = result
            i = item // samples
            left[i] -= 1
            live -= not left[i]
            if on_result is not None:
                on_result(i, result)
    wall = (time.perf_counter() - t0) / count
    for r in results.values():
        r.wall_s_per_question = wall
    return [results[i] for i in range(count * samples)] if keep_results else []
