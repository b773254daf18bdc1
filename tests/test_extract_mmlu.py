"""MMLU: the letter a reply commits to (extract_mmlu_letter) and its score (score_mmlu): boxed and
stated letters, an option's text named as the answer, formal logic's options in LaTeX, denied
letters, hedges and hypotheticals. The tests named for a reading failed before its fix; the
"not_..." / "no_answer" ones guard its limits (no data files needed)."""

import time

import pytest

from minitflow.eval.scoring import extract_mmlu_letter, score_mmlu


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
    (None, None), ("", None), (" \n\t\n", None),  # no reply, or only blank lines
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


def test_mmlu_capitalised_word_after_the_letter():
    assert extract_mmlu_letter("Final answer: C This is a well-established result.") == "C"
    assert extract_mmlu_letter("Answer: B Because the kernel is trivial, statement 1 holds.") == "B"


def test_mmlu_article_after_answer_is_not_a_letter():
    # "the answer is a bit subtle": the article, not option A; the final line states the letter
    assert extract_mmlu_letter("The answer is a bit subtle, since both statements hold.\nB") == "B"
    assert extract_mmlu_letter("The answer is a bit subtle, since both statements hold.") is None


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


@pytest.mark.parametrize("text", [r"\boxed{\mathrm{C}}", r"\boxed{\mathbf{(C)}}", r"\boxed{\textrm{C}}",
                                  # these were None too: \textit, \mathsf, \texttt, \boldsymbol, \bf, {\bf }
                                  r"\boxed{\textit{C}}", r"\boxed{\mathsf{C}}", r"\boxed{\texttt{(C)}}",
                                  r"\boxed{\boldsymbol{C}}", r"\boxed{\bf C}", r"\boxed{{\bf C}}",
                                  r"\boxed{\textit{Option C}}", r"So the answer is \textit{C}.",
                                  r"The answer is \emph{C}."])
def test_mmlu_letter_in_a_math_font_box(text):
    assert extract_mmlu_letter(text) == "C"  # was None: only \text / \textbf were unwrapped
    assert score_mmlu(text, "C")


def test_mmlu_letter_in_a_font_box_still_hedges():
    assert extract_mmlu_letter(r"\boxed{\textit{C or D}}") is None
    assert extract_mmlu_letter(r"\boxed{\textit{C}} or \boxed{\textit{D}}") is None


@pytest.mark.parametrize("text", [r"\boxed{Option C}", r"The answer is $\boxed{\text{Option C}}$.",
                                  "<think>\nB looks close.\n</think>\n\n" r"\boxed{\textbf{Option (C)}}",
                                  r"\boxed{\text{Choice C: Berlin}}"])
def test_mmlu_option_word_in_a_box(text):
    # was None, so a right answer scored wrong: "Option" before the letter left no letter at the box's start
    assert extract_mmlu_letter(text, ["Paris", "London", "Berlin", "Madrid"]) == "C"
    assert score_mmlu(text, "C")


@pytest.mark.parametrize("text", [r"\boxed{\textit{Berlin}}", r"\boxed{\mathrm{Berlin}}", r"\boxed{\mathbf{Berlin}}",
                                  r"The answer is \emph{Berlin}."])
def test_mmlu_option_text_in_any_font(text):
    # was None (only \text and \textbf were unwrapped), so a right answer scored wrong; the letter in
    # these fonts was already read (_FONT)
    assert extract_mmlu_letter(text, ["Paris", "London", "Berlin", "Madrid"]) == "C"
    assert score_mmlu(text, "C", ["Paris", "London", "Berlin", "Madrid"])
    assert extract_mmlu_letter(text.replace("Berlin", "Lyon"), ["Paris", "London", "Berlin", "Madrid"]) is None


@pytest.mark.parametrize("text", [r"\boxed{Option C or D}", r"\boxed{\text{Option C}} or \boxed{\text{Option D}}",
                                  r"\boxed{Option E}"])
def test_mmlu_option_word_in_a_box_no_answer(text):
    assert extract_mmlu_letter(text, ["Paris", "London", "Berlin", "Madrid"]) is None  # a hedge; no option E


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


@pytest.mark.parametrize("text, letter", [
    ("The answer is C.\n\nIf the question asked about France, the answer would be A.", "C"),  # was A
    ("Answer: C\n\n(If it asked for the largest, the answer would be D.)", "C"),  # was D
    ("So the answer would be C.", "C"), ("If I had to pick, I would choose C.", "C"),
])
def test_mmlu_a_hypothetical_answer_is_no_answer(text, letter):
    assert extract_mmlu_letter(text) == letter


@pytest.mark.parametrize("text", [
    "The answer is C, or it could be D.",
    "The answer is C, or it might also be (D).",
    "The answer is C, though D is also possible.",
    "The answer is C, although (D) could be correct.",
])
def test_mmlu_not_one_answer_or_it_could_be_another(text):
    assert extract_mmlu_letter(text) is None  # each read C


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
