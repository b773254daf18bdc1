"""The README's Python API example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs(capsys):
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert out[1].startswith("torch.Size([2, ")  # (batch, L+1, span, hidden)


def test_ci_runs_the_readme_test_command():
    text = README.read_text()
    command = re.search(r"Run the tests.*?```bash\n(.*?)\n```", text, re.S).group(1).strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci


def test_serving_example_runs(capsys):
    section = README.read_text().split("**Serving.**", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.split()[-2] in ("stop", "length") for line in out)
