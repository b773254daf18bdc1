"""Start-up of the package and its command lines: `import minitflow` and the command lines that only
read result files (score, report) do not import torch (seconds on a loaded machine)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minitflow

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str, **kw) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter on this checkout's package (torch is in this one already)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=env, **kw)


def _type_checking_imports() -> dict[str, str]:
    """{name: module} of the imports under `if TYPE_CHECKING:` in minitflow/__init__.py."""
    tree = ast.parse((ROOT / "minitflow" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {a.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for a in node.names}


def test_importing_the_package_leaves_torch_out():
    """minitflow/__init__.py imported LLM (so torch) eagerly: every `python -m minitflow.X` paid
    the torch import before its own code ran. The public names are now imported on first use."""
    got = _child("import sys, minitflow\nprint('torch' in sys.modules, sorted(m for m in sys.modules "
                 "if m.startswith('minitflow')))")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[0] == "False", got.stdout


def test_every_public_name_resolves_to_its_modules_object():
    """`from minitflow import LLM`, `minitflow.LLM`, `dir(minitflow)` and `import *` as before the
    lazy __init__; each name is the object its module defines (the lazy table and the
    TYPE_CHECKING imports, which type checkers and tests/test_structure.py read, agree)."""
    import importlib

    declared = {**_type_checking_imports(), "UserError": "minitflow.errors"}
    assert sorted(declared) == sorted(minitflow.__all__)
    for name, module in declared.items():
        assert getattr(minitflow, name) is getattr(importlib.import_module(module), name), name
        assert name in dir(minitflow)
    from minitflow import LLM, SamplingParams, demo_dir  # noqa: F401 - the README's import
    namespace: dict = {}
    exec("from minitflow import *", namespace)
    assert set(minitflow.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        getattr(minitflow, "no_such_name")
    with pytest.raises(ImportError):
        exec("from minitflow import no_such_name", {})
    # a fresh interpreter: the names resolve on first access, not only where the suite imported them
    got = _child("import minitflow\nfrom minitflow import Qwen3Config\nprint(minitflow.LLM.__name__, "
                 "Qwen3Config.__module__, 'build_lora' in dir(minitflow))")
    assert got.returncode == 0 and got.stdout.split() == ["LLM", "minitflow.model.config", "True"], got.stderr
