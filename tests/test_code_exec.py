"""Running a program against its problem's tests (minitflow/eval/code_exec.py: run_code_tests): base
and plus inputs as evalplus runs them, body-only completions, MBPP's entry point, HumanEval's
original check() scripts, float tolerance and NaN; programs that exit, loop, flood stdout or
allocate too much are each a verdict, in bounded time."""

import time

import pytest

from minitflow.eval.code_exec import run_code_tests
from minitflow.eval.data import Sample
from code_samples import GOOD, _add_sample


@pytest.mark.parametrize("code, base, plus, needle", [
    (GOOD, True, True, "pass"),
    ("    return a + b\n", True, True, "pass"),  # body-only completion: prompt prepended
    ("\tx = a + b\n\treturn x\n", True, True, "pass"),  # ... indented with tabs: no TabError
    ("def add(a: List[int], b):\n    return a + b\n", True, True, "pass"),  # prompt imports added
    # an annotation naming what nothing imports raises NameError, as in evalplus (the sandbox's
    # own `from __future__ import annotations` had made it a string that nobody evaluates)
    ("def add(a: Sequence[int], b):\n    return a + b\n", False, False, "NameError"),
    ("def add(a, b):\n    return a + b if a < 1000 else 0\n", True, False, "plus input #0"),
    ("def add(a, b):\n    return a - b\n", False, False, "base input"),
    ("def add(a, b):\n    raise ValueError('boom')\n", False, False, "ValueError"),
    ("import sys\ndef add(a, b):\n    sys.exit(0)\n", False, False, "SystemExit"),
    ("import sys\nsys.exit(0)\n", False, False, "SystemExit"),
    ("def add(a, b):\n    exit()\n", False, False, "base input #0"),
    ("import os\ndef add(a, b):\n    os._exit(0)\n", False, False, "no result"),
    ("def add(a, b):\n    x = bytearray(16 * 1024 ** 3)\n    return a + b\n", False, False, "MemoryError"),
    ("def add(a, b):\n    for _ in range(10**8):\n        print('spam' * 100)\n    return a + b\n",
     False, False, "base input #0"),
    ("def add(a, b)\n    return a + b\n", False, False, "SyntaxError"),
    # no `def add`: treated as a body-only completion, so the prompt's stub returns None
    ("def plus(a, b):\n    return a + b\n", False, False, "wrong output"),
])
def test_run_code_tests(code, base, plus, needle):
    passed_base, passed_plus, detail = run_code_tests(_add_sample(), code, timeout=5)
    assert (passed_base, passed_plus) == (base, plus), detail
    assert needle in detail


def test_mbpp_style_sample_needs_the_entry_point():
    sample = _add_sample()
    sample.meta.update(dataset="mbpp", prompt='"""\nWrite a function to add.\n"""\n',
                       canonical_solution="def add(a, b):\n    return a + b\n")
    assert run_code_tests(sample, GOOD, timeout=5)[:2] == (True, True)
    base, plus, detail = run_code_tests(sample, "def plus(a, b):\n    return a + b\n", timeout=5)
    assert (base, plus) == (False, False) and "no function named 'add'" in detail


def test_infinite_loops_time_out_without_hanging():
    start = time.monotonic()
    looping = "def add(a, b):\n    while True:\n        pass\n"
    assert run_code_tests(_add_sample(), looping, timeout=3)[:2] == (False, False)
    module_loop = "while True:\n    pass\n"  # never returns from exec(); the watchdog ends it
    base, plus, detail = run_code_tests(_add_sample(), module_loop, timeout=3)
    assert (base, plus) == (False, False) and "timeout" in detail
    no_alarm = ("import signal\ndef add(a, b):\n"  # the per-input limit is ITIMER_PROF: turn off both timers
                "    for t, s in ((signal.ITIMER_REAL, signal.SIGALRM), (signal.ITIMER_PROF, signal.SIGPROF)):\n"
                "        signal.setitimer(t, 0)\n        signal.signal(s, signal.SIG_IGN)\n"
                "    while True:\n        pass\n")
    base, plus, detail = run_code_tests(_add_sample(), no_alarm, timeout=3)
    assert (base, plus) == (False, False) and "timeout" in detail
    assert time.monotonic() - start < 60


def test_script_mode_for_original_humaneval_rows():
    sample = _add_sample()
    for key in ("base_input", "plus_input", "atol"):
        sample.meta.pop(key)
    sample.meta["test"] = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    assert run_code_tests(sample, GOOD, timeout=5)[:2] == (True, True)
    assert run_code_tests(sample, "def add(a, b):\n    return 0\n", timeout=5)[:2] == (False, False)
    assert run_code_tests(sample, "import sys\nsys.exit(0)\n", timeout=5)[:2] == (False, False)


def _float_sample(canonical: str, base: list) -> Sample:
    meta = {"dataset": "humaneval", "task_id": "Toy/1", "entry_point": "f", "prompt": 'def f(a):\n    """F."""\n',
            "canonical_solution": canonical, "base_input": base, "plus_input": [], "atol": 0}
    return Sample(id="Toy/1", question=meta["prompt"], answer="", meta=meta)


def test_code_float_outputs_compare_with_evalplus_tolerance():
    # evalplus: float outputs within atol 1e-6 (sum([0.1] * 10) is 0.9999999999999999, 0.1 * 10 is 1.0)
    sample = _float_sample("    return sum([0.1] * a)\n", [[10], [3]])
    assert run_code_tests(sample, "def f(a):\n    return 0.1 * a\n", timeout=5)[:2] == (True, True)
    # ... but a list of floats must have the expected length (allclose would broadcast [x] to [x, x])
    sample = _float_sample("    return [a / 3]\n", [[1], [2]])
    assert run_code_tests(sample, "def f(a):\n    return [a / 3, a / 3]\n", timeout=5)[:2] == (False, False)


def test_code_float_tolerance_holds_for_later_inputs_after_an_exact_float_output():
    # evalplus turns its tolerance on at the first float output (matched exactly or not) and keeps
    # it for the later inputs: there 10**9 + 1 passes against 10**9 (allclose, rtol 1e-7)
    sample = _float_sample("    return 0.5 if a == 0 else 10**9\n", [[0], [1]])
    program = "def f(a):\n    return 0.5 if a == 0 else 10**9 + 1\n"
    assert run_code_tests(sample, program, timeout=5) == (True, True, "pass")
    # ... but not before that first float output
    sample = _float_sample("    return 10**9 if a == 0 else 0.5\n", [[0], [1]])
    program = "def f(a):\n    return 10**9 + 1 if a == 0 else 0.5\n"
    assert run_code_tests(sample, program, timeout=5)[:2] == (False, False)


def test_code_nan_outputs_fail_as_in_evalplus():
    # evalplus compares floats with np.allclose, where NaN never matches: the same NaN fails
    sample = _float_sample("    return float('nan') if a < 0 else a / 2\n", [[1], [-1]])
    base, plus, detail = run_code_tests(sample, "def f(a):\n    return float('nan') if a < 0 else a / 2\n", timeout=5)
    assert (base, plus) == (False, False) and "base input #1" in detail
