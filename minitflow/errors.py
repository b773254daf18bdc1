"""The one exception type for user mistakes: CLIs print its message as one line and exit 2."""

import numbers


class UserError(ValueError):
    """A bad path, flag, shape or file: the message says what is wrong and what to do."""


def is_int(x: object) -> bool:
    """An integer, numpy's included, that is not a bool (True is 1 to Python: max_new_tokens=True ran
    one token, batch_size=True one question)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_int(value: object, name: str, low: int = 1) -> int:
    """`value` as a plain int (a numpy one reached json metadata, which refused it) when it is an
    integer >= `low`, else one line naming `name` (2.5 slots was a TypeError from deep inside)."""
    if not is_int(value) or value < low:
        raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
