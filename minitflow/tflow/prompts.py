"""The official TFlow prompts and generation settings, per method and dataset style.

They ship as `minitflow/data/official_prompts.json`, taken unchanged from the official
release (github.com/BWR-hhh/TFlow, src/configs.py, Apache-2.0). The released generator was
trained with the sender prompts: change them and the condition distribution shifts.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from minitflow.errors import UserError

METHODS = ("baseline", "textmas", "tflow", "latentmas")  # here, torch-free: the command lines' --method choices
STYLES = ("gsm8k", "minerva_math", "mmlu", "humanevalplus", "mbppplus")
ALIASES = {"humaneval": "humanevalplus", "humaneval_plus": "humanevalplus", "mbpp": "mbppplus",
           "mbpp_plus": "mbppplus", "math": "minerva_math", "mmlu_redux": "mmlu", "mmlu-redux": "mmlu"}
TEXTMAS_ASSISTANT_TURN = "I've reviewed the prior discussion. Let me continue."
TEXTMAS_SENDER_MAX_NEW_TOKENS = 1024


def with_context(context: str | None, question: str) -> str:
    """What a sender reads when it also has a private context (the receiver reads only the question)."""
    return f"{context.strip()} {question}" if context and context.strip() else question


def sender_text(row: dict, question: str, where: str) -> str:
    """What the senders read for a row of questions, in generate's --input_file as in train's rows:
    its "sender_question" when it has one (its "context" then unread: the demo's rows carry both), else
    its private "context" before `question` (with_context)."""
    context, sq = row.get("context"), row.get("sender_question")
    if context is not None and not isinstance(context, str):
        raise UserError(f"{where}: \"context\" must be a string")
    if sq is None:
        return with_context(context, question)
    if not isinstance(sq, str):
        raise UserError(f"{where}: \"sender_question\" must be a string")
    if not sq.strip():  # nothing for the senders to read
        raise UserError(f"{where}: the sender_question is empty")
    return sq


@lru_cache(maxsize=1)
def official() -> dict:
    return json.loads(resources.files("minitflow").joinpath("data/official_prompts.json").read_text())


def resolve_style(name: str) -> str:
    if not isinstance(name, str):  # run_method(style=5) was an AttributeError ('strip')
        raise UserError(f"dataset style must be a name such as 'gsm8k', got {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in STYLES:
        raise UserError(f"unknown dataset style {name!r}: choose one of {', '.join(STYLES)} "
                        f"(or {', '.join(sorted(ALIASES))})")
    return key


def baseline_system(style: str) -> str:
    return official()["methods"]["baseline"]["system_prompt_by_dataset"][resolve_style(style)]


def textmas_roles(style: str) -> list[tuple[str, str]]:
    """(role name, system prompt) for Solver, Critic, Summarizer (the executor last)."""
    roles = official()["methods"]["textmas"]["roles_by_dataset"][resolve_style(style)]
    return [(r["name"], r["system_prompt"]) for r in roles]


def tflow_agents(style: str) -> list[str]:
    """System prompts of sender A, sender B and the receiver C."""
    return list(official()["methods"]["tflow"]["agent_prompts_by_dataset"][resolve_style(style)])


def default_max_new_tokens(style: str) -> int:
    return official()["generation"]["max_new_tokens_by_dataset"][resolve_style(style)]
