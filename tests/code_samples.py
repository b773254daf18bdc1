"""Code-benchmark samples for the scorer and sandbox tests, torch-free: the sandbox tests' child
processes import them, and a child that imported the engine's helpers loaded torch (5 s a test)."""

from __future__ import annotations

from minitflow.eval.data import Sample


def _add_sample(with_plus=True):
    meta = {
        "dataset": "humaneval", "task_id": "Toy/0", "entry_point": "add",
        "prompt": 'from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n',
        "canonical_solution": "    return a + b\n",
        "base_input": [[1, 2], [0, 0], [-1, 5]],
        "plus_input": [[10**6, 1], [-7, -8]] if with_plus else [],
        "atol": 0,
    }
    return Sample(id="Toy/0", question=meta["prompt"], answer="", meta=meta)


GOOD = "def add(a, b):\n    return a + b\n"


def _sample(entry: str, canonical: str, base: list, plus: list = (), prompt: str | None = None,
            dataset: str = "humaneval", sid: str = "Toy/0") -> Sample:
    prompt = prompt if prompt is not None else f'def {entry}(*args):\n    """Toy task."""\n'
    meta = {"dataset": dataset, "task_id": sid, "entry_point": entry, "prompt": prompt,
            "canonical_solution": canonical, "base_input": base, "plus_input": list(plus), "atol": 0}
    return Sample(id=sid, question=prompt, answer="", meta=meta)


ADD = _sample("add", "    return a + b\n", [[1, 2], [0, 0], [-1, 5]], [[10**6, 1], [-7, -8]],
              prompt='def add(a: int, b: int) -> int:\n    """Add."""\n')
