"""config.json settings (minitflow/model/config.py) that transformers reads differently or that
minitflow would run as another model (attention_bias, a missing max_position_embeddings,
layer_types, sliding windows, tie_word_embeddings against the weights): each refused before the
weights load, or run as transformers runs it."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from minitflow import demo_dir, generate
from minitflow.errors import UserError
from minitflow.model.config import Qwen3Config
from helpers import fails, gen_args, model_copy, no_model_load


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


@pytest.mark.parametrize("changes,words", [
    ({"layer_types": ["full_attention", "sliding_attention"]}, ("layer_types holds 'sliding_attention'",)),
    ({"layer_types": ["full_attention"]}, ("layer_types lists 1 layers, num_hidden_layers is 4",)),
    ({"model_type": "qwen2"}, ("model_type='qwen2'", "is not Qwen3")),
    ({"model_type": "qwen3_moe"}, ("model_type='qwen3_moe'", "is not Qwen3")),
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}}},
     ("rope_parameters holds per-layer-type RoPE settings ('full_attention')",)),
    ({"rope_parameters": {"rope_type": None, "rope_theta": 1e6}}, ("rope type None is not supported",))])
def test_a_config_minitflow_would_run_as_another_model_is_refused(changes, words, tmp_path, capsys, monkeypatch):
    """Each loaded without a word and ran as plain Qwen3: layer_types naming sliding (or any
    other) attention ran full attention in every layer, and a list of the wrong length passed
    (transformers refuses it); a model_type of "qwen2" or "qwen3_moe" beside Qwen3ForCausalLM
    passed on the architecture, where transformers builds its model from model_type (Qwen2: q/k/v
    biases, no q/k norms); per-layer-type rope_parameters (transformers 5's nested form, YaRN
    inside) and a null rope_type ran default RoPE, where transformers' Qwen3 finds no rope type."""
    no_model_load(monkeypatch)
    d = _config(tmp_path, **changes)
    fails(capsys, generate.main, gen_args("--model", d), str(d / "config.json"), *words)
    if "model_type" in changes:  # transformers builds that model, not Qwen3
        from transformers import AutoConfig
        assert AutoConfig.from_pretrained(d).model_type == changes["model_type"]
    full = _config(tmp_path / "full", layer_types=["full_attention"] * 4, use_sliding_window=False, sliding_window=4)
    assert Qwen3Config.from_dir(full).num_hidden_layers == 4  # transformers' own layer_types (all full) still load


@pytest.mark.parametrize("changes,line", [
    ({"use_sliding_window": True, "sliding_window": 8, "max_window_layers": "4"},
     "max_window_layers must be an integer, got '4'"),
    ({"rope_scaling": "default"}, "rope_scaling must be an object or null, got 'default'"),
    ({"rope_parameters": []}, "rope_parameters must be an object or null, got []"),
    ({"eos_token_id": -1}, "eos_token_id must be a token id or a list of them, got -1"),
    ({"eos_token_id": [1021, "1019"]}, "eos_token_id must be a token id or a list of them, got [1021, '1019']"),
    ({"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    ({"rms_norm_eps": 0}, "rms_norm_eps must be a small positive number, got 0"),
    ({"rms_norm_eps": "1e-6"}, "rms_norm_eps must be a small positive number, got '1e-6'"),
    ({"rope_theta": float("inf")}, "rope_theta must be a positive number, got inf"),
    ({"rope_theta": None, "rope_parameters": {"rope_type": "default", "rope_theta": -1.0}},
     "rope_theta must be a positive number, got -1.0"),
    ({"model_type": None, "architectures": "LlamaForCausalLM"}, "model_type=None architectures=['LlamaForCausalLM'] "
                                                                "is not Qwen3")])
def test_a_config_value_of_the_wrong_kind_is_one_line_naming_the_file(changes, line):
    """Each a one-line error naming the file and the value, before anything is built from it."""
    d = {**json.loads((DEMO / "config.json").read_text()), **changes}
    with pytest.raises(UserError, match="^" + re.escape(f"cfg.json: {line}")):
        Qwen3Config.from_dict(d, source="cfg.json")


def test_a_config_naming_its_architecture_without_a_list_or_model_type_loads(tmp_path):
    """"architectures": "Qwen3ForCausalLM" (a string, no model_type) is read as the one-item list,
    not as its letters; a folder without config.json is one line."""
    d = {k: v for k, v in json.loads((DEMO / "config.json").read_text()).items() if k != "model_type"}
    assert Qwen3Config.from_dict({**d, "architectures": "Qwen3ForCausalLM"}) == Qwen3Config.from_dir(DEMO)
    with pytest.raises(UserError, match=rf"^no config.json in {re.escape(str(tmp_path))}: not a HF model directory$"):
        Qwen3Config.from_dir(tmp_path)


@pytest.mark.parametrize("changes", [
    {"use_sliding_window": True},  # the demo's max_window_layers is its 4 layers
    {"use_sliding_window": True, "max_window_layers": 9},
    {"use_sliding_window": True, "max_window_layers": None},  # transformers' default, 28
    {"use_sliding_window": True, "max_window_layers": 0, "sliding_window": None},
    {"use_sliding_window": True, "max_window_layers": 0, "layer_types": ["full_attention"] * 4},
    {"use_sliding_window": False, "max_window_layers": 0, "sliding_window": 8}])
def test_sliding_window_settings_under_which_no_layer_slides_load(changes, tmp_path):
    """use_sliding_window true was refused whatever the rest said, yet transformers gives a window
    only to layers >= max_window_layers, with a sliding_window, or as layer_types name them: here
    it builds every layer with full attention, as minitflow runs them, and so these load."""
    from transformers import AutoConfig
    d = _config(tmp_path, **changes)  # a None removes the key: transformers' default
    if "sliding_window" in changes:  # (the demo's is null)
        (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()),
                                                   "sliding_window": changes["sliding_window"]}))
    assert "sliding_attention" not in AutoConfig.from_pretrained(d).layer_types
    assert Qwen3Config.from_dir(d).num_hidden_layers == 4


@pytest.mark.parametrize("changes,words", [
    ({"use_sliding_window": True, "max_window_layers": 3}, "transformers gives layers 3-3 of 4 a window"),
    ({"use_sliding_window": True, "max_window_layers": 0, "sliding_window": 2}, "sliding_window 2 and max_window_layers "
                                                                                 "0, transformers gives layers 0-3")])
def test_sliding_window_settings_under_which_a_layer_slides_are_refused(changes, words, tmp_path, capsys, monkeypatch):
    """Still refused before the load, naming the layers transformers gives a window."""
    from transformers import AutoConfig
    no_model_load(monkeypatch)
    d = _config(tmp_path, **changes)
    assert "sliding_attention" in AutoConfig.from_pretrained(d).layer_types
    fails(capsys, generate.main, gen_args("--model", d), str(d / "config.json"),
          "sliding-window attention is not supported", words)


def test_a_sliding_window_on_no_layer_runs_as_transformers_runs_it(tiny_dir, tmp_path):
    """use_sliding_window true with max_window_layers = num_hidden_layers and a window of 4, far
    shorter than the 20 tokens: transformers' logits, which one layer past max_window_layers
    would change (so the window is no no-op there, and minitflow refuses it)."""
    import torch
    from transformers import AutoModelForCausalLM
    from minitflow.model.weights import load_model
    d = tmp_path / "model"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("layer_types", None)  # transformers 5 saved them; they would overrule max_window_layers
    layers = cfg["num_hidden_layers"]
    ids = torch.randint(0, cfg["vocab_size"], (1, 20), generator=torch.Generator().manual_seed(0))
    logits = {}
    for first in (layers, layers - 1):
        (d / "config.json").write_text(json.dumps({**cfg, "use_sliding_window": True, "sliding_window": 4,
                                                   "max_window_layers": first}))
        with torch.no_grad():
            logits[first] = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()(ids).logits
            if first == layers:
                ours = load_model(d, torch.float32)(ids, torch.arange(20)[None], None, 20)
                torch.testing.assert_close(ours, logits[first], atol=1e-4, rtol=0)
            else:
                with pytest.raises(UserError, match="sliding-window attention is not supported"):
                    load_model(d, torch.float32)
    assert (logits[layers] - logits[layers - 1]).abs().max() > 1e-3


def test_a_tied_config_with_another_lm_head_in_the_weights_is_refused(tmp_path, capsys, monkeypatch):
    """tie_word_embeddings true with an lm_head.weight in the files that is not a copy of the
    embeddings: minitflow dropped it and ran the embeddings as the output layer, transformers 5
    unties and runs it (logits far apart). Refused before the load, by the command line's check
    too; the remedy the line names (tie_word_embeddings false) gives transformers' logits."""
    import torch
    from safetensors.torch import load_file, save_file
    from conftest import make_tiny_qwen3
    from minitflow.model.weights import load_model, read_weights
    from transformers import AutoModelForCausalLM
    make_tiny_qwen3(tmp_path, tie=True)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    tensors["lm_head.weight"][-1, 0] += 0.5  # one value of the last row differs
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    for load in (read_weights, load_model):
        with pytest.raises(UserError, match="ties the output layer to the embeddings .* differs from "
                                            "model.embed_tokens.weight: set tie_word_embeddings false"):
            load(tmp_path)
    ids = torch.tensor([[3, 17, 42, 5, 9]])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()(ids).logits
        cfg = json.loads((tmp_path / "config.json").read_text())
        (tmp_path / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": False}))
        ours = load_model(tmp_path, torch.float32)(ids, torch.arange(5)[None], None, 5)
    assert (ours - ref).abs().max() <= 1e-4
    no_model_load(monkeypatch)  # the command lines' check before the load names it too: exit 2, one line
    (tmp_path / "cli").mkdir()
    d = model_copy(tmp_path / "cli")
    tensors = load_file(DEMO / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].flip(0).contiguous()
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    fails(capsys, generate.main, gen_args("--model", d), "ties the output layer to the embeddings")


def test_a_tied_lm_head_stored_in_another_dtype_is_compared_by_its_values(tiny_dir, tmp_path):
    """A tied config's lm_head.weight stored as float64 beside float32 embeddings: an exact copy
    of their values loads (the embeddings are the output layer), one value off is refused."""
    import torch
    from safetensors.torch import load_file, save_file
    from minitflow.model.weights import load_model
    shutil.copytree(tiny_dir, tmp_path / "m")
    tensors = load_file(tiny_dir / "model.safetensors")
    emb = tensors["model.embed_tokens.weight"]
    for off, loads in ((0.0, True), (1e-3, False)):
        head = emb.double()
        head[3, 1] += off
        save_file({**tensors, "lm_head.weight": head}, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
        if loads:
            assert torch.equal(load_model(tmp_path / "m", torch.float32).lm_head.weight, emb)
        else:
            with pytest.raises(UserError, match="yet the weights hold an lm_head.weight that differs from "
                                                "model.embed_tokens.weight"):
                load_model(tmp_path / "m", torch.float32)


def test_a_tied_sharded_index_placing_lm_head_in_a_shard_without_it_is_one_line(tmp_path):
    """The tied lm_head.weight is read only to compare it with the embeddings: an index that places
    it in a shard that does not hold it is the index's one line, not a SafetensorError traceback."""
    import torch
    from conftest import make_tiny_qwen3
    from minitflow.model.weights import load_model
    make_tiny_qwen3(tmp_path / "one", tie=True).save_pretrained(tmp_path, max_shard_size="20KB")
    index = tmp_path / "model.safetensors.index.json"
    cfg = json.loads(index.read_text())
    cfg["weight_map"]["lm_head.weight"] = cfg["weight_map"]["model.norm.weight"]
    index.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="places tensor lm_head.weight in model-.*, which does not hold it"):
        load_model(tmp_path, torch.float32)
