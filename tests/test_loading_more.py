"""Loading, tokenizer and chat leftovers: config.json settings transformers reads differently,
tokenizer_config.json shapes, Qwen3's tool messages, the stop scan over special tokens, and an
unreachable hub."""

from __future__ import annotations

import json
import shutil

import pytest

from minitflow import demo_dir, generate
from minitflow.errors import UserError
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


def test_a_padded_vocabulary_row_is_sampled_and_decoded_as_transformers_does():
    """Qwen3's embedding has 151,936 rows and its tokenizer 151,669 ids. Like transformers'
    generate, the sampler does not mask the padded rows (only LatentMAS's judger does, as the
    official code, SamplingParams.vocab_rows): a model that favours one emits it, and its text is
    nothing, as transformers' decode gives it, no error, the token counted. Here the output layer
    is made to favour id 151,699 (a constant residual dimension only its row reads)."""
    from conftest import GOLDEN, need_shared
    import torch
    from transformers import AutoTokenizer
    from minitflow import LLM, SamplingParams
    from minitflow.model.tokenizer import Tokenizer
    from minitflow.model.weights import load_model
    d = need_shared(GOLDEN / "model")
    model, tok = load_model(d, torch.float32, "cpu"), Tokenizer(d)
    padded = tok.vocab_size + 30
    assert tok.vocab_size == 151669 < padded < model.cfg.vocab_size == 151936
    with torch.no_grad():
        j = int(model.norm.weight.argmax())  # a positive norm weight: the dimension stays positive
        model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.embed_tokens.weight))  # untied
        model.embed_tokens.weight[:, j] += 50.0
        model.lm_head.weight[padded, j] = 1.0  # the only logit above 0
    llm = LLM(model, tok, eos_token_ids=[])
    out = llm.generate([tok.encode("Hello")], SamplingParams(max_new_tokens=4, stop=["x"]))[0]
    hf = AutoTokenizer.from_pretrained(d)
    assert out.token_ids == [padded] * 4 and out.completion_tokens == 4 and out.finish_reason == "length"
    assert out.text == hf.decode(out.token_ids, skip_special_tokens=True) == ""
    mixed = [*tok.encode("Hello"), padded, *tok.encode(" world")]
    assert tok.decode(mixed) == hf.decode(mixed, skip_special_tokens=True) == "Hello world"


# ---- the chat template's tool role -------------------------------------------------------

TOOL_CHATS = [
    [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "<tool_call>\n{}\n</tool_call>"},
     {"role": "tool", "content": "sunny"}],
    # a run of results is one user turn; the assistant after it keeps its think block (no query since)
    [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
     {"role": "assistant", "content": "<think>\nplan\n</think>\n\ncall"},
     {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2\n"}, {"role": "tool", "content": ""},
     {"role": "assistant", "content": "<think>\nread\n</think>\n\nanswer"}, {"role": "user", "content": "thanks"}],
    [{"role": "tool", "content": "first"}, {"role": "user", "content": "q"}, {"role": "tool", "content": "a"},
     {"role": "assistant", "content": "<think>x</think>y"}, {"role": "tool", "content": "b"},
     {"role": "tool", "content": "c"}],
    [{"role": "user", "content": "q"}, {"role": "tool", "content": "t"},
     {"role": "user", "content": "<tool_response>\nold style\n</tool_response>"},
     {"role": "assistant", "content": "<think>k</think>done", "reasoning_content": "kept"}],
]


@pytest.mark.parametrize("chat", range(len(TOOL_CHATS)))
@pytest.mark.parametrize("thinking", [None, False])
def test_tool_messages_render_as_qwen3s_template(chat, thinking):
    """The tool role was refused; Qwen3's template renders tool results as <tool_response> blocks
    of one user turn per run, and they are no query: the think blocks of the assistant turns
    after them are kept as after a user's question."""
    from transformers import PreTrainedTokenizerFast
    from minitflow.model.tokenizer import render_chat
    from test_tokenizer import TEMPLATE
    assert 'message.role == "tool"' in TEMPLATE  # Qwen3's tool branch, word for word
    hf = PreTrainedTokenizerFast(tokenizer_file=str(DEMO / "tokenizer.json"))
    messages = TOOL_CHATS[chat]
    gen = messages[-1]["role"] != "assistant"
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    ref = hf.apply_chat_template(messages, chat_template=TEMPLATE, tokenize=False, add_generation_prompt=gen, **kwargs)
    assert render_chat(messages, add_generation_prompt=gen, enable_thinking=thinking) == ref
    assert "<tool_response>" in ref


def test_tool_calls_are_refused_not_dropped():
    """An assistant message's tool_calls (the template writes them as <tool_call> blocks) were left
    out of the text without a word."""
    from minitflow.model.tokenizer import render_chat
    call = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
    with pytest.raises(UserError, match=r"chat message 1 \(assistant\) has tool_calls: they are not supported"):
        render_chat([{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call]}])


# ---- stop strings over runs of special tokens -------------------------------------------

def _tokenizers():
    from conftest import GOLDEN, need_shared
    from minitflow.model.tokenizer import Tokenizer
    yield Tokenizer(DEMO)
    yield Tokenizer(need_shared(GOLDEN / "model"))


def test_special_ids_are_what_decode_drops_wherever_they_stand():
    """The stop scan leaves Tokenizer.special_ids out of its decodes: that is exact only because
    decode (skip_special_tokens) drops them from any stream, between byte pieces of one
    character included."""
    import random
    for tok in _tokenizers():
        special = sorted(tok.special_ids)
        assert tok.eos_token_id in special and tok.token_to_id("<|endoftext|>") in special
        pieces = tok.encode("中文 é😀 naïve </answer>\n\n")
        for seed in range(200):
            rng = random.Random(seed)
            ids = [rng.choice(special) if rng.random() < .4 else rng.choice(pieces if rng.random() < .7 else
                                                                             range(tok.vocab_size)) for _ in range(40)]
            assert tok.decode(ids) == tok.decode([i for i in ids if i not in tok.special_ids]), ids


def test_a_run_of_special_tokens_costs_linear_decode_work():
    """A model repeating <|endoftext|> under ignore_eos, with a stop string set: each special id
    widened the scan's window by one and decoded it all again, n^2 / 2 ids over the run (8,000
    specials: 32 million ids, seconds of CPU per row). Stops and text are as before."""
    from types import SimpleNamespace
    from minitflow.engine.engine import Engine
    from minitflow.engine.request import Request, Status
    from minitflow.engine.sampler import SamplingParams
    from minitflow.engine.llm import LLM
    tok = next(_tokenizers())
    decoded = []
    def decode(xs):
        decoded.append(len(xs))
        return tok.decode(xs)
    llm = LLM.load(DEMO, dtype="float32", device="cpu")
    assert llm.engine.skip_ids == llm.tokenizer.special_ids != frozenset()  # LLM hands them to the engine
    engine = SimpleNamespace(decode_text=decode, eos_token_ids=set(), skip_ids=llm.engine.skip_ids,
                             scheduler=SimpleNamespace(release=lambda r: None))
    engine._stop_string = lambda r: Engine._stop_string(engine, r)
    n = 4000
    stream = tok.encode("The answer") + [tok.token_to_id("<|endoftext|>"), tok.eos_token_id] * (n // 2) \
        + tok.encode(" is 4</answer> more")
    req = Request([1], SamplingParams(max_new_tokens=len(stream), stop=("</answer>",), ignore_eos=True),
                  status=Status.RUNNING)
    for t in stream:
        if Engine._accept(engine, req, t):
            break
    assert (req.finish_reason, req.text) == ("stop", "The answer is 4")
    assert len(req.output_ids) == len(stream) - len(tok.encode(" more"))
    assert sum(decoded) < 10 * len(stream), sum(decoded)


# ---- an unreachable hub -----------------------------------------------------------------

HUB_SCRIPT = """
import socket, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
held = []
threading.Thread(target=lambda: [held.append(srv.accept()) for _ in iter(int, 1)], daemon=True).start()
import os
os.environ["HF_ENDPOINT"] = sys.argv[1] or f"http://127.0.0.1:{srv.getsockname()[1]}"
from minitflow import generate
from minitflow.errors import run_cli
sys.exit(run_cli(generate.main, sys.argv[2:]))
"""


@pytest.mark.parametrize("endpoint", ["", "http://127.0.0.1:9"])
def test_an_unreachable_hub_is_one_line_in_seconds(endpoint, tmp_path):
    """A hub id not in the cache, online: snapshot_download asks the hub for the repo's info with
    no timeout, so a hub that takes the connection and never answers (a proxy, a firewall) held
    the run forever. Now the first request has the hub's HF_HUB_ETAG_TIMEOUT (2 s here); a port
    that refuses (127.0.0.1:9) is one line at once, as before."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_ETAG_TIMEOUT="2", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", HUB_SCRIPT, endpoint, *map(str, gen_args("--model", "org/model"))],
                              capture_output=True, text=True, env=env, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("no answer from the hub held the run for 90 s")
    took = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: could not get org/model: the Hugging Face hub at http://127.0.0.1:"), lines[0]
    assert ("ReadTimeout" if not endpoint else "ConnectError") in lines[0] and "HF_HUB_ETAG_TIMEOUT=2 s" in lines[0]
    assert took < 45, took  # the interpreter and imports included, on a busy machine


def test_a_hub_that_answers_goes_on_to_the_download(monkeypatch):
    """The timed first request is only a probe: a hub that answers, or answers with an HTTP error
    (gated, private, no such repo: snapshot_download words those), goes on to snapshot_download
    as before."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import huggingface_hub
    import huggingface_hub.constants
    from minitflow.model.weights import resolve_model_dir

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *a):
            pass
    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    downloads = []
    def snapshot(name, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise FileNotFoundError(name)
        downloads.append(name)
        return str(DEMO)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    try:
        assert resolve_model_dir("org/model") == DEMO and downloads == ["org/model"]  # a 404 answer
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, name, timeout=None: None)
        assert resolve_model_dir("org/model") == DEMO and downloads == ["org/model"] * 2  # the repo's info
    finally:
        server.shutdown()


# ---- a hub that answers, then stalls ------------------------------------------------------

HUB_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A local hub serving the demo model as org/model, online, the cache in tmp_path/hub and
    HF_HUB_DOWNLOAD_TIMEOUT = HF_HUB_ETAG_TIMEOUT = 1 s. Yields its state: set state["stall"] to
    "file" (headers and a third of model.safetensors, then nothing) or "info" (the repo's info
    answered once, the second ask never)."""
    import hashlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import huggingface_hub.constants as hub
    sha, release = "a" * 40, threading.Event()
    state = {"stall": None, "infos": 0}

    class Hub(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _send(self, body: bytes, head: bool = False, **headers):
            self.send_response(200)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if head:
                return
            if state["stall"] == "file" and headers.get("X-Repo-Commit") and len(body) > 1_000_000:
                self.wfile.write(body[:len(body) // 3])
                self.wfile.flush()
                release.wait()
                return
            self.wfile.write(body)

        def _file(self, head: bool):
            name = self.path.split("/resolve/")[1].split("/", 1)[1]
            data = (DEMO / name).read_bytes()
            self._send(data, head, **{"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})

        def do_HEAD(self):
            self._file(head=True)

        def do_GET(self):
            path = self.path.split("?")[0]
            if "/resolve/" in path:
                return self._file(head=False)
            if "/tree/" in path:
                files = [{"type": "file", "path": f, "size": (DEMO / f).stat().st_size, "oid": "0" * 40} for f in HUB_FILES]
                return self._send(json.dumps(files).encode())
            if path.startswith("/api/models/org/model"):
                state["infos"] += 1
                if state["stall"] == "info" and state["infos"] > 1:
                    release.wait()
                    return
                return self._send(json.dumps({"id": "org/model", "sha": sha, "siblings": []}).encode())
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(hub, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for knob in ("HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.setattr(hub, knob, 1)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    yield state
    release.set()
    server.shutdown()


@pytest.mark.parametrize("cut", ["model.safetensors", "tokenizer.json"])
def test_a_download_cut_short_offline_names_what_the_snapshot_lacks(cut, fake_hub, tmp_path, monkeypatch):
    """huggingface-hub (2.4, installed) keeps the repo's file list beside a download and, offline, refuses
    a snapshot missing one of those files as IncompleteSnapshotError: that was "org/model is not
    in the Hugging Face cache", for a cache that holds all but the weights. Now it says what the
    snapshot lacks, as for caches without the file list (the weights: our own check; another
    file: the one huggingface-hub names)."""
    from minitflow.model.weights import resolve_model_dir
    snap = resolve_model_dir("org/model", need_tokenizer=True)  # a real download from the fake hub
    assert sorted(p.name for p in snap.iterdir()) == sorted(HUB_FILES)
    assert list((tmp_path / "hub").rglob("trees/*.json")), "the hub's file list, which the refusal reads"
    (snap / cut).resolve().unlink()
    (snap / cut).unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        resolve_model_dir("org/model", need_tokenizer=True)
    assert str(e.value).startswith(f"org/model is only partly in the Hugging Face cache: {snap} lacks {cut}, "
                                   "and HF_HUB_OFFLINE is set"), e.value


def test_a_cached_weight_file_cut_short_names_the_command_that_fetches_it_again(fake_hub, tmp_path, capsys,
                                                                                 monkeypatch):
    """A blob cut short (a copy of the cache to an offline machine interrupted) was "re-download or
    re-save the model"; the plain `hf download org/model` that led to keeps a file its cache holds,
    so the same error came back. The error names the command that replaces it, which, run as
    written (against the fake hub), does: the model then loads."""
    import os
    import shlex
    import subprocess
    import sys
    import huggingface_hub.constants as hub
    from minitflow.model.weights import read_weights, resolve_model_dir
    snap = resolve_model_dir("org/model", need_tokenizer=True)  # a real download from the fake hub
    blob = (snap / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-100])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    error = fails(capsys, generate.main, gen_args("--model", "org/model"), f"{snap / 'model.safetensors'} is not a "
                  "readable safetensors file", f"fetch it again with `hf download org/model model.safetensors "
                  f"--revision {snap.name} --force-download` (a plain `hf download` keeps the cached copy)")
    command = shlex.split(error.split("`")[1])
    hf = [sys.executable, "-c", "import sys; from huggingface_hub.cli.hf import main; sys.argv[0] = 'hf'; main()"]
    env = {**os.environ, "HF_ENDPOINT": hub.ENDPOINT, "HF_HUB_CACHE": hub.HF_HUB_CACHE, "HF_HUB_OFFLINE": "0"}
    for run in (command[1:-1], command[1:]):  # the plain download first: it keeps the copy cut short
        subprocess.run(hf + run, env=env, check=True, capture_output=True, timeout=120)
        assert blob.stat().st_size == (DEMO / "model.safetensors").stat().st_size - 100 * (run != command[1:])
    assert read_weights(snap)[0].num_hidden_layers == 4


def _stalls(resolve) -> UserError:
    """`resolve()`'s UserError, run on a thread so that a hang fails the test instead of holding it."""
    import threading
    out: list[object] = []

    def run():
        try:
            out.append(resolve())
        except Exception as e:
            out.append(e)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "a stalled hub held the download for 60 s"
    assert isinstance(out[0], UserError), out
    return out[0]


def test_a_hub_that_stalls_mid_file_names_the_file_and_its_timeout(fake_hub, tmp_path, monkeypatch):
    """The hub sends model.safetensors' headers and a third of it, then nothing. huggingface-hub
    times each read (HF_HUB_DOWNLOAD_TIMEOUT) and retries five times; its ReadTimeout then was
    "could not get org/model from the Hugging Face hub (ReadTimeout)", no word of which file
    nor which knob. Now both are named; the third never becomes a blob a later offline run
    trusts: offline, the snapshot lacks model.safetensors."""
    from minitflow.model.weights import resolve_model_dir
    fake_hub["stall"] = "file"
    error = str(_stalls(lambda: resolve_model_dir("org/model", need_tokenizer=True)))
    assert error.startswith("could not get org/model: the Hugging Face hub at http://127.0.0.1:"), error
    assert "stopped sending model.safetensors (ReadTimeout: nothing for HF_HUB_DOWNLOAD_TIMEOUT=1 s)" in error, error
    blobs = sorted(p.stat().st_size for p in (tmp_path / "hub").rglob("blobs/*"))  # no <etag>.incomplete either
    assert blobs == sorted((DEMO / f).stat().st_size for f in HUB_FILES if f != "model.safetensors"), blobs
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="only partly in the Hugging Face cache: .* lacks model.safetensors, "):
        resolve_model_dir("org/model", need_tokenizer=True)


def test_a_hub_that_stalls_after_the_probe_is_one_line_not_a_hang(fake_hub):
    """_hub_answers asks the repo's info with a timeout; snapshot_download asks it again, and for
    the file list, with none: a hub that answered the first ask and not the second held the run
    forever. Every request huggingface-hub sends without a timeout now has HF_HUB_ETAG_TIMEOUT."""
    from minitflow.model.weights import resolve_model_dir
    fake_hub["stall"] = "info"
    error = str(_stalls(lambda: resolve_model_dir("org/model")))
    assert fake_hub["infos"] == 2, fake_hub
    assert error.startswith("could not get org/model: the Hugging Face hub at http://127.0.0.1:"), error
    assert "stopped sending its answer to GET /api/models/org/model/revision/main (ReadTimeout: nothing for " \
           "HF_HUB_ETAG_TIMEOUT=1 s)" in error, error


def test_the_timeout_hook_leaves_a_requests_session_alone(monkeypatch):
    """huggingface-hub before 1.0 (pyproject allows 0.34) sends with a requests.Session, which has
    no request hooks: putting the timeout hook on it was an AttributeError before any download."""
    import huggingface_hub
    import requests
    from minitflow.model.weights import _time_every_request
    session = requests.Session()
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: session)
    _time_every_request()
    assert not hasattr(session, "event_hooks") and session.hooks == {"response": []}


def test_the_timeout_hook_is_removed_after_the_download(monkeypatch):
    """The hook sits on huggingface-hub's process-wide client: left there, every later hub request
    of the process (datasets' downloads, a caller's own) had a 10 s timeout it never asked for."""
    import huggingface_hub
    import minitflow.model.weights as weights
    hooks = getattr(huggingface_hub.get_session(), "event_hooks", {}).get("request")
    if hooks is None:
        pytest.skip("huggingface-hub < 1.0: no request hooks")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "_hub_answers", lambda name, other="": None)
    during = []
    def snapshot(name, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise FileNotFoundError(name)
        during.append(weights._timed in hooks)
        return str(DEMO)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert weights.resolve_model_dir("org/model") == DEMO
    assert during == [True] and weights._timed not in hooks
