"""The strict MATH comparison, leftovers: division in exponents, chains of equalities, units
compared (not converted), checked against minerva_math's references and the forms Qwen3 writes."""

import pytest

from minitflow.eval.scoring import is_equiv, score_math

pytest.importorskip("sympy")

GOLD_86 = r"I(0) e^{-\frac{t}{R C}}"  # minerva_math/86


@pytest.mark.parametrize("pred, gold, ok", [
    # in an exponent the product after `/` is the whole denominator: e^{-t/RC} was e^{-tC/R}
    (r"I(0) e^{-t/RC}", GOLD_86, True),
    (r"I(0) e^{-t/R C}", GOLD_86, True),
    (r"I(0)\exp(-t/RC)", GOLD_86, True),
    (r"e^{-t/RC}", r"e^{-\frac{t}{R C}}", True),
    (r"e^{-tC/R}", r"e^{-t/RC}", False),  # was read as the same (t/R)·C
    (r"e^{-tC/R}", r"e^{-\frac{t}{R C}}", False),
    (r"e^{-t/2\tau}", r"e^{-\frac{t}{2\tau}}", True),
    (r"e^{-t/2\tau}", r"e^{-\frac{t \tau}{2}}", False),
    # what was right stays right: a single factor, a sum after the quotient, a nested exponent
    (r"e^{i\pi/3}", r"e^{\frac{i\pi}{3}}", True),
    (r"x^{1/2} y", r"\sqrt{x} y", True),
    (r"e^{-t/\tau + 1}", r"e e^{-\frac{t}{\tau}}", True),
    (r"e^{e^{-x/ab}}", r"e^{e^{-\frac{x}{a b}}}", True),
])
def test_division_in_an_exponent_takes_the_whole_product(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


@pytest.mark.parametrize("pred, gold, ok", [
    # a chain of equalities states its last side (the gold names no left side)
    (r"s = \alpha f = 1.6", "1.6", True),
    (r"s=\frac{45}{3600} \frac{\pi}{180} 7200=1.6", "1.6", True),
    (r"L = 4\pi R^2 \sigma T^4 = 4.5 \times 10^{33}", "4.5e33", True),
    (r"x = y = 2 \approx 1.6", "1.6", True),
    (r"s = \alpha f = 1.7", "1.6", False),
    (r"s = 1.6 = 16", "1.6", False),  # the last side, not any side
    (r"a < b = 1.6", "1.6", False),  # not a chain of equalities
    (r"a \le b = c = 1.6", "1.6", False),
    (r"x = 1, y = 1.6", "1.6", False),  # two statements, not a chain
])
def test_a_chain_of_equalities_states_its_last_side(pred, gold, ok):
    assert is_equiv(pred, gold) is ok


def test_a_chain_in_a_reply():
    assert score_math(r"So $\boxed{s = \alpha f = 1.6 \text{ cm}}$.", "1.6")
