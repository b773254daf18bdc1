"""Chat format and tokenizer ids against transformers with Qwen3's own chat template
(tests/data/qwen3_chat_template.jinja: Qwen3's template, its function-list and tool_calls
branches left out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import GOLDEN, need_shared
from minitflow.errors import UserError
from minitflow.model.tokenizer import Tokenizer, render_chat
from minitflow.tflow import prompts

TEMPLATE = (Path(__file__).parent / "data" / "qwen3_chat_template.jinja").read_text()
SYSTEM = prompts.tflow_agents("gsm8k")[2]
CHATS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Natalia sold 48 clips. How many?"}],
    [{"role": "user", "content": "Ünïcödé, emoji 😆, 中文 and  double  spaces\n\nnew lines"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "[Solver | Round 0]\nx\n\n---\n\n[Critic | Round 0]\ny"},
     {"role": "assistant", "content": prompts.TEXTMAS_ASSISTANT_TURN}, {"role": "user", "content": "Q?"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>\nplan\n</think>\n\nold answer"},
     {"role": "user", "content": "b"}, {"role": "assistant", "content": "<think>\nmore\n</think>\n\nnew answer"}],
]


@pytest.fixture(scope="module")
def toks():
    need_shared(GOLDEN)
    from transformers import AutoTokenizer
    return Tokenizer(GOLDEN / "model"), AutoTokenizer.from_pretrained(GOLDEN / "model")


@pytest.mark.parametrize("chat", range(len(CHATS)))
@pytest.mark.parametrize("thinking", [None, False])
def test_chat_ids_equal_transformers(toks, chat, thinking):
    ours, hf = toks
    messages = CHATS[chat]
    gen = messages[-1]["role"] != "assistant"
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    ref = hf.apply_chat_template(messages, chat_template=TEMPLATE, tokenize=False, add_generation_prompt=gen, **kwargs)
    text = render_chat(messages, add_generation_prompt=gen, enable_thinking=thinking)
    assert text == ref
    assert ours.encode(text) == hf(ref, add_special_tokens=False)["input_ids"]
    if thinking is False and gen:
        assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_decode_matches_transformers(toks):
    ours, hf = toks
    ids = ours.encode("Hello 世界 <|im_end|> x^2 + 😆") + [151645, 151667]
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    assert ours.eos_token_id == 151645


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ans", "reasoning_content": "\nplan\n"}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>x</think>ans", "reasoning_content": "plan"},
     {"role": "user", "content": "q2"}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>x</think>\nans", "reasoning_content": ""},
     {"role": "assistant", "content": "b"}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>x</think>ans", "reasoning_content": None}],
])
def test_reasoning_content_as_in_template(toks, messages):
    """An assistant turn's `reasoning_content` replaces the think block split from its content."""
    ours, hf = toks
    ref = hf.apply_chat_template(messages, chat_template=TEMPLATE, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert ours.encode(render_chat(messages)) == ref


@pytest.mark.parametrize("messages", [
    # an assistant turn after the last query keeps its think block when it has reasoning, last or not
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\na1"},
     {"role": "assistant", "content": "b"}],
    # ... an empty one (newlines only) is no reasoning: the turn is its content alone
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\n\n</think>\n\na1"},
     {"role": "assistant", "content": "b"}],
    # leading newlines of the content after a kept think block go
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\n\nans", "reasoning_content": "plan"}],
    # a tool response is not a query: the turns after the user's question keep their think blocks
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>r</think>a"},
     {"role": "user", "content": "<tool_response>\nok\n</tool_response>"},
     {"role": "assistant", "content": "<think>s</think>b"}],
])
def test_think_blocks_kept_or_dropped_as_in_template(toks, messages):
    """Which assistant turns keep a think block, and how it is trimmed, as Qwen3's template does
    it (the chats above all ended in one assistant turn, or had their think blocks dropped)."""
    ours, hf = toks
    ref = hf.apply_chat_template(messages, chat_template=TEMPLATE, tokenize=False, add_generation_prompt=True)
    assert render_chat(messages) == ref


@pytest.mark.parametrize("messages, match", [
    ([], "the chat has no messages"),
    (["hello"], "chat message 0 is a str, not a dict"),
    ([{"role": "user"}], r"chat message 0 \(user\) has content None: it must be a string"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": None}], r"chat message 1 \(assistant\) has content None"),
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], r"has content \[\{'type'"),
    ([{"role": "function", "content": "r"}], "role 'function' is not system/user/assistant/tool"),
])
def test_malformed_chat_messages_are_user_errors(messages, match):
    with pytest.raises(UserError, match=match):
        render_chat(messages)


@pytest.mark.parametrize("stop", ["\n\n", ("",), ("ok", None)])
def test_stop_must_be_non_empty_strings(stop):
    """stop="\\n\\n" would end a row at the first single newline, and "" at its first token."""
    from minitflow.engine.sampler import SamplingParams
    with pytest.raises(UserError, match="stop must be a tuple of non-empty strings"):
        SamplingParams(stop=stop)
    assert SamplingParams(stop=("\n\n", "###")).stop == ("\n\n", "###")


def test_a_lone_surrogate_is_a_user_error_not_a_traceback(tmp_path, capsys):
    """json.loads('"\\ud800"') gives a str tokenizers cannot take (a bare TypeError): the CLIs
    say what is wrong with the text, exit 2."""
    from minitflow import demo_dir
    from minitflow.errors import run_cli
    from minitflow.generate import main
    tok = Tokenizer(demo_dir())
    with pytest.raises(UserError, match=r"lone surrogate \(U\+D800\) at character 1"):
        tok.encode("a\ud800b")
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "what is \\ud800 2+2?"}\n')
    assert run_cli(main, ["--input_file", str(path), "--greedy"]) == 2
    assert "lone surrogate" in capsys.readouterr().err


def test_special_tokens_written_as_added_token_dicts_are_read(tmp_path):
    """tokenizer_config.json may write eos_token as an AddedToken dict; it named <|im_end|>
    regardless (a model ending on <|endoftext|> would not stop)."""
    import json
    import shutil
    from minitflow import demo_dir
    shutil.copy(demo_dir() / "tokenizer.json", tmp_path / "tokenizer.json")
    eos = {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False, "rstrip": False}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos, "pad_token": dict(eos, content="<|im_end|>")}))
    tok = Tokenizer(tmp_path)
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == tok.token_to_id("<|endoftext|>") is not None
    assert tok.pad_token_id == tok.token_to_id("<|im_end|>")
