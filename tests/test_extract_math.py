"""MATH: the final answer a reply commits to (extract_math_answer, cut_at_next_problem) and its
score (score_math): boxes, "Final Answer" and "the answer is" lines, a closing approximation, a
reply cut at its first invented problem (no data files needed)."""

import pytest

from minitflow.eval.scoring import cut_at_next_problem, extract_math_answer, score_math


def test_extract_and_score_math():
    text = r"We get $x = \frac{3}{4}$, hence the answer is $\boxed{\dfrac{3}{4}}$."
    assert extract_math_answer(text) == r"\dfrac{3}{4}"
    assert score_math(text, "0.75")
    assert extract_math_answer("Final Answer: The final answer is $7$. I hope it is correct.") == "7"
    assert extract_math_answer("So the answer is 3.5.") == "3.5"
    assert extract_math_answer("The answer is $x^2$") == "x^2"
    assert not score_math("no answer", "1")


@pytest.mark.parametrize("reply, answer", [
    ("The final answer is 120!", "120"),
    ("So the answer is 120!  \nThanks for the puzzle.", "120"),
    ("Final Answer: The final answer is 120! I hope it is correct.", "120"),
    ("The answer is 5! = 120.", "5! = 120"),   # a factorial inside the sentence stays one
    ("The answer is $5!$.", "5!"),             # and in math mode
])
def test_math_an_exclamation_mark_ends_the_prose_answer(reply, answer):
    """A prose answer read up to a full stop only: "The final answer is 120!" gave `120!`, the
    factorial, wrong against 120. A "!" that the line's end or a new sentence follows ends it."""
    assert extract_math_answer(reply) == answer
    assert score_math(reply, "120")


@pytest.mark.parametrize("reply, answer", [
    ("Final Answer: The final answer is 12 I hope it is correct.", "12"),
    ("Final Answer: The final answer is 5.I hope it is correct.", "5"),
])
def test_math_the_prompts_closing_phrase_is_cut_where_no_sentence_ends_before_it(reply, answer):
    """The 4-shot prompt's "I hope it is correct." with no ". " before it is in the answer's sentence."""
    assert extract_math_answer(reply) == answer


def test_math_answer_is_with_escaped_dollar():
    text = r"So the answer is $\$18.90$."
    assert extract_math_answer(text) == r"\$18.90"
    assert score_math(text, "18.90")
    assert not score_math(text, "18.09")


def test_math_final_answer_prose_is_not_an_answer():
    text = "So $\\boxed{5}$.\n\nLet me double-check the final answer: it satisfies the constraint."
    assert extract_math_answer(text) == "5"
    assert score_math("Final answer: the diameter is 1.6 cm.", "1.6")
    assert not score_math("$\\boxed{1.6}$\n\nFinal answer: the diameter is 2.1 cm.", "1.6")
    # a last "Final Answer:" cut off before its answer states none: the one before stands
    assert extract_math_answer("The final answer is $5$.\n\nFinal Answer:") == "5"
    assert extract_math_answer("Final Answer: The final answer is $7$. I hope it is correct.") == "7"


def test_math_response_is_cut_at_its_first_invented_problem():
    good = "So \\boxed{1.6}.\nFinal Answer: The final answer is $1.6$. I hope it is correct."
    text = good + "\n\nProblem:\nWhat is 2+2?\n\nSolution:\n\\boxed{4}\n\nProblem:\nWhat is 2+3?\n\nSolution:\n\\boxed{5}"
    assert cut_at_next_problem(text) == good + "\n\n"
    assert score_math(text, "1.6") and not score_math(text, "4")


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


def test_math_of_several_answer_is_phrases_the_last_counts():
    assert extract_math_answer("The answer is 3.\nOn second thought, the answer is 4.") == "4"


def test_math_boxes_joined_by_a_spaced_or_are_one_answer():
    # "\quad \text{or} \quad" between two boxes was too long a gap: only the last box counted
    text = r"$$\boxed{x = 2} \quad \text{or} \quad \boxed{x = 3}$$"
    assert extract_math_answer(text) == "x = 2, x = 3"
    assert score_math(text, "2, 3") and not score_math(text, "3")
    assert extract_math_answer(r"\boxed{2}\quad\text{then}\quad\boxed{3}") == "3"


@pytest.mark.parametrize("reply, gold, ok", [
    ("We compute the distance.\nThus, $s \\approx 1.6 \\mathrm{~cm}$.", "1.6", True),  # was no answer
    ("so the speed is about 3 m/s and v \u2248 2.5 m/s", "2.5", True),
    ("Thus, $s \\approx 1.6 \\mathrm{~cm}$.", "1.7", False),
])
def test_math_a_closing_approximation_states_the_answer(reply, gold, ok):
    """A reply with no explicit answer whose last line says what something is approximately:
    that value is its answer, as for "is" and "="."""
    assert score_math(reply, gold) is ok


def test_math_ode_equation_in_a_reply_scores():
    gold = r"m \frac{d v}{d t}+b v=f"
    reply = "<think>\nForce balance.\n</think>\n\nSo the equation is $\\boxed{f = m\\dot{v} + bv}$."
    assert score_math(reply, gold)
    assert not score_math(reply.replace("+ bv", "- bv"), gold)
    final = "Final Answer: The final answer is $m \\frac{dv}{dt} = f - bv$. I hope it is correct."
    assert score_math(final, gold) and not score_math(final.replace("f - bv", "f + bv"), gold)
