"""Strict scorers: the leftovers an earlier pass noted and left (a hedging adverb before one answer,
formal logic's options written in LaTeX, "2 dozen", German / French / Spanish answer lines, a
function's value at a number, "ms^{-1}").  The tests named for a reading failed before its fix; the
"not_..." ones guard its limits (no data files needed)."""

import pytest

from minitflow.eval.math_equiv import is_equiv

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
