"""Shared fixtures: tiny random Qwen3 checkpoints (written by transformers, by helpers.write_tiny_qwen3 or
by the demo's builders), the models and generator loaded from them, and ../shared paths."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from helpers import DEMO, EOS, write_tiny_qwen3
from minitflow import demo
from minitflow.engine.llm import LLM
from minitflow.model.tokenizer import Tokenizer
from minitflow.model.weights import load_model
from minitflow.tflow.checkpoint import arch_for, random_generator

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "reference" / "golden-small"


def _transformers_logs_to_the_session_stderr() -> None:
    """transformers' log handler keeps the sys.stderr of its first import: first imported inside a
    test under capsys, it wrote every later warning to that closed stream (a "Logging error"
    traceback in a later test's stderr, which a one-line-error check then failed on)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # transformers is a test-time reference; tests that need it import it themselves
        return
    hf_logging.get_logger("transformers")


_transformers_logs_to_the_session_stderr()


def need_shared(path: Path = SHARED) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only on developer and CI machines)")
    return path


def fuzz_seeds(suite: int) -> range:
    """The seeds a fuzz test runs: its first `suite` in the suite, or MINITFLOW_FUZZ_SEEDS=A:B for
    a side run (a soak after a change to the engine: `MINITFLOW_FUZZ_SEEDS=60:1060 pytest -q
    tests/test_engine_fuzz.py`). A malformed value stops the collection with one line rather than
    running the suite's seeds as if the soak had passed."""
    value = os.environ.get("MINITFLOW_FUZZ_SEEDS", "")
    if not value:
        return range(suite)
    m = re.fullmatch(r"(\d+):(\d+)", value.strip())
    if m is None or int(m[1]) >= int(m[2]):
        raise pytest.UsageError(f"MINITFLOW_FUZZ_SEEDS={value!r}: give A:B, the seeds A to B-1 with A < B")
    return range(int(m[1]), int(m[2]))


def make_tiny_qwen3(out_dir: Path, *, hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16,
                    intermediate=96, vocab=160, tie=True, seed=0, scale=1.0, eps=1e-6):
    """Save a random Qwen3ForCausalLM (float32, safetensors) and return the HF model."""
    from transformers import Qwen3Config as HFConfig, Qwen3ForCausalLM
    torch.manual_seed(seed)
    cfg = HFConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                   num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                   head_dim=head_dim, tie_word_embeddings=tie, max_position_embeddings=512,
                   rms_norm_eps=eps, eos_token_id=vocab - 1, bos_token_id=vocab - 2)
    model = Qwen3ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.02 * scale * (4 if "proj" in name else 10))
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    make_tiny_qwen3(d)
    return d


SHARP = 3.0  # weights 3x make_tiny_qwen3's default: at 1x greedy rows repeat one token, so a wrong key or value rarely shows


@pytest.fixture(scope="session")
def sharp_dir(tmp_path_factory) -> Path:
    """A tiny model whose greedy outputs vary token to token: what batch-invariance tests need to see a
    wrong key, value or LoRA row in the tokens."""
    d = tmp_path_factory.mktemp("sharp")
    make_tiny_qwen3(d, scale=SHARP)
    return d


# The sharp model and a random generator whose LoRA changes its tokens (the request-pipeline fuzzers).
@pytest.fixture(scope="module")
def model(sharp_dir):
    """Greedy rows that vary token to token: a wrong key, value or LoRA row shows in them (at 1x a
    wrong key or value rarely changes a token)."""
    return load_model(sharp_dir, torch.float32, "cpu")


@pytest.fixture(scope="module")
def generator(model):
    """A random generator whose LoRA matters: the output projections 30x, without their bias (a
    bias would give every question the same factors), and its cross-attention's queries and keys
    3x (near-uniform attention over the condition barely saw a row moved by one position)."""
    gen = random_generator(model.cfg, seed=3, arch=arch_for(model.cfg, dict(d_model=64, head_dim=16, output_dim=16,
                                                                            token_dim=16))).eval()
    with torch.no_grad():
        for proj in (gen.parameter_generator.model.proj_out_A, gen.parameter_generator.model.proj_out_B):
            proj.weight.mul_(30)
            proj.bias.zero_()
        for block in gen.parameter_generator.model.blocks:
            block.self_attn_cross.W_q.weight.mul_(3)
            block.self_attn_cross.W_k.weight.mul_(3)
    return gen


# LatentMAS' tiny untied model on the demo's 1,024-token tokenizer, and that tokenizer.
@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple:
    d = write_tiny_qwen3(tmp_path_factory.mktemp("latentmas-fuzz"), DEMO, tie=False, seed=3, vocab=1024,
                         bos=1019, eos=EOS)
    return load_model(d, torch.float32, "cpu"), Tokenizer(d)


# The trainer's tiny model (its own byte-level tokenizer and rows to train on), and an LLM on it.
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Qwen3 with the demo's byte-level tokenizer, plus train/eval rows of the demo task."""
    d = tmp_path_factory.mktemp("tiny_train")
    rows = demo.make_examples(40, seed=3)
    tok = demo.build_tokenizer(demo.corpus(rows[:8]), vocab_size=400)
    demo.write_tokenizer(tok, d)
    demo.write_model_config(d, tok, demo.BackboneShape(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                       num_attention_heads=4, num_key_value_heads=2, head_dim=8))
    from minitflow.model.config import Qwen3Config
    from minitflow.model.qwen3 import Qwen3Model
    model = Qwen3Model(Qwen3Config.from_dir(d), 512)
    demo.init_weights(model, std=0.1, seed=1)
    demo.save_backbone(model, d)
    demo.write_jsonl(rows[:32], d / "train.jsonl")
    demo.write_jsonl(rows[32:], d / "eval.jsonl")
    return d


@pytest.fixture(scope="module")
def llm(tiny) -> LLM:
    return LLM.load(tiny, dtype="float32", device="cpu")
