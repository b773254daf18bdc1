"""A request: what to run (token ids, sampling, optional LoRA / capture / handed-over KV) and
what happened to it (slot, output, accounting, timings). The engine's only per-request state."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import torch

from minitflow.engine.sampler import SamplingParams
from minitflow.engine.timer import DeviceTimer
from minitflow.model.lora import LoraWeights
from minitflow.model.qwen3 import Capture

_ids = itertools.count()
_context_keys = itertools.count(1)


def new_context_key() -> int:
    """A key no other context in this process has (`Request.context_key`): one set of LoRA
    factors and/or one handed-over KV, which the requests given it share."""
    return next(_context_keys)


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass
class StopScan:
    """A request's search for stop strings in decode(output_ids), at O(1) decode work per token.

    Decoding the whole output after each token costs O(n^2) over n tokens. Instead the text is
    decoded incrementally, as vLLM's detokenize_incrementally does: each token decodes the window
    ids[prefix:] only, and the text past decode(ids[prefix:read]) is new. New text that ends in
    U+FFFD (a UTF-8 sequence that later byte tokens may complete) is searched but not committed.
    `prefix` is the previous `read`, and the offsets move only with text, so the window's first
    token is one that produced text, in both halves: a decoder that strips the first token's
    leading space strips it from both. Ids that add no text (skipped special tokens) or leave a
    character incomplete widen the window until text comes, as in vLLM. Only new text and the
    `keep` characters before it can hold a stop string not seen at an earlier token.

    A decoder may rewrite text that was final: ByteFallback (Llama's <0x41>) turns a run of
    byte tokens that ends in an incomplete UTF-8 sequence into U+FFFD each, "A" included. The
    window shows it (it no longer starts with the text before `read`): the scan then starts over,
    so the text stays decode(ids) exactly. Qwen3's byte-level decoder never rewrites.

    `skip` names ids that decode drops wherever they stand (the tokenizer's special tokens, under
    skip_special_tokens): the scan keeps them out of its ids, which leaves every decode the same
    text. Else a run of them (a model repeating <|endoftext|> with ignore_eos) widened the window
    by one at each token, a quadratic decode over the run."""

    committed: list[str] = field(default_factory=list)  # pieces of decode(ids[:read])
    pending: str = ""  # the text past them at the last find() (not committed: it ends in U+FFFD)
    tail: str = ""  # the last `keep` committed characters
    length: int = 0  # committed characters
    prefix: int = 0
    read: int = 0
    restarts: int = 0  # whole decodes after a rewrite of committed text (never with byte-level BPE)
    kept: list[int] = field(default_factory=list)  # the ids of the calls so far, less those in `skip`
    seen: int = 0  # how many ids of the caller's list `kept` took in

    @property
    def text(self) -> str:
        """decode(ids) for the ids of the last find()."""
        return "".join(self.committed) + self.pending

    def find(self, decode: Callable[[list[int]], str], ids: list[int], stops: tuple[str, ...],
             skip: frozenset[int] = frozenset()) -> str | None:
        """After each new id: the text before the earliest stop string in decode(ids), or None."""
        self.kept += [i for i in ids[self.seen:] if i not in skip]
        self.seen = len(ids)
        ids = self.kept  # decode(ids) is decode(kept), and so is every slice's
        before = decode(ids[self.prefix:self.read])
        window = decode(ids[self.prefix:])
        if not window.startswith(before):  # a new id rewrote committed text: decode everything once more
            self.restarts += 1
            self.committed, self.tail, self.length, self.prefix, self.read = [], "", 0, 0, 0
            before, window = "", decode(ids)
        self.pending = window[len(before):]
        region, at = self.tail + self.pending, self.length - len(self.tail)  # region is decode(ids)[at:]
        hits = [region.index(s) for s in stops if s in region]
        if hits:
            return self.text[: at + min(hits)]
        if self.pending and not self.pending.endswith("\ufffd"):
            keep = max(map(len, stops)) - 1
            self.committed.append(self.pending)
            self.length += len(self.pending)
            self.tail = region[-keep:] if keep else ""
            self.prefix, self.read, self.pending = self.read, len(ids), ""
        return None


@dataclass
class Request:
    """`prompt_ids` follow `past` (keys/values of earlier positions handed over from another
    request, (layers, kv_heads, n, head_dim) each) when given. `lora` (batch 1) applies to this
    request's prefill and decode only. Requests with one `context_key` (new_context_key()) hold the
    same factors and the same handed-over KV, so their prompts' KV is shared through the prefix
    cache (tflow's K receivers of a question, latentmas' K judgers); without a key the KV of a
    request with either is never cached (it depends on more than the tokens). `prefix_cache=False`:
    the request neither takes from nor stores in the prefix cache (training's condition: a step
    computes the same whatever the cache holds). `capture` (batch-1 spans over prompt_ids) records hidden states
    during the prefill; `generate=False` stops there (a sender's forward pass)."""

    prompt_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # repr=False: printing a device tensor copies it to the host and waits for the GPU
    lora: LoraWeights | None = field(default=None, repr=False)
    context_key: int | None = None
    prefix_cache: bool = True
    capture: Capture | None = field(default=None, repr=False)
    past: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    generate: bool = True
    tag: Any = None  # the caller's: which question, which agent
    # what the engine sets as it runs the request: not constructor arguments (Request(id=7) twice
    # was two requests with one id, which the prefill keys its prefix-cache lookups by; cached_tokens=2
    # skipped two prompt tokens' prefill): a TypeError, as LLM.add_request's for the same names
    id: int = field(default_factory=lambda: next(_ids), init=False)
    status: Status = field(default=Status.WAITING, init=False)
    slot: int | None = field(default=None, init=False)
    output_ids: list[int] = field(default_factory=list, init=False)
    finish_reason: str | None = field(default=None, init=False)  # "stop" (EOS or a stop string), "length", "prefill"
    text: str | None = field(default=None, init=False)  # set when a stop string cut the text
    stop_scan: StopScan = field(default_factory=StopScan, repr=False, init=False)
    cached_tokens: int = field(default=0, init=False)  # prompt tokens whose KV came from the prefix cache
    arrival_t: float = field(default_factory=time.perf_counter, init=False)
    admitted_t: float = field(default=0.0, init=False)
    first_token_t: float = field(default=0.0, init=False)
    finished_t: float = field(default=0.0, init=False)
    prefill_timer: DeviceTimer | None = field(default=None, repr=False, init=False)  # the prefill batch it ran in

    @property
    def past_len(self) -> int:
        return 0 if self.past is None else self.past[0].shape[2]

    @property
    def context_len(self) -> int:
        """Positions the prompt occupies in the slot (handed-over KV included)."""
        return self.past_len + len(self.prompt_ids)

    @property
    def max_len(self) -> int:
        """Positions the request may need: context plus every new token."""
        return self.context_len + (self.sampling.max_new_tokens if self.generate else 0)

    @property
    def finished(self) -> bool:
        return self.status in (Status.FINISHED, Status.ABORTED)

    @property
    def prefill_s(self) -> float:
        """Seconds of the prefill batch this request ran in (0 before its prefill)."""
        return 0.0 if self.prefill_timer is None else self.prefill_timer.seconds

    @property
    def queue_s(self) -> float:
        """Seconds it waited for a slot, from its creation to its prefill (0 before admission)."""
        return max(self.admitted_t - self.arrival_t, 0.0) if self.admitted_t else 0.0

    @property
    def decode_s(self) -> float:
        return max(self.finished_t - self.first_token_t, 0.0) if self.first_token_t else 0.0
