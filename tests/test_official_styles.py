"""The official release's own outputs for every dataset prompt style (baseline, textmas,
tflow on golden-small; tests/data/golden-official-styles/make_golden.py made them), reproduced
token for token, with the official token counts, and the official loaders' questions."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GOLDEN, SHARED, need_shared
from helpers import golden_with_eos
from minitflow import LLM, SamplingParams
from minitflow.eval.data import load_samples
from minitflow.tflow import prompts
from minitflow.tflow.checkpoint import load_checkpoint
from minitflow.tflow.methods import run_method

FIXTURE = json.loads((Path(__file__).parent / "data" / "golden-official-styles" / "golden.json").read_text())
OFFICIAL_SENDER_MAX = FIXTURE["official"]["sender_max_new_tokens"]
FILES = {"gsm8k": "gsm8k/test.jsonl", "minerva_math": "minerva_math/test.jsonl", "mmlu": "mmlu_redux/test.jsonl",
         "humanevalplus": "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz", "mbppplus": "mbpp_plus/MbppPlus-v0.2.0.jsonl"}
ADDED = range(151643, 151669)  # the tokenizer's added tokens (all special: the official decode drops them)
USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")


def _groups() -> dict[tuple, list[dict]]:
    """Rows by (model variant, style, method, textmas sender budget); rows at the official
    budget run via the CLI."""
    groups: dict[tuple, list[dict]] = {}
    for row in FIXTURE["rows"]:
        if row.get("sender_max_new_tokens") != OFFICIAL_SENDER_MAX:
            key = (row.get("model"), row["style"], row["method"], row.get("sender_max_new_tokens"))
            groups.setdefault(key, []).append(row)
    return groups


def _check_textmas_agents(per_agent: dict, row: dict) -> None:
    """Each agent's (prompt, completion) counts are the official ones: each sender's text reached
    the executor whole, as the official decode left it (its prompt length says so)."""
    assert list(per_agent) == list(row["token_usage"]["per_agent"])
    assert [(a["prompt_tokens"], a["completion_tokens"]) for a in per_agent.values()] == \
        [(u["prompt_tokens"], u["completion_tokens"]) for u in row["token_usage"]["per_agent"].values()]
    assert [a["completion_tokens"] for a in per_agent.values()] == [len(c) for c in row["calls"]]


@pytest.fixture(scope="module")
def golden_llm():
    need_shared(GOLDEN)
    llm = LLM.load(GOLDEN / "model", dtype="float32", device="cpu")
    return llm, load_checkpoint(GOLDEN / "tflow.pt", llm.cfg)


@pytest.fixture(scope="module")
def eos_llm(tmp_path_factory):
    """golden-small with the fixture's `eos_variant` in generation_config.json (a second EOS id,
    as Qwen3-4B lists <|endoftext|>): the rows marked model "eos" ran on it."""
    need_shared(GOLDEN)
    assert set(FIXTURE["eos_variant"]) == {"eos_token_id"}
    return golden_with_eos(tmp_path_factory.mktemp("golden-eos"), GOLDEN / "model",
                           FIXTURE["eos_variant"]["eos_token_id"]), None


@pytest.mark.parametrize("key", list(_groups()), ids=lambda k: "-".join(str(x) for x in k if x))
def test_official_outputs_for_every_style(key, request):
    """Each group's questions run together (batch 8): every answer is the official solve's, an
    agent stopped by EOS included (its EOS counted, dropped from its text)."""
    llm, generator = request.getfixturevalue("eos_llm" if key[0] == "eos" else "golden_llm")
    _, style, method, sender_max = key
    rows = _groups()[key]
    kwargs = {"generator": generator} if method == "tflow" else {}
    if sender_max is not None:
        kwargs["sender_max_new_tokens"] = sender_max
    results = run_method(method, llm, [r["question"] for r in rows], style=style,
                         sampling=SamplingParams(max_new_tokens=FIXTURE["max_new_tokens"]), **kwargs)
    for row, res in zip(rows, results):
        assert res.token_ids == row["calls"][-1]
        assert res.answer == row["answer"]
        assert res.official_usage == {k: row["token_usage"][k] for k in USAGE}
        if method != "textmas":  # (textmas' flag is any agent's)
            assert (res.finish_reason == "length") == row["truncated"]
        if method == "textmas":
            _check_textmas_agents({k: a.as_dict() for k, a in res.agents.items()}, row)


def test_cli_textmas_at_the_official_sender_budget(tmp_path):
    """The CLI's textmas with its default sender budget (the official 1,024 tokens: 2,048 sender
    tokens decoded and re-tokenised into the executor's prompt) gives the official answer and counts."""
    need_shared(GOLDEN)
    assert prompts.TEXTMAS_SENDER_MAX_NEW_TOKENS == OFFICIAL_SENDER_MAX
    rows = [r for r in FIXTURE["rows"] if r.get("sender_max_new_tokens") == OFFICIAL_SENDER_MAX]
    assert rows
    for i, row in enumerate(rows):
        out = tmp_path / f"{i}.json"
        proc = subprocess.run([sys.executable, "-m", "minitflow.generate", "--method", "textmas", "--model",
                               str(GOLDEN / "model"), "--dataset", row["style"], "--greedy", "--dtype", "float32",
                               "--device", "cpu", "--max_new_tokens", str(FIXTURE["max_new_tokens"]),
                               "--question", row["question"], "--output", str(out)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(out.read_text())
        assert result["answer"] == row["answer"]
        usage = result["metadata"]["token_usage"]
        assert {k: usage[k] for k in USAGE} == {k: row["token_usage"][k] for k in USAGE}
        _check_textmas_agents(usage["per_agent"], row)


def test_fixture_has_added_tokens_and_early_eos():
    """Rows where an agent emits an added token, which the official decode drops from the text
    it hands on (textmas: the executor's context) or answers (baseline), are in the fixture, on
    golden-small and on the EOS variant, where that token ends the agent early."""
    hits = {(r.get("model"), r["style"], r["method"], i == len(r["calls"]) - 1) for r in FIXTURE["rows"]
            for i, c in enumerate(r["calls"]) if any(t in ADDED for t in c)}
    assert {(m, "gsm8k", "textmas", False) for m in (None, "eos")} | {(m, "mmlu", "baseline", True)
                                                                       for m in (None, "eos")} <= hits
    eos = FIXTURE["eos_variant"]["eos_token_id"]
    stopped = {(r["style"], r["method"]) for r in FIXTURE["rows"] if r.get("model") == "eos"
               for c in r["calls"] if c[-1] in eos and len(c) < FIXTURE["max_new_tokens"]}
    assert stopped == {("gsm8k", "textmas"), ("mmlu", "baseline")}


@pytest.mark.parametrize("style", list(FILES))
def test_questions_equal_the_official_loaders(style):
    """Every question the official loader builds from the shared copy (count and digest), and the
    fixture's questions at their places in that list."""
    need_shared(SHARED / "data")
    ours = [s.question for s in load_samples({"mmlu": "mmlu_redux", "mbppplus": "mbpp_plus"}.get(style, style),
                                             SHARED / "data" / FILES[style])]
    digest = hashlib.sha256(json.dumps(ours, ensure_ascii=False).encode()).hexdigest()
    assert {"count": len(ours), "sha256": digest} == FIXTURE["official"]["questions"][style]
    rows = [r for r in FIXTURE["rows"] if r["style"] == style]
    assert rows and all(ours[r["index"]] == r["question"] for r in rows)
