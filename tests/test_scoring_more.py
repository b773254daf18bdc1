"""GSM8K / MMLU strict extraction: the answer styles an earlier pass left (number words, dollars and
cents, ranges, hedges in parentheses, Qwen's Chinese answer lines, dot-grouped thousands, ...).
The tests named for a reading (number words, hedges, ...) failed before their fix; the "not_..." /
"no_answer" ones guard the fix's limits (no data files needed)."""

import time

import pytest

from minitflow.eval.scoring import extract_gsm8k_answer, extract_mmlu_letter, score_gsm8k, score_mmlu

# ------------------------------------------------------------------- GSM8K


@pytest.mark.parametrize("text, expected", [
    # a reply's last number right after "not" is what the answer is not (was: that number)
    ("I think it's 18, not 20.", "18"),
    ("She has 5 apples, not 6 as I first thought.", "5"),
    ("The price is $12, not $15.", "12"),
    ("So 3 + 4 = 7 and it isn't 8", "7"),
    ("That is 4.5, not 4.", "4.5"),
    ("The answer is not 18.", None),  # denied and nothing else stated
    ("She has 5 apples. But not 6.", None),  # the number before is another sentence's
    # the limits: an explicit answer wins, "not 20 but 18" ends on 18, "cannot" is no "not"
    ("The answer is 18, not 20.", "18"),
    ("It is not 20 but 18.", "18"),
    ("She cannot 5", "5"),
])
def test_gsm8k_a_negated_last_number_is_not_the_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected
    if expected is None:
        assert not score_gsm8k(text, "18") and not score_gsm8k(text, "6")


@pytest.mark.parametrize("text, expected", [
    # a number in words, stated as the answer (was: none, or the reasoning's last number)
    ("She sells 9 eggs at $2 each.\nThe answer is eighteen.", "18"),
    ("#### twenty-five", "25"),
    (r"So the final answer is \boxed{\text{eighteen}}.", "18"),
    ("She has 4 left.\nThe answer is one hundred and five apples.", "105"),
    ("The answer is seventy-two thousand five hundred.", "72500"),
    ("The answer is **zero**.", "0"),
    ("The answer is minus five.", "-5"),
    ("The answer is twelve, since she had 3 bags of 4.", "12"),
])
def test_gsm8k_number_words(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    # words that are no count: the explicit phrase states nothing, the reply's last number stands
    ("So 17 + 1 = 18.\nThe answer is one more than 17, which is 18.", "18"),
    ("The answer is one of the two: 5", "5"),
    ("It costs $4.\nThe answer is one that fits both, 18.", "18"),  # "one" the pronoun: not 1
    ("It costs $4.\nThe answer is one way to see it", "4"),
    ("So \\boxed{18}. I hope the answer is one you expected.", "18"),
    ("It costs $4.\nThe answer is two-fold.", "4"),
    # "eighteen twenty" is two numbers, "eighteen and a half" no whole one: not 18
    ("It costs $4.\nThe answer is eighteen twenty.", "4"),
    ("It costs $4.\nThe answer is eighteen and a half.", "4"),
])
def test_gsm8k_number_words_that_are_no_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected


def test_gsm8k_dollars_and_cents():
    """18 dollars and 50 cents is 18.5, not 18 (a gold of 18 scored it right)."""
    assert extract_gsm8k_answer("She made 37 / 2 dollars.\nThe answer is 18 dollars and 50 cents.") == "18.50"
    assert extract_gsm8k_answer("The answer is $18 and 5 cents.") == "18.05"
    assert extract_gsm8k_answer("So she bought 3, 50 cent stamps.") == "50"  # a list, not $3.50
    assert not score_gsm8k("The answer is 18 dollars and 50 cents.", "18")
    assert score_gsm8k("The answer is 18 dollars and 50 cents.", "18.5")


@pytest.mark.parametrize("text, expected", [
    # a scale word, "and a half", "and 1/2" belong to the number (all read 18 or 1.5 before)
    ("The answer is 1.5 million.", "1500000"),
    (r"\boxed{2.5 \text{ million}}", "2500000"),
    ("So she earns $1.5 million.", "1500000"),
    ("The answer is 18 and a half.", "18.5"),
    ("The answer is 18 and 1/2.", "37/2"),
    # a dash and "no" correct the answer (18 before)
    ("The answer is 18 \u2014 no, 20.", "20"),
])
def test_gsm8k_number_parts(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize("text", [
    "The answer is 18 (or possibly 20).",
    "The answer is 18? Or maybe 20.",
    "The answer is 18... or maybe 20.",
    "The answer is 18. Or 20.",
    "The answer is 18-20.",
    "The answer is 18\u201320.",
    "The answer is 18 to 20.",
    "The answer is between 20 and 18.",
    "So it is between 20 and 18.",
    r"\boxed{18-20}",
    "So it is 18? or maybe 20",
    # two quantities are no one answer (read 18 before): 18 hours and 20 minutes is neither 18 nor 20
    "The answer is 18 hours and 20 minutes.",
    "The answer is 18 hours and 18 minutes.",
    # a list is no one number either (18 before), nor is a European "18,5" (18.5)
    "The answer is 18, 20.",
    "#### 18, 20",
    "The answer is 18,20",
    "The answer is 18 apples and 20 pears.",
    # two different boxes side by side, with a comma, "and" or a line between them (20 before)
    r"\boxed{18}, \boxed{20}",
    r"\boxed{18} and \boxed{20}",
    "\\boxed{18}\n\\boxed{20}",
    r"$\boxed{18}$ / $\boxed{20}$",
])
def test_gsm8k_hedges_and_ranges_state_no_answer(text):
    """A hedge or range names two numbers and commits to neither: no gold of 18 or 20 accepts it."""
    assert not score_gsm8k(text, "18") and not score_gsm8k(text, "20")


@pytest.mark.parametrize("text, expected", [
    # a range is no answer only where an answer is stated: a reply's last number keeps its reading
    ("It went from 18 to 20.", "20"),
    ("So she pays $5 and $6.", "6"),
    ("The answer is 18 (or 18.0).", "18"),
    ("The answer is 16-3-4=9", "9"),
    ("The answer is 18, since 9 * 2 = 18.", "18"),
    ("So she had 18, 20 and 22.", "22"),
    ("\\boxed{18}\n\nSo the final answer is \\boxed{18}.", "18"),
    ("It took 3 hours and 30 minutes.", "30"),
])
def test_gsm8k_not_a_range(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize("text", [
    "She makes 9 * 2 = $18.\n\u7b54\u6848\u662f 18\u3002\u9a8c\u8bc1\uff1a18 + 1 = 19",   # 答案是 18。验证：18 + 1 = 19
    "She makes 9 * 2 = $18.\n\u6700\u7ec8\u7b54\u6848\uff1a18\n\uff08\u68c0\u67e5\uff1a18 - 1 = 17\uff09",  # 最终答案：18
    "\u7b54\u6848\u4e3a18\uff0c\u5171 3 \u5929",  # 答案为18，共 3 天
])
def test_gsm8k_chinese_answer_line(text):
    """Qwen3 switches to Chinese at times: 答案是 / 答案为 / 答案： states the answer (the check after it
    was read instead)."""
    assert extract_gsm8k_answer(text) == "18"


def test_gsm8k_dot_grouped_thousands():
    """"1.080.000" can only be 1080000 (was 1.080); "1.080" is 1080 in German, 1.08 in English, and a
    third decimal 0 is rare in English: no answer (was 1.08; "Die Antwort ist 70.000" scored a gold of 70)."""
    assert extract_gsm8k_answer("Die Antwort ist 1.080.000.") == "1080000"
    assert not score_gsm8k("Die Antwort ist 70.000.", "70")
    assert not score_gsm8k("Die Antwort ist 70.000.", "70000")
    assert not score_gsm8k(r"\boxed{1.080}", "1.08")
    # a decimal that is no thousands group, or with a third decimal other than 0, reads as before
    assert extract_gsm8k_answer("The answer is 1.125") == "1.125"
    assert extract_gsm8k_answer("The answer is 0.250") == "0.250"
    assert extract_gsm8k_answer("The answer is 1.08") == "1.08"


# -------------------------------------------------------------------- MMLU


@pytest.mark.parametrize("text, expected", [
    ("The correct option is not (A).", None),  # was A: the reply's trailing "(A)."
    ("The answer isn't (B).", None),
    ("The answer is not C.", None),
    ("The answer is B, not C.", "B"),
    ("So it is (A).", "A"),  # the trailing letter without a denial still reads
])
def test_mmlu_a_denied_letter_is_not_the_answer(text, expected):
    assert extract_mmlu_letter(text) == expected


@pytest.mark.parametrize("text, expected", [
    # a clear statement that was no answer (None before)
    ("Option B is tempting but does not fit.\nI think it's C.", "C"),
    ("Option B is tempting but does not fit.\nIt's C.", "C"),
    ("Option B is tempting but does not fit.\nSo it is (D)! B was close.", "D"),
    ("Option B is tempting but does not fit.\nMy choice is C.", "C"),
    ("Option B is tempting but does not fit.\nMy pick is D, since B fails.", "D"),
    # Qwen's Chinese: 答案：C / 所以答案是 C。
    ("Option B is tempting but does not fit.\n\u7b54\u6848\uff1aC", "C"),
    ("Option B is tempting but does not fit.\n\u6240\u4ee5\u7b54\u6848\u662f C\u3002", "C"),
    ("Option B is tempting but does not fit.\n\u7b54\u6848\u662fC\u9009\u9879", "C"),  # 答案是C选项
])
def test_mmlu_clear_statements(text, expected):
    assert extract_mmlu_letter(text) == expected


@pytest.mark.parametrize("text", [
    "The answer is C (or possibly D).",
    "The answer is C... or maybe D.",
    "The answer is C? Or D.",
    "The answer is C. Or maybe D.",
    "Answer: C, or maybe D",
    "\u7b54\u6848\u662f C \u6216 D",  # 答案是 C 或 D
    "\u7b54\u6848\u662f C\u3001D",  # 答案是 C、D
    r"\boxed{C} or \boxed{D}",
    r"\boxed{D} or \boxed{C}",
    r"\boxed{D}, \boxed{C}",
    "\\boxed{D}\n\\boxed{C}",
    "<think>So C.</think>\n" r"\boxed{D} or \boxed{C}",
])
def test_mmlu_hedges_state_no_answer(text):
    """A hedge names two letters and commits to neither (C was read before)."""
    assert extract_mmlu_letter(text) is None
    assert not score_mmlu(text, "C") and not score_mmlu(text, "D")


@pytest.mark.parametrize("text, expected", [
    # a mention that ends no sentence, or a letter that is something else, is no answer
    ("Carbon has atomic number 6: it is C.\nB", "B"),
    ("If it's B, then the rate doubles. So D.", "D"),
    ("The answer is C (option D is wrong).", "C"),
    ("The answer is C. And B is wrong.", "C"),
    ("The answer is B \u2014 no, C.", "C"),
    # the same letter boxed twice is no hedge; a later correction restates the answer
    (r"\boxed{B} or \boxed{B}", "B"),
    ("\\boxed{B} or \\boxed{C}\nWait, actually it's C.", "C"),
])
def test_mmlu_not_hedges(text, expected):
    assert extract_mmlu_letter(text) == expected


@pytest.mark.parametrize("blank", [" ", "\n"])
def test_mmlu_long_blank_run_is_linear(blank):
    """A degenerate generation of blank space took time quadratic in its length ("(option)? \\s* (C)
    is correct" and "[\\n.!?:] \\s* C is correct" tried every start in the run: 100,000 spaces about
    15 s, 30,000 newlines about 10 s; now milliseconds)."""
    text = "Let me think." + blank * (100_000 if blank == " " else 30_000) + "\nThe answer is (C)."
    start = time.perf_counter()
    assert extract_mmlu_letter(text) == "C"
    assert time.perf_counter() - start < 3
