"""LLM: a loaded model and tokenizer in front of the serving engine (a thin facade).

`generate` runs a list of prompts to completion on the engine's slots (continuous batching:
more prompts than slots simply queue) and returns per row the tokens, the text, the prompt,
cached and completion tokens it processed, why it stopped, and its prefill/decode time.
`add_request` / `step` expose the engine itself to code that streams requests through it.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from minitflow.engine.engine import Engine
from minitflow.engine.timer import sync
from minitflow.engine.request import Request
from minitflow.engine.runner import check_compiler
from minitflow.engine.sampler import SamplingParams, per_row
from minitflow.errors import UserError, check_int, check_ordered, is_int
from minitflow.files import model_file, read_json_object
from minitflow.model.config import DTYPES, Qwen3Config
from minitflow.model.lora import LoraWeights
from minitflow.model.qwen3 import Capture, Qwen3Model, as_index, stack_spans
from minitflow.model.tokenizer import Tokenizer, render_chat

__all__ = ["LLM", "Generation", "resolve_dtype", "resolve_device", "sync"]
HF_DEFAULT_TOP_K = 50  # what HF `generate` samples with when neither its caller nor the model sets top_k


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prefill_s: float  # of the prefill batch this row ran in
    decode_s: float  # from its first token to its last
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (not recomputed)


def resolve_dtype(name: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """bfloat16, float16, float32, or auto: bfloat16 on a CUDA `device`, float32 elsewhere (a
    CPU runs bf16 matmuls far slower than float32)."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}: choose auto or one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


def resolve_device(name: str | torch.device | None) -> torch.device:
    """auto (or None), cpu, cuda or cuda:N, as a string or a torch.device. Under torchrun
    (LOCAL_RANK set) auto and cuda mean this rank's own GPU, cuda:LOCAL_RANK, so N ranks do not
    all load onto GPU 0; otherwise cuda is the current device where this process has set up
    CUDA, GPU 0 where it has not (asking would set it up: a CUDA context just to check a flag).
    The command lines' --device and LLM.load(device=) both come here."""
    name = (str(name) if name is not None else "auto").strip().lower()
    if name == "cpu" or (name.startswith("cpu:") and name[4:].isdecimal()):
        return torch.device("cpu")
    if name not in ("auto", "cuda") and not (name.startswith("cuda:") and name[5:].isdecimal()):
        raise UserError(f"device {name!r} is not supported (--device / device=): use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        if name == "auto":
            return torch.device("cpu")
        raise UserError(f"device {name} requested (--device / device=) but CUDA is not available")
    count = torch.cuda.device_count()
    if name.startswith("cuda:"):
        index = int(name[5:])
    elif os.environ.get("LOCAL_RANK"):
        index = int(os.environ["LOCAL_RANK"])
    else:
        index = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
    if index >= count:
        raise UserError(f"GPU {index} requested (device {name}, LOCAL_RANK {os.environ.get('LOCAL_RANK')}) "
                        f"but only {count} are visible")
    return torch.device("cuda", index)


class LLM:
    """A loaded Qwen3 model plus tokenizer over an `Engine` with `num_slots` slots.
    `compile=True` runs decode steps through `torch.compile` (CUDA graphs on GPU) over a
    static-length cache. `cuda_graphs` captures the eager step's kernels as CUDA graphs instead,
    in well under a second per shape where inductor takes minutes at 4B; None (default) means
    on for a CUDA model without `compile`, as in vLLM, and False runs every step op by op (the
    reference). True on a CPU model is an error. `static=True` runs each batch until its
    slowest row ends (the pre-serving behaviour, kept for comparison). `prefix_cache_bytes`
    bounds the prefix cache (0 turns it off). One thread at a time runs the engine: a call from
    another thread (generate, step, run_method) waits for the running one to return."""

    def __init__(self, model: Qwen3Model, tokenizer: Tokenizer | None = None,
                 eos_token_ids: Sequence[int] = (), max_seq_len: int | None = None, compile: bool = False,
                 num_slots: int = 16, static: bool = False, prefix_cache_bytes: int = 1 << 30,
                 cuda_graphs: bool | None = None):
        self.model = model
        self.cfg = model.cfg
        self.tokenizer = tokenizer
        self.device = model.embed_tokens.weight.device
        self.dtype = model.embed_tokens.weight.dtype
        # else a TypeError from deep inside (2.5 slots, a None budget at the first prefill), or a
        # negative max_seq_len that refused every request by its length
        num_slots = check_int(num_slots, "num_slots")
        prefix_cache_bytes = check_int(prefix_cache_bytes, "prefix_cache_bytes", 0)
        self.max_seq_len = model.rotary.cos.shape[0] if max_seq_len is None else check_int(max_seq_len, "max_seq_len")
        if self.max_seq_len > model.rotary.cos.shape[0]:
            raise UserError(f"max_seq_len {self.max_seq_len} exceeds the model's {model.rotary.cos.shape[0]} positions")
        self.compiled = compile
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda" and not compile
        eos = check_eos(eos_token_ids, self.cfg.vocab_size, "LLM")
        self.engine = Engine(model, eos | set(model.cfg.eos_token_ids),
                             tokenizer.decode if tokenizer is not None else None, self.max_seq_len,
                             num_slots=num_slots, compile=compile, static=static,
                             prefix_cache_bytes=prefix_cache_bytes, cuda_graphs=cuda_graphs,
                             skip_ids=tokenizer.special_ids if tokenizer is not None else frozenset())

    @property
    def eos_token_ids(self) -> set[int]:
        return self.engine.eos_token_ids

    @eos_token_ids.setter
    def eos_token_ids(self, ids: set[int]) -> None:
        self.engine.eos_token_ids = check_eos(ids, self.cfg.vocab_size, "eos_token_ids")

    @classmethod
    def load(cls, model: str | Path = "Qwen/Qwen3-4B", dtype: str | torch.dtype = "auto",
             device: str | torch.device | None = None, max_seq_len: int | None = None,
             compile: bool = False, need_tokenizer: bool = False, **engine_args) -> "LLM":
        """Load a HF-format directory or a hub id from the local Hugging Face cache;
        `engine_args` (num_slots, static, prefix_cache_bytes, cuda_graphs) go to the engine.
        Without tokenizer.json the LLM takes token ids only; `need_tokenizer` (the command
        lines, which read text) refuses such a directory before the weights load."""
        from minitflow.model.weights import load_model, resolve_model_dir
        model_dir = resolve_model_dir(model, need_tokenizer)
        device = resolve_device(device)
        has_tokenizer = model_file(model_dir / "tokenizer.json")
        # the small files before the weights: a bad one must not cost the load (minutes at 4B)
        tokenizer = Tokenizer(model_dir) if has_tokenizer else None
        eos = _generation_eos(model_dir) | ({tokenizer.eos_token_id} if tokenizer else set())
        check_eos(eos, Qwen3Config.from_dir(model_dir).vocab_size, model_dir)
        if compile:
            check_compiler(device)
        net = load_model(model_dir, resolve_dtype(dtype, device), device)
        return cls(net, tokenizer, eos_token_ids=eos, max_seq_len=max_seq_len, compile=compile, **engine_args)

    # ---- prompts -------------------------------------------------------------------------
    def chat_ids(self, messages: list[dict[str, str]], enable_thinking: bool | None = None) -> list[int]:
        """Token ids of a chat in Qwen3's format, with the assistant generation prompt."""
        return self.encode(render_chat(messages, add_generation_prompt=True, enable_thinking=enable_thinking))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer().encode(text)

    def encode_counting_prefixes(self, text: str, cuts: Sequence[int]) -> tuple[list[int], list[int]]:
        """`text`'s ids and len(encode(text[:cut])) per cut, without encoding each prefix where
        the tokenizer can tell (`Tokenizer.encode_counting_prefixes`)."""
        return self._tokenizer().encode_counting_prefixes(text, cuts)

    def _tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise UserError("this LLM has no tokenizer: pass token ids")
        return self.tokenizer

    def _as_ids(self, prompts: Sequence[Sequence[int] | str]) -> list[list[int]]:
        """Token ids per prompt; the engine checks them (empty, outside the vocabulary) before
        any work, naming each as `prompt i`. A bare string or one prompt's ids in place of the
        list is refused: iterated, they ran one prompt per character or were a TypeError."""
        if isinstance(prompts, str):
            raise UserError("prompts is one string: pass a list of prompts, e.g. [text]")
        if not isinstance(prompts, Iterable):  # None or a number: a TypeError from len()
            raise UserError(f"prompts must be a list of prompts (text or token ids), got {type(prompts).__name__}")
        check_ordered(prompts, "prompts")
        if not hasattr(prompts, "__len__"):  # a generator of prompts: read once
            prompts = list(prompts)
        if len(prompts) == 0:  # len, not truth: a numpy array of ids has none
            raise UserError("no prompts given")
        if any(isinstance(p, numbers.Integral) or getattr(p, "ndim", None) == 0 for p in prompts):  # a tensor's too
            raise UserError("prompts holds token ids, not prompts: pass a list of prompts, e.g. [ids]")
        return [self.encode(p) if isinstance(p, str) else _token_ids(p, i) for i, p in enumerate(prompts)]

    # ---- the engine ----------------------------------------------------------------------
    def add_request(self, prompt: Sequence[int] | str, sampling: SamplingParams = SamplingParams(), *,
                    lora: LoraWeights | None = None, capture: Capture | None = None,
                    past: tuple[torch.Tensor, torch.Tensor] | None = None, generate: bool = True,
                    prefix_cache: bool = True, context_key: int | None = None, tag: object = None) -> Request:
        """Queue one request (token ids or text to tokenize as is) with the Request fields a caller
        sets; drive it with `step()`. Named here, not forwarded as **fields: the fields the engine
        sets as it runs (id, status, cached_tokens, arrival_t, ...) went in without a word."""
        ids = self._as_ids([prompt])[0]
        return self.engine.add_request(Request(ids, sampling, lora=lora, capture=capture, past=past, generate=generate,
                                               prefix_cache=prefix_cache, context_key=context_key, tag=tag))

    def step(self) -> list[Request]:
        """One engine step; the requests that finished in it."""
        return self.engine.step()

    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished()

    def abort(self, req: Request) -> bool:
        """Stop one request from add_request (queued or running; Engine.abort): False when it
        had already finished, so a stream racing its last token needs no check of its own."""
        return self.engine.abort(req)

    def abort_all(self) -> list[Request]:
        """Stop every request in the engine (Engine.abort_all), queued or running, each with
        finish_reason "abort": what a notebook needs after a loop over step() was interrupted, or
        when the Request objects are gone, before run_method or generate can have the LLM again."""
        return self.engine.abort_all()

    def release_memory(self) -> None:
        """Drop the KV cache, LoRA buffers and prefix cache kept between calls (rebuilt on
        demand; compiled graphs re-record for the new addresses). Not while requests run: theirs
        is the KV dropped, and the next step() was a bare AssertionError that aborted them.
        Call it after changing the model's weights in place: the prefix cache is keyed by tokens,
        so its blocks hold the KV of the old weights."""
        with self.engine.lock:  # not under another thread's generate()
            if self.engine.scheduler.running:
                raise UserError("release_memory() with requests running would drop their KV cache: step() them to "
                                "the end first")
            self.engine.runner.release_memory()
            self.engine.prefix_cache.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def capture_hidden(self, prompts: Sequence[Sequence[int] | str], capture: Capture) -> Capture:
        """A prefill with no decode per prompt: fills `capture` (the senders' forward pass)."""
        ids = self._as_ids(prompts)
        if capture is None:  # _run would run the prompts capturing nothing
            raise UserError("capture must be a Capture, got NoneType")
        self._run(ids, [SamplingParams(max_new_tokens=1)] * len(ids), None, capture, generate=False)
        return capture

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int] | str],
                 sampling: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
                 lora: LoraWeights | None = None, capture: Capture | None = None) -> list[Generation]:
        """Generate for prompts (token ids, or raw text to tokenize as is), one request each.

        `lora` applies per-row factors to every projection for this call only (prefill and
        decode); `capture` records hidden states during the prefill. A row's tokens depend on its
        prompt and seed only, so one SamplingParams for every row samples a repeated prompt the same
        way each time: for n samples of one prompt, pass n params with their own seeds
        (`[replace(sp, seed=sp.seed + i) for i in range(n)]`), as run_method does per question.
        """
        ids = self._as_ids(prompts)
        b = len(ids)
        params = per_row(sampling, b, "prompt")
        reqs = self._run(ids, params, lora, capture, generate=True)
        return [Generation(token_ids=r.output_ids, text=r.text if r.text is not None else self._decode(r.output_ids),
                           prompt_tokens=len(r.prompt_ids), completion_tokens=len(r.output_ids),
                           finish_reason=r.finish_reason or "length", prefill_s=r.prefill_s, decode_s=r.decode_s,
                           cached_tokens=r.cached_tokens) for r in reqs]

    def _run(self, ids: list[list[int]], params: list[SamplingParams], lora: LoraWeights | None,
             capture: Capture | None, generate: bool) -> list[Request]:
        b = len(ids)
        if lora is not None and not isinstance(lora, LoraWeights):  # else an AttributeError from inside
            raise UserError(f"lora must be LoraWeights (build_lora(...)), got {type(lora).__name__}")
        if lora is not None and lora.batch != b:
            raise UserError(f"LoRA factors are for a batch of {lora.batch}, got {b} prompts")
        if capture is not None and not isinstance(capture, Capture):
            raise UserError(f"capture must be a Capture, got {type(capture).__name__}")
        if capture is not None and len(capture.ends) != len(capture.starts):  # else an IndexError, or ends dropped
            raise UserError(f"capture has {len(capture.starts)} starts but {len(capture.ends)} ends: one span per prompt")
        if capture is not None and len(capture.starts) != b:
            raise UserError(f"capture has {len(capture.starts)} spans for {b} prompts")
        if capture is not None and capture.out is not None:  # it would be dropped: the batch comes in capture.hidden
            raise UserError("capture.out is for engine requests (Request(capture=...)); generate and capture_hidden "
                            "return the batch in capture.hidden")
        reqs = []
        for i, (p, sp) in enumerate(zip(ids, params)):
            cap = None
            if capture is not None:
                s, e = capture.starts[i], capture.ends[i]
                if not 0 <= s < e <= len(p):
                    raise UserError(f"capture span [{s}, {e}) of prompt {i} is outside its {len(p)} tokens")
                cap = Capture(capture.layers, [s], [e], layer_weights=capture.layer_weights)
            reqs.append(Request(p, sp, lora=None if lora is None else lora.row(i), capture=cap, generate=generate, tag=f"prompt {i}"))
        self.engine.run(reqs)
        if capture is not None:  # one batch tensor again, zero past each row's span
            capture.hidden, capture.lengths = stack_spans([r.capture.hidden for r in reqs])
        return reqs

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else ""


def _token_ids(prompt: object, i: int) -> list[int]:
    """Prompt i's ids as ints (as_index: int() cut 1.7 to 1, and read bytes as their byte values,
    without a word)."""
    try:
        if isinstance(prompt, (bytes, bytearray)):
            raise TypeError
        return [t if type(t) is int else _token_id(t, i) for t in prompt]  # a plain int: the common case, fast
    except TypeError:
        raise UserError(f"prompt {i} is neither text nor integer token ids: {type(prompt).__name__} "
                        f"{str(prompt)[:40]}") from None


def _token_id(t: object, i: int) -> int:
    """One id of prompt i that is no plain int. A sequence, tensor or array in its place is refused: as_index
    took a one-element tensor's value, so a 2-D tensor of one column ran as its rows' ids, one prompt."""
    if getattr(t, "ndim", 0) >= 1 or (isinstance(t, Sequence) and not isinstance(t, (str, bytes, bytearray))):
        shape = f" of shape {tuple(t.shape)}" if hasattr(t, "shape") else ""
        raise UserError(f"prompt {i} is not one sequence of token ids (an element of it is {type(t).__name__}{shape}): "
                        "pass one list of ids per prompt")
    return as_index(t)


def generation_config(model_dir: str | Path) -> dict:
    """The model's generation_config.json as a dict ({} when the file is absent)."""
    path = Path(model_dir) / "generation_config.json"
    if not model_file(path):
        return {}
    return read_json_object(path, "generation config")  # an unreadable file was a PermissionError traceback


def check_eos(ids: Iterable[int], vocab: int, source: str | Path) -> set[int]:
    """The end-of-sequence ids as plain ints. An id the model cannot sample never stops a
    generation: a tokenizer or generation_config.json of another model, refused rather than run
    to max_new_tokens; so is one that is no integer (5.5 never equals a token; True stopped on
    token 1; a string or one bare id was a TypeError)."""
    if not isinstance(ids, Iterable):
        raise UserError(f"{source}: end-of-sequence token ids must be a collection of integers, got {ids!r}")
    ids = list(ids)
    for i in ids:
        if not is_int(i):
            raise UserError(f"{source}: end-of-sequence token id {i!r} is not an integer")
    bad = sorted(i for i in ids if not 0 <= i < vocab)
    if bad:
        raise UserError(f"{source}: end-of-sequence token id {bad[-1]} is outside the model's vocabulary of {vocab} "
                        "(a tokenizer or generation_config.json of another model?)")
    return {int(i) for i in ids}


def _generation_eos(model_dir: Path) -> set[int]:
    """EOS ids from generation_config.json (Qwen3 stops on <|im_end|> and <|endoftext|>)."""
    eos = generation_config(model_dir).get("eos_token_id")
    ids = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise UserError(f"{Path(model_dir) / 'generation_config.json'}: eos_token_id must be an integer or a list "
                        f"of integers, got {eos!r}")
    return set(ids)


def generation_top_k(model_dir: str | Path) -> int:
    """top_k from generation_config.json, HF's default 50 when unset (no file, no key, null). HF
    `generate` fills every setting its caller leaves out from this file, then from its own
    defaults, and the official code passes only temperature and top_p: on Qwen3-4B (top_k 20)
    its sampling is top-k 20, on a model whose file has none top-k 50."""
    k = generation_config(model_dir).get("top_k")
    if k is None:
        return HF_DEFAULT_TOP_K
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise UserError(f"{Path(model_dir) / 'generation_config.json'}: top_k must be an integer >= 0, got {k!r}")
    return k
