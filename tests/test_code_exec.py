"""Running a program against its problem's tests (minitflow/eval/code_exec.py: run_code_tests): base
and plus inputs as evalplus runs them, body-only completions, MBPP's entry point, HumanEval's
original check() scripts, float tolerance and NaN, evalplus' special oracles; programs that exit, loop,
flood stdout or allocate too much are each a verdict, in bounded time; a canonical solution that fails
is an error; the expected outputs' disk and memory caches."""

import json
import time

import pytest

from minitflow.eval import code_exec
from minitflow.eval.code_exec import run_code_tests
from minitflow.eval.data import Sample
from code_samples import ADD, GOOD, _add_sample, _sample


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


def _mbpp(sid: str, entry: str, canonical: str, base: list) -> Sample:
    return _sample(entry, canonical, base, prompt="", dataset="mbpp", sid=sid)


_CHECK_STR = _mbpp("Mbpp/737", "check_str", "import re\ndef check_str(string):\n"
                   "    return re.search('^[aeiouAEIOU][A-Za-z0-9_]*', string)\n", [["annie"], ["dawood"]])
_SUM_DIV = _mbpp("Mbpp/295", "sum_div", "def sum_div(n):\n    return sum(i for i in range(1, n) if n % i == 0)\n",
                 [[8], [12]])
_ARE_EQUIVALENT = _mbpp("Mbpp/164", "are_equivalent", "def are_equivalent(a, b):\n    return a == b\n", [[1, 1], [1, 2]])
_SURFACE = _mbpp("Mbpp/581", "surface_Area", "def surface_Area(b, s):\n    return 2 * b * s + pow(b, 2)\n",
                 [[3, 4], [4, 5]])
_DIGITS = _mbpp("Mbpp/558", "digit_distance_nums",
                "def digit_distance_nums(n1, n2):\n    return sum(map(int, str(abs(n1 - n2))))\n", [[19, 21]])
_FIND_ZERO = _sample("find_zero", "def find_zero(xs):\n    return 1.0\n", [[[-6, 11, -6, 1]]], prompt="",
                     sid="HumanEval/32")
_FIND_ZERO.meta["atol"] = 1e-4


@pytest.mark.parametrize("sample, body, ok", [  # each verdict is evalplus 0.3.1's special oracle's
    # "is not None" tasks: any value for a match, None for none; a bool is compared as it is
    (_CHECK_STR, "return re.match('[aeiou]', s, re.I)", True),
    (_CHECK_STR, "return s[0] in 'aeiouAEIOU'", True),
    (_CHECK_STR, "return 'Valid' if s[0] in 'aeiou' else 'Invalid'", False),
    (_CHECK_STR, "return True", False),
    (_SUM_DIV, "return 0", True),  # Mbpp/295 also takes 0
    (_SUM_DIV, "return 1", False),
    (_ARE_EQUIVALENT, "return 'yes'", True),  # Mbpp/164 takes any return value, plain data or not
    (_ARE_EQUIVALENT, "return object()", True),
    (_ARE_EQUIVALENT, "raise ValueError", False),
    # Mbpp/581 also takes the area with the height as the pyramid's own (35, 59 for 33, 56)
    (_SURFACE, "return round(b * b + 2 * b * math.sqrt((b / 2) ** 2 + s * s))", True),
    (_SURFACE, "return 34", False),
    # Mbpp/558 also takes the digit by digit distance (9 for 2)
    (_DIGITS, "return sum(abs(int(x) - int(y)) for x, y in zip(str(n1), str(n2)))", True),
    (_DIGITS, "return 5", False),
    # HumanEval/32: any zero of the polynomial within its atol, not the canonical one
    (_FIND_ZERO, "return 2.00001", True),
    (_FIND_ZERO, "return 0.0", False),
])
def test_special_oracles(sample, body, ok):
    entry = sample.meta["entry_point"]
    args = {"check_str": "s", "sum_div": "n", "are_equivalent": "a, b", "surface_Area": "b, s",
            "digit_distance_nums": "n1, n2", "find_zero": "xs"}[entry]
    program = f"import math, re\ndef {entry}({args}):\n    {body}\n"
    base, plus, detail = run_code_tests(sample, program, timeout=5)
    assert (base, plus) == (ok, ok), detail


@pytest.mark.parametrize("canonical, why", [
    ("def f(n):\n    raise ValueError('broken row')\n", "err ['ValueError: broken row']"),
    ("import os\ndef f(n):\n    os._exit(3)\n", "sandbox exited with code=3 and no result"),
    ("def f(n):\n    return [0] * 5000 + [object()]\n", "output #0 is not plain data"),  # streamed item by item
])
def test_a_canonical_solution_that_fails_is_an_error_not_a_verdict(canonical, why):
    sample = _sample("f", canonical, [[1]], prompt="", sid="Toy/broken")
    assert run_code_tests(sample, "def f(n):\n    return 1\n", timeout=5) == (
        False, False, f"error: the canonical solution failed: {why}")


def test_an_output_that_turns_out_not_plain_data_while_streamed_fails():
    sample = _sample("f", "def f(n):\n    return [0] * n\n", [[5000]], prompt="", sid="Toy/stream")
    program = "def f(n):\n    return [0] * (n - 1) + [object()]\n"
    assert run_code_tests(sample, program, timeout=5) == (False, False, "fail: base input #0: output is not plain data")


def test_script_mode_test_script_that_dies_and_a_program_that_loops():
    sample = _add_sample()
    for key in ("base_input", "plus_input", "atol"):
        sample.meta.pop(key)
    sample.meta["test"] = "import os\ndef check(candidate):\n    os._exit(0)\n"
    assert run_code_tests(sample, GOOD, timeout=5) == (
        False, False, "fail: test script: sandbox exited with code=0 and no result")
    sample.meta["test"] = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    looping = "def add(a, b):\n    while True:\n        pass\n"
    assert run_code_tests(sample, looping, timeout=1) == (False, False, "timeout during exec after 0 passing input(s)")


def test_only_code_samples_are_run():
    sample = Sample(id="q1", question="1 + 1?", answer="2", meta={"dataset": "gsm8k"})
    with pytest.raises(ValueError, match=r"^sample 'q1' is not a code task \(meta\['dataset'\]='gsm8k'\)$"):
        run_code_tests(sample, GOOD)


def test_a_cache_file_that_is_no_entry_of_ours_is_computed_again(monkeypatch, tmp_path):
    """Not JSON, not a header, another key, another count of outputs: recomputed and overwritten."""
    monkeypatch.setenv(code_exec.CACHE_ENV, str(tmp_path))
    task = code_exec._task(ADD)
    path = tmp_path / f"{task.key}.jsonl"
    for junk in (b"\xff\n", b"[1, 2]\n", b'{"key": "other", "cpu": [0.1], "walls": [0, 0]}\n1\n',
                 b'{"key": "%s", "cpu": [0.1], "walls": [0, 0]}\n1\n' % task.key.encode()):
        path.write_bytes(junk)
        code_exec.clear_expected_cache()
        exp = code_exec.expected_outputs(task)
        assert [json.loads(o) for o in exp.outputs] == [3, 0, 4, 1000001, -15]
        assert code_exec._disk_load(task.key, len(task.inputs)) == exp
    code_exec.clear_expected_cache()


def test_expected_outputs_in_memory_drop_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(code_exec, "MEMORY_CACHE_BYTES", 10)
    monkeypatch.delenv(code_exec.CACHE_ENV, raising=False)
    monkeypatch.setattr(code_exec, "_run_reference", lambda task: code_exec.Expected([b"x" * int(task.key[1:])], [0.0],
                                                                                    (0.0, 0.0)))
    tasks = {key: code_exec.Task(key=key, id=key, dataset="humaneval", entry_point="f", reference="", base=[[1]],
                                 plus=[], atol=0, not_none=False, inputs=[[1]]) for key in ("a4", "b4", "c4", "d11")}
    code_exec.clear_expected_cache()
    for key in ("a4", "b4", "a4", "c4"):  # 12 bytes: b4, the least recently used, goes
        code_exec.expected_outputs(tasks[key])
    assert list(code_exec._cache) == ["a4", "c4"] and code_exec._cache_bytes[0] == 8
    code_exec.expected_outputs(tasks["d11"])  # more than the whole cache: not kept
    assert list(code_exec._cache) == ["a4", "c4"] and code_exec._cache_bytes[0] == 8
    code_exec.clear_expected_cache()
