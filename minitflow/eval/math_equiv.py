"""Are two final answers the same?  The strict MATH comparison.

Order of the checks (the first that decides wins):

1. Equal after normalisation (`normalize_latex`); words up to case (\\text{Monday}, monday; words
   under four letters only where the gold writes them as text: Odd, YES for \\text{odd}, \\text{yes},
   not A for a).
2. Numbers (`parse_quantity`): both sides a number, optionally with units
   (words, \\AA, \\mu m, \\mathrm{~cm}, ...), `\\approx`, `$`, `%`, degrees,
   e-notation (4.5e33 is a number, not 4.5*e*33), `a \\times 10^{b}`, fractions.
   Two integers must be equal; otherwise the values must agree to a relative
   tolerance (1e-4, no absolute tolerance, so 0 never matches 1.3e-27) *and*
   the gap must be explainable by rounding the less precise of the two as
   written (so 4.03189 does not match 4.03188).  Units are compared, not
   converted: where both sides write one we can place (`unit_key`), they must
   be the same (1.6 m is not 1.6 cm; cm, \\mathrm{~cm}, centimeters are one,
   cm^2 and square centimeters too; 300 K is not 300^\\circ C, a bare degree
   sign names no scale); a unit on one side only is no verdict.
3. One side a number, the other a closed-form constant (2\\pi, \\frac{\\sqrt3}{2}):
   the constant's numeric value, same rule.
4. Structures: matrices (cell by cell), sets and bare lists (unordered),
   intervals and tuples (ordered, brackets must match), an inequality in one
   variable against intervals as its solution set (`x \\in [-1,4]` for `-1 \\le x
   \\le 4`, whatever the variable's name), `a \\pm b` (a set of two), equations
   (side by side, either orientation; else the same with terms moved across,
   and a differential equation also times a factor free of its unknowns,
   y' / \\dot{y} / \\frac{dy}{dt} being one notation), and a named value
   (`MRS = ...`) for a gold that is only the value; a chain of
   equalities (`s = \\alpha f = 1.6`), or a computation and its value
   (`2 \\times 0.8 = 1.6`), for such a gold states its last side.
5. Expressions: our LaTeX -> sympy conversion (allow-listed parse; function
   application for `I(0)`, `u(t)`; subscripted Greek letters; in an exponent
   a `/` divides by the whole product after it, e^{-t/RC}; 5! of a written integer) checked by
   random-point evaluation (20 of 30 digits) and `simplify`, a reply's arbitrary
   constants renamed to the gold's (A e^{t} for C_1 e^{t}); if either side cannot be parsed,
   math-verify (HF's library) decides, with e-notation rewritten first.

sympy / math-verify run under one timeout for the whole comparison (a shared
deadline: math-verify gets what sympy left).  On the main thread our timer is
SIGALRM; math-verify's own timers (whole seconds on the same SIGALRM, one per
parse and verify) are off.  Off the main thread our work runs in a daemon
thread that is abandoned on timeout.  A comparison that times out counts as
"not equal".
"""

from __future__ import annotations

import itertools
import math
import random
import re
import signal
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

MATH_TIMEOUT = 5.0  # seconds for one equivalence check, all its steps together
REL_TOL = 1e-4

# ------------------------------------------------------------------- timeouts


class _Timeout(BaseException):
    """BaseException so that sympy's internal `except Exception` cannot swallow it."""


def call_with_timeout(fn: Callable[[], Any], seconds: float) -> Any:
    """fn() or None if it takes longer than `seconds` (see module docstring)."""
    if threading.current_thread() is threading.main_thread():
        def on_alarm(signum, frame):  # noqa: ARG001
            raise _Timeout()

        old_handler = signal.signal(signal.SIGALRM, on_alarm)
        old_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
        start = time.monotonic()
        try:
            try:
                return fn()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:  # also when the alarm lands just before the disarm above
            return None
        finally:
            signal.signal(signal.SIGALRM, old_handler)
            if old_delay:  # someone else's timer was pending: re-arm what is left of it
                signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - start), 1e-3))
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    return box[0] if box else None


class _Deadline:
    """One comparison's timeout, shared by all its timed steps (sympy, then math-verify, and
    those of its parts): each step gets what is left, so the whole takes one timeout, not
    one per step.  The clock starts at the first step, after the slow first imports."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.end = seconds, None

    def left(self) -> float:
        if self.end is None:
            self.end = time.monotonic() + self.seconds
        return self.end - time.monotonic()

    def call(self, fn: Callable[[], Any]) -> Any:
        """fn() or None if the time is up first."""
        left = self.left()
        return call_with_timeout(fn, left) if left > 0 else None


# ---------------------------------------------------------------- braces


def closing_braces(text: str) -> dict[int, int]:
    """Index of the `}` closing each `{`, escaped `\\{` `\\}` skipped, in one pass (a looping
    reply's thousands of unclosed boxes cost one scan, not one each)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def match_brace(text: str, open_idx: int) -> int | None:
    """Index of the `}` closing the `{` at open_idx (skips escaped `\\{` `\\}`)."""
    end = closing_braces(text[open_idx:]).get(0)
    return None if end is None else open_idx + end


def _strip_outer_braces(s: str) -> str:
    while s.startswith("{") and match_brace(s, 0) == len(s) - 1:
        s = s[1:-1]
    return s


def _unwrap_command(s: str, names: str) -> str:
    r"""Replace `\name{content}` by content, braces matched properly."""
    pattern = re.compile(r"\\(?:" + names + r")\s*(?=\{)")
    while True:
        m = pattern.search(s)
        if not m:
            return s
        end = match_brace(s, m.end())
        if end is None:
            return s[:m.start()] + s[m.end():]
        s = s[:m.start()] + s[m.end() + 1:end] + s[end + 1:]


# -------------------------------------------------------------- clean-up

_TEXT_CMDS = r"text|textbf|textrm|textit|textnormal|mbox|mathrm|mathbf|mathit|operatorname|rm|bf"
_SPACES_RE = re.compile(r"\\[,;:! ]|\\q?quad|~")
_ROW_BREAK = "\x00"  # placeholder for `\\` while spacing commands are removed


# a degree sign, with the temperature scale after it (C or F) captured
_DEGREE_RE = re.compile(r"(?:(?<![A-Za-z])\{\s*\}\s*)?(?:\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree)"
                        r"(?:\s*(?:\\(?:text|mathrm)\s*\{\s*([CF])\s*\}|([CF])(?![A-Za-z])))?")

# an en-dash before a number, not after one ("3–5" is a range), is a minus sign: "–5" is -5
EN_DASH_SIGN_RE = re.compile(r"(?<![\w.)\]}])\u2013(?=\s*[\d.])")


# The Unicode a reply may write for the golds' LaTeX: 2π, θ, (-∞, 1], √3, 2√(x+1)
_GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi - pi rho - sigma tau upsilon "
          "phi chi psi omega").split()
_UNICODE_COMMANDS = {**{chr(0x3B1 + i): f"\\{name} " for i, name in enumerate(_GREEK) if name != "-"},
                     **{chr(c): f"\\{name} " for c, name in ((0x393, "Gamma"), (0x394, "Delta"), (0x398, "Theta"),
                                                              (0x39B, "Lambda"), (0x39E, "Xi"), (0x3A0, "Pi"),
                                                              (0x3A3, "Sigma"), (0x3A6, "Phi"), (0x3A8, "Psi"),
                                                              (0x3A9, "Omega"))},
                     "\u00b5": "\\mu ", "\u221e": "\\infty "}
_UNICODE_RE = re.compile("[" + "".join(_UNICODE_COMMANDS) + "]")
# √ takes a number, a letter, a command, a {group} or a (group) whose brackets it drops
_SQRT_RE = re.compile(r"\u221a\s*(?:\(([^()]*)\)|\{([^{}]*)\}|(\d+(?:\.\d+)?|[A-Za-z]|\\[A-Za-z]+))")


def clean_answer(s: str) -> str:
    """Presentation-only clean-up shared by every comparison: math delimiters,
    \\left/\\right, \\dfrac, \\approx, degrees, `\\$`, thin spaces in digit groups,
    Greek letters, ∞ and √ written in Unicode. Spacing is kept (units and words need it);
    see `normalize_latex` for the rest."""
    s = str(s).strip().replace("\u2212", "-").replace("\u2248", "\\approx ").replace("\u00b0", "^\\circ")
    s = _UNICODE_RE.sub(lambda m: _UNICODE_COMMANDS[m.group(0)], s)
    s = _SQRT_RE.sub(lambda m: "\\sqrt{" + next(g for g in m.groups() if g is not None).strip() + "}", s)
    s = s.replace("\u2103", "^\\circ C").replace("\u2109", "^\\circ F")  # the one-character ℃ and ℉
    s = s.replace("\u00b7", "\\cdot ").replace("\u22c5", "\\cdot ").replace("\u00d7", "\\times ")  # 4.5·10^{33}
    s = EN_DASH_SIGN_RE.sub("-", s)
    s = s.replace("\\\\", _ROW_BREAK)
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left):len(s) - len(right)].strip()
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])\s*", "", s)
    s = s.replace("\\displaystyle", "").replace("\\!", "")
    s = re.sub(r"\{\s*\\(?:rm|bf|it)\s+([^{}\\]*)\}", r"{\1}", s)  # old-style \lambda_{\rm red}
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    # degrees, also Celsius / Fahrenheit (a lone C after a number is not a unit elsewhere), also
    # after the empty group of `25{}^{\circ}\mathrm{C}`, which left "{}" as the unit
    s = _DEGREE_RE.sub("", s)
    s = re.sub(r"\^\s*\{\s*((?:\\prime\s*)+)\}", lambda m: "'" * m.group(1).count("prime"), s)  # ^{\prime\prime}
    s = re.sub(r"\^\s*\\prime|\\prime", "'", s)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"(?<=\d)\\[,;: ](?=\d{3}(?!\d))", "", s)  # 1\,450\,000
    s = re.sub(r"(?<=\d)\{,\}(?=\d{3}(?!\d))", ",", s)  # 1{,}450
    s = re.sub(r"^\s*(?:\\approx|\\sim|\\simeq|\\cong|about|approximately|approx\.?)\s*", "", s)
    # "x \approx 5" / "T \sim 300": keep what is approximated to
    m = re.fullmatch(r"[^=<>]*?\s*(?:\\approx|\\simeq|\\sim)\s*(.+)", s)
    if m:
        s = m.group(1)
    s = _SPACES_RE.sub(" ", s)
    s = s.replace(_ROW_BREAK, "\\\\")
    return s.strip().rstrip(".").strip()


# ------------------------------------------------------------------ numbers

# Units after a number (compared by `unit_key`, not converted).  Any word of two or more letters
# counts (cm, erg, dollars, years) unless it is maths; single letters only from this list (x, t,
# C, T are not), or wrapped in \text{} / \mathrm{}.
_UNIT_SINGLE = set("msgKJWNVAL")
_NOT_UNITS = {
    "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "pi", "sqrt", "arcsin", "arccos",
    "arctan", "sinh", "cosh", "tanh", "or", "and", "to", "is", "mod", "pmod", "infty", "frac", "cdot",
    "times", "div", "mp", "le", "ge", "leq", "geq", "neq", "cup", "cap", "in", "i", "e",
}
_UNIT_TOKEN_RE = re.compile(
    r"\s+|[A-Za-z]+|\\mu|\\Omega|\\AA|\\odot|\\ohm|\\%|%|\\cdot|\\times|[/.*\-()]|\^\s*\{?\s*-?\d+\s*\}?"
    r"|_\s*\{?\s*\\odot\s*\}?|\{|\}|'+"  # 0.022'' (arcseconds)
)
_MANTISSA = r"(?P<sign>[+-]?)\s*(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d*)?"
_NUMBER_RE = re.compile(
    r"\s*(?:" + _MANTISSA + r")"
    r"(?:\s*[eE]\s*(?P<eexp>[+-]?\d+)"
    r"|\s*(?:\\times|\\cdot|\*|x|\u00d7)\s*10\s*\^\s*\{?\s*(?P<texp>[+-]?\s*\d+)\s*\}?)?"
)
_POW10_RE = re.compile(r"\s*(?P<sign>[+-]?)\s*10\s*\^\s*\{?\s*(?P<exp>[+-]?\s*\d+)\s*\}?")
_FRAC_RE = re.compile(r"\s*(?P<sign>[+-]?)\s*\\frac\s*\{\s*(?P<num>[\d.]+)\s*\}\s*\{\s*(?P<den>[\d.]+)\s*\}")
_MIXED_RE = re.compile(  # 3\frac{1}{2}
    r"\s*(?P<sign>[+-]?)\s*(?P<whole>\d+)\s*\\frac\s*\{\s*(?P<num>\d+)\s*\}\s*\{\s*(?P<den>\d+)\s*\}")
_SLASH_RE = re.compile(r"\s*(?P<sign>[+-]?)\s*(?P<num>\d+\.?\d*|\.\d+)\s*/\s*(?P<den>\d+\.?\d*|\.\d+)")
_MAX_EXP = 400


@dataclass(frozen=True)
class Quantity:
    """A number as written: exact value, half a unit of its last written digit
    (0 for exact forms such as fractions), whether it is a plain integer, and its
    unit (`unit_key`; () for none or one we cannot place)."""

    value: Fraction
    ulp: Fraction
    integer: bool
    percent: bool = False
    unit: tuple[tuple[str, int], ...] = ()
    other_unit: tuple[tuple[str, int], ...] = ()  # "ms^{-1}": per millisecond, or m s^{-1} (see _other_reading)


def _same_unit(a: Quantity, b: Quantity) -> bool:
    """False only when both sides write a unit we can place and no reading of one is a reading of the other."""
    ra, rb = {u for u in (a.unit, a.other_unit) if u}, {u for u in (b.unit, b.other_unit) if u}
    return not (ra and rb) or bool(ra & rb)


def _is_unit_tail(tail: str) -> bool:
    """`cm`, `\\mathrm{~erg\\,s^{-1}}`, `\\mu m`, `\\AA`, `km/s`, `dollars`: yes; `x`, `\\pi`, `2`: no.

    Solar units (`M_\\odot`) and the Unicode `Å`, `μm` a model writes are units too (clean_answer,
    which every caller's text has been through, wrote μ and Ω as \\mu and \\Omega)."""
    return _unit_tokens(tail) is not None


# a word that is the whole of a \text{} / \mathrm{}: `\mathrm{sec}`, `\text{ d}`, `\mathrm{M}` are
# units, though a bare `sec` is the secant and a bare `d` a variable
_WRAPPED_WORD_RE = re.compile(r"\\(?:" + _TEXT_CMDS + r")\s*\{\s*~?\s*([A-Za-z]+)\s*\}")


def _wrapped_words(s: str) -> frozenset[str]:
    return frozenset(w for w in _WRAPPED_WORD_RE.findall(s) if w not in ("e", "i", "or", "and", "to", "is"))


def _unit_tokens(tail: str, wrapped: frozenset[str] = frozenset()) -> list[str] | None:
    """The tokens of the unit that `tail` writes ([] for none), None if it is not a unit."""
    tail = _unwrap_command(tail, _TEXT_CMDS).strip()
    tail = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"\1/(\2)", tail)  # \frac{\text{km}}{\text{s}}: km/(s)
    tail = re.sub(r"(?<![A-Za-z\\])[MLR]\s*_\s*\{?\s*\\odot\s*\}?", r"\\odot ", tail)
    tail = re.sub(r"\\mathring\s*\{?\s*A\s*\}?|\u00c5|\u212b", r"\\AA ", tail)
    if not tail:
        return []
    pos, tokens, words, other = 0, [], [], 0
    while pos < len(tail):
        m = _UNIT_TOKEN_RE.match(tail, pos)
        if not m:
            return None
        tok = m.group(0)
        if tok[0].isalpha():
            words.append(tok)
        elif tok.startswith(("\\", "'")) and tok not in ("\\cdot", "\\times"):
            other += 1
        if tok.strip():
            tokens.append(re.sub(r"\s+", "", tok))
        pos = m.end()
    for w in words:
        if w in wrapped:
            continue
        if w.lower() in _NOT_UNITS or (len(w) == 1 and w not in _UNIT_SINGLE):
            return None
    return tokens if words or other else None


# Units are compared, not converted: 1.6 m is not a gold of 1.6 cm, 16 mm is not either.  A unit
# is its (name, power) pairs, names canonical (cm, centimeters, \mathrm{~cm}; erg/s, erg s^{-1},
# \frac{erg}{s}); a word we cannot place (`bps`, `billion`) leaves the unit unknown: no verdict.
_UNIT_SYMBOLS = {p + b for p in ("", "p", "n", "u", "\u00b5", "m", "c", "k", "M", "G", "T")
                 for b in ("m", "s", "g", "J", "W", "N", "V", "A", "K", "Pa", "Hz", "eV", "L", "mol", "erg",
                           "cal", "pc", "yr", "bar", "\u03a9")} | {
    "min", "h", "d", "AU", "amu", "u", "Da", "atm", "rad", "sr", "arcsec", "arcmin", "ly", "M", "\u00c5"}
_UNIT_ALIASES = {
    "meter": "m", "metre": "m", "centimeter": "cm", "centimetre": "cm", "millimeter": "mm", "millimetre": "mm",
    "kilometer": "km", "kilometre": "km", "nanometer": "nm", "nanometre": "nm", "micrometer": "\u00b5m",
    "micrometre": "\u00b5m", "micron": "\u00b5m", "um": "\u00b5m", "picometer": "pm", "picometre": "pm",
    "angstrom": "\u00c5", "second": "s", "sec": "s", "millisecond": "ms", "microsecond": "\u00b5s",
    "nanosecond": "ns", "minute": "min", "min": "min", "hour": "h", "hr": "h", "day": "d", "year": "yr",
    "yr": "yr", "gram": "g", "kilogram": "kg", "milligram": "mg", "joule": "J", "kilojoule": "kJ", "erg": "erg",
    "electronvolt": "eV", "watt": "W", "kilowatt": "kW", "volt": "V", "millivolt": "mV", "kilovolt": "kV",
    "ampere": "A", "amp": "A", "kelvin": "K", "newton": "N", "hertz": "Hz", "pascal": "Pa", "atmosphere": "atm",
    "mole": "mol", "mol": "mol", "liter": "L", "litre": "L", "milliliter": "mL", "millilitre": "mL",
    "arcsecond": "arcsec", "arcsec": "arcsec", "arcminute": "arcmin", "radian": "rad",
    "celsius": "\u00b0C", "centigrade": "\u00b0C", "fahrenheit": "\u00b0F",
    "parsec": "pc", "kiloparsec": "kpc", "megaparsec": "Mpc", "au": "AU", "amu": "amu", "u": "amu", "Da": "amu",
    "dalton": "amu",
    "calorie": "cal", "kilocalorie": "kcal", "ohm": "\u03a9", "dollar": "dollar",
    # MATH's imperial units: inches was "inche" beside inch, feet another unit than foot
    "inch": "in", "inches": "in", "in": "in", "foot": "ft", "feet": "ft", "ft": "ft", "yard": "yd", "yd": "yd",
    "mile": "mi", "mi": "mi", "pound": "lb", "lb": "lb", "lbs": "lb", "ounce": "oz", "oz": "oz",
}
_UNKNOWN_WORDS = {"thousand", "million", "billion", "trillion", "solar", "light", "electron", "unit", "units"}


def _unit_name(word: str) -> str | None:
    """The canonical name of one unit word, None if we cannot place it."""
    low = word.lower()
    if word in _UNIT_SYMBOLS:
        return _UNIT_ALIASES.get(word, word)
    for w in (low, low[:-1] if low.endswith("s") else None):
        if w in _UNIT_ALIASES:
            return _UNIT_ALIASES[w]
    if len(low) < 4 or low in _UNKNOWN_WORDS or low.rstrip("s") in _UNKNOWN_WORDS:
        return None
    return low[:-1] if low.endswith("s") and not low.endswith("ss") else low  # photons, atoms


_POWER_BEFORE = {"square": "^2", "sq": "^2", "cubic": "^3"}  # square centimeters
_POWER_AFTER = {"squared": "^2", "cubed": "^3"}  # centimeters squared


def _spelled_powers(tokens: list[str]) -> list[str]:
    """A power in words as the power it spells: square centimeters and centimeters squared are cm^2."""
    out: list[str] = []
    k = 0
    while k < len(tokens):
        low = tokens[k].lower()
        if low in _POWER_BEFORE and k + 1 < len(tokens) and tokens[k + 1][0].isalpha():
            out += [tokens[k + 1], _POWER_BEFORE[low]]
            k += 2
            continue
        out.append(_POWER_AFTER[low] if low in _POWER_AFTER and out and out[-1][0].isalpha() else tokens[k])
        k += 1
    return out


def unit_key(tokens: list[str]) -> tuple[tuple[str, int], ...]:
    """Canonical (name, power) pairs of a unit's tokens; () for no unit or one we cannot place.
    A `/` divides by the whole product after it (erg/s cm^2 is erg s^-1 cm^-2), as in a physicist's a/bc."""
    tokens = _spelled_powers(tokens)
    powers: dict[str, int] = {}
    stack: list[int] = []
    base = sign = 1
    last: str | None = None
    prefix, last_sign = "", 1
    for tok in tokens:
        if tok[0].isalpha() and tok.lower() == "per":
            tok = "/"
        if tok.lower() in ("degree", "degrees", "deg"):  # degrees Celsius is °C; degrees alone says no more
            continue
        if tok == "/":
            sign = -base
        elif tok == "(":
            stack.append(base)
            base = sign
        elif tok == ")":
            base = stack.pop() if stack else 1
            sign = base
        elif tok.startswith("^"):
            if last is None:
                return ()
            powers[last] += last_sign * (int(re.sub(r"[^\d-]", "", tok)) - 1)  # cm^{-3}: -3, not -1
        elif tok == "\\mu":
            prefix = "\u00b5"
        elif tok[0].isalpha() or tok in ("\\AA", "\\Omega", "\\ohm", "\\odot") or tok.startswith(("'", "_")):
            if tok[0].isalpha():
                name = _unit_name(prefix + tok) if prefix else _unit_name(tok)
            else:
                name = {"\\AA": "\u00c5", "\\Omega": "\u03a9", "\\ohm": "\u03a9", "'": "arcmin",
                        "''": "arcsec"}.get(tok, "odot" if "odot" in tok else None)
            if name is None:
                return ()
            prefix, last, last_sign = "", name, sign
            powers[name] = powers.get(name, 0) + sign
        elif tok in ("\\%", "%"):
            return ()
    if "Hz" in powers:  # a frequency: Hz is s^{-1}
        powers["s"] = powers.get("s", 0) - powers.pop("Hz")
    return tuple(sorted((k, v) for k, v in powers.items() if v))


_REPEATING_RE = re.compile(r"(?<![\d.])(\d{0,50})\.(\d{0,50})\\overline\s*\{\s*(\d{1,50})\s*\}")


def _temperature_scale(s: str) -> str | None:
    """The scale word of 25^\\circ C, 25 °C, 25 ℃ ("celsius"; `clean_answer` removes them), or None:
    a bare degree sign is an angle, or a temperature that does not say which scale."""
    s = s.replace("\u00b0", "^\\circ").replace("\u2103", "^\\circ C").replace("\u2109", "^\\circ F")
    m = _DEGREE_RE.search(s)
    scale = m and (m.group(1) or m.group(2))
    return {"C": "celsius", "F": "fahrenheit"}.get(scale) if scale else None


def _repeating_fraction(m: re.Match) -> str:
    """A repeating decimal as the exact fraction it is: 0.\\overline{3} is 1/3, not 0.3."""
    head = (m.group(1) or "0") + m.group(2)
    value = Fraction(int(head + m.group(3)) - int(head), 10 ** len(m.group(2)) * (10 ** len(m.group(3)) - 1))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def parse_quantity(s: str | None) -> Quantity | None:
    """The number an answer states (decoration ignored, its unit kept aside), or None."""
    if not s:
        return None
    scale = _temperature_scale(s)
    s = clean_answer(s)
    wrapped = _wrapped_words(s)
    s = _fix_fracs(_unwrap_command(s, _TEXT_CMDS))  # \frac12 -> \frac{1}{2}: 3\frac12 is mixed too
    s = re.sub(r"(?<=\d) (?=\d{3}(?!\d))", "", s)  # "15 625"
    s = _REPEATING_RE.sub(_repeating_fraction, s)  # 0.1\overline{6} -> \frac{1}{6}
    s = s.strip()
    while s.startswith("{") and match_brace(s, 0) == len(s) - 1:  # {{0.3333}} as {0.3333}
        s = s[1:-1].strip()
    percent = False
    for pattern in (_MIXED_RE, _FRAC_RE, _SLASH_RE, _POW10_RE, _NUMBER_RE):
        m = pattern.match(s)
        if not m or not m.group(0).strip():
            continue
        try:
            q = _quantity_from(pattern, m)
        except ValueError:  # past int's 4,300-digit limit ("0.333..." looping to the token limit)
            return None
        if q is None:
            continue
        tail = s[m.end():].strip()
        if tail.startswith(("\\%", "%")):
            percent, tail = True, tail.lstrip("\\%").strip()
        tokens = _unit_tokens(tail, wrapped)
        if tokens is None:
            return None
        other = _other_reading(tokens)
        return Quantity(q.value, q.ulp, q.integer, percent, unit_key(tokens + [scale] if scale else tokens),
                        unit_key(other) if other else ())
    return None


def _other_reading(tokens: list[str]) -> list[str] | None:
    """The second reading of a unit whose run of letters ends in `s` before a negative power: "ms^{-1}"
    is per millisecond to SI and metres per second to most physicists ("3 \\times 10^8 ms^{-1}"),
    "kms^{-1}" and "cms^{-2}" only km s^{-1} and cm s^{-2}; None when there is none."""
    for k, tok in enumerate(tokens[:-1]):
        if tok[0].isalpha() and len(tok) > 1 and tok.endswith("s") and tok[:-1] in _UNIT_SYMBOLS \
                and re.fullmatch(r"\^\{?-\d+\}?", tokens[k + 1]):
            return tokens[:k] + [tok[:-1], "s"] + tokens[k + 1:]
    return None


def _quantity_from(pattern: re.Pattern, m: re.Match) -> Quantity | None:
    sign = -1 if m.group("sign") == "-" else 1
    if pattern is _MIXED_RE:  # 3\frac{1}{2} is three and a half, not 3 * 1/2
        num, den = int(m.group("num")), int(m.group("den"))
        if not 0 < num < den:
            return None
        return Quantity(sign * (int(m.group("whole")) + Fraction(num, den)), Fraction(0), False)
    if pattern is _FRAC_RE or pattern is _SLASH_RE:
        num, den = Fraction(m.group("num")), Fraction(m.group("den"))
        if den == 0:
            return None
        return Quantity(sign * num / den, Fraction(0), False)
    if pattern is _POW10_RE:
        exp = int(m.group("exp").replace(" ", ""))
        if abs(exp) > _MAX_EXP:
            return None
        return Quantity(sign * Fraction(10) ** exp, Fraction(0), False)
    if m.group("int") is None and not (m.group("frac") or "").strip(".").isdigit():
        return None
    digits = (m.group("int") or "0").replace(",", "")
    frac = (m.group("frac") or "").rstrip()
    decimals = len(frac) - 1 if len(frac) > 1 else 0
    mantissa = Fraction(digits + (frac if len(frac) > 1 else ""))
    exp_text = m.group("eexp") or m.group("texp")
    exp = int(exp_text.replace(" ", "")) if exp_text else 0
    if abs(exp) > _MAX_EXP:
        return None
    scale = Fraction(10) ** exp
    ulp = Fraction(1, 2) * Fraction(10) ** (exp - decimals)
    integer = exp_text is None and decimals == 0 and not frac
    return Quantity(sign * mantissa * scale, ulp, integer)


def quantities_equal(pred: Quantity, gold: Quantity, rel_tol: float = REL_TOL) -> bool:
    """Same number? Integers exactly; others within rel_tol and within rounding of the
    less precise side.  A percent on one side also matches the fraction (10% ~ 0.1).
    Units, where both sides write one we can place, must be the same (not converted)."""
    if not _same_unit(pred, gold):
        return False
    factors = [Fraction(1)]
    if pred.percent != gold.percent:
        factors.append(Fraction(1, 100) if pred.percent else Fraction(100))
    for f in factors:
        value, ulp = pred.value * f, pred.ulp * f
        if value == gold.value:
            return True
        if (pred.integer and gold.integer) or gold.value == 0 or value == 0:
            continue
        gap = abs(value - gold.value)
        if gap <= rel_tol * abs(gold.value) and gap <= max(ulp, gold.ulp) * Fraction(1000001, 1000000):
            return True
    return False


# ---------------------------------------------------------- normalisation


def _drop_text_units(s: str) -> str:
    r"""\text{...}: a unit right after a number, or set apart at the end of an
    expression (`7.6 Z \text{ eV}`), is dropped; any other content kept."""
    pattern = re.compile(r"\\(?:" + _TEXT_CMDS + r")\s*\{([^{}]*)\}(\^\{?-?\d\}?)?")

    def repl(m: re.Match) -> str:
        before = s[:m.start()].rstrip()
        after_number = bool(re.search(r"[\d.}]$", before))
        spaced = before != s[:m.start()] or m.group(1)[:1].isspace()
        trailing = spaced and not s[m.end():].strip() and bool(re.search(r"[A-Za-z)]$", before))
        if (after_number or trailing) and _is_unit_tail(m.group(1)) and m.group(1).strip():
            return ""
        return m.group(1).strip() + (m.group(2) or "")

    return pattern.sub(repl, s)


def _fix_fracs(s: str) -> str:
    r"""`\frac12` -> `\frac{1}{2}`, `\frac1{b}` -> `\frac{1}{b}`, `\frac{a}2` -> `\frac{a}{2}`."""
    out = []
    i = 0
    while True:
        j = s.find("\\frac", i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j] + "\\frac")
        k = j + 5
        for _ in range(2):  # numerator, denominator
            if k >= len(s):
                break
            if s[k] == "{":
                end = match_brace(s, k)
                if end is None:
                    break
                out.append(s[k:end + 1])
                k = end + 1
            elif s[k] == "\\" or s[k].isspace():
                break
            else:
                out.append("{" + s[k] + "}")
                k += 1
        i = k


def normalize_latex(s: str | None) -> str:
    """Canonical string form of a LaTeX answer (Hendrycks `strip_string` in spirit).

    Row breaks `\\\\` survive (matrices); `\\text{}` is unwrapped except for a
    unit right after a number; a single-letter (or subscripted) variable, or such
    a function of one variable or its value at a number, on the left of a lone `=`
    is dropped (`x = 5` -> `5`, `x(t) = e^{t}` -> `e^{t}`: ODE answers name the
    function; `x(0) = 2` -> `2`)."""
    if s is None:
        return ""
    s = clean_answer(str(s).replace("\n", " "))
    s = s.replace("\\\\", _ROW_BREAK)
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r",?\s*\\text\{\s*(?:and|or|,)\s*\}\s*|,\s*(?:and|or)\s+"
               r"|(?<=[\w})\]])\s+(?:and|or)\s+(?=[-\w\\({\[])", ",", s)  # "2 \text{ and } 3", "2 or 3"
    s = _drop_text_units(s)
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x01", s)  # keep "\\cos t" apart from "\\cost"
    s = re.sub(r"\s+", "", s).replace("\x01", " ")
    s = _fix_fracs(s)
    s = re.sub(r"\\sqrt(?![A-Za-z])([^{\[\\])", r"\\sqrt{\1}", s)
    s = s.replace("{,}", ",").rstrip(".")
    s = re.sub(r"^(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\\in(?![A-Za-z])", "", s)  # x \in [2, 5)
    if s.count("=") == 1:
        left, right = s.split("=")
        # also "\Delta E", "t_{1/2}", "L_{\odot}", "\lambda_{\max}": a quantity's name
        # "x(0)", "f'(2)": a function's value at a number, as in "x(0) = 2" for a gold of 2
        if re.fullmatch(r"(?:\\[Dd]elta ?)?(?:[A-Za-z]|\\[A-Za-z]+)(?:_(?:\{[^{}]*\}|\w+))?"
                        r"(?:\((?:[A-Za-z]|\\[A-Za-z]+)\)|'{0,3}\(-?\d+(?:\.\d+)?\))?|\((?:[a-z],)+[a-z]\)",
                        left):  # also (x,y) = (1,2)
            s = right
    s = re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)  # .5 -> 0.5
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+/\d+", s):  # 3/4 -> \frac{3}{4}
        num, den = s.split("/")
        s = f"{'-' if num.startswith('-') else ''}\\frac{{{num.lstrip('-')}}}{{{den}}}"
    return _strip_outer_braces(s).replace(_ROW_BREAK, "\\\\")


# ------------------------------------------------------------- structures


def split_top_level(s: str) -> list[str]:
    """Split on commas not nested in (), [], {} (`\\{` `\\}` count as braces)."""
    parts, depth, cur = [], 0, []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            cur.append(s[i:i + 2])
            i += 2
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


_MATRIX_RE = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.S)


def _matrix_cells(s: str) -> list[list[str]] | None:
    m = _MATRIX_RE.fullmatch(s.strip())
    if not m:
        return None
    rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
    return [[c.strip() for c in r.split("&")] for r in rows]


def _pm_expand(s: str) -> list[str] | None:
    r"""`a \pm b` -> [a+b, a-b], wherever the one \pm stands (rac{1\pm\sqrt5}{2} too)."""
    if s.count("\\pm") + s.count("\\mp") != 1:
        return None
    sign = "\\pm" if "\\pm" in s else "\\mp"
    first, second = ("+", "-") if sign == "\\pm" else ("-", "+")
    return [s.replace(sign, first), s.replace(sign, second)]


def _shape(s: str) -> tuple[str, list[str]]:
    """('set'|'list'|'ordered'|'atom', items) of a normalised answer."""
    if s.startswith("\\{") and s.endswith("\\}"):
        return "set", [x for x in split_top_level(s[2:-2]) if x != ""]
    parts = split_top_level(s)
    if len(parts) > 1:
        return "list", parts
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _balanced_inner(s):
        inner = split_top_level(s[1:-1])
        if len(inner) > 1:
            return "ordered", inner
    return "atom", [s]


def _balanced_inner(s: str) -> bool:
    depth = 0
    for ch in s[1:-1]:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _unordered_equal(a: list[str], b: list[str], eq: Callable[[str, str], bool]) -> bool:
    if len(a) != len(b):
        return False
    left = list(b)
    for x in a:
        for k, y in enumerate(left):
            if eq(x, y):
                del left[k]
                break
        else:
            return False
    return True


# ------------------------------------------------------------------ sympy

_FUNCS = {
    "sqrt", "exp", "log", "sin", "cos", "tan", "sec", "csc", "cot", "asin", "acos",
    "atan", "sinh", "cosh", "tanh", "Abs", "binomial", "factorial",
}
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
    "vartheta", "iota", "kappa", "lamda", "mu", "nu", "xi", "rho", "sigma", "tau", "phi",
    "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma",
    "Phi", "Psi", "Omega", "hbar", "ell",
}
_BARE_ARG_FUNCS = ("sin", "cos", "tan", "sec", "csc", "cot", "sinh", "cosh", "tanh", "ln", "log", "exp",
                   "arcsin", "arccos", "arctan")
_LATEX_FUNCS = {
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "ln": "log",
    "infty": "oo", "cdot": "*", "times": "*", "div": "/",
}


def _replace_frac_sqrt(s: str) -> str | None:
    r"""Rewrite \frac{a}{b} -> ((a)/(b)), \binom{n}{k} -> binomial((n),(k)) (not the letters b i n o m,
    which made \binom{6}{2} equal \binom{4}{3}) and \sqrt[n]{a} -> ((a)**(1/(n))), recursively."""
    while True:
        m = re.search(r"\\frac|\\[dt]?binom(?![A-Za-z])|\\sqrt", s)
        if not m:
            return s
        k = m.end()
        if m.group(0) != "\\sqrt":
            if k >= len(s) or s[k] != "{":
                return None
            e1 = match_brace(s, k)
            if e1 is None or e1 + 1 >= len(s) or s[e1 + 1] != "{":
                return None
            e2 = match_brace(s, e1 + 1)
            if e2 is None:
                return None
            a, b = s[k + 1:e1], s[e1 + 2:e2]
            s = s[:m.start()] + (f"(({a})/({b}))" if m.group(0) == "\\frac" else f" binomial(({a}),({b})) ") + s[e2 + 1:]
        else:
            root = None
            if k < len(s) and s[k] == "[":
                close = s.find("]", k)
                if close < 0:
                    return None
                root, k = s[k + 1:close], close + 1
            if k >= len(s) or s[k] != "{":
                return None
            e = match_brace(s, k)
            if e is None:
                return None
            body = s[k + 1:e]
            new = f" (({body})**(1/({root}))) " if root else f" sqrt({body}) "
            s = s[:m.start()] + new + s[e + 1:]


def _group_denominator(c: str) -> str:
    """Each `/` in c takes the whole product written after it: t/RC -> t/(RC)."""
    out, i = [], 0
    while i < len(c):
        if c[i] != "/":
            out.append(c[i])
            i += 1
            continue
        j, depth = i + 1, 0
        while j < len(c):
            x = c[j]
            if x in "([{":
                depth += 1
            elif x in ")]}":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and (x in "+-*/=," or c.startswith(("\\cdot", "\\times", "\\div"), j)):
                break
            j += 1
        out.append(f"/({c[i + 1:j]})" if j > i + 1 else "/")
        i = j
    return "".join(out)


_EXPONENT_RE = re.compile(r"\^\s*(?=\{)|\\exp\s*(?=[{(])")


def _exponent_denominators(s: str) -> str:
    r"""`e^{-t/RC}` is e^{-t/(RC)}: in an exponent (also `\exp(...)`) the product after `/`
    is the whole denominator, as physics writes it; sympy's implicit product read (t/R)·C."""
    out, i = [], 0
    for m in _EXPONENT_RE.finditer(s):
        if m.start() < i:  # inside an exponent already handled
            continue
        k = m.end()
        end = match_brace(s, k) if s[k] == "{" else _closing_paren(s, k)
        if end is None:
            continue
        out.append(s[i:k + 1] + _group_denominator(_exponent_denominators(s[k + 1:end])))
        i = end
    return "".join(out) + s[i:]


def _closing_paren(s: str, k: int) -> int | None:
    depth = 0
    for j in range(k, len(s)):
        depth += (s[j] == "(") - (s[j] == ")")
        if depth == 0:
            return j
    return None


def latex_to_sympy_str(s: str) -> str | None:
    """Small LaTeX -> sympy-syntax conversion for already-normalised answers.

    Handles \\frac, \\sqrt, ^, \\pi, \\cdot/\\times, common functions, greek
    letters with or without subscripts (\\omega_{0} -> omega_0), and a letter
    applied to a simple argument (I(0), u(t) -> function calls, not products);
    returns None for anything it does not know, a relation too (x \\le 3 is no product l e x 3).
    """
    if _INEQUALITY_RE.search(s):
        return None
    s = re.sub(r"^np\.", "", s)
    s = _exponent_denominators(s)
    s = re.sub(r"\\(sin|cos|tan)\s*\^\s*\{?\s*-1\s*\}?", r"\\arc\1", s)  # \sin^{-1} is arcsin, not 1/sin
    # \cos 2t, \sin \theta, \ln \frac{1}{x}: the argument without brackets is the next factor
    s = re.sub(r"\\(" + "|".join(_BARE_ARG_FUNCS) + r")(?![A-Za-z])\s*(\\frac\s*\{[^{}]*\}\s*\{[^{}]*\})", r"\\\1{\2}", s)
    s = re.sub(r"\\(" + "|".join(_BARE_ARG_FUNCS) + r")(?![A-Za-z])\s*(?![\s({^\\])"
               r"(\d*\.?\d*(?:[A-Za-z](?:_\w+)?)?)", r"\\\1{\2}", s)
    s = re.sub(r"\\(" + "|".join(_BARE_ARG_FUNCS) + r")(?![A-Za-z])\s*(\\[A-Za-z]+(?:_\w+)?)", r"\\\1{\2}", s)
    s = re.sub(r"(?<![A-Za-z\\])(arcsin|arccos|arctan)(?![A-Za-z])", r"\\\1", s)
    s = _replace_frac_sqrt(s)
    if s is None:
        return None
    s = re.sub(r"_([A-Za-z0-9])(?=\w)", r"_\1 ", s)  # C_1e: a bare subscript is one character
    s = re.sub(r"_\{\s*(\w+)\s*\}", r"_\1 ", s)  # x_{0} -> x_0
    s = re.sub(r"_\{?\s*\\odot\s*\}?", "_odot ", s)  # L_{\odot}: one symbol, as L_0 is
    s = re.sub(r"\\lambda(?![A-Za-z])", r"\\lamda", s)  # a Greek letter like the others: \lambda_{red}
    for name, repl in _LATEX_FUNCS.items():
        s = re.sub(rf"\\{name}(?![A-Za-z])", f" {repl} ", s)
    s = re.sub(r"\\([A-Za-z]+)(_[A-Za-z0-9]+)?", r" \1\2 ", s)  # \omega_0 -> omega_0
    # 5! is 120: the factorial of a written integer (not 5!!, nor 2^3!, whose reading is unclear)
    s = re.sub(r"(?<![\w.^_])(\d{1,3})!(?![!=])", r" factorial(\1) ", s)
    s = s.replace("{", "(").replace("}", ")").replace("[", "(").replace("]", ")")
    s = s.replace("^", "**")
    # a lone letter applied to a simple argument is a function: I(0), x(t), u(t)
    s = re.sub(r"(?<![A-Za-z0-9_.])([A-Za-df-hj-z])\((\s*[A-Za-z0-9_.]+\s*)\)", r"fn\1(\2)", s)
    if "\\" in s or "__" in s or "=" in s or "lambda" in s:
        return None
    # a decimal is the exact fraction it writes (a float's 16 digits would not pass the probes)
    # (runs past 30 digits stay as they are: `to_sympy` refuses them)
    return re.sub(r"(?<![\w.])(?:\d{1,30}\.\d{0,30}|\.\d{1,30})(?![\d.]|[eE][+-]?\d)",
                  lambda m: "({0.numerator}/{0.denominator})".format(Fraction(m.group(0))), s)


_SAFE_EXPR_RE = re.compile(r"[\w\s+\-*/().,]*")


def _sympy_parse(expr: str, evaluate: bool) -> Any:
    """parse_expr (which evals!) on an allow-listed expression; None if refused.

    Only digits, letters, `+-*/().,` and whitespace are allowed; no `__`, no
    attribute access, and eval sees no builtins.  Single letters are symbols
    (e -> E, i -> I); `fnX` names are undefined functions X; unknown
    multi-letter names are refused unless purely alphabetic (split by sympy).
    """
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    if not _SAFE_EXPR_RE.fullmatch(expr) or "__" in expr or re.search(r"\.\s*[A-Za-z_]", expr):
        return None
    global_dict: dict[str, Any] = {"__builtins__": {}}
    for name in ("Integer", "Float", "Rational", "Symbol", "Function", "Mul", "Add", "Pow",
                 "pi", "oo", "E", *_FUNCS):
        global_dict[name] = getattr(sympy, name)
    # an unknown run of letters is a product that sympy would split into symbols, e and i too:
    # split it here, so that "Ae^{it}" has Euler's e and the imaginary i as "A e^{i t}" has
    expr = re.sub(r"(?<![A-Za-z_.])[A-Za-z]{2,}(?!\w)", lambda m: m.group(0) if m.group(0) in global_dict
                  or m.group(0) in _GREEK or re.fullmatch(r"fn[A-Za-z]", m.group(0)) else " ".join(m.group(0)), expr)
    local: dict[str, Any] = {}
    for name in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr)):
        base = name.split("_")[0]
        if name in global_dict:
            continue
        if re.fullmatch(r"fn[A-Za-z]", name):
            local[name] = sympy.Function(name[2:])
        elif name == "e":
            local[name] = sympy.E
        elif name == "i":
            local[name] = sympy.I
        elif len(base) == 1 or base in _GREEK:
            local[name] = sympy.Symbol(name)
        elif not re.fullmatch(r"[A-Za-z]+", name):
            return None
    for ch in "abcdfghjklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        local.setdefault(ch, sympy.Symbol(ch))
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    return parse_expr(expr, local_dict=local, global_dict=global_dict,
                      transformations=transformations, evaluate=evaluate)


def _too_big(expr: Any) -> bool:
    """True for towers like 9^{9^{9}}: evaluating them hangs in C code, where no
    timeout can interrupt, so they are checked on the unevaluated expression.
    The size of a complex exponent is its modulus (4e^{2\\pi i/3} is small)."""
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and node.exp.is_number:
            try:
                if abs(complex(node.exp)) > 1e4:
                    return True
            except (TypeError, ValueError, OverflowError):
                return True
    return False


def to_sympy(latex: str) -> Any:
    """A sympy expression for a normalised LaTeX answer, or None."""
    expr = latex_to_sympy_str(latex)
    if expr is None or len(expr) > 400 or re.search(r"\d{30,}", expr):
        return None
    try:
        raw = _sympy_parse(expr, evaluate=False)
        if raw is None or _too_big(raw):
            return None
        return _sympy_parse(expr, evaluate=True)
    except Exception:  # noqa: BLE001 - unparsable means "not provably equal"
        return None


def _numeric_value(expr: Any) -> complex | None:
    import sympy

    if expr is None or not getattr(expr, "is_number", False):
        return None
    try:
        return complex(sympy.N(expr, 30))
    except (TypeError, ValueError, OverflowError):
        return None


# Random-point checks evaluate at 30 digits and ask 20 to agree: with 1e-9, a term that a big
# constant dwarfs at the point vanished, so 10^{12} + x matched 10^{12} + 2x.  Decimals parse
# as exact fractions (`latex_to_sympy_str`), so 0.007 and 7 \times 10^{-3} still agree.
_PROBE_DPS, _PROBE_TOL = 30, 1e-20


def _at(expr: Any, point: dict) -> Any:
    """expr's value at point (30 digits), or None when it is not a finite number there."""
    value = expr.evalf(_PROBE_DPS, subs=point)
    size = float(abs(value)) if value.is_number else math.inf
    return value if math.isfinite(size) else None


def _close(va: Any, vb: Any) -> bool:
    return float(abs(va - vb)) <= _PROBE_TOL * max(float(abs(va)), float(abs(vb)), 1e-30)


def _probe_equal(ea: Any, eb: Any) -> bool | None:
    """Evaluate both at random points of their free symbols: True/False when clear."""
    import sympy
    from sympy.core.function import AppliedUndef

    symbols = sorted(ea.free_symbols | eb.free_symbols, key=str)
    if not symbols or ea.atoms(AppliedUndef) or eb.atoms(AppliedUndef):
        return None
    rng = random.Random(1234)
    for _ in range(4):
        point = {x: sympy.Float(rng.uniform(0.3, 1.7), _PROBE_DPS) for x in symbols}
        try:
            va, vb = _at(ea, point), _at(eb, point)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            return None
        if va is None or vb is None:
            return None
        if not _close(va, vb):
            return False
    return True


def _sympy_equal(a: str, b: str) -> bool | None:
    """True/False if our sympy path decides, None if it cannot parse a side."""
    import sympy

    ea, eb = to_sympy(a), to_sympy(b)
    if ea is None or eb is None:
        return None
    try:
        va, vb = _numeric_value(ea), _numeric_value(eb)
        if va is not None and vb is not None:
            if not (math.isfinite(abs(va)) and math.isfinite(abs(vb))):
                return ea == eb  # oo, -oo, zoo: only themselves
            return va == vb or abs(va - vb) <= 1e-12 * max(abs(va), abs(vb))
        diff = ea - eb
        if diff == 0:
            return True
        probed = _probe_equal(ea, eb)
        if probed is None:
            probed = bool(sympy.simplify(diff) == 0)
        return probed or any(_probe_equal(ea.xreplace(r), eb) for r in _constant_renamings(ea, eb))
    except Exception:  # noqa: BLE001
        return False


# Arbitrary constants: the gold's are C, c, C_1, ...; a reply may name them A, B, D, K too.
_GOLD_CONSTANT_RE = re.compile(r"[Cc](?:_\d+)?")
_PRED_CONSTANT_RE = re.compile(r"(?:[A-DK]|c)(?:_\d+)?")


def _constant_renamings(ea: Any, eb: Any) -> list[dict]:
    """The ways to rename the reply's arbitrary constants to the gold's, which are only names:
    c e^{-2t} is C e^{-2t}, and A \\sin 2t + B \\cos 2t is C_1 \\sin 2t + C_2 \\cos 2t.  Only when the
    gold also has a variable (c alone, the speed of light in c/\\sqrt{2}, is no constant), the
    gold's constants enter it linearly, as a general solution's do, and each reply symbol that
    the gold lacks is named like a constant."""
    gold = sorted((x for x in eb.free_symbols if _GOLD_CONSTANT_RE.fullmatch(str(x))), key=str)
    others = eb.free_symbols - set(gold)
    pred = sorted(ea.free_symbols - others, key=str)
    if (not gold or not others or len(gold) > 4 or len(pred) != len(gold) or set(pred) == set(gold)
            or not all(_PRED_CONSTANT_RE.fullmatch(str(x)) for x in pred)
            or any(eb.diff(x, 2) != 0 for x in gold)):  # C in 1/(LCs^2 + RCs + 1) is a capacitance
        return []
    return [dict(zip(pred, names)) for names in itertools.permutations(gold)]


# ------------------------------------------------------------ math-verify


def _mv_text(s: str) -> str:
    """math-verify input: e-notation written out (it reads 4.5e33 as 4.5*e*33)."""
    s = re.sub(r"(\d(?:\.\d*)?)\s*[eE]\s*([+-]?\d+)(?![\d.])", r"\1\\times 10^{\2}", s)
    return "$" + s + "$"


def math_verify_equal(pred: str, gold: str, seconds: float = MATH_TIMEOUT) -> bool:
    """HF math-verify on two answer strings (gold first: its checks are not symmetric), within
    `seconds` in all: our timer bounds the whole, its own are off (see the module docstring)."""
    import math_verify.grader
    import math_verify.parser
    from math_verify import parse, verify

    for module in (math_verify.grader, math_verify.parser):  # its "timeout is disabled" warning: ours is on
        module.TIMEOUT_WARNING_SHOWN = True

    def run() -> bool:
        g = parse(_mv_text(gold), parsing_timeout=None)
        p = parse(_mv_text(pred), parsing_timeout=None)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=None))

    try:
        return bool(call_with_timeout(run, seconds)) if seconds > 0 else False
    except Exception:  # noqa: BLE001 - a math-verify failure is "not shown equal"
        return False


# ------------------------------------------------------------------ is_equiv


def is_equiv(a: str | None, b: str | None, timeout: float = MATH_TIMEOUT, rel_tol: float = REL_TOL) -> bool:
    """Is answer `a` (prediction) the same as `b` (gold)?  See the module docstring."""
    if a is None or b is None:
        return False
    na, nb = normalize_latex(a), normalize_latex(b)
    if not na or not nb:
        return False
    if na == nb:  # normalisation drops a \text{} unit: 1.6 \text{ m} and 1.6 \text{ cm} are both "1.6"
        return not _units_differ(a, b, na, nb)
    if _WORDS_RE.fullmatch(na) and _WORDS_RE.fullmatch(nb):  # \text{Monday} vs monday
        return na.lower() == nb.lower()
    if _TEXT_ANSWER_RE.fullmatch(clean_answer(b)) and _SHORT_REPLY_WORDS_RE.fullmatch(na) and _SHORT_WORDS_RE.fullmatch(nb) \
            and na.lower() == nb.lower():  # Odd vs \text{odd}
        return True
    return _equiv(a, b, na, nb, _Deadline(timeout), rel_tol, depth=0)


# A gold ending in one bare lower-case letter after its number writes a variable, not a unit:
# "\frac{37}{4} m" (k in terms of the mass m) is not 9.25 metres, so 37/4 alone is wrong.
# (Units in a gold come wrapped, "5 \text{ m}", or upper-case: "300 K" keeps its unit.)
_LETTER_TAIL_RE = re.compile(r"[\d}]\s*[a-z]\s*$")
_WORDS_RE = re.compile(r"(?=.*[A-Za-z]{4})[A-Za-z]+(?: [A-Za-z]+)*")  # words, not products like xy
# Shorter words (yes, no, odd) only where the gold writes them as text, each word in lower case or
# capitalised, of two letters or more: A is not a, nor mA MA, nor CO Co (carbon monoxide, cobalt).
_TEXT_ANSWER_RE = re.compile(r"\\(?:text|textrm|textnormal|textbf|textit|mbox)\s*\{\s*[A-Za-z ]+\}")
_SHORT_WORDS_RE = re.compile(r"[A-Za-z][a-z]+(?: [A-Za-z][a-z]+)*")
# The reply's word may also be in capitals from three letters (YES for \text{yes}): two capitals may be a
# symbol (CO, NO: carbon and nitric oxide, not cobalt, nobelium or the word no); an element's has at most
# two letters, and a formula in capitals (HCN) is no word that a gold writes in lower case.
_SHORT_REPLY_WORDS_RE = re.compile(r"(?:[A-Za-z][a-z]+|[A-Z]{3,})(?: (?:[A-Za-z][a-z]+|[A-Z]{3,}))*")


def _stated_quantity(s: str, ns: str) -> Quantity | None:
    """The number an answer states, also after a name normalisation dropped: "\\Delta E = 2.88
    \\times 10^{-19} J", and "L = 4.5 \\times 10^{33} \\text{erg} \\cdot \\text{s}^{-1}", whose
    normalised form lost the unit's words but kept its \\cdot."""
    if "=" not in s:
        return parse_quantity(s)
    return parse_quantity(s) or parse_quantity(ns) or (
        parse_quantity(s.rsplit("=", 1)[1]) if "=" not in ns else None)


def _units_differ(a: str, b: str, na: str, nb: str) -> bool:
    """Both sides write a unit we can place, and no reading of one is a reading of the other? A side
    that states no number (36\\pi \\text{ cm}^3) has the unit it ends with: normalisation dropped it, and
    36\\pi \\text{ m} was 36\\pi \\text{ cm}."""
    ra, rb = _unit_readings(a, na), _unit_readings(b, nb)
    return bool(ra and rb) and not ra & rb


_TEXT_UNIT_START_RE = re.compile(r"\\(?:" + _TEXT_CMDS + r")\s*\{")


def _unit_readings(s: str, ns: str) -> set[tuple[tuple[str, int], ...]]:
    """The readings of the unit an answer writes (empty: none we can place): a stated number's, else
    what follows the answer's first \\text{} / \\mathrm{}, where all of it is a unit."""
    q = _stated_quantity(s, ns)
    if q is not None:
        return {u for u in (q.unit, q.other_unit) if u}
    s = clean_answer(s)
    m = _TEXT_UNIT_START_RE.search(s)
    tokens = _unit_tokens(s[m.start():], _wrapped_words(s)) if m else None
    return {unit_key(tokens)} - {()} if tokens else set()


_INEQUALITY_RE = re.compile(r"[<>]|\\(?:le|ge|leq|geq|neq|ne|lt|gt|leqslant|geqslant)(?![A-Za-z])")

# An inequality in one variable against an interval: compared as its solution set in interval
# notation (`-1 \le x \le 4` is [-1,4]), whatever the variable's name, as `x \in [-1,4]` is.
_RELATION_SPLIT_RE = re.compile(r"(<=|>=|<|>|\\(?:leqslant|geqslant|leq|geq|le|ge|lt|gt|neq|ne)(?![A-Za-z]))")
_RELATION_KIND = {"<": "<", "\\lt": "<", "<=": "<=", "\\le": "<=", "\\leq": "<=", "\\leqslant": "<=",
                  ">": ">", "\\gt": ">", ">=": ">=", "\\ge": ">=", "\\geq": ">=", "\\geqslant": ">=",
                  "\\ne": "!=", "\\neq": "!="}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "!=": "!="}
# the variable bounded: one letter (not e, i) or a Greek one, optionally subscripted
_BOUND_VAR_RE = re.compile(r"(?:[A-DF-HJ-Za-df-hj-z]|\\(?:" + "|".join(sorted(_GREEK)) + r"))(?:_(?:\{\w+\}|\w))?")
_OR_RE = re.compile(r"\\(?:" + _TEXT_CMDS + r")\s*\{\s*or\s*\}|\\(?:lor|vee)(?![A-Za-z])|(?<![A-Za-z\\])or(?![A-Za-z])")


def _inequality_intervals(s: str) -> str | None:
    """The solution set of an inequality in one variable in interval notation: `-1 \\le x \\le 4` ->
    `[-1,4]`, `x < -1 \\text{ or } x > 2` -> `(-\\infty,-1)\\cup(2,\\infty)`, `x \\ne 3` -> both sides of 3;
    None for anything else: two variables, `2x + 1 < 5` (the question, not its solution), `x > 0, x < 1`
    (a comma may be "and" or "or")."""
    if not _INEQUALITY_RE.search(s):
        return None
    pieces, names = [], set()
    for part in _OR_RE.split(clean_answer(s)):
        n = normalize_latex(part)
        tokens = [t.strip() for t in _RELATION_SPLIT_RE.split(n)]
        if len(tokens) not in (3, 5) or len(split_top_level(n)) != 1:
            return None
        bounds: dict[str, tuple[str, bool]] = {}  # "lower" / "upper": (bound, closed)
        for left, rel, right in zip(tokens[0::2], tokens[1::2], tokens[2::2]):
            left_var, right_var = bool(_BOUND_VAR_RE.fullmatch(left)), bool(_BOUND_VAR_RE.fullmatch(right))
            if left_var == right_var or not left or not right:
                return None
            var, bound = (left, right) if left_var else (right, left)
            kind = _RELATION_KIND[rel] if left_var else _FLIPPED[_RELATION_KIND[rel]]
            names.add(var)
            side = "upper" if kind in ("<", "<=") else "lower" if kind in (">", ">=") else None
            if side is None:  # x \ne 3: everything but 3, alone only
                if len(tokens) != 3:
                    return None
                pieces += [f"(-\\infty,{bound})", f"({bound},\\infty)"]
            elif side in bounds:
                return None
            else:
                bounds[side] = (bound, kind.endswith("="))
        if bounds:
            lower, upper = bounds.get("lower", ("-\\infty", False)), bounds.get("upper", ("\\infty", False))
            pieces.append(f"{'[' if lower[1] else '('}{lower[0]},{upper[0]}{']' if upper[1] else ')'}")
    return "\\cup".join(pieces) if len(names) == 1 else None


def _are_intervals(ns: str) -> bool:
    """A normalised answer that is an interval, or a union of them (`(-\\infty,-1)\\cup(2,\\infty)`)?"""
    return not _INEQUALITY_RE.search(ns) and all(
        _shape(x)[0] == "ordered" and len(_shape(x)[1]) == 2 for x in ns.split("\\cup"))


def _equiv(a: str, b: str, na: str, nb: str, deadline: _Deadline, rel_tol: float, depth: int) -> bool:
    # "\Delta E = 2.88 \times 10^{-19} J": the number its normalisation kept
    qa, qb = _stated_quantity(a, na), _stated_quantity(b, nb)
    if qb is not None and _LETTER_TAIL_RE.search(clean_answer(b)):  # gold "\frac{37}{4} m": a variable
        qb = None
        qa = None if qa is not None and _LETTER_TAIL_RE.search(clean_answer(a)) else qa
    if qa is not None and qb is not None:
        return quantities_equal(qa, qb, rel_tol)

    def sub(x: str, y: str) -> bool:
        if depth > 4:
            return False
        nx, ny = normalize_latex(x), normalize_latex(y)
        if not nx or not ny:
            return False
        return not _units_differ(x, y, nx, ny) if nx == ny else _equiv(x, y, nx, ny, deadline, rel_tol, depth + 1)

    if "=" not in nb and na.count("=") >= 2 and len(split_top_level(na)) == 1 and not _INEQUALITY_RE.search(na):
        return sub(clean_answer(a).rsplit("=", 1)[1], b)  # "s = \alpha f = 1.6": a chain states its last side

    ma, mb = _matrix_cells(na), _matrix_cells(nb)
    if ma is not None or mb is not None:
        if ma is None or mb is None or [len(r) for r in ma] != [len(r) for r in mb]:
            return _mv_fallback(a, b, deadline) if (ma is None) != (mb is None) else False
        return all(sub(x, y) for ra, rb in zip(ma, mb) for x, y in zip(ra, rb))
    ia, ib = _inequality_intervals(a), _inequality_intervals(b)
    if ia is not None and ib is None and _are_intervals(nb):  # x > 3 against (3, \infty)
        return sub(ia, b)
    if ib is not None and ia is None and _are_intervals(na):  # [-1, 4] against -1 \le x \le 4
        return sub(a, ib)
    pa, pb = _pm_expand(na), _pm_expand(nb)
    if pa or pb:
        la = pa or _shape(na)[1]
        lb = pb or _shape(nb)[1]
        return _unordered_equal(la, lb, sub)
    (kind_a, items_a), (kind_b, items_b) = _shape(na), _shape(nb)
    if kind_a != "atom" or kind_b != "atom":
        if {kind_a, kind_b} <= {"set", "list"}:
            return _unordered_equal(items_a, items_b, sub)
        if kind_a == kind_b == "ordered":
            return (na[0], na[-1]) == (nb[0], nb[-1]) and len(items_a) == len(items_b) and all(
                sub(x, y) for x, y in zip(items_a, items_b))
        return False
    if "\\cup" in na or "\\cup" in nb:
        return _mv_fallback(a, b, deadline)
    ca, cb = clean_answer(a), clean_answer(b)
    if ca.count("=") == 1 and cb.count("=") == 1 and (na.count("=") == 1 or nb.count("=") == 1):
        # two equations, compared as written: normalisation dropped the named left side of
        # "f = m\dot{v} + bv" but not of "m\frac{dv}{dt} + bv = f"
        return _equations_equal(ca.split("="), cb.split("="), sub, deadline)
    if na.count("=") == 1 and "=" not in nb and _NAME_RE.fullmatch(na.split("=")[0]):
        return sub(na.split("=")[1], b)  # "MRS = \frac{2C}{3S}" for a gold of just the value
    if na.count("=") == 1 and "=" not in nb and deadline.call(
            lambda: _numeric_value(to_sympy(na.split("=")[0])) is not None):
        return sub(clean_answer(a).rsplit("=", 1)[1], b)  # "2 \times 0.8 = 1.6": a computation, then its value
    if na.count("=") != nb.count("="):
        return False
    if qa is not None or qb is not None:  # a number against a closed form
        if _units_differ(a, b, na, nb):  # 113.1 \text{ cm}^2 is not 36\pi \text{ cm}^3
            return False
        q, other = (qa, nb) if qa is not None else (qb, na)
        import sympy  # noqa: F401 - first import is slow; keep it outside the timeout

        expr, value = deadline.call(lambda: (e := to_sympy(other), _numeric_value(e))) or (None, None)
        if value is None or abs(value.imag) > 1e-12 * max(abs(value), 1e-300):
            return False
        try:
            # a rational closed form is its exact value (\frac{-11}{5}: its float came back as
            # -2199999999999998/999999999999999); else a simple fraction back from its float (1/3),
            # but not below 1e-6: limit_denominator would round 2\pi \times 10^{-20} to 0
            exact = Quantity(Fraction(int(expr.p), int(expr.q)) if expr.is_Rational and math.isfinite(value.real)
                             else Fraction(value.real).limit_denominator(10**15) if 1e-6 <= abs(value.real) < 1e15
                             else Fraction(value.real), Fraction(0), False)
        except (OverflowError, ValueError):
            return False
        pred, gold = (q, exact) if qa is not None else (exact, q)
        return quantities_equal(pred, gold, rel_tol)
    import sympy  # noqa: F401,F811

    verdict = deadline.call(lambda: _sympy_equal(na, nb))
    if verdict is not None:
        return bool(verdict)
    return _mv_fallback(a, b, deadline)


# the name of what an answer states, on the left of its "=": MRS, y^s(p), \theta', \langle E \rangle
_NAME_RE = re.compile(r"(?:[A-Za-z' ]|\\[A-Za-z]+|_(?:\{[^{}]*\}|\w)|\^(?:\{[A-Za-z]*\}|[A-Za-z])|\([A-Za-z, ]*\))+")
_DERIV_NAME = r"(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{[^{}]*\}|_\w)?"
# \frac{dx}{dt}, \frac{d^{2} v_{o}}{d t^{2}}, \dot{x}, \ddot x, x', x'' (after clean_answer)
_DERIVATIVE_RE = re.compile(
    r"\\frac\{\s*d\s*(?:\^\s*\{?\s*(?P<n>[23])\s*\}?)?\s*(?P<f>" + _DERIV_NAME + r")\s*\}"
    r"\s*\{\s*d\s*[a-z]\s*(?(n)\^\s*\{?\s*(?P=n)\s*\}?)\s*\}"  # dt^{2} under d^{2} only: d^{2}v/dt^{3} is no derivative
    r"|\\(?P<dots>d?dot)\s*(?:\{\s*(?P<g>" + _DERIV_NAME + r")\s*\}(?P<gsub>_\{[^{}]*\}|_\w)?|(?P<h>" + _DERIV_NAME + r"))"
    r"|(?P<k>" + _DERIV_NAME + r")(?P<primes>'{1,3})")


def _derivatives_as_symbols(side: str, names: dict[str, str]) -> str:
    """`\\dot{x}`, `x'`, `\\frac{dx}{dt}` -> one placeholder symbol per (function, order), shared
    through `names` by both equations; `x(t)` -> `x` (the function of the independent variable)."""
    def repl(m: re.Match) -> str:
        f = m.group("f") or (m.group("g") or "") + (m.group("gsub") or "") or m.group("h") or m.group("k")
        order = int(m.group("n") or 1) if m.group("f") else (
            len(m.group("dots")) - 2 if m.group("dots") else len(m.group("primes")))
        key = re.sub(r"[{}\s]", "", f) + f"|{order}"
        return names.setdefault(key, f" \\Xi_{{{len(names) + 1}}} ")

    side = _DERIVATIVE_RE.sub(repl, side)
    return re.sub(r"(" + _DERIV_NAME + r")\s*\(\s*t\s*\)", lambda m: m.group(0)
                  if m.group(1).lstrip("\\") in _BARE_ARG_FUNCS else m.group(1), side)  # \sin(t) stays


def _equations_equal(ea: list[str], eb: list[str], sub: Callable[[str, str], bool], deadline: _Deadline) -> bool:
    """Same equation?  Side by side (either orientation), else the same up to moving terms
    across and, for a differential equation, a factor free of its unknowns: y' = r x - r y is
    y' + r y - r x = 0, and LC v_o'' + v_o = v_i is v_o'' + v_o/(LC) = v_i/(LC)."""
    (la, ra), (lb, rb) = ea, eb
    if (sub(la, lb) and sub(ra, rb)) or (sub(la, rb) and sub(ra, lb)):
        return True
    import sympy

    names: dict[str, str] = {}
    da, db = (normalize_latex(f"({_derivatives_as_symbols(l, names)})-({_derivatives_as_symbols(r, names)})")
              for l, r in (ea, eb))

    def run() -> bool:
        xa, xb = to_sympy(da), to_sympy(db)
        if xa is None or xb is None:
            return False
        if _probe_equal(xa, xb) or _probe_equal(xa, -xb):  # the same terms, moved across
            return True
        unknowns = sorted({x for x in xa.free_symbols | xb.free_symbols if str(x).startswith("Xi_")
                    or any(str(x) == key.split("|")[0].lstrip("\\").replace("lambda", "lamda") for key in names)}, key=str)
        if not unknowns:
            return False
        # a differential equation times a factor free of its unknowns (LC, m): the ratio stays
        # put when only the unknowns (the function and its derivatives) move
        symbols = sorted(xa.free_symbols | xb.free_symbols, key=str)
        rng = random.Random(1234)
        for _ in range(3):
            point = {x: sympy.Float(rng.uniform(0.3, 1.7), _PROBE_DPS) for x in symbols}
            moved = {**point, **{u: sympy.Float(rng.uniform(0.3, 1.7), _PROBE_DPS) for u in unknowns}}
            try:
                values = [_at(x, p) for p in (point, moved) for x in (xa, xb)]
                if None in values or 0 in (values[1], values[3]):
                    return False
                r1, r2 = (sympy.N(values[0] / values[1], _PROBE_DPS), sympy.N(values[2] / values[3], _PROBE_DPS))
            except (TypeError, ValueError, OverflowError, ZeroDivisionError):
                return False
            if r1 == 0 or _at(r1, {}) is None or not _close(r1, r2):
                return False
        return True

    return bool(deadline.call(run))


def _mv_fallback(a: str, b: str, deadline: _Deadline) -> bool:
    try:
        import math_verify  # noqa: F401 - first import is slow; keep it outside the timeout
    except ImportError:
        return False
    return math_verify_equal(clean_answer(a), clean_answer(b), deadline.left())
