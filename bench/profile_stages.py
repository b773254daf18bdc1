"""Where a tflow question's time goes outside the decode graphs: per stage, the host's time,
the device's kernel time and the kernels launched (one question, after a warm-up question):

    python bench/profile_stages.py TOKENIZER_DIR [NEW_TOKENS]      (default 32)

Stages: the senders' capturing prefill, the generator call, the receiver's prefill, and the
decode steps (graph replays on CUDA). Per stage: calls, host milliseconds inside it, kernel
launches (runtime calls on the host: a graph replay is one) and the device milliseconds of the
kernels they launched; `wall_stage_s` is the run's own per-stage timing (device spans). On the H200 the first three took 0.07,
0.15 and 0.09 s for one question at Qwen3-4B's shape with a few hundred to 1,300 kernels each,
far more than their arithmetic: if a stage's host time is about its wall time while its
kernels' device time is a small part of it, the stage is bound by launching kernels, and
fewer kernels (bench/op_count.py) or capturing it as a graph is what helps; if the device time
is most of it, the kernels themselves are. Runs twice: with the fused functions compiled in
every stage (fused.FUSE "everywhere", the default) and only in the decode steps ("decode"), the
eager stages then op by op: a compiled call's host cost against its fewer launches. Prints one
JSON line. Shape: MINITFLOW_BENCH_SHAPE
as in the benchmarks (Qwen3-4B on CUDA, tiny on CPU, where only host times exist).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from benchlib import QUESTIONS, one_slot_tflow
from minitflow.engine.runner import ModelRunner
from minitflow.model import fused
from minitflow.tflow import methods

STAGE = "stage:"


@contextmanager
def stage_ranges():
    """Each stage inside a profiler range named STAGE + its name (the engine and pipeline
    unchanged: their methods wrapped for the run)."""
    prefill, decode, receivers = ModelRunner.prefill, ModelRunner.decode, methods._TFlow.receivers

    def named_prefill(self, reqs):
        kind = "senders_prefill" if reqs[0].capture is not None else "receiver_prefill"
        with record_function(STAGE + kind):
            return prefill(self, reqs)

    def named_decode(self, slots):
        with record_function(STAGE + "decode"):
            return decode(self, slots)

    def named_receivers(self, group):
        with record_function(STAGE + "generator"):
            return receivers(self, group)

    ModelRunner.prefill, ModelRunner.decode, methods._TFlow.receivers = named_prefill, named_decode, named_receivers
    try:
        yield
    finally:
        ModelRunner.prefill, ModelRunner.decode, methods._TFlow.receivers = prefill, decode, receivers


def main(tokenizer_dir: str, new_tokens: str = "32") -> dict:
    setup, llm, gen, sampling = one_slot_tflow(tokenizer_dir, int(new_tokens))
    cuda = setup.device.type == "cuda"

    def question(i: int):
        return methods.run_method("tflow", llm, [QUESTIONS[i % len(QUESTIONS)]], sampling=sampling, generator=gen,
                                  batch_size=1)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    out = {"device": setup.label}
    for fuse in fused.FUSE_MODES:  # the eager stages with fused kernels, then op by op
        fused.FUSE = fuse
        question(1)  # compiles the fused kernels and captures the graphs outside the profile
        with stage_ranges(), profile(activities=activities) as prof:
            res = question(0)
            if cuda:
                torch.cuda.synchronize()
        out[f"fuse_{fuse}"] = {"new_tokens": len(res[0].token_ids), "wall_stage_s": dict(res[0].timings),
                               "stages": stage_table(prof, cuda)}
    fused.FUSE = "everywhere"
    return out


def stage_table(prof, cuda: bool) -> dict:
    """Per stage: calls, host ms, launches and the device ms of their kernels."""
    events = prof.events()
    ranges = [(ev.time_range.start, ev.time_range.end, ev.name[len(STAGE):]) for ev in events
              if ev.name.startswith(STAGE)]
    stages: dict[str, dict] = defaultdict(lambda: {"calls": 0, "host_ms": 0.0, "launches": 0, "device_ms": 0.0})
    for _, _, name in ranges:
        stages[name]["calls"] += 1
    for ev in events:
        if ev.name.startswith(STAGE):
            stages[ev.name[len(STAGE):]]["host_ms"] += ev.cpu_time_total / 1e3

    def stage_at(t: float) -> str | None:
        return next((name for start, end, name in ranges if start <= t <= end), None)

    if cuda:  # each launch (a runtime call on the host) in the stage whose range holds it; its
        # kernels (device events with the launch's correlation id) add their device time there
        launched: dict[int, str] = {}
        for ev in events:
            if ev.device_type == DeviceType.CPU and "Launch" in ev.name and (name := stage_at(ev.time_range.start)):
                launched[ev.id] = name
                stages[name]["launches"] += 1
        for ev in events:
            if ev.device_type == DeviceType.CUDA and ev.id in launched:
                stages[launched[ev.id]]["device_ms"] += (ev.time_range.end - ev.time_range.start) / 1e3
    return dict(stages)


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
