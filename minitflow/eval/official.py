"""The official TFlow release's verdicts, quirks included, re-implemented.

The paper's Table 1 was scored by the release's own extractors
(github.com/BWR-hhh/TFlow, `src/utils/helpers.py` and the gold handling of
`src/data/datasets.py`).  This module reproduces their verdicts with our own
code, so minitflow can report the paper's metric next to the strict one; the
stored cases in tests/data/official_verdicts.jsonl were scored by the release's
functions and this module must agree with every one of them.

What the release does, per dataset (and the quirks that follow):
  gsm8k   gold: the `####` number, commas dropped.  Prediction: the first
          number inside the last `\\boxed{...}` (no nested braces), else the
          last number of the text (digits and one dot: "1,450,000" reads as
          "000"), else the `####` regex.  Both go through a float round trip
          ("18.0" == "18") and must then be equal strings.
  mmlu    gold: a lower-case letter.  Prediction: the last `\\boxed{...}`
          content (its first number if it holds one), else the last
          standalone letter a-d / A-D in the text, so the article "a" counts.
  minerva_math
          gold: Minerva-normalised content of the solution's last box.  The
          response is cut at "Problem:", then (1) the "Final Answer: The final
          answer is X. I hope it is correct." line, (2) the last box, each
          Minerva-normalised and compared by string, float (rel 1e-4, zero
          only equals zero) or sympy `parse_latex` + `simplify`; (3) failing
          both, math-verify on the whole response against `\\boxed{gold}`.
  humaneval / mbpp
          the last ```python block (case-insensitive fence, stripped; none ->
          wrong).  The release then runs it with the HF test script; here the
          block runs through the same sandboxed base + plus tests as the strict
          scorer (see scoring.score_both), which the HF scripts encode, but as
          written: the release execs the block alone, so neither the prompt nor
          its imports are added (`List` unimported is a NameError).  Not
          reproduced: the release's single 10 s wall limit for the whole script,
          nor the faults of the HF scripts as evalplus' to_original_fmt.py makes
          them (the HF rows are not read offline): Mbpp/737, 787 and 794's
          `assertion()` never asserts (any program that runs passes there) and
          HumanEval/32's check raises TypeError (every program fails there).

Where the release has no timeout (sympy simplify) we add one
(`OFFICIAL_SYMPY_TIMEOUT`); a comparison that long counts as "not equal".
"""

from __future__ import annotations

import math
import re
import threading
from typing import Any

from .math_equiv import call_with_timeout

OFFICIAL_SYMPY_TIMEOUT = 10.0
INVALID = "[invalidanswer]"

# ------------------------------------------------------------- shared helpers


def float_key(answer: str | None) -> str:
    """The release's `normalize_answer`: a float round trip, else lower-cased text."""
    if answer is None or answer == "":
        return ""
    text = str(answer)
    try:
        val = float(text.replace(",", ""))
    except (ValueError, TypeError, OverflowError):
        return text.strip().lower()
    if not math.isfinite(val):
        return text.strip().lower()
    return str(int(val)) if val == int(val) else str(val)


_FLAT_BOX_RE = re.compile(r"\\boxed\{([^}]*)\}")
_LOOSE_NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _flat_box_or_number(text: str, last_number: bool) -> str | None:
    """Last flat box: its first number, else its stripped text; else (GSM8K) the last number."""
    boxes = _FLAT_BOX_RE.findall(text)
    if boxes:
        number = _LOOSE_NUMBER_RE.search(boxes[-1])
        return number.group(0) if number else boxes[-1].strip()
    if last_number:
        numbers = _LOOSE_NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1]
    return None


# ----------------------------------------------------------------------- GSM8K


def gsm8k_gold(solution: str) -> str:
    """The release's gold: the `####` digits/commas/dots run, commas dropped, lower-cased."""
    m = re.search(r"####\s*([\-\d\.\,]+)", solution)
    answer = m.group(1).replace(",", "").strip() if m else solution
    return str(answer).strip().lower()


def gsm8k_extract(text: str) -> str | None:
    found = _flat_box_or_number(text, last_number=True)
    if found is None:
        hashes = re.findall(r"####\s*([\-\d\.\,]+)", text)
        if hashes:
            found = hashes[-1].replace(",", "").strip()
    return found


def gsm8k_verdict(text: str, gold: str) -> tuple[bool, str]:
    pred = gsm8k_extract(text)
    pred_key = float_key(pred) if pred else ""
    gold_key = float_key(gold)
    return bool(pred_key and gold_key and pred_key == gold_key), _logged(text, pred)


# ------------------------------------------------------------------------ MMLU


def mmlu_extract(text: str) -> str | None:
    found = _flat_box_or_number(text, last_number=False)
    if found is not None:
        return found
    letters = re.findall(r"\b([A-Da-d])\b", text)
    if letters:
        return letters[-1]
    m = re.search(r"####\s*([A-Da-d])\b", text, re.IGNORECASE)
    return m.group(1) if m else None


def mmlu_verdict(text: str, gold_letter: str) -> tuple[bool, str]:
    pred = mmlu_extract(text)
    pred_key = float_key(pred) if pred else ""
    gold_key = float_key(gold_letter.lower())
    return bool(pred_key and gold_key and pred_key == gold_key), _logged(text, pred)


def _logged(text: str, raw: str | None) -> str:
    """What the release writes as `predicted_answer` for a text task."""
    if not raw:
        return text.strip()[:100]
    return float_key(raw)


# ---------------------------------------------------------------------- Minerva
# The substitution and removal lists are the published Minerva normalisation
# (Lewkowycz et al. 2022, Appendix D), as lm-evaluation-harness and the
# release apply it; they are data and must stay exactly as they are.

MINERVA_SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""),
    ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)
MINERVA_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
    "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
    "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples",
    "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}",
    "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots",
)


def minerva_normalize(answer: str) -> str:
    """Minerva's `normalize_final_answer` (right of the last '=', units and spaces out)."""
    s = answer.split("=")[-1]
    for before, after in MINERVA_SUBSTITUTIONS:
        s = s.replace(before, after)
    for expr in MINERVA_REMOVED:
        s = s.replace(expr, "")
    s = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", s)
    for cmd in ("text", "textbf", "overline"):
        s = re.sub(r"(\\" + cmd + r"\{)(.*?)(\})", "\\2", s)
    s = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", s)
    s = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", s)
    s = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", s)
    s = s.replace("$", "")
    if s.replace(",", "").isdigit():
        s = s.replace(",", "")
    return s


def last_box_span(text: str) -> str | None:
    """The release's last-box finder: `\\boxed ` (with a space) wins outright and
    runs to the next `$`; otherwise brace counting from the last `\\boxed`
    (else `\\fbox`), escapes ignored; an unclosed box gives None."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[idx:i + 1]
    return None


def unbox(span: str) -> str:
    if span.startswith("\\boxed "):
        return span[len("\\boxed "):]
    if span.startswith("\\boxed{") and span.endswith("}"):
        return span[len("\\boxed{"):-1]
    return span


def minerva_gold(solution: str) -> str:
    """The release's gold for a Minerva row: its last box, normalised (or the whole text)."""
    span = last_box_span(solution)
    return minerva_normalize(unbox(span) if span is not None else solution)


def final_answer_line(text: str) -> str | None:
    """X of the first "Final Answer: The final answer is X. I hope it is correct."
    (unescaped dots: any character before "I hope"; a missing tail is appended)."""
    m = re.search(r"Final Answer: The final answer is(.*?). I hope it is correct.",
                  text + "I hope it is correct.")
    return m.group(1).strip() if m else None


_SCI_LATEX_RE = re.compile(
    r"^([+-]?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot)\s*10\s*\^\s*\{?\s*([+-]?\d+)\s*\}?$")


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def _as_float(s: str) -> float | None:
    """The release's number reading: float(), then `a \\times 10^{b}`, then float() without braces."""
    s = s.strip()
    for left, right in (("\\(", "\\)"), ("$", "$")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left):-len(right)].strip()
    value = _float_or_none(s)
    if value is None:
        m = _SCI_LATEX_RE.match(s)
        value = _float_or_none(f"{m.group(1)}e{m.group(2)}") if m else None
    if value is None:
        value = _float_or_none(s.replace("{", "").replace("}", ""))
    return value


def _sympy_same(x1: str, x2: str) -> bool:
    import sympy
    from sympy.parsing.latex import parse_latex

    try:
        diff = parse_latex(x1) - parse_latex(x2)
    except Exception:  # noqa: BLE001 - unparsable or not subtractable: "different", as upstream
        return False
    try:
        return sympy.simplify(diff) == 0
    except Exception:  # noqa: BLE001
        return False


def minerva_equiv(x1: str, x2: str) -> bool:
    """The release's `is_equiv` on two normalised strings."""
    if x1 == x2:
        return True
    n1, n2 = _as_float(x1), _as_float(x2)
    if n1 is not None and n2 is not None:
        if n1 == n2 or (n1 != 0 and n2 != 0 and math.isclose(n1, n2, rel_tol=1e-4)):
            return True
    return bool(call_with_timeout(lambda: _sympy_same(x1, x2), OFFICIAL_SYMPY_TIMEOUT))


def _math_verify_whole(text: str, gold: str) -> bool:
    """math-verify with its default 5 s timeouts (signal based: main thread only; off it
    they are off and our thread timeout stands in)."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return False
    on_main = threading.current_thread() is threading.main_thread()
    limit = 5 if on_main else None

    def run() -> bool:
        try:
            return bool(verify(gold=parse("\\boxed{" + gold + "}", parsing_timeout=limit),
                               target=parse(text, parsing_timeout=limit), timeout_seconds=limit))
        except Exception:  # noqa: BLE001 - the release counts any failure as "no"
            return False

    return run() if on_main else bool(call_with_timeout(run, 15.0))


def minerva_extract(text: str) -> str:
    """The release's logged answer: Final Answer line, else last box, normalised."""
    text = _cut(text)
    line = final_answer_line(text)
    if line is not None:
        return minerva_normalize(line)
    span = last_box_span(text)
    return minerva_normalize(unbox(span)) if span is not None else INVALID


def _cut(text: str) -> str:
    k = text.find("Problem:")
    return text if k < 0 else text[:k]


def minerva_verdict(text: str, gold: str) -> tuple[bool, str]:
    """(correct, logged answer) with `gold` already normalised (see `minerva_gold`)."""
    cut = _cut(text)
    logged = _logged(text, minerva_extract(text))
    line = final_answer_line(cut)
    if line is not None and minerva_equiv(minerva_normalize(line), gold):
        return True, logged
    span = last_box_span(cut)
    if span is not None and minerva_equiv(minerva_normalize(unbox(span)), gold):
        return True, logged
    return _math_verify_whole(cut, gold), logged


# ------------------------------------------------------------------------ code

_PY_FENCE_RE = re.compile(r"```python(.*?)```", re.S | re.I)


def code_extract(text: str) -> str | None:
    """The last ```python block, stripped (```py / bare fences / an unclosed fence: None)."""
    blocks = _PY_FENCE_RE.findall(text)
    return blocks[-1].strip() if blocks else None


def defines(code: str, entry_point: str | None) -> bool:
    """Whether the release's `check(entry_point)` can find the function at all."""
    return not entry_point or re.search(rf"\b{re.escape(entry_point)}\b", code) is not None


# -------------------------------------------------------------------- dispatch


def answered(dataset: str, text: str | None) -> bool:
    """Whether the release's extractor finds an answer in `text` (gsm8k, minerva_math, mmlu): where it
    finds none its logged answer is the text's start or "[invalidanswer]", no answer to vote on (maj@K)."""
    text = text or ""
    raw = gsm8k_extract(text) if dataset == "gsm8k" else minerva_extract(text) if dataset == "minerva_math" \
        else mmlu_extract(text)
    return bool(raw) and raw != INVALID


def official_gold(dataset: str, sample: Any) -> str:
    """The gold string the release compares against, from our Sample."""
    solution = sample.meta.get("solution")
    if dataset == "gsm8k":
        return gsm8k_gold(solution) if solution else str(sample.answer).strip().lower()
    if dataset == "minerva_math":
        return minerva_gold(solution) if solution else minerva_normalize(str(sample.answer))
    if dataset == "mmlu":
        return str(sample.answer).strip().lower()
    raise ValueError(f"no text gold for {dataset}")


def official_text_verdict(dataset: str, text: str | None, sample: Any) -> tuple[bool, str]:
    """(correct, logged answer) for gsm8k, minerva_math or mmlu, as the release scores it."""
    text = text or ""
    gold = official_gold(dataset, sample)
    if dataset == "gsm8k":
        return gsm8k_verdict(text, gold)
    if dataset == "minerva_math":
        return minerva_verdict(text, gold)
    return mmlu_verdict(text, gold)
