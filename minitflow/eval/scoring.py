"""Scoring: two scorers per benchmark, one dispatch.

* strict (the default): correct by construction.  Extraction prefers the
  response's explicit final answer (extract.py); MATH answers are compared by
  math_equiv.is_equiv (numbers with a relative tolerance and rounding check,
  units, structures, sympy, math-verify); GSM8K numbers must be equal.
* official: the TFlow release's verdicts, quirks included (official.py): the
  metric of the paper's Table 1.
* Code (both): the program runs in a sandbox process (code_exec) on the base
  and plus tests; the scorers differ only in which program they take from the
  response, and one run serves both when they take the same one.

`score_both` gives every sample both verdicts; `score_samples` one of them.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Sequence

from minitflow.errors import UserError

from . import official
from .code_exec import DEFAULT_TIMEOUT, build_program, prompt_imports, run_code_tests_many
from .data import gsm8k_gold, load_samples, resolve_dataset
from .extract import (  # noqa: F401 - re-exported: the public names of this module
    boxed_spans,
    cut_at_next_problem,
    extract_boxed,
    extract_code,
    extract_gsm8k_answer,
    extract_math_answer,
    extract_mmlu_letter,
    parse_number,
)
from .math_equiv import (  # noqa: F401 - re-exported
    MATH_TIMEOUT,
    call_with_timeout,
    is_equiv,
    normalize_latex,
    parse_quantity,
)

CODE_DATASETS = ("humaneval", "mbpp")
SCORERS = ("strict", "official")
INSTALL_HINT = 'pip install "minitflow[eval]"'

# ------------------------------------------------------------ dependencies


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def check_eval_dependencies(dataset: str) -> None:
    """Raise one UserError line if scoring `dataset` needs a package that is missing.

    Code: evalplus (MBPP+ inputs are stored in its encoding).  MATH: sympy and
    math-verify, and sympy's LaTeX parser (antlr4 4.11 runtime), which the
    official scorer relies on.  Call it before loading a model: a scorer
    without its library would otherwise score everything 0%.
    """
    dataset = resolve_dataset(dataset)
    needed: list[str] = []
    if dataset in CODE_DATASETS:
        needed = ["evalplus"]
    elif dataset == "minerva_math":
        needed = ["sympy", "math_verify"]
    missing = [m for m in needed if _missing(m)]
    if missing:
        names = ", ".join(m.replace("_", "-") for m in missing)
        raise UserError(f"scoring {dataset} needs {names}: {INSTALL_HINT}")
    if dataset in CODE_DATASETS:  # a bad MINITFLOW_SANDBOX, or no sandbox here: one line now, not a traceback later
        from .sandbox import SandboxError, isolation
        try:
            isolation()
        except SandboxError as e:
            raise UserError(f"scoring {dataset} runs code in a sandbox: {e}") from None
    if dataset == "minerva_math":
        try:
            from sympy.parsing.latex import parse_latex

            parse_latex("1")
        except Exception as e:  # noqa: BLE001 - ImportError or antlr's version mismatch
            raise UserError(f"scoring {dataset} needs sympy's LaTeX parser (antlr4-python3-runtime 4.11, "
                            f"{type(e).__name__}): {INSTALL_HINT}") from None


# ------------------------------------------------------------------- GSM8K


def numbers_equal(pred: Fraction | None, gold: Fraction | None) -> bool:
    """GSM8K answers are exact: 1,450,001 is not 1,450,000 (and 18.00 is 18)."""
    return pred is not None and gold is not None and pred == gold


def vote_key(dataset: str, extracted: str | None) -> object | None:
    """What majority voting (maj@K) groups a sample's extracted answer by: gsm8k its number ("18",
    "18.00" and "$18" agree), minerva_math its canonical LaTeX (normalize_latex: "\\frac12" and
    "x = \\frac{1}{2}" agree; equal values written apart, "0.5", vote apart), mmlu its letter. None: no
    answer (it does not vote), and any code dataset (a program is not an answer to vote on; pass@k
    measures it)."""
    if dataset in CODE_DATASETS or not extracted:
        return None
    if dataset == "gsm8k":
        number = parse_number(extracted)
        return ("text", extracted) if number is None else number
    if dataset == "minerva_math":
        return normalize_latex(extracted) or None
    return extracted


def majority_correct(dataset: str, samples: Sequence[dict], scorer: str = "strict") -> bool:
    """maj@K of one question: whether the answer most of its scored samples (rows with `extracted` /
    `correct`, `_official` for the official scorer) give is correct. A tie goes to the answer the
    earliest of them gave; no answer at all is wrong. The official scorer reads each row's `prediction`
    too: where the release finds no answer it logs the text's start (MATH: "[invalidanswer]"), which
    is no answer, and does not vote."""
    suffix = "" if scorer == "strict" else "_official"
    if suffix and any("prediction" not in row for row in samples):
        raise UserError("official maj@K reads each sample's prediction (whether the release found an answer in "
                        "it): pass rows with `prediction`")
    votes: dict[object, list[dict]] = {}
    for row in samples:
        key = vote_key(dataset, row.get("extracted" + suffix))
        if key is not None and (not suffix or official.answered(dataset, row["prediction"])):
            votes.setdefault(key, []).append(row)
    # max keeps the first of equal counts: the groups are in the order their first vote came
    return bool(votes) and bool(max(votes.values(), key=len)[0]["correct" + suffix])


def score_gsm8k(prediction: str | None, gold: str) -> bool:
    """`gold` is a number or the full GSM8K answer field ending in `#### N`."""
    return numbers_equal(parse_number(extract_gsm8k_answer(prediction)), parse_number(gsm8k_gold(gold)))


# ------------------------------------------------------------- MATH / MMLU


def score_math(prediction: str | None, gold: str, timeout: float = MATH_TIMEOUT) -> bool:
    return is_equiv(extract_math_answer(cut_at_next_problem(prediction)), gold, timeout=timeout)


def score_mmlu(prediction: str | None, gold_letter: str, choices: Sequence[str] | None = None) -> bool:
    return extract_mmlu_letter(prediction, choices) == gold_letter.strip().upper()


# ---------------------------------------------------------------- dispatch


def _check_scorer(scorer: str) -> None:
    if scorer not in SCORERS:
        raise UserError(f"unknown scorer {scorer!r}; expected one of: {', '.join(SCORERS)}")


def _strict_text(dataset: str, prediction: str | None, sample: Any, timeout: float | None) -> tuple[bool, str]:
    if dataset == "gsm8k":
        extracted = extract_gsm8k_answer(prediction, sample.question)
        return numbers_equal(parse_number(extracted), parse_number(sample.answer)), extracted or ""
    if dataset == "minerva_math":
        extracted = extract_math_answer(cut_at_next_problem(prediction))
        return is_equiv(extracted, sample.answer, timeout=timeout or MATH_TIMEOUT), extracted or ""
    extracted = extract_mmlu_letter(prediction, sample.meta.get("choices"))
    return extracted == sample.answer, extracted or ""


def _check_predictions(predictions: Sequence[str | None], samples: Sequence[Any]) -> None:
    """Responses as text (None: none), one per sample, before any scoring: one string was scored
    a character per sample, and run_method's results an AttributeError from inside an extractor."""
    if isinstance(predictions, str):
        raise UserError("predictions is one string: pass a list, e.g. [text]")
    if len(predictions) != len(samples):
        raise UserError(f"{len(predictions)} predictions for {len(samples)} samples")
    bad = next((i for i, p in enumerate(predictions) if p is not None and not isinstance(p, str)), None)
    if bad is not None:
        hint = ": pass [r.answer for r in results]" if hasattr(predictions[bad], "answer") else ""
        raise UserError(f"prediction {bad} is not a string but a {type(predictions[bad]).__name__}{hint}")


def score_sample(
    dataset: str, prediction: str | None, sample: Any, timeout: float | None = None,
    scorer: str = "strict",
) -> tuple[bool, str]:
    """(correct, extracted answer) for one model response.

    For code the extracted answer is the program and correctness means passing
    both the base and the plus tests (run in a sandbox process by code_exec).
    `timeout` overrides MATH_TIMEOUT (sympy) or code_exec.DEFAULT_TIMEOUT.
    """
    dataset = resolve_dataset(dataset)
    _check_scorer(scorer)
    _check_predictions([prediction], [sample])
    if dataset in CODE_DATASETS:
        return score_samples(dataset, [prediction], [sample], workers=1, timeout=timeout, scorer=scorer)[0]
    if scorer == "official":
        return official.official_text_verdict(dataset, prediction, sample)
    return _strict_text(dataset, prediction, sample, timeout)


def score_samples(
    dataset: str,
    predictions: Sequence[str | None],
    samples: Sequence[Any],
    workers: int = 2,
    timeout: float | None = None,
    scorer: str = "strict",
) -> list[tuple[bool, str]]:
    """score_sample over many responses; code datasets run `workers` sandboxes at once."""
    dataset = resolve_dataset(dataset)
    _check_scorer(scorer)
    _check_predictions(predictions, samples)
    key = "correct" if scorer == "strict" else "correct_official"
    ext = "extracted" if scorer == "strict" else "extracted_official"
    if dataset in CODE_DATASETS:
        rows = _score_code(dataset, predictions, samples, workers, timeout, scorers=(scorer,))
    else:
        rows = _score_text(dataset, predictions, samples, workers, timeout, scorers=(scorer,))
    return [(r[key], r[ext]) for r in rows]


def score_both(
    dataset: str,
    predictions: Sequence[str | None],
    samples: Sequence[Any],
    workers: int = 2,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Both verdicts per sample: {"correct", "extracted", "correct_official", "extracted_official"}."""
    dataset = resolve_dataset(dataset)
    _check_predictions(predictions, samples)
    if dataset in CODE_DATASETS:
        return _score_code(dataset, predictions, samples, workers, timeout, scorers=SCORERS)
    return _score_text(dataset, predictions, samples, workers, timeout, scorers=SCORERS)


PARALLEL_MIN = 200  # MATH samples from which scoring is spread over `workers` processes


def _text_rows(job: tuple) -> list[dict[str, Any]]:
    dataset, predictions, samples, timeout, scorers = job
    out = []
    for p, s in zip(predictions, samples):
        row: dict[str, Any] = {}
        if "strict" in scorers:
            ok, row["extracted"] = _strict_text(dataset, p, s, timeout)
            row["correct"] = bool(ok)
        if "official" in scorers:
            ok, row["extracted_official"] = official.official_text_verdict(dataset, p, s)
            row["correct_official"] = bool(ok)
        out.append(row)
    return out


def _score_text(
    dataset: str,
    predictions: Sequence[str | None],
    samples: Sequence[Any],
    workers: int,
    timeout: float | None,
    scorers: Sequence[str],
) -> list[dict[str, Any]]:
    """GSM8K / MMLU in this process (well under a millisecond a sample); MATH (sympy,
    math-verify: milliseconds to seconds a sample) in `workers` forked processes once
    there are PARALLEL_MIN samples, unless this process holds a CUDA context (fork
    would copy it; the caller is then scoring small batches beside a model anyway)."""
    n = len(predictions)
    job = (dataset, list(predictions), list(samples), timeout, tuple(scorers))
    if dataset != "minerva_math" or workers <= 1 or n < PARALLEL_MIN or not _fork_is_safe():
        return _text_rows(job)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    step = -(-n // (workers * 4))
    jobs = [(dataset, job[1][i:i + step], job[2][i:i + step], timeout, job[4]) for i in range(0, n, step)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return [row for part in pool.map(_text_rows, jobs) for row in part]


def _fork_is_safe() -> bool:
    torch = sys.modules.get("torch")
    return torch is None or not torch.cuda.is_initialized()


def _score_code(
    dataset: str,
    predictions: Sequence[str | None],
    samples: Sequence[Any],
    workers: int,
    timeout: float | None,
    scorers: Sequence[str],
) -> list[dict[str, Any]]:
    """Run each distinct (problem id, program) once, whichever scorer or sample
    asks for it; the official program is the release's ```python block (none,
    or no mention of the entry point: wrong without a run), run as written: the
    release execs it alone before the test script, so a HumanEval block that
    uses the prompt's `List` without importing it fails there, and here too."""
    jobs: dict[tuple[str, str], int] = {}
    items: list[tuple[Any, str]] = []

    def job(i: int, program: str) -> int:
        # blank lines around the program do not change it; the first line's indentation
        # does (a body-only block), so it is not stripped; nor is what str.strip takes for
        # whitespace and Python refuses (\x1c, U+2028: a SyntaxError in one program, not the other)
        key = (str(samples[i].id), re.sub(r"\A(?:[ \t]*\r?\n)+", "", program).rstrip(" \t\r\n"))
        if key not in jobs:
            jobs[key] = len(items)
            items.append((samples[i], program))
        return jobs[key]

    plan = []
    for i, (p, s) in enumerate(zip(predictions, samples)):
        entry = s.meta.get("entry_point")
        strict_code = extract_code(p, entry, prompt_imports(s))
        off_code = official.code_extract(p or "")
        strict_job = job(i, build_program(s, strict_code)) if "strict" in scorers else None
        off_job = None
        if "official" in scorers and off_code is not None and official.defines(off_code, entry):
            off_job = job(i, off_code)
        plan.append((strict_code, strict_job, off_code or "", off_job))
    results = run_code_tests_many(items, workers=workers, timeout=timeout or DEFAULT_TIMEOUT, as_written=True)
    passed = [bool(base and plus) for base, plus, _ in results]
    return [{"correct": passed[sj] if sj is not None else False, "extracted": sc,
             "correct_official": passed[oj] if oj is not None else False, "extracted_official": oc}
            for sc, sj, oc, oj in plan]


class ScoringProcess:
    """`score_both` in a child process, on its main thread, where SIGALRM stops sympy and
    math-verify at their timeouts: on any other thread a comparison past its timeout can only
    be abandoned, still running. The child reads jobs on its stdin and exits at EOF, so it
    ends with this process however that ends (kill -9 included); it has its own session, so
    Ctrl-C is this process's to handle (`close` lets the job in hand finish, `kill` does not)."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the minitflow package
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from minitflow.eval.scoring import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path},
            start_new_session=True)

    def __call__(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _send(self.proc.stdin, (args, kwargs))
        got = _receive(self.proc.stdout)
        if got is None:
            raise RuntimeError(f"the scoring process exited ({self.proc.wait()})")
        ok, value = got
        if not ok:
            raise value
        return value

    def kill(self) -> None:
        """Stop the job in hand now (a call waiting on it raises; Ctrl-C: see BackgroundScorer)."""
        self.proc.kill()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:  # killed with a job unread
            pass
        self.proc.wait()
        self.proc.stdout.close()


def _send(f: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(len(data).to_bytes(8, "little") + data)
    f.flush()


def _receive(f: IO[bytes]) -> Any:
    """The next object, or None at EOF."""
    head = f.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    data = f.read(size)
    return pickle.loads(data) if len(data) == size else None


def _serve() -> None:
    """The child of ScoringProcess: score_both for each job until stdin closes. Its replies
    use a copy of stdout; fd 1 becomes stderr, so a library's print cannot corrupt them."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    while (job := _receive(sys.stdin.buffer)) is not None:
        args, kwargs = job
        try:
            reply = (True, score_both(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - re-raised in the parent
            reply = (False, e)
        try:
            _send(out, reply)
        except Exception:  # noqa: BLE001 - an exception pickle cannot carry: its text instead
            _send(out, (False, RuntimeError(repr(reply[1])[:500])))


# ------------------------------------------------------------------ oracle


def oracle_prediction(dataset: str, sample: Any) -> str:
    """The gold answer written the way a model response would carry it."""
    dataset = resolve_dataset(dataset)
    if dataset == "gsm8k":
        reasoning = sample.meta.get("solution", "").split("####")[0].strip()
        return f"{reasoning}\nSo the final answer is \\boxed{{{sample.answer}}}."
    if dataset == "minerva_math":
        return sample.meta.get("solution") or f"The answer is $\\boxed{{{sample.answer}}}$."
    if dataset == "mmlu":
        return f"Let me check each option.\nThe answer is \\boxed{{{sample.answer}}}."
    meta = sample.meta
    if dataset == "humaneval":
        program = meta["prompt"] + meta["canonical_solution"]
    else:
        program = meta["canonical_solution"]
    return f"Here is my solution.\n```python\n{program.strip()}\n```\n"


def run_oracle(
    dataset: str,
    data_file: str,
    max_samples: int = -1,
    workers: int = 2,
    timeout: float | None = None,
    samples: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Score oracle responses on a dataset file: should be 100% (dict: accuracy, n, failures)."""
    dataset = resolve_dataset(dataset)
    if samples is None:
        samples = load_samples(dataset, data_file, max_samples=max_samples)
    preds = [oracle_prediction(dataset, s) for s in samples]
    failures: list[tuple[str, str]] = []
    if dataset in CODE_DATASETS:
        codes = [extract_code(p, s.meta.get("entry_point")) for p, s in zip(preds, samples)]
        results = run_code_tests_many(list(zip(samples, codes)), workers=workers,
                                      timeout=timeout or DEFAULT_TIMEOUT)
        for s, (base, plus, detail) in zip(samples, results):
            if not (base and plus):
                failures.append((s.id, detail))
    else:
        for s, p in zip(samples, preds):
            ok, extracted = score_sample(dataset, p, s, timeout)
            if not ok:
                failures.append((s.id, f"extracted {extracted!r}, gold {s.answer!r}"))
    n = len(samples)
    return {"accuracy": (n - len(failures)) / n if n else 0.0, "n": n, "failures": failures}


__all__ = [
    "CODE_DATASETS", "SCORERS", "MATH_TIMEOUT", "check_eval_dependencies", "call_with_timeout",
    "cut_at_next_problem", "extract_boxed", "extract_code", "extract_gsm8k_answer",
    "extract_math_answer", "extract_mmlu_letter", "is_equiv", "majority_correct", "normalize_latex", "numbers_equal",
    "oracle_prediction", "parse_number", "run_oracle", "score_both",
    "score_gsm8k", "score_math", "score_mmlu", "score_sample", "score_samples", "vote_key",
]
