"""A request: what to run (token ids, sampling, optional LoRA / capture / handed-over KV) and
what happened to it (slot, output, accounting, timings). The engine's only per-request state."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from minitflow.engine.sampler import SamplingParams
from minitflow.engine.timer import DeviceTimer
from minitflow.model.lora import LoraWeights
from minitflow.model.qwen3 import Capture

_ids = itertools.count()


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass
class Request:
    """`prompt_ids` follow `past` (keys/values of earlier positions handed over from another
    request, (layers, kv_heads, n, head_dim) each) when given. `lora` (batch 1) applies to this
    request's prefill and decode only. `capture` (batch-1 spans over prompt_ids) records hidden
    states during the prefill; `generate=False` stops there (a sender's forward pass)."""

    prompt_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # repr=False: printing a device tensor copies it to the host and waits for the GPU
    lora: LoraWeights | None = field(default=None, repr=False)
    capture: Capture | None = field(default=None, repr=False)
    past: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    generate: bool = True
    tag: Any = None  # the caller's: which question, which agent
    id: int = field(default_factory=lambda: next(_ids))

    status: Status = Status.WAITING
    slot: int | None = None
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (EOS or a stop string), "length", "prefill"
    text: str | None = None  # set when a stop string cut the text
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    arrival_t: float = field(default_factory=time.perf_counter)
    admitted_t: float = 0.0
    first_token_t: float = 0.0
    finished_t: float = 0.0
    prefill_timer: DeviceTimer | None = field(default=None, repr=False)  # the prefill batch it ran in

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
