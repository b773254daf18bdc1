"""Bad input on every command line: one `error: ...` line on stderr, exit code 2, no traceback,
and no output lost or half-written. One test per kind of bad input (the CLIs run in-process)."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from minitflow import cli, demo, demo_dir, evaluate, generate, report, train
from minitflow.cli import check_model_args, check_questions_fit, sampling_from
from minitflow.engine.llm import LLM, resolve_device, resolve_dtype
from minitflow.errors import UserError, run_cli
from minitflow.eval import evaluation
from minitflow.files import check_output_dir, check_output_file, replacing, write_text
from minitflow.flags import OFFICIAL_TEMPERATURE, OFFICIAL_TOP_P, add_model_args
from minitflow.tflow import training
from minitflow.tflow.checkpoint import load_checkpoint, save_checkpoint
from helpers import DEMO, fails, gen_args, model_copy, no_model_load

GSM8K_ROWS = [{"question": "The red box holds 7. The blue box holds 3. The green box holds 9. "
                           "How many does the blue box hold?", "answer": "Look it up.\n#### 3"}]


def gsm8k_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    return path


def train_args(tmp_path: Path, *extra) -> list:
    rows = tmp_path / "train.jsonl"
    if not rows.exists():
        rows.write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n")
    return ["--model", DEMO, "--train", rows, "--out", tmp_path / "o.pt", "--no-progress", *extra]


def read_only_target() -> Path:
    """A path no one may create, root included (sysfs); skip where there is none."""
    base = Path("/sys/kernel")
    if not base.is_dir() or os.access(base, os.W_OK) and _writable(base):
        pytest.skip("no read-only file system here")
    return base / "minitflow-test"


def _writable(d: Path) -> bool:
    try:
        (d / ".probe").touch()
        (d / ".probe").unlink()
        return True
    except OSError:
        return False


# ---- model files --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage"])
def test_corrupt_safetensors(kind, tmp_path, capsys):
    d = model_copy(tmp_path)
    data = (DEMO / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes({"empty": b"", "truncated": data[:len(data) // 2],
                                           "garbage": os.urandom(4096)}[kind])
    fails(capsys, generate.main, gen_args("--model", d), "safetensors")


def test_config_that_disagrees_with_the_weights_is_refused_before_allocating(tmp_path, capsys):
    """The model was allocated from config.json first: a vocab_size of 10**11 was an OOM traceback."""
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")
    (d / "config.json").write_text(json.dumps({**json.loads((DEMO / "config.json").read_text()), "vocab_size": 10**11}))
    fails(capsys, generate.main, gen_args("--model", d), "model.embed_tokens.weight has shape (1024, 128)")


@pytest.mark.parametrize("method", ["baseline", "tflow"])
def test_a_layer_count_the_weights_do_not_hold_is_refused_before_building_anything(method, tmp_path, capsys):
    """num_hidden_layers 10**6 built the (meta) model, and for tflow the generator, before any
    shape check: minutes, or memory, before the error."""
    import time
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")
    cfg = json.loads((DEMO / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 10**6}))
    start = time.monotonic()
    fails(capsys, generate.main, gen_args("--model", d, "--method", method,
                                          *(["--checkpoint", DEMO / "tflow.pt"] if method == "tflow" else [])),
          "num_hidden_layers 1000000", f"hold {cfg['num_hidden_layers']} layers")
    assert time.monotonic() - start < 10


def test_model_safetensors_wins_over_a_stale_shard_index(tmp_path):
    """As in transformers (whose save_pretrained leaves an old index behind): the index was read
    first, so its stale shards loaded instead, or a missing one refused a model HF loads."""
    from safetensors.torch import load_file, save_file
    from minitflow.model.weights import load_model
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")
    tensors = load_file(DEMO / "model.safetensors")
    save_file({k: torch.zeros_like(v) for k, v in tensors.items()}, d / "model-00001-of-00001.safetensors")
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "model-00001-of-00001.safetensors" for k in tensors}}))
    model = load_model(d, torch.float32)
    assert torch.equal(model.norm.weight, tensors["model.norm.weight"])
    (d / "model-00001-of-00001.safetensors").unlink()
    assert torch.equal(load_model(d, torch.float32).norm.weight, tensors["model.norm.weight"])


@pytest.mark.parametrize("bad,word", [(lambda t: t[:, :5].contiguous(), "has shape (128, 5)"),
                                      (lambda t: t.to(torch.int32), "is I32, expected floating point")])
def test_bad_tensor_is_refused_before_any_tensor_is_read(bad, word, tmp_path, capsys, monkeypatch):
    """A wrong shape or dtype in the last layer was found only after every tensor before it was read."""
    from safetensors.torch import load_file, save_file
    import minitflow.model.weights as weights
    d = model_copy(tmp_path)
    tensors = load_file(DEMO / "model.safetensors")
    name = "model.layers.3.mlp.down_proj.weight"
    tensors[name] = bad(tensors[name])
    save_file(tensors, d / "model.safetensors")
    reads = []

    class Spy:  # safe_open, recording every tensor read
        def __init__(self, *a, **k):
            self.f = real(*a, **k)
        def __enter__(self):
            self.f.__enter__()
            return self
        def __exit__(self, *a):
            return self.f.__exit__(*a)
        def __getattr__(self, attr):
            return getattr(self.f, attr)
        def get_tensor(self, n):
            reads.append(n)
            return self.f.get_tensor(n)
    real = weights.safe_open
    monkeypatch.setattr(weights, "safe_open", Spy)
    fails(capsys, generate.main, gen_args("--model", d), name, word)
    assert reads == []


@pytest.mark.parametrize("text,word", [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
                                       # json.loads' int-digit limit is a plain ValueError: was a traceback
                                       pytest.param('{"vocab_size": 1' + "0" * 5000 + "}", "not valid JSON", id="huge-int"),
                                       ("drop hidden_size", "hidden_size is missing"),
                                       ("hidden_size=str", "hidden_size must be a positive integer")])
def test_malformed_or_incomplete_config(text, word, tmp_path, capsys):
    d = model_copy(tmp_path)
    cfg = json.loads((DEMO / "config.json").read_text())
    if text == "drop hidden_size":
        del cfg["hidden_size"]
        text = json.dumps(cfg)
    elif text == "hidden_size=str":
        text = json.dumps({**cfg, "hidden_size": "128"})
    (d / "config.json").write_text(text)
    fails(capsys, generate.main, gen_args("--model", d), word)


@pytest.mark.parametrize("field,value,word", [("head_dim", 0, "head_dim must be a positive integer, got 0"),
                                              ("head_dim", 31, "head_dim must be even"),
                                              ("hidden_act", "gelu", "hidden_act 'gelu' is not supported"),
                                              ("tie_word_embeddings", "false", "must be true or false"),
                                              ("max_position_embeddings", 10**12, "more than the 1,048,576"),
                                              ("eos_token_id", 1024, "eos_token_id 1024 is outside the vocabulary"),
                                              ("rope_scaling", {"rope_type": "yarn", "factor": 4.0,
                                                                "original_max_position_embeddings": 32768},
                                               "rope type 'yarn' is not supported"),
                                              ("rope_scaling", {"type": "dynamic", "factor": 2.0},
                                               "rope type 'dynamic' is not supported"),
                                              ("rope_parameters", {"rope_type": "linear", "factor": 2.0,
                                                                   "rope_theta": 10000.0},
                                               "rope type 'linear' is not supported"),
                                              ("use_sliding_window", "false", "use_sliding_window must be true or false"),
                                              ("quantization_config", {"quant_method": "fp8", "fmt": "e4m3",
                                                                       "weight_block_size": [128, 128]},
                                               "quantized checkpoints (fp8) are not supported")])
def test_invalid_config_field_is_refused(field, value, word, tmp_path, capsys):
    """Each of these used to load (head_dim 0: silently hidden_size // heads instead; odd: a
    traceback in the first forward, after the whole weight load; hidden_act gelu: ran as silu;
    tie_word_embeddings "false": tied, lm_head.weight ignored; max_position_embeddings 10**12:
    an allocation traceback for the rotary tables; an eos id past the vocabulary: never sampled;
    quantization_config: read as unquantized, or its scales refused as "is this a Qwen3 checkpoint?").
    RoPE scaling (YaRN, dynamic, linear; transformers 4's rope_scaling or 5's rope_parameters)
    would run as plain RoPE: another model. use_sliding_window "false" (transformers refuses a
    string) was read as true (test_config.py has the sliding layers themselves)."""
    d = model_copy(tmp_path)
    (d / "config.json").write_text(json.dumps({**json.loads((DEMO / "config.json").read_text()), field: value}))
    fails(capsys, generate.main, gen_args("--model", d), word)


def test_rope_scaling_beside_rope_parameters_is_refused(tmp_path, capsys):
    """A YaRN rope_scaling added (as Qwen3's README says) to a config.json that transformers 5 saved
    with rope_parameters: transformers runs YaRN, minitflow read rope_parameters alone and ran plain RoPE."""
    d = model_copy(tmp_path)
    cfg = {**json.loads((DEMO / "config.json").read_text()), "rope_parameters": {"rope_type": "default",
                                                                                  "rope_theta": 10000.0},
           "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    (d / "config.json").write_text(json.dumps(cfg))
    fails(capsys, generate.main, gen_args("--model", d), "rope type 'yarn' is not supported", "remove rope_scaling")


@pytest.mark.parametrize("name,text,word", [
    ("tokenizer.json", "{broken", "not a valid tokenizer file"),
    ("generation_config.json", "[151645]", "must hold a JSON object"),
    ("generation_config.json", '{"eos_token_id": "x"}', "eos_token_id must be an integer"),
    ("generation_config.json", '{"top_k": -1}', "top_k must be an integer >= 0"),
    ("generation_config.json", '{"top_k": "20"}', "top_k must be an integer >= 0"),
    ("generation_config.json", '{"eos_token_id": [1021, 5000]}', "token id 5000 is outside the model's vocabulary"),
    ("tokenizer_config.json", "{broken", "not valid JSON"),
    ("tokenizer_config.json", '{"eos_token": "<|eot_id|>"}',
     "eos_token '<|eot_id|>' is not a token of tokenizer.json")])
def test_malformed_tokenizer_and_generation_config(name, text, word, tmp_path, capsys):
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")
    (d / name).write_text(text)
    fails(capsys, generate.main, gen_args("--model", d), word)


@pytest.mark.parametrize("name,text", [("tokenizer.json", "{broken"),
                                       ("generation_config.json", '{"eos_token_id": "x"}'),
                                       ("generation_config.json", '{"eos_token_id": 5000}')])
def test_bad_tokenizer_or_generation_config_is_refused_before_the_weights_load(name, text, tmp_path, capsys,
                                                                                monkeypatch):
    """Both were read only after every weight had been loaded (minutes at 4B)."""
    import minitflow.model.weights as weights
    def boom(*a, **k):
        raise AssertionError("the weights were loaded before the bad file was refused")
    monkeypatch.setattr(weights, "load_model", boom)
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")  # its headers size the memory check
    (d / name).write_text(text)
    fails(capsys, generate.main, gen_args("--model", d), name)


def test_eos_ids_outside_the_vocabulary_are_refused_by_the_llm():
    """An eos id the model cannot sample would let every generation run to max_new_tokens."""
    from minitflow import LLM
    llm = LLM.load(DEMO, num_slots=1)
    with pytest.raises(UserError, match="token id 1024 is outside the model's vocabulary of 1024"):
        llm.eos_token_ids = {1021, 1024}
    with pytest.raises(UserError, match="token id -1 is outside"):
        LLM(llm.model, llm.tokenizer, eos_token_ids=[-1], num_slots=1)


def test_eos_ids_that_are_not_integers_are_refused_by_the_llm():
    """5.5 was taken and never equals a token (every generation ran to max_new_tokens), True
    stopped on token 1, and a string or one bare id was a TypeError traceback. numpy's ids are
    integers and become plain ones."""
    import numpy as np
    from minitflow import LLM
    llm = LLM.load(DEMO, num_slots=1)
    for bad in ([5.5], [True], ["5"]):
        with pytest.raises(UserError, match=rf"^eos_token_ids: end-of-sequence token id {re.escape(repr(bad[0]))} "
                                            "is not an integer$"):
            llm.eos_token_ids = bad
        with pytest.raises(UserError, match="^LLM: end-of-sequence token id .* is not an integer$"):
            LLM(llm.model, llm.tokenizer, eos_token_ids=bad, num_slots=1)
    with pytest.raises(UserError, match="^LLM: end-of-sequence token ids must be a collection of integers, got 5$"):
        LLM(llm.model, llm.tokenizer, eos_token_ids=5, num_slots=1)
    llm.eos_token_ids = [np.int64(7)]
    assert llm.eos_token_ids == {7} and type(next(iter(llm.eos_token_ids))) is int


def test_model_without_tokenizer_is_refused_before_the_weights_load(tmp_path, capsys, monkeypatch):
    """Was "this LLM has no tokenizer: pass token ids", after the whole weight load."""
    import minitflow.model.weights as weights
    def boom(*a, **k):
        raise AssertionError("the weights were loaded before the missing tokenizer was refused")
    monkeypatch.setattr(weights, "load_model", boom)
    d = model_copy(tmp_path)
    (d / "tokenizer.json").unlink()
    fails(capsys, generate.main, gen_args("--model", d), "no tokenizer.json in")
    fails(capsys, train.main, ["--model", d, *train_args(tmp_path, "--batch_size", "1")[2:]], "no tokenizer.json in")


def test_model_without_tokenizer_is_refused_before_the_output_folder_and_the_checkpoint(tmp_path, capsys,
                                                                                         monkeypatch):
    """Was refused only at the weight load: after evaluate had made and claimed its output folder
    (settings written), and after the tflow checkpoint had been read."""
    import minitflow.tflow.checkpoint as checkpoint
    def boom(*a, **k):
        raise AssertionError("the checkpoint was read before the missing tokenizer was refused")
    monkeypatch.setattr(checkpoint, "load_checkpoint", boom)
    no_model_load(monkeypatch)
    d = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", d / "model.safetensors")  # the weights are there, the tokenizer not
    (d / "tokenizer.json").unlink()
    tflow = ["--method", "tflow", "--model", d, "--checkpoint", DEMO / "tflow.pt"]
    out = tmp_path / "out"
    fails(capsys, evaluate.main, [*tflow, "--data_file", gsm8k_file(tmp_path), "--output_dir", out, "--device", "cpu"],
          f"no tokenizer.json in {d}")
    assert not out.exists()
    fails(capsys, generate.main, [*gen_args(*tflow)[2:], "--top_k", "0"], f"no tokenizer.json in {d}")


@pytest.mark.parametrize("kind", ["no weights", "a shard missing", "a tensor of another shape"])
def test_model_with_missing_or_bad_weights_is_refused_before_the_output_folder(kind, tmp_path, capsys, monkeypatch):
    """evaluate made and claimed its output folder (settings, lock and log written), then refused
    the weights only when it loaded them; the headers are checked before the folder now."""
    from safetensors.torch import load_file, save_file
    no_model_load(monkeypatch)
    d = model_copy(tmp_path)
    tensors = load_file(DEMO / "model.safetensors")
    if kind == "a shard missing":
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: "model-00001-of-00001.safetensors"
                                                                                   for k in tensors}}))
    elif kind == "a tensor of another shape":
        tensors["model.norm.weight"] = tensors["model.norm.weight"][:5].contiguous()
        save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    word = {"no weights": "no model.safetensors", "a shard missing": "shard model-00001-of-00001.safetensors",
            "a tensor of another shape": "tensor model.norm.weight has shape (5,)"}[kind]
    out = tmp_path / "out"
    fails(capsys, evaluate.main, ["--method", "baseline", "--model", d, "--data_file", gsm8k_file(tmp_path),
                                  "--output_dir", out, "--device", "cpu"], word)
    assert not out.exists()


def test_top_k_defaults_to_the_models_generation_config(tmp_path, monkeypatch):
    """HF generate fills what its caller leaves out from generation_config.json, then from its own
    defaults (top_k 50); the official code passes only temperature and top_p, so on Qwen3-4B
    (top_k 20) it samples top-k 20, and on a model whose file has none (the demo's) top-k 50."""
    d = model_copy(tmp_path)
    gc = json.loads((d / "generation_config.json").read_text())
    p = argparse.ArgumentParser()
    add_model_args(p)
    assert "top_k" not in gc
    assert sampling_from(p.parse_args(["--model", str(d)]), d).top_k == 50  # HF's default: the demo's file has none
    (d / "generation_config.json").write_text(json.dumps({**gc, "top_k": None}))
    assert sampling_from(p.parse_args(["--model", str(d)]), d).top_k == 50
    (d / "generation_config.json").write_text(json.dumps({**gc, "top_k": 20}))
    assert sampling_from(p.parse_args(["--model", str(d)]), d).top_k == 20
    assert sampling_from(p.parse_args(["--model", str(d), "--top_k", "0"]), d).top_k == 0
    assert sampling_from(p.parse_args(["--model", str(d), "--top_k", "5"]), d).top_k == 5
    args = p.parse_args(["--model", str(d), "--method", "baseline"])
    args.data_file, args.include_all_mmlu, args.minerva_zero_shot = None, False, False
    assert evaluation.run_settings(args, "gsm8k", sampling_from(args, d))["top_k"] == 20  # a resumed run compares it
    (d / "generation_config.json").unlink()  # none (a folder saved without one): HF's defaults, config.json's EOS
    assert sampling_from(p.parse_args(["--model", str(d)]), d).top_k == 50
    (d / "model.safetensors").symlink_to(DEMO / "model.safetensors")
    assert LLM.load(d, device="cpu").eos_token_ids == {json.loads((d / "config.json").read_text())["eos_token_id"]}


def test_generation_settings_minitflow_does_not_apply_are_named(tmp_path, capsys):
    """HF generate also applies e.g. repetition_penalty or min_p from generation_config.json under
    the official code; minitflow's sampler has none of them, so a model that sets one is named in a
    warning rather than sampled otherwise without a word. Neutral values say nothing."""
    d = model_copy(tmp_path)
    gc = json.loads((d / "generation_config.json").read_text())
    p = argparse.ArgumentParser()
    add_model_args(p)
    (d / "generation_config.json").write_text(json.dumps({**gc, "repetition_penalty": 1.0, "min_p": 0.0,
                                                          "num_beams": 1, "suppress_tokens": []}))
    sampling_from(p.parse_args(["--model", str(d)]), d)
    assert capsys.readouterr().err == ""
    (d / "generation_config.json").write_text(json.dumps({**gc, "repetition_penalty": 1.05, "min_p": 0.0,
                                                          "no_repeat_ngram_size": 3}))
    sampling_from(p.parse_args(["--model", str(d), "--greedy"]), d)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ") and "generation_config.json sets " \
        "repetition_penalty=1.05, no_repeat_ngram_size=3, which HF generate applies under the official code and " \
        "minitflow does not" in err


@pytest.mark.parametrize("method,slots", [("baseline", 3), ("tflow", 3), ("textmas", 6)])
def test_batch_size_is_questions_in_flight_and_textmas_gets_two_slots_each(method, slots, monkeypatch):
    """textmas' two senders of a question generate at once, as in the official batch."""
    from minitflow.cli import load_for
    seen = {}

    def fake_load(cls, model, **kw):
        seen.update(kw)
        raise UserError("stop here")
    monkeypatch.setattr(LLM, "load", classmethod(fake_load))
    p = argparse.ArgumentParser()
    add_model_args(p)
    args = p.parse_args(["--method", method, "--batch_size", "3", "--device", "cpu"] +
                        (["--random_generator"] if method == "tflow" else []))
    with pytest.raises(UserError, match="stop here"):
        load_for(args, cli.plan_load(args, DEMO))
    assert seen["num_slots"] == slots
    for questions, want in ((2, slots // 3 * 2), (7, slots)):  # no more slots than the run's questions fill
        with pytest.raises(UserError, match="stop here"):
            load_for(args, cli.plan_load(args, DEMO), positions=[(16, 0)] * questions)
        assert seen["num_slots"] == want


# ---- input files ------------------------------------------------------------------------

def test_non_utf8_input_files_and_stdin(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"question": "caf\xe9?", "answer": "1"}\n')
    no_model_load(monkeypatch)
    fails(capsys, generate.main, ["--input_file", bad], "not UTF-8")
    fails(capsys, train.main, train_args(tmp_path)[:2] + ["--train", bad, "--out", tmp_path / "o.pt"], "not UTF-8")
    fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", bad, "--output_dir", tmp_path / "r"],
          "not UTF-8")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "x_results.json").write_bytes(b'{"summary": "\xff"}')
    fails(capsys, report.main, [tmp_path / "res"], "not UTF-8")

    class Stdin(io.TextIOWrapper):
        def isatty(self):
            return False
    monkeypatch.setattr("sys.stdin", Stdin(io.BytesIO(b"caf\xe9 ?\n"), encoding="utf-8"))
    fails(capsys, generate.main, ["--device", "cpu"], "stdin is not UTF-8")


def test_a_utf8_byte_order_mark_is_no_part_of_the_questions(tmp_path, monkeypatch):
    """A BOM (Notepad, PowerShell) before a text file's or stdin's question went into the prompt
    as tokens, and a .jsonl's first row was refused as "not valid JSON (Unexpected UTF-8 BOM)"."""
    bom = b"\xef\xbb\xbf"
    (tmp_path / "q.txt").write_bytes(bom + "Caf\u00e9 for 2?".encode())
    (tmp_path / "q.jsonl").write_bytes(bom + b'{"question": "Q1?"}\n{"question": "Q2?"}\n')
    ns = argparse.Namespace(question=None, context=None)
    assert generate.read_inputs(argparse.Namespace(**vars(ns), input_file=str(tmp_path / "q.txt"))) == [
        {"question": "Caf\u00e9 for 2?", "context": None}]
    got = generate.read_inputs(argparse.Namespace(**vars(ns), input_file=str(tmp_path / "q.jsonl")))
    assert [r["question"] for r in got] == ["Q1?", "Q2?"]

    class Stdin(io.TextIOWrapper):
        def isatty(self):
            return False
    monkeypatch.setattr("sys.stdin", Stdin(io.BytesIO(bom + b"Q3?\n"), encoding="utf-8"))
    assert generate.read_inputs(argparse.Namespace(**vars(ns), input_file=None))[0]["question"] == "Q3?"


@pytest.mark.parametrize("kind", ["not gzip", "truncated"])
def test_non_gzip_or_truncated_gz_data(kind, tmp_path, capsys):
    path = tmp_path / "rows.jsonl.gz"
    packed = gzip.compress(gsm8k_file(tmp_path).read_bytes() * 50)
    path.write_bytes(gsm8k_file(tmp_path).read_bytes() if kind == "not gzip" else packed[:len(packed) // 2])
    fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", path, "--output_dir", tmp_path / "r"],
          "cannot read data file")


def test_wrong_field_types_mmlu_file_as_gsm8k(tmp_path, capsys):
    path = tmp_path / "mmlu.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "choices": ["3", "4"], "answer": 1, "subject": "math"}) + "\n")
    fails(capsys, evaluate.main, ["--method", "oracle", "--dataset", "gsm8k", "--data_file", path,
                                  "--output_dir", tmp_path / "r"], "'answer' is a int", "gsm8k")
    path.write_text("[1, 2]\n")
    fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", path, "--output_dir", tmp_path / "r"],
          "JSON int")
    assert not (tmp_path / "r" / "oracle_results.json").exists()


def test_jsonl_readers_split_on_newline_only(tmp_path):
    """U+0085 and U+2028 are line breaks for str.splitlines, not inside JSON lines."""
    q = "How many\u0085 does the\u2028 red box hold?"
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": q, "answer": "A"}, ensure_ascii=False) + "\n", encoding="utf-8")
    args = argparse.Namespace(question=None, input_file=str(path), context=None)
    assert [r["question"] for r in generate.read_inputs(args)] == [q]
    assert [e.question for e in training.read_examples(path)] == [q]


# ---- flags --------------------------------------------------------------------------------

def test_eager_with_compile(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--eager", "--compile"), "--eager and --compile")
    fails(capsys, evaluate.main, ["--method", "baseline", "--device", "cpu", "--eager", "--compile",
                                  "--data_file", gsm8k_file(tmp_path), "--output_dir", tmp_path / "r"], "--eager")


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x", "gpu"])
def test_unsupported_device(device, tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--device", device), "--device")
    fails(capsys, evaluate.main, ["--method", "baseline", "--device", device, "--data_file", gsm8k_file(tmp_path),
                                  "--output_dir", tmp_path / "r"], "--device")
    fails(capsys, train.main, train_args(tmp_path, "--device", device), "--device")


def test_cuda_asked_for_where_there_is_none_is_one_line(monkeypatch):
    """auto falls back to the CPU; cuda or cuda:N, asked for by name, is refused rather than run on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device(None)
    for name in ("cuda", "CUDA:1", torch.device("cuda", 0)):
        want = str(name).lower()
        with pytest.raises(UserError, match=rf"^device {want} requested \(--device / device=\) but CUDA is not available$"):
            resolve_device(name)


def test_local_rank_picks_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 3) and resolve_device("cuda") == torch.device("cuda", 3)
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cuda", 2)) == torch.device("cuda", 2)
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(UserError, match="only 4 are visible"):
        resolve_device("auto")
    monkeypatch.delenv("LOCAL_RANK")  # not under torchrun: cuda is the current device, as in torch
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # asking would set CUDA up
    assert resolve_device("cuda") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert resolve_device("cuda") == torch.device("cuda", 2) and resolve_device(None) == torch.device("cuda", 2)
    assert resolve_device(torch.device("cpu", 0)) == torch.device("cpu") == resolve_device("cpu:0")


def test_llm_load_takes_the_command_lines_device_and_dtype_names():
    """LLM.load resolves device= and dtype= as --device and --dtype do: a bad name is one
    UserError before the weights are read, and dtype "auto" (the default of both) is float32
    on CPU, bfloat16 on CUDA."""
    for bad in ("tpu", "cuda:x", "cuda:\u00b2"):  # a superscript 2: isdigit, yet no int()
        with pytest.raises(UserError, match="not supported"):
            LLM.load(DEMO, device=bad)
    with pytest.raises(UserError, match="unknown dtype"):
        LLM.load(DEMO, dtype="fp8", device="cpu")
    assert LLM.load(DEMO, device="cpu").dtype == torch.float32
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16 and resolve_dtype("auto") == torch.float32


@pytest.mark.parametrize("batch_size", ["0", "-2"])
def test_evaluate_batch_size_below_one(batch_size, tmp_path, capsys):
    fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", gsm8k_file(tmp_path), "--batch_size",
                                  batch_size, "--output_dir", tmp_path / "r"], "--batch_size must be >= 1")
    assert not (tmp_path / "r" / "oracle_results.json").exists()


@pytest.mark.parametrize("flag,value", [("--max_new_tokens", "0"), ("--max_new_tokens", "-3"),
                                        ("--temperature", "nan"), ("--temperature", "inf"),
                                        ("--temperature", "-1"), ("--top_p", "nan"), ("--top_p", "0"), ("--top_k", "-1"),
                                        ("--refill_share", "1.5"), ("--refill_share", "-0.1"),
                                        ("--refill_share", "nan"),
                                        # SamplingParams' checks, which named the field, not the flag
                                        ("--temperature", "1e-35"), ("--top_k", "2147483648"), ("--seed", "-1")])
def test_generation_values_refused_not_replaced(flag, value, tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    assert fails(capsys, generate.main, gen_args(flag, value)).startswith(f"error: {flag} ")
    assert fails(capsys, evaluate.main, ["--method", "baseline", flag, value, "--data_file", gsm8k_file(tmp_path),
                                         "--output_dir", tmp_path / "r"]).startswith(f"error: {flag} ")


@pytest.mark.parametrize("steps", [[], ["--latent_steps", "0"]])
def test_latent_realign_without_latent_steps_is_refused(steps, tmp_path, capsys, monkeypatch):
    """W_a maps only the latent steps' hidden states: at 0 steps (the default) --latent_realign
    changed nothing, yet the run ran and recorded realign true in its metadata and settings."""
    no_model_load(monkeypatch)
    argv = ["--method", "latentmas", "--latent_realign", *steps]
    fails(capsys, generate.main, gen_args(*argv)[2:], "--latent_realign", "--latent_steps 0")
    fails(capsys, evaluate.main, [*argv, "--data_file", gsm8k_file(tmp_path), "--output_dir", tmp_path / "r"],
          "--latent_realign", "--latent_steps 0")
    assert not (tmp_path / "r").exists()
    p = argparse.ArgumentParser()
    add_model_args(p)
    check_model_args(p.parse_args(["--method", "latentmas", "--device", "cpu", "--latent_realign",
                                   "--latent_steps", "1"]))


@pytest.mark.parametrize("flag,value", [("--top_k", "0"), ("--top_p", "1"), ("--refill_share", "0"),
                                        ("--refill_share", "1"), ("--temperature", "0"), ("--max_new_tokens", "1"),
                                        ("--batch_size", "1")])
def test_generation_values_at_their_bounds_are_accepted(flag, value):
    """The documented edge values (top_k 0 is off, refill_share 0 the default) pass the checks."""
    p = argparse.ArgumentParser()
    add_model_args(p)
    check_model_args(p.parse_args(["--method", "baseline", "--device", "cpu", flag, value]))


def test_dtype_names_come_from_one_table(tmp_path, capsys, monkeypatch):
    """generate's and evaluate's --dtype choices, train's --dtype help and TrainConfig's check read
    model.config.DTYPES, the table LLM.load resolves by (they were three hand-kept copies of its names;
    it is torch-free, for the parsers): a name it lacks is refused by each before a model loads, and
    each lists what it has."""
    from minitflow.engine import llm as llm_module
    from minitflow.model import config
    no_model_load(monkeypatch)
    assert llm_module.DTYPES is config.DTYPES  # the one table
    monkeypatch.delitem(config.DTYPES, "float16")
    fails(capsys, train.main, train_args(tmp_path, "--dtype", "float16"),
          "--dtype must be auto or one of bfloat16, float32, got 'float16'")
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "one of bfloat16, float32" in " ".join(capsys.readouterr().out.split())
    for main, argv in ((generate.main, gen_args("--dtype", "float16")),
                       (evaluate.main, ["--method", "baseline", "--dtype", "float16", "--data_file",
                                        gsm8k_file(tmp_path), "--output_dir", tmp_path / "r"])):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        assert e.value.code == 2
        assert "--dtype: invalid choice: 'float16' (choose from auto, bfloat16, float32)" in \
            capsys.readouterr().err.replace("'auto', 'bfloat16', 'float32'", "auto, bfloat16, float32")


@pytest.mark.parametrize("flag,value", [("--lr", "-1"), ("--lr", "nan"), ("--lr", "0"), ("--weight_decay", "nan"),
                                        ("--clip", "-1"), ("--lr", "1e39"), ("--clip", "1e300"),  # past float32: a traceback
                                        ("--warmup", "-1"), ("--eval_max_new_tokens", "0")])
def test_train_bad_numbers(flag, value, tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, train.main, train_args(tmp_path, flag, value), flag)


@pytest.mark.parametrize("arch", ["d_model=0", "head_dim=-4", '{"d_model": 0}', '{"rank": "4"}', "d_model=100"])
def test_train_bad_pg_arch(arch, tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, train.main, train_args(tmp_path, "--pg_arch", arch), "rch")


@pytest.mark.parametrize("arch,word", [("d_model", "expected name=integer pairs, got 'd_model'"),
                                       ("d_model=64,", "expected name=integer pairs, got ''"),
                                       ("d_model=6.5", "expected name=integer pairs, got 'd_model=6.5'"),
                                       ("d_model=\u00b2", "expected name=integer pairs, got 'd_model=\u00b2'"),
                                       ('{"d_model": 64', 'not a JSON object: {"d_model": 64')])
def test_train_pg_arch_that_does_not_parse_names_what_it_got(arch, word, tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, train.main, train_args(tmp_path, "--pg_arch", arch), f"--pg_arch: {word}")


@pytest.mark.parametrize("arch", ["d_model=64,head_dim=16,d_model=128", '{"d_model": 64, "d_model": 128}'])
def test_train_pg_arch_naming_a_dimension_twice_is_refused(arch, tmp_path, capsys, monkeypatch):
    """--pg_arch d_model=64,...,d_model=128 (or the JSON form) trained with the last value: the other
    was dropped without a word, and the run's recorded pg_arch could not say which the user meant."""
    no_model_load(monkeypatch)
    fails(capsys, train.main, train_args(tmp_path, "--pg_arch", arch), "--pg_arch: d_model is given twice (64 and 128)")


def test_train_batch_larger_than_the_rows_is_refused(tmp_path, capsys, monkeypatch):
    """Batches are full; one row with --batch_size 8 trained on batches of 1 without a word."""
    no_model_load(monkeypatch)
    fails(capsys, train.main, train_args(tmp_path, "--batch_size", "8"), "--batch_size 8", "1 rows")


@pytest.mark.parametrize("kind", ["text", "other layers"])
def test_train_bad_start_checkpoint_is_refused_before_the_model_loads(kind, tmp_path, capsys, monkeypatch):
    """--init and --resume are read against config.json before the backbone (minutes at 4B)."""
    no_model_load(monkeypatch)
    path = tmp_path / "g.pt"
    if kind == "text":
        path.write_text("not a checkpoint\n")
    else:
        state = torch.load(DEMO / "tflow.pt", weights_only=True)
        torch.save({**state, "pg_arch": {**state["pg_arch"], "num_base_model_layers": 8}}, path)
    fails(capsys, train.main, train_args(tmp_path, "--batch_size", "1", "--init", path), str(path))
    torch.save({"optimizer": {}, "scheduler": {}, "step": 1, "condition": "sender"}, str(path) + ".state.pt")
    fails(capsys, train.main, train_args(tmp_path, "--batch_size", "1", "--resume", path), str(path))


def test_train_resume_with_no_steps_left_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """A state already at --steps ran nothing, printed {"out": ...} and wrote no --out at all."""
    no_model_load(monkeypatch)
    path = tmp_path / "g.pt"
    shutil.copy(DEMO / "tflow.pt", path)
    torch.save({"optimizer": {}, "scheduler": {}, "step": 3, "condition": "sender"}, str(path) + ".state.pt")
    for steps in ("3", "2"):
        fails(capsys, train.main, train_args(tmp_path, "--batch_size", "1", "--resume", path, "--steps", steps),
              "--resume", "3 steps", f"--steps {steps}")
    assert not (tmp_path / "o.pt").exists()


def test_train_resume_with_init_or_an_empty_question_is_refused(tmp_path, capsys, monkeypatch):
    """--init beside --resume was ignored without a word (the resume continues its own
    generator); a row with an empty question trained, where generate and evaluate refuse one."""
    no_model_load(monkeypatch)
    path = tmp_path / "g.pt"
    shutil.copy(DEMO / "tflow.pt", path)
    torch.save({"optimizer": {}, "scheduler": {}, "step": 1, "condition": "sender"}, str(path) + ".state.pt")
    fails(capsys, train.main, train_args(tmp_path, "--batch_size", "1", "--resume", path, "--init", path),
          "--resume or --init")
    rows = tmp_path / "empty.jsonl"
    rows.write_text(json.dumps({"question": "Q?", "answer": "1"}) + "\n" + json.dumps({"question": " ", "answer": "2"}))
    args = train_args(tmp_path, "--batch_size", "1")
    args[args.index("--train") + 1] = str(rows)
    fails(capsys, train.main, args, f"{rows}:2: the question is empty")


@pytest.mark.parametrize("kind", ["no rows", "unknown pg_arch key", "pg_arch with init", "not a state",
                                  "other condition"])
def test_train_refuses_empty_rows_bad_flags_and_states_before_the_model_loads(kind, tmp_path, capsys, monkeypatch):
    """Each is one line naming what to change, before the backbone loads (minutes at 4B)."""
    no_model_load(monkeypatch)
    path = tmp_path / "g.pt"
    shutil.copy(DEMO / "tflow.pt", path)
    state = {"optimizer": {}, "scheduler": {}, "step": 1, "condition": "zero"}
    torch.save(state if kind == "other condition" else {"step": 1}, str(path) + ".state.pt")
    if kind == "no rows":
        (tmp_path / "train.jsonl").write_text("")
    extra, words = {
        "no rows": ([], [f"{tmp_path / 'train.jsonl'}: no examples"]),
        "unknown pg_arch key": (["--pg_arch", "rank=4,colour=3"], ["pg_arch has unknown key 'colour' (known: alpha, "
                                                                   "d_model, dim_accumulation, head_dim, "]),
        "pg_arch with init": (["--init", path, "--pg_arch", "rank=4"],
                              ["--pg_arch applies to --init random only (a checkpoint carries its own)"]),
        "not a state": (["--resume", path], [f"{path}.state.pt is not a minitflow training state (needs optimizer, "
                                             "scheduler, step, condition)"]),
        "other condition": (["--resume", path], ["--resume: checkpoint was trained with --condition zero"]),
    }[kind]
    fails(capsys, train.main, train_args(tmp_path, "--batch_size", "1", *extra), *words)
    assert not (tmp_path / "o.pt").exists()


def test_a_library_train_config_of_the_wrong_kinds_is_refused():
    """What the CLI cannot pass (argparse's choices and _parse_arch), a library caller can."""
    from minitflow.tflow.training import TrainConfig, check_config
    base = TrainConfig(model=str(DEMO), train="t.jsonl", out="o.pt")
    with pytest.raises(UserError, match=r"^pg_arch must be a mapping of name -> integer, got str$"):
        check_config(replace(base, pg_arch="d_model=64"))
    with pytest.raises(UserError, match=r"^--condition must be sender or zero, got 'Zero'$"):
        check_config(replace(base, condition="Zero"))


def test_train_refuses_an_out_an_earlier_run_wrote_without_overwrite(tmp_path, capsys, monkeypatch):
    """A rerun with other flags replaced the earlier run's checkpoint at its first save. Its own
    --resume continues it in place; --overwrite replaces it; the library's default still overwrites."""
    from minitflow.tflow.training import TrainConfig, check_config
    no_model_load(monkeypatch)
    out = tmp_path / "o.pt"
    for held in (out, tmp_path / "o.pt.state.pt"):
        held.write_bytes(b"x")
        fails(capsys, train.main, train_args(tmp_path, "--batch_size", "1"), f"{held.name} exists", "--overwrite")
        held.unlink()
    shutil.copy(DEMO / "tflow.pt", out)
    torch.save({"optimizer": {}, "scheduler": {}, "step": 1, "condition": "sender"}, str(out) + ".state.pt")
    args = train_args(tmp_path, "--batch_size", "1")
    check_config(train.parse_args([str(a) for a in [*args, "--resume", out]]))
    check_config(train.parse_args([str(a) for a in [*args, "--overwrite"]]))
    check_config(TrainConfig(model=str(DEMO), train=str(tmp_path / "train.jsonl"), out=str(out)))


def test_unusable_code_sandbox_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    """A bad MINITFLOW_SANDBOX (or a machine where no sandbox runs) was a SandboxError traceback,
    exit 1, in evaluate and score, after evaluate had written its folder."""
    from minitflow import score
    from minitflow.eval import sandbox
    no_model_load(monkeypatch)
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "bogus")
    monkeypatch.setattr(sandbox, "_iso", {})  # not the probe an earlier test cached for this process
    out = tmp_path / "out"
    fails(capsys, evaluate.main, ["--method", "oracle", "--dataset", "humaneval", "--output_dir", out],
          "MINITFLOW_SANDBOX", "bogus")
    assert not out.exists()
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "Mbpp/2", "prediction": "x"}) + "\n")
    fails(capsys, score.main, ["--dataset", "mbpp", "--predictions", preds], "MINITFLOW_SANDBOX", "bogus")


# ---- output paths: checked before any work, in all five CLIs -----------------------------

def _bad_outputs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a_dir").mkdir(exist_ok=True)
    (tmp_path / "a_file").write_text("x")
    return {"directory": tmp_path / "a_dir", "under a file": tmp_path / "a_file" / "out.png"}


def results_dir(tmp_path: Path) -> Path:
    """A folder with one valid results file, for report."""
    res = tmp_path / "res"
    res.mkdir()
    (res / "tflow_results.json").write_text(json.dumps({"summary": {
        "method": "tflow", "dataset": "gsm8k", "n": 1, "accuracy": 1.0, "mean_official_tokens": 1,
        "mean_processed_tokens": 1, "mean_wall_time": 1.0}}))
    return res


def test_bad_output_paths_all_clis(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    res = results_dir(tmp_path)
    for kind, path in _bad_outputs(tmp_path).items():
        fails(capsys, generate.main, gen_args("--output", path))
        fails(capsys, train.main, train_args(tmp_path)[:-3] + ["--out", path, "--no-progress"])
        fails(capsys, report.main, [res, "--plot", path])
        if kind == "under a file":
            fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", gsm8k_file(tmp_path),
                                          "--output_dir", path])
            fails(capsys, demo.main, ["--out", path])
    fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", gsm8k_file(tmp_path),
                                  "--output_dir", tmp_path / "a_file"], "not a directory")
    fails(capsys, demo.main, ["--out", tmp_path / "a_file"], "not a directory")
    assert (tmp_path / "a_file").read_text() == "x" and not any((tmp_path / "a_dir").iterdir())


def test_read_only_output_paths_all_clis(tmp_path, capsys, monkeypatch):
    ro = read_only_target()
    no_model_load(monkeypatch)
    res = results_dir(tmp_path)
    fails(capsys, generate.main, gen_args("--output", ro / "a.json"), "cannot")
    fails(capsys, train.main, train_args(tmp_path)[:-3] + ["--out", ro / "o.pt"], "cannot")
    fails(capsys, report.main, [res, "--plot", ro / "p.png"], "cannot")
    fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", gsm8k_file(tmp_path), "--output_dir", ro],
          "cannot")
    fails(capsys, demo.main, ["--out", ro], "cannot")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_and_folder(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.json").write_text("old")
    (locked / "a.json").chmod(0o444)
    locked.chmod(0o555)
    try:
        fails(capsys, generate.main, gen_args("--output", locked / "a.json"), "read-only")
        fails(capsys, generate.main, gen_args("--output", locked / "b.json"), "cannot write")
        fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", gsm8k_file(tmp_path),
                                      "--output_dir", locked], "cannot write")
    finally:
        locked.chmod(0o755)
    assert (locked / "a.json").read_text() == "old"


def test_an_input_file_that_is_a_folder_is_one_line(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    line = fails(capsys, generate.main, [*gen_args()[:2], *gen_args()[4:], "--input_file", tmp_path])
    assert line == f"error: input file {tmp_path} is a directory, not a file"


def test_generate_checks_output_before_loading(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--output", tmp_path), "is a directory")


def test_train_out_directory_is_refused_before_loading_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    out = tmp_path / "outdir"
    out.mkdir()
    fails(capsys, train.main, train_args(tmp_path)[:-3] + ["--out", out, "--no-progress"], "is a directory")
    assert list(out.iterdir()) == [] and not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp"))


def test_output_path_with_a_trailing_separator_is_a_folder_not_a_file(tmp_path, capsys, monkeypatch):
    """`--output new/` names a folder: Path("new/") is Path("new"), and the result was written
    as a file called `new` (the check looked at the separator after Path() had dropped it)."""
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--output", f"{tmp_path / 'new'}{os.sep}"), "is a directory")
    assert not (tmp_path / "new").exists()
    with pytest.raises(UserError, match="is a directory"):
        check_output_file(f"{tmp_path / 'other'}{os.sep}")
    assert check_output_file(tmp_path / "file.json") == tmp_path / "file.json"


@pytest.mark.parametrize("path", ["", "  ", "\t"])
def test_blank_output_paths_are_refused_not_taken_as_a_name(path, tmp_path, monkeypatch):
    """"" would be the current directory and "  " a file named by blanks: both are mistakes."""
    monkeypatch.chdir(tmp_path)
    for check in (check_output_file, check_output_dir):
        with pytest.raises(UserError, match="empty path"):
            check(path, "--output")
    assert list(tmp_path.iterdir()) == []


def test_writes_are_atomic(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
    write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_writes_rename_a_sibling_and_an_os_error_is_one_user_error(tmp_path, monkeypatch):
    """The temporary file lies beside the target (a rename from another file system would
    fail or copy), and a write that fails (disk full) is a UserError that leaves the old file."""
    import errno
    import minitflow.files as files
    target = tmp_path / "x.json"
    target.write_text("old")
    renames = []
    real = os.replace
    monkeypatch.setattr(files.os, "replace", lambda src, dst: renames.append((Path(src), Path(dst))) or real(src, dst))
    write_text(target, "new")
    assert [(src.parent, dst) for src, dst in renames] == [(tmp_path, target)] and target.read_text() == "new"
    with pytest.raises(UserError, match="cannot write .*x.json: No space left on device"):
        with replacing(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_output_that_exists_and_is_no_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        check_output_file(fifo, "--output")


def test_save_checkpoint_into_a_directory_leaves_no_tmp(tmp_path):
    from minitflow.model.config import Qwen3Config
    from minitflow.tflow.checkpoint import random_generator
    gen = random_generator(Qwen3Config.from_dir(DEMO), arch=None)
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(UserError, match="directory"):
        save_checkpoint(gen, tmp_path / "d.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]


# ---- report -------------------------------------------------------------------------------

@pytest.mark.parametrize("content,word", [
    ({"summary": {"method": "tflow", "dataset": "gsm8k", "n": 3}}, "summary.accuracy"),
    ([{"summary": {}}], "not a minitflow results file"),
    ({"samples": []}, "not a minitflow results file"),
    ({"summary": {"method": "tflow", "dataset": "gsm8k", "n": 3, "accuracy": "high", "mean_official_tokens": 1,
                  "mean_processed_tokens": 1, "mean_wall_time": 1}}, "summary.accuracy")])
def test_report_bad_results_file(content, word, tmp_path, capsys):
    (tmp_path / "tflow_results.json").write_text(json.dumps(content))
    fails(capsys, report.main, [tmp_path], word)


def test_report_plot_unknown_type(tmp_path, capsys):
    fails(capsys, report.main, [tmp_path, "--plot", tmp_path / "x.xyz"], ".xyz")
    assert not (tmp_path / "x.xyz").exists()


# ---- checkpoints --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_state() -> dict:
    return torch.load(DEMO / "tflow.pt", weights_only=True)


def _ckpt(tmp_path: Path, state: dict, name: str = "c.pt") -> Path:
    torch.save(state, tmp_path / name)
    return tmp_path / name


def test_checkpoint_without_generator_tensors_is_refused(good_state, tmp_path, capsys):
    """The old behaviour: a warning, a random generator, exit 0 and a results file."""
    assert len(good_state["parameter_generator"]) == 79
    for flags in (True, False):
        state = {**good_state, "parameter_generator": {}}
        if not flags:
            del state["pg_config_flags"]
        path = _ckpt(tmp_path, state)
        fails(capsys, generate.main, gen_args("--method", "tflow", "--checkpoint", path, "--model", DEMO),
              "79 of the generator's 79 tensors are missing")
    one_short = dict(good_state["parameter_generator"])
    one_short.pop(sorted(one_short)[5])
    path = _ckpt(tmp_path, {**good_state, "parameter_generator": one_short})
    out = tmp_path / "r"
    fails(capsys, evaluate.main, ["--method", "tflow", "--checkpoint", path, "--model", DEMO, "--device", "cpu",
                                  "--data_file", gsm8k_file(tmp_path), "--max_new_tokens", "2", "--output_dir", out],
          "1 of the generator's 79 tensors are missing")
    assert not (out / "tflow_results.json").exists()


def test_legacy_checkpoint_with_every_tensor_loads(good_state, tmp_path, capsys):
    from minitflow.model.config import Qwen3Config
    backbone = Qwen3Config.from_dir(DEMO)
    extra = {**good_state["parameter_generator"], "model.old_head.weight": torch.zeros(2)}
    legacy = {k: v for k, v in good_state.items() if k != "pg_config_flags"}
    gen = load_checkpoint(_ckpt(tmp_path, {**legacy, "parameter_generator": extra}), backbone)
    assert "legacy checkpoint" in capsys.readouterr().err
    want = good_state["parameter_generator"]
    assert all(torch.equal(v, want[k]) for k, v in gen.parameter_generator.state_dict().items())
    with pytest.raises(UserError, match="unexpected generator tensor model.old_head.weight"):
        load_checkpoint(_ckpt(tmp_path, {**good_state, "parameter_generator": extra}), backbone)


@pytest.mark.parametrize("protocol", [2, 3])
def test_legacy_format_checkpoint_loads_whatever_its_pickle_protocol(protocol, good_state, tmp_path):
    """torch.save(_use_new_zipfile_serialization=False, pickle_protocol=3), which torch.load reads
    with weights_only=True, was refused as "not a torch.save file, or cut short"."""
    from minitflow.model.config import Qwen3Config
    path = tmp_path / "legacy.pt"
    torch.save(good_state, path, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    gen = load_checkpoint(path, Qwen3Config.from_dir(DEMO))
    want = good_state["parameter_generator"]
    assert all(torch.equal(v, want[k]) for k, v in gen.parameter_generator.state_dict().items())


@pytest.mark.parametrize("protocol", [4, 5])
def test_checkpoint_of_a_newer_pickle_protocol_is_refused_for_what_it_is(protocol, good_state, tmp_path):
    """weights_only cannot read protocols 4 and 5 (opcode FRAME, 149): the error said its pickle "needs objects
    other than tensors" and to re-save it "as plain tensors", which it already was."""
    from minitflow.model.config import Qwen3Config
    path = tmp_path / "p.pt"
    torch.save(good_state, path, pickle_protocol=protocol)
    with pytest.raises(UserError, match="pickle protocol .4 or 5.; re-save it with torch.save's default"):
        load_checkpoint(path, Qwen3Config.from_dir(DEMO))

def test_checkpoint_with_a_one_element_log_temperature_loads_as_the_official_loader_reads_it(good_state, tmp_path):
    """torch's load_state_dict (the official loader) reads a (1,) tensor into the scalar; this one was refused,
    blaming the backbone. Any other shape is still refused, as a scalar's."""
    from minitflow.model.config import Qwen3Config
    cfg = Qwen3Config.from_dir(DEMO)
    agg = good_state["pg_layer_aggregator"]
    one = {**good_state, "pg_layer_aggregator": {**agg, "log_temperature": agg["log_temperature"].reshape(1)}}
    gen = load_checkpoint(_ckpt(tmp_path, one), cfg)
    assert gen.pg_layer_aggregator.log_temperature.shape == ()
    assert torch.equal(gen.pg_layer_aggregator.log_temperature, agg["log_temperature"])
    two = {**good_state, "pg_layer_aggregator": {**agg, "log_temperature": agg["log_temperature"].repeat(2)}}
    with pytest.raises(UserError, match=r"log_temperature has shape \(2,\), a scalar has \(\)"):
        load_checkpoint(_ckpt(tmp_path, two, "two.pt"), cfg)

def _edited(state: dict, kind: str) -> dict:
    """`state` with one thing wrong, as `kind` names it."""
    pg, agg = dict(state["parameter_generator"]), dict(state["pg_layer_aggregator"])
    two_d = next(k for k, v in sorted(pg.items()) if v.dim() == 2)
    return {"unknown prefix": {**state, "parameter_generator": {**pg, "old.weight": torch.zeros(2)}},
            "not a state dict": {**state, "parameter_generator": [pg[two_d]]},
            "integer tensor": {**state, "parameter_generator": {**pg, two_d: pg[two_d].long()}},
            "no aggregator": {k: v for k, v in state.items() if k != "pg_layer_aggregator"},
            "flags a list": {**state, "pg_config_flags": ["use_cond_tokens"]},
            "other shape": {**state, "parameter_generator": {**pg, two_d: pg[two_d][:1].clone()}},
            "aggregator short": {**state, "pg_layer_aggregator": {"log_temperature": agg["log_temperature"]}},
            "aggregator extra": {**state, "pg_layer_aggregator": {**agg, "bias": torch.zeros(1)}},
            "samples_seen text": {**state, "samples_seen": "3"},
            "samples_seen bool": {**state, "samples_seen": True}}[kind]


@pytest.mark.parametrize("kind,word", [
    ("unknown prefix", "unexpected generator tensor old.weight"),
    ("not a state dict", "parameter_generator must be a state dict (name -> tensor)"),
    ("integer tensor", "is torch.int64, expected floating point"),
    ("no aggregator", "is not a TFlow checkpoint (needs parameter_generator and pg_layer_aggregator)"),
    ("flags a list", "pg_config_flags must be a dict, got list"),
    ("other shape", "this backbone needs"),
    ("aggregator short", "pg_layer_aggregator.layer_weights is missing"),
    ("aggregator extra", "unexpected pg_layer_aggregator tensor bias"),
    ("samples_seen text", "samples_seen must be an integer, got str"),
    ("samples_seen bool", "samples_seen must be an integer, got bool")])
def test_checkpoint_with_a_bad_part_is_refused_naming_it(kind, word, good_state, tmp_path):
    from minitflow.model.config import Qwen3Config
    path = _ckpt(tmp_path, _edited(good_state, kind))
    with pytest.raises(UserError) as e:
        load_checkpoint(path, Qwen3Config.from_dir(DEMO))
    assert str(e.value).startswith(f"{path}") and word in str(e.value) and "\n" not in str(e.value)


def test_a_zip_that_is_not_a_torch_file_is_refused_and_one_saved_without_crcs_loads(good_state, tmp_path, monkeypatch):
    """A zip archive of other files is refused in one line. torch can save without CRC-32s (every
    record's is 0): there is nothing to check, and it loads."""
    import zipfile
    import torch.utils.serialization
    from minitflow.model.config import Qwen3Config
    cfg = Qwen3Config.from_dir(DEMO)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("notes.txt", "not weights")
    with pytest.raises(UserError, match=r"a\.zip is not a readable torch checkpoint \(RuntimeError\)$"):
        load_checkpoint(tmp_path / "a.zip", cfg)
    monkeypatch.setattr(torch.utils.serialization.config.save, "compute_crc32", False)
    path = _ckpt(tmp_path, good_state)
    assert not any(i.CRC for i in zipfile.ZipFile(path).infolist())
    gen = load_checkpoint(path, cfg)
    want = good_state["parameter_generator"]
    assert all(torch.equal(v, want[k]) for k, v in gen.parameter_generator.state_dict().items())


class _Payload:
    """Pickles as a call to open(marker, "w"): loading it with weights_only=False creates the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_pickle_is_refused_not_run(good_state, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    path = _ckpt(tmp_path, {**good_state, "samples_seen": _Payload(marker)})
    fails(capsys, generate.main, gen_args("--method", "tflow", "--checkpoint", path, "--model", DEMO),
          "weights_only=True", "io.open")
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    fails(capsys, generate.main, gen_args("--method", "tflow", "--checkpoint", tmp_path / "junk.pt",
                                          "--model", DEMO), "junk.pt")


# ---- demo ---------------------------------------------------------------------------------

def test_demo_validates_flags_before_touching_out(tmp_path, capsys):
    out = tmp_path / "built"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"trained weights")
    fails(capsys, demo.main, ["--out", out, "--steps", "0", "--overwrite"], "--steps")
    fails(capsys, demo.main, ["--out", out, "--pretrain_steps", "-1", "--overwrite"], "--pretrain_steps")
    fails(capsys, demo.main, ["--out", out], "not empty", "--overwrite")
    # past torch's seed range: its traceback once the build had begun ("Overflow when unpacking long long")
    fails(capsys, demo.main, ["--out", out, "--seed", str(2**64), "--overwrite"], "--seed must be an integer in [0, 2^64)")
    fails(capsys, demo.main, ["--out", out, "--threads", "-1", "--overwrite"], "--threads must be >= 0, got -1")
    fails(capsys, demo.main, ["--out", out, "--work", out / "model.safetensors" / "w", "--overwrite"],
          f"for --work: {out / 'model.safetensors'} is not a directory")
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == b"trained weights"


def test_demo_default_out_is_not_the_package(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(demo, "build_demo", lambda cfg, **kw: seen.setdefault("out", cfg.out))
    monkeypatch.chdir(tmp_path)
    assert run_cli(demo.main, []) == 0
    assert Path(seen["out"]).resolve() != DEMO.resolve() and Path(seen["out"]).resolve().parent == tmp_path.resolve()


def test_demo_threads_and_work_reach_the_build(monkeypatch, tmp_path):
    """--threads N sets torch's CPU threads before the build; --work is the build's work folder."""
    seen, threads = {}, []
    monkeypatch.setattr(demo, "build_demo", lambda cfg, **kw: seen.setdefault("work", cfg.work))
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    assert run_cli(demo.main, ["--out", str(tmp_path / "o"), "--threads", "3", "--work", str(tmp_path / "w")]) == 0
    assert threads == [3] and seen["work"] == str(tmp_path / "w")


def test_demo_builds_beside_out_and_replaces_files_only_at_the_end(tmp_path, monkeypatch):
    out = tmp_path / "built"
    out.mkdir()
    (out / "model.safetensors").write_text("old")
    (out / "notes.txt").write_text("mine")

    def crash(cfg, stage, log):
        (stage / "model.safetensors").write_text("half")
        raise RuntimeError("killed mid-build")
    monkeypatch.setattr(demo, "_build", crash)
    with pytest.raises(RuntimeError):
        demo.build_demo(demo.DemoConfig(out=str(out)), overwrite=True)
    assert (out / "model.safetensors").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["built"]

    def build(cfg, stage, log):
        (stage / "model.safetensors").write_text("new")
        (stage / "work").mkdir()
        return []
    monkeypatch.setattr(demo, "_build", build)
    demo.build_demo(demo.DemoConfig(out=str(out)), overwrite=True)
    assert (out / "model.safetensors").read_text() == "new" and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built"] and not (out / "work").exists()


def test_a_failed_demo_build_leaves_no_new_out_folder(tmp_path, capsys, monkeypatch):
    """check_demo_config made --out (and its parents) before the build: a build that failed or
    was interrupted (minutes in) left an empty folder. It is made once the build has succeeded."""
    out = tmp_path / "a" / "b" / "built"

    def crash(cfg, stage, log):
        (stage / "model.safetensors").write_text("half")
        raise KeyboardInterrupt
    monkeypatch.setattr(demo, "_build", crash)
    assert run_cli(demo.main, ["--out", str(out)]) == 130
    assert list(tmp_path.iterdir()) == []

    def build(cfg, stage, log):
        (stage / "model.safetensors").write_text("new")
        return []
    monkeypatch.setattr(demo, "_build", build)
    assert run_cli(demo.main, ["--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["model.safetensors"] and os.listdir(tmp_path) == ["a"]


@pytest.mark.parametrize("reader", ["generate", "train", "score", "data", "demo"])
def test_every_jsonl_reader_names_the_bad_line(tmp_path, reader):
    """The five JSONL readers share files.json_rows: a line that is not JSON is one error naming
    the file and its line number (blank lines count as lines and are skipped)."""
    from minitflow import score
    from minitflow.eval.data import read_records
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "q", "answer": "a", "id": "gsm8k/0", "prediction": "1"}\n\n{broken\n')
    read = {"generate": lambda: generate.read_inputs(argparse.Namespace(question=None, input_file=str(path))),
            "train": lambda: training.read_examples(path), "score": lambda: score.read_predictions(path),
            "data": lambda: read_records(path), "demo": lambda: demo.read_jsonl(path)}[reader]
    with pytest.raises(UserError, match=r"rows\.jsonl:3: not valid JSON"):
        read()


HUGE_INT = "1" + "0" * 5000  # json.loads raises a plain ValueError past Python's int-digit limit, no JSONDecodeError


@pytest.mark.parametrize("reader", ["jsonl", "data-list", "report", "train-arch", "weight-index"])
def test_an_integer_past_the_digit_limit_is_one_line(tmp_path, reader):
    """Every JSON reader takes json.loads' plain ValueError too (it was a traceback)."""
    from minitflow.eval.data import read_records
    from minitflow.files import json_rows
    from minitflow.model.weights import _indexed_files
    path = tmp_path / "f.json"
    if reader == "weight-index":
        path = tmp_path / "model.safetensors.index.json"
    path.write_text({"jsonl": '{"question": %s}\n', "data-list": '[{"question": %s}]', "report": '{"summary": %s}',
                     "train-arch": '{"rank": %s}', "weight-index": '{"weight_map": {"a": %s}}'}[reader] % HUGE_INT)
    read = {"jsonl": lambda: list(json_rows(path.read_text(), "f.json")), "data-list": lambda: read_records(path),
            "report": lambda: report.read_summary(path), "train-arch": lambda: train._parse_arch(path.read_text()),
            "weight-index": lambda: _indexed_files(tmp_path)}[reader]
    with pytest.raises(UserError) as e:
        read()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("reader", ["config", "report", "score-results", "weight-index"])
def test_a_json_file_that_is_not_utf8_says_so(tmp_path, reader):
    """UserError is a ValueError: a reader that catches json.loads' ValueError must not catch
    read_text's own error too and call a non-UTF-8 (or missing) file 'not valid JSON'."""
    from minitflow import score
    from minitflow.files import read_json_object
    from minitflow.model.weights import _indexed_files
    path = tmp_path / ("model.safetensors.index.json" if reader == "weight-index" else "x_results.json")
    path.write_bytes(b'{"summary": "\xff"}')
    read = {"config": lambda: read_json_object(path, "config"), "report": lambda: report.read_summary(path),
            "score-results": lambda: score._rescore_files([path], tmp_path, None),
            "weight-index": lambda: _indexed_files(tmp_path)}[reader]
    with pytest.raises(UserError, match="not UTF-8"):
        read()


# ---- inputs a researcher gets wrong, refused instead of ignored ------------------------------

def test_generate_input_flags_that_would_be_ignored(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    rows = tmp_path / "q.jsonl"
    rows.write_text('{"question": "How many does the red box hold?"}\n{"question": "Hi"}\n')
    fails(capsys, generate.main, gen_args("--input_file", rows), "--question", "--input_file")
    base = gen_args()[:2] + gen_args()[4:]  # without --question
    fails(capsys, generate.main, [*base, "--input_file", rows, "--context", "The red box holds 7."], "--context")
    as_json = tmp_path / "q.json"  # JSON read as text would be one question
    as_json.write_text(rows.read_text())
    fails(capsys, generate.main, [*base, "--input_file", as_json], ".jsonl")
    upper = tmp_path / "Q.JSONL"
    upper.write_text(rows.read_text())
    args = argparse.Namespace(question=None, input_file=str(upper), context=None)
    assert [r["question"] for r in generate.read_inputs(args)] == ["How many does the red box hold?", "Hi"]
    rows.write_text('{"question": "Hi"}\n{"question": "  "}\n')
    fails(capsys, generate.main, [*base, "--input_file", rows], "q.jsonl:2", "empty")


@pytest.mark.parametrize("name,text", [("q.jsonl", ""), ("q.jsonl", "\n\n"), ("q.txt", " \n")])
def test_generate_input_file_without_a_question_names_the_file(name, text, tmp_path, capsys, monkeypatch):
    """It said "use --question, --input_file or stdin" to someone who had passed --input_file."""
    no_model_load(monkeypatch)
    path = tmp_path / name
    path.write_text(text)
    line = fails(capsys, generate.main, [*gen_args()[:2], *gen_args()[4:], "--input_file", path], str(path), "holds none")
    assert "use --question" not in line


def test_generate_blank_stdin_says_stdin_was_empty(capsys, monkeypatch):
    """`echo "" | generate` (a script's empty variable) said "use --question, --input_file or stdin"
    to someone who had used stdin."""
    no_model_load(monkeypatch)

    class Stdin(io.TextIOWrapper):
        def isatty(self):
            return False
    monkeypatch.setattr("sys.stdin", Stdin(io.BytesIO(b" \n"), encoding="utf-8"))
    fails(capsys, generate.main, [*gen_args()[:2], *gen_args()[4:]], "no question given: stdin is empty")

    class Terminal(io.TextIOWrapper):  # no flag and no pipe: stdin is the terminal, which is not read
        def isatty(self):
            return True
    monkeypatch.setattr("sys.stdin", Terminal(io.BytesIO(b"not read\n"), encoding="utf-8"))
    line = fails(capsys, generate.main, [*gen_args()[:2], *gen_args()[4:]])
    assert line == "error: no question given: use --question, --input_file or stdin"


@pytest.mark.parametrize("row,words", [({"question": "Hi", "context": 5}, ('"context" must be a string',)),
                                       ({"question": "Hi", "context": ["a"]}, ('"context" must be a string',)),
                                       ({"question": 7}, ('"question" string',)), (["Hi"], ('"question" string',)),
                                       ({"context": "c"}, ('"question" string',)),
                                       ({"question": "Hi", "sender_question": 5}, ('"sender_question" must be a string',))])
def test_generate_jsonl_row_of_the_wrong_shape_is_refused_naming_its_line(row, words, tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    rows = tmp_path / "q.jsonl"
    rows.write_text(json.dumps({"question": "Hi"}) + "\n" + json.dumps(row) + "\n")
    fails(capsys, generate.main, [*gen_args()[:2], *gen_args()[4:], "--input_file", rows], "q.jsonl:2", *words)


def test_generate_jsonl_rows_may_be_strings_or_have_no_context(tmp_path):
    rows = tmp_path / "q.jsonl"
    rows.write_text('"Hi"\n{"question": " Two ", "context": null}\n{"question": "Three", "context": "c"}\n')
    got = generate.read_inputs(argparse.Namespace(question=None, input_file=str(rows), context=None))
    assert [(r["question"], r.get("context")) for r in got] == [("Hi", None), ("Two", None), ("Three", "c")]


def test_sender_max_new_tokens_only_with_textmas_and_at_least_one(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--sender_max_new_tokens", "8"), "only valid with --method textmas")
    fails(capsys, generate.main, [*gen_args("--sender_max_new_tokens", "0")[2:], "--method", "textmas"], ">= 1, got 0")
    fails(capsys, evaluate.main, ["--method", "tflow", "--sender_max_new_tokens", "8", "--data_file",
                                  gsm8k_file(tmp_path), "--output_dir", tmp_path / "r"], "--sender_max_new_tokens")


def test_generate_output_of_a_jsonl_input_is_a_list_however_many_rows(tmp_path):
    """A script reading `--output` of a .jsonl run got an object for a one-line file and a list
    for longer ones; a .jsonl input now always gives a list, --question one object."""
    base = ["--method", "baseline", "--device", "cpu", "--max_new_tokens", "2", "--greedy"]
    for n in (1, 2):
        rows = tmp_path / f"q{n}.jsonl"
        rows.write_text("".join(json.dumps({"question": f"Q{i}?"}) + "\n" for i in range(n)))
        generate.main([*base, "--input_file", str(rows), "--output", str(tmp_path / f"o{n}.json")])
        got = json.loads((tmp_path / f"o{n}.json").read_text())
        assert isinstance(got, list) and [g["question"] for g in got] == [f"Q{i}?" for i in range(n)]
    generate.main([*base, "--question", "Q?", "--output", str(tmp_path / "one.json")])
    assert json.loads((tmp_path / "one.json").read_text())["question"] == "Q?"


def test_random_generator_only_with_tflow(tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--random_generator"), "--random_generator")
    line = fails(capsys, generate.main, gen_args("--method", "tflow", "--checkpoint", DEMO / "tflow.pt", "--random_generator"))
    assert line == "error: pass either --checkpoint or --random_generator, not both"
    fails(capsys, evaluate.main, ["--method", "baseline", "--random_generator", "--data_file", gsm8k_file(tmp_path),
                                  "--output_dir", tmp_path / "r"], "--random_generator")


@pytest.mark.parametrize("part,value", [("parameter_generator", float("nan")), ("pg_layer_aggregator", float("inf"))])
def test_checkpoint_with_non_finite_values_is_refused_before_the_model_loads(part, value, good_state, tmp_path,
                                                                             capsys, monkeypatch):
    """It used to load and run, every answer garbage ("!!")."""
    no_model_load(monkeypatch)
    tensors = dict(good_state[part])
    key = sorted(tensors)[0]
    tensors[key] = torch.full_like(tensors[key], value)
    path = _ckpt(tmp_path, {**good_state, part: tensors})
    fails(capsys, generate.main, gen_args("--method", "tflow", "--checkpoint", path, "--model", DEMO),
          f"{part}.{key} holds NaN or inf")


@pytest.mark.parametrize("kind", ["meta", "sparse"])
def test_checkpoint_with_tensors_that_hold_no_dense_data_is_refused(kind, good_state, tmp_path, capsys, monkeypatch):
    """A state dict saved from a model left on the meta device (or offloaded) loads as meta tensors,
    a sparse one as sparse: both were a traceback (Tensor.item() on meta, aten::ne on SparseCPU)."""
    no_model_load(monkeypatch)
    tensors = dict(good_state["parameter_generator"])
    key = sorted(tensors)[0]
    tensors[key] = torch.empty_like(tensors[key], device="meta") if kind == "meta" else tensors[key].to_sparse()
    path = _ckpt(tmp_path, {**good_state, "parameter_generator": tensors})
    fails(capsys, generate.main, gen_args("--method", "tflow", "--checkpoint", path, "--model", DEMO),
          f"parameter_generator.{key} holds no dense data")


def test_checkpoint_with_a_flipped_bit_is_refused_before_the_model_loads(good_state, tmp_path, capsys, monkeypatch):
    """torch.load does not check torch.save's CRC-32s: the flipped bit loaded as another weight."""
    import struct
    import zipfile
    no_model_load(monkeypatch)
    path = _ckpt(tmp_path, good_state)
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)  # the largest tensor's record
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)  # the local header's
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True) is not None  # torch itself loads it without a word
    fails(capsys, generate.main, gen_args("--method", "tflow", "--checkpoint", path, "--model", DEMO),
          f"{path} is corrupt (Bad CRC-32")


@pytest.mark.parametrize("arch,word", [({"rank": 0}, "pg_arch rank must be a positive integer"),
                                       ({"output_dim": 100}, "output_dim 100 must equal token_dim"),
                                       ({"head_dim": 2}, "head_dim 2 must be a multiple of 4")])
def test_bad_pg_arch_in_a_checkpoint_names_the_file(arch, word, good_state, tmp_path, capsys, monkeypatch):
    """The line said only "pg_arch rank must be ...", as if a flag were wrong."""
    no_model_load(monkeypatch)
    path = _ckpt(tmp_path, {**good_state, "pg_arch": {**good_state["pg_arch"], **arch}})
    fails(capsys, generate.main, gen_args("--method", "tflow", "--checkpoint", path, "--model", DEMO), str(path), word)


@pytest.mark.parametrize("kind", ["text", "truncated", "other layers", "folder", "hub id", "broken link"])
def test_bad_checkpoint_is_refused_before_the_model_loads(kind, tmp_path, capsys, monkeypatch):
    """A folder (the official release's checkpoint_dir, say) was "TFlow checkpoint not found" though it is there;
    a hub id, and a hub cache's link whose blob is gone, were "not found" without what to pass."""
    no_model_load(monkeypatch)
    path = tmp_path / "g.pt"
    if kind == "hub id":
        monkeypatch.chdir(tmp_path)
        argv = ["--method", "tflow", "--checkpoint", "BWR-hhh/TFlow", "--question", "How many?", "--device", "cpu"]
        fails(capsys, generate.main, argv, "TFlow checkpoint not found: BWR-hhh/TFlow (--checkpoint takes the "
              "file, e.g. the official release's checkpoints/tflow/tflow_best.pt; a hub id is not looked up)")
        return
    if kind == "broken link":
        path.symlink_to(tmp_path / "blobs" / "0123abcd")
        argv = ["--method", "tflow", "--checkpoint", path, "--question", "How many?", "--device", "cpu"]
        fails(capsys, generate.main, argv, f"TFlow checkpoint {path} is a broken link (to "
              f"{tmp_path / 'blobs' / '0123abcd'}, which is missing)")
        return
    if kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "truncated":
        path.write_bytes((DEMO / "tflow.pt").read_bytes()[:100_000])
    else:
        state = torch.load(DEMO / "tflow.pt", weights_only=True)
        torch.save({**state, "pg_arch": {**state["pg_arch"], "num_base_model_layers": 8}}, path)
    argv = ["--method", "tflow", "--checkpoint", path, "--question", "How many?", "--device", "cpu",
            "--max_new_tokens", "2"]
    fails(capsys, generate.main, argv, str(path), *({"other layers": [], "folder": ["is a directory: pass the checkpoint "
                                                                                   "file in it"]}.get(kind, ["not a torch.save file"])))


def test_sigterm_unwinds_every_command_line_like_ctrl_c(tmp_path, capsys):
    """SIGTERM's default action ended the process inside whatever it wrote (a scheduler's stop,
    torchrun ending a failed job's other ranks): run_cli turns it into the Ctrl-C path, so the
    clean-up runs (here: a temporary file of `replacing`) and the exit code says what happened."""
    import os
    import signal

    from minitflow.files import replacing
    before = signal.getsignal(signal.SIGTERM)

    def main(argv):
        with replacing(tmp_path / "out.json") as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
        return 0

    assert run_cli(main, []) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "terminated"
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) == before


def test_greedy_with_a_temperature_top_p_or_top_k_is_refused(tmp_path, capsys, monkeypatch):
    """Either would be ignored; the default temperature and top-p stay the official ones."""
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--greedy", "--temperature", "0.7"), "--greedy", "--temperature")
    fails(capsys, evaluate.main, ["--method", "baseline", "--greedy", "--top_p", "0.9", "--output_dir",
                                  tmp_path / "r"], "--top_p has no effect with --greedy")
    fails(capsys, generate.main, gen_args("--greedy", "--top_k", "20"), "--top_k has no effect with --greedy")
    fails(capsys, generate.main, gen_args("--temperature", "0", "--top_p", "0.9"), "--top_p has no effect with --temperature 0")
    fails(capsys, generate.main, gen_args("--temperature", "0.0", "--top_k", "20"), "--top_k has no effect with --temperature 0")
    assert not (tmp_path / "r").exists()
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    assert sampling_from(parser.parse_args([]), DEMO).temperature == OFFICIAL_TEMPERATURE
    assert sampling_from(parser.parse_args([]), DEMO).top_p == OFFICIAL_TOP_P
    assert sampling_from(parser.parse_args(["--temperature", "0.7", "--top_p", "0.5"]), DEMO).top_p == 0.5
    assert sampling_from(parser.parse_args(["--greedy"]), DEMO).temperature == 0.0


def test_a_data_file_that_is_a_directory_says_so(tmp_path, capsys):
    fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", tmp_path, "--output_dir", tmp_path / "r"],
          "is a directory")


def test_evaluate_max_samples_zero(tmp_path, capsys):
    fails(capsys, evaluate.main, ["--method", "oracle", "--data_file", gsm8k_file(tmp_path), "--max_samples", "0",
                                  "--output_dir", tmp_path / "r"], "--max_samples")


def test_evaluate_settings_file_that_is_not_an_object(tmp_path, capsys):
    args = ["--method", "oracle", "--data_file", gsm8k_file(tmp_path), "--output_dir", tmp_path / "r"]
    assert run_cli(evaluate.main, [str(a) for a in args]) == 0
    (tmp_path / "r" / "oracle_results.json").unlink()
    (tmp_path / "r" / "oracle_settings.json").write_text("[1, 2]\n")  # edited by hand
    fails(capsys, evaluate.main, args, "oracle_settings.json", "--overwrite")
    assert not (tmp_path / "r" / "oracle_results.json").exists()


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_score_timeout_refused_not_replaced(timeout, tmp_path, capsys):
    from minitflow import score
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "gsm8k/0", "prediction": "3"}\n')
    fails(capsys, score.main, ["--dataset", "gsm8k", "--data_file", gsm8k_file(tmp_path), "--predictions", preds,
                               "--timeout", timeout], "--timeout")


def test_score_output_checked_before_scoring(tmp_path, capsys, monkeypatch):
    from minitflow import score
    from minitflow.eval import scoring
    def boom(*a, **k):
        raise AssertionError("scored before the bad --output was refused")
    monkeypatch.setattr(scoring, "score_samples", boom)
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "gsm8k/0", "prediction": "3"}\n')
    base = ["--dataset", "gsm8k", "--data_file", gsm8k_file(tmp_path), "--predictions", preds]
    for path in _bad_outputs(tmp_path).values():
        fails(capsys, score.main, [*base, "--output", path])
    monkeypatch.undo()
    assert run_cli(score.main, [str(a) for a in [*base, "--output", tmp_path / "new" / "o.jsonl"]]) == 0
    assert json.loads((tmp_path / "new" / "o.jsonl").read_text())["correct"] is True


def test_output_that_is_an_input_of_the_run_is_refused_and_the_input_kept(tmp_path, capsys, monkeypatch):
    """`--output q.jsonl` beside `--input_file q.jsonl` (or score's predictions, or train's rows)
    replaced the questions with the answers: the input was gone once the run had read it."""
    from minitflow import score
    no_model_load(monkeypatch)
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "How many does the red box hold?"}\n')
    fails(capsys, generate.main, ["--method", "baseline", "--input_file", questions, "--max_new_tokens", "2",
                                  "--output", questions], "--input_file")
    preds, data = tmp_path / "p.jsonl", gsm8k_file(tmp_path)
    data_text = data.read_text()
    preds.write_text('{"id": "gsm8k/0", "prediction": "3"}\n')
    base = ["--dataset", "gsm8k", "--data_file", data, "--predictions", preds]
    fails(capsys, score.main, [*base, "--output", preds], "--predictions")
    fails(capsys, score.main, [*base, "--output", data], "--data_file")
    args = train_args(tmp_path)
    rows = args[args.index("--train") + 1]
    fails(capsys, train.main, [*args, "--out", rows], "--train")
    fails(capsys, train.main, [*args, "--eval", data, "--out", data], "--eval")
    assert questions.read_text() == '{"question": "How many does the red box hold?"}\n'
    assert preds.read_text() == '{"id": "gsm8k/0", "prediction": "3"}\n'
    assert json.loads(rows.read_text()) == {"question": "Q?", "answer": "A"} and data.read_text() == data_text


def test_generate_output_that_is_the_model_or_checkpoint_is_refused_and_the_file_kept(tmp_path, capsys, monkeypatch):
    """`generate --output` onto a file of the model folder (its weights, its config) or onto the tflow
    checkpoint wrote the answers over the file the run had just loaded: only --input_file was compared."""
    no_model_load(monkeypatch)
    model = model_copy(tmp_path)
    shutil.copy(DEMO / "model.safetensors", model / "model.safetensors")
    shutil.copy(DEMO / "tflow.pt", tmp_path / "g.pt")
    kept = {p: p.read_bytes() for p in (model / "model.safetensors", model / "config.json", tmp_path / "g.pt")}
    for name in ("model.safetensors", "config.json"):
        fails(capsys, generate.main, [*gen_args("--model", model), "--output", model / name], f"--model's {name}")
    fails(capsys, generate.main, ["--method", "tflow", "--question", "Q?", "--model", model, "--checkpoint",
                                  tmp_path / "g.pt", "--output", tmp_path / "g.pt"], "is also --checkpoint")
    assert all(p.read_bytes() == b for p, b in kept.items())


def test_a_refused_run_leaves_no_new_output_folder(tmp_path, capsys, monkeypatch):
    """The output's missing folders were made by the early path check, so a run refused after it
    (a missing model or data file, a bad checkpoint) left them behind, empty; evaluate leaves
    none. They are made when the file is written."""
    from minitflow import score
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args("--model", tmp_path / "missing", "--output", tmp_path / "g" / "o.json"),
          "model directory not found")
    fails(capsys, generate.main, ["--method", "tflow", "--question", "Q?", "--checkpoint", gsm8k_file(tmp_path),
                                  "--output", tmp_path / "t" / "o.json"], "not a torch checkpoint")
    fails(capsys, train.main, train_args(tmp_path, "--init", tmp_path / "missing.pt", "--out",
                                         tmp_path / "tr" / "o.pt"), "no such checkpoint")
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "gsm8k/0", "prediction": "3"}\n')
    fails(capsys, score.main, ["--dataset", "gsm8k", "--data_file", tmp_path / "missing.jsonl", "--predictions", preds,
                               "--output", tmp_path / "s" / "deeper" / "o.jsonl"], "data file not found")
    assert not any((tmp_path / d).exists() for d in ("g", "t", "tr", "s"))
    (tmp_path / "a_file").write_text("x")  # a folder that can never be made is still refused first
    fails(capsys, generate.main, gen_args("--output", tmp_path / "a_file" / "x" / "o.json"), "not a directory")


def test_question_too_long_for_the_model_is_refused_before_any_generation(tmp_path, capsys, monkeypatch):
    """The engine refuses such a request only at its turn: every question before it would run
    first (and generate would then lose all of their answers). Refused before the weights load
    (minutes at 4B), and before evaluate makes its folder (no settings.json or run.log left)."""
    long = "word " * 5000  # > the demo's 4,096 positions
    rows = tmp_path / "q.jsonl"
    rows.write_text(json.dumps({"question": "Hi"}) + "\n" + json.dumps({"question": long}) + "\n")
    def boom(*a, **k):
        raise AssertionError("the model loaded before the long question was refused")
    for module in (cli, evaluation):  # generate's import of it (in main, at the call) and evaluate's run
        monkeypatch.setattr(module, "load_for", boom)
    base = gen_args()[:2] + gen_args()[4:]
    fails(capsys, generate.main, [*base, "--input_file", rows], "question 2", "4096 positions")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 3"}) + "\n" for q in ["Hi", "Hello", long]))
    fails(capsys, evaluate.main, ["--method", "baseline", "--data_file", data, "--device", "cpu", "--max_new_tokens",
                                  "2", "--batch_size", "1", "--output_dir", tmp_path / "r"],
          "gsm8k/2", "4096 positions")
    assert not (tmp_path / "r").exists()


def test_check_questions_fit_counts_the_new_tokens_up_to_the_engines_bound():
    """A question fits when its tokens (the model's tokenizer) plus max_new_tokens are at most
    the model's positions, the bound the engine enforces at the request's turn (LLM.max_seq_len);
    counted from the model folder alone, no weights loaded."""
    from minitflow.model.tokenizer import Tokenizer
    model = demo_dir()
    seven = "a b c d e f g"
    n = len(Tokenizer(model).encode(seven))
    limit = LLM.load(model, device="cpu").max_seq_len
    check_questions_fit(model, ["x", seven], limit - n, ["q1", "q2"])  # fits exactly
    with pytest.raises(UserError, match=f"q2: the question alone is {n} tokens; with max_new_tokens {limit - n + 1} "
                                        f"that is more than the model's {limit} positions"):
        check_questions_fit(model, ["x", seven], limit - n + 1, ["q1", "q2"])


@pytest.mark.parametrize("method", ["latentmas", "textmas", "tflow"])
def test_generate_flags_reach_run_method(method, tmp_path, monkeypatch):
    """Every generation flag of `python -m minitflow.generate`, set to a value that is not its
    default, reaches run_method as that value (a flag parsed and then replaced by a default
    would run another setting, recorded as the one asked for); the output file records it."""
    from minitflow.tflow import methods, prompts
    seen = {}
    real = methods.run_method  # generate imports it once its flags are parsed: from the module, at that call

    def spy(method_, llm, questions, **kw):
        seen.update(kw, method=method_, questions=questions, dtype=llm.dtype)
        return real(method_, llm, questions, **kw)
    monkeypatch.setattr(methods, "run_method", spy)
    out = tmp_path / "out.json"
    extra = {"latentmas": ["--latent_steps", "2", "--mas_topology", "hierarchical", "--latent_realign", "--think"],
             "textmas": ["--sender_max_new_tokens", "2"], "tflow": ["--random_generator"]}[method]
    assert generate.main(["--method", method, "--dataset", "minerva_math", "--question", "Q?", "--context", "C.",
                          "--device", "cpu", "--dtype", "float32", "--max_new_tokens", "3", "--temperature", "0.7",
                          "--top_p", "0.8", "--top_k", "5", "--seed", "9", "--batch_size", "3",
                          "--refill_share", "0.25", "--output", str(out), *extra]) == 0
    sp = seen["sampling"]
    assert (sp.max_new_tokens, sp.temperature, sp.top_p, sp.top_k, sp.seed) == (3, 0.7, 0.8, 5, 9)
    assert (seen["method"], seen["style"], seen["questions"], seen["batch_size"], seen["refill_share"]) == \
        (method, "minerva_math", ["Q?"], 3, 0.25)
    assert seen["sender_questions"] == [prompts.with_context("C.", "Q?")] and seen["dtype"] == torch.float32
    if method == "latentmas":
        assert {k: seen[k] for k in ("latent_steps", "topology", "realign", "think")} == \
            {"latent_steps": 2, "topology": "hierarchical", "realign": True, "think": True}
    elif method == "textmas":
        assert seen["sender_max_new_tokens"] == 2
    else:
        assert seen["generator"] is not None
    meta = json.loads(out.read_text())["metadata"]
    if method == "textmas":  # the senders stopped at 2 tokens, not the official 1,024
        senders = list(meta["token_usage"]["per_agent"].values())[:2]
        assert [u["completion_tokens"] <= 2 for u in senders] == [True, True], meta["token_usage"]
    assert {k: meta["sampling"][k] for k in ("temperature", "top_p", "top_k", "seed", "max_new_tokens")} == \
        {"temperature": 0.7, "top_p": 0.8, "top_k": 5, "seed": 9, "max_new_tokens": 3}


def test_generate_rows_senders_read_what_train_reads(tmp_path, capsys, monkeypatch):
    """A .jsonl row's "sender_question" is what its senders read, as train reads the same row (the
    demo's held-out rows carry one beside their "context"); generate ignored it, so its senders read
    only the question, without a word. A row without one: its context, then the question."""
    from minitflow.tflow import methods
    seen = {}
    real = methods.run_method

    def spy(method_, llm, questions, **kw):
        seen.update(kw, questions=questions)
        return real(method_, llm, questions, **kw)
    monkeypatch.setattr(methods, "run_method", spy)
    rows = tmp_path / "q.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in (
        {"question": "How many? ", "context": "Box 7.", "sender_question": "Facts: box 7. How many?"},
        {"question": "Which?", "context": "Red."}, {"question": "Why?"})))
    assert generate.main(["--method", "tflow", "--input_file", str(rows), "--device", "cpu", "--dtype", "float32",
                          "--max_new_tokens", "2", "--greedy"]) == 0
    assert seen["questions"] == ["How many?", "Which?", "Why?"]
    assert seen["sender_questions"] == ["Facts: box 7. How many?", "Red. Which?", "Why?"]
    rows.write_text(json.dumps({"question": "Q?", "sender_question": " "}) + "\n")
    assert run_cli(generate.main, ["--input_file", str(rows), "--greedy"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{rows}:1: the sender_question is empty")


@pytest.mark.parametrize("method", ["baseline", "textmas", "tflow", "latentmas"])
def test_a_question_whose_method_prompt_is_too_long_is_refused_before_any_generation(method, tmp_path, capsys,
                                                                                      monkeypatch):
    """The bare question fits with max_new_tokens, but not inside the method's chat prompt (system
    prompt, template; textmas' senders also generate their 1,024 tokens): refused, naming the
    sample, before the model loads or the folder is made. The engine would refuse it only at
    its turn, naming its place in this rank's remaining share, after the questions before it
    ran, and every resume would stop there again."""
    from minitflow.model.tokenizer import Tokenizer
    encode = Tokenizer(demo_dir()).encode
    long = "word " * 4080
    while len(encode(long)) > 4090:
        long = long[:-5]
    check_questions_fit(demo_dir(), [long], 4, ["bare"])  # the bare question fits
    def boom(*a, **k):
        raise AssertionError("the model loaded before the long question was refused")
    for module in (cli, evaluation):  # generate's import of it (in main, at the call) and evaluate's run
        monkeypatch.setattr(module, "load_for", boom)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 3"}) + "\n" for q in ["Hi", long, "Yo"]))
    fails(capsys, evaluate.main, ["--method", method, "--data_file", data, "--device", "cpu", "--max_new_tokens", "4",
                                  "--batch_size", "1", "--output_dir", tmp_path / "r"],
          "gsm8k/1", method, "4096 positions")
    assert not (tmp_path / "r").exists()
    rows = tmp_path / "q.jsonl"
    rows.write_text(json.dumps({"question": "Hi"}) + "\n" + json.dumps({"question": long}) + "\n")
    fails(capsys, generate.main, ["--method", method, "--input_file", rows, "--device", "cpu", "--max_new_tokens", "4"],
          "question 2", method, "4096 positions")


def test_a_textmas_question_too_long_names_the_senders_new_tokens(tmp_path, capsys, monkeypatch):
    """textmas' senders generate 1,024 tokens whatever --max_new_tokens says: a 256-position model
    was refused "with max_new_tokens 5", which no --max_new_tokens could mend. The line names the
    senders' limit too, as run_method's own check does."""
    model = model_copy(tmp_path)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 256}))
    no_model_load(monkeypatch)
    base = ["--model", model, "--method", "textmas", "--question", "Hi?", "--device", "cpu", "--max_new_tokens", "5"]
    fails(capsys, generate.main, base, "with max_new_tokens 5 and sender_max_new_tokens 1024, more than the model's 256")
    fails(capsys, generate.main, [*base, "--sender_max_new_tokens", "300"], "and sender_max_new_tokens 300, more")
    assert check_questions_fit(model, ["Hi?"], 5, ["q"], method="textmas", options={"sender_max_new_tokens": 100})


def test_a_textmas_receiver_too_long_for_the_cache_says_why():
    """The one prompt no check before the run can size: the receiver's holds the senders' texts.
    Its refusal said only the engine's numbers; it now names the texts and what fits it."""
    from minitflow.engine.sampler import SamplingParams
    from minitflow.tflow.methods import run_method
    llm = LLM.load(demo_dir(), device="cpu", dtype="float32", max_seq_len=155)  # senders 141, receiver 157
    with pytest.raises(UserError, match=r"Summarizer.*155 positions \(its prompt holds the senders' texts, 153 "
                                        r"tokens in all: a smaller sender_max_new_tokens or max_new_tokens fits it\)$"):
        run_method("textmas", llm, ["How many legs do 3 spiders have?"], sender_max_new_tokens=40,
                   sampling=SamplingParams(max_new_tokens=4, ignore_eos=True))


def test_labels_name_the_questions_in_errors():
    """run_method's `labels` (evaluate passes sample ids) name a question in an error raised
    mid-run or by latentmas' own plan, instead of its index in the call; a wrong count is refused."""
    from minitflow.engine.sampler import SamplingParams
    from minitflow.tflow.methods import run_method
    llm = LLM.load(demo_dir(), device="cpu", dtype="float32", max_seq_len=155)
    q = "How many legs do 3 spiders have?"
    with pytest.raises(UserError, match=r"^request \d+ \(mbpp/Mbpp/7, Summarizer\): .*senders' texts"):
        run_method("textmas", llm, [q], sender_max_new_tokens=40, labels=["mbpp/Mbpp/7"],
                   sampling=SamplingParams(max_new_tokens=4, ignore_eos=True))
    with pytest.raises(UserError, match=r"^mmlu/anatomy/3 needs \d+ positions"):
        run_method("latentmas", llm, ["x", q], latent_steps=80, labels=["mmlu/anatomy/2", "mmlu/anatomy/3"],
                   sampling=SamplingParams(max_new_tokens=4))
    with pytest.raises(UserError, match="1 labels for 2 questions"):
        run_method("baseline", llm, ["x", q], labels=["a"])


def test_positions_needed_is_what_the_methods_requests_take():
    """The count made before the model loads equals the positions the method's longest request
    takes when it runs (textmas: at least its senders', the receiver's texts unknown before)."""
    from minitflow.engine.sampler import SamplingParams
    from minitflow.tflow import prompts
    from minitflow.tflow.checkpoint import load_checkpoint
    from minitflow.tflow.methods import positions_needed, run_method
    llm = LLM.load(demo_dir(), device="cpu", dtype="float32")
    gen = load_checkpoint(demo_dir() / "tflow.pt", llm.cfg)
    q, sq = "How many legs do 3 spiders have?", "Spiders have 8 legs. How many legs do 3 spiders have?"
    for method, opts in [("baseline", {}), ("tflow", {}), ("textmas", {"sender_max_new_tokens": 3}),
                         ("latentmas", {"latent_steps": 2, "think": True}), ("latentmas", {})]:
        u = run_method(method, llm, [q], sampling=SamplingParams(max_new_tokens=5), generator=gen,
                       sender_questions=[sq], **opts)[0].agents
        need = positions_needed(method, llm.encode, "gsm8k", q, sq, 5, **opts)
        if method == "baseline":
            assert need == u["single"].prompt_tokens + 5
        elif method == "tflow":
            assert need == max(u["sender_A"].prompt_tokens, u["sender_B"].prompt_tokens, u["receiver"].prompt_tokens + 5)
        elif method == "latentmas":
            assert need == sum(a.prompt_tokens + a.latent_steps for a in u.values()) + 5, opts
        else:
            receiver = prompts.textmas_roles("gsm8k")[2][0]
            senders = max(a.prompt_tokens + 3 for name, a in u.items() if name != receiver)
            assert senders <= need <= max(senders, u[receiver].prompt_tokens + 5)
    for method in ("baseline", "textmas", "tflow", "latentmas"):  # a style alias, as the command lines take it
        assert positions_needed(method, llm.encode, "math", q, q, 5) == \
            positions_needed(method, llm.encode, "minerva_math", q, q, 5)


# ---- a --batch_size whose KV cache cannot fit -------------------------------------------------

QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960)


def test_kv_cache_bytes_at_qwen3_4b_dimensions():
    """144 KiB per slot-position in bfloat16 (36 layers x 8 KV heads x 128 x K and V x 2 bytes):
    --batch_size 256 with 2,048 new tokens after a 1,000-token prompt is 108 GiB, more than an
    80 GB GPU. The cache is grown in 256-position steps up to the longest request, capped at the
    model's positions; textmas has two slots per question, latentmas' first group's sender rows
    sit beside the engine's cache made for that group."""
    from minitflow.cli import kv_cache_bytes
    from minitflow.engine.runner import cache_positions
    from minitflow.model.config import Qwen3Config
    from minitflow.model.kv_cache import kv_bytes
    cfg = Qwen3Config(**QWEN3_4B)
    per = 144 * 1024
    assert kv_bytes(36, 8, 128, torch.bfloat16) == per
    assert kv_bytes(36, 8, 128, torch.float32, slots=3, positions=5) == 2 * per * 15
    run = [(1000 + 2048, 0)] * 300
    assert kv_cache_bytes(cfg, torch.bfloat16, "baseline", 256, run) == (256 * 3072 * per, 256, 3072)
    assert 256 * 3072 * per == 108 * 2 ** 30
    assert kv_cache_bytes(cfg, torch.bfloat16, "textmas", 256, run) == (512 * 3072 * per, 512, 3072)
    assert kv_cache_bytes(cfg, torch.bfloat16, "tflow", 256, run[:3]) == (3 * 3072 * per, 3, 3072)  # 3 questions
    assert kv_cache_bytes(cfg, torch.float16, "baseline", 1, [(10, 0), (40000, 0)])[1:] == (1, 40192)
    assert kv_cache_bytes(cfg, torch.float16, "baseline", 1, [(40900, 0)])[1:] == (1, 40960)  # the model's positions
    assert cache_positions(257, 10_000) == 512 and cache_positions(256, 10_000) == 256
    # latentmas: the first group (2 questions) holds its sender rows (2 x 700) beside 2 slots x 1,024
    assert kv_cache_bytes(cfg, torch.bfloat16, "latentmas", 2, [(1000, 700), (300, 100)])[0] == (2048 + 1400) * per
    # ... unless a later, longer judger grows the engine's cache past both
    assert kv_cache_bytes(cfg, torch.bfloat16, "latentmas", 2, [(1000, 700), (300, 100), (5000, 4000)]) == \
        (2 * 5120 * per, 2, 5120)


def test_read_weights_counts_the_loaded_parameters_from_the_headers_alone(monkeypatch):
    from minitflow.model import weights
    llm = LLM.load(DEMO, device="cpu", dtype="float32")
    numel = sum(p.numel() for p in llm.model.parameters())  # a tied lm_head once
    monkeypatch.setattr(weights, "load_model", lambda *a, **k: pytest.fail("weights read"))
    assert weights.read_weights(DEMO)[1] == numel


def _fits_two(method: str, questions: list[str], max_new: int) -> int:
    """Free bytes in which exactly 2 of `questions` fit in flight: the demo's float32 weights plus
    2 slots (textmas: 4, its senders limited to `max_new` tokens too) of the cache grown to the
    run's longest request."""
    from minitflow.model.config import Qwen3Config
    from minitflow.model.tokenizer import Tokenizer
    from minitflow.tflow.methods import positions_needed
    cfg = Qwen3Config.from_dir(DEMO)
    encode = Tokenizer(DEMO).encode
    opts = {"sender_max_new_tokens": max_new} if method == "textmas" else {}
    longest = max(positions_needed(method, encode, "gsm8k", q, q, max_new, **opts) for q in questions)
    size = min(-(-longest // 256) * 256, cfg.max_position_embeddings)
    llm = LLM.load(DEMO, device="cpu", dtype="float32")
    weights = 4 * sum(p.numel() for p in llm.model.parameters())
    per_slot = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4 * size
    return weights + 2 * (2 if method == "textmas" else 1) * per_slot


@pytest.mark.parametrize("method", ["baseline", "textmas"])
def test_a_batch_size_that_cannot_fit_is_refused_before_the_weights_load(method, tmp_path, capsys, monkeypatch):
    """An absurd --batch_size was an out-of-memory traceback, maybe hours into a run (at the first
    long request): now one line before the weights load, with the bytes needed and free and the
    largest --batch_size that fits; that one runs."""
    from minitflow.model import weights
    questions = [f"The red box holds {i}. How many does the red box hold?" for i in range(5)]
    free = _fits_two(method, questions, 2)
    monkeypatch.setattr(cli, "available_memory", lambda device: free)
    real_load = weights.load_model
    monkeypatch.setattr(weights, "load_model", lambda *a, **k: pytest.fail("weights loaded before the refusal"))
    rows = tmp_path / "q.jsonl"
    rows.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions))
    base = ["--method", method, "--input_file", rows, "--device", "cpu", "--dtype", "float32",
            "--max_new_tokens", "2", "--sender_max_new_tokens" if method == "textmas" else "--seed", "2"]
    line = fails(capsys, generate.main, [*base, "--batch_size", "5"], "--batch_size 5 cannot fit on cpu",
                 f"{free:,} are free", "--batch_size 2 is the largest that fits")
    assert f"{free + 1:,}" not in line
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 3"}) + "\n" for q in questions))
    ev = ["--method", method, "--data_file", data, "--device", "cpu", "--dtype", "float32", "--max_new_tokens", "2",
          *(["--sender_max_new_tokens", "2"] if method == "textmas" else []), "--output_dir", tmp_path / "r"]
    fails(capsys, evaluate.main, [*ev, "--batch_size", "3"], "--batch_size 3 cannot fit",
          "--batch_size 2 is the largest that fits")
    monkeypatch.setattr(cli, "available_memory", lambda device: 1000)  # not even the weights
    fails(capsys, generate.main, [*base, "--batch_size", "1"], "not even --batch_size 1 fits")
    monkeypatch.setattr(cli, "available_memory", lambda device: free)
    monkeypatch.setattr(weights, "load_model", real_load)
    assert run_cli(generate.main, [str(a) for a in [*base, "--batch_size", "2"]]) == 0
    assert run_cli(evaluate.main, [str(a) for a in [*ev, "--batch_size", "2"]]) == 0
    monkeypatch.setattr(cli, "available_memory", lambda device: None)  # unknown (not Linux): no check
    assert run_cli(generate.main, [str(a) for a in [*base, "--batch_size", "5"]]) == 0


def test_the_memory_check_counts_latentmas_sender_rows_and_the_tflow_generator(monkeypatch):
    """latentmas' first group holds its senders' rows beside the engine's cache; a tflow generator,
    random or a checkpoint's, is counted from its dimensions: neither is on the device when the
    free memory is read (a checkpoint's generator was moved there before the check, so a refused
    run had paid for it; its bytes were not counted, the free memory being read after it). On
    the CPU a checkpoint's generator, read there, is in the free memory's reading already."""
    from minitflow.model.weights import read_weights
    backbone = read_weights(DEMO)[1] * 4  # float32
    seen = []

    def check(args, plan, positions):
        assert plan.generator is None or all(p.device.type == "cpu" for p in plan.generator.parameters())
        seen.append((args.method, positions, plan.weights - backbone))
        raise UserError("checked")
    monkeypatch.setattr(cli, "check_memory", check)
    for method, extra in (("latentmas", ["--latent_steps", "2"]), ("tflow", ["--random_generator"]),
                          ("tflow", []), ("latentmas", [])):
        with pytest.raises(UserError, match="checked"):
            generate.main(["--method", method, "--question", "What is 2 + 3?", "--device", "cpu", "--max_new_tokens",
                           "2", "--dtype", "float32", *extra])
    (_, [(need, held)], g1), (_, [(_, h2)], g2), (_, _, g3), (_, [(_, h4)], g4) = seen
    from minitflow.model.config import Qwen3Config
    from minitflow.tflow.checkpoint import random_generator
    cfg = Qwen3Config.from_dir(DEMO)
    gen_bytes = sum(p.numel() * p.element_size() for p in random_generator(cfg).parameters())  # float32 on CPU
    ckpt_bytes = sum(p.numel() * p.element_size()
                     for p in load_checkpoint(DEMO / "tflow.pt", cfg, torch.float32).parameters())
    # a checkpoint's generator is read on the CPU: there it is in memory already when it is read
    assert 0 < held < need and h2 == h4 == 0 and (g1, g2, g3, g4) == (0, gen_bytes, 0, 0)
    # on another device it is counted, and not moved there before the check (meta stands in for CUDA)
    monkeypatch.setattr(cli, "resolve_device", lambda name: torch.device("meta"))
    with pytest.raises(UserError, match="checked"):
        generate.main(["--method", "tflow", "--question", "What is 2 + 3?", "--max_new_tokens", "2",
                       "--dtype", "float32"])
    assert seen[-1][2] == ckpt_bytes > 0
    monkeypatch.undo()
    p = argparse.ArgumentParser()
    add_model_args(p)
    monkeypatch.setattr(cli, "available_memory", lambda device: 1)
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4 * 512  # 1 slot x 300 -> 512 positions
    for flags, weights in ((["--method", "baseline"], backbone),
                           (["--method", "tflow", "--random_generator"], backbone + gen_bytes)):
        args = p.parse_args([*flags, "--batch_size", "1", "--dtype", "float32", "--device", "cpu"])
        with pytest.raises(UserError) as e:
            cli.plan_load(args, DEMO, [(300, 0)])
        assert f"need at least {weights + kv:,} bytes, 1 are free" in str(e.value), (str(e.value), weights, kv)


def test_the_weight_headers_are_read_once_before_the_model_loads(tmp_path, monkeypatch):
    """evaluate checked the headers (check_weights), load_for again for a checkpoint, and the memory
    check a third time (weight_bytes), each parsing every header: one reading (read_weights) serves all now."""
    from minitflow.model import weights
    real, calls = weights._plan, []
    monkeypatch.setattr(weights, "_plan", lambda *a: calls.append(a) or real(*a))
    no_model_load(monkeypatch)
    tflow = ["--method", "tflow", "--device", "cpu", "--max_new_tokens", "2"]
    with pytest.raises(AssertionError, match="a model was loaded"):
        generate.main([*tflow, "--question", "What is 2 + 3?"])
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(AssertionError, match="a model was loaded"):
        evaluate.main([*tflow, "--data_file", str(gsm8k_file(tmp_path)), "--output_dir", str(tmp_path / "out")])
    assert len(calls) == 1


def test_a_run_refused_for_memory_leaves_its_output_folder_as_it_was(tmp_path, capsys, monkeypatch):
    """evaluate claimed its folder (lock, settings, run.log) before the memory check refused the
    run: a fresh run left a folder behind, a resume a lock and a log. The check runs first now,
    sized from the samples a resume has left (read without writing): finished ones, however
    long, do not count."""
    questions = ["The red box holds 7. How many does the red box hold?",
                 " ".join(["The red box holds 7."] * 60) + " How many does the red box hold?"]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 7"}) + "\n" for q in questions))
    out = tmp_path / "out"
    ev = ["--method", "baseline", "--data_file", data, "--device", "cpu", "--dtype", "float32", "--max_new_tokens",
          "2", "--output_dir", out]
    monkeypatch.setattr(cli, "available_memory", lambda device: 1000)
    fails(capsys, evaluate.main, ev, "not even --batch_size 1 fits")
    assert not out.exists()
    monkeypatch.undo()
    assert run_cli(evaluate.main, [str(a) for a in ev]) == 0
    part = out / "baseline_partial.rank0.jsonl"
    rows = part.read_text().splitlines()
    part.write_text(next(r for r in rows if json.loads(r)["question"] == questions[1]) + "\n")  # the long one is done
    (out / "baseline_results.json").unlink()
    (out / "run.log").unlink()
    (out / "baseline.rank0.lock").unlink()
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    sized = []

    def check(args, plan, positions):
        sized.append(list(positions))
        raise UserError("checked")
    monkeypatch.setattr(cli, "check_memory", check)
    fails(capsys, evaluate.main, ev, "checked")
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    fits = check_questions_fit(DEMO, questions, 2, ["0", "1"], method="baseline")
    assert sized == [[fits[0]]] and fits[0][0] < fits[1][0]
    fails(capsys, evaluate.main, [*ev, "--overwrite"], "checked")  # --overwrite redoes both: sized from both
    assert sized[1] == fits and {f.name: f.read_bytes() for f in out.iterdir()} == before


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_a_bad_output_dir_is_refused_before_the_checkpoint_is_read(where, tmp_path, capsys, monkeypatch):
    """evaluate reads a --checkpoint (and checks memory) before it makes its folder, so that a
    refusal leaves none; a --output_dir that can never be a folder must still be refused before
    that reading, not after it, and without making any folder."""
    import minitflow.tflow.checkpoint as checkpoint
    def boom(*a, **k):
        raise AssertionError("the checkpoint was read before the bad --output_dir was refused")
    monkeypatch.setattr(checkpoint, "load_checkpoint", boom)
    no_model_load(monkeypatch)
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if where == "a file" else blocker / "out"
    fails(capsys, evaluate.main, ["--method", "tflow", "--checkpoint", DEMO / "tflow.pt", "--data_file",
                                  gsm8k_file(tmp_path), "--output_dir", out, "--device", "cpu"],
          "is not a directory")
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "taken"]


def test_the_memory_check_reads_the_output_dir_the_run_will_claim(tmp_path, capsys, monkeypatch):
    """The check before the folder is claimed reads what a resume finds done; it must read the
    folder check_output_dir makes (a literal '~/out'), not another one (the home's out), or a
    finished run elsewhere would let the check pass and the refusal come after the claim."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    ev = ["--method", "baseline", "--data_file", gsm8k_file(tmp_path), "--device", "cpu", "--max_new_tokens", "2"]
    assert run_cli(evaluate.main, [str(a) for a in [*ev, "--output_dir", home / "out"]]) == 0
    monkeypatch.setattr(cli, "available_memory", lambda device: 1000)
    fails(capsys, evaluate.main, [*ev, "--output_dir", "~/out"], "not even --batch_size 1 fits")
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("extra, words", [(("--n_samples", "0"), "integer >= 1, got 0"),
                                          (("--n_samples", "3", "--greedy"), "identical outputs"),
                                          (("--n_samples", str(10 ** 20)), "<= 65536 (each sample")])
def test_generate_bad_n_samples_is_one_line_before_loading(extra, words, capsys, monkeypatch):
    no_model_load(monkeypatch)
    fails(capsys, generate.main, gen_args(*extra), words)


@pytest.mark.parametrize("method", ["baseline", "tflow"])
def test_generate_n_samples_gives_k_results_per_question_and_sample_0_is_the_one_sample_run(method, tmp_path, capsys):
    """--n_samples 3: three results per question, question-major, each with its sample index (a list
    even for one question); sample 0 is what the run without the flag answers."""
    rows = tmp_path / "q.jsonl"
    rows.write_text("".join(json.dumps({"question": q}) + "\n" for q in ("How many does the red box hold?", "Q2?")))
    base = ["--method", method, "--device", "cpu", "--max_new_tokens", "6", "--temperature", "3",
            *(["--random_generator"] if method == "tflow" else [])]
    assert generate.main([*base, "--input_file", str(rows), "--output", str(tmp_path / "one.json")]) == 0
    assert generate.main([*base, "--input_file", str(rows), "--n_samples", "3", "--output", str(tmp_path / "k.json")]) == 0
    one, k = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "k.json"))
    assert [(r["question"], r["sample"]) for r in k] == [(q["question"], j) for q in one for j in range(3)]
    assert [r["answer"] for r in k[::3]] == [r["answer"] for r in one] and "sample" not in one[0]
    assert len({r["answer"] for r in k}) > 2, "every sample the same: the seeds are not tested"
    assert generate.main([*base, "--question", "Q2?", "--n_samples", "2", "--output", str(tmp_path / "q.json")]) == 0
    assert [r["sample"] for r in json.loads((tmp_path / "q.json").read_text())] == [0, 1]


def test_generate_writes_its_output_though_stdout_reader_has_gone(tmp_path):
    """`generate --output o.json | head -1`: the answers were printed before --output was written,
    so a reader gone (exit 141) after the whole run left no file. Now the file comes first."""
    rows = tmp_path / "q.jsonl"
    rows.write_text("".join(json.dumps({"question": f"What is {i}+1?"}) + "\n" for i in range(3)))
    out = tmp_path / "o.json"
    proc = subprocess.Popen([sys.executable, "-m", "minitflow.generate", "--method", "baseline", "--device", "cpu",
                             "--max_new_tokens", "2", "--greedy", "--input_file", str(rows), "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    proc.stdout.close()  # the reader is gone before the first answer
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert [r["question"] for r in json.loads(out.read_text())] == [f"What is {i}+1?" for i in range(3)]


def test_a_run_resolves_its_model_once(tmp_path, capsys, monkeypatch):
    """generate --output resolved --model four times (its output check, sampling_from, the question
    check, plan_load) and evaluate three: a hub id online is a round trip to the hub each time, and
    the hub's main could move between two of them. Each run resolves it once and passes the folder
    on; LLM.load only checks that folder again (a local path: no hub). Here a hub id whose cached
    snapshot is the demo model, resolved for real."""
    import huggingface_hub

    from minitflow.model import weights
    real, calls, hub = weights.resolve_model_dir, [], []
    monkeypatch.setattr(weights, "resolve_model_dir", lambda name, *a, **k: calls.append(name) or real(name, *a, **k))

    def cached(name, allow_patterns=None, local_files_only=False):
        hub.append(name)
        return str(DEMO)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached)
    model = ["--model", "org/model", "--checkpoint", DEMO / "tflow.pt", "--device", "cpu", "--max_new_tokens", "2"]
    assert run_cli(generate.main, [str(a) for a in [*model, "--question", "How many does the red box hold?",
                                                    "--output", tmp_path / "o.json"]]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["method"] == "tflow"
    assert calls == ["org/model", DEMO] and hub == ["org/model"]
    calls.clear()
    hub.clear()
    assert run_cli(evaluate.main, [str(a) for a in [*model, "--data_file", gsm8k_file(tmp_path),
                                                    "--output_dir", tmp_path / "r"]]) == 0
    assert (tmp_path / "r" / "tflow_results.json").is_file()
    assert calls == ["org/model", DEMO] and hub == ["org/model"]
