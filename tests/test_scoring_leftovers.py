"""Strict scorers: the leftovers an earlier pass noted and left (a hedging adverb before one answer,
formal logic's options written in LaTeX, "2 dozen", German / French / Spanish answer lines, a
function's value at a number, "ms^{-1}").  The tests named for a reading failed before its fix; the
"not_..." ones guard its limits (no data files needed)."""

import pytest

from minitflow.eval.data import Sample
from minitflow.eval.math_equiv import is_equiv
from minitflow.eval.scoring import extract_gsm8k_answer, extract_mmlu_letter, score_sample

# --------------------------------------------------------- hedging adverb


@pytest.mark.parametrize("text, expected", [
    ("Option D is wrong.\nThe answer is probably C.", "C"),
    ("The answer is most likely (B), since the others fail.", "B"),
    ("So the correct answer is clearly D.", "D"),
    ("**Answer:** probably A", "A"),
    ("My final choice is likely C.", "C"),
])
def test_mmlu_one_answer_with_a_hedging_adverb(text, expected):
    assert extract_mmlu_letter(text) == expected


@pytest.mark.parametrize("text", [
    "The answer is probably C or possibly D.",
    "The answer is probably C or D.",
    "The answer is most likely (B) or (C).",
    "The answer is probably not C.",
])
def test_mmlu_not_a_hedge_between_two(text):
    assert extract_mmlu_letter(text) is None


@pytest.mark.parametrize("text", [
    "The answer is A, but B is also possible.",
    "The answer is probably A, but B is also possible.",
    "The answer is C, but it could be D.",
    "The answer is C, but it could also be (D).",
    "Answer: C, but option B might be right.",
])
def test_mmlu_not_one_answer_but_another_possible(text):
    assert extract_mmlu_letter(text) is None


def test_mmlu_not_a_hedge_a_remark_after_but():
    assert extract_mmlu_letter("The answer is C, but A is wrong.") == "C"
    assert extract_mmlu_letter("The answer is C, but it could be argued otherwise.") == "C"
    assert extract_mmlu_letter("It must be (D).") == "D"


@pytest.mark.parametrize("text", [
    "The answer is 18, but it could be 21.\nCheck: 3 * 4 = 12.",
    "The answer is probably 18, but 21 is also possible.\nCheck: 3 * 4 = 12.",
])
def test_gsm8k_not_one_number_but_another_possible(text):
    got = extract_gsm8k_answer(text)
    assert got not in ("18", "21", "12") and "18" in got and "21" in got


def test_gsm8k_not_a_hedge_a_remark_after_but():
    assert extract_gsm8k_answer("The answer is 18, but 21 is wrong.\nCheck: 3 * 4 = 12.") == "18"
    assert extract_gsm8k_answer("The answer is 18, but it took 3 hours.\nCheck: 3 * 4 = 12.") == "18"


def test_gsm8k_one_answer_with_a_hedging_adverb():
    assert extract_gsm8k_answer("The answer is probably 18.\nCheck: 3 * 4 = 12.") == "18"
    assert extract_gsm8k_answer("The answer is most likely **18**.\nCheck: 3 * 4 = 12.") == "18"
    # two numbers after it stay a hedge: no number
    assert extract_gsm8k_answer("The answer is probably 18 or 20.\nCheck: 3 * 4 = 12.") == "18 or 20"


# ------------------------------------------------- formal logic in LaTeX

NEGATIONS = ["A", "~A", "B", "~B"]  # mmlu_redux formal_logic, as stored
FORMULAS = ["Lm \u2228 ~(Jl \u2228 Ll)", "Lm \u2022 ~(Lj \u2022 Ll)", "Lm \u2022 ~(Lj \u2228 Ll)", "Lm \u2228 ~(Lj \u2022 Ll)"]
CONDITIONALS = ["Sk \u2261 Bl", "Bl \u2261 Sk", "Bx \u2283 Sy", "Bl \u2283 Sk"]


@pytest.mark.parametrize("text, choices, expected", [
    (r"The answer is \boxed{\sim A}.", NEGATIONS, "B"),
    (r"The answer is \boxed{\neg B}.", NEGATIONS, "D"),
    (r"The answer is \boxed{\lnot A}.", NEGATIONS, "B"),
    (r"\boxed{Lm \bullet \sim(Lj \vee Ll)}", FORMULAS, "C"),
    (r"\boxed{Lm \cdot \neg (Lj \lor Ll)}", FORMULAS, "C"),
    (r"\boxed{Lm \vee \sim(Lj \bullet Ll)}", FORMULAS, "D"),
    (r"\boxed{Bl \supset Sk}", CONDITIONALS, "D"),
    (r"\boxed{Bl \equiv Sk}", CONDITIONALS, "B"),
])
def test_mmlu_option_formula_in_latex(text, choices, expected):
    assert extract_mmlu_letter(text, choices) == expected


def test_mmlu_stated_options_are_read_in_linear_time():
    import time

    start = time.monotonic()
    for text in ("The answer is probably " * 20000, "x</think>" + "The answer is zz " * 20000,
                 "Answer: C, but it could be " * 20000):
        extract_mmlu_letter(text, NEGATIONS)
    assert time.monotonic() - start < 5.0  # each was minutes: every "answer is" normalised the rest of its line
    assert extract_mmlu_letter("The answer is ~B. It negates B.", NEGATIONS) == "D"
    assert extract_mmlu_letter("The answer is ~B" + " " * 200 + "or A.", NEGATIONS) is None


def test_mmlu_not_a_formula_no_option_is():
    assert extract_mmlu_letter(r"\boxed{\sim C}", NEGATIONS) is None
    assert extract_mmlu_letter(r"\boxed{Lm \bullet \sim(Lm \vee Ll)}", FORMULAS) is None
    assert extract_mmlu_letter(r"\boxed{A}", NEGATIONS) == "A"  # the letter is still the letter


# ---------------------------------------------------------------- dozens


def _gsm(question: str, answer: str) -> Sample:
    return Sample(id="gsm8k/0", question=question, answer=answer)


@pytest.mark.parametrize("text", [
    "She buys 2 cartons.\nThe answer is 2 dozen.",
    "She buys 2 cartons.\nThe answer is two dozen.",
    r"So she needs \boxed{2\text{ dozen}} eggs.",
    "She buys 2 cartons, so she has 2 dozen eggs.",
])
def test_gsm8k_dozen_is_twelve_of_them(text):
    assert extract_gsm8k_answer(text) == "24"
    assert score_sample("gsm8k", text, _gsm("How many eggs does she have?", "24"))[0]
    assert not score_sample("gsm8k", text, _gsm("How many eggs does she have?", "2"))[0]


def test_gsm8k_dozen_where_the_question_counts_dozens():
    question = "If she is inviting 16 guests to her party, how many dozens of eggs will she need?"
    assert score_sample("gsm8k", "She needs 24 eggs.\nThe answer is 2 dozen.", _gsm(question, "2"))[0]
    assert score_sample("gsm8k", r"\boxed{1.5 \text{ dozen}}", _gsm(question, "1.5"))[0]
    assert extract_gsm8k_answer("The answer is 1.5 dozen.") == "18"


def test_gsm8k_dozens_are_read_in_linear_time():
    import time

    start = time.monotonic()
    for text in ("one " * 30000 + "dozen", "twenty-" * 30000 + "dozen", "1 dozen " * 30000):
        extract_gsm8k_answer(text)
    assert time.monotonic() - start < 3.0
    assert extract_gsm8k_answer("x" * 75 + " twenty-four dozen eggs") == "288"


def test_gsm8k_not_dozen_without_a_number():
    assert extract_gsm8k_answer("Eggs cost $3 per dozen.\nShe pays 6.") == "6"
    assert extract_gsm8k_answer("There are dozens of ways; she picks 4.") == "4"


# ------------------------------------------- answer lines in other languages


@pytest.mark.parametrize("line", [
    "Die Antwort ist 18.", "Antwort: 18", "Die endg\u00fcltige Antwort lautet 18.",
    "La r\u00e9ponse est 18.", "R\u00e9ponse : 18", "La r\u00e9ponse finale est **18**.",
    "La respuesta es 18.", "Respuesta: 18", "La respuesta correcta es 18.",
])
def test_gsm8k_answer_line_in_german_french_spanish(line):
    assert extract_gsm8k_answer(f"{line}\nProbe: 3 + 4 = 7.") == "18"


@pytest.mark.parametrize("text", [
    "Die Antwort ist nicht 18.\nProbe: 3 + 4 = 7.",          # no number right after the verb
    "Sie muss 3 Fragen beantworten: 5 richtig.\nProbe: 3 + 4 = 7.",  # part of another word
    "R\u00e9ponses: 18\nProbe: 3 + 4 = 7.",                  # a plural heading, no answer line
])
def test_gsm8k_not_an_answer_line(text):
    assert extract_gsm8k_answer(text) == "7"


@pytest.mark.parametrize("line", [
    "Die Antwort ist 18 oder 21.", "Die Antwort ist 18 oder vielleicht 21.", "Die Antwort ist 18 bis 21.",
    "Die Antwort ist 18? Oder 21.", "La r\u00e9ponse est 18 ou peut-\u00eatre 21.", "La r\u00e9ponse est 18 \u00e0 21.",
    "La respuesta es 18 o 21.", "La respuesta es 18 y 21.",
])
def test_gsm8k_not_one_number_a_hedge_in_those_languages(line):
    got = extract_gsm8k_answer(f"{line}\nProbe: 3 + 4 = 7.")
    assert got not in ("18", "21", "7") and "18" in got and "21" in got


@pytest.mark.parametrize("reply", ["The answer is" + " " * 100_000, "Answer:" + " " * 100_000,
                                   "The correct option is" + " " * 100_000, "The answer is" + " " * 100_000 + "C"])
def test_answer_line_then_a_long_whitespace_run_is_linear(reply):
    """ "The answer is" and a run of spaces (a degenerate generation) took minutes at 250 spaces: the
    answer regexes had whitespace runs side by side, each split of the run tried.  Now milliseconds."""
    import time
    t = time.monotonic()
    gsm, mmlu, mmlu4 = extract_gsm8k_answer(reply), extract_mmlu_letter(reply), \
        extract_mmlu_letter(reply, ["apple", "banana", "cherry", "date"])
    assert time.monotonic() - t < 5
    assert gsm is None
    assert (mmlu, mmlu4) == (("C", "C") if reply.endswith("C") and reply.startswith("The answer") else (None, None))


@pytest.mark.parametrize("prefix", ["The answer is", "Answer:", "Answer **:", "My choice is"])
@pytest.mark.parametrize("end, letter", [("", None), ("B", "B"), (" (B)", "B")])
def test_answer_line_then_a_long_asterisk_run_is_linear(prefix, end, letter):
    """ "The answer is" and 20,000 asterisks took 15 s in extract_mmlu_letter: the answer lines' optional
    `\\*+` and the letter's leading [*$({[]+ split the run every way. The asterisks' group now takes the
    whole run or none of it: the same replies read, in milliseconds."""
    import time
    reply = prefix + "*" * 20_000 + end
    t = time.monotonic()
    got = extract_mmlu_letter(reply), extract_mmlu_letter(reply, ["apple", "banana", "cherry", "date"])
    assert time.monotonic() - t < 2
    assert got == (letter, letter)
    assert extract_mmlu_letter(prefix + " **" + end.strip() + "**") == letter  # the usual bold answer


# ------------------------------------------------------------------ MATH


@pytest.mark.parametrize("pred, gold, ok", [
    ("x(0) = 2", "2", True),
    ("f'(0) = 2", "2", True),
    ("T(10) = 2.5", "2.5", True),
    ("x(-1) = 2", "2", True),
    ("x(0) = 3", "2", False),
    ("x(0) = 2t", "2", False),
])
def test_math_value_of_a_function_at_a_number(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


@pytest.mark.parametrize("pred, gold, ok", [
    (r"3 \times 10^{8} ms^{-1}", r"3 \times 10^{8} \text{ m/s}", True),   # metres per second, as physicists write it
    (r"3 \times 10^{8} \text{ ms}^{-1}", r"3 \times 10^{8} \text{ m s}^{-1}", True),
    (r"9.8 ms^{-2}", r"9.8 \text{ m/s}^2", True),
    (r"30 kms^{-1}", r"30 \text{ km/s}", True),
    (r"5 ms^{-1}", r"5 \text{ ms}^{-1}", True),  # per millisecond: the other reading
    # neither reading is the gold's unit
    (r"3 \times 10^{8} ms^{-1}", r"3 \times 10^{8} \text{ km/s}", False),
    (r"9.8 ms^{-2}", r"9.8 \text{ m/s}", False),
    (r"30 kms^{-1}", r"30 \text{ m/s}", False),
    (r"5 \text{ ms}", r"5 \text{ m s}", False),  # no negative power: milliseconds only
])
def test_math_ms_to_the_minus_one(pred, gold, ok):
    assert is_equiv(pred, gold) is ok
