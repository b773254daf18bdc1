"""tflow per question against the official release's own code, same random weights (CPU or CUDA).

Needs a checkout of the official release (github.com/BWR-hhh/TFlow; its `src/` package and its
requirements: einops, accelerate) named by MINITFLOW_OFFICIAL_TFLOW, and the Qwen3 tokenizer
(see benchlib.tokenizer_dir); skips otherwise. Nothing of the official code is in this
repository. Shape: Qwen3-0.6B's layers (hidden 1024, 16/8 heads, head_dim 128, intermediate
3072) cut to 8 layers, Qwen3's vocabulary, float32 on CPU (bf16 on CUDA), random weights
written as an HF directory; a random generator (d_model 256) saved in the official format.
Greedy, 64 new tokens, batch 1 (the official `solve`), both sides answer alike.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from benchlib import Setup, pedantic_vs, record, tokenizer_dir

NEW_TOKENS = 64
QUESTIONS = ["Natalia sold clips to 48 of her friends in April, and then half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?",
             "A baker makes 12 trays of 24 cookies and sells 3/4 of them. How many cookies are left?"]


@pytest.fixture(scope="module")
def both(setup: Setup, tmp_path_factory):
    official = os.environ.get("MINITFLOW_OFFICIAL_TFLOW")
    tok = tokenizer_dir()
    if not official or not (Path(official) / "src" / "methods" / "tflow.py").is_file() or tok is None:
        pytest.skip("set MINITFLOW_OFFICIAL_TFLOW to a checkout of the official release (and have a tokenizer)")
    from transformers import Qwen3Config as HFConfig, Qwen3ForCausalLM
    from minitflow import LLM
    from minitflow.tflow.checkpoint import arch_for, load_checkpoint, random_generator, save_checkpoint
    d = tmp_path_factory.mktemp("official-shape")
    torch.manual_seed(0)
    cfg = HFConfig(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=8,
                   num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                   max_position_embeddings=40960, rms_norm_eps=1e-6, eos_token_id=151645, rope_theta=1e6)
    Qwen3ForCausalLM(cfg).float().save_pretrained(d, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).write_bytes((tok / f).read_bytes())
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    dtype = "bfloat16" if setup.device.type == "cuda" else "float32"
    llm = LLM.load(d, dtype=dtype, device=setup.device, num_slots=1)
    arch = arch_for(llm.cfg, dict(d_model=256, head_dim=64, output_dim=64, token_dim=64))
    ckpt = d / "tflow.pt"
    save_checkpoint(random_generator(llm.cfg, seed=0, arch=arch), ckpt, extra={"pg_arch": arch.to_dict()})
    gen = load_checkpoint(ckpt, llm.cfg, llm.dtype, llm.device)

    sys.path.insert(0, official)
    import src.methods.tflow as official_tflow
    from src.configs import get_config
    from src.methods import build_method
    official_tflow._PG_ARCH.update({k: v for k, v in arch.to_dict().items() if k in official_tflow._PG_ARCH})
    config = get_config("tflow")
    config["model"].update(name=str(d), dtype=dtype, do_sample=False, max_new_tokens=NEW_TOKENS, device_map=None)
    config["model"].pop("max_new_tokens_by_dataset", None)
    config["data"]["dataset"] = "gsm8k"
    config["evaluation"]["generate_bs"] = 1
    config.setdefault("method_config", {}).setdefault("training", {})["eval_checkpoint"] = str(ckpt)
    config["_mode"] = "inference"
    method = build_method(config)
    method.setup()
    return llm, gen, method


def test_tflow_vs_official_release(benchmark, setup: Setup, both) -> None:
    from minitflow import SamplingParams
    from minitflow.tflow.methods import run_method
    benchmark.group = "official-release"
    llm, gen, method = both
    out = {}

    def ours():
        out["ours"] = [run_method("tflow", llm, [q], sampling=SamplingParams(max_new_tokens=NEW_TOKENS),
                                  generator=gen, batch_size=1)[0].answer for q in QUESTIONS]

    def theirs():
        out["theirs"] = [method.solve(q)["answer"] for q in QUESTIONS]

    s, official_s = pedantic_vs(benchmark, ours, theirs, setup.device, 2, 0)
    same = sum(a.strip() == b.strip() for a, b in zip(out["ours"], out["theirs"]))
    record(benchmark, setup, questions=len(QUESTIONS), new_tokens=NEW_TOKENS, s_per_question=s / len(QUESTIONS),
           speedup_vs_official=official_s / s, same_answers=same)
