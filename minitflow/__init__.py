"""minitflow: a small, fast inference engine for TFlow multi-agent collaboration on Qwen3."""

from minitflow.engine.llm import LLM, Generation
from minitflow.engine.sampler import SamplingParams
from minitflow.errors import UserError
from minitflow.files import demo_dir
from minitflow.model.config import Qwen3Config
from minitflow.model.lora import LoraWeights, build_lora
from minitflow.model.qwen3 import Capture, Qwen3Model

__all__ = ["LLM", "Generation", "SamplingParams", "UserError", "Qwen3Config", "LoraWeights",
           "build_lora", "Capture", "Qwen3Model", "demo_dir"]
__version__ = "0.1.0"
