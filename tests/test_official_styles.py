"""The official release's own outputs for every dataset prompt style (baseline, textmas,
tflow on golden-small; tests/data/golden-official-styles/make_golden.py made them), reproduced
token for token, with the official token counts, and the official loaders' questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import GOLDEN, SHARED, need_shared
from minitflow import LLM, SamplingParams
from minitflow.eval.data import load_samples
from minitflow.tflow.checkpoint import load_checkpoint
from minitflow.tflow.methods import run_method

FIXTURE = json.loads((Path(__file__).parent / "data" / "golden-official-styles" / "golden.json").read_text())
FILES = {"gsm8k": "gsm8k/test.jsonl", "minerva_math": "minerva_math/test.jsonl", "mmlu": "mmlu_redux/test.jsonl",
         "humanevalplus": "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz"}


def _groups() -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in FIXTURE["rows"]:
        groups.setdefault((row["style"], row["method"], row.get("sender_max_new_tokens")), []).append(row)
    return groups


@pytest.fixture(scope="module")
def golden_llm():
    need_shared(GOLDEN)
    llm = LLM.load(GOLDEN / "model", dtype="float32", device="cpu")
    return llm, load_checkpoint(GOLDEN / "tflow.pt", llm.cfg)


@pytest.mark.parametrize("key", list(_groups()), ids=lambda k: "-".join(str(x) for x in k if x))
def test_official_outputs_for_every_style(key, golden_llm):
    """Each group's questions run together (batch 8): every answer is the official solve's."""
    llm, generator = golden_llm
    style, method, sender_max = key
    rows = _groups()[key]
    kwargs = {"generator": generator} if method == "tflow" else {}
    if sender_max is not None:
        kwargs["sender_max_new_tokens"] = sender_max
    results = run_method(method, llm, [r["question"] for r in rows], style=style,
                         sampling=SamplingParams(max_new_tokens=FIXTURE["max_new_tokens"]), **kwargs)
    for row, res in zip(rows, results):
        assert res.token_ids == row["calls"][-1]
        assert res.answer == row["answer"]
        assert res.official_usage == {k: row["token_usage"][k] for k in ("prompt_tokens", "completion_tokens",
                                                                        "total_tokens")}
        if method == "textmas":  # each sender's text reached the executor whole: its prompt length says so
            assert [(a.prompt_tokens, a.completion_tokens) for a in res.agents.values()] == \
                [(u["prompt_tokens"], u["completion_tokens"]) for u in row["token_usage"]["per_agent"].values()]
            assert [a.completion_tokens for a in res.agents.values()] == [len(c) for c in row["calls"]]


@pytest.mark.parametrize("style", list(FILES))
def test_questions_equal_the_official_loaders(style):
    need_shared(SHARED / "data")
    ours = load_samples(style if style != "mmlu" else "mmlu_redux", SHARED / "data" / FILES[style], max_samples=2)
    official = [r["question"] for r in FIXTURE["rows"] if r["style"] == style and r["method"] == "baseline"]
    assert [s.question for s in ours] == official
