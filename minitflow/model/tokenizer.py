"""`tokenizer.json` through the `tokenizers` library, and Qwen3's chat format in Python.

The chat format reproduces Qwen3's Jinja template for system / user / assistant / tool turns
(a function list and an assistant's tool_calls are not supported): history assistant turns lose
their think block, the last assistant turn after the final user query keeps one (its
`reasoning_content` when given), consecutive tool results share one user turn of
<tool_response> blocks, and `enable_thinking=False` appends an empty think block to the
generation prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from minitflow.errors import UserError
from minitflow.files import model_file, read_json_object, read_text


class Tokenizer:
    def __init__(self, model_dir: str | Path):
        path = Path(model_dir) / "tokenizer.json"
        if not model_file(path):
            raise UserError(f"no tokenizer.json in {model_dir}")
        text = read_text(path, "tokenizer")  # unreadable: a clear line, not "not a valid tokenizer file"
        try:
            self._tok = HFTokenizer.from_str(text)
        except Exception as e:  # the library raises a bare Exception for any malformed file
            raise UserError(f"{path} is not a valid tokenizer file: {str(e).splitlines()[0][:200]}") from None
        cfg_path = Path(model_dir) / "tokenizer_config.json"
        # one line for an unreadable file (another user's blob in a shared cache: was a PermissionError
        # traceback) and for a list (was read as {}: Qwen3's eos in place of whatever the file meant)
        cfg = read_json_object(cfg_path, "tokenizer config") if model_file(cfg_path) else {}
        self.eos_token = _token_text(cfg, "eos_token", cfg_path) or "<|im_end|>"  # Qwen3's when the config names none
        self.eos_token_id = self._tok.token_to_id(self.eos_token)
        if self.eos_token_id is None:  # else a TypeError where the eos ids are checked, or no stop at all
            raise UserError(f"{cfg_path if cfg.get('eos_token') else path}: eos_token {self.eos_token!r} is not a "
                            f"token of {path.name} (a tokenizer_config.json of another model?)")
        self.pad_token_id = self._tok.token_to_id(_token_text(cfg, "pad_token", cfg_path) or "<|endoftext|>")
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        added = self._tok.get_added_tokens_decoder()
        # what decode() drops wherever they stand (skip_special_tokens): the stop scan leaves them out
        self.special_ids = frozenset(i for i, t in added.items() if t.special)
        # added tokens matched in the raw text, before normalisation: the library splits the text there
        self._split_ids = frozenset(i for i, t in added.items() if not t.normalized)
        self._prefix_counts: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return self._encoding(text).ids

    def encode_counting_prefixes(self, text: str, cuts: Sequence[int]) -> tuple[list[int], list[int]]:
        """`text`'s ids and, per cut, len(encode(text[:cut])): how the official code counts a
        question span's bounds (BPE may merge across a cut, so a count need not be where the
        ids' boundary falls). Where the encoding has an added token (<|im_end|>) starting at the
        cut, the count is that token's index: the library splits the text at added tokens before
        anything else, so the ids before it are text[:cut]'s. Other cuts encode their prefix,
        the last few memoized: the text before a sender's question repeats for every question."""
        enc = self._encoding(text)
        at_added = {a: j for j, (i, (a, _)) in enumerate(zip(enc.ids, enc.offsets)) if i in self._split_ids}
        counts = []
        for cut in cuts:
            if cut in at_added:
                counts.append(at_added[cut])
                continue
            prefix = text[:cut]
            if prefix not in self._prefix_counts:
                if len(self._prefix_counts) >= 64:
                    self._prefix_counts.clear()
                self._prefix_counts[prefix] = len(self.encode(prefix))
            counts.append(self._prefix_counts[prefix])
        return enc.ids, counts

    def _encoding(self, text: str):
        try:
            return self._tok.encode(text, add_special_tokens=False)
        except TypeError:  # tokenizers' only word for a lone surrogate (e.g. "\ud800" in a JSON file)
            bad = next((i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF), None) \
                if isinstance(text, str) else None
            if bad is None:
                raise
            raise UserError(f"text has a lone surrogate (U+{ord(text[bad]):04X}) at character {bad}: "
                            "it is not valid Unicode") from None

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


def _token_text(cfg: dict, key: str, source: Path) -> str | None:
    """cfg[key], a special token as tokenizer_config.json writes it: a string or an AddedToken
    dict; None when absent or null. Anything else (a list, an id, a dict without content) is a
    UserError, as transformers refuses it: it was read as absent, Qwen3's token in its place."""
    entry = cfg.get(key)
    text = entry.get("content") if isinstance(entry, dict) else entry
    if entry is not None and not (isinstance(text, str) and text):
        raise UserError(f"{source}: {key} must be a token string or an AddedToken object with its \"content\", "
                        f"got {entry!r:.80}")
    return text


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = True,
                enable_thinking: bool | None = None) -> str:
    """Qwen3's chat template for plain system / user / assistant / tool messages."""
    if not (enable_thinking is None or isinstance(enable_thinking, bool)):  # "no" or 0 read as thinking on
        raise UserError(f"enable_thinking must be True, False or None, got {enable_thinking!r}")
    if not messages:  # transformers refuses it too; else a bare generation prompt
        raise UserError("the chat has no messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise UserError(f"chat message {i} is a {type(m).__name__}, not a dict with role and content")
        if m.get("role") not in ("system", "user", "assistant", "tool"):
            raise UserError(f"chat message role {m.get('role')!r} is not system/user/assistant/tool")
        if m.get("tool_calls"):  # the template writes them as <tool_call> blocks: rendered without, silently
            raise UserError(f"chat message {i} ({m['role']}) has tool_calls: they are not supported "
                            "(write the <tool_call> blocks into its content)")
        if not isinstance(m.get("content"), str):  # else a KeyError or TypeError deep in the rendering
            raise UserError(f"chat message {i} ({m['role']}) has content {m.get('content')!r:.60}: it must be a string")
    last_query = len(messages) - 1
    for i in range(len(messages) - 1, -1, -1):
        c = messages[i]["content"]
        if messages[i]["role"] == "user" and not (c.startswith("<tool_response>") and c.endswith("</tool_response>")):
            last_query = i
            break
    out = []
    for i, m in enumerate(messages):
        role, content = m["role"], m["content"]
        if role == "system" and i == 0:
            out.append(f"<|im_start|>system\n{content}<|im_end|>\n")
        elif role in ("user", "system"):
            out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
        elif role == "tool":  # a run of tool results is one user turn
            first = i == 0 or messages[i - 1]["role"] != "tool"
            last = i == len(messages) - 1 or messages[i + 1]["role"] != "tool"
            out.append(f"{'<|im_start|>user' if first else ''}\n<tool_response>\n{content}\n</tool_response>"
                       f"{'<|im_end|>' + chr(10) if last else ''}")
        else:
            reasoning = ""
            if isinstance(m.get("reasoning_content"), str):  # the template takes it as is, content unsplit
                reasoning = m["reasoning_content"]
            elif "</think>" in content:
                reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
            if i > last_query and (i == len(messages) - 1 or reasoning):
                out.append(f"<|im_start|>assistant\n<think>\n{reasoning.strip(chr(10))}\n</think>\n\n"
                           f"{content.lstrip(chr(10))}<|im_end|>\n")
            else:
                out.append(f"<|im_start|>assistant\n{content}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
        if enable_thinking is False:
            out.append("<think>\n\n</think>\n\n")
    return "".join(out)
