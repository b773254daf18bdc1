"""Scoring a dataset's replies (minitflow/eval/scoring.py): the dispatch by dataset name, the strict
and official scorers of score_samples and score_both's two columns, one code run shared only by
identical programs, MATH scored in worker processes, predictions checked, and a missing optional
dependency as one line (no data files needed)."""

import pytest

from minitflow.errors import UserError
from minitflow.eval.data import Sample
from minitflow.eval.scoring import check_eval_dependencies, score_both, score_sample, score_samples
from code_samples import ADD, GOOD, _add_sample, _sample


def test_score_sample_dispatch():
    gsm = Sample("g/0", "q", "18", {"dataset": "gsm8k"})
    assert score_sample("gsm8k", r"\boxed{18}", gsm) == (True, "18")
    math_s = Sample("m/0", "q", r"\frac{1}{2}", {"dataset": "minerva_math"})
    assert score_sample("math", r"\boxed{0.5}", math_s) == (True, "0.5")
    mmlu_s = Sample("u/0", "q", "C", {"dataset": "mmlu", "choices": ["a", "b", "c", "d"]})
    assert score_sample("mmlu_redux", "The answer is (C).", mmlu_s) == (True, "C")
    ok, code = score_sample("humanevalplus", f"```python\n{GOOD}```", _add_sample())
    assert ok and code == GOOD


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

    def counting(items, **kwargs):
        calls.append(len(items))
        return real(items, **kwargs)

    monkeypatch.setattr(scoring, "run_code_tests_many", counting)
    preds = [f"```python\n{GOOD}```", f"```Python\n{GOOD}```", f"```py\n{GOOD}```", "no code at all"]
    both = score_both("humaneval", preds, [ADD] * 4, timeout=10)  # a prompt with no imports to add
    assert calls == [2]  # GOOD once, and the raw text of the last reply (official: nothing to run)
    assert [b["correct"] for b in both] == [True, True, True, False]
    assert [b["correct_official"] for b in both] == [True, True, False, False]
    assert both[2]["extracted_official"] == ""


def test_official_code_runs_the_block_as_written():
    """The release execs the block alone before the test script: a HumanEval block using the
    prompt's `List` without importing it is a NameError there. The strict scorer adds the
    prompt's imports (evalplus runs prompt-completed programs); the official one must not."""
    preds = ["```python\ndef add(a: List[int], b):\n    return a + b\n```",
             "```python\nfrom typing import List\ndef add(a: List[int], b):\n    return a + b\n```"]
    both = score_both("humaneval", preds, [_add_sample()] * 2, timeout=10)
    assert [(b["correct"], b["correct_official"]) for b in both] == [(True, False), (True, True)]


def test_strict_code_takes_a_helper_from_an_earlier_block():
    """The program calls a helper the reply wrote in a block before it: the strict scorer runs the two
    together (the helper's own failing check left behind), the release the last block alone."""
    pred = ("First a helper:\n```python\nfrom typing import List\n\ndef plus(a: int, b: int) -> int:\n"
            "    return a + b\n\nassert plus(1, 2) == 4\n```\nNow the function:\n```python\n"
            "def add(a: List[int], b):\n    return plus(a, b)\n```\n")
    both = score_both("humaneval", [pred], [_add_sample()], timeout=10)
    assert both == [{"correct": True, "extracted": "def plus(a: int, b: int) -> int:\n    return a + b\n\n"
                     "def add(a: List[int], b):\n    return plus(a, b)\n", "correct_official": False,
                     "extracted_official": "def add(a: List[int], b):\n    return plus(a, b)"}]


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


def test_code_correct_needs_the_plus_tests_too():
    base_only = "```python\ndef add(a, b):\n    return a + b if a < 1000 else 0\n```"
    assert score_samples("humaneval", [base_only], [_add_sample()], timeout=10) == [
        (False, "def add(a, b):\n    return a + b if a < 1000 else 0\n")]


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


def test_a_latex_parser_that_does_not_run_is_one_line(monkeypatch):
    """sympy without its antlr runtime (or another antlr version) fails in parse_latex, not on import:
    every official MATH comparison would then read "not equal", so it is refused up front."""
    import sympy.parsing.latex

    def no_antlr(text):
        raise ImportError("LaTeX parsing requires the antlr4 Python package")

    monkeypatch.setattr(sympy.parsing.latex, "parse_latex", no_antlr)
    with pytest.raises(UserError, match=r"^scoring minerva_math needs sympy's LaTeX parser \(antlr4-python3-runtime "
                                        r"4.11, ImportError\): pip install \"minitflow\[eval\]\"$"):
        check_eval_dependencies("math")
    check_eval_dependencies("gsm8k")  # no LaTeX there


def test_official_majority_needs_the_predictions():
    from minitflow.eval.scoring import majority_correct
    rows = [{"extracted_official": "18", "correct_official": True}]
    with pytest.raises(UserError, match=r"^official maj@K reads each sample's prediction .*pass rows with `prediction`$"):
        majority_correct("gsm8k", rows, scorer="official")
    assert majority_correct("gsm8k", [{**rows[0], "prediction": "\\boxed{18}"}], scorer="official")


def test_the_scoring_process_raises_its_childs_error_and_goes_on():
    """A job that fails in the child is raised in the caller as the child raised it; the child keeps serving."""
    from minitflow.eval.scoring import ScoringProcess
    samples = [Sample("gsm8k/0", "q", "18"), Sample("gsm8k/1", "q", "3")]
    proc = ScoringProcess()
    try:
        with pytest.raises(UserError, match=r"^1 predictions for 2 samples$"):
            proc("gsm8k", ["18"], samples)
        assert proc("gsm8k", ["\\boxed{18}"], samples[:1]) == score_both("gsm8k", ["\\boxed{18}"], samples[:1])
    finally:
        proc.close()
    assert proc.proc.returncode == 0


def test_the_code_oracle_names_a_task_whose_canonical_solution_fails():
    from minitflow.eval.scoring import run_oracle
    broken = _sample("add", "    raise ValueError('no')\n", [[1, 2]], [[3, 4]], sid="Toy/1")
    result = run_oracle("humaneval", "", samples=[ADD, broken], timeout=10)
    assert result == {"accuracy": 0.5, "n": 2, "failures": [
        ("Toy/1", "error: the canonical solution failed: err ['ValueError: no']")]}
