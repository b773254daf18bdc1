"""minitflow: a small, fast inference engine for TFlow multi-agent collaboration on Qwen3.

The public names are imported on first use (PEP 562): `import minitflow` does not import torch,
so the command lines that only read result files (score, report) start without it.
"""

import importlib
from typing import TYPE_CHECKING

from minitflow.errors import UserError

if TYPE_CHECKING:  # the names below, for type checkers (and tests/test_structure.py's import graph)
    from minitflow.engine.llm import LLM, Generation
    from minitflow.engine.sampler import SamplingParams
    from minitflow.files import demo_dir
    from minitflow.model.config import Qwen3Config
    from minitflow.model.lora import LoraWeights, build_lora
    from minitflow.model.qwen3 import Capture, Qwen3Model

_LAZY = {"LLM": "minitflow.engine.llm", "Generation": "minitflow.engine.llm",
         "SamplingParams": "minitflow.engine.sampler", "Qwen3Config": "minitflow.model.config",
         "LoraWeights": "minitflow.model.lora", "build_lora": "minitflow.model.lora",
         "Capture": "minitflow.model.qwen3", "Qwen3Model": "minitflow.model.qwen3", "demo_dir": "minitflow.files"}

__all__ = ["LLM", "Generation", "SamplingParams", "UserError", "Qwen3Config", "LoraWeights",
           "build_lora", "Capture", "Qwen3Model", "demo_dir"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """A public name's object, imported from its module on first access and then kept here."""
    if name not in _LAZY:
        raise AttributeError(f"module 'minitflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
