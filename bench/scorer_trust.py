"""Trust check of the scorers on the data a researcher evaluates: every item of each shared split
answered right and answered wrong the way a model following the official prompt writes, scored by
score_both (what `evaluate` scores with, its pool of 2 included); every right answer must score
correct and every wrong one wrong.

    python bench/scorer_trust.py [gsm8k minerva_math mmlu humaneval mbpp] [--data_dir DIR]

Right: gsm8k the gold solution's reasoning (its <<calc>> notes dropped) and `\\boxed{N}` with N as the
gold writes it, with thousands separators, with ".00", and as "$1,234.00"; minerva_math the gold
solution and a `\\boxed{gold}` line, the Minerva exemplars' "Final Answer: The final answer is $gold$.
I hope it is correct." line, or Qwen's "**Final Answer**" display box; mmlu the letter in `\\boxed{X}`
after a line naming the strongest distractor; code the canonical solution in a ```python block.
Wrong: gsm8k gold + 1 in the same forms; minerva_math another item's gold that differs as text, alone
and in place of the solution's box; mmlu the next letter (the gold named as the distractor); code the
canonical solution with its return value changed, and the next task's canonical solution under this
task's name. Prints, per pass, how many items each scorer scored as expected, the mismatches and the
wall time. The official scorer keeps the release's quirks (a gsm8k "1,234" is no number to it), so
only the strict column must be all. Known data issue: minerva_math/72's gold holds a stray "$ $"
inside its box, so the Final Answer form of it reads as two math groups.
"""

from __future__ import annotations

import argparse
import re
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from minitflow.eval.data import load_samples
from minitflow.eval.extract import boxed_spans
from minitflow.eval.scoring import score_both

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = {"gsm8k": "gsm8k/test.jsonl", "minerva_math": "minerva_math/test.jsonl", "mmlu": "mmlu_redux/test.jsonl",
         "humaneval": "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp": "mbpp_plus/MbppPlus-v0.2.0.jsonl"}
Pass = tuple[str, list[str], bool]  # (name, predictions, whether each must score correct)

# ------------------------------------------------------------------- gsm8k

GSM8K_FORMS = ("gold", "thousands", "cents", "dollars")


def gsm8k_number(value: Fraction, text: str, form: str) -> str:
    """`value` written in `form`; `text` is how the gold writes it (the form "gold")."""
    if form == "gold":
        return text
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _, frac = digits.partition(".")
    if form in ("thousands", "dollars"):
        whole = f"{int(whole):,}"
    if form in ("cents", "dollars") and value.denominator == 1:
        frac = "00"
    return sign + ("$" if form == "dollars" else "") + whole + (f".{frac}" if frac else "")


def gsm8k_passes(samples: list[Any]) -> list[Pass]:
    out = []
    for form in GSM8K_FORMS:
        for wrong in (False, True):
            preds = []
            for s in samples:
                value = Fraction(s.answer) + wrong
                text = s.answer if not wrong else (str(value.numerator) if value.denominator == 1 else str(float(value)))
                reasoning = re.sub(r"<<[^>]*>>", "", s.meta["solution"].split("####")[0].strip())
                preds.append(f"{reasoning}\n\n\\boxed{{{gsm8k_number(value, text, form)}}}")
            out.append((f"{'wrong' if wrong else 'right'} {form}", preds, not wrong))
    return out


# ------------------------------------------------------------ minerva_math

def other_gold(samples: list[Any], i: int) -> str:
    """The next item's gold that differs from item i's as text (a mismatch is then read by hand)."""
    j = (i + 1) % len(samples)
    while re.sub(r"\s+", "", samples[j].answer) == re.sub(r"\s+", "", samples[i].answer):
        j = (j + 1) % len(samples)
    return samples[j].answer


def math_answer(solution: str, answer: str, form: str) -> str:
    if form == "minerva":
        return f"{solution}\nFinal Answer: The final answer is ${answer}$. I hope it is correct."
    if form == "qwen":
        return f"{solution}\n\n**Final Answer**\n\\[\n\\boxed{{{answer}}}\n\\]"
    return f"{solution}\n\n\\boxed{{{answer}}}"


def math_passes(samples: list[Any]) -> list[Pass]:
    out = []
    for form in ("boxed", "minerva", "qwen"):
        out.append((f"right {form}", [math_answer(s.meta["solution"].strip(), s.answer, form) for s in samples], True))
        preds = []
        for i, s in enumerate(samples):
            other, solution = other_gold(samples, i), s.meta["solution"].strip()
            for start, end, _ in boxed_spans(solution)[-1:]:  # the solution's own box says the other answer too
                solution = solution[:start] + f"\\boxed{{{other}}}" + solution[end:]
            preds.append(math_answer(solution, other, form))
        out.append((f"wrong {form}", preds, False))
    out.append(("wrong alone", [f"Let me work through it step by step.\n\n\\boxed{{{other_gold(samples, i)}}}"
                                for i in range(len(samples))], False))
    return out


# -------------------------------------------------------------------- mmlu

def mmlu_answer(s: Any, said: str, distractor: str) -> str:
    choices = s.meta["choices"]
    option = lambda letter: choices["ABCDEFGHIJ".index(letter)]  # noqa: E731
    return (f"Let me reason through each option.\nOption {said} ({option(said)}) fits the question best.\n"
            f"The strongest distractor is {distractor} ({option(distractor)}), which does not hold here.\n\n"
            f"\\boxed{{{said}}}")


def mmlu_passes(samples: list[Any]) -> list[Pass]:
    nexts = []
    for s in samples:
        letters = "ABCDEFGHIJ"[:len(s.meta["choices"])]
        nexts.append(letters[(letters.index(s.answer) + 1) % len(letters)])
    return [("right", [mmlu_answer(s, s.answer, n) for s, n in zip(samples, nexts)], True),
            ("wrong", [mmlu_answer(s, n, s.answer) for s, n in zip(samples, nexts)], False)]


# -------------------------------------------------------------------- code

# appended to a canonical solution: the entry point returns something else ("" for a None of the
# MBPP tasks whose oracle only asks "is not None")
CHANGED_RETURN = '''

def __changed(r):
    if r is None:
        return ""
    if isinstance(r, bool):
        return not r
    if isinstance(r, int):
        return r + 1
    if isinstance(r, float):
        return 0.0 if r != r else (r + 1.0 if abs(r) < 1e15 else -r - 1.0)
    if isinstance(r, str):
        return r + "#"
    if isinstance(r, (list, tuple)):
        return type(r)([*r, None])
    if isinstance(r, dict):
        return {**r, "__changed": 0}
    if isinstance(r, (set, frozenset)):
        return set(r) | {"__changed"}
    return None


__canonical_ENTRY = ENTRY


def ENTRY(*args, **kwargs):
    return __changed(__canonical_ENTRY(*args, **kwargs))
'''


def canonical(meta: dict) -> str:
    program = meta["prompt"] + meta["canonical_solution"] if meta["dataset"] == "humaneval" else meta["canonical_solution"]
    return program.strip()


def code_passes(samples: list[Any]) -> list[Pass]:
    block = "```python\n{}\n```".format
    right = [block(canonical(s.meta)) for s in samples]
    changed = [block(canonical(s.meta) + CHANGED_RETURN.replace("ENTRY", s.meta["entry_point"])) for s in samples]
    swapped = []
    for i, s in enumerate(samples):
        other = samples[(i + 1) % len(samples)].meta
        swapped.append(block(re.sub(rf"\b{re.escape(other['entry_point'])}\b", s.meta["entry_point"], canonical(other))))
    return [("right", right, True), ("wrong return", changed, False), ("wrong task", swapped, False)]


# -------------------------------------------------------------------- main

def check(dataset: str, data_dir: Path) -> int:
    """Run every pass of `dataset`; the number of strict mismatches."""
    samples = load_samples(dataset, data_dir / FILES[dataset])
    build = {"gsm8k": gsm8k_passes, "minerva_math": math_passes, "mmlu": mmlu_passes}.get(dataset, code_passes)
    bad_total = 0
    for name, preds, want in build(samples):
        t = time.perf_counter()
        rows = score_both(dataset, preds, samples)
        wall = time.perf_counter() - t
        bad = [(s, r) for s, r in zip(samples, rows) if r["correct"] is not want]
        bad_official = [s.id for s, r in zip(samples, rows) if r["correct_official"] is not want]
        print(f"{dataset} {name}: {len(samples) - len(bad)}/{len(samples)} strict, "
              f"{len(samples) - len(bad_official)}/{len(samples)} official as expected, {wall:.1f} s", flush=True)
        for s, r in bad:
            print(f"  strict {s.id}: extracted {r['extracted'][-200:]!r}, gold {s.answer!r}", flush=True)
        if bad_official:
            print(f"  official: {', '.join(bad_official[:12])}{' ...' if len(bad_official) > 12 else ''}", flush=True)
        bad_total += len(bad)
    return bad_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="*", help=f"of {', '.join(FILES)} (all when none is named)")
    parser.add_argument("--data_dir", type=Path, default=DATA)
    args = parser.parse_args()
    unknown = [d for d in args.datasets if d not in FILES]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; expected one of: {', '.join(FILES)}")
    bad = sum(check(d, args.data_dir) for d in args.datasets or FILES)
    print(f"{bad} strict mismatches")


if __name__ == "__main__":
    main()
