"""Long runs (an overnight evaluate, a notebook calling run_method hundreds of times) hold
what is in flight, not what they have done: finished questions free their tensors, and what
the engine remembers between calls stays bounded. On the demo model, in seconds."""

from __future__ import annotations

import gc
import json
import threading
import weakref
from pathlib import Path

import pytest

from minitflow import demo, demo_dir
from minitflow.engine.engine import COND_KEYS
from minitflow.engine.llm import LLM
from minitflow.engine.sampler import SamplingParams
from minitflow.eval.data import Sample
from minitflow.eval.rows import BackgroundScorer
from minitflow.model.lora import LoraWeights
from minitflow.tflow.checkpoint import load_checkpoint
from minitflow.tflow.methods import run_method
from code_samples import ADD

DEMO = demo_dir()
pytestmark = pytest.mark.skipif(not (DEMO / "tflow.pt").is_file(), reason="the demo artifacts are not built")


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM.load(DEMO, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def generator(llm):
    return load_checkpoint(DEMO / "tflow.pt", llm.cfg)


def _questions(n: int) -> list[str]:
    return [r["question"] for r in demo.read_jsonl(DEMO / "heldout.jsonl")[:n]]


def test_a_finished_tflow_question_frees_its_lora_factors(llm, generator, monkeypatch):
    """Each receiver's factors (32 MiB at Qwen3-4B's shape) went only when run_method returned:
    an evaluate run, one call over the whole shard, piled up every question's on the GPU."""
    factors: list[weakref.ref] = []
    row = LoraWeights.row

    def spy(self, i):
        out = row(self, i)
        factors.extend(weakref.ref(t) for layer in out.layers for a, bs in layer.values() for t in (a, *bs))
        return out

    monkeypatch.setattr(LoraWeights, "row", spy)
    alive: list[int] = []
    gc.collect()
    gc.disable()  # freed when the question is done, not at a later garbage collection
    try:
        run_method("tflow", llm, _questions(6), style=demo.STYLE, generator=generator, batch_size=2,
                   sampling=SamplingParams(max_new_tokens=2),
                   on_result=lambda i, r: alive.append(sum(w() is not None for w in factors)))
    finally:
        gc.enable()
    per_question = len(factors) // 6
    assert max(alive) <= 2 * per_question  # at most the window's questions (was: every one done)


def test_repeated_tflow_calls_keep_the_engine_bounded(llm, generator):
    """Each call's layer weights were kept by the engine's condition-key memo for good."""
    for _ in range(COND_KEYS + 2):
        run_method("tflow", llm, _questions(1), style=demo.STYLE, generator=generator, batch_size=1,
                   sampling=SamplingParams(max_new_tokens=1))
    assert len(llm.engine._cond_keys) <= COND_KEYS


def test_math_scoring_leaves_no_comparison_running(tmp_path):
    """evaluate scores on a thread, where a sympy or math-verify call past its timeout could
    only be abandoned, still running (minutes of CPU and GBs each, beside the model): MATH is
    scored on a child process's main thread, whose SIGALRM stops it."""
    before = set(threading.enumerate())
    scorer = BackgroundScorer("minerva_math", tmp_path / "part.jsonl", 0, 0, False, "math", 1, timeout=0.5)
    hard = r"(f(1)+\sqrt{2}+\sqrt{3}+\sqrt{5}+\sqrt{7}+\sqrt{11})^{60}"  # sympy's simplify: minutes, GBs
    text = f"Final Answer: The final answer is $f(1)$. I hope it is correct.\n\nSo it is $\\boxed{{{hard}}}$."
    scorer.put(Sample("math/0", "q", "f(1)", {}), text, {})
    scorer.close()
    assert not [t for t in threading.enumerate() if t not in before and t.name != "tqdm_monitor"]
    row = json.loads((tmp_path / "part.jsonl").read_text())
    assert row["correct_official"] and not row["correct"]  # the official line is right, the last box is not


SLOW = "```python\nimport time\ntime.sleep(30)\n\ndef add(a, b):\n    return a + b\n```"  # ~4 s each: a timeout


@pytest.mark.parametrize("dataset", ["humaneval", "minerva_math"])
def test_ctrl_c_while_scoring_stops_the_programs_in_hand(tmp_path, dataset):
    """Ctrl-C during evaluate waited for every queued question to be scored: with slow programs
    (or a sympy call) that was minutes, and a second Ctrl-C cut the wait short but left the
    programs running to the end. Now the scoring in hand stops, what is queued is dropped (no
    row: a rerun generates it again) and the sandboxes work again afterwards."""
    import os
    import signal
    import time

    from minitflow.eval import sandbox
    from minitflow.eval.code_exec import run_code_tests
    n = 12  # humaneval: about 25 s of programs, two at a time
    scorer = BackgroundScorer(dataset, tmp_path / "part.jsonl", 0, 0, False, dataset, n, timeout=60)
    hard = r"(f(1)+\sqrt{2}+\sqrt{3}+\sqrt{5}+\sqrt{7}+\sqrt{11})^{60}"  # sympy's simplify: minutes
    for i in range(n):
        if dataset == "humaneval":
            scorer.put(ADD, SLOW, {})
        else:
            scorer.put(Sample(f"math/{i}", "q", "f(1)", {}), f"So it is $\\boxed{{{hard}}}$.", {})
    time.sleep(1.0)  # scoring is under way
    # Python's own Ctrl-C handler: a shell starts background jobs with SIGINT ignored, and Python keeps that
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C while close() waits
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            scorer.close()
        assert time.monotonic() - start < 3
    finally:
        signal.signal(signal.SIGINT, previous)
    part = tmp_path / "part.jsonl"
    assert scorer.written < n and len(part.read_text().splitlines() if part.exists() else []) == scorer.written
    if scorer.child is not None:
        assert scorer.child.proc.poll() is not None  # the comparison in hand was stopped
    assert list(Path(sandbox._sandbox_root()).iterdir()) == []  # every sandbox closed
    assert run_code_tests(ADD, "def add(a, b):\n    return a + b\n")[:2] == (True, True)  # not left cancelled
