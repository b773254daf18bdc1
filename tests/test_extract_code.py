"""Code: the program a reply commits to (extract_code): the final fenced block of the reply after
its last `</think>`, the one defining the entry point, a block cut off, the definitions it reads from
the blocks before it, ~~~ fences (no data files needed)."""

import pytest

from minitflow.eval.scoring import extract_code


def test_extract_code():
    text = "Idea:\n```python\nprint(1)\n```\nFinal:\n```python\ndef f():\n    return 2\n```\nDone."
    assert extract_code(text) == "def f():\n    return 2\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("def g(): pass") == "def g(): pass"
    assert extract_code("```python\ndef g():\n    return 1") == "def g():\n    return 1"
    two = "```python\ndef f():\n    return 1\n```\n```python\nprint(f())\n```"
    assert extract_code(two, entry_point="f") == "def f():\n    return 1\n"


F1 = "def f(x):\n    return x + 1\n"
F2 = "def f(x):\n    return x + 2\n"


@pytest.mark.parametrize("text, program", [
    # a fence indented inside a list item: markdown removes its indentation from the lines
    ("1. Code:\n\n   ```python\n   def f(x):\n       return x + 1\n   ```\n", F1),
    ("1. Code:\n   ```python\ndef f(x):\n    return x + 1\n   ```\n", F1 + "   "),  # ... only if every line has it
    # the reply after </think> is the answer; a draft in the thoughts does not outrank it
    (f"<think>\n```python\n{F2}```\n</think>\n\n```python\n    return x + 1\n```", "    return x + 1\n"),
    (f"<think>\n```python\n{F2}```\n</think>\n\n```python\n{F1}```\n```python\nprint(f(1))\n```", F1),
    (f"<think>\n```python\n{F1}```\n</think>\n\nThe function is above.", F1),  # reply states nothing
    (f"<think>\nok\n</think>\n\n{F1}", f"\n\n{F1}"),  # no fence at all: the reply is the program
    # cut off while thinking: no final program, whatever the drafts say
    (f"<think>\n```python\n{F1}```\nNow check the edge cases: if x is", ""),
    # cut off inside the final block: that block, not the draft before it
    (f"```python\n{F1}```\nBetter:\n```python\ndef f(x):\n    return x +", "def f(x):\n    return x +"),
    (f"```python\n{F1}```\nBetter:\n```python\nimport math\n\n", "import math\n\n"),  # before its def
    (f"```python\n{F1}```\nUsage:\n```python\nprint(f(", F1),  # ... unless it is not the program
    (f"```python\n{F1}```\nOutput:\n```\n[2, 3", F1),
    ("```python\r\ndef f(x):\r\n    return x + 1", "def f(x):\r\n    return x + 1"),
    (f"```python\n{F1}```\nShorter:\n```python\nf = lambda x: x + 2\n```", "f = lambda x: x + 2\n"),
])
def test_extract_code_takes_the_final_program(text, program):
    assert extract_code(text, entry_point="f") == program


HELPER = "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))\n"
COUNT = "def f(n):\n    return sum(is_prime(k) for k in range(n))\n"


def test_a_helper_written_in_an_earlier_block_comes_with_the_program():
    # the model's own checks beside the helper (an assert, a print, a __main__ block) stay behind,
    # and a block after the program is not read
    text = (f"First a helper:\n```python\nimport math\n\n{HELPER}\nassert is_prime(7)\nprint(is_prime(9))\n"
            "if __name__ == '__main__':\n    print(is_prime(2))\n```\n"
            f"Now the function:\n```python\n{COUNT}```\nUsage:\n```python\ndef is_prime(n):\n    return True\n"
            "print(f(10))\n```")
    assert extract_code(text, "f") == HELPER.rstrip("\n") + "\n\n" + COUNT
    # what it needs in turn comes too, each definition once and in the reply's order; of two, the later
    text = (f"```python\nimport math\nLIMIT = 1\nLIMIT = 2\n```\n```python\ndef is_prime(n):\n    return False\n```\n"
            "```py\ndef is_prime(n):\n    return math.isqrt(n) < LIMIT\n```\n"
            f"```\nfrom math import *\ndef g():\n    return 0\n```\n```python\n{COUNT}```")
    assert extract_code(text, "f") == ("import math\n\nLIMIT = 2\n\ndef is_prime(n):\n    return math.isqrt(n) < LIMIT"
                                       "\n\n" + COUNT)
    # two names the program reads, bound by one statement: it comes once
    program = "def f(n):\n    return LO <= n <= HI\n"
    assert extract_code(f"```python\nLO, HI = 1, 9\n```\n```python\n{program}```", "f") == "LO, HI = 1, 9\n\n" + program


@pytest.mark.parametrize("earlier", [
    "```python\ndef f(n):\n    return 0\n```",  # the entry point again: the program's own wins
    "```python\ndef is_prime(n:\n    return True\n```",  # does not parse: gives nothing
    "```bash\nis_prime=1\n```",  # not Python
    "```python\nresult = f(3)\nn = 4\nsum = 0\n```",  # names the program binds (a local too) or a builtin
    "```python\nassert is_prime(2)\nfor is_prime in []:\n    pass\n```",  # no definition
    "```python\ndef is_prime(n):\n    return True\n```\n</think>\n",  # the thoughts, not the reply
])
def test_nothing_the_program_does_not_need_is_taken(earlier):
    program = "def f(n):\n    result = [k for k in range(n) if is_prime(k)]\n    return sum(result)\n"
    assert extract_code(f"{earlier}\n```python\n{program}```", "f") == program


def test_names_an_except_or_a_match_binds_are_the_programs_own():
    program = ("def f(x):\n    try:\n        return int(x)\n    except ValueError as err:\n        return str(err)\n\n\n"
               "def g(xs):\n    match xs:\n        case [first, *rest]:\n            return first, rest\n"
               "        case _:\n            return None\n")
    earlier = "```python\nerr = 'e'\nfirst = 0\nrest = []\n```"
    assert extract_code(f"{earlier}\n```python\n{program}```", "f") == program


def test_what_the_prompt_imports_and_builtins_need_nothing():
    program = "def f(xs: List[int]) -> int:\n    return helper(len(xs))\n"
    text = f"```python\nfrom typing import List\nlen = 3\ndef helper(n):\n    return n\n```\n```python\n{program}```"
    assert extract_code(text, "f", prelude="from typing import List") == \
        "def helper(n):\n    return n\n\n" + program
    assert extract_code(text, "f") == "from typing import List\n\ndef helper(n):\n    return n\n\n" + program


def test_definitions_go_after_the_programs_future_imports():
    program = "from __future__ import annotations\nfrom __future__ import division\ndef f(n):\n    return g(n)\n"
    text = f"```python\nimport functools\n@functools.cache\ndef g(n):\n    return n\n```\n```python\n{program}```"
    assert extract_code(text, "f") == ("from __future__ import annotations\nfrom __future__ import division\n"
                                       "import functools\n\n@functools.cache\ndef g(n):\n    return n\n\n"
                                       "def f(n):\n    return g(n)\n")


@pytest.mark.parametrize("program", [
    "def f(n):\n    return g(n +\n",  # cut off: returned as written
    "x = " + "-" * 100_000 + "g",  # too deep for the parser (a MemoryError), not a crash
    "x = " + "g+" * 100_000 + "g",  # (a RecursionError)
])
def test_a_program_that_does_not_parse_is_returned_as_written(program):
    text = f"```python\ndef g(n):\n    return n\n```\n```python\n{program}\n```"
    assert extract_code(text, "f") == program + "\n"


def test_tilde_fences():
    # CommonMark's other fence: closed only by ~~~ (the ``` inside is code), and ``` only by ```
    assert extract_code("~~~python\ns = '''\n```\n'''\n~~~\n") == "s = '''\n```\n'''\n"
    assert extract_code("```python\ns = '''\n~~~\n'''\n```\n") == "s = '''\n~~~\n'''\n"
    assert extract_code(f"~~~ python\n{HELPER}~~~\n~~~python\n{COUNT}~~~", "f") == HELPER + "\n" + COUNT
    assert extract_code(f"```python\n{F1}```\n~~~python\ndef f(n):\n    return", "f") == "def f(n):\n    return"
