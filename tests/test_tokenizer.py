"""The tokenizer and chat format (minitflow/model/tokenizer.py) against transformers with Qwen3's own
chat template (tests/data/qwen3_chat_template.jinja: Qwen3's template, its function-list and
tool_calls branches left out): chat ids, think blocks, Qwen3's tool messages, malformed messages,
tokenizer_config.json's shapes, a padded vocabulary row, and the stop scan over special tokens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import GOLDEN, need_shared
from minitflow import demo_dir, generate
from minitflow.errors import UserError
from minitflow.model.tokenizer import Tokenizer, render_chat
from minitflow.tflow import prompts
from helpers import fails, gen_args, model_copy, no_model_load

DEMO = demo_dir()
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
    # no query at all (every user turn a tool response): the template's last query is the last message
    [{"role": "user", "content": "<tool_response>\nr\n</tool_response>"},
     {"role": "assistant", "content": "<think>x</think>y"}, {"role": "tool", "content": "s"}],
]


@pytest.mark.parametrize("chat", range(len(TOOL_CHATS)))
@pytest.mark.parametrize("thinking", [None, False])
def test_tool_messages_render_as_qwen3s_template(chat, thinking):
    """The tool role was refused; Qwen3's template renders tool results as <tool_response> blocks
    of one user turn per run, and they are no query: the think blocks of the assistant turns
    after them are kept as after a user's question."""
    from transformers import PreTrainedTokenizerFast
    from minitflow.model.tokenizer import render_chat
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
    req = Request([1], SamplingParams(max_new_tokens=len(stream), stop=("</answer>",), ignore_eos=True))
    req.status = Status.RUNNING
    for t in stream:
        if Engine._accept(engine, req, t):
            break
    assert (req.finish_reason, req.text) == ("stop", "The answer is 4")
    assert len(req.output_ids) == len(stream) - len(tok.encode(" more"))
    assert sum(decoded) < 10 * len(stream), sum(decoded)


@pytest.mark.parametrize("value", ["no", 0, 1, "False"])
def test_enable_thinking_of_another_kind_is_one_line(value):
    """The template turns thinking off only for `enable_thinking is False`: "no" or 0 rendered the
    thinking prompt without a word, the opposite of what the caller asked."""
    with pytest.raises(UserError, match=f"enable_thinking must be True, False or None, got {value!r}"):
        render_chat([{"role": "user", "content": "hi"}], enable_thinking=value)
    assert render_chat([{"role": "user", "content": "hi"}], enable_thinking=False).endswith("<think>\n\n</think>\n\n")


def test_prefix_counts_are_each_prefix_encoded_alone(toks):
    """`encode_counting_prefixes` reads a cut's count off the full encoding where an added token
    starts there and encodes the prefix (memoized) elsewhere: every count equals the prefix's own
    encoding, on texts of merging pieces (spaces, new lines, digits, accents that compose, CJK,
    emoji) around special tokens, special-token look-alikes, and cuts anywhere, repeated."""
    import random
    tok = toks[0]
    pieces = ["<|im_end|>", "<|im_start|>", "<think>", "</think>", "<|im_", "|>", " ", "  ", "\n", "\n\n", " \n",
              "a", "ab", "The", " cat", "12", "3", "e\u0301", "\u0301", "中文", "😆", "'s", "...", "\t", "user\n"]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        starts = [i for i in range(len(text)) if text.startswith("<|im_end|>", i) or text.startswith("<think>", i)]
        cuts = starts + [rng.randint(0, len(text)) for _ in range(3)] + starts[:1]
        ids, counts = tok.encode_counting_prefixes(text, cuts)
        assert ids == tok.encode(text)
        assert counts == [len(tok.encode(text[:c])) for c in cuts], (text, cuts)
    # the sender prompt's own cuts: before the question (memoized) and before <|im_end|> (read off)
    text = render_chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": " 12 apples\n"}])
    cut = text.index(" 12 apples")
    assert tok.encode_counting_prefixes(text, [cut, cut + 10])[1] == [len(tok.encode(text[:c])) for c in (cut, cut + 10)]
