"""Soak: a long run (an evaluation of thousands of questions, a notebook calling run_method or
generate over and over, a scorer running program after program) holds what is in flight, not
what it has done. Every round of the same mixed workload must leave the engine's containers
empty, its requests and LoRA factors freed, the prefix cache within its budget, and the code
sandbox no process, descriptor or folder more than before. On the demo model, in seconds."""

from __future__ import annotations

import errno
import gc
import os
import threading
import weakref
from collections import Counter

import pytest
import torch

from minitflow import demo, demo_dir
from minitflow.engine.engine import COND_KEYS, Engine
from minitflow.engine.llm import LLM
from minitflow.engine.prefix_cache import BLOCK
from minitflow.engine.sampler import SamplingParams
from minitflow.eval import sandbox
from minitflow.eval.code_exec import run_code_tests, run_code_tests_many
from minitflow.model.config import Qwen3Config
from minitflow.model.kv_cache import kv_bytes
from minitflow.model.lora import LoraWeights
from minitflow.tflow.checkpoint import load_checkpoint
from minitflow.tflow.methods import run_method

DEMO = demo_dir()
needs_demo = pytest.mark.skipif(not (DEMO / "tflow.pt").is_file(), reason="the demo artifacts are not built")
SLOTS, WINDOW = 4, 2
ROUNDS = 3  # ~70 requests each: the first builds what is made once (LoRA buffers, hashes), the others must add nothing


@pytest.fixture(scope="module")
def llm() -> LLM:
    cfg = Qwen3Config.from_dir(DEMO)
    budget = 12 * kv_bytes(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, torch.float32,
                           positions=BLOCK)  # a dozen blocks: every round evicts
    return LLM.load(DEMO, dtype="float32", device="cpu", num_slots=SLOTS, prefix_cache_bytes=budget)


def _tensors() -> int:
    return sum(torch.is_tensor(o) for o in gc.get_objects())


def _cached_tensors(llm: LLM) -> int:
    """Tensors the engine keeps on purpose, within their bounds: prefix-cache blocks (k, v and
    condition rows) and the condition-key memo's layer weights (one per recent tflow run)."""
    e = llm.engine
    return sum(2 + len(x.cond) for x in e.prefix_cache.entries.values()) + len(e._cond_keys)


def _check_engine_idle(llm: LLM) -> None:
    e = llm.engine
    assert not e.scheduler.waiting and not e.scheduler.running and e.scheduler.free == list(range(SLOTS))
    assert not e.ring.pending and not e._held and not e.in_flight() and not e.has_unfinished()
    assert len(e._cond_keys) <= COND_KEYS
    pc = e.prefix_cache
    assert pc.used == sum(x.nbytes for x in pc.entries.values()) <= pc.budget  # the books match the blocks
    ids = {x.id for x in pc.entries.values()} | {0}
    assert all(parent in ids for parent, _ in pc.entries)  # no block kept whose prefix was evicted


@needs_demo
def test_engine_state_stays_bounded_over_rounds_of_requests(llm, monkeypatch):
    """Baseline, tflow, textmas and latentmas questions, generate and capture_hidden calls, bare
    add_request / step, and a run cut short by an error, round after round (~210 requests): after
    each round nothing of it is left (requests, LoRA factors, queue entries, held tokens), the
    prefix cache keeps its budget, and the tensors alive outside it are as many as after the first."""
    generator = load_checkpoint(DEMO / "tflow.pt", llm.cfg)
    qs = [r["question"] for r in demo.read_jsonl(DEMO / "heldout.jsonl")]
    reqs: list[weakref.ref] = []
    factors: list[weakref.ref] = []
    add, row = Engine.add_request, LoraWeights.row

    def add_spy(self, req):
        reqs.append(weakref.ref(req))
        return add(self, req)

    def row_spy(self, i):
        out = row(self, i)
        factors.extend(weakref.ref(t) for layer in out.layers for a, bs in layer.values() for t in (a, *bs))
        return out

    monkeypatch.setattr(Engine, "add_request", add_spy)
    monkeypatch.setattr(LoraWeights, "row", row_spy)
    sp = SamplingParams(max_new_tokens=2)
    alive_in_flight: list[int] = []

    def watch(i, result):  # requests alive as a question finishes: the window's, not the run's so far
        alive_in_flight.append(sum(r() is not None for r in reqs))

    tensors = []
    for k in range(ROUNDS):
        batch = qs[k * 12:(k + 1) * 12]  # new questions each round: new prefix blocks, evictions
        start = len(reqs)
        gc.collect()
        gc.disable()  # a finished question's requests go at once (refcounts), not at a later collection
        try:
            run_method("baseline", llm, batch, style=demo.STYLE, sampling=sp, batch_size=WINDOW, on_result=watch)
            run_method("tflow", llm, batch[:6], style=demo.STYLE, sampling=sp, generator=generator,
                       batch_size=WINDOW, on_result=watch)
            run_method("textmas", llm, batch[:6], style=demo.STYLE, sampling=sp, batch_size=WINDOW,
                       sender_max_new_tokens=2, on_result=watch)
            run_method("latentmas", llm, batch[:6], style=demo.STYLE, sampling=sp, batch_size=WINDOW,
                       latent_steps=1, on_result=watch)
        finally:
            gc.enable()
        # 3 requests per question (tflow, textmas) x the window, and the one that just finished
        assert max(alive_in_flight) - start <= 3 * WINDOW + 1, alive_in_flight
        llm.generate(batch[:6], SamplingParams(max_new_tokens=3, stop=("e", " ")))
        llm.capture_hidden(batch[:2], _capture(llm, batch[:2]))
        for q in batch[:4]:
            llm.add_request(q, sp)
        while llm.has_unfinished():
            llm.step()

        def boom(i, result):
            raise RuntimeError("scorer failed")

        with pytest.raises(RuntimeError, match="scorer failed"):
            run_method("tflow", llm, batch[6:], style=demo.STYLE, sampling=sp, generator=generator,
                       batch_size=WINDOW, on_result=boom)
        gc.collect()
        assert len(reqs) - start > 60  # the round ran what it says
        assert [r for r in reqs if r() is not None] == []
        assert [f for f in factors if f() is not None] == []
        _check_engine_idle(llm)
        tensors.append(_tensors() - _cached_tensors(llm))
    assert tensors[1:] == [tensors[1]] * (ROUNDS - 1), tensors


def _capture(llm: LLM, prompts: list[str]):
    from minitflow.model.qwen3 import Capture
    n = [len(llm.encode(p)) for p in prompts]
    return Capture(layers=[0, llm.cfg.num_hidden_layers], starts=[0] * len(n), ends=n)


# ---- the code sandbox -------------------------------------------------------------------------

ADD_META = {"dataset": "humaneval", "task_id": "Soak/0", "entry_point": "add",
            "prompt": 'def add(a: int, b: int) -> int:\n    """Add."""\n', "canonical_solution": "    return a + b\n",
            "base_input": [[1, 2], [0, 0]], "plus_input": [[-7, -8]], "atol": 0}
PROGRAMS = {  # (program, passes): one of each way a program ends
    "right": ("def add(a, b):\n    return a + b\n", True),
    "wrong": ("def add(a, b):\n    return a - b\n", False),
    "raises": ("def add(a, b):\n    raise ValueError(a)\n", False),
    "exits": ("import os\ndef add(a, b):\n    os._exit(3)\n", False),
    "spins": ("def add(a, b):\n    while True:\n        pass\n", False),
    "sleeps": ("import time\ndef add(a, b):\n    time.sleep(100)\n", False),
    "syntax": ("def add(a, b)\n    return a\n", False),
    "forks": ("import os\ndef add(a, b):\n    os.fork()\n    return a + b\n", False),
    "hogs": ("def add(a, b):\n    x = bytearray(1 << 34)\n    return a + b\n", False),
    "reads stdin": ("import sys\ndef add(a, b):\n    sys.stdin.read()\n    return a + b\n", False),
    "floods": ("def add(a, b):\n    print('x' * 1000000)\n    return a + b\n", True),
}


def _sample():
    from minitflow.eval.data import Sample
    return Sample(id="Soak/0", question=ADD_META["prompt"], answer="", meta=dict(ADD_META))


def _fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listing /proc/self/fd, closed by now
            pass
    return sorted(out)


def _children() -> list[int]:
    """Live processes whose parent is this one (the scorer's sandbox launchers)."""
    me, out = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                _, ppid = f.read().rpartition(")")[2].split()[:2]
        except OSError:
            continue
        if ppid == me:
            out.append(int(pid))
    return out


def _leftovers() -> dict[str, list]:
    return {"descriptors": _fds(), "children": _children(), "folders": os.listdir(sandbox._sandbox_root()),
            "uids": list(sandbox._uids_in_use), "threads": [t.name for t in threading.enumerate()]}


def _new_since(before: dict[str, list]) -> dict[str, list]:
    """What is open or running now and was not before (what an earlier test left may end meanwhile)."""
    now = _leftovers()
    return {k: list((Counter(now[k]) - Counter(before[k])).elements()) for k in now}


def test_a_long_code_run_leaves_no_process_descriptor_or_folder():
    """Programs that pass, fail, raise, exit, spin, sleep, fork, hog memory or flood their output,
    two sandboxes at a time: each verdict as expected, and afterwards no child process, open
    descriptor, sandbox folder, sandbox uid or thread more than before."""
    sample = _sample()
    run_code_tests(sample, PROGRAMS["right"][0])  # the isolation probe and the expected outputs, made once
    before = _leftovers()
    items = [(sample, program) for program, _ in PROGRAMS.values()]
    results = run_code_tests_many(items, workers=2, timeout=1.0)
    assert [r[0] and r[1] for r in results] == [ok for _, ok in PROGRAMS.values()], results
    assert _new_since(before) == {k: [] for k in before}


def test_a_sandbox_that_cannot_start_leaves_no_descriptor(monkeypatch):
    """A launcher that could not be started (fork's EAGAIN at the process limit, EMFILE, Ctrl-C
    in Popen) left the parent's ends of its three pipes open, three descriptors per try: a
    scoring loop that goes on after such errors reached the descriptor limit, and every later
    sandbox failed."""
    run_code_tests(_sample(), PROGRAMS["right"][0])  # probed and warm before the count
    before = _leftovers()

    def no_fork(*args, **kwargs):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(sandbox.subprocess, "Popen", no_fork)
    for _ in range(5):
        with pytest.raises(OSError, match="temporarily unavailable"):
            run_code_tests(_sample(), PROGRAMS["right"][0])
    monkeypatch.undo()
    assert _new_since(before) == {k: [] for k in before}
    assert run_code_tests(_sample(), PROGRAMS["right"][0])[:2] == (True, True)
