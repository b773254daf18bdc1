"""The engine's Python API (LLM): one request aborted alone, prompts from a generator, engines on
one model taking turns on its lock; and run_method's batch_size check."""

from __future__ import annotations

import sys
import threading

import pytest
import torch

from minitflow import LLM, SamplingParams, build_lora
from minitflow.engine.request import Request, Status
from minitflow.errors import UserError
from minitflow.model.lora import LoraWeights
from minitflow.model.weights import load_model
from helpers import _llm, _prompts, _random_factors


def _sps(sampled: bool) -> list[SamplingParams]:
    return [SamplingParams(max_new_tokens=12, temperature=0.8 if sampled else 0.0, top_p=0.9, seed=40 + i)
            for i in range(4)]


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_aborting_one_request_mid_decode_leaves_the_others_tokens(model, sampled):
    """Only abort_all() existed: a stream could not drop one request. abort(req) frees its slot at
    once (a queued request takes it) and the others get the tokens they get without it."""
    prompts, sps = _prompts(4, seed=11), _sps(sampled)
    want = [g.token_ids for g in _llm(model, num_slots=2).generate([prompts[i] for i in (0, 2, 3)],
                                                                    [sps[i] for i in (0, 2, 3)])]
    llm = _llm(model, num_slots=2)
    reqs = [llm.add_request(p, sp) for p, sp in zip(prompts, sps)]
    for _ in range(4):
        llm.step()
    victim = reqs[1]
    assert victim.status is Status.RUNNING and 0 < len(victim.output_ids) < 12
    kept = list(victim.output_ids)
    assert llm.abort(victim) is True
    assert victim.status is Status.ABORTED and victim.finish_reason == "abort" and victim.finished
    assert victim.slot not in llm.engine.scheduler.running and victim.slot in llm.engine.scheduler.free
    while llm.has_unfinished():
        llm.step()
    assert victim.output_ids == kept  # no token of a step still in flight lands on it
    assert [reqs[i].output_ids for i in (0, 2, 3)] == want
    assert llm.abort(victim) is False and llm.abort(reqs[0]) is False  # done: nothing to undo


def test_abort_all_marks_each_request_as_abort_marks_one(model):
    """abort_all() set the status ABORTED but left finish_reason None: a stream holding a request read no reason."""
    llm = _llm(model, num_slots=1)
    sp = SamplingParams(max_new_tokens=5)
    running, queued = llm.add_request([5, 6, 7], sp), llm.add_request([8, 9], sp)
    llm.step()
    assert running.status is Status.RUNNING and queued.status is Status.WAITING
    assert set(map(id, llm.engine.abort_all())) == {id(running), id(queued)}
    for req in (running, queued):
        assert req.status is Status.ABORTED and req.finished and req.finish_reason == "abort" and req.finished_t > 0
    assert not llm.has_unfinished() and llm.abort(running) is False

@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_abort_all_after_an_interrupted_loop_leaves_the_llm_as_a_fresh_one(model, sampled):
    """A loop over step() interrupted (a notebook cell stopped) with its Request objects gone left
    them in the engine: the facade had abort(req) only, and run_method refused the LLM until they
    were stepped out. llm.abort_all() stops them all; the next call gives a fresh LLM's tokens."""
    from minitflow.tflow.methods import run_method
    prompts, sps = _prompts(4, seed=12), _sps(sampled)
    want = [g.token_ids for g in _llm(model, num_slots=2).generate(prompts[2:], sps[2:])]
    llm = _llm(model, num_slots=2)
    for p, sp in zip(prompts, sps):
        llm.add_request(p, sp)
    for _ in range(3):
        llm.step()
    with pytest.raises(UserError, match=r"requests are in flight .*abort_all\(\)"):
        run_method("baseline", llm, ["What is 1+1?"])
    gone = llm.abort_all()
    assert len(gone) == 4 and {r.finish_reason for r in gone} == {"abort"}
    assert sum(r.slot is not None for r in gone) == 2  # two were running, two queued
    assert not llm.has_unfinished() and not llm.engine.in_flight() and llm.abort_all() == []
    assert [g.token_ids for g in llm.generate(prompts[2:], sps[2:])] == want


def test_aborting_a_queued_request_removes_it_and_unknown_ones_are_false(model):
    llm = _llm(model, num_slots=1)
    sp = SamplingParams(max_new_tokens=5)
    first, queued = llm.add_request([5, 6, 7], sp), llm.add_request([8, 9], sp)
    llm.step()
    assert queued.status is Status.WAITING and llm.abort(queued) is True
    assert queued not in list(llm.engine.scheduler.waiting.values()) and queued.status is Status.ABORTED
    assert llm.abort(Request([1, 2], sp)) is False  # never added
    for other in (None, 7, [8, 9]):  # a stream's None or its prompt: an AttributeError on .slot
        with pytest.raises(UserError, match="abort takes a Request from add_request, got"):
            llm.abort(other)
    while llm.has_unfinished():
        llm.step()
    assert first.status is Status.FINISHED and queued.output_ids == []
    assert not llm.engine.in_flight()  # run_method may start: nothing of the aborted one is left


def _lines_run(fn) -> int:
    """Python lines fn() executes (sys.settrace): its work counted, which a shared machine's
    timing would blur."""
    lines = 0

    def trace(frame, event, arg):
        nonlocal lines
        lines += event == "line"
        return trace
    old = sys.gettrace()
    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(old)
    return lines


def test_aborting_queued_requests_one_by_one_costs_the_same_per_abort_however_long_the_queue(model):
    """Scheduler.abort scanned the queue and rebuilt it: a stream dropping N queued requests one
    by one did O(N^2) work (20,000 on the demo model: 5.2 s against 0.34 s for 5,000). Now each
    abort is O(1): 4x the queue is 4x the work, and the requests left still run in arrival order,
    the aborted ones never."""
    sp = SamplingParams(max_new_tokens=2)
    work = {}
    for n in (100, 400):
        llm = _llm(model, num_slots=1)
        first = llm.add_request([5, 6, 7], sp)
        llm.step()
        queued = [llm.add_request([8 + i % 50, 9], sp, tag=i) for i in range(n)]
        gone = queued[::2]
        work[n] = _lines_run(lambda: [llm.abort(r) for r in gone])
        assert all(r.status is Status.ABORTED for r in gone) and len(llm.engine.scheduler.waiting) == n // 2
        assert llm.abort(gone[0]) is False
        done = []
        while llm.has_unfinished():
            done += llm.step()
        assert [r.tag for r in done] == [None] + list(range(1, n, 2))  # first come, first served
        assert done[0] is first and all(r.output_ids == [] for r in gone) and not llm.engine.in_flight()
    assert work[400] <= 5 * work[100], work  # O(N^2): 16x


def test_generate_takes_a_generator_of_prompts(model):
    """A Python generator of prompts was `object of type 'generator' has no len()`."""
    llm = _llm(model, num_slots=2)
    prompts = _prompts(3, seed=2)
    sp = SamplingParams(max_new_tokens=6)
    want = [g.token_ids for g in llm.generate(prompts, sp)]
    assert [g.token_ids for g in llm.generate((p for p in prompts), sp)] == want
    assert [g.token_ids for g in llm.generate(iter(prompts), [sp] * 3)] == want


def test_engines_on_one_model_share_one_lock_and_take_turns(tiny_dir, monkeypatch):
    """Each engine had a lock of its own: two LLMs on one model in two threads ran at once while one
    re-stored the model's fused weights to fold LoRA (spare_rows) under the other's forward. Engines
    on one model now share its lock; another model's engine does not wait for them."""
    from minitflow.model import lora_linear
    monkeypatch.setattr(lora_linear, "DECODE_LORA", "folded")
    model = load_model(tiny_dir, torch.float32, "cpu")  # its own: folding re-stores the weights
    a, b = _llm(model, num_slots=2), _llm(model, num_slots=3)
    other = _llm(load_model(tiny_dir, torch.float32, "cpu"))
    assert a.engine.lock is b.engine.lock and other.engine.lock is not a.engine.lock
    prompts = _prompts(6, seed=5)
    sps = [SamplingParams(max_new_tokens=10, temperature=0.7, seed=i) for i in range(6)]
    lora = build_lora(model.cfg, [_random_factors(model.cfg, 6, 4, 1), _random_factors(model.cfg, 6, 2, 2)], [1.0, 1.0])
    want = [g.token_ids for g in _llm(model, num_slots=2).generate(prompts, sps, lora=lora)]
    got, errors = {}, []

    def work(k: int, llm: LLM) -> None:
        try:
            rows = [k, k + 2, k + 4]
            part = LoraWeights([{g: (x[rows], tuple(y[rows] for y in ys)) for g, (x, ys) in layer.items()}
                                for layer in lora.layers], 3)
            got[k] = [g.token_ids for g in llm.generate([prompts[i] for i in rows], [sps[i] for i in rows], lora=part)]
        except BaseException as e:  # reported below: a thread swallows it
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(k, llm)) for k, llm in ((0, a), (1, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors and got == {0: want[0::2], 1: want[1::2]}


def test_run_method_refuses_a_bool_batch_size(model):
    """batch_size=True ran as 1 (a bool is an int to Python); generator_batch: test_tflow.py."""
    from minitflow.tflow.methods import run_method
    with pytest.raises(UserError, match=r"^batch_size must be an integer >= 1, got True$"):
        run_method("baseline", _llm(model), ["What is 1+1?"], batch_size=True)
