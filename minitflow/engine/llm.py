"""The engine: batched prefill + decode over one preallocated KV cache, with accounting.

Rows of a batch keep their own lengths and positions (right-padded prefill, per-row cache
writes), so every row gets the tokens it would get alone. Every call reports per row the
prompt and completion tokens it processed, why it stopped, and the prefill/decode time.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from minitflow.model.kv_cache import KVCache
from minitflow.engine.sampler import Sampler, SamplingParams
from minitflow.errors import UserError
from minitflow.model.lora import LoraWeights
from minitflow.model.qwen3 import Capture, Qwen3Model
from minitflow.model.tokenizer import Tokenizer, render_chat

KV_BUCKET = 256  # compiled decode: attention length granularity (see LLM._kv_len)
RUN_AHEAD = 4  # decode steps the host may queue before it learns that all rows are done
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prefill_s: float  # of the whole batch this row ran in
    decode_s: float


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str | torch.device | None) -> torch.device:
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name} requested but CUDA is not available")
    return device


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LLM:
    """A loaded Qwen3 model plus tokenizer. `compile=True` runs decode steps through
    `torch.compile` (CUDA graphs on GPU) over a static-length cache; eager stays the reference."""

    def __init__(self, model: Qwen3Model, tokenizer: Tokenizer | None = None,
                 eos_token_ids: Sequence[int] = (), max_seq_len: int | None = None, compile: bool = False):
        self.model = model
        self.cfg = model.cfg
        self.tokenizer = tokenizer
        self.device = model.embed_tokens.weight.device
        self.dtype = model.embed_tokens.weight.dtype
        self.eos_token_ids = set(eos_token_ids) | set(model.cfg.eos_token_ids)
        self.max_seq_len = max_seq_len or model.rotary.cos.shape[0]
        if self.max_seq_len > model.rotary.cos.shape[0]:
            raise UserError(f"max_seq_len {self.max_seq_len} exceeds the model's {model.rotary.cos.shape[0]} positions")
        self._cache: KVCache | None = None
        self._caches: dict[int, KVCache] = {}
        self._lora_buf: LoraWeights | None = None
        self.compiled = compile
        self._decode = self._compile_decode() if compile else self._decode_step

    @classmethod
    def load(cls, model: str | Path = "Qwen/Qwen3-4B", dtype: str | torch.dtype = "bfloat16",
             device: str | torch.device | None = None, max_seq_len: int | None = None,
             compile: bool = False) -> "LLM":
        """Load a HF-format directory or a hub id from the local Hugging Face cache."""
        from minitflow.model.weights import load_model, resolve_model_dir
        model_dir = resolve_model_dir(model)
        net = load_model(model_dir, resolve_dtype(dtype), resolve_device(device))
        tokenizer = Tokenizer(model_dir) if (model_dir / "tokenizer.json").is_file() else None
        eos = _generation_eos(model_dir) | ({tokenizer.eos_token_id} if tokenizer else set())
        return cls(net, tokenizer, eos_token_ids=eos,
                   max_seq_len=max_seq_len, compile=compile)

    # ---- prompts -------------------------------------------------------------------------
    def chat_ids(self, messages: list[dict[str, str]], enable_thinking: bool | None = None) -> list[int]:
        """Token ids of a chat in Qwen3's format, with the assistant generation prompt."""
        return self.encode(render_chat(messages, add_generation_prompt=True, enable_thinking=enable_thinking))

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise UserError("this LLM has no tokenizer: pass token ids")
        return self.tokenizer.encode(text)

    def _as_ids(self, prompts: Sequence[Sequence[int] | str]) -> list[list[int]]:
        if not prompts:
            raise UserError("no prompts given")
        ids = [self.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
        vocab = self.cfg.vocab_size
        for i, p in enumerate(ids):
            if not p:
                raise UserError(f"prompt {i} is empty")
            if min(p) < 0 or max(p) >= vocab:
                raise UserError(f"prompt {i} has token id {min(p) if min(p) < 0 else max(p)} outside the "
                                f"model's vocabulary of {vocab}")
        return ids

    # ---- forward passes ----------------------------------------------------------------
    def _get_cache(self, batch: int, max_len: int) -> KVCache:
        """Eager: one cache, reallocated when it does not fit. Compiled: one cache per batch size
        (textmas alternates 2n and n rows), so captured graphs keep their static addresses."""
        c = self._caches.get(batch) if self.compiled else self._cache
        if c is None or c.batch != batch or c.max_len < max_len or (not self.compiled and c.max_len > 4 * max_len):
            size = max_len if not self.compiled else min(self.max_seq_len, -(-max_len // 256) * 256)
            c = KVCache(self.cfg.num_hidden_layers, batch, size, self.cfg.num_key_value_heads,
                        self.cfg.head_dim, self.dtype, self.device)
            if self.compiled:  # CUDA graphs read the cache in place instead of copying it each step
                torch._dynamo.mark_static_address(c.k)
                torch._dynamo.mark_static_address(c.v)
                self._caches[batch] = c
            self._cache = c
        return c

    def release_memory(self) -> None:
        """Drop the KV caches and LoRA buffers kept between calls (they are rebuilt on demand;
        compiled graphs re-record for the new addresses)."""
        self._cache, self._caches, self._lora_buf = None, {}, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _static_lora(self, lora: LoraWeights) -> LoraWeights:
        """Copy per-call factors into buffers that keep their address across calls, so a
        captured decode graph is replayed, not re-recorded or fed copies, for every request."""
        buf = self._lora_buf
        if buf is None or buf.batch != lora.batch or _layout(buf) != _layout(lora):
            buf = LoraWeights([{k: (a.clone(), tuple(b.clone() for b in bs)) for k, (a, bs) in layer.items()}
                               for layer in lora.layers], lora.batch)
            for t in _tensors(buf):
                torch._dynamo.mark_static_address(t)
            self._lora_buf = buf
            return buf
        for dst, src in zip(_tensors(buf), _tensors(lora)):
            dst.copy_(src)
        return buf

    def _prefill(self, ids: list[list[int]], cache: KVCache | None, lora: LoraWeights | None,
                 capture: Capture | None, need_logits: bool) -> torch.Tensor | None:
        lens = [len(p) for p in ids]
        t = max(lens)
        x = torch.zeros(len(ids), t, dtype=torch.long)
        for i, p in enumerate(ids):
            x[i, : len(p)] = torch.tensor(p)
        x = x.to(self.device)
        positions = torch.arange(t, device=self.device)[None, :].expand(len(ids), t)
        last = torch.tensor(lens, device=self.device) - 1
        out = self.model(x, positions, cache, t, lora=lora, capture=capture, logits_index=last,
                         need_logits=need_logits)
        return None if out is None else out[:, 0]

    def _decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, kv_len: int,
                     lora: LoraWeights | None) -> torch.Tensor:
        return self.model(tokens, positions, cache, kv_len, lora=lora)[:, -1]

    def _compile_decode(self):
        """One graph per (batch size, attention bucket, LoRA layout), each captured once as a
        CUDA graph ("reduce-overhead") from one whole-step graph (fullgraph: a graph break
        would split the step into several launches). The limit covers every bucket of a few
        batch sizes instead of silently falling back to eager after 8."""
        cfg = torch._dynamo.config
        name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
        setattr(cfg, name, max(getattr(cfg, name), 64))
        mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        return torch.compile(self._decode_step, mode=mode, fullgraph=True, dynamic=False)

    def _check_lengths(self, ids: list[list[int]], params: list[SamplingParams]) -> int:
        need = max(len(p) + s.max_new_tokens for p, s in zip(ids, params))
        for i, (p, s) in enumerate(zip(ids, params)):
            if len(p) + s.max_new_tokens > self.max_seq_len:
                raise UserError(f"prompt {i} has {len(p)} tokens + max_new_tokens {s.max_new_tokens}, "
                                f"more than the cache's {self.max_seq_len} positions")
        return need

    @torch.inference_mode()
    def capture_hidden(self, prompts: Sequence[Sequence[int] | str], capture: Capture) -> Capture:
        """One prefill with no logits and no decode: fills `capture` (the senders' forward pass)."""
        ids = self._as_ids(prompts)
        if len(capture.starts) != len(ids):
            raise UserError(f"capture has {len(capture.starts)} spans for {len(ids)} prompts")
        for i, (p, s, e) in enumerate(zip(ids, capture.starts, capture.ends)):
            if not 0 <= s < e <= len(p):
                raise UserError(f"capture span [{s}, {e}) of prompt {i} is outside its {len(p)} tokens")
        t = max(len(p) for p in ids)
        if t > self.max_seq_len:
            raise UserError(f"prompt of {t} tokens is longer than the cache's {self.max_seq_len} positions")
        self._prefill(ids, None, None, capture, need_logits=False)  # no decode follows: no KV cache
        return capture

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int] | str],
                 sampling: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
                 lora: LoraWeights | None = None, capture: Capture | None = None) -> list[Generation]:
        """Generate for a batch of prompts (token ids, or raw text to tokenize as is).

        `lora` applies per-row factors to every projection for this call only (prefill and
        decode); `capture` records hidden states during the prefill.
        """
        ids = self._as_ids(prompts)
        b = len(ids)
        params = [sampling] * b if isinstance(sampling, SamplingParams) else list(sampling)
        if len(params) != b:
            raise UserError(f"{len(params)} sampling params for {b} prompts")
        if lora is not None and lora.batch != b:
            raise UserError(f"LoRA factors are for a batch of {lora.batch}, got {b} prompts")
        cache = self._get_cache(b, self._check_lengths(ids, params))
        if lora is not None and self.compiled:
            lora = self._static_lora(lora)
        sample = Sampler(params, self.device, compile=self.compiled)
        lens = [len(p) for p in ids]
        steps = max(p.max_new_tokens for p in params)
        # finished rows are tracked on the device; the host learns that all are done a few steps late
        dev = self.device
        limit = torch.tensor([p.max_new_tokens for p in params], device=dev)
        eos_stops = torch.tensor([not p.ignore_eos for p in params], device=dev)
        eos = torch.tensor(sorted(self.eos_token_ids) or [-1], device=dev)
        out = torch.zeros(b, steps, dtype=torch.long, device=dev)
        stop_rows = [i for i, p in enumerate(params) if p.stop] if self.tokenizer is not None else []
        stopped: dict[int, tuple[int, str]] = {}  # row -> (index of the token that completed a stop string, text)
        all_done = AllDone(dev, run_ahead=0 if stop_rows else RUN_AHEAD)

        sync(dev)
        t0 = time.perf_counter()
        logits = self._prefill(ids, cache, lora, capture, need_logits=True)
        tokens = sample(logits, 0)
        sync(dev)
        t1 = time.perf_counter()

        cur = torch.tensor(lens, device=dev)  # where each row writes its newest token
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        n = 0
        while True:
            out[:, n] = tokens
            done |= (torch.isin(tokens, eos) & eos_stops) | (limit <= n + 1)
            if stop_rows:
                self._check_stop_strings(out, n, params, stop_rows, stopped, done)
            if n + 1 == steps or all_done(done):
                break
            kv_len = self._kv_len(max(lens) + n + 1, cache)
            if self.compiled and dev.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            logits = self._decode(tokens[:, None], cur[:, None], cache, kv_len, lora)
            cur = cur + (~done).long()  # finished rows stay put and cannot run past the cache
            n += 1
            tokens = sample(logits, n)
        rows = out[:, : n + 1].tolist()
        sync(dev)
        t2 = time.perf_counter()

        results = []
        for i, (p, toks) in enumerate(zip(params, rows)):
            end, reason, text = p.max_new_tokens, "length", None
            if not p.ignore_eos:
                hit = next((k for k, t in enumerate(toks[:end]) if t in self.eos_token_ids), None)
                if hit is not None:
                    end, reason = hit + 1, "stop"
            if i in stopped and stopped[i][0] < end:
                end, reason, text = stopped[i][0] + 1, "stop", stopped[i][1]
            toks = toks[:end]
            if text is None:
                text = self.tokenizer.decode(toks) if self.tokenizer is not None else ""
            results.append(Generation(token_ids=toks, text=text, prompt_tokens=lens[i],
                                      completion_tokens=len(toks), finish_reason=reason,
                                      prefill_s=t1 - t0, decode_s=t2 - t1))
        return results

    def _kv_len(self, need: int, cache: KVCache) -> int:
        """Cache slots a decode step attends over. Eager: exactly those in use. Compiled: a bucket
        (multiples of 256 up to 1024, then powers of two), so a few captured graphs serve every
        length while a step does not read the whole static cache early in a generation."""
        if not self.compiled:
            return need
        bucket = -(-need // KV_BUCKET) * KV_BUCKET if need <= 4 * KV_BUCKET else 1 << (need - 1).bit_length()
        return min(bucket, cache.max_len)

    def _check_stop_strings(self, out: torch.Tensor, n: int, params: list[SamplingParams], rows: list[int],
                            stopped: dict[int, tuple[int, str]], done: torch.Tensor) -> None:
        """Stop strings need the text: rows that have them are decoded on the host every step."""
        for i in rows:
            if i in stopped:
                continue
            text = self.tokenizer.decode(out[i, : n + 1].tolist())
            hits = [text.index(s) for s in params[i].stop if s in text]
            if hits:
                stopped[i] = (n, text[: min(hits)])
                done[i] = True


class AllDone:
    """Whether every row has finished, asked once per decode step without stalling the GPU.

    On CUDA the answer for step n is copied to pinned host memory behind step n's kernels and
    read `run_ahead` steps later, so the GPU always has queued work instead of waiting for the
    host after every token; the price is at most `run_ahead` extra steps at the end.
    """

    def __init__(self, device: torch.device, run_ahead: int):
        self.run_ahead = run_ahead if device.type == "cuda" else 0
        # a ring of run_ahead + 1 slots: a slot is reused only after its flag was read
        slots = range(self.run_ahead + 1) if self.run_ahead else range(0)
        self.slots = [(torch.cuda.Event(), torch.zeros((), dtype=torch.bool, pin_memory=True)) for _ in slots]
        self.pending: deque = deque()
        self.step = 0

    def __call__(self, done: torch.Tensor) -> bool:
        if self.run_ahead == 0:
            return bool(done.all())
        event, flag = self.slots[self.step % len(self.slots)]
        self.step += 1
        flag.copy_(done.all(), non_blocking=True)
        event.record()
        self.pending.append((event, flag))
        if len(self.pending) <= self.run_ahead:
            return False
        event, flag = self.pending.popleft()
        event.synchronize()
        return bool(flag)


def _tensors(lora: LoraWeights) -> list[torch.Tensor]:
    return [t for layer in lora.layers for a, bs in layer.values() for t in (a, *bs)]


def _layout(lora: LoraWeights) -> list:
    """What a captured graph depends on: which groups each layer has and every factor's shape."""
    return [[(k, len(bs)) for k, (_, bs) in layer.items()] for layer in lora.layers] + \
        [t.shape for t in _tensors(lora)]


def _generation_eos(model_dir: Path) -> set[int]:
    """EOS ids from generation_config.json (Qwen3 stops on <|im_end|> and <|endoftext|>)."""
    import json
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return set()
    eos = json.loads(path.read_text()).get("eos_token_id")
    return set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())
