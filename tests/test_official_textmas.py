"""The official release's textmas agent by agent (tests/data/golden-official-textmas/make_golden.py
made the fixture from its own code): each sender's new token ids and the text it hands on, the
receiver's prompt ids built from those texts, its output and the official token counts, on
golden-small with ordinary tokens as extra EOS ids so that agents stop early, some at their first
token (the official decode keeps an ordinary EOS token in the text)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import GOLDEN, need_shared
from helpers import golden_with_eos
from minitflow import SamplingParams
from minitflow.tflow import prompts
from minitflow.tflow.methods import chat, run_method, textmas_context

FIXTURE = json.loads((Path(__file__).parent / "data" / "golden-official-textmas" / "golden.json").read_text())
USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")


def _digest(ids: list[int]) -> tuple[int, str]:
    return len(ids), hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def _official(call: dict) -> tuple[int, str]:
    return call["prompt_len"], call["prompt_sha256"]


@pytest.fixture(scope="module")
def eos_llm(tmp_path_factory):
    """golden-small with the fixture's EOS ids in generation_config.json."""
    need_shared(GOLDEN)
    return golden_with_eos(tmp_path_factory.mktemp("golden-eos"), GOLDEN / "model", FIXTURE["eos_token_id"])


def test_fixture_has_early_and_first_token_stops():
    """What the fixture is for: senders and receivers stopped by an ordinary EOS token, at the first
    token too, whose text the official decode keeps."""
    eos = set(FIXTURE["eos_token_id"])
    calls = [(c, t) for r in FIXTURE["rows"] for c, t in zip(r["calls"], r["texts"])]
    assert any(c["new"] == [c["new"][0]] and c["new"][0] in eos and t for c, t in calls[0::3] + calls[1::3])
    assert any(c["new"][-1] in eos and 1 < len(c["new"]) < FIXTURE["max_new_tokens"] for c, _ in calls[2::3])


def test_senders_and_receiver_prompt_token_for_token(eos_llm):
    """Each sender's prompt and new ids, its text as handed on, and the receiver's prompt made from
    the official texts are the official ones."""
    rows = FIXTURE["rows"]
    sp = SamplingParams(max_new_tokens=FIXTURE["sender_max_new_tokens"], temperature=0)
    for row in rows:
        (_, a_sys), (_, b_sys), (_, c_sys) = prompts.textmas_roles(row["style"])
        senders = [chat(eos_llm, system, row["question"]) for system in (a_sys, b_sys)]
        assert [_digest(p) for p in senders] == [_official(c) for c in row["calls"][:2]]
        outs = eos_llm.generate(senders, sp)
        assert [o.token_ids for o in outs] == [c["new"] for c in row["calls"][:2]]
        assert [o.text for o in outs] == row["texts"][:2]
        receiver = chat(eos_llm, c_sys, row["question"], textmas_context(row["style"], row["texts"][:2]))
        assert _digest(receiver) == _official(row["calls"][2])


@pytest.mark.parametrize("style", list(dict.fromkeys(r["style"] for r in FIXTURE["rows"])))
def test_textmas_equals_the_official_agent_by_agent(eos_llm, style):
    """run_method's textmas: the receiver's ids and answer, and each agent's official counts."""
    rows = [r for r in FIXTURE["rows"] if r["style"] == style]
    results = run_method("textmas", eos_llm, [r["question"] for r in rows], style=style,
                         sampling=SamplingParams(max_new_tokens=FIXTURE["max_new_tokens"], temperature=0),
                         sender_max_new_tokens=FIXTURE["sender_max_new_tokens"])
    for row, res in zip(rows, results):
        assert res.token_ids == row["calls"][2]["new"]
        assert res.answer == row["answer"] == row["texts"][2]
        per_agent = {k: a.as_dict() for k, a in res.agents.items()}
        assert list(per_agent) == list(row["token_usage"]["per_agent"])
        assert [(a["prompt_tokens"], a["completion_tokens"]) for a in per_agent.values()] == \
            [(c["prompt_len"], len(c["new"])) for c in row["calls"]] == \
            [(u["prompt_tokens"], u["completion_tokens"]) for u in row["token_usage"]["per_agent"].values()]
        assert res.official_usage == {k: row["token_usage"][k] for k in USAGE}
