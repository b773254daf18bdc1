"""Benchmark loading: one `Sample` type for every dataset the harness scores.

Local files (JSONL, JSONL.gz or a JSON list) are the primary source and never
touch the network.  Without a file we try the HF `datasets` hub / evalplus
release loaders; with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or a hub that
does not answer (`_hub_silent`), the copy an earlier download left in the
Hugging Face cache / evalplus' cache instead (`_cached_records`).  Any
failure becomes one `UserError` line naming the file to pass with `--data_file`.

Gold answers (`Sample.answer`):
  gsm8k         the number after `####` in the `answer` field ("1234", "-5", "0.5")
  minerva_math  the last `\\boxed{...}` of the `solution` field (raw LaTeX)
  mmlu          the letter "A".."D" of the original MMLU `answer` index (in the
                default "official" row set `wrong_groundtruth` rows use the
                corrected letter; see `_mmlu`)
  humaneval     ""   (scored by executing tests; everything needed is in `meta`)
  mbpp          ""   (same)
`meta["dataset"]` always holds the canonical dataset name.

Question texts (`Sample.question`) reproduce the official TFlow loader,
github.com/BWR-hhh/TFlow `src/data/datasets.py` (Apache-2.0), character for
character; the prompt strings and the Minerva few-shot exemplars below are
copied verbatim from it, the code around them is our own:
  gsm8k         question.strip()
  minerva_math  4-shot Minerva prefix + "\n\nProblem:\n{problem}\n\nSolution:\n"
                (`minerva_fewshot=False`: the bare problem)
  mmlu          "{stem}\nA: {opt}\nB: {opt}..."  (stem and options stripped)
  humaneval     CODE_PREFACE + prompt
  mbpp          CODE_PREFACE + task text + MBPP_TESTS_HEADER + first three tests
                (how the local evalplus file maps onto the official HF fields: `_mbpp`)
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from minitflow.errors import UserError
from minitflow.files import decode_utf8, env_true, hub_offline, hub_silence, json_reason, json_rows

from .extract import extract_boxed, parse_number


@dataclass
class Sample:
    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    prompt_style: str  # the official TFlow prompt-style key
    default_file: str  # path of the local copy relative to a data dir (e.g. shared/data)
    fields: str  # fields a --data_file must have, shown in error messages


DATASETS: dict[str, DatasetInfo] = {
    "gsm8k": DatasetInfo("gsm8k", "gsm8k", "gsm8k/test.jsonl", "question, answer"),
    "minerva_math": DatasetInfo(
        "minerva_math", "minerva_math", "minerva_math/test.jsonl", "problem, solution"
    ),
    "mmlu": DatasetInfo(
        "mmlu", "mmlu", "mmlu_redux/test.jsonl",
        "subject, question, choices, answer, error_type",
    ),
    "humaneval": DatasetInfo(
        "humaneval", "humanevalplus", "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz",
        "task_id, prompt, entry_point, canonical_solution, base_input, plus_input, atol",
    ),
    "mbpp": DatasetInfo(
        "mbpp", "mbppplus", "mbpp_plus/MbppPlus-v0.2.0.jsonl",
        "task_id, prompt, entry_point, canonical_solution, base_input, plus_input, atol",
    ),
}

ALIASES: dict[str, str] = {
    "humanevalplus": "humaneval",
    "humaneval_plus": "humaneval",
    "humaneval+": "humaneval",
    "mbppplus": "mbpp",
    "mbpp_plus": "mbpp",
    "mbpp+": "mbpp",
    "mmlu_redux": "mmlu",
    "mmlu-redux": "mmlu",
    "math": "minerva_math",
    "minerva": "minerva_math",
}

MMLU_LETTERS = "ABCDEFGHIJ"

# The 57 MMLU subjects (MMLU-Redux 2.0 covers all of them); used for the online loader.
MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology "
    "college_chemistry college_computer_science college_mathematics college_medicine "
    "college_physics computer_security conceptual_physics econometrics electrical_engineering "
    "elementary_mathematics formal_logic global_facts high_school_biology "
    "high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics "
    "high_school_psychology high_school_statistics high_school_us_history "
    "high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous "
    "moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations "
    "security_studies sociology us_foreign_policy virology world_religions"
).split()


def resolve_dataset(name: str) -> str:
    """Canonical dataset name for `name` or an alias; a one-line UserError otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        known = ", ".join(sorted(set(DATASETS) | set(ALIASES)))
        raise UserError(f"unknown dataset {name!r}; expected one of: {known}")
    return key


def dataset_label(dataset: str, samples) -> str:
    """The report's column: humaneval+ and mbpp+ where the file has plus tests (evalplus'), which the
    sandbox runs beside the base ones (MBPP+ was "mbpp" beside "humaneval+"); HumanEval's own file,
    or MBPP rows without plus tests, keep the plain name."""
    if dataset in ("humaneval", "mbpp"):
        return dataset + "+" if any(s.meta.get("plus_input") for s in samples) else dataset
    return dataset


def prompt_style(dataset: str) -> str:
    """The official prompt-style key: gsm8k, minerva_math, mmlu, humanevalplus, mbppplus."""
    return DATASETS[resolve_dataset(dataset)].prompt_style


# --------------------------------------------------------------------------- rows


# a JSON escape of a UTF-16 surrogate (high or low): a record may then hold a lone one
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a local JSONL / JSONL.gz file (or a JSON list). Never uses the network."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"data file {path} is a directory, not a file")
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # not gzip, truncated .gz, unreadable
        raise UserError(f"cannot read data file {path}: {getattr(e, 'strerror', None) or e or type(e).__name__}") from None
    text = decode_utf8(data, f"data file {path}")
    if text.lstrip().startswith("["):
        try:
            rows = list(json.loads(text))
        except ValueError as e:
            where = f"line {e.lineno}: " if isinstance(e, json.JSONDecodeError) else ""
            raise UserError(f"{path}: not a valid JSON list ({where}{json_reason(e)})") from None
    else:
        rows = [row for _, row in json_rows(text, str(path))]
    if SURROGATE_ESCAPE.search(text):  # rare: only then is each row checked
        _no_lone_surrogates(rows, path)
    return rows


def _no_lone_surrogates(rows: list, path: Path) -> None:
    """A "\\ud800" escape reads as a lone surrogate, which no UTF-8 file holds: results.json
    could not be written once every question had run. Refused when read, naming the record."""
    for n, row in enumerate(rows, 1):
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise UserError(f"{path}: record {n} holds a lone surrogate (U+{ord(e.object[e.start]):04X}), "
                            "which is not valid Unicode") from None


# The type each checked field must have (an MMLU file passed as GSM8K has an int "answer").
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "question": str, "problem": str, "solution": str, "choices": list, "task_id": (str, int), "prompt": str,
    "entry_point": str, "canonical_solution": str, "base_input": list, "plus_input": (list, dict)}


def _need(row: dict, keys: Iterable[str], dataset: str, where: str, text: str | None = None) -> None:
    """The record has `keys` of the right types and, if named, a non-blank `text` field (an empty
    question would still run: the methods would answer, and tflow capture, the bare prompt)."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: a record is a JSON {type(row).__name__}, expected an object "
                        f"(a {dataset} file needs: {DATASETS[dataset].fields})")
    types = {**FIELD_TYPES, "answer": int if dataset == "mmlu" else str}
    bad = next((k for k in keys if k in row and k in types and
                (not isinstance(row[k], types[k]) or isinstance(row[k], bool))), None)
    if bad is not None:
        raise UserError(f"{where}: field {bad!r} is a {type(row[bad]).__name__} "
                        f"(is this a {dataset} file? it needs: {DATASETS[dataset].fields})")
    missing = [k for k in keys if k not in row]
    if missing:
        info = DATASETS[dataset]
        raise UserError(
            f"{where}: record lacks field(s) {', '.join(missing)} "
            f"(a {dataset} file needs: {info.fields})"
        )
    if text is not None and not str(row[text]).strip():
        raise UserError(f"{where}: a record's {text!r} is empty{_record_id(row)}")


def _record_id(row: dict) -> str:
    return f" (idx {row['idx']})" if "idx" in row else ""


def gsm8k_gold(answer_field: str) -> str:
    """The number after the last `####`, commas removed ("1,234" -> "1234")."""
    tail = answer_field.split("####")[-1].strip()
    return tail.replace(",", "").replace("$", "").strip()


def _gsm8k(rows: list[dict], where: str) -> list[Sample]:
    """A gold that is not a number ("\\boxed{7}", a solution without its `#### N`) is refused: both
    scorers compare numbers, so every answer to it was scored wrong without a word (a silent 0%)."""
    out = []
    for i, r in enumerate(rows):
        _need(r, ("question", "answer"), "gsm8k", where, text="question")
        gold = gsm8k_gold(r["answer"])
        if parse_number(gold) is None:
            raise UserError(f"{where}: record {i + 1}{_record_id(r)}: 'answer' gives no number as the gold "
                            f"({gold[-40:]!r}): a gsm8k answer ends in '#### N' (or is the number N)")
        out.append(Sample(
            id=f"gsm8k/{r.get('idx', i)}",
            question=r["question"].strip(),
            answer=gold,
            meta={"dataset": "gsm8k", "solution": r["answer"]},
        ))
    return out


# ------------------------------------------------------------- official prompts
# The strings and exemplars in this section are data copied verbatim from the
# official TFlow loader (github.com/BWR-hhh/TFlow, src/data/datasets.py,
# Apache-2.0); they must stay byte-identical for the paper's numbers to
# reproduce.  The code around them is minitflow's own.

CODE_PREFACE = (
    "Please provide a self-contained Python script that solves the following "
    "problem in a markdown code block:\n"
    "```python\nYOUR_PYTHON_CODE\n```:\n"
)
MBPP_TESTS_HEADER = "\nYour answer will be tested on test cases like:\n"

# Minerva Math 4-shot exemplars (the official `_MINERVA_MATH_FEWSHOT`, itself
# aligned with lm-evaluation-harness tasks/minerva_math, Lewkowycz et al. 2022 App. D).
MINERVA_FEWSHOT: tuple[tuple[str, str], ...] = (
    (
        r"Find the domain of the expression $\frac{\sqrt{x-2}}{\sqrt{5-x}}$.",
        r"The expressions inside each square root must be non-negative. "
        r"Therefore, $x-2 \ge 0$, so $x \ge 2$, and $5 - x \ge 0$, so $x \le 5$. "
        r"Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. "
        r"Therefore, the domain of the expression is $\boxed{[2,5)}$."
        "\nFinal Answer: The final answer is $[2,5)$. I hope it is correct.",
    ),
    (
        r"If $\det \mathbf{A} = 2$ and $\det \mathbf{B} = 12,$ then find $\det (\mathbf{A} \mathbf{B}).$",
        r"We have that $\det (\mathbf{A} \mathbf{B}) = (\det \mathbf{A})(\det \mathbf{B}) = (2)(12) = \boxed{24}.$"
        "\nFinal Answer: The final answer is $24$. I hope it is correct.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, "
        "how many times must Terrell lift them in order to lift the same total weight?",
        r"If Terrell lifts two 20-pound weights 12 times, he lifts a total of "
        r"$2 \cdot 12 \cdot 20 = 480$ pounds of weight. If he lifts two 15-pound weights "
        r"instead for $n$ times, he will lift a total of $2 \cdot 15 \cdot n = 30n$ pounds of weight. "
        r"Equating this to 480 pounds, we can solve for $n$:"
        "\n\\begin{align*}\n30n &= 480 \\\\\n\\Rightarrow\\qquad n &= 480/30 = \\boxed{16}\n\\end{align*}"
        "\nFinal Answer: The final answer is $16$. I hope it is correct.",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y &= a, \\\\\n6y-9x &= b.\n\\end{align*}"
        "has a solution $(x, y)$ where $x$ and $y$ are both nonzero, "
        r"find $\frac{a}{b},$ assuming $b$ is nonzero.",
        r"If we multiply the first equation by $-\frac{3}{2}$, we obtain"
        "\n\n"
        r"$$6y - 9x = -\frac{3}{2}a.$$"
        r"Since we also know that $6y - 9x = b$, we have"
        "\n\n"
        r"$$-\frac{3}{2}a = b \Rightarrow \frac{a}{b} = \boxed{-\frac{2}{3}}.$$"
        "\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    ),
)


def minerva_fewshot_prefix() -> str:
    """The four exemplars as `Problem:\\n...\\n\\nSolution:\\n...`, blank-line separated."""
    return "\n\n".join(f"Problem:\n{p}\n\nSolution:\n{sol}" for p, sol in MINERVA_FEWSHOT)


MINERVA_FEWSHOT_PREFIX = minerva_fewshot_prefix()


def minerva_question(problem: str, fewshot: bool = True) -> str:
    """The official Minerva query: 4-shot prefix + the problem, ending in `Solution:\\n`."""
    problem = problem.strip()
    if not fewshot:
        return problem
    return f"{MINERVA_FEWSHOT_PREFIX}\n\nProblem:\n{problem}\n\nSolution:\n"


# --------------------------------------------------------------------- loaders


def _minerva(rows: list[dict], where: str, fewshot: bool = True) -> list[Sample]:
    out = []
    for i, r in enumerate(rows):
        _need(r, ("problem", "solution"), "minerva_math", where, text="problem")
        gold = extract_boxed(r["solution"])  # as the official loader, whatever an "answer" field says
        if gold is None:
            raise UserError(f"{where}: record {i} has no \\boxed{{}} answer in 'solution'")
        out.append(Sample(
            id=f"minerva_math/{r.get('idx', i)}",
            question=minerva_question(str(r["problem"]), fewshot),
            answer=str(gold).strip(),
            meta={"dataset": "minerva_math", "solution": r["solution"], "type": r.get("type", ""),
                  "problem": str(r["problem"]).strip()},
        ))
    return out


def format_mmlu_question(question: str, choices: list[str]) -> str:
    """The official TFlow format: the stem, then one `A: text` line per option."""
    lines = [str(question).strip()]
    lines += [f"{MMLU_LETTERS[k]}: {str(c).strip()}" for k, c in enumerate(choices)]
    return "\n".join(lines)


def _error_type_norm(r: dict) -> str:
    raw = r.get("error_type_norm") or r.get("error_type") or ""
    return str(raw).strip().lower().replace(" ", "_")


def mmlu_corrected_letter(correct_answer: Any, choices: list[str]) -> str | None:
    """The letter a Redux `correct_answer` names, read the way the official loader reads it.

    Accepted: a single letter ("C"), an option index ("2"), or the exact text of
    an option (case-insensitive).  Anything else (empty, "0,1", prose) -> None.
    """
    c = str(correct_answer if correct_answer is not None else "").strip()
    letters = MMLU_LETTERS[:len(choices)]
    if len(c) == 1 and c.upper() in letters:
        return c.upper()
    try:
        k = int(c)
    except ValueError:
        pass
    else:
        if 0 <= k < len(letters):
            return letters[k]
    for k, opt in enumerate(choices):
        if str(opt).strip().lower() == c.lower():
            return letters[k]
    return None


MMLU_ROW_SETS = ("official", "ok", "all")


def resolve_mmlu_rows(mmlu_rows: str | None = "official", include_all_mmlu: bool | None = None) -> str:
    """The MMLU-Redux row set to score: `mmlu_rows`, or the old `include_all_mmlu` flag.

    include_all_mmlu=True always selected the official loader's rows, so it maps
    to "official"; False (its old default) to whatever `mmlu_rows` says. Both, naming another
    row set, are refused: one of them would win without a word."""
    if include_all_mmlu and mmlu_rows not in (None, "official"):
        raise UserError(f"--include_all_mmlu means --mmlu_rows official; it contradicts --mmlu_rows {mmlu_rows}")
    rows = "official" if include_all_mmlu else (mmlu_rows or "official")
    if rows not in MMLU_ROW_SETS:
        raise UserError(f"unknown MMLU row set {rows!r}; expected one of: {', '.join(MMLU_ROW_SETS)}")
    return rows


def _mmlu(rows: list[dict], where: str, mmlu_rows: str) -> list[Sample]:
    """MMLU-Redux rows, in one of three row sets.

    "official" (default) reproduces the official TFlow loader: `no_correct_answer`
    rows are dropped (35 locally, leaving 5,665); `wrong_groundtruth` rows are
    scored against the letter their `correct_answer` names (see
    `mmlu_corrected_letter`; 102 of the 107 local ones name a letter, 101 of
    them a different one; the 5 with an empty `correct_answer` keep the
    original answer, as upstream); every other annotation keeps the original
    answer.

    "ok": only rows annotated `error_type == ok`, gold = the original MMLU
    `answer` (5,330 of the 5,700 local rows): the clean subset.

    "all": every row (5,700), each on its original MMLU answer (plain MMLU on
    the Redux questions, no corrections).

    `meta["original_answer"]` always holds the original MMLU letter.  In every
    set rows with an empty stem or fewer than two options are skipped (as
    upstream; none locally).  Ids (`mmlu/<subject>/<k>`) number every row of a
    subject, kept or not, so they do not depend on the row set.
    """
    out = []
    per_subject: dict[str, int] = {}
    for n, r in enumerate(rows, 1):
        _need(r, ("question", "choices", "answer"), "mmlu", where)
        subject = r.get("subject", "mmlu")
        k = per_subject.get(subject, 0)
        per_subject[subject] = k + 1
        err = _error_type_norm(r)
        if (mmlu_rows == "ok" and err != "ok") or (mmlu_rows == "official" and err == "no_correct_answer"):
            continue
        choices = list(r["choices"])
        if not str(r["question"]).strip() or len(choices) < 2:
            continue
        if len(choices) > len(MMLU_LETTERS):
            raise UserError(f"{where}: record {n} has {len(choices)} choices, more than the "
                            f"{len(MMLU_LETTERS)} letters A-{MMLU_LETTERS[-1]}")
        if not 0 <= r["answer"] < len(choices):  # a negative one would index from the end
            raise UserError(f"{where}: record {n}: 'answer' {r['answer']} is not a choice's index (0 to "
                            f"{len(choices) - 1})")
        original = MMLU_LETTERS[int(r["answer"])]
        gold = original
        if mmlu_rows == "official" and err == "wrong_groundtruth":
            gold = mmlu_corrected_letter(r.get("correct_answer"), choices) or original
        out.append(Sample(
            id=f"mmlu/{subject}/{k}",
            question=format_mmlu_question(r["question"], choices),
            answer=gold,
            meta={
                "dataset": "mmlu",
                "subject": subject,
                "choices": choices,
                "error_type": err,
                "original_answer": original,
                "correct_answer": r.get("correct_answer", ""),
                "in_redux_v1": bool(r.get("in_redux_v1", False)),
                "mmlu_rows": mmlu_rows,
            },
        ))
    return out


CODE_TASK_PREFIXES = {"humaneval": "HumanEval/", "mbpp": "Mbpp/"}


def _not_the_other_code_benchmark(row: dict, dataset: str, where: str) -> None:
    """HumanEval+ and MBPP+ rows share their fields, so only their task ids tell the files apart:
    the other benchmark's file would be prompted, and its inputs decoded, the wrong way."""
    for other, prefix in CODE_TASK_PREFIXES.items():
        if other != dataset and str(row["task_id"]).startswith(prefix):
            raise UserError(f"{where}: task {row['task_id']} is a {other} task (is this a {other} file? "
                            f"pass --dataset {other})")


def _humaneval(rows: list[dict], where: str) -> list[Sample]:
    """HumanEval+ rows (or original HumanEval rows, which only have the `test` script).

    Question = CODE_PREFACE + the raw `prompt` (official format; the original
    HumanEval file gets the same, as TFlow maps `humaneval` to HumanEval+).
    """
    out = []
    for r in rows:
        _need(r, ("task_id", "prompt", "entry_point", "canonical_solution"), "humaneval", where)
        _not_the_other_code_benchmark(r, "humaneval", where)
        if "base_input" not in r and "test" not in r:  # neither HumanEval+ nor HumanEval
            _need(r, ("base_input", "plus_input"), "humaneval", where)
        meta = {"dataset": "humaneval"}
        meta.update({k: r[k] for k in (
            "task_id", "prompt", "entry_point", "canonical_solution", "test",
            "base_input", "plus_input", "atol", "contract") if k in r})
        out.append(Sample(id=r["task_id"], question=CODE_PREFACE + r["prompt"], answer="", meta=meta))
    return out


def _assert_statements(script: str) -> list[str]:
    """Top-level `assert` statements of a test script, in order, as source text."""
    try:
        tree = ast.parse(script)
    except SyntaxError:
        return [ln.strip() for ln in script.splitlines() if ln.strip().startswith("assert")]
    out = []
    for node in tree.body:
        if isinstance(node, ast.Assert):
            out.append(ast.get_source_segment(script, node).strip())
    return out


def split_mbpp_prompt(prompt: str) -> tuple[str, str]:
    """(task text, first test) of an evalplus MBPP+ release prompt.

    The release wraps the sanitized-MBPP task text and its first test in a
    docstring, `\"\"\"\\n{text}\\n{test_list[0]}\\n\"\"\"\\n`.  The task text comes back
    untouched (inner and trailing spaces kept).  A prompt that is not such a
    docstring comes back as (prompt, "").
    """
    stripped = prompt.strip()
    quote = stripped[:3]
    if quote in ('"' * 3, "'" * 3) and len(stripped) >= 6 and stripped.endswith(quote):
        body = stripped[3:-3]
        body = body[1:] if body.startswith("\n") else body
        body = body[:-1] if body.endswith("\n") else body
        text, _, last = body.rpartition("\n")
        if last.strip().startswith("assert"):
            return text, last.strip()
        return body, ""
    return prompt, ""


def mbpp_test_list(prompt: str, assertion: str) -> list[str]:
    """Best local reconstruction of the HF `evalplus/mbppplus` `test_list[:3]`.

    The first test is the one inside the release prompt (the HF `test_list[0]`);
    the others are the asserts that follow it in the release's `assertion`
    script (its second and third asserts when it does not contain the first).
    Checked against sanitized MBPP (which the HF rows derive from), this gives
    all three tests exactly for 368 of the 378 tasks; the other 10 differ where
    evalplus rewrote the tests (math.isclose, dropped set(...) wrappers, fixed
    oracles: Mbpp/2, 120, 140, 293, 590, 612, 723, 733, 742, 793).
    """
    _, first = split_mbpp_prompt(prompt)
    asserts = _assert_statements(assertion or "")
    if not first:
        return asserts[:3]
    rest = asserts[asserts.index(first) + 1:] if first in asserts else asserts[1:]
    return [first] + rest[:2]


def mbpp_question(text: str, tests: list[str]) -> str:
    """The official MBPP+ query: preface + task text + the first three tests."""
    return CODE_PREFACE + text + MBPP_TESTS_HEADER + "\n".join(tests[:3])


def _mbpp(rows: list[dict], where: str) -> list[Sample]:
    """MBPP+ rows; question = `mbpp_question(task text, test_list)`.

    The official loader reads the HF `evalplus/mbppplus` rows, whose `prompt`
    is the bare sanitized-MBPP task text and `test_list` its tests.  The local
    evalplus release file (MbppPlus-v0.2.0.jsonl) has neither field: the task
    text and first test come from its docstring `prompt`, tests two and three
    from its `assertion` script (see `mbpp_test_list`).  The release strips
    the reference URLs that 18 sanitized-MBPP task texts end with (e.g.
    Mbpp/734); whether the HF rows do too cannot be checked offline.  Rows
    that carry `test_list` (HF-style) are used as they are.
    """
    out = []
    for r in rows:
        _need(r, ("task_id", "entry_point", "canonical_solution", "base_input"), "mbpp", where)
        _not_the_other_code_benchmark(r, "mbpp", where)
        if "test_list" in r:  # HF-style rows: `prompt` is the bare task text
            text = str(r.get("prompt", r.get("text", "")))
            tests = [str(t) for t in r["test_list"]]
        else:
            _need(r, ("prompt",), "mbpp", where)
            text, _ = split_mbpp_prompt(r["prompt"])
            tests = mbpp_test_list(r["prompt"], r.get("assertion", ""))
        meta = {"dataset": "mbpp", "task_text": text, "test_list": tests[:3]}
        meta.update({k: r[k] for k in (
            "task_id", "prompt", "entry_point", "canonical_solution",
            "base_input", "plus_input", "atol", "assertion", "contract") if k in r})
        meta.setdefault("plus_input", [])
        if isinstance(meta["plus_input"], dict):  # Mbpp/793 ships `{}`
            meta["plus_input"] = list(meta["plus_input"])
        out.append(Sample(id=str(r["task_id"]), question=mbpp_question(text, tests),
                          answer="", meta=meta))
    return out


def samples_from_records(
    dataset: str,
    rows: list[dict],
    where: str = "<records>",
    include_all_mmlu: bool | None = None,
    minerva_fewshot: bool = True,
    mmlu_rows: str = "official",
) -> list[Sample]:
    """Turn raw dataset rows (local or downloaded) into Samples (MMLU: see `_mmlu`)."""
    dataset = resolve_dataset(dataset)
    mmlu_rows = resolve_mmlu_rows(mmlu_rows, include_all_mmlu)
    if dataset == "gsm8k":
        return _gsm8k(rows, where)
    if dataset == "minerva_math":
        return _minerva(rows, where, minerva_fewshot)
    if dataset == "mmlu":
        return _mmlu(rows, where, mmlu_rows)
    if dataset == "humaneval":
        return _humaneval(rows, where)
    return _mbpp(rows, where)


# ------------------------------------------------------------------------ network


def _offline() -> bool:
    """As the model loader reads it (files.hub_offline: TRANSFORMERS_OFFLINE too), or datasets' own flag."""
    return hub_offline() is not None or env_true("HF_DATASETS_OFFLINE")


def _hub_silent(dataset: str) -> str | None:
    """Why the hub did not answer a first ask for `dataset`'s repo info (files.hub_silence, as the
    model loader asks), or None: it answered, or the dataset has no hub source. load_dataset's first
    request, the dataset card's HEAD, is retried by huggingface-hub: with no network that was ~24 s
    before the one line, and with a hub that never answers over 5 minutes, 60 s a retry."""
    if dataset not in HUB_TEST_FILES:
        return None
    try:
        return hub_silence(HUB_TEST_FILES[dataset][0], "dataset")
    except ValueError:  # an answer, not the info (a mirror's page that is no JSON): load_dataset's turn
        return None


@contextmanager
def _hub_warnings_held_back() -> Iterator[None]:
    """huggingface-hub and datasets log a warning per retry of an unreachable hub (a dozen lines over
    ~25 s) before they raise, and the caller turns that failure into one UserError line naming
    the cause: their warnings are held back for the call (errors still show). Call it after
    importing datasets, whose import sets both libraries' log levels."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _download_records(dataset: str) -> list[dict]:
    """Rows from the hub / evalplus release. Raises on any failure (caller rewraps)."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")
    if dataset == "gsm8k":
        from datasets import load_dataset

        with _hub_warnings_held_back():
            return list(load_dataset("openai/gsm8k", "main", split="test"))
    if dataset == "mmlu":
        from datasets import load_dataset

        rows = []
        with _hub_warnings_held_back():
            for subject in MMLU_SUBJECTS:
                for r in load_dataset("edinburgh-dawg/mmlu-redux-2.0", subject, split="test"):
                    rows.append({**r, "subject": subject})
        return rows
    if dataset == "humaneval":
        from evalplus.data import get_human_eval_plus

        return list(get_human_eval_plus().values())
    if dataset == "mbpp":
        # Read the raw release file (get_mbpp_plus() would deserialize the inputs).
        from evalplus.data.mbpp import _ready_mbpp_plus_path
        from evalplus.data.utils import stream_jsonl

        return list(stream_jsonl(_ready_mbpp_plus_path()))
    raise RuntimeError(f"no online source for {dataset}")


# The hub datasets `_download_records` reads, with the repo files of each config's test split (the
# `configs` of the repos' dataset cards): gsm8k's are parquet, MMLU-Redux 2.0's one Arrow file
# (`save_to_disk`'s IPC stream) per subject.
HUB_TEST_FILES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "gsm8k": ("openai/gsm8k", ("main",), "{}/test-*"),
    "mmlu": ("edinburgh-dawg/mmlu-redux-2.0", tuple(MMLU_SUBJECTS), "{}/data-*"),
}


def _cached_records(dataset: str, hint: str, mode: str) -> list[dict]:
    """Offline, or online with a hub that does not answer: the rows `_download_records` fetches,
    from the copy a download left on this machine.

    `datasets.load_dataset` offline never opens huggingface-hub's cache: it goes straight to its own
    processed cache (HF_DATASETS_CACHE), which only a load_dataset call fills. The files it
    downloaded (datasets >= 3, as `hf download` does) sit in the hub cache, read here with pyarrow
    (no network, no retries). HumanEval+ / MBPP+: evalplus' cached release file. Anything missing
    is one UserError line that names it, after `mode` (why the cache is read)."""
    if dataset in ("humaneval", "mbpp"):
        path = _evalplus_release_path(dataset)
        if not path.is_file():
            raise UserError(f"{hint} [{mode}: no evalplus release file at {path}]")
        return read_records(path)
    if dataset not in HUB_TEST_FILES:
        raise UserError(f"{hint} [{mode}; {dataset} has no hub source]")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    repo, configs, pattern = HUB_TEST_FILES[dataset]
    patterns = [pattern.format(c) for c in configs]
    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="dataset")
    try:
        snapshot = Path(snapshot_download(repo, repo_type="dataset", allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError as e:  # IncompleteSnapshotError (a known file list names what lacks) too
        why = str(e).split(". ")[0] if getattr(e, "snapshot_path", None) else f"no snapshot of main in {folder}"
        raise UserError(f"{hint} [{mode}: {repo} is not in the Hugging Face cache: {why}]") from None
    files = {c: sorted(snapshot.glob(p)) for c, p in zip(configs, patterns)}
    lacking = [p for c, p in zip(configs, patterns) if not files[c]]
    if lacking:
        more = f" and {len(lacking) - 1} more of its {len(patterns)}" if len(lacking) > 1 else ""
        raise UserError(f"{hint} [{mode}: the cached {repo} ({snapshot}) lacks {lacking[0]}{more}]")
    rows = []
    for config, paths in files.items():
        for path in paths:
            rows += [{**r, "subject": config} if dataset == "mmlu" else r for r in _table_rows(path, hint, mode)]
    return rows


def _table_rows(path: Path, hint: str, mode: str) -> list[dict]:
    """Rows of a cached parquet file, or of an Arrow one (an IPC stream, else an IPC file, as datasets reads them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():  # the snapshot links each file to a blob
        raise UserError(f"{hint} [{mode}: the cached {path} is a broken link (to {os.readlink(path)}, which "
                        "is missing: a download cut short or a cleaned cache?)]")
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        with open(path, "rb") as f:
            try:
                return pa.ipc.open_stream(f).read_all().to_pylist()
            except pa.ArrowInvalid:
                f.seek(0)
                return pa.ipc.open_file(f).read_all().to_pylist()
    except (OSError, pa.ArrowException) as e:  # unreadable, cut short
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise UserError(f"{hint} [{mode}: cannot read the cached {path}: {reason}]") from None


def _evalplus_release_path(dataset: str) -> Path:
    """Where evalplus keeps the release file `_download_records` reads (its *_OVERRIDE_PATH if set)."""
    from evalplus.data import humaneval, mbpp
    from evalplus.data.utils import get_dataset_metadata

    if dataset == "humaneval":
        override, name, version = humaneval.HUMANEVAL_OVERRIDE_PATH, "HumanEvalPlus", humaneval.HUMANEVAL_PLUS_VERSION
    else:
        override, name, version = mbpp.MBPP_OVERRIDE_PATH, "MbppPlus", mbpp.MBPP_PLUS_VERSION
    return Path(override or get_dataset_metadata(name, version, False)[1])


def load_samples(
    dataset: str,
    data_file: str | os.PathLike | None = None,
    max_samples: int = -1,
    include_all_mmlu: bool | None = None,
    minerva_fewshot: bool = True,
    mmlu_rows: str = "official",
) -> list[Sample]:
    """Samples of `dataset` from `data_file` (local, offline) or, failing that, online (offline:
    from the Hugging Face / evalplus cache, see `_cached_records`).

    max_samples < 0 keeps everything; otherwise the first `max_samples` (after the
    MMLU-Redux filter).  `mmlu_rows` picks the MMLU-Redux row set: "official"
    (the official loader's 5,665 rows, corrected golds), "ok" (the 5,330 clean
    rows) or "all" (see `_mmlu`); the old `include_all_mmlu=True` means
    "official".  `minerva_fewshot=False` drops the official 4-shot Minerva
    prompt and leaves the bare problem.
    """
    dataset = resolve_dataset(dataset)
    mmlu_rows = resolve_mmlu_rows(mmlu_rows, include_all_mmlu)
    info = DATASETS[dataset]
    if data_file is not None:
        rows = read_records(data_file)
        where = str(data_file)
    else:
        hint = (f"no local copy of {dataset}: pass --data_file path/to/{info.default_file} "
                f"(fields: {info.fields})")
        silent = None if _offline() else _hub_silent(dataset)
        if _offline() or silent:  # a hub that does not answer: the copy an earlier download left, as offline
            mode = silent or "offline mode"
            try:
                rows = _cached_records(dataset, hint, mode)
            except ImportError as e:  # pyarrow (with datasets) or evalplus
                raise UserError(f"{hint} [{mode}: reading the cached copy needs {e.name}: "
                                'pip install "minitflow[eval]"]') from None
            where = f"<cached {dataset}>"
        else:
            try:
                rows = _download_records(dataset)
            except Exception as e:  # noqa: BLE001 - any download problem means "use a file"
                cause = str(e).strip().split("\n")[0][:200]  # the library's own warnings are held back
                raise UserError(f"{hint} [download failed: {type(e).__name__}{f': {cause}' if cause else ''}]") from e
            where = f"<online {dataset}>"
    samples = samples_from_records(dataset, rows, where, minerva_fewshot=minerva_fewshot, mmlu_rows=mmlu_rows)
    if max_samples is not None and max_samples >= 0:
        samples = samples[:max_samples]
    return samples
