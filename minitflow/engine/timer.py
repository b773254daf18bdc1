"""Timing device work without stalling it.

The engine queues decode steps ahead of reading their tokens (`engine.RUN_AHEAD`); a host sync
to time a prefill or the generator would drain that queue at every admission, leaving the GPU
idle while the host prepares the next work. `DeviceTimer` records CUDA events around the work
instead and reads them when the result is wanted, by then long done.
"""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work itself (batch-level
    timings outside the serving loop)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceTimer:
    """Seconds of the work issued between construction and `stop()`: on CUDA the time between
    two events on the current stream (the work's own span on the device, whatever was queued
    before it), elsewhere the host clock (work runs as it is issued)."""

    def __init__(self, device: torch.device):
        self._events: tuple[torch.cuda.Event, torch.cuda.Event] | None = None
        self._seconds: float | None = None
        if device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> "DeviceTimer":
        if self._events is not None:
            self._events[1].record()
        else:
            self._seconds = time.perf_counter() - self._t0
        return self

    @property
    def seconds(self) -> float:
        """Waits for the end event only if the work is still running."""
        if self._seconds is None:
            if self._events is None:
                raise RuntimeError("DeviceTimer read before stop()")
            self._events[1].synchronize()
            self._seconds = self._events[0].elapsed_time(self._events[1]) / 1e3
        return self._seconds
