"""Shared fixtures: tiny random Qwen3 checkpoints written by transformers, and ../shared paths."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

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
