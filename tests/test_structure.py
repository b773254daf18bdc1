"""The package's layering, read from its imports (lazy ones inside functions included): the model
imports nothing from the engine or above, no module imports a command line's module, and the
imports have no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minitflow"
COMMAND_LINES = {"minitflow.generate", "minitflow.evaluate", "minitflow.score", "minitflow.report",
                 "minitflow.train", "minitflow.demo"}
BASE = {"minitflow.errors", "minitflow.files"}  # user errors and safe file I/O: below every layer


def module_imports() -> dict[str, set[str]]:
    """{module: the package's modules it imports anywhere in its file}."""
    names: dict[str, set[str]] = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .data import x / from . import data
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if base.startswith("minitflow"):
                    found |= {base} | {f"{base}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("minitflow")}
        names[name] = found

    def module_of(name: str) -> str | None:  # "minitflow.tflow.methods.run_method" -> "minitflow.tflow.methods"
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    def ancestors(m: str) -> set[str]:  # packages that are imported before m runs, whatever m imports
        parts = m.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))}

    return {m: {module_of(n) for n in found} - {None, m} - ancestors(m) for m, found in names.items()}


def test_model_imports_nothing_from_the_layers_above():
    for mod, deps in module_imports().items():
        if mod.startswith("minitflow.model"):
            above = {d for d in deps if not d.startswith("minitflow.model") and d not in BASE}
            assert not above, f"{mod} imports {above}"


def test_no_module_imports_a_command_line():
    for mod, deps in module_imports().items():
        assert not deps & COMMAND_LINES, f"{mod} imports the command line(s) {deps & COMMAND_LINES}"


def test_imports_have_no_cycle():
    graph = module_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert graph["minitflow.tflow.methods"] and graph["minitflow.eval.scoring"]  # the walk saw absolute and relative imports
