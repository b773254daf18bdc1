"""The shipped demo (minitflow/data/demo): TFlow carries private facts the receiver never sees.

Checks the reported numbers on a fixed slice of the held-out questions (greedy, CPU, seconds),
that the directory is a plain HF Qwen3 checkpoint, and that `generate` answers the README's
example with no --model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minitflow import demo, demo_dir
from minitflow.engine.llm import LLM
from minitflow.engine.sampler import SamplingParams
from minitflow.tflow.checkpoint import load_checkpoint
from minitflow.tflow.methods import run_method
from minitflow.tflow.training import answers_match

ROOT = Path(__file__).resolve().parents[1]
DEMO = demo_dir()
N = 60  # the first N held-out questions
MARGIN = 0.1

pytestmark = pytest.mark.skipif(not (DEMO / "tflow.pt").is_file(), reason="the demo artifacts are not built")


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM.load(DEMO, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return demo.read_jsonl(DEMO / "heldout.jsonl")[:N]


@pytest.fixture(scope="module")
def reported() -> dict[str, float]:
    results = json.loads((DEMO / "results.json").read_text())
    return {r["method"]: r["accuracy"] for r in results["table"]}


def _accuracy(results, rows) -> float:
    return sum(answers_match(r.answer, e["answer"]) for r, e in zip(results, rows)) / len(rows)


def _tflow(llm, rows, checkpoint: str) -> float:
    gen = load_checkpoint(DEMO / checkpoint, llm.cfg)
    res = run_method("tflow", llm, [r["question"] for r in rows], style=demo.STYLE, generator=gen,
                     sender_questions=[r["sender_question"] for r in rows], batch_size=N,
                     sampling=SamplingParams(max_new_tokens=8))
    return _accuracy(res, rows)


def test_tflow_answers_at_the_reported_rate(llm, rows, reported):
    assert _tflow(llm, rows, "tflow.pt") >= reported["tflow"] - MARGIN


def test_receiver_alone_and_zero_condition_are_far_lower(llm, rows, reported):
    alone = _accuracy(demo.receiver_alone(llm, [r["question"] for r in rows], demo.STYLE,
                                          SamplingParams(max_new_tokens=8), N), rows)
    zero = _tflow(llm, rows, "tflow_zero.pt")
    assert alone <= 0.35 and zero <= 0.35
    assert reported["tflow"] - reported["receiver alone"] >= 0.2
    assert reported["tflow"] - reported["tflow, zero condition"] >= 0.2


def test_held_out_rows_are_the_documented_ones():
    held = demo.read_jsonl(DEMO / "heldout.jsonl")
    assert len(held) >= 200
    assert held == demo.make_examples(len(held), 0 + 1234)  # build_demo's seed 0
    for r in held:
        assert r["sender_question"] == f"{r['context']} {r['question']}"


def test_a_build_writes_the_shipped_data_tokenizer_and_config(tmp_path):
    """What a rebuild makes before any training is the shipped files byte for byte (the rows, the
    tokenizer learnt from the training rows, the configs): a change to the examples, the prompts or
    the tokenizer build shows here in a second, not in a 20-minute build. The weights no longer
    rebuild bit for bit (docs/demo.md, "Reproduce")."""
    held, rows = demo.demo_rows(demo.DemoConfig(out=str(tmp_path)))
    demo.write_jsonl(held, tmp_path / "heldout.jsonl")
    tok = demo.build_tokenizer(demo.corpus(rows))
    demo.write_tokenizer(tok, tmp_path)
    demo.write_model_config(tmp_path, tok)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.json", "generation_config.json", "heldout.jsonl", "tokenizer.json", "tokenizer_config.json"]
    for name in names:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name


def test_artifacts_are_small_and_a_plain_hf_qwen3(llm):
    size = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert size <= 20 * 2 ** 20
    cfg = json.loads((DEMO / "config.json").read_text())
    assert cfg["model_type"] == "qwen3" and cfg["architectures"] == ["Qwen3ForCausalLM"]
    assert llm.tokenizer.eos_token_id == llm.tokenizer.token_to_id("<|im_end|>")
    assert llm.tokenizer.eos_token_id in llm.eos_token_ids
    text = demo.render_chat_example()
    assert llm.tokenizer.decode(llm.encode(text), skip_special_tokens=False) == text
    transformers = pytest.importorskip("transformers")
    hf = transformers.Qwen3ForCausalLM.from_pretrained(DEMO, dtype=torch.float32).eval()
    ids = llm.encode(text)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits
        ours = llm.model(torch.tensor([ids]), torch.arange(len(ids))[None], None, len(ids))
    assert (ours - ref).abs().max() <= 1e-4


def test_generate_answers_the_example_with_no_model_flag():
    if not (ROOT / "minitflow" / "generate.py").is_file():
        pytest.skip("minitflow.generate is not there yet")
    ex = demo.EXAMPLE
    r = subprocess.run([sys.executable, "-m", "minitflow.generate", "--greedy", "--context", ex["context"],
                        "--question", ex["question"]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == ex["answer"]


def test_tflow_stage_times_per_question(llm, rows):
    """Each question's stages are timed on their own (read from the device timers once the
    question is done, not by waiting for the device at each stage): senders' prefill, generator,
    receiver's prefill and decode, all positive and within the question's total."""
    gen = load_checkpoint(DEMO / "tflow.pt", llm.cfg)
    res = run_method("tflow", llm, [r["question"] for r in rows[:6]], style=demo.STYLE, generator=gen,
                     sender_questions=[r["sender_question"] for r in rows[:6]], batch_size=3,
                     sampling=SamplingParams(max_new_tokens=8))
    for r in res:
        t = r.timings
        stages = [t["sender_prefill_s"], t["generator_s"], t["receiver_prefill_s"], t["decode_s"]]
        assert all(s > 0 for s in stages[:3]) and stages[3] >= 0, t
        assert all(s < t["total_s"] for s in stages) and t["generator_s"] + t["receiver_prefill_s"] < t["total_s"], t
        assert 0 <= t["queue_s"] < t["total_s"], t  # the receiver's wait for a slot


def test_pretrain_backbone_leaves_the_callers_rng_alone(tmp_path):
    """pretrain_backbone seeded torch's global RNG (torch.manual_seed): a caller's later draws changed.
    Its weights must depend on cfg.seed alone, and the caller's RNG must go on as if it had not run."""
    from minitflow.engine.llm import LLM
    rows = demo.make_examples(8, 5)
    tok = demo.build_tokenizer(demo.corpus(rows), vocab_size=400)
    shape = demo.BackboneShape(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=1, head_dim=8, max_position_embeddings=512)
    cfg = demo.PretrainConfig(steps=2, short_steps=1, batch_size=2, warmup=1, seed=3)
    weights = []
    for caller_seed in (1, 2):
        out = tmp_path / str(caller_seed)
        demo.write_tokenizer(tok, out)
        demo.write_model_config(out, tok, shape)
        torch.manual_seed(caller_seed)
        expected = torch.rand(4)
        torch.manual_seed(caller_seed)
        demo.pretrain_backbone(out, rows, cfg, progress=False)
        assert torch.equal(torch.rand(4), expected)
        weights.append(LLM.load(out, dtype="float32", device="cpu").model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_toy_build_trains_both_generators_evaluates_and_writes_its_table(tmp_path):
    """The whole pipeline that `python -m minitflow.demo` runs (minutes at its sizes), at a toy size in
    seconds: each method's row, results.json holding that table, the logged markdown table, the
    checkpoints generate loads, and nothing left of the hidden build folder or the work folder."""
    out, logged = tmp_path / "built", []
    cfg = demo.DemoConfig(out=str(out), heldout=2, train_rows=4, steps=1, batch_size=2,
                          pg_arch=(("d_model", 32), ("head_dim", 8)),
                          pretrain=demo.PretrainConfig(steps=1, short_steps=1, batch_size=2))
    table = demo.build_demo(cfg, log=logged.append)
    assert [r.method for r in table] == ["baseline", "receiver alone", "tflow", "tflow, zero condition", "textmas",
                                         "one agent with the facts"]
    assert all(0 <= r.accuracy <= 1 and r.processed_tokens >= r.official_tokens > 0 for r in table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "heldout.jsonl",
                                                     "model.safetensors", "results.json", "tflow.pt", "tflow_zero.pt",
                                                     "tokenizer.json", "tokenizer_config.json"]
    results = json.loads((out / "results.json").read_text())
    assert results["heldout"] == 2 and results["table"] == [vars(r) for r in table]
    assert results["config"]["pg_arch"] == {"d_model": 32, "head_dim": 8}
    assert demo.markdown_table(table, 2) in logged
    assert demo.markdown_table(table, 2).splitlines()[2].startswith("| baseline | ")
    llm = LLM.load(out, dtype="float32", device="cpu")
    for name in ("tflow.pt", "tflow_zero.pt"):
        assert load_checkpoint(out / name, llm.cfg).arch.d_model == 32


def test_a_toy_build_with_work_keeps_the_training_rows_and_states_there(tmp_path):
    """--work: the training rows, both checkpoints and their optimiser states stay in that folder
    (without it they go with the build's own work folder)."""
    work = tmp_path / "work"
    cfg = demo.DemoConfig(out=str(tmp_path / "built"), heldout=2, train_rows=4, steps=1, batch_size=2, work=str(work),
                          pg_arch=(("d_model", 32), ("head_dim", 8)),
                          pretrain=demo.PretrainConfig(steps=1, short_steps=1, batch_size=2))
    demo.build_demo(cfg, log=[].append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built", "work"]
    assert sorted(p.name for p in work.iterdir()) == ["tflow.pt", "tflow.pt.state.pt", "tflow_zero.pt",
                                                      "tflow_zero.pt.state.pt", "train.jsonl"]
    assert demo.read_jsonl(work / "train.jsonl") == demo.demo_rows(cfg)[1]
    assert (work / "tflow.pt").read_bytes() == (tmp_path / "built" / "tflow.pt").read_bytes()


def test_evaluate_without_checkpoints_scores_the_other_methods(llm, rows):
    """demo.evaluate with no generator checkpoints: the table of the methods that need none."""
    table = demo.evaluate(DEMO, rows[:2], llm=llm, max_new_tokens=8)
    assert [r.method for r in table] == ["baseline", "receiver alone", "textmas", "one agent with the facts"]
    assert all(0 <= r.accuracy <= 1 and r.processed_tokens >= r.official_tokens > 0 for r in table)
