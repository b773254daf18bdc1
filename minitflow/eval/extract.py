"""Strict answer extraction: the answer a response commits to, per benchmark.

Shared rules:
* A thinking model's reply is read after its last `</think>` first; the
  thoughts are searched only when the reply states nothing.  A reply cut off
  inside `<think>` (no `</think>`) has no final answer unless it boxed one.
* An explicit final answer (`\\boxed{}`, `#### x`, "the answer is x",
  "Final Answer: ...") beats any later mention: check sentences after the
  answer do not change it.  Of several explicit answers the last one counts;
  a correction after one ("Wait, actually it's 18.") is one (GSM8K, MMLU).
* A reply that states an answer the extractor cannot read (an MMLU text that
  is no option) has none: its thoughts are not searched instead.
* A hedge ("18 or 20", "A or C", "C (or possibly D)", "18-20", two different
  boxes side by side) states neither answer; so does "1.080" (1080 or 1.08?).
"""

from __future__ import annotations

import ast
import builtins
import functools
import re
from bisect import bisect_left, bisect_right
from fractions import Fraction
from typing import Sequence

from .math_equiv import EN_DASH_SIGN_RE, closing_braces, parse_quantity

THINK_END = "</think>"

# ---------------------------------------------------------------- helpers


def answer_regions(text: str) -> list[str]:
    """Where to look, in order: the reply after the last `</think>`, then everything."""
    k = text.rfind(THINK_END)
    if k < 0:
        return [text]
    return [text[k + len(THINK_END):], text]


def unfinished_thought(text: str) -> bool:
    """True for a generation cut off while still thinking."""
    return "<think>" in text and THINK_END not in text


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def boxed_spans(text: str | None) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5`."""
    if not text:
        return []
    out = []
    pairs = None
    for m in _BOX_RE.finditer(text):
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            if pairs is None:
                pairs = closing_braces(text)
            end = pairs.get(j)
            if end is not None:
                out.append((m.start(), end + 1, text[j + 1:end].strip()))
        elif j > m.end():  # "\boxed 5"
            token = re.match(r"[^\s$]+", text[j:])
            if token:
                out.append((m.start(), j + token.end(), token.group(0)))
    return out


def cut_open_box(text: str) -> str:
    """The text before a last `\\boxed{` that never closes (a generation cut off
    inside its answer), else the whole text."""
    last = None
    for m in _BOX_RE.finditer(text):
        last = m
    if last is None:
        return text
    j = last.end()
    while j < len(text) and text[j] == " ":
        j += 1
    if j < len(text) and text[j] == "{" and j not in closing_braces(text):
        return text[:last.start()]
    return text


def extract_boxed(text: str | None) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}` (nested braces ok).

    Also accepts the `\\boxed 5` form.  A truncated (unbalanced) last box is
    skipped in favour of the previous complete one.
    """
    spans = boxed_spans(text)
    return spans[-1][2] if spans else None


def _math_after(text: str, pos: int, end: int | None = None) -> tuple[str, int] | None:
    """The answer written at `pos`: a `$...$` / `\\(...\\)` / `\\[...\\]` group
    (escaped `\\$` inside is fine), else the rest of the sentence (read up to `end`)."""
    rest = text[pos:end]
    lead = re.match(r"[\s:*]*", rest).end()
    rest, pos = rest[lead:], pos + lead
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(left):
            k = len(left)
            while True:
                k = rest.find(right, k)
                if k < 0:
                    break
                if right == "$" and rest[k - 1] == "\\":
                    k += 1
                    continue
                return rest[len(left):k].strip(), pos + k + len(right)
            break
    # "!" ends the sentence where the line or a new sentence follows ("The answer is 120!"), not in 5! = 120
    m = re.match(r"(.+?)(?:\.(?:\s|$)|!(?=[^\S\n]*(?:\n|$)|\s+[A-Z])|\n|$)", rest)
    if not m:
        return None
    body = m.group(1).strip().strip("*").strip()
    return (body, pos + m.end()) if body else None


# -------------------------------------------------------------------- GSM8K

_NUMBER_RE = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?"
    r"|(?<![\w.])-?\.\d+"
)
_SMALL_WORDS = {w: k for k, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS_WORDS = {w: 10 * k for k, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALE_WORDS = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
_NUMBER_WORD = "|".join(sorted([*_SMALL_WORDS, *_TENS_WORDS, "minus", "negative"], key=len, reverse=True))
_NUMBER_WORDS_RE = re.compile(rf"(?:(?:{_NUMBER_WORD}|hundred|thousand|million|billion|and)\b[\s-]*)+", re.I)
# "the answer is probably 18", "Answer: most likely C": one answer, stated with a hedging adverb (a
# second answer after it, "C or possibly D", is the hedge that states none)
_LIKELY = r"(?:(?:(?:most|very)\s+)?(?:probably|likely)|clearly|definitely|certainly)\s+"
# a bare "answer" needs its verb: "she has to answer 3 questions" states no answer
# (no two whitespace runs side by side: "The answer is" and 250 spaces took minutes, each split of the run tried)
_GSM_NUMBER_AHEAD = (r"[:*\s]*(?:(?:\\\(|\$)\s*)?(?:(?:\\\$|\$|\\text\s*\{\s*\\\$\s*\}|USD|€|£)\s*)?"
                     rf"(?=[-\d.]|(?:{_NUMBER_WORD})\b)")
_GSM_PHRASE_RE = re.compile(
    r"(?:final\s+answer\s*(?:is|:|=|(?:would|will|must|should)\s+be)?"
    r"|answer\s*\**\s*(?:is|:|=|(?:would|will|must|should)\s+be)"
    r"|\u7b54\u6848\s*(?:\u662f|\u4e3a|:|\uff1a)"  # Qwen's Chinese: 答案是 / 答案：
    # German, French, Spanish: "Die Antwort ist 18", "Antwort: 18", "La réponse finale est 18", "La respuesta es 18"
    r"|\bantwort\s*\**\s*(?:ist|lautet|:|=)"
    r"|\br[e\u00e9]ponse(?:\s+(?:finale|correcte))?\s*\**\s*(?:est|:|=)"
    r"|\brespuesta(?:\s+(?:final|correcta))?\s*\**\s*(?:es|:|=))" + rf"(?:\s*{_LIKELY})?" + _GSM_NUMBER_AHEAD, re.I)
# "Wait, actually it's 18.", "No, it should be 18": a correction restates the answer
# "The answer is 18 \u2014 no, 20.": a dash and "no" correct it too
_CORRECTION = (r"(?:\b(?:wait|no|oops|hmm|sorry)\b[,.!:]*\s*(?:actually\b,?\s*)?"
              r"(?:it['\u2019]?s|it\s+is|it\s+should\s+be|the\s+correct\s+one\s+is)\s+"
              r"|(?:\u2014|--)\s*no\b[,:]?\s*(?:actually\b,?\s*)?)")
_GSM_CORRECTION_RE = re.compile(_CORRECTION + _GSM_NUMBER_AHEAD, re.I)
# a thin space between digits: LaTeX's \, \! \; \: \ and ~, U+2009, U+202F, NBSP
_GROUP_SEP_RE = re.compile(r"(?<=\d)(?:\\[,;:! ]|~|[\u00a0\u2009\u202f])(?=\d)")


def _digit_groups_re(sep: str, first: str) -> re.Pattern:
    """A whole run of digit groups split by `sep`: a `first` group, then groups of exactly 3."""
    return re.compile(rf"(?<![\w.])(?<!\d{sep}){first}(?:{sep}\d{{3}})+(?!\d|{sep}\d)")


# a thin space between digits only ever groups them, so a first group may be long (1234\,567: one
# number, a separator missed); a plain space may part two numbers (2023 100: two)
_THIN_GROUPS_RE = _digit_groups_re("\u2009", r"\d+")
_SPACED_GROUPS_RE = _digit_groups_re("[ \u2009]", r"\d{1,3}")
# math mode, where LaTeX ignores spaces: $$..$$, \[..\], \(..\), and $..$ opening before a non-space
# and closing after one, not before a digit ("$5 and $6" is money); no span holds another
# opening delimiter, so each character is scanned about once
_MATH_SPAN_RE = re.compile(
    r"\$\$(?:[^$\\]|\\.)+?\$\$|\\\[(?:[^\\]|\\[^\[\]])+?\\\]|\\\((?:[^\\\n]|\\[^()\n])+?\\\)"
    r"|(?<![\\$])\$(?=[^\s$])(?:[^$\n\\]|\\.)+?(?<=\S)\$(?!\d)")


# "18 or 20", "18, or maybe 20", "18 (or possibly 20)", "18? Or 20": a hedge between two numbers states neither
# (and the answer lines' languages: "18 oder 20", "18 ou peut-être 20", "18 o 20")
# "18, but it could be 20", "18, but 20 is also possible" (_ALSO_POSSIBLE_RE after the second): a hedge too,
# and so are "18, or it could be 20" and "18, though 20 is also possible"
# (one whitespace run per gap between its marks: runs side by side, \s*,?\s*, tried each split of a run, and
# "18", 500 spaces, "20" took 100 s)
_HEDGE_GAP_RE = re.compile(r"\s*(?:(?:\.{1,3}|\u2026|\?)\s*)?(?:,\s*)?(?:\(\s*)?(?:or|oder|ou|o)\s+"
                           r"(?:(?:maybe|perhaps|possibly|vielleicht|peut-[e\u00ea]tre|quiz[a\u00e1]s?)\s+)?"
                           r"|\s*(?:,\s*)?(?:but|or)\s+(?:it|the\s+answer)\s+(?:could|might|may)\s+(?:also\s+)?be\s+", re.I)
_ALSO_POSSIBLE_RE = re.compile(r"\)?\**\s+(?:is|could\s+be|might\s+be|may\s+be)\s+(?:also\s+)?"
                               r"(?:possible|correct|right|plausible)\b", re.I)
# "between 18 and 20", "18 to 20", "18-20": a range, no one number
_RANGE_GAP_RE = re.compile(r"\s*(?:to|and|through|bis|und|\u00e0|et|a|y)\s+", re.I)  # "18 bis 20", "18 \u00e0 20"
# a clock time or ratio, "12:30", "4:3": no one number of it is the answer
_COLON_RUN_RE = re.compile(r"\d+(?::\d+)+")
# "\boxed{18} or \boxed{20}", "\boxed{18}, \boxed{20}", two boxes on two lines: between two boxes, a hedge
# (the first run of $ whole, `\$+(?!\$)`: split with the last it tried each cut; not `\$++`, which Python 3.10's
# re refuses, and the import failed there)
_BOX_HEDGE_RE = re.compile(r"\s*(?:\$+(?!\$)\s*)?(?:(?:(?:,\s*)?(?:or|and)\b|[,/]|\\text\s*\{\s*(?:or|and|,)\s*\})\s*)?"
                            r"(?:\$+\s*)?", re.I)


# after a number in words, the words that make it part of something else: "one half", "two more than ...",
# "one that fits both", "one way to see it"
_NOT_A_COUNT = {"of", "more", "less", "fewer", "times", "half", "halves", "third", "thirds", "quarter", "quarters",
                "fourth", "fourths", "fifth", "fifths", "percent", "or", "and", "to", "plus", "minus", "point",
                "that", "which", "where", "who", "whose", "when", "if", "than", "but", "the", "a", "an", "is", "are",
                "was", "were", "be", "in", "on", "at", "by", "with", "from", "way", "thing", "another", "other"}


def _words_value(phrase: str) -> int | None:
    """ "twenty-five" -> 25, "one hundred and five" -> 105, "fifteen hundred" -> 1500, "minus three" -> -3; None for anything
    that is not one number in words ("eighteen twenty" is two; "and" only after a hundred or a thousand)."""
    tokens = [t for t in re.split(r"[\s-]+", phrase.lower()) if t]
    sign = -1 if tokens and tokens[0] in ("minus", "negative") else 1
    tokens = tokens[sign < 0:]
    total, group, last = 0, 0, None  # last: "small", "tens", "hundred", "scale", "and"
    for t in tokens:
        if t in _SMALL_WORDS or t in _TENS_WORDS:
            v = _SMALL_WORDS.get(t, _TENS_WORDS.get(t))
            if last == "small" or last == "tens" and not 0 < v < 10 or group % 100 and last != "tens":
                return None
            group, last = group + v, "tens" if t in _TENS_WORDS else "small"
        elif t == "hundred":  # "five hundred", and "fifteen hundred" / "twenty-five hundred" before any thousand
            if last not in ("small", "tens") or not (0 < group < 10 or 10 < group < 100 and not total):
                return None
            group, last = group * 100, "hundred"
        elif t in _SCALE_WORDS:
            if not group or last in ("scale", "and") or total and total < _SCALE_WORDS[t] * 1000:
                return None
            total, group, last = total + group * _SCALE_WORDS[t], 0, "scale"
        elif t == "and" and last in ("hundred", "scale"):
            last = "and"
        else:
            return None
    if last in (None, "and"):
        return None
    return sign * (total + group)


def _number_in_words(text: str) -> str | None:
    """The number a stated answer writes in words, "eighteen" or "twenty-five dollars" (a few words
    of unit may follow, nothing else): "one half" and "two more than ten" are no number, and a lone
    "one" with words after it is the pronoun ("one you expected")."""
    text = re.sub(r"\\(?:text|mathrm|mbox|textbf)\s*\{([^{}]*)\}", r" \1 ", text)
    text = re.sub(r"[*$_]|\\\$", " ", text).strip()
    m = _NUMBER_WORDS_RE.match(text)
    if not m:
        return None
    rest = re.split(r"[,;(]", text[m.end():], maxsplit=1)[0].strip().rstrip(".!").split()
    value = _words_value(m.group(0))
    if value is None or len(rest) > 3 or any(not re.fullmatch(r"[a-z]+", w) or w in _NOT_A_COUNT for w in rest) \
            or rest and m.group(0).strip().lower() == "one" or m.group(0).rstrip().endswith("-"):  # "two-fold"
        return None
    return str(value)


def _same_value(a: str, b: str) -> bool:
    try:
        return Fraction(_clean_number(a)) == Fraction(_clean_number(b))
    except (ValueError, ZeroDivisionError):
        return False


# "1.080" is 1080 in German and 1.08 in English, where a third decimal 0 is rare: no telling which
_DOT_THOUSANDS_RE = re.compile(r"-?[1-9]\d{0,2}\.\d\d0")
# "1.080.000": dots that group digits (no decimal has two dots)
_DOT_GROUPS_RE = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{3}){2,}(?![\d.]?\d)")


# "18, not 20", "The answer is not 18.": a number right after "not" is what the answer is not
_NEGATED_RE = re.compile(r"\b(?:not|isn['\u2019]t)\s+(?:(?:\\\$|\$|USD|\u20ac|\u00a3)\s*)?$", re.I)
_SENTENCE_END_RE = re.compile(r"[.!?](?:\s|$)|\n")


def _pick_number(text: str, last: bool, stated: bool = True) -> str | None:
    """The first (or last) number of `text`, as a plain string; a clock time or ratio it is part
    of ("12:30"), a hedge it is part of ("18 or 20"), or "1.080" (1080 or 1.08?), as written: no
    number, so no answer.  In a stated answer (not `stated`: a reply's last number) so is a range
    ("18-20", "18 to 20"), a list ("18, 20") or two quantities ("3 hours and 30 minutes"); "between
    18 and 20" is a range anywhere (in a reply's last sentence "$5 and $6" is two amounts and
    "from 18 to 20" a change, whose last number is the answer). A reply's last number after "not"
    is what the answer is not: the number its sentence states before it is read ("it's 18, not
    20"), else none ("The answer is not 18.")."""
    found = list(_NUMBER_RE.finditer(text))
    if last and not stated:
        while found and _NEGATED_RE.search(text[max(found[-1].start() - 16, 0):found[-1].start()]):
            if len(found) < 2 or _SENTENCE_END_RE.search(text, found[-2].end(), found[-1].start()):
                return None
            found.pop()
    if not found:
        return None
    i = len(found) - 1 if last else 0
    m = found[i]
    if _DOT_THOUSANDS_RE.fullmatch(m.group(0)):
        return f"{m.group(0)} ({m.group(0).replace('.', '')} or {m.group(0).rstrip('0').rstrip('.')}?)"
    if text[m.end():m.end() + 1] == ":" and text[m.end() + 1:m.end() + 2].isdigit() \
            or m.start() >= 2 and text[m.start() - 1] == ":" and text[m.start() - 2].isdigit():
        at = m.start() + m.group(0).startswith("-")
        return next((r.group(0) for r in _COLON_RUN_RE.finditer(text) if r.start() <= at < r.end()), m.group(0))
    other = found[i - 1] if last and i > 0 else found[i + 1] if not last and i + 1 < len(found) else None
    if other is not None:
        a, b = (other, m) if last else (m, other)
        gap = text[a.end():b.start()]
        # "18-20", "18 to 20", and a list "18, 20" (or "18,5", a European 18.5): no one number
        ranged = stated and (_RANGE_GAP_RE.fullmatch(gap) or gap in ("-", "\u2013") or re.fullmatch(r"\s*,\s*", gap)) \
            or re.fullmatch(r"\s*and\s+", gap) and re.search(r"\bbetween\s*$", text[:a.start()], re.I)
        # "3 hours and 30 minutes", "30 hours and 30 minutes": two quantities, where an answer is stated
        two_units = stated and re.fullmatch(r"\s*[A-Za-z]+\s+and\s+", gap)
        hedge = _HEDGE_GAP_RE.fullmatch(gap) or re.fullmatch(r"\s*(?:,\s*)?(?:but|(?:al)?though)\s+", gap, re.I) \
            and _ALSO_POSSIBLE_RE.match(text, b.end())
        if two_units or (hedge or ranged) and not _same_value(a.group(0), b.group(0)):
            return text[a.start():b.end()]
    return _clean_number(m.group(0))


def _join_digit_groups(s: str, spaces: bool = False) -> str:
    """1\\,450\\,000 and 1~080 (with `spaces`, for a stated answer or math mode, also 1 080) -> one
    number, when each group after the first has 3 digits: 1 08 and 3 4 stay two numbers."""
    s = _GROUP_SEP_RE.sub("\u2009", s.replace("{,}", ","))
    if spaces:  # first: in 1 080\,000 the thin-space run alone would take 080\,000
        s = _SPACED_GROUPS_RE.sub(lambda m: re.sub("[ \u2009]", "", m.group(0)), s)
    return _THIN_GROUPS_RE.sub(lambda m: m.group(0).replace("\u2009", ""), s)


def _join_last_spaced_number(text: str) -> str:
    """`text` with its last number joined when it is a run of space-split digit groups
    ("1 080" -> "1080"); a hyphen after it ("2 100-page") or a number after it leaves it."""
    runs = list(_SPACED_GROUPS_RE.finditer(text))
    if not runs:
        return text
    run, tail = runs[-1], text[runs[-1].end():]
    if re.match(r"-\w", tail) or _NUMBER_RE.search(_latex_number_text(tail)):
        return text
    return text[:run.start()] + re.sub("[ \u2009]", "", run.group(0)) + tail


# a mixed number, "1\frac{1}{2}", "2 1/2", "2 and 1/2" (a proper fraction after a whole number): read as 1, 1/2
# or 11/2
_MIXED_RE = re.compile(r"(?<![\w.,/])(-?)(\d+)(?:\s*\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}"
                       r"|(?:[ ~]+|\s+and\s+)(\d+)\s*/\s*(\d+)(?![\d.,/]))")


def _improper(m: re.Match) -> str:
    """A mixed number as one improper fraction ("1 1/2" -> "3/2"), or as written when not proper."""
    whole, num, den = int(m.group(2)), int(m.group(3) or m.group(5)), int(m.group(4) or m.group(6))
    if not 0 < num < den:  # its whole number kept apart: 2\frac{3}{2} became 2(3)/(2), read as 23/2
        return m.group(0) if m.group(5) else f"{m.group(1)}{m.group(2)} {m.string[m.end(2):m.end()]}"
    return f"{m.group(1)}{whole * den + num}/{den}"


# "18 dollars and 50 cents", "$18 and 5 cents", "18 dollars, 50 cents" (not "3, 50 cent stamps")
_DOLLARS_CENTS_RE = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\s*dollars?\s*(?:and|,)|\s+and)\s*(\d{1,2})\s*cents?\b",
                               re.I)


_SCALED_RE = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(thousand|million|billion)\b", re.I)


def _scaled(m: re.Match) -> str:
    """ "1.5 million" -> "1500000"."""
    value = Fraction(m.group(1).replace(",", "") + (m.group(2) or "")) * _SCALE_WORDS[m.group(3).lower()]
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def _latex_number_text(s: str) -> str:
    """Strip LaTeX decoration around a number: \\frac{a}{b} -> a/b, units, $, %, digit groups."""
    s = _join_digit_groups(s.replace("\u2212", "-"))
    s = _DOT_GROUPS_RE.sub(lambda m: m.group(0).replace(".", ""), s)
    s = _MIXED_RE.sub(_improper, s)
    s = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\((-?[\d.,]+)\)/\((-?[\d.,]+)\)", r"\1/\2", s)
    s = re.sub(r"\\(?:text|mathrm|mbox|textbf)\s*\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"(?<=[A-Za-z])\s*\^\s*(?:\{\s*-?\d\s*\}|-?\d)(?!\.?\d)", " ", s)  # cm^2 is a unit, not 2
    s = re.sub(r"\\[,;:! ]|\\\$|\\%|[$%]", " ", s)
    s = _DOLLARS_CENTS_RE.sub(lambda m: f"{m.group(1)}.{int(m.group(2)):02d}", s)  # not 18
    s = re.sub(r"(?<![\d.,])(\d+)\s+and\s+(?:a|one)[\s-]half\b", r"\1.5", s, flags=re.I)  # "18 and a half": not 18
    s = _SCALED_RE.sub(_scaled, s)  # "1.5 million": not 1.5
    return re.sub(r"^\s*-\s+(?=\d)", "-", s)  # "- 5" at the start is a sign


def _clean_number(s: str) -> str:
    return s.replace(",", "").replace(" ", "")


def _sci_number(s: str) -> str | None:
    m = (re.search(r"(?<![\d.])(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*"
                   r"\{?\s*(-?\d+)\s*\}?", s)
         or re.search(r"(?<![\w.])(-?\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])", s))
    try:  # a digit run past int's 4,300-digit limit is no number
        if not m or abs(int(m.group(2))) > 30:
            return None
        value = Fraction(m.group(1).replace(",", "")) * Fraction(10) ** int(m.group(2))
    except ValueError:
        return None
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def _number_in(fragment: str, last: bool) -> str | None:
    fragment = _join_digit_groups(fragment, spaces=True)  # before 1\,080 \times 10^3 reads as 080 \times 10^3
    power = re.fullmatch(r"\s*(-?)\s*(\d{1,6})\s*\^\s*\{?\s*(\d{1,2})\s*\}?\s*", fragment)
    if power:  # "10^3" is 1000: its last number, 3, was the answer (correct for a gold of 3); -2^2 is -4
        return power.group(1) + str(int(power.group(2)) ** int(power.group(3)))
    sci = _sci_number(fragment)
    if sci is not None:
        return sci
    text = _latex_number_text(fragment)
    if "=" in text:  # "16 - 3 - 4 = 9": the result
        text = text.rsplit("=", 1)[1]
    got = _pick_number(text, last)
    return got if got is not None else _number_in_words(fragment)


def _gsm8k_explicit(text: str, boxes_only: bool = False) -> tuple[int, str] | None:
    """(position, answer) of the last explicit answer: box, `####`, "the answer is"
    (with `boxes_only`, a box)."""
    found: list[tuple[int, str]] = []
    spans = boxed_spans(text)
    for k, (start, _, content) in enumerate(spans):
        num = _number_in(content, last=True)
        found.append((start, num if num is not None else content))
        prev = found[-2][1] if k else None
        if k and _BOX_HEDGE_RE.fullmatch(text[spans[k - 1][1]:start]) and not _same_value(prev, found[-1][1]):
            found[-1] = (start, f"{prev} or {found[-1][1]}")  # "\boxed{18} or \boxed{20}": a hedge
    if boxes_only:
        return max(found, key=lambda f: f[0]) if found else None
    for m in re.finditer(r"####\s*([^\n]*)", text):
        num = _number_in(m.group(1), last=False)
        if num is not None:
            found.append((m.start(), num))
    # each answer line is read up to the next one (whose reading the rest is): "The answer is 18 or " a
    # thousand times on one line read the whole rest of the line at each, 40,000 characters in 23 s
    phrases = list(_GSM_PHRASE_RE.finditer(text))
    for k, m in enumerate(phrases):
        num = _number_stated_at(text, m.end(), phrases[k + 1].start() if k + 1 < len(phrases) else len(text))
        if num is not None and not _hypothetical(text, m):
            found.append((m.start(), num))
    if found:  # after an explicit answer, "Wait, actually it's 18." replaces it
        after = max(f[0] for f in found)
        fixes = list(_GSM_CORRECTION_RE.finditer(text, after + 1))
        for k, m in enumerate(fixes):
            num = _number_stated_at(text, m.end(), fixes[k + 1].start() if k + 1 < len(fixes) else len(text))
            if num is not None:
                found.append((m.start(), num))
    return max(found, key=lambda f: f[0]) if found else None


def _hypothetical(text: str, m: re.Match) -> bool:
    """True for "the answer would be" in a conditional sentence ("If she had 20 eggs, the answer
    would be 22."; "Otherwise the answer would be 20."): a remark, not the answer."""
    if not re.search(r"answer\W+would\b", m.group(0), re.I):  # not "If I had to pick, I would choose C."
        return False
    starts, cond_starts, cond_ends = _sentences(text)
    start = starts[bisect_right(starts, m.start()) - 1]
    k = bisect_left(cond_starts, start)  # the sentence's first conditional word, if any
    return k < len(cond_starts) and cond_ends[k] <= m.start()


_CONDITIONAL_RE = re.compile(r"\b(?:if|otherwise|unless|suppose|supposing|assuming|had)\b", re.I)


@functools.lru_cache(maxsize=4)
def _sentences(text: str) -> tuple[list[int], list[int], list[int]]:
    """Where `text`'s sentences start, and its conditional words start and end: found once for all of a
    reply's answer lines (each searched back to its sentence's start: "the answer would be 5 " over one
    40,000-character line took 2 s)."""
    spans = [m.span() for m in _CONDITIONAL_RE.finditer(text)]
    return ([0] + [m.end() for m in re.finditer(r"[.!?\n(]", text)],
            [a for a, _ in spans], [b for _, b in spans])


def _number_stated_at(text: str, pos: int, end: int) -> str | None:
    """The first number of the sentence starting at `pos` (and ending by `end`)."""
    stop = text.find("\n", pos, end)
    line = text[pos:end if stop < 0 else stop]
    # not at 1\;080, nor at "18? Or 20" (a hedge); "18。" ends a sentence too
    sentence = re.split(r"(?:\.(?=\s|$)|(?<!\\)[;?!\u3002])(?!\.*\s*\(?\s*(?i:or|oder|ou|o)\b)", line, maxsplit=1)[0]
    if _NUMBER_WORDS_RE.match(re.sub(r"^[\s:*$]+", "", sentence)):  # "one more than 17 ...": not 17
        return _number_in_words(sentence)
    return _number_in(sentence, last=False)


# a sum cut off after its operator ("9 * 2 ="); a "*" only spaced, as "*18*" closes italics
_CUT_MID_SUM_RE = re.compile(r"[\d)}]\s*(?:[=+/×÷-]|\s\*|\\times|\\cdot|\\div)\s*\$*\s*\Z")


# "2 dozen", "1.5 dozen", "two dozen": 24, 18, 24 things, unless the question counts in dozens.  Each
# "dozen" is found first and its number looked for just before it: a regex starting at every number word
# of "one one one ..." and running to its end was quadratic
_DOZEN_RE = re.compile(r"\\(?:text|mathrm|mbox|textbf)\s*\{\s*dozens?\b[^{}]*\}|\bdozens?\b", re.I)
_DOZEN_COUNT_RE = re.compile(rf"(?<![\w.,])(?:(\d{{1,3}}(?:,\d{{3}})+|\d+)(\.\d+)?"
                             rf"|((?:{_NUMBER_WORD})(?:[\s-]+(?:{_NUMBER_WORD}))*))(?:\s|\\[,;: ])*\Z", re.I)
_IN_DOZENS_RE = re.compile(r"\bhow\s+many\s+dozens?\b|\bin\s+dozens\b|\bnumber\s+of\s+dozens\b", re.I)


def _dozens(text: str, question: str | None) -> str:
    """`text` with each "N dozen" written as the number it is, 12 N ("She needs 2 dozen eggs" was
    2); where `question` asks how many dozens, as N, the count of dozens it answers."""
    in_dozens = bool(question and _IN_DOZENS_RE.search(question))
    out, done = [], 0
    for d in _DOZEN_RE.finditer(text):
        m = _DOZEN_COUNT_RE.search(text, max(done, d.start() - 80), d.start())
        if not m:
            continue
        if m.group(3):
            value = _words_value(m.group(3))
            if value is None:  # "eighteen twenty dozen": no one number
                continue
        else:
            value = Fraction(m.group(1).replace(",", "") + (m.group(2) or ""))
        if in_dozens:
            number = str(value) if m.group(3) else m.group(1) + (m.group(2) or "")
        else:
            value *= 12
            number = str(value.numerator) if value.denominator == 1 else str(float(value))
        out += [text[done:m.start()], number]
        done = d.end()
    return "".join(out) + text[done:]


def extract_gsm8k_answer(text: str | None, question: str | None = None) -> str | None:
    """Final numeric answer: the last explicit one (box, `####`, "answer is N"),
    else the last number of the reply.  A reply cut off inside its box has only
    the explicit answers before that box (`\\boxed{16` may have gone on to 160).
    "2 dozen" is 24, or 2 where `question` asks how many dozens.

    Returns the number as a plain string ("1234", "-3.5", "3/4"), the raw boxed
    content when the box holds no number, or None.
    """
    if not text:
        return None
    text = EN_DASH_SIGN_RE.sub("-", text.replace("\u2212", "-"))  # "–5": a minus, not 5
    text = _dozens(text, question)
    for region in answer_regions(text):
        stated = cut_open_box(region)
        # a thought cut off at "so the answer is 18" may have gone on to 180 (or changed its mind):
        # of an unfinished thought only a closed box counts, as the module's rules say
        explicit = _gsm8k_explicit(stated, boxes_only=unfinished_thought(region))
        if explicit is not None:
            return explicit[1]
        # a reply ending "9 * 2 =" was cut off mid-sum: its last number is an operand, not the result
        if unfinished_thought(region) or stated != region or _CUT_MID_SUM_RE.search(region):
            return None
        # no stated answer: a plain space groups digits in math mode ($1 080$), and in the reply's last
        # number ("She pays 1 080 in all." was 080), unless a word joins it on (2 100-page books)
        region = _MATH_SPAN_RE.sub(lambda m: _join_digit_groups(m.group(0), spaces=True), region)
        region = _join_last_spaced_number(region)
        got = _pick_number(_latex_number_text(region), last=True, stated=False)
        if got is not None:
            return got
    return None


# ------------------------------------------------------------------ MATH


def cut_at_next_problem(text: str | None) -> str | None:
    """The response up to its first "Problem:" (the 4-shot Minerva prompt's stop string).

    Official TFlow (mirroring lm-eval's generate_until stop) truncates Minerva
    responses there before extracting, so an invented follow-up problem's box
    does not count.
    """
    if not text:
        return text
    k = text.find("Problem:")
    return text if k < 0 else text[:k]


_FINAL_LINE_RE = re.compile(r"final answer\s*(?:is|:)\s*(?:the final answer is)?", re.I)
_ANSWER_IS_RE = re.compile(r"\banswer\s*(?:is|:)\s*", re.I)
# a full stop ends a sentence, not a list: "so $x = \boxed{2}$.", then the answer line "\boxed{2}", is one answer
_CONNECTOR_RE = re.compile(r"[\s$,;]*(?:,|and|or|\\text\{\s*(?:and|or|,)\s*\})?[\s$,]*", re.I)
_BLANK_LINE_RE = re.compile(r"\n[^\S\n]*\n")


def _last_box_run(text: str) -> tuple[int, str] | None:
    """The last box, joined with boxes just before it that only "and" / "," separate
    ("\\boxed{2} and \\boxed{3}" -> "2, 3"), within its paragraph: a box that ends one ("$=\\boxed{m}$,"
    closing the solution) and the answer line after a blank line are one answer."""
    spans = boxed_spans(text)
    if not spans:
        return None
    run = [spans[-1]]
    for prev in reversed(spans[:-1]):
        raw = text[prev[1]:run[0][0]]
        gap = re.sub(r"(?:\s|\\q?quad(?![A-Za-z])|\\[,;:! ])+", " ", raw)  # " \quad or \quad "
        if len(gap) > 12 or not _CONNECTOR_RE.fullmatch(gap) or not gap.strip(" $") or _BLANK_LINE_RE.search(raw):
            break
        run.insert(0, prev)
    return run[-1][0], ", ".join(content for _, _, content in run)


_PROSE_RE = re.compile(r"\b[a-z]{2,}\s+[a-z]{2,}\s+[a-z]{2,}\b")


def _cut_hope(body: str) -> str:
    """`body` less the Minerva prompt's closing "I hope it is correct." and a full stop before it (found from
    the phrase: a search for `\\.?\\s*I hope` tried each start in a run of spaces, 50,000 took minutes)."""
    m = re.search(r"I hope it is correct\.?$", body)
    if m:
        body = body[:m.start()].rstrip()
        body = body[:-1] if body.endswith(".") else body
    return body.strip()


def _final_answer_line(text: str) -> tuple[int, str] | None:
    """The last "Final Answer: X" / "the final answer is X".  A prose sentence there
    gives what it says something is ("Final answer: the diameter is 1.6 cm."), or
    nothing: "To double-check the final answer: plug it in." after a box is no answer."""
    # from the last, each read up to the next: "Final Answer: " over one line read the rest of the line at
    # each, 40,000 characters in 3 s
    lines = list(_FINAL_LINE_RE.finditer(text))
    for k in reversed(range(len(lines))):
        m = lines[k]
        got = _math_after(text, m.end(), lines[k + 1].start() if k + 1 < len(lines) else None)
        if got:
            body = _cut_hope(got[0])
            in_math = _IN_MATH_RE.match(text, m.end())
            if body and not in_math and _PROSE_RE.search(re.sub(r"\$[^$]*\$", " ", body)):
                body = _closing_statement(body)
            if body:
                return m.start(), body
    return None


_IN_MATH_RE = re.compile(r"[\s:*]*(?:\$|\\\(|\\\[)")


def extract_math_answer(text: str | None) -> str | None:
    """The last box (or run of boxes) or "Final Answer: ... is X" line, whichever
    comes later; else the last "answer is X"."""
    if not text:
        return None
    for region in answer_regions(text):
        if unfinished_thought(region):  # cut off while thinking: only a closed box is an answer
            box = _last_box_run(region)
            return box[1] if box else None
        candidates = [c for c in (_last_box_run(region), _final_answer_line(region)) if c]
        if candidates:
            return max(candidates, key=lambda c: c[0])[1]
        # the last that reads (from the end: each read the rest of its sentence, "The answer is" over one
        # 40,000-character line took 2 s)
        phrase = next((p for m in reversed(list(_ANSWER_IS_RE.finditer(region))) if (p := _math_after(region, m.end()))),
                      None)
        if phrase:
            return phrase[0]
        closing = _closing_statement(region)
        if closing:
            return closing
    return None


_CLOSING_RE = re.compile(r"(?:\bis\b|=|\bequals\b|\bbe\b|\\approx(?![A-Za-z])|\u2248)\s*", re.I)


def _closing_statement(region: str) -> str | None:
    """A reply with no explicit answer: what its last line says something "is"
    ("The diameter is 1.6 cm.", "so $x = \\frac{1}{2}$."): the line's last math
    group, else the number after its last "is" / "=" ."""
    lines = [ln.strip() for ln in region.strip().splitlines() if ln.strip()]
    if not lines or not _CLOSING_RE.search(lines[-1]):
        return None
    line = lines[-1]
    # a \( group holds no other \( ("is \(" over one line read each to the line's end: 40,000 characters, 3 s)
    groups = re.findall(r"(?<!\\)\$\$?(.+?)(?<!\\)\$|\\\(((?:[^\\]|\\[^(])+?)\\\)", line)
    if groups:
        return next(g for g in groups[-1] if g).strip()
    got = _math_after(line, list(_CLOSING_RE.finditer(line))[-1].end())
    return got[0] if got and parse_quantity(got[0]) is not None else None


# ------------------------------------------------------------------- MMLU

_LETTERS = "ABCDEFGHIJ"
# "A or C", "A, B", "A and C", "A (or possibly C)", "A... or maybe C": a hedge between two letters states no answer
# ("C, but it could be D", "C, but D is also possible", "C, or it could be D", "C, though D is also possible": the
# same hedge in words)
# (one whitespace run per gap between its marks: "C", 2,000 spaces and any word took minutes)
_NOT_TWO = (r"(?![)*}]*\s*(?:(?:(?:,|\.{1,3}|\u2026|\?)\s*)?(?:\(\s*)?\bor\b|,|/|&|\band\b)\s*(?:(?:maybe|perhaps|possibly)\s+)?"
            r"(?:option\s+|choice\s+)?[*$({\[]*(?-i:[A-J])\b(?!['-]\w)(?!\)?\s+(?:is|are)\b)"
            r"|[)*}]*\s*(?:,\s*)?(?:but|or)\s+(?:it|the\s+answer)\s+(?:could|might|may)\s+(?:also\s+)?be\s+"
            r"(?:option\s+|choice\s+)?[*$({\[]*(?-i:[A-J])\b(?!['-]\w)"
            r"|[)*}]*\s*(?:,\s*)?(?:but|(?:al)?though)\s+(?:option\s+|choice\s+)?[*$({\[]*(?-i:[A-J])\b(?!['-]\w)"
            + _ALSO_POSSIBLE_RE.pattern + ")")
# the font commands a letter is written in: \text{C}, \textbf{C}, \mathbf{C}, \textit{C}, \mathsf{C}, \boldsymbol{C}
_FONT = r"text(?:bf|rm|it|tt|sf|normal)?|math(?:rm|bf|sf|it|tt)|boldsymbol|bm|mbox|emph"
_FONT_WRAP_RE = re.compile(r"\\(?:" + _FONT + r")\s*\{([^{}]*)\}")  # \textit{Paris}: its text
# its callers end in whitespace, so it starts with none of its own (side by side, "answer is" and 250 spaces
# took minutes)
_L = r"(?:[*$({\[]+\s*)?(?:\\(?:" + _FONT + r")\s*\{\s*)?\(?([A-J])\b(?!['-]\w)(?![^\S\n]+(?-i:[a-z]{2,})\s+(?:is|are)\b)" + _NOT_TWO
_LETTER_PATTERNS = [
    # "the answer is (B)", "correct answer is: **B**", "answer is option C"
    re.compile(r"answer\s+(?:is|(?:would|should|must)\s+be)\s*(?:[:\-]\s*)?(?:\*+(?!\*)\s*)?" + rf"(?:{_LIKELY})?"
               r"(?:option\s+|choice\s+)?" + _L, re.I),
    # "Answer: B", "**Answer:** (C)", "Final answer: C"
    re.compile(r"answer\s*(?:\*+(?!\*)\s*)?:\s*(?:\*+(?!\*)\s*)?" + rf"(?:{_LIKELY})?(?:option\s+|choice\s+)?" + _L, re.I),
    # "the correct option is C", "best choice: (D)", "My choice is C"
    re.compile(r"(?:correct|right|best|final|my)\s+(?:final\s+)?(?:option|choice|pick)\s*(?:(?:is|:)\s*)?(?:\*+(?!\*)\s*)?"
               + rf"(?:{_LIKELY})?" + _L, re.I),
    # "option C is correct", "(D) is the correct answer"
    re.compile(r"(?:(?:option|choice)\s*)?\(([A-J])\)\s*is\s+(?:the\s+)?(?:correct|right|best)\b", re.I),  # not \s*\(: n^2
    re.compile(r"(?:option|choice)\s+([A-J])\s+is\s+(?:the\s+)?(?:correct|right|best)\b", re.I),
    # "Therefore, C is the correct answer.", "C is correct.": a bare letter opening its sentence (not
    # "vitamin C is the best source"), and the sentence ends there ("A is correct in part, but ..." is a remark)
    # (a line's start is ^ and its indent: "[\n...]\s*" tried every newline of a blank run, n^2)
    re.compile(r"(?:^[^\S\n]*|[.!?:][^\S\n]*|\b(?:so|thus|therefore|hence)[,:]?\s+)\**([A-J])\**\s+is\s+(?:the\s+)?"
               r"(?:(?:correct|right|best)(?:\s+(?:answer|option|choice))?|answer)\**(?=\s*[.!]?\s*(?:$|\n))",
               re.I | re.M),
    # after "The answer is C.": "Wait, actually it's B.", "no, it's B) text"
    re.compile(_CORRECTION + r"(?:option\s+|choice\s+)?" + _L, re.I),
    # "I think it's C.", "So it is (B)!": a sentence that opens (or concludes) there and ends at the letter,
    # not "the element with atomic number 6 is carbon: it is C."
    re.compile(r"(?:^[^\S\n]*|[.!?][^\S\n]+|\b(?:I\s+(?:think|believe)|so|thus|therefore|hence)[,:]?\s+)"
               r"it(?:['\u2019]s|\s+is)\s+(?:option\s+|choice\s+)?" + _L + r"(?=\)?\**\s*(?:[.!]|$))", re.I | re.M),
    # Qwen's Chinese: "答案：C", "所以答案是 C。", "正确答案为 (B)", "答案是B选项"; not "答案是 B 或 C" (B or C)
    re.compile(r"\u7b54\u6848\s*(?:\u662f|\u4e3a|:|\uff1a)\s*(?:\u9009\u9879\s*)?[*$({\[\uff08]*\s*([A-J])(?![\w'-])"
               r"(?![)*}\uff09]*\s*[\u6216\u548c\u3001,/]\s*[*$({\[\uff08]*[A-J])" + _NOT_TWO, re.I),
    re.compile(r"\u7b54\u6848\s*(?:\u662f|\u4e3a|:|\uff1a)\s*(?:\u9009\u9879\s*)?[*$({\[\uff08]*\s*([A-J])(?=\u9009?\u9879)",
               re.I),
    # "I choose B", "I'll go with option C"
    re.compile(r"\b(?:I\s+(?:would\s+|will\s+)?(?:choose|select|pick)|I'?ll\s+(?:choose|go\s+with)|go\s+with)\s+"
               r"(?:option\s+|choice\s+)?" + _L, re.I),
]


# "b)" / "(b)" is never the article; "(a) or (c)" is a hedge, as in upper case
_LOWER_ANSWER_RE = re.compile(r"(?i:answer)\s*(?:is|:)\s*(?:\*+\s*)?(?:\(?([a-j])\)(?!\s*(?:,|/|&|\bor\b|\band\b)\s*\(?[a-j]\))"
                              r"|([a-j])(?=\s*(?:[.!]\s*)?(?:$|\n)))")
_CONCLUSION_RE = re.compile(r"\b(?:so|thus|therefore|hence)[,:]?\s+(?:option\s+|choice\s+)?\(?([A-J])\)?[.!]?\s*$",
                            re.I)
# not "(A) or (B).", nor "C, but it could also be (D).", nor a denial "The correct option is not (A)."
_TRAILING_PAREN_RE = re.compile(r"(?<!or )(?<!and )(?<!, )(?<!could be )(?<!might be )(?<!may be )(?<!also be )"
                                r"(?<!not )(?<!n't )(?<!n\u2019t )"
                                r"\(([A-J])\)[.!]?\s*$")


def _letter_at_start(s: str, allow_space: bool) -> str | None:
    """Letter opening `s`: "B", "(B)", "B.", "B)", "B: text"; "B text" only with
    allow_space (inside a box, where a leading article "A ..." is rare)."""
    s = _FONT_WRAP_RE.sub(r"\1", s).strip().strip("*$ ")  # \mathrm{C}
    s = re.sub(r"^\\(?:" + _FONT + r")\s*\{", "", s)  # \text{C. {AND, OR}}: braces inside it
    s = re.sub(r"^\{\\(?:bf|it|rm|sf|tt)(?![A-Za-z])\s*([^{}]*)\}|^\\(?:bf|it|rm|sf|tt)(?![A-Za-z])\s*", r"\1", s)  # {\bf C}, \bf C
    m = re.match(r"^\(([A-J])\)" + _NOT_TWO + "|^([A-J])" + _NOT_TWO + "(?:$|[.:)]"
                 + (r"|[\s,]" if allow_space else "") + ")", s)
    return (m.group(1) or m.group(2)) if m else None


# formal logic's options are formulas ("~A", "Lm • ~(Lj ∨ Ll)", "Bx ⊃ Sy"), which a model writes in
# LaTeX (\sim A, \neg A, Lm \bullet \sim(Lj \vee Ll)): each connective as one symbol, spaces around it
# dropped, so \boxed{\sim A} is the option "~A"
_CONNECTIVES = [("~", r"\\(?:sim|neg|lnot)(?![A-Za-z])|[\u00ac\u223c]"),
                ("\u2022", r"\\(?:bullet|cdot|land|wedge)(?![A-Za-z])|[\u00b7\u2219\u2227]"),
                ("\u2228", r"\\(?:vee|lor)(?![A-Za-z])"),
                ("\u2283", r"\\(?:supset|to|rightarrow|implies)(?![A-Za-z])|\u2192"),
                ("\u2261", r"\\(?:equiv|leftrightarrow|iff)(?![A-Za-z])|\u2194"),
                ("\u2203", r"\\exists(?![A-Za-z])"), ("\u2200", r"\\forall(?![A-Za-z])")]
_CONNECTIVE_RE = re.compile("|".join(f"(?P<c{k}>{pattern})" for k, (_, pattern) in enumerate(_CONNECTIVES)))
_AROUND_CONNECTIVE_RE = re.compile(r"\s*([~\u2022\u2228\u2283\u2261\u2203\u2200])\s*")


@functools.lru_cache(maxsize=1024)  # each "answer is" of a reply compares against every option's text
def _norm_choice(s: str, lower: bool = True) -> str:
    s = re.sub(r"[\s.$*]+", " ", _FONT_WRAP_RE.sub(r"\1", s)).strip()  # \textit{Paris} as \text{Paris}: Paris
    if re.search(r"[\\~\u00ac\u223c\u00b7\u2219\u2227\u2022\u2228\u2283\u2192\u2261\u2194\u2203\u2200]", s):
        s = _CONNECTIVE_RE.sub(lambda m: _CONNECTIVES[int(m.lastgroup[1:])][0], s)
        s = _AROUND_CONNECTIVE_RE.sub(r"\1", s)
    return s.lower() if lower else s


def _in_range(letter: str | None, choices: Sequence[str] | None) -> str | None:
    """`letter`, unless the options stop before it (\\boxed{F} of four options is the element F)."""
    return letter if letter and (not choices or _LETTERS.index(letter) < len(choices)) else None


def _choice_letter(s: str, choices: Sequence[str] | None) -> str | None:
    """The letter of the one option whose text `s` is ("True, False" -> C); a letter of the
    options is that letter, not an option's text (\\boxed{B} with an option "B" is B)."""
    target = _norm_choice(s)
    if not choices or not target or (re.fullmatch(r"\(?[a-j]\)?", target)
                                     and _in_range(target.strip("()").upper(), choices)):
        return None
    hits = [k for k, c in enumerate(choices) if _norm_choice(str(c)) == target]
    if len(hits) > 1:  # "Sc ≡ Ej" and "sC ≡ eJ": the case tells them apart
        hits = [k for k in hits if _norm_choice(str(choices[k]), lower=False) == _norm_choice(s, lower=False)]
    return _LETTERS[hits[0]] if len(hits) == 1 else None


def _lower_letter(s: str, choices: Sequence[str] | None) -> str | None:
    """A lower-case "c" or "(c)": the option whose text is exactly that bare "c" (the speed of
    light of ['2c', 'c', '0.8c', '0.5c'] is B, not C), else the letter."""
    hits = [k for k, c in enumerate(choices or ()) if str(c).strip() == s]
    if hits:  # two options "c": no telling which
        return _LETTERS[hits[0]] if len(hits) == 1 else None
    return _in_range(s.strip("()").upper(), choices)


# "\boxed{Option D}", "\boxed{\text{Choice (D)}}": the word before the letter names it (a model's box, and
# no MMLU option's text is "Option" and a letter)
_OPTION_WORD_RE = re.compile(r"^((?:\s|\\(?:" + _FONT + r")\s*\{)*)(?:option|choice)\s+(?=\(?(?-i:[A-J])\b)",
                             re.I)


def _boxed_letter(content: str, choices: Sequence[str] | None) -> str | None:
    """\\boxed{B}, \\boxed{(C)}, \\boxed{D. Paris}, \\boxed{Option D}, \\boxed{c}; an option's text;
    \\boxed{B Paris}."""
    content = _OPTION_WORD_RE.sub(r"\1", content, count=1)
    letter = _in_range(_letter_at_start(content, allow_space=False), choices)
    if not letter and re.fullmatch(r"\(?([a-j])\)?", content.strip()):  # \boxed{c}
        letter = _lower_letter(content.strip(), choices)
    # an option's text before "B text": \boxed{A time fixed effects model} is option B's text, not A
    return letter or _choice_letter(content, choices) or _in_range(_letter_at_start(content, allow_space=True), choices)


_CHOICE_ANSWER_RE = re.compile(r"answer\s*\**\s*(?:is|:)\s*\**\s*:?\s*", re.I)


def _stated_choice(text: str, choices: Sequence[str], start: int = 0) -> str | None:
    """The letter of the option whose text a statement at `start` is: its line, or the line up to a
    sentence's end (an option's text may hold sentences: the longest that is an option's text).  Only
    the first 4 times the longest option's length (and 64) are looked at: longer is no option's text
    (each "answer is" of a long line was the whole line, quadratic)."""
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    limit = start + 4 * max(len(str(c)) for c in choices) + 64
    line = text[start:min(end, limit)]
    ends = [m.start() + 1 for m in re.finditer(r"\.\s", line)]
    whole = [len(line)] if end <= limit else []
    return next((got for k in whole + ends[::-1] if (got := _choice_letter(line[:k], choices))), None)


def _article(text: str, m: re.Match, choices: Sequence[str] | None) -> bool:
    """True for "Answer: A combination of factors.": the article opening a prose answer, not the
    letter (a lower-case word follows that is no conjunction and does not open option A's text)."""
    if m.group(1) != "A":
        return False
    word = re.match(r"[^\S\n]+([a-z][a-z'-]*)", text[m.end():])
    if not word or word.group(1) in ("because", "since", "as", "is", "was", "for", "which", "and", "or"):
        return False
    first = _norm_choice(str(choices[0])) if choices else ""
    return not (first.startswith(word.group(1)) or first.startswith("a " + word.group(1)))


def _mmlu_explicit(text: str, choices: Sequence[str] | None, boxes_only: bool = False) -> str | None:
    found: list[tuple[int, int, str]] = []  # (position, rank, letter): at one position the higher rank wins
    prev: tuple[int, str | None] = (-1, None)  # the end and letter of the box before
    for start, end, content in boxed_spans(text):
        letter = _boxed_letter(content, choices)
        if letter and prev[1] and prev[1] != letter and _BOX_HEDGE_RE.fullmatch(text[prev[0]:start]):
            letter = ""  # "\boxed{B} or \boxed{C}": a hedge, no answer
        if letter is not None:
            found.append((start, 0, letter))
        prev = (end, letter)
    if boxes_only:
        return max(found)[2] if found else None
    for pattern in _LETTER_PATTERNS:
        for m in pattern.finditer(text):
            letter = _in_range(m.group(1), choices) if m.group(1).isupper() else None
            if letter and not (pattern is _LETTER_PATTERNS[1] and _article(text, m, choices)) \
                    and not _hypothetical(text, m):
                found.append((m.start(), 0, letter))
    for m in _LOWER_ANSWER_RE.finditer(text):  # "the answer is (b)", "answer: c."
        letter = _in_range(m.group(1).upper(), choices) if m.group(1) else _lower_letter(m.group(2), choices)
        if letter:
            found.append((m.start(), 0, letter))
    if choices:  # "The answer is True, False." names option C; "The answer is A time fixed effects model." B
        for m in _CHOICE_ANSWER_RE.finditer(text):
            letter = _stated_choice(text, choices, m.end())
            if letter:
                found.append((m.start(), 1, letter))
    return max(found)[2] if found else None


def extract_mmlu_letter(text: str | None, choices: Sequence[str] | None = None) -> str | None:
    """Chosen option letter: the last explicit statement (`\\boxed{B}`, "the answer
    is (B)", "Answer: B", "the correct option is B", "option B is correct"), else a
    reply (or final line) that is just the letter ("B", "(B) text", "B. text").
    A mere mention ("Option A is wrong") is not an answer.  With `choices`, an
    option's exact text (boxed, stated as the answer, or the reply's last line)
    maps to its letter."""
    if not text:
        return None
    regions = answer_regions(text)
    for region in regions:
        # of a thought cut off at "so the answer is A" only a closed box counts, as the module's rules say
        letter = _mmlu_explicit(region, choices, boxes_only=unfinished_thought(region))
        if letter is not None:  # "": a hedge ("\boxed{B} or \boxed{C}"), no answer
            return letter or None
        if unfinished_thought(region):
            return None
        letter = _mmlu_plain(region, choices)
        if letter:
            return letter
        # a reply that states an answer no option is ("The answer is Employee rights." of two such
        # options, a paraphrase) has no answer: the thoughts' letter is not what it states
        if len(regions) > 1 and region is regions[0] and _states_an_answer(region):
            return None
    return None


def _states_an_answer(reply: str) -> bool:
    """True for a reply with a closed box or an "answer is ..." / "Answer: ..." followed by text."""
    return bool(boxed_spans(reply)) or any(
        re.sub(r"[\s*:.]+", "", reply[m.end():].split("\n", 1)[0]) for m in _CHOICE_ANSWER_RE.finditer(reply))


def _mmlu_plain(reply: str, choices: Sequence[str] | None = None) -> str | None:
    """A reply (or its last line) that is just the letter or an option's text, or ends "so C." / "(C)."."""
    letter = _in_range(_letter_at_start(reply, allow_space=False), choices) or _choice_letter(reply, choices)
    if letter:
        return letter
    lines = [ln for ln in reply.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    letter = _in_range(_letter_at_start(lines[-1], allow_space=False), choices) or _choice_letter(lines[-1], choices)
    if letter:
        return letter
    m = _CONCLUSION_RE.search(lines[-1]) or _TRAILING_PAREN_RE.search(lines[-1])
    return m.group(1) if m and m.group(1).isupper() else None


# ------------------------------------------------------------------- code

# an opening fence's info string has no backtick (CommonMark): "```" over one line tried every fence to the
# line's end, 40,000 characters in 1 s; a ~~~ fence (CommonMark's other one) closes only at ~~~, and its
# info string has no tilde, for the same reason
_FENCE_OPEN = r"(?:(```)|~~~)[ \t]*([\w+#.-]*)(?(1)[^\n`]*|[^\n~]*)\n"
_FENCE_RE = re.compile(_FENCE_OPEN + r"(.*?)(?(1)```|~~~)", re.S)
_OPEN_FENCE_RE = re.compile(_FENCE_OPEN)
_PYTHON_TAGS = ("python", "py", "python3")


def _fence_body(text: str, fence_start: int, body: str) -> str:
    """A block's code.  A fence indented on its line (inside a list item) whose lines all
    carry the same indentation has it taken off, as markdown does: the code would not run
    with it (an indented `def` is an IndentationError)."""
    lead = text[text.rfind("\n", 0, fence_start) + 1:fence_start]
    lines = body.split("\n")
    if not lead or lead.strip() or not all(ln.startswith(lead) for ln in lines if ln.strip()):
        return body
    return "\n".join(ln[len(lead):] if ln.startswith(lead) else ln.lstrip(" \t") for ln in lines)


def _code_blocks(region: str) -> list[tuple[str, str, bool]]:
    """(language, code, closed) of each fenced block, in order.  A fence still open at the
    end (a generation cut off inside it) is the last block, not closed."""
    blocks, end = [], 0
    for m in _FENCE_RE.finditer(region):
        blocks.append((m.group(2).lower(), _fence_body(region, m.start(), m.group(3)), True))
        end = m.end()
    m = _OPEN_FENCE_RE.search(region, end)
    if m:
        blocks.append((m.group(2).lower(), _fence_body(region, m.start(), region[m.end():]), False))
    return blocks


def _defines(code: str, entry_point: str) -> bool:
    name = re.escape(entry_point)
    return re.search(rf"def\s+{name}\s*\(|^[ \t]*{name}\s*=(?!=)", code, re.M) is not None


def _names(node: ast.AST) -> tuple[set[str], set[str]]:
    """(bound, read): the names `node` binds in any scope of it, and those it reads.  A name bound
    anywhere in a program is its own (a local of one function too): never looked for elsewhere."""
    bound: set[str] = set()
    read: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (read if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and n.name:
            bound.add(n.name)
    return bound, read


# what ast.parse raises for a text it cannot read: a null byte is a ValueError before Python 3.12, and
# nesting too deep for the parser a RecursionError ("1+1+...") or a MemoryError ("- - - ... 1")
_UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)


def _with_definitions(program: str, earlier: Sequence[str], prelude: str) -> str:
    """`program` with the definitions it reads but never makes taken from the reply's `earlier` blocks
    and put before it: a model writes its helper, `import math` or a constant in a block of its own,
    and the program alone is a NameError.  Only top-level definitions are taken (def, class, import,
    assignment; the later of two, and in turn what it reads), never a block's tests or prints; a name
    the program binds, a builtin or one `prelude` binds (what the scorer puts before the program) is
    never looked for.  Parsed, never run: a block that does not parse gives nothing."""
    try:
        tree = ast.parse(program)
    except _UNPARSABLE:
        return program
    have = _names(tree)[0] | _names(ast.parse(prelude))[0] | set(dir(builtins))
    found: dict[str, tuple[tuple[int, int], str, ast.stmt]] = {}  # name -> (where, block, statement)
    for k, code in enumerate(earlier):
        try:
            body = ast.parse(code).body
        except _UNPARSABLE:
            continue
        for i, stmt in enumerate(body):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = {stmt.name}
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)) and getattr(stmt, "module", "") != "__future__":
                names = _names(stmt)[0] - {"*"}
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                names = set().union(*(_names(t)[0] for t in targets))
            else:  # a test, a print, an `if __name__ == "__main__":` block
                continue
            for name in names:
                found[name] = ((k, i), code, stmt)
    taken: dict[tuple[int, int], str] = {}
    need = _names(tree)[1] - have
    while need:
        name = need.pop()
        if name in have or name not in found:
            continue
        have.add(name)
        where, code, stmt = found[name]
        if where not in taken:
            decorators = getattr(stmt, "decorator_list", [])
            taken[where] = "".join(f"@{ast.get_source_segment(code, d)}\n" for d in decorators) \
                + ast.get_source_segment(code, stmt)
            bound, read = _names(stmt)
            need |= read - bound - have
    if not taken:
        return program
    # after the program's `from __future__` imports, which must come first
    line = max((s.end_lineno for s in tree.body if isinstance(s, ast.ImportFrom) and s.module == "__future__"),
               default=0)
    cut = sum(len(ln) + 1 for ln in program.split("\n")[:line])
    return program[:cut] + "\n\n".join(taken[w] for w in sorted(taken)) + "\n\n" + program[cut:]


def extract_code(text: str | None, entry_point: str | None = None, prelude: str = "") -> str:
    """The program a response commits to: of the reply's fenced blocks (``` or ~~~; the
    thoughts' only when the reply has none), the last one defining `entry_point` (a usage
    example after it does not count), else the last ```python / ```py block, else the last
    block; with no fence at all, the reply itself.  What it reads but never defines and a
    python (or bare) block before it defines, a helper or an import, comes with it
    (_with_definitions; `prelude`: the code the scorer puts before it).

    A fence left open by a truncated generation is the last block, and a ```python one that
    does not mention `entry_point` yet is the program being written (cut off before its
    `def`): an earlier draft is not the final program when the model was writing another.
    A generation cut off while thinking (`<think>` without `</think>`) has no program:
    its blocks are drafts.
    """
    if not text or unfinished_thought(text):
        return ""
    regions = answer_regions(text)
    for region in regions:
        blocks = _code_blocks(region)
        if not blocks:
            continue
        python = [k for k, (lang, _, _) in enumerate(blocks) if lang in _PYTHON_TAGS]
        chosen = python[-1] if python else len(blocks) - 1
        if entry_point:
            lang, last, closed = blocks[-1]
            defining = [k for k, (_, code, _) in enumerate(blocks) if _defines(code, entry_point)]
            if not closed and lang in _PYTHON_TAGS and not re.search(rf"\b{re.escape(entry_point)}\b", last):
                chosen = len(blocks) - 1
            elif defining:
                chosen = defining[-1]
        earlier = [code for lang, code, _ in blocks[:chosen] if lang in _PYTHON_TAGS or not lang]
        return _with_definitions(blocks[chosen][1], earlier, prelude)
    return regions[0]


def parse_number(s: str | None) -> Fraction | None:
    """'1,234' / '-3.5' / '3/4' / '$18.00' -> exact Fraction; None if not a number."""
    if s is None:
        return None
    s = s.replace(",", "").replace(" ", "").replace("$", "")
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            den_f = Fraction(den)
            return Fraction(num) / den_f if den_f != 0 else None
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
