"""Code: the program a reply commits to (extract_code): the final fenced block of the reply after
its last `</think>`, the one defining the entry point, a block cut off (no data files needed)."""

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


def test_tilde_fences():
    # CommonMark's other fence: closed only by ~~~ (the ``` inside is code), and ``` only by ```
    assert extract_code("~~~python\ns = '''\n```\n'''\n~~~\n") == "s = '''\n```\n'''\n"
    assert extract_code("```python\ns = '''\n~~~\n'''\n```\n") == "s = '''\n~~~\n'''\n"
    assert extract_code(f"```python\n{F1}```\n~~~python\ndef f(n):\n    return", "f") == "def f(n):\n    return"
