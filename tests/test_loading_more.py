"""Loading, tokenizer and chat leftovers: config.json settings transformers reads differently,
tokenizer_config.json shapes, Qwen3's tool messages, the stop scan over special tokens, and an
unreachable hub."""

from __future__ import annotations

import json
import shutil

import pytest

from minitflow import demo_dir, generate
from minitflow.model.config import Qwen3Config
from test_cli_errors import fails, gen_args, model_copy, no_model_load

DEMO = demo_dir()


def _config(tmp_path, **changes):
    """A copy of the demo's small files with config.json changed (None: the key removed)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    d = model_copy(tmp_path)
    cfg = {k: v for k, v in {**json.loads((d / "config.json").read_text()), **changes}.items() if v is not None}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


# ---- config.json ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [True, "false"])
def test_attention_bias_is_refused_before_the_weights_load(value, tmp_path, capsys, monkeypatch):
    """attention_bias true (or "false", which transformers reads as true) makes transformers build
    q/k/v/o biases, zeros where the file has none; minitflow's attention has none and loaded
    such a config.json without a word, another model than transformers'."""
    no_model_load(monkeypatch)
    d = _config(tmp_path, attention_bias=value)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")
    words = ("attention_bias true is not supported",) if value is True else ("attention_bias must be true or false",)
    fails(capsys, generate.main, gen_args("--model", d), str(d / "config.json"), *words)
    from transformers import AutoConfig
    if value is True:  # what transformers does with it: biased projections
        assert AutoConfig.from_pretrained(d).attention_bias is True
    Qwen3Config.from_dir(_config(tmp_path / "f", attention_bias=False))  # false (Qwen3's) still loads


def test_a_missing_max_position_embeddings_is_transformers_default(tmp_path):
    """Absent, it was 40,960 (Qwen3's released value) where transformers' Qwen3Config builds the
    model with 32,768 positions: the same file, another context length."""
    from transformers import AutoConfig
    d = _config(tmp_path, max_position_embeddings=None)
    assert "max_position_embeddings" not in json.loads((d / "config.json").read_text())
    want = AutoConfig.from_pretrained(d).max_position_embeddings
    assert Qwen3Config.from_dir(d).max_position_embeddings == want == 32768


# ---- tokenizer_config.json --------------------------------------------------------------

@pytest.mark.parametrize("text,word", [
    ('[{"eos_token": "<|endoftext|>"}]', "must hold a JSON object, got list"),
    ('{"eos_token": ["<|endoftext|>"]}', "eos_token must be a token string or an AddedToken object"),
    ('{"eos_token": {"__type": "AddedToken", "content": 1020}}', "eos_token must be a token string"),
    ('{"eos_token": 1020}', "eos_token must be a token string"),
    ('{"pad_token": ["<|im_end|>"]}', "pad_token must be a token string")])
def test_a_tokenizer_config_of_the_wrong_shape_is_one_line(text, word, tmp_path, capsys, monkeypatch):
    """A tokenizer_config.json that is a list was read as {} and an eos_token that is a list, an
    id or a dict without content as absent: <|im_end|> stood in for the eos the file names, a
    model ending on another token would not stop. transformers refuses each of them."""
    no_model_load(monkeypatch)
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")
    (d / "tokenizer_config.json").write_text(text)
    fails(capsys, generate.main, gen_args("--model", d), str(d / "tokenizer_config.json"), word)
    from transformers import AutoTokenizer
    with pytest.raises((TypeError, AttributeError, ValueError)):
        AutoTokenizer.from_pretrained(d)
