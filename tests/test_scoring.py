"""Unit tests for answer extraction / scoring and the code sandbox (no data files needed)."""

import threading
import time

import pytest

from minitflow.errors import UserError
from minitflow.eval.code_exec import run_code_tests
from minitflow.eval.data import Sample, prompt_style, resolve_dataset
from minitflow.eval.scoring import (
    call_with_timeout,
    check_eval_dependencies,
    cut_at_next_problem,
    extract_boxed,
    extract_code,
    extract_gsm8k_answer,
    extract_math_answer,
    extract_mmlu_letter,
    is_equiv,
    normalize_latex,
    score_gsm8k,
    score_math,
    score_mmlu,
    score_both,
    score_sample,
    score_samples,
)

# ----------------------------------------------------------------- \boxed


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{1} then \boxed{2}", "2"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\left\{1, \{2\}\right\}}", r"\left\{1, \{2\}\right\}"),
    (r"\boxed{a_{b_{c}}}", "a_{b_{c}}"),
    (r"\fbox{7}", "7"),
    (r"$\boxed 5$", "5"),
    (r"\boxed{3} and a truncated \boxed{4", "3"),
    ("no box here", None),
    ("", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


# ------------------------------------------------------------------ GSM8K


@pytest.mark.parametrize("text, expected", [
    (r"The total is \boxed{18}.", "18"),
    (r"\boxed{\$1,234}", "1234"),
    (r"\boxed{18 \text{ dollars}}", "18"),
    (r"\boxed{-5}", "-5"),
    (r"\boxed{\frac{3}{4}}", "3/4"),
    (r"\boxed{-\frac{1}{2}}", "-1/2"),
    (r"\boxed{70 000}", "70000"),  # space-grouped thousands (read as "000" before)
    (r"\boxed{1 234 567.5}", "1234567.5"),
    (r"\boxed{3 5}", "5"),  # not digit groups: the last number, as before
    ("work...\n#### 1,000", "1000"),
    ("It costs $18.00 in total.", "18.00"),
    ("The answer is 5 cm.", "5"),
    ("She lost -3 points, then 2-7 = -5", "-5"),
    ("first 3 then 4 then 72", "72"),
    ("no numbers", None),
])
def test_extract_gsm8k(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize("pred, gold, ok", [
    (r"\boxed{18}", "18", True),
    ("Total: 18.00 dollars", "18", True),
    (r"\boxed{1,234}", "1234", True),
    ("#### 1234", "Some work\n#### 1,234", True),
    (r"\boxed{0.75}", "3/4", True),
    (r"\boxed{\frac{3}{4}}", "0.75", True),
    ("it is -7 degrees", "-7", True),
    ("it is 7 degrees", "-7", False),
    (r"\boxed{17}", "18", False),
    (r"18 appears first, \boxed{17}", "18", False),  # the box wins over numbers in text
    ("", "18", False),
])
def test_score_gsm8k(pred, gold, ok):
    assert score_gsm8k(pred, gold) is ok


# ------------------------------------------------------------------- MATH


@pytest.mark.parametrize("raw, norm", [
    (r"\left( 1, 2 \right)", "(1,2)"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\frac12", r"\frac{1}{2}"),
    (r"\frac1{x}", r"\frac{1}{x}"),
    (r"90^\circ", "90"),
    (r"\$5.", "5"),
    (r"x = 3", "3"),
    (r"10\%", "10"),
    (r"5\text{ cm}^2", "5"),
    (r"\text{(B)}", "(B)"),
    (r"\sqrt2", r"\sqrt{2}"),
    (".5", "0.5"),
    ("1,000", "1000"),
    ("3/4", r"\frac{3}{4}"),
])
def test_normalize_latex(raw, norm):
    assert normalize_latex(raw) == norm


@pytest.mark.parametrize("a, b, ok", [
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac12", r"\dfrac{1}{2}", True),
    ("1/2", r"\frac{1}{2}", True),
    (r"2\pi", "6.2832", True),
    (r"\frac{\pi}{2}", "1.5708", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"1+\sqrt{3} i", r"1+i\sqrt{3}", True),
    ("x+1", "1+x", True),
    (r"1.6 \times 10^{-2}", "0.016", True),
    ("4.5e33", r"4.5 \times 10^{33}", True),
    (r"\left(1, 2\right)", "(1,2)", True),
    ("(1,2)", "[1,2]", False),
    (r"x = 5", "5", True),
    (r"5\text{ cm}", "5", True),
    ("-1./3", "-0.33333", True),
    ("2", "3", False),
    (r"\frac{1}{3}", "0.3", False),
    ("x^2", "x^3", False),
    (None, "1", False),
    ("10^{400}", "10^{400}", True),
    ("10^{400}", "10^{401}", False),  # no OverflowError
    (r"\frac{1}{0}", "1", False),
])
def test_is_equiv(a, b, ok):
    assert is_equiv(a, b) is ok


def test_is_equiv_refuses_code_and_towers():
    # parse_expr uses eval: nothing that looks like Python must get through
    assert not is_equiv("open('pwned_by_test','w')", "1")
    assert not is_equiv('__import__("os").getcwd()', "1")
    start = time.monotonic()
    assert not is_equiv(r"9^{9^{9}}", "1")  # would hang in C without the guard
    assert time.monotonic() - start < 10


def test_call_with_timeout_main_and_worker_thread():
    def slow():
        while True:
            pass

    start = time.monotonic()
    assert call_with_timeout(slow, 0.3) is None
    assert call_with_timeout(lambda: 7, 1.0) == 7
    box = []
    worker = threading.Thread(target=lambda: box.append(call_with_timeout(lambda: 5, 1.0)))
    worker.start()
    worker.join()
    assert box == [5]
    # off the main thread a call past its timeout is abandoned, not waited for
    box.clear()
    t0 = time.monotonic()
    worker = threading.Thread(target=lambda: box.append(call_with_timeout(lambda: time.sleep(3), 0.2)))
    worker.start()
    worker.join()
    assert box == [None] and time.monotonic() - t0 < 2
    assert time.monotonic() - start < 5


def test_one_math_comparison_takes_one_timeout(monkeypatch):
    # sympy got the whole timeout, then math-verify got it again (on the main thread its own
    # whole-second timers, one per parse and verify): one comparison took twice it or more
    math_verify = pytest.importorskip("math_verify")
    import minitflow.eval.math_equiv as math_equiv

    def undecided(a, b):  # sympy, slowly, cannot parse a side: math-verify decides
        time.sleep(0.3)
        return None

    monkeypatch.setattr(math_equiv, "_sympy_equal", undecided)
    monkeypatch.setattr(math_verify, "parse", lambda *a, **k: time.sleep(3))
    for on_main in (True, False):
        box, start = [], time.monotonic()
        compare = lambda: box.append(is_equiv("x^2+1", "y+1", timeout=0.5))  # noqa: E731
        if on_main:
            compare()
        else:
            worker = threading.Thread(target=compare)
            worker.start()
            worker.join()
        assert box == [False] and time.monotonic() - start < 0.6

def test_extract_and_score_math():
    text = r"We get $x = \frac{3}{4}$, hence the answer is $\boxed{\dfrac{3}{4}}$."
    assert extract_math_answer(text) == r"\dfrac{3}{4}"
    assert score_math(text, "0.75")
    assert extract_math_answer("Final Answer: The final answer is $7$. I hope it is correct.") == "7"
    assert extract_math_answer("So the answer is 3.5.") == "3.5"
    assert extract_math_answer("The answer is $x^2$") == "x^2"
    assert not score_math("no answer", "1")


# ------------------------------------------------------------------- MMLU


@pytest.mark.parametrize("text, letter", [
    (r"\boxed{B}", "B"),
    (r"\boxed{(C)}", "C"),
    (r"\boxed{D. Paris}", "D"),
    (r"\boxed{\text{A}}", "A"),
    ("Therefore, the answer is (B).", "B"),
    ("The correct answer is: **C**", "C"),
    ("Answer: D", "D"),
    ("**Answer:** (A) because ...", "A"),
    ("The answer is B because A is wrong.", "B"),
    ("C", "C"),
    ("(D) 42", "D"),
    ("A train leaves at noon and nothing else is said.", None),
    ("I am not sure.", None),
])
def test_extract_mmlu_letter(text, letter):
    assert extract_mmlu_letter(text) == letter


def test_mmlu_boxed_choice_text_and_score():
    choices = ["True, True", "False, False", "True, False", "False, True"]
    assert extract_mmlu_letter(r"\boxed{False, True}", choices) == "D"
    assert score_mmlu(r"\boxed{b}", "B")  # a box holding only a lower-case letter still names it
    assert not score_mmlu(r"\boxed{b}", "C")
    assert score_mmlu("the answer is (A)", "A")
    assert not score_mmlu("the answer is (A)", "B")


# ------------------------------------------------------------------- code


def test_extract_code():
    text = "Idea:\n```python\nprint(1)\n```\nFinal:\n```python\ndef f():\n    return 2\n```\nDone."
    assert extract_code(text) == "def f():\n    return 2\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("def g(): pass") == "def g(): pass"
    assert extract_code("```python\ndef g():\n    return 1") == "def g():\n    return 1"
    two = "```python\ndef f():\n    return 1\n```\n```python\nprint(f())\n```"
    assert extract_code(two, entry_point="f") == "def f():\n    return 1\n"


F1 = "def f(x):\n    return x + 1\n"
F2 = "def f(x):\n    return x + 2\n"


@pytest.mark.parametrize("text, program", [
    # a fence indented inside a list item: markdown removes its indentation from the lines
    ("1. Code:\n\n   ```python\n   def f(x):\n       return x + 1\n   ```\n", F1),
    ("1. Code:\n   ```python\ndef f(x):\n    return x + 1\n   ```\n", F1 + "   "),  # ... only if every line has it
    # the reply after </think> is the answer; a draft in the thoughts does not outrank it
    (f"<think>\n```python\n{F2}```\n</think>\n\n```python\n    return x + 1\n```", "    return x + 1\n"),
    (f"<think>\n```python\n{F2}```\n</think>\n\n```python\n{F1}```\n```python\nprint(f(1))\n```", F1),
    (f"<think>\n```python\n{F1}```\n</think>\n\nThe function is above.", F1),  # reply states nothing
    (f"<think>\nok\n</think>\n\n{F1}", f"\n\n{F1}"),  # no fence at all: the reply is the program
    # cut off while thinking: no final program, whatever the drafts say
    (f"<think>\n```python\n{F1}```\nNow check the edge cases: if x is", ""),
    # cut off inside the final block: that block, not the draft before it
    (f"```python\n{F1}```\nBetter:\n```python\ndef f(x):\n    return x +", "def f(x):\n    return x +"),
    (f"```python\n{F1}```\nBetter:\n```python\nimport math\n\n", "import math\n\n"),  # before its def
    (f"```python\n{F1}```\nUsage:\n```python\nprint(f(", F1),  # ... unless it is not the program
    (f"```python\n{F1}```\nOutput:\n```\n[2, 3", F1),
    ("```python\r\ndef f(x):\r\n    return x + 1", "def f(x):\r\n    return x + 1"),
    (f"```python\n{F1}```\nShorter:\n```python\nf = lambda x: x + 2\n```", "f = lambda x: x + 2\n"),
])
def test_extract_code_takes_the_final_program(text, program):
    assert extract_code(text, entry_point="f") == program


def _add_sample(with_plus=True):
    meta = {
        "dataset": "humaneval", "task_id": "Toy/0", "entry_point": "add",
        "prompt": 'from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n',
        "canonical_solution": "    return a + b\n",
        "base_input": [[1, 2], [0, 0], [-1, 5]],
        "plus_input": [[10**6, 1], [-7, -8]] if with_plus else [],
        "atol": 0,
    }
    return Sample(id="Toy/0", question=meta["prompt"], answer="", meta=meta)


GOOD = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize("code, base, plus, needle", [
    (GOOD, True, True, "pass"),
    ("    return a + b\n", True, True, "pass"),  # body-only completion: prompt prepended
    ("\tx = a + b\n\treturn x\n", True, True, "pass"),  # ... indented with tabs: no TabError
    ("def add(a: List[int], b):\n    return a + b\n", True, True, "pass"),  # prompt imports added
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


def test_score_sample_dispatch():
    gsm = Sample("g/0", "q", "18", {"dataset": "gsm8k"})
    assert score_sample("gsm8k", r"\boxed{18}", gsm) == (True, "18")
    math_s = Sample("m/0", "q", r"\frac{1}{2}", {"dataset": "minerva_math"})
    assert score_sample("math", r"\boxed{0.5}", math_s) == (True, "0.5")
    mmlu_s = Sample("u/0", "q", "C", {"dataset": "mmlu", "choices": ["a", "b", "c", "d"]})
    assert score_sample("mmlu_redux", "The answer is (C).", mmlu_s) == (True, "C")
    ok, code = score_sample("humanevalplus", f"```python\n{GOOD}```", _add_sample())
    assert ok and code == GOOD


def test_dataset_names():
    assert resolve_dataset("HumanEvalPlus") == "humaneval"
    assert resolve_dataset("mbppplus") == "mbpp"
    assert resolve_dataset("mmlu_redux") == "mmlu"
    assert resolve_dataset("math") == "minerva_math"
    assert [prompt_style(d) for d in ("gsm8k", "math", "mmlu", "humaneval", "mbpp")] == [
        "gsm8k", "minerva_math", "mmlu", "humanevalplus", "mbppplus"]
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        resolve_dataset("nope")


# ------------------------------------------------ strict scorer: defect kinds
# One test per kind of defect the scorer had before the strict rewrite; each
# of these fails on that scorer.  They use only the long-standing public names.


@pytest.mark.parametrize("pred", ["0", "-1.325e-27", "1.325e-26", r"-1.325 \times 10^{-27}", r"1.325\times10^{-28}"])
def test_math_tiny_gold_has_no_absolute_tolerance(pred):
    assert not is_equiv(pred, "1.325e-27")
    assert is_equiv(r"1.325 \times 10^{-27}", "1.325e-27")


@pytest.mark.parametrize("pred, gold, ok", [
    ("4.03189", "4.03188", False),  # last-digit near miss inside 1e-4: rounding cannot explain it
    ("1.4904e4", "1.4903e4", False),
    ("1450001", "1450000", False),  # two integers: exact
    ("15626", "15625", False),
    ("20.3912", "20.39", True),  # more digits than the gold, same value when rounded
    ("4.5 \\times 10^{33}", "4.5e33", True),  # e-notation golds are numbers
    ("4.52e33", "4.5e33", False),
    ("2.502", "2.5", False),  # rounding allows it, the relative tolerance (1e-4) does not
    ("2.5002", "2.5", True),
    (r"100001\%", "1000", False),  # integers are exact, also through a percent
])
def test_math_numbers_relative_tolerance_and_rounding(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


@pytest.mark.parametrize("pred", [r"\approx 1.6", r"s \approx 1.6", r"\sim 1.6"])
def test_math_approx_is_stripped(pred):
    assert is_equiv(pred, "1.6")
    assert score_math(f"so $\\boxed{{{pred}}}$ cm", "1.6")


@pytest.mark.parametrize("pred, gold", [
    ("1.6 cm", "1.6"), (r"3 \AA", "3"), (r"3 \text{\AA}", "3"), (r"2 \mu m", "2"), (r"2 \mu \text{m}", "2"),
    (r"7 \mathrm{~m}", "7"), ("540 meters", "540"), (r"4.5 \times 10^{33}\ \mathrm{erg\,s^{-1}}", "4.5e33"),
])
def test_math_units_inside_the_box(pred, gold):
    assert is_equiv(pred, gold)
    assert score_math(f"\\boxed{{{pred}}}", gold)


def test_math_units_do_not_swallow_variables():
    assert not is_equiv("2x", "2")
    assert not is_equiv(r"2.2\tau", "2.2")
    assert not is_equiv("6 cm", "5")


def test_math_subscripted_greek_letters():
    assert is_equiv(r"\omega_{0}/2", r"\frac{\omega_0}{2}")
    assert is_equiv(r"0.5\omega_0", r"\frac{\omega_{0}}{2}")
    assert not is_equiv(r"\frac{\omega_1}{2}", r"\frac{\omega_0}{2}")


@pytest.mark.parametrize("pred, gold, ok", [
    (r"\{3,2,1\}", r"\{1,2,3\}", True),
    ("-2, 1", "1, -2", True),  # a list of solutions has no order
    ("1,2,3", r"\{1,2,3\}", True),  # no first/last character check between a set and a list
    (r"\{1,2\}", r"\{1,2,3\}", False),
    ("(2,1)", "(1,2)", False),  # tuples and intervals keep order ...
    ("[1,2]", "(1,2)", False),  # ... and brackets
    ("[2, 5)", "[2,5)", True),
    (r"2, -2", r"\pm 2", True),
    (r"7 \text{ and } 5", "5, 7", True),
])
def test_math_sets_and_lists(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


def test_math_matrix_row_break_with_a_space():
    gold = r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"
    assert is_equiv(r"\begin{pmatrix}1\\2\end{pmatrix}", gold)
    assert is_equiv(r"\begin{bmatrix} 1 \\ 2 \end{bmatrix}", gold)
    assert not is_equiv(r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", gold)
    assert not is_equiv(r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}")


def test_math_text_after_equals_is_not_a_unit():
    gold = r"\text{MR}=\text{SRMC}"
    assert not is_equiv(r"\text{MR}", gold)
    assert not is_equiv(r"\text{MR}=\text{LRMC}", gold)
    assert is_equiv("MR=SRMC", gold)
    assert is_equiv("SRMC = MR", gold)


def test_math_function_application_is_not_the_imaginary_unit():
    assert not is_equiv("0", "I(0)")
    assert not is_equiv(r"\frac{I(0)}{2}", r"\frac{I(0)}{4}")
    assert is_equiv(r"I(0) e^{-t/(RC)}", r"I(0) e^{-\frac{t}{R C}}")
    assert is_equiv(r"1+i\sqrt{3}", r"1+\sqrt{3} i")  # a lone i is still imaginary


def test_math_answer_is_with_escaped_dollar():
    text = r"So the answer is $\$18.90$."
    assert extract_math_answer(text) == r"\$18.90"
    assert score_math(text, "18.90")
    assert not score_math(text, "18.09")


def test_gsm8k_explicit_answer_beats_check_sentences():
    text = "16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nThe answer is 18. Check: 3 + 4 = 7 eggs used, 16 - 7 = 9."
    assert extract_gsm8k_answer(text) == "18"
    assert score_gsm8k(text, "18")
    boxed = "so \\boxed{18}.\n\nThis assumes she sells all 9 eggs, i.e. 12 minus 3."
    assert extract_gsm8k_answer(boxed) == "18"


def test_gsm8k_numbers_are_exact():
    assert not score_gsm8k(r"\boxed{1450001}", "1450000")
    assert not score_gsm8k("The answer is 1,450,001.", "1450000")
    assert score_gsm8k(r"\boxed{1,450,000}", "1450000")
    assert score_gsm8k(r"\boxed{1\,450\,000}", "1450000")


@pytest.mark.parametrize("text, letter", [
    ("Option A is incorrect because statement 2 fails; statement 1 holds, so C.", "C"),
    ("Option B mentions Paris, but that is wrong.", None),
    ("Choice D looks tempting. The capital of France is Paris (A).", "A"),
])
def test_mmlu_option_mentions_are_not_answers(text, letter):
    assert extract_mmlu_letter(text) == letter


def test_mmlu_last_stated_answer_wins():
    assert extract_mmlu_letter("The answer is A.\nOn reflection, statement 2 fails.\nAnswer: C") == "C"
    assert extract_mmlu_letter("Answer: B\nWait, that is wrong. The correct answer is (D).") == "D"
    assert extract_mmlu_letter("\\boxed{A} ... no: the answer is \\boxed{C}") == "C"


def test_thinking_and_truncated_replies():
    # the reply after </think> counts, not guesses inside the thoughts
    assert extract_gsm8k_answer("<think>\nmaybe 20? \\boxed{20}\n</think>\n\nShe makes $18.") == "18"
    assert extract_mmlu_letter("<think>\nMaybe A? No.\n</think>\n\nThe answer is C.") == "C"
    # a generation cut off while thinking has no answer (no "last number" guess)
    assert extract_gsm8k_answer("<think>\nShe has 16 eggs, uses 7, so 9 are left. 9 eggs times $2") is None
    assert extract_mmlu_letter("<think>\nStatement 1 is true. What about a") is None


# ------------------------------------------------------- both scorers, deps


def test_score_samples_scorer_switch_and_both():
    s = Sample("g/0", "q", "70000", {"dataset": "gsm8k", "solution": "w\n#### 70,000"})
    pred = "Profit: 70,000.\n\\boxed{70,000}"
    assert score_samples("gsm8k", [pred], [s]) == [(True, "70000")]
    assert score_samples("gsm8k", [pred], [s], scorer="official") == [(False, "70")]
    assert score_both("gsm8k", [pred], [s]) == [
        {"correct": True, "extracted": "70000", "correct_official": False, "extracted_official": "70"}]
    with pytest.raises(ValueError, match="unknown scorer"):
        score_samples("gsm8k", [pred], [s], scorer="lenient")


def test_code_both_scorers_share_one_run(monkeypatch):
    import minitflow.eval.scoring as scoring

    calls = []
    real = scoring.run_code_tests_many

    def counting(items, workers=2, timeout=60):
        calls.append(len(items))
        return real(items, workers=workers, timeout=timeout)

    monkeypatch.setattr(scoring, "run_code_tests_many", counting)
    preds = [f"```python\n{GOOD}```", f"```Python\n{GOOD}```", f"```py\n{GOOD}```", "no code at all"]
    both = score_both("humaneval", preds, [_add_sample()] * 4, timeout=10)
    assert calls == [2]  # GOOD once, and the raw text of the last reply (official: nothing to run)
    assert [b["correct"] for b in both] == [True, True, True, False]
    assert [b["correct_official"] for b in both] == [True, True, False, False]
    assert both[2]["extracted_official"] == ""


def test_code_runs_are_shared_only_by_identical_programs():
    # the official block of the first reply is the stripped body, which is not a program; the
    # strict program of the second reply is the same body indented, which is: no shared run
    body = "    return a + b if add else 0\n"
    preds = [f"```python\n{body}```\n```py\nprint(1)\n```", f"```py\n{body}```"]
    both = score_both("humaneval", preds, [_add_sample()] * 2, timeout=10)
    assert [b["correct"] for b in both] == [False, True]
    assert [b["correct_official"] for b in both] == [False, False]


def test_code_runs_are_not_shared_across_a_trailing_character_python_refuses():
    # str.rstrip takes \x1c and U+2028 for whitespace, Python takes them for a SyntaxError: the strict
    # program keeps the line, the official block drops it, and the official scorer got the strict
    # program's SyntaxError for a program that passes
    for tail in ("\x1c", "\u2028"):
        both = score_both("humaneval", [f"```python\n{GOOD}{tail}\n```"], [_add_sample()], timeout=10)
        assert [(b["correct"], b["correct_official"]) for b in both] == [(False, True)], repr(tail)


def test_missing_optional_dependency_is_one_line(monkeypatch):
    import importlib.util

    import minitflow.eval.scoring as scoring

    real = importlib.util.find_spec
    monkeypatch.setattr(scoring.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("math_verify", "evalplus") else real(name, *a))
    with pytest.raises(UserError, match=r'scoring minerva_math needs math-verify: pip install "minitflow\[eval\]"'):
        check_eval_dependencies("math")
    with pytest.raises(UserError, match=r'scoring mbpp needs evalplus: pip install "minitflow\[eval\]"'):
        check_eval_dependencies("mbppplus")
    check_eval_dependencies("gsm8k")  # needs nothing optional
    monkeypatch.undo()
    for name in ("gsm8k", "math", "mmlu", "humaneval", "mbpp"):
        check_eval_dependencies(name)  # this environment has them all


@pytest.mark.parametrize("pred, gold, ok", [
    (r"C_1 e^{t}+C_3 \cos t+\frac{\cos 2t}{15}", r"\frac{\cos (2 t)}{15}+C_{1} e^{t}+C_{3} \cos (t)", True),
    (r"\cos(2t) + \sin(2t)", r"\sqrt{2} \cos (2 t-\pi / 4)", True),
    (r"\frac{1}{\omega^2 - 4}", r"\frac{1}{4-\omega^{2}}", False),
    ("y' + ry - rx(t) = 0", r"y^{\prime}+r y-r x(t)=0", True),
    (r"\pi r^2", r"r^2\pi", True),
    (r"\pi r^2", r"2\pi r", False),
    ("monday", r"\text{Monday}", True),
    ("xy", "yx", True),
    (r"\arcsin(10/13)", "np.arcsin(10/13)", True),
])
def test_math_symbolic_forms(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


@pytest.mark.parametrize("pred, gold, ok", [
    (r"-\infty", r"\infty", False),
    (r"x \in [-2, 7]", "[-2,7]", True),
    (r"\frac{1 \pm \sqrt{5}}{2}", r"\frac{1+\sqrt5}{2}, \frac{1-\sqrt5}{2}", True),
    (r"x=2 \text{ or } x=3", "2, 3", True),
    (r"\begin{pmatrix} 0.5 & 0 \\ 0 & 1 \end{pmatrix}", r"\begin{pmatrix} \frac12 & 0 \\ 0 & 1 \end{pmatrix}", True),
    ("(1,2),(3,4)", "(3,4),(1,2)", True),
    (r"2^{10}", "1024", True),
    ("24.05", r"\$24.50", False),
])
def test_math_handwritten_gold_forms(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


def test_mmlu_capitalised_word_after_the_letter():
    assert extract_mmlu_letter("Final answer: C This is a well-established result.") == "C"
    assert extract_mmlu_letter("Answer: B Because the kernel is trivial, statement 1 holds.") == "B"


def test_math_scoring_in_worker_processes_matches_one_process():
    import minitflow.eval.scoring as scoring

    golds = ["1.6", "4.5e33", r"\frac{\pi}{2}", r"\{1,2\}", "x^2+1"]
    samples = [Sample(f"m/{k}", "q", g, {"dataset": "minerva_math", "solution": f"\\boxed{{{g}}}"})
               for k, g in enumerate(golds)]
    preds, batch = [], []
    for i in range(scoring.PARALLEL_MIN + 10):
        s = samples[i % len(samples)]
        preds.append(f"So $\\boxed{{{s.answer if i % 3 else '7'}}}$." if i % 7 else None)
        batch.append(s)
    serial = score_both("minerva_math", preds, batch, workers=1)
    assert score_both("minerva_math", preds, batch, workers=2) == serial
    assert [r["correct"] for r in serial] == [bool(i % 3 and i % 7) for i in range(len(preds))]


# ------------------------------------------ strict scorer: audit regressions
# Each of these failed before its fix (Qwen3-style answers to the shared data's golds).


def test_math_complex_exponent_is_not_a_tower():
    # the tower guard read float() of 2*pi*I/3 as an error, so polar forms never parsed
    assert is_equiv(r"4e^{2\pi i/3}", r"-2+2 \sqrt{3} i")
    assert is_equiv(r"16e^{-2\pi i/3}", r"-8-8 \sqrt{3} i")
    assert not is_equiv(r"4e^{i\pi/3}", r"-2+2 \sqrt{3} i")


@pytest.mark.parametrize("pred, gold, ok", [
    (r"x(t) = -t^2 - t - 3", "-t^2 - t - 3", True),
    (r"x(t) = -t^2 - t + 3", "-t^2 - t - 3", False),
    (r"Y(s) = \frac{1}{s+a}", r"\frac{1}{s+a}", True),
    (r"\theta(t) = 2\cos\left(\pi t + \frac{\pi}{3}\right)", r"2 \cos (\pi t+\pi / 3)", True),
    (r"x(t) = 0", r"y^{\prime}+r y-r x(t)=0", False),
])
def test_math_function_name_on_the_left(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


def test_math_lambda_and_solar_subscripts():
    gold = r"\lambda_{\text {red}} / \sqrt{2}"
    assert is_equiv(r"\frac{\lambda_{\text{red}}}{\sqrt{2}}", gold)
    assert not is_equiv(r"\frac{\lambda_{\text{red}}}{2}", gold)
    gold = r"\frac{dM}{dt}=\frac{10^{5} L_{\odot}}{0.007 c^{2} M_{\odot}^{6}} M^{6}"
    assert is_equiv(r"\frac{dM}{dt} = \frac{10^5 L_\odot M^6}{0.007 c^2 M_\odot^6}", gold)
    assert not is_equiv(r"\frac{dM}{dt} = \frac{10^4 L_\odot M^6}{0.007 c^2 M_\odot^6}", gold)


@pytest.mark.parametrize("pred, gold, ok", [
    (r"50\, M_\odot", "50", True),
    (r"-50\, M_\odot", "50", False),
    (r"6630\ \text{Å}", "6630", True),
    (r"1.2 \text{ μm}", "1.2", True),
    (r"300^\circ\text{C}", "300", True),
    (r"0.022^{\prime\prime}", "0.022", True),
    ("0.022''", "0.022", True),
    (r"7.6Z\ \text{eV}", "7.6 Z", True),
    (r"7.7 Z \text{ eV}", "7.6 Z", False),
    (r"\text{MR}", r"\text{MR}=\text{SRMC}", False),
])
def test_math_units_models_write(pred, gold, ok):
    assert is_equiv(pred, gold) is ok
    assert score_math(f"$$\n\\boxed{{{pred}}}\n$$", gold) is ok


@pytest.mark.parametrize("pred, gold, ok", [
    (r"3\frac{1}{2}", "3.5", True),
    (r"3\frac{1}{2}", "1.5", False),  # was read as 3 * 1/2
    (r"3\frac12", r"\frac{7}{2}", True),
    (r"-2\frac{1}{4}", "-2.25", True),
    (r"2\frac{\pi}{3}", r"\frac{2\pi}{3}", True),  # not a number: still a product
])
def test_math_mixed_numbers(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


def test_math_final_answer_prose_is_not_an_answer():
    text = "So $\\boxed{5}$.\n\nLet me double-check the final answer: it satisfies the constraint."
    assert extract_math_answer(text) == "5"
    assert score_math("Final answer: the diameter is 1.6 cm.", "1.6")
    assert not score_math("$\\boxed{1.6}$\n\nFinal answer: the diameter is 2.1 cm.", "1.6")
    assert extract_math_answer("Final Answer: The final answer is $7$. I hope it is correct.") == "7"


def test_gsm8k_reply_cut_off_inside_its_box():
    assert extract_gsm8k_answer("So far 15 then 19; the total is \\boxed{16") is None
    assert not score_gsm8k("That leaves 16, plus the 2 from before: \\boxed{16", "16")  # may go on to 160
    assert extract_gsm8k_answer("\\boxed{15} wait, \\boxed{16") == "15"  # the complete box before it counts


def test_gsm8k_answer_as_a_verb_is_not_an_answer():
    text = "Each student must answer 3 questions a day, so the class answers 45 questions."
    assert extract_gsm8k_answer(text) == "45"
    assert extract_gsm8k_answer("**Answer**: 18 eggs, 20 before") == "18"


def test_math_response_is_cut_at_its_first_invented_problem():
    good = "So \\boxed{1.6}.\nFinal Answer: The final answer is $1.6$. I hope it is correct."
    text = good + "\n\nProblem:\nWhat is 2+2?\n\nSolution:\n\\boxed{4}\n\nProblem:\nWhat is 2+3?\n\nSolution:\n\\boxed{5}"
    assert cut_at_next_problem(text) == good + "\n\n"
    assert score_math(text, "1.6") and not score_math(text, "4")


def test_gsm8k_of_several_explicit_answers_the_last_counts():
    # a corrected answer after a first one: the correction counts
    assert extract_gsm8k_answer("The answer is 16.\nWait, she also sold 2 more, so the answer is 18.") == "18"
    # `#### N` states N: numbers after it explain it
    assert extract_gsm8k_answer("3 boxes of 6 make 18.\n#### 18 (3 boxes of 6)") == "18"
    # a chain of equations in the answer sentence: its result, not a middle term
    assert extract_gsm8k_answer("The answer is 16 - 3 - 4 = 9 eggs x $2 = $18.") == "18"


def test_reply_after_the_last_think_end_counts():
    # a model that thinks twice: the box between its two thoughts is a draft
    text = "<think>\nfirst try\n</think>\nMaybe \\boxed{20}?\n<think>\nno, recheck\n</think>\nShe makes $18."
    assert extract_gsm8k_answer(text) == "18"


def test_math_a_repeated_box_is_one_answer():
    # boxes that only "and" / "," separate are one answer; a box written twice is not a list
    assert extract_math_answer("so $x = \\boxed{5}$ $\\boxed{5}$") == "5"
    assert score_math("so $x = \\boxed{5}$ $\\boxed{5}$", "5")
    assert extract_math_answer("$\\boxed{2}$ and $\\boxed{3}$") == "2, 3"


@pytest.mark.parametrize("solution, gold", [
    # minerva_math/75 and /100: the gold solution's own last sentence, then the answer line the prompt asks for
    ("Resonance occurs when $\\omega=\\boxed{2}$.", "2"),
    ("This means $p(s)=m\\left(s^{2}+s+\\frac{37}{4}\\right)$. Then $b=\\boxed{m}$,", "m"),
])
def test_math_a_box_restated_after_its_sentence_is_one_answer(solution, gold):
    # a full stop (or a blank line) ended no run of boxes: "2, 2" and "m, m" were a list, scored wrong
    text = f"{solution}\n\n\\boxed{{{gold}}}"
    assert extract_math_answer(text) == gold and score_math(text, gold)
    assert extract_math_answer(f"$\\boxed{{{gold}}}$. $\\boxed{{{gold}}}$") == gold
    assert extract_math_answer("$\\boxed{2}$.\n\n$\\boxed{3}$") == "3"  # the later statement, as for any two
    assert extract_math_answer("$\\boxed{2}$,\n$\\boxed{3}$") == "2, 3"  # a list may span a line
    assert extract_math_answer("$\\boxed{2}$; $\\boxed{3}$") == "2, 3"

def test_mmlu_article_after_answer_is_not_a_letter():
    # "the answer is a bit subtle": the article, not option A; the final line states the letter
    assert extract_mmlu_letter("The answer is a bit subtle, since both statements hold.\nB") == "B"
    assert extract_mmlu_letter("The answer is a bit subtle, since both statements hold.") is None


def test_math_of_several_answer_is_phrases_the_last_counts():
    assert extract_math_answer("The answer is 3.\nOn second thought, the answer is 4.") == "4"


def test_math_percent_matches_its_fraction():
    assert is_equiv(r"10\%", "0.1") and is_equiv("0.1", r"10\%") and is_equiv("25%", r"\frac{1}{4}")


def test_math_slash_fraction_keeps_its_sign():
    assert normalize_latex("-3/4") == r"-\frac{3}{4}"
    assert not is_equiv("-3/4", r"\frac{3}{4}")


def test_math_closed_forms_are_compared_tightly():
    assert not is_equiv(r"\pi", r"\sqrt{9.87}")  # 3.14166 against 3.14159: sympy values, 1e-12
    assert not is_equiv("x+0.001", "x")  # random-point probe, 1e-9
    assert not is_equiv("1", "1+i")  # a number is not a complex closed form with the same real part


def test_math_verify_decides_what_our_sympy_path_cannot_parse():
    assert is_equiv(r"n!", r"n \cdot (n-1)!")
    assert is_equiv(r"(-\infty,1)\cup(1,\infty)", r"(-\infty,1)\cup(1,+\infty)")


def test_code_correct_needs_the_plus_tests_too():
    base_only = "```python\ndef add(a, b):\n    return a + b if a < 1000 else 0\n```"
    assert score_samples("humaneval", [base_only], [_add_sample()], timeout=10) == [
        (False, "def add(a, b):\n    return a + b if a < 1000 else 0\n")]


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


def test_code_nan_outputs_fail_as_in_evalplus():
    # evalplus compares floats with np.allclose, where NaN never matches: the same NaN fails
    sample = _float_sample("    return float('nan') if a < 0 else a / 2\n", [[1], [-1]])
    base, plus, detail = run_code_tests(sample, "def f(a):\n    return float('nan') if a < 0 else a / 2\n", timeout=5)
    assert (base, plus) == (False, False) and "base input #1" in detail


def test_predictions_must_be_text_one_per_sample():
    """run_method's results passed as predictions were an AttributeError ('rfind') from inside an
    extractor, one string of the samples' length was scored a character per sample, and a count
    mismatch a ValueError: each is a one-line UserError now, before anything is scored."""
    from minitflow.tflow.stream import MethodResult
    samples = [Sample("gsm8k/0", "q", "18"), Sample("gsm8k/1", "q", "3")]
    result = MethodResult("baseline", "gsm8k", "q", "\\boxed{18}", "stop", {}, {}, 1)
    with pytest.raises(UserError, match=r"^prediction 0 is not a string but a MethodResult: pass \[r.answer for r in results\]$"):
        score_samples("gsm8k", [result, result], samples)
    with pytest.raises(UserError, match=r"^predictions is one string: pass a list"):
        score_samples("gsm8k", "18", samples)
    with pytest.raises(UserError, match=r"^1 predictions for 2 samples$"):
        score_both("gsm8k", ["18"], samples)
    with pytest.raises(UserError, match=r"^prediction 0 is not a string but a int$"):
        score_sample("gsm8k", 18, samples[0])
    assert score_samples("gsm8k", ["\\boxed{18}", None], samples) == [(True, "18"), (False, "")]


def test_runaway_digit_strings_are_a_verdict_not_an_exception():
    # past int's 4,300-digit limit Fraction() raised ValueError out of score_math / score_gsm8k
    # (a reply looping on "0.3333..." until the token limit), failing the whole batch
    looping = "The answer is 0." + "3" * 5000
    assert score_math(looping, r"\frac{1}{3}") is False
    assert score_math("\\boxed{1.6" + "0" * 5000 + "1}", "1.6") is False
    assert score_gsm8k("\\boxed{" + "1" * 5000 + " \\times 10^{3}}", "18") is False
    assert score_math("\\boxed{1.60}", "1.6") and score_gsm8k("\\boxed{1.8 \\times 10^{1}}", "18")


@pytest.mark.parametrize("text", [
    "The answer is A or C.", "Answer: A, B", "Answer: A and B", r"\boxed{A, C}", r"\boxed{A and C}",
    r"\boxed{(A) or (C)}", "The answer is (A) or (B).",
])
def test_mmlu_a_hedge_between_two_letters_is_no_answer(text):
    # the first letter of a hedge was the answer: "A or C" scored correct for gold A
    assert extract_mmlu_letter(text) is None
    assert not score_mmlu(text, "A") and not score_mmlu(text, "C")


def test_mmlu_a_letter_then_a_remark_on_another_is_still_the_answer():
    assert extract_mmlu_letter("Answer: C, B is wrong") == "C"
    assert extract_mmlu_letter("Answer: A, because it is right") == "A"
    assert extract_mmlu_letter("(A) and (B) are both wrong; the answer is D.") == "D"


def test_en_dash_and_unicode_minus_signs_are_minus():
    # "–5" was read as 5 (gold 5: correct), and "answer is −5" was passed over for a later 5
    assert extract_gsm8k_answer(r"\boxed{–5}") == "-5" and not score_gsm8k(r"\boxed{–5}", "5")
    assert score_gsm8k("The answer is –5.", "-5")
    assert extract_gsm8k_answer("The answer is −5. Check: 3 + 2 = 5") == "-5"
    assert extract_gsm8k_answer("She read pages 3–5.") == "5"  # a range, not a minus
    assert score_math(r"\boxed{–10}", "-10") and not score_math(r"\boxed{–10}", "10")


@pytest.mark.parametrize("pred, ok", [
    (r"\frac{37}{4}", False),  # was correct: the gold's m read as metres and dropped
    (r"\frac{37m}{4}", True),  # was wrong
    (r"\frac{37}{4}m", True), ("9.25 m", True), (r"k = \frac{37}{4} m", True), (r"\frac{35}{4} m", False),
])
def test_math_gold_letter_after_its_number_is_a_variable(pred, ok):
    # minerva_math/104: "What is k in terms of m?", gold \frac{37}{4} m
    assert is_equiv(pred, r"\frac{37}{4} m") is ok
    assert is_equiv("300", "300 K") and is_equiv("1.6 m", "1.6")  # units elsewhere are still units


def test_math_boxes_joined_by_a_spaced_or_are_one_answer():
    # "\quad \text{or} \quad" between two boxes was too long a gap: only the last box counted
    text = r"$$\boxed{x = 2} \quad \text{or} \quad \boxed{x = 3}$$"
    assert extract_math_answer(text) == "x = 2, x = 3"
    assert score_math(text, "2, 3") and not score_math(text, "3")
    assert extract_math_answer(r"\boxed{2}\quad\text{then}\quad\boxed{3}") == "3"


@pytest.mark.parametrize("pred, gold, ok", [
    (r"\Delta E = 2.88 \times 10^{-19}\text{ J}", "2.88e-19", True),  # each was wrong: a name
    (r"t_{1/2} = 5.47 \times 10^5 \text{ s}", "5.47e5", True),  # other than one letter on the left
    (r"L_{\odot} = 4.5 \times 10^{33}", "4.5e33", True),
    (r"\lambda_{\max} = 500 \text{ nm}", "500", True),
    (r"\Delta E = 2.89 \times 10^{-19}\text{ J}", "2.88e-19", False),
    ("MR", "MR=SRMC", False),  # two letters are no name: the gold equation stays one
])
def test_math_named_quantity_equals_number(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


def test_gsm8k_a_long_digit_run_is_read_in_linear_time():
    # the a-times-10^b search restarted inside the run at every digit: 20,000 digits took ~10 s
    import time

    start = time.monotonic()
    assert not score_gsm8k("\\boxed{1" + "0" * 20000 + "}", "18")
    assert time.monotonic() - start < 1.0
    assert extract_gsm8k_answer(r"\boxed{12.5\times10^{2}}") == "1250"


@pytest.mark.parametrize("text", [r"\boxed{\mathrm{C}}", r"\boxed{\mathbf{(C)}}", r"\boxed{\textrm{C}}"])
def test_mmlu_letter_in_a_math_font_box(text):
    assert extract_mmlu_letter(text) == "C"  # was None: only \text / \textbf were unwrapped


@pytest.mark.parametrize("pred, gold, ok", [
    (r"0.\overline{3}", r"\frac{1}{3}", True),  # each repeating decimal was wrong (not a number)
    (r"-0.\overline{3}", "-1./3", True),
    (r"0.1\overline{6}", r"\frac{1}{6}", True),
    (r"1.\overline{142857}", r"\frac{8}{7}", True),
    (r"0.\overline{3}", "0.3", False),
    (r"0.\overline{6}", r"\frac{1}{3}", False),
])
def test_math_repeating_decimals(pred, gold, ok):
    assert is_equiv(pred, gold) is ok
    assert score_math(f"So $\\boxed{{{pred}}}$.", gold) is ok


@pytest.mark.parametrize("pred, gold, ok", [
    (r"2\pi \times 10^{-20}", "6.283e-20", True),  # was wrong: the closed form's value rounded to 0
    (r"\frac{\sqrt{2}}{10^{20}}", "1.4142e-20", True),
    ("6.283e-20", r"2\pi \times 10^{-20}", True),
    (r"2\pi \times 10^{-20}", "6.290e-20", False),
    (r"-2\pi \times 10^{-20}", "6.283e-20", False),
])
def test_math_tiny_closed_form_against_a_number(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


@pytest.mark.parametrize("pred, gold, ok", [
    (r"\sin^{-1}(10/13)", "np.arcsin(10/13)", True),  # each was wrong: \sin^{-1} read as 1/sin
    (r"\sin^{-1}(1.3 \sin \theta_w)", r"\arcsin{1.3 \sin{\theta_w}}", True),
    (r"\tan^{-1} 1", r"\frac{\pi}{4}", True),
    (r"\cos^{-1}(10/13)", "np.arcsin(10/13)", False),
    (r"\sin^{-1}(1.3 \cos \theta_w)", r"\arcsin{1.3 \sin{\theta_w}}", False),
])
def test_math_inverse_trig_superscript(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


def test_a_reply_of_unclosed_boxes_is_read_in_linear_time():
    # each unclosed \boxed{ rescanned the rest of the reply: 10,000 of them took ~25 s a scorer
    import time

    text = "So \\boxed{18}. " + "\\boxed{" * 10000
    start = time.monotonic()
    assert extract_gsm8k_answer(text) == "18" and extract_math_answer(text) == "18"
    assert extract_mmlu_letter(text) is None
    assert time.monotonic() - start < 2.0
    assert extract_boxed(r"\boxed{\{1\}} and \boxed{a{b}c} \boxed{7") == "a{b}c"


@pytest.mark.parametrize("pred, gold, ok", [
    ("2 or 3", "2, 3", True),  # was wrong: a bare "or" (no \text, no comma) was read as "2or3"
    ("x = 2 or x = 3", "3, 2", True),
    ("2 and 3", r"\{2,3\}", True),
    ("2 or 3", "3", False),
    ("2 or 4", "2, 3", False),
])
def test_math_bare_or_between_solutions(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


@pytest.mark.parametrize("reply, gold, ok", [
    (r"\boxed{10^3}", "3", False),  # its last number, 3, was the answer
    (r"\boxed{10^3}", "1000", True),
    (r"So the number of ways is $\boxed{2^{10}}$.", "1024", True),
    (r"\boxed{-2^2}", "-4", True),
    ("#### 2^5", "32", True),
    (r"\boxed{5 \times 10^3}", "5000", True),  # the a \times 10^b reading is unchanged
])
def test_gsm8k_a_power_in_the_answer_is_its_value(reply, gold, ok):
    assert score_gsm8k(reply, gold) is ok


@pytest.mark.parametrize("reply, gold, ok", [
    ("We compute the distance.\nThus, $s \\approx 1.6 \\mathrm{~cm}$.", "1.6", True),  # was no answer
    ("so the speed is about 3 m/s and v \u2248 2.5 m/s", "2.5", True),
    ("Thus, $s \\approx 1.6 \\mathrm{~cm}$.", "1.7", False),
])
def test_math_a_closing_approximation_states_the_answer(reply, gold, ok):
    """A reply with no explicit answer whose last line says what something is approximately:
    that value is its answer, as for "is" and "="."""
    assert score_math(reply, gold) is ok


@pytest.mark.parametrize("text, expected", [
    (r"\boxed{\$ 1 080}", "1080"),  # was 80: the box's last number
    (r"\boxed{1 080}", "1080"), (r"\boxed{1\,080}", "1080"), (r"\boxed{1{,}080}", "1080"),
    (r"\boxed{1\!080}", "1080"), (r"\boxed{1~080}", "1080"), (r"\boxed{1\ 080}", "1080"),
    ("\\boxed{1\u2009080}", "1080"), ("\\boxed{1\u202f080}", "1080"), ("\\boxed{1\u00a0080}", "1080"),
    (r"\boxed{\text{\$}1\,080}", "1080"), (r"\boxed{USD 1 080}", "1080"), ("\\boxed{\u20ac1 080}", "1080"),
    ("\\boxed{\u00a3 1 080}", "1080"), (r"\boxed{1 080 \text{ dollars}}", "1080"), (r"\boxed{18 \text{ dollars}}", "18"),
    (r"\boxed{1\,080\ \text{cm}^2}", "1080"), (r"\boxed{5 \mathrm{m}^{2}}", "5"),  # the unit's exponent was the answer
    (r"\boxed{1 080\%}", "1080"), (r"\boxed{-1 080}", "-1080"), ("\\boxed{\u22121\\,080}", "-1080"),
    (r"\boxed{1 080 000.5}", "1080000.5"), (r"\boxed{1{,}080{,}000}", "1080000"),
    # a final-answer statement
    ("The answer is 1 080.", "1080"), ("The final answer is \u20ac1 080.", "1080"), ("Final answer: USD 1 080", "1080"),
    (r"The answer is $\text{\$}1\,080$.", "1080"), (r"The answer is $1\;080$; she pays it.", "1080"),  # ";" ended it
    (r"The answer is $1\!080$!", "1080"), ("#### 1 080", "1080"), ("The area is 5 m^2.", "5"),
    ("She pays 1\u202f080 in all.", "1080"),  # no statement: a thin space still groups digits
    # not digit groups: as before
    (r"\boxed{3 4}", "4"), (r"\boxed{1 08}", "08"), (r"\boxed{1\,08}", "08"), (r"\boxed{1 0800}", "0800"),
    (r"\boxed{12 345 6}", "6"), (r"\boxed{2023 100}", "100"), (r"\boxed{2, 3}", "2, 3"), ("The answer is 3 4.", "3"),
    (r"\boxed{1,000,000}", "1000000"), (r"\boxed{2023}", "2023"), ("In 2023 she sold 15.", "15"),
    ("She bought 2 100-page books.", "100"),  # a plain space groups digits only in a stated answer
])
def test_gsm8k_digit_groups_are_one_number(text, expected):
    assert extract_gsm8k_answer(text) == expected


def test_gsm8k_digit_groups_score():
    assert score_gsm8k(r"So she pays \boxed{\$ 1 080}.", "1080") and not score_gsm8k(r"\boxed{\$ 1 080}", "80")
    assert not score_gsm8k(r"\boxed{1 08}", "108") and not score_gsm8k(r"\boxed{3 4}", "34")


@pytest.mark.parametrize("text, expected", [
    # digit groups are joined before a \times 10^b reading: it took the last group alone (80000)
    (r"\boxed{1\,080 \times 10^3}", "1080000"), (r"\boxed{1 080 \times 10^{3}}", "1080000"),
    (r"\boxed{1{,}080 \times 10^3}", "1080000"), (r"\boxed{1,080 \times 10^3}", "1080000"),
    (r"\boxed{1\,080 \cdot 10^{-1}}", "108"), (r"\boxed{1\,080e3}", "1080000"),
    (r"The answer is $1 080 \times 10^{3}$.", "1080000"), (r"#### 1 080 \times 10^3", "1080000"),
    (r"\boxed{1\,000^2}", "1000000"),
    # unchanged
    (r"\boxed{2.5 \times 10^3}", "2500"), (r"\boxed{10^3}", "1000"), (r"\boxed{5 \times 10^3}", "5000"),
    (r"\boxed{1 08 \times 10^3}", "8000"), (r"\boxed{2, 3 \times 10^2}", "300"),  # not groups: as before
])
def test_gsm8k_digit_groups_times_a_power_of_ten(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    # no stated answer: LaTeX ignores spaces in math mode, so $1 080$ is one number (was 080)
    ("She pays $1 080$ in all.", "1080"), (r"She pays \(1 080\) in all.", "1080"),
    ("She pays $$1 080$$ in all.", "1080"), (r"She pays \[1 080\] in all.", "1080"),
    (r"She pays $\$1 080$ in all.", "1080"), ("So she pays $5 and $1 080$.", "1080"),
    ("She bought 2 100-page books, paying $1 080$.", "1080"),
    # math mode, but not digit groups: as before
    ("She pays $1 08$ in all.", "08"), ("She pays $3 4$ in all.", "4"), ("In $2023$ she sold 15.", "15"),
    # plain text: a plain space parts two numbers inside the reply ("2 100-page books"), but the reply's
    # last number, digit groups that no hyphen or number follows, is one number (was 080, which a
    # gold of 80 scored right; "1 540" was 540)
    ("She bought 2 100-page books.", "100"), ("She pays 1 080 in all.", "1080"),
    ("She pays 1 540 in all.", "1540"), ("She pays 1 080 000.", "1080000"), ("He sold 2 100 and 3 4.", "4"),
    ("She pays 1 080 in all, 3 times.", "3"), ("Of 2 100-page books she read 1 050 pages.", "1050"),
    ("She pays $1 080$ and buys 2 100-page books.", "100"),
    # a money $ is no math delimiter: it opens before a digit, and a closing $ is not followed by one
    ("He pays $20 for 3 100-gram bags, so $60.", "60"), ("He spent $5 on 2 100-page books.", "100"),
])
def test_gsm8k_digit_groups_in_math_mode(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    # a thin / LaTeX space between digits only ever groups them: a long first group (a separator
    # missed) is still one number, as before 33d2ecd (it read 567)
    (r"\boxed{1234\,567}", "1234567"), ("\\boxed{1234\u2009567}", "1234567"), (r"\boxed{12345~678}", "12345678"),
    (r"She pays 1234\,567.", "1234567"), (r"\boxed{1 080\,000}", "1080000"),
    # each later group still has exactly 3 digits; a plain space after 4 digits parts two numbers
    (r"\boxed{12\,34}", "34"), (r"\boxed{1\,2345}", "2345"), (r"\boxed{1\,08}", "08"),
    (r"\boxed{1234 567}", "567"), (r"\boxed{2023 100}", "100"),
])
def test_gsm8k_a_thin_space_groups_a_long_first_group(text, expected):
    assert extract_gsm8k_answer(text) == expected


def test_gsm8k_math_mode_digit_groups_score():
    assert score_gsm8k("She pays $1 080$ in all.", "1080") and not score_gsm8k("She pays $1 080$ in all.", "80")
    boxed = r"\boxed{1\,080 \times 10^3}"
    assert score_gsm8k(boxed, "1080000") and not score_gsm8k(boxed, "80000")
    assert score_gsm8k(r"\boxed{1234\,567}", "1234567") and not score_gsm8k(r"\boxed{1234\,567}", "567")


@pytest.mark.parametrize("text, gold", [
    # a clock time or ratio is no number: one of its numbers was the answer (\boxed{12:30} was 30)
    (r"She leaves at \boxed{12:30}.", "30"), (r"She leaves at \boxed{12:30}.", "12"),
    ("The answer is 12:30 pm.", "12"), ("#### 4:3", "3"), ("She arrives at 12:30.", "30"),
    (r"The ratio is \boxed{4:3}.", "4"),
    # a hedge between two numbers states neither (the first, or the box's last, was the answer)
    ("The answer is 18 or 20.", "18"), ("The answer is 18, or maybe 20.", "18"),
    (r"\boxed{18 \text{ or } 20}", "20"), (r"\boxed{18 \text{ or } 20}", "18"),
    ("So she has 18 or 20 left.", "20"),
    # two boxes parted by "or" (the last box was the answer)
    (r"\boxed{18} or \boxed{20}", "20"), (r"$\boxed{18}$ or $\boxed{20}$", "20"),
    (r"\boxed{18} \text{ or } \boxed{20}", "20"),
])
def test_gsm8k_a_time_or_a_hedge_is_no_number(text, gold):
    assert not score_gsm8k(text, gold)


@pytest.mark.parametrize("text, gold", [
    ("The answer is 18 (or 18.00 dollars).", "18"), ("The answer is 18 or 18.0.", "18"),
    ("Step 3: 18", "18"), (r"\boxed{\text{Answer: }18}", "18"), ("The answer is: 18.", "18"),
    (r"At 12:30 she had sold \boxed{45}.", "45"), ("She left at 2:15 and sold 45 in all.", "45"),
    ("Is it 18 or 20? Checking again, it is 20.", "20"),
    (r"\boxed{18} or \boxed{18.00}", "18"), (r"\boxed{9} eggs, so she makes \boxed{18}", "18"),
    # (\boxed{18} and \boxed{20} is two answers, a hedge: tests/test_scoring_more.py)
])
def test_gsm8k_times_and_hedges_elsewhere_leave_the_answer(text, gold):
    assert score_gsm8k(text, gold)


def test_gsm8k_math_spans_are_read_in_linear_time():
    import time

    start = time.monotonic()
    for text in ("\\(" * 20000, "\\[" * 20000, "$$ 1" * 20000, "$1 " * 30000, "$a" * 30000 + " $1 080$"):
        extract_gsm8k_answer(text)
    assert time.monotonic() - start < 2.0
    assert extract_gsm8k_answer("$a" * 30000 + " $1 080$") == "1080"


# ------------------------------------------------- red-team of the strict MATH scorer (OCW golds)

@pytest.mark.parametrize("pred, gold, ok", [
    # a differential equation written with other derivative notation, its terms moved across, or
    # times a factor free of its unknowns (LC, m) is the same equation
    (r"f = m\frac{dv}{dt} + bv", r"m \frac{d v}{d t}+b v=f", True),
    (r"m \dot{v} + b v = f", r"m \frac{d v}{d t}+b v=f", True),
    (r"\dot{v} + \frac{b}{m} v = \frac{f}{m}", r"m \frac{d v}{d t}+b v=f", True),
    (r"m \frac{dv}{dt} = f + bv", r"m \frac{d v}{d t}+b v=f", False),
    (r"m \dot{v} = f", r"m \frac{d v}{d t}+b v=f", False),
    (r"\dot{v} + b v = f", r"m \frac{d v}{d t}+b v=f", False),
    ("y'(t) = r x(t) - r y(t)", r"y^{\prime}+r y-r x(t)=0", True),
    (r"\frac{dy}{dt} = r x - r y", r"y^{\prime}+r y-r x(t)=0", True),
    ("y' = r(y - x)", r"y^{\prime}+r y-r x(t)=0", False),
    ("2y' + r y - r x = 0", r"y^{\prime}+r y-r x(t)=0", False),
    ("y' + r y - r x(t) = 1", r"y^{\prime}+r y-r x(t)=0", False),
    (r"x' = kx - a", r"\frac{d x}{d t}=k x-a", True),
    (r"\dot{x}(t) = kx(t) - a", r"\frac{d x}{d t}=k x-a", True),
    (r"\dot{x} = a - kx", r"\frac{d x}{d t}=k x-a", False),
    (r"\ddot{x} = kx - a", r"\frac{d x}{d t}=k x-a", False),
    (r"LC\ddot{v}_o + v_o = v_i", r"\frac{d^{2} v_{o}}{d t^{2}}+\frac{v_{o}}{L C}=\frac{v_{i}}{L C}", True),
    (r"\ddot{v}_o + v_o = v_i", r"\frac{d^{2} v_{o}}{d t^{2}}+\frac{v_{o}}{L C}=\frac{v_{i}}{L C}", False),
    (r"LC\dot{v}_o + v_o = v_i", r"\frac{d^{2} v_{o}}{d t^{2}}+\frac{v_{o}}{L C}=\frac{v_{i}}{L C}", False),
    (r"m l \ddot{\theta} = m g \sin\theta + f \cos\theta",
     r"m l \ddot{\theta}(t)-m g \sin \theta(t)=f(t) \cos \theta(t)", True),
    (r"ml\ddot\theta - mg\theta = f", r"m l \ddot{\theta}(t)-m g \sin \theta(t)=f(t) \cos \theta(t)", False),
    # an equation whose named side the normalisation drops, written the other way round
    (r"125-1.25 P = X_{d}", r"X_{d}=125-1.25 P", True),
    (r"125 + 1.25 P = X_{d}", r"X_{d}=125-1.25 P", False),
    ("MR - SRMC = 0", "MR=SRMC", True),
    ("P = SRMC", "MR=SRMC", False),
])
def test_math_equations_as_models_write_them(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


@pytest.mark.parametrize("pred, gold, ok", [
    # a named value for a gold that is just the value: MRS = ..., y^s(p) = ..., \langle E \rangle = ...
    (r"MRS = \frac{2C}{3S}", r"\frac{2}{3} \frac{C}{S}", True),
    (r"MRS = \frac{3C}{2S}", r"\frac{2}{3} \frac{C}{S}", False),
    (r"y^s(p) = 100 p^{1/2}", r"100 p^{\frac{1}{2}}", True),
    (r"\langle E \rangle = \frac{1}{3}E_1 + \frac{2}{3}E_2", r"\frac{1}{3} E_{1}+\frac{2}{3} E_{2}", True),
    (r"\theta' = \arcsin(1.3 \sin \theta_w)", r"\arcsin{1.3 \sin{\theta_w}}", True),
    # a power on the left is an equation, not a name
    (r"X^2 = -\frac{1}{2\sqrt{X}}", r"-\frac{1}{2} X^{-\frac{1}{2}}", False),
    (r"x^2 = 25", "5", False),
    ("(x, y) = (1, 2)", "(1, 2)", True),
    ("(x, y) = (2, 1)", "(1, 2)", False),
    # the value named on the left keeps its unit words even with a \cdot between them
    (r"L = 4.5 \times 10^{33} \ \text{erg} \cdot \text{s}^{-1}", "4.5e33", True),
    (r"L = 4.5 \times 10^{32} \ \text{erg} \cdot \text{s}^{-1}", "4.5e33", False),
])
def test_math_a_named_answer_for_a_bare_gold(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


@pytest.mark.parametrize("pred, gold, ok", [
    # "4Ae^{it}" and "4 A e^{i t}": Euler's e and the imaginary i either way (sympy's letter split
    # made the first e and i plain symbols)
    (r"\frac{4 A e^{i t}}{3(1+i)}", r"\frac{4 A}{3+3 i} e^{i t}", True),
    (r"\frac{4 A e^{i t}}{3(1-i)}", r"\frac{4 A}{3+3 i} e^{i t}", False),
    (r"\frac{1-i}{4} e^{2it}", r"\frac{e^{2 i t}}{(2+2 i)}", True),
    (r"\frac{1+i}{4} e^{2it}", r"\frac{e^{2 i t}}{(2+2 i)}", False),
    # a function's bare \frac argument
    (r"\arcsin \frac{10}{13}", "np.arcsin(10/13)", True),
    (r"\arcsin \frac{11}{13}", "np.arcsin(10/13)", False),
    (r"\tau \ln\frac{1}{\Delta}", r"-\tau \ln \Delta", True),
    (r"\tau \ln\frac{2}{\Delta}", r"-\tau \ln \Delta", False),
    # old-style {\rm red} subscript
    (r"\lambda_{\rm red}/\sqrt{2}", r"\lambda_{\text {red}} / \sqrt{2}", True),
    (r"\lambda_{\rm red}/2", r"\lambda_{\text {red}} / \sqrt{2}", False),
])
def test_math_letters_functions_and_subscripts(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


def test_math_ode_equation_in_a_reply_scores():
    gold = r"m \frac{d v}{d t}+b v=f"
    reply = "<think>\nForce balance.\n</think>\n\nSo the equation is $\\boxed{f = m\\dot{v} + bv}$."
    assert score_math(reply, gold)
    assert not score_math(reply.replace("+ bv", "- bv"), gold)
    final = "Final Answer: The final answer is $m \\frac{dv}{dt} = f - bv$. I hope it is correct."
    assert score_math(final, gold) and not score_math(final.replace("f - bv", "f + bv"), gold)


# ------------------------------------------ strict scorer: red-team regressions
# Qwen3-style replies built for every GSM8K / MMLU-Redux gold; each case failed before its fix.


def test_a_thought_cut_off_counts_only_its_closed_boxes():
    # "so the answer is 18" at the cut may have gone on to 180: it scored correct
    cut = "<think>\nShe has 16 eggs, 16 - 3 - 4 = 9. So the answer is 18"
    assert extract_gsm8k_answer(cut) is None and not score_gsm8k(cut, "18")
    assert extract_gsm8k_answer("<think>\nSo the answer is 18. Let me verify: 9 x 2") is None
    assert extract_mmlu_letter("<think>\nOption A says True, True. So the answer is A") is None
    assert extract_mmlu_letter("<think>\nI think (A) is right") is None
    # a closed box still counts (the module's rule), and so does a finished thought
    assert extract_gsm8k_answer("<think>\nSo \\boxed{18}. Let me verify: 9 x 2") == "18"
    assert extract_mmlu_letter("<think>\nSo \\boxed{A}. Let me check B") == "A"
    assert extract_gsm8k_answer("<think>\nmaybe 20\n</think>\nThe answer is 18.") == "18"
    assert extract_mmlu_letter("<think>\nmaybe B\n</think>\nThe answer is A") == "A"
    # MATH the same: "Final Answer:" or "the answer is" inside a cut-off thought is no answer
    assert extract_math_answer("<think>\nSo the answer is 18") is None
    assert extract_math_answer("<think>\nFinal Answer: The final answer is $18$. Let me check") is None
    assert not score_math("<think>\nSo the answer is $\\frac{1}{2}$", "\\frac{1}{2}")
    assert extract_math_answer("<think>\nSo $\\boxed{\\frac{1}{2}}$. Let me check") == "\\frac{1}{2}"
    assert extract_math_answer("<think>\nmaybe 20\n</think>\nFinal Answer: The final answer is $18$.") == "18"


TF = ["True, True", "False, False", "True, False", "False, True"]
ARTICLE = ["An entity fixed effects model", "A time fixed effects model", "A random effects model",
           "A pure time series model"]
SENTENCES = ["Hundreds of millennia in the future.", "Major impacts can no longer occur.",
             "Hundreds of millennia after the last major impact.",
             "Could be any time. The probability of impact is the same next year as later."]


@pytest.mark.parametrize("text, choices, letter", [
    # an option's text stated as the answer, or as the reply: was no answer
    ("The answer is True, False.", TF, "C"), ("Answer: **False, True**", TF, "D"),
    ("Let me check.\n\nTrue, False", TF, "C"), ("True, True", TF, "A"), ("The answer is True, False.", None, None),
    ("The answer is Could be any time. The probability of impact is the same next year as later. "
     "It follows from the rates.", SENTENCES, "D"),
    # an option's text opening with the article "A" is that option, not A
    (r"\boxed{A time fixed effects model}", ARTICLE, "B"), ("The answer is A time fixed effects model.", ARTICLE, "B"),
    (r"\boxed{A}", ARTICLE, "A"), ("The answer is A.", ARTICLE, "A"), (r"\boxed{B. A time fixed effects model}", ARTICLE, "B"),
    # an option's text that is a letter of the options: the letter; one past them: the text
    (r"\boxed{B}", ["As", "P", "Sb", "B"], "B"), ("The answer is B.", ["As", "P", "Sb", "B"], "B"),
    (r"\boxed{F}", ["F", "Si", "O", "Ca"], "A"), (r"\boxed{i}", ["1", "-1", "i", "-i"], "C"),
    ("(I) and (IV)", ["Only (II)", "Only (IV)", "(I) and (IV)", "(II) and (III)"], "C"),
    # options told apart only by case; two options with one text name neither
    ("The answer is sC ≡ eJ.", ["Cs ⊃ Ej", "Sc ≡ Ej", "sC ≡ eJ", "Sx ≡ Jy"], "C"),
    ("The answer is 0.16 N.", ["0.16 N", "0.16 N", "0.32 N", "0.36 N"], None),
])
def test_mmlu_an_options_text_names_its_letter(text, choices, letter):
    assert extract_mmlu_letter(text, choices) == letter


def test_mmlu_an_options_text_scores():
    assert score_mmlu("The answer is True, False.", "C", TF) and not score_mmlu("The answer is True, False.", "A", TF)
    # was correct for gold A: the article read as the letter
    assert not score_mmlu(r"\boxed{A time fixed effects model}", "A", ARTICLE)
    assert score_mmlu(r"\boxed{A time fixed effects model}", "B", ARTICLE)


def test_mmlu_a_box_whose_text_holds_braces():
    assert extract_mmlu_letter(r"\boxed{\text{C. {AND, OR}}}") == "C"  # was no answer
    assert extract_mmlu_letter(r"\boxed{\text{B. Number of relations from A = {x, y} is 64.}}") == "B"


@pytest.mark.parametrize("text, letter", [
    ("Option A fails the premise. Therefore, C is the correct answer.", "C"), ("Checking each.\n\nC is correct.", "C"),
    ("**C** is the correct answer.", "C"),  # these three were no answer
    ("Vitamin C is the best source.", None), ("A is correct in part, but it misses the key point.", None),
    ("So A is correct, and B is wrong", None), ("A is correct.\nWait, no: the answer is D.", "D"),
    ("Is A correct? No. D is correct.", "D"),
])
def test_mmlu_a_bare_letter_that_is_the_correct_answer(text, letter):
    assert extract_mmlu_letter(text) == letter


@pytest.mark.parametrize("text, letter", [
    ("The answer is b) Paris", "B"),  # was no answer
    ("the answer is (a) or (c)", None), ("the answer is a) or c)", None),  # a hedge: (a) was the answer
    ("the answer is (b)", "B"), ("the answer is a bit subtle", None),
])
def test_mmlu_a_lower_case_letter_with_its_parenthesis(text, letter):
    assert extract_mmlu_letter(text) == letter


# ------------------------------------------- red-team of the strict GSM8K / MMLU scorers (2)

_RIGHTS = ["Employee rights", "Employee rights", "Employer duties", "Employee duties"]


@pytest.mark.parametrize("text, choices", [
    # the reply states an answer that is no option (two options share its text, a paraphrase): the
    # thoughts' letter was the answer, though the reply may have meant another option
    ("<think>\nSo the answer is D.\n</think>\n\nThe answer is Employee rights.", _RIGHTS),
    ("<think>\nSo the answer is D.\n</think>\n\n**Answer:** the duties of the employee", _RIGHTS),
    ("<think>\nSo the answer is C.\n</think>\n\nThe answer is \\boxed{\\text{Employee rights}}.", _RIGHTS),
    ("<think>\nSo the answer is C.\n</think>\n\nFinal answer: something no option says.", None),
])
def test_mmlu_a_reply_stating_no_option_has_no_answer(text, choices):
    assert extract_mmlu_letter(text, choices) is None


def test_mmlu_a_reply_stating_nothing_still_reads_the_thoughts():
    assert extract_mmlu_letter("<think>\nSo the answer is C.\n</think>\n\nHope this helps!", _RIGHTS) == "C"
    assert extract_mmlu_letter("<think>\nSo the answer is C.\n</think>\n\nThe answer is:", None) == "C"
    assert extract_mmlu_letter("<think>\nSo C.\n</think>\n\nThe answer is Employer duties.", _RIGHTS) == "C"


@pytest.mark.parametrize("text, letter", [
    # a correction after the stated answer replaces it (the first answer was read)
    ("The answer is C.\n\nWait, actually, it's B.", "B"),
    ("The answer is D) Berlin... no, it's C) Rome.", "C"),
    (r"\boxed{A} Hmm, it should be option D.", "D"),
    # an answer that "must be" C, a closing "Hence, option C." (no answer before)
    ("Therefore the answer must be C.", "C"), ("Hence, option C.", "C"),
    # not a correction: a hedge, a lower-case article
    ("The answer is C. Wait, it's B or D.", "C"), ("The answer is C. Wait, it's a trick.", "C"),
])
def test_mmlu_a_correction_restates_the_answer(text, letter):
    assert extract_mmlu_letter(text) == letter


@pytest.mark.parametrize("text, expected", [
    # a correction after the stated answer replaces it (17 was the answer)
    ("The answer is 17. Wait, actually it's 18.", "18"), ("\\boxed{17}\n\nWait, no, it's 18 dollars.", "18"),
    ("So the answer is 17.\nHmm, actually, it should be 18.", "18"), (r"\boxed{17} No, it is \$1,080.", "1080"),
    ("The answer should be 18. She started with 19.", "18"),  # was 19: "should be" states it too
    # not a correction: a remark, a negation, or no stated answer before it (its first number is no answer)
    ("The answer is 18. Actually, it's 3 more than yesterday.", "18"), ("The answer is 18. No, it's not 17.", "18"),
    ("Wait, it's 18 per hour, so 126 in all.", "126"),
])
def test_gsm8k_a_correction_restates_the_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize("text, choices, letter", [
    # a bare lower-case letter that is exactly an option's text is that option (was the letter C)
    ("The answer is c.", ["2c", "c", "0.8c", "0.5c"], "B"), (r"\boxed{c}", ["2c", "c", "0.8c", "0.5c"], "B"),
    ("Answer: d", ["4d", "2d", "d", "1/2d"], "C"), ("The answer is c.", ["c", "x", "c", "y"], None),
    # with its parenthesis, or no option "c": the letter, as before
    ("The answer is (c).", ["2c", "c", "0.8c", "0.5c"], "C"), ("The answer is c.", ["a1", "b1", "c1", "d1"], "C"),
    (r"\boxed{c}", None, "C"), ("The answer is C.", ["2c", "c", "0.8c", "0.5c"], "C"),
])
def test_mmlu_a_lower_case_letter_that_is_an_options_text(text, choices, letter):
    assert extract_mmlu_letter(text, choices) == letter


@pytest.mark.parametrize("text, choices, letter", [
    # "Answer:" and the article opening a prose answer (was A)
    ("Answer: A combination of factors.", None, None), ("**Answer:** A balanced approach is best.", None, None),
    # the letter A: a conjunction after it, option A's own text, or a letter form
    ("Answer: A because Paris is the capital.", None, "A"), ("Answer: A paris", ["Paris", "b", "c", "d"], "A"),
    ("Answer: A combination", ["A combination of both", "x", "y", "z"], "A"), ("Answer: A. Paris", None, "A"),
    ("The answer is A combination.", None, "A"),
    # a letter past the options is no answer (was I: "The answer is I think C")
    ("The answer is I.", ["Paris", "London", "Rome", "Berlin"], None), ("The answer is E.", ["a", "b"], None),
    # a bare letter opening its sentence that "is the answer" (was none)
    ("A is the answer.", None, "A"), ("So, C is the answer!", None, "C"), ("A is the answer to part one, not two.", None, None),
])
def test_mmlu_answer_article_range_and_is_the_answer(text, choices, letter):
    assert extract_mmlu_letter(text, choices) == letter


@pytest.mark.parametrize("text, gold, ok", [
    # a mixed number is one value (\boxed{2\frac{1}{3}} was 21/3 = 7; "2 1/2" was 2, or 1/2 in a box)
    (r"\boxed{2\frac{1}{3}}", "7", False), (r"\boxed{1\frac{1}{2}}", "1.5", True), (r"\boxed{1\frac{1}{2}}", "5.5", False),
    ("The answer is 2 1/2 hours.", "2", False), ("The answer is 2 1/2 hours.", "2.5", True),
    (r"\boxed{2 \tfrac{1}{2}}", "2.5", True), (r"\boxed{-1\frac{1}{2}}", "-1.5", True), ("She drinks 2 1/2 liters.", "2.5", True),
    # not a mixed number: an improper fraction after a number, a product
    (r"\boxed{\frac{3}{4}}", "0.75", True), (r"\boxed{3 \times \frac{1}{2}}", "1/2", True), (r"\boxed{10/4}", "2.5", True),
])
def test_gsm8k_a_mixed_number_is_one_value(text, gold, ok):
    assert score_gsm8k(text, gold) is ok


@pytest.mark.parametrize("text, expected", [
    # "the answer would be" in a conditional sentence is a remark after the answer (22, 21, 20 were read)
    ("The answer is 18.\n\nNote: if she had 20 eggs, the answer would be 22.", "18"),
    ("The answer is \\boxed{18}.\n\nIf we included Sunday, the answer would be 21.", "18"),
    ("The final answer is 18. Otherwise the answer would be 20.", "18"),
    # not conditional, or the condition was an earlier sentence: an answer, as before
    ("So the answer would be 18.", "18"), ("If we add them, 10 + 8 = 18. So the answer would be 18.", "18"),
    ("If she sold all 16, the answer would be 32. But she eats 7, so the answer is 18.", "18"),
])
def test_gsm8k_a_hypothetical_answer_is_no_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize("text, letter", [
    ("The answer is C.\n\nIf the question asked about France, the answer would be A.", "C"),  # was A
    ("Answer: C\n\n(If it asked for the largest, the answer would be D.)", "C"),  # was D
    ("So the answer would be C.", "C"), ("If I had to pick, I would choose C.", "C"),
])
def test_mmlu_a_hypothetical_answer_is_no_answer(text, letter):
    assert extract_mmlu_letter(text) == letter


@pytest.mark.parametrize("text, gold, ok", [
    # a reply cut off mid-sum has no answer: its last number was an operand (2 scored right)
    ("Step 3: She makes 9 * 2 =", "2", False), (r"She makes $9 \times 2 =", "2", False), ("16 - 3 - 4 = 9 and 9 +", "9", False),
    ("<think>\nSo the answer is 2.\n</think>\n\nShe makes 9 * 2 =", "2", False),
    # a finished sum, a stated answer before the cut, an emoticon: as before
    ("So she makes 9 * 2 = 18", "18", True), ("The answer is 18. Check: 9 * 2 =", "18", True),
    ("She has 5 apples :-", "5", True), ("She makes *18*", "18", True), ("She makes 9 * 2 *", "2", False),
])
def test_gsm8k_a_reply_cut_off_mid_sum_has_no_answer(text, gold, ok):
    assert score_gsm8k(text, gold) is ok
