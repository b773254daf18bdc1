"""Which requests hold the slots: waiting requests are admitted, first come first served,
into free slots; finished ones leave and free theirs at once (continuous batching).

`static=True` keeps the old behaviour for comparison: a batch is admitted only into an empty
engine, and runs until its slowest request is done."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from minitflow.engine.request import Request, Status


class Scheduler:
    def __init__(self, num_slots: int, static: bool = False, max_prefill_tokens: int = 8192):
        self.num_slots, self.static, self.max_prefill_tokens = num_slots, static, max_prefill_tokens
        # id(request) -> request, in arrival order: abort takes one out in O(1) (a deque's removal
        # scanned and rebuilt it: aborting N queued requests one by one was O(N^2)); the same
        # Request queued twice holds one place, its first, and runs once
        self.waiting: OrderedDict[int, Request] = OrderedDict()
        self.running: dict[int, Request] = {}  # slot -> request
        self.free = list(range(num_slots))

    def add(self, req: Request) -> None:
        self.waiting.setdefault(id(req), req)

    def admit(self, fits: Callable[[Request], bool], cost: Callable[[Request], int] | None = None,
              waits: Callable[[Request, list[Request]], bool] | None = None) -> list[Request]:
        """Requests to prefill now, each given a free slot: in arrival order, until the slots or
        the prefill token budget run out, or the head of the queue does not `fit` yet. `cost(req)`:
        the tokens its prefill computes (default: its whole prompt), charged against the budget. A
        prompt longer than the budget is charged in full and comes alone, as the head: whenever
        rows share a prefill, the keys each row's prompt spans (cached ones included) stay within
        the budget, as when every prompt token was charged (handed-over KV, `Request.past`, comes
        on top: it was never charged). `waits(req, batch)`: True when `req` should come in the next
        step rather than beside `batch` (the engine's: the prefix cache will then hold what they
        compute now); admission stops there, as for a head that does not fit."""
        if self.static and self.running:
            return []
        batch: list[Request] = []
        tokens = 0
        budget = self.max_prefill_tokens
        while self.waiting and self.free:
            req = next(iter(self.waiting.values()))
            if (waits is not None and not self.static and waits(req, batch)) or not fits(req):
                break
            n = len(req.prompt_ids)
            if cost is not None and n <= budget:  # a longer one is charged it all: it comes alone
                n = cost(req)
            if batch and tokens + n > budget:
                break
            self.waiting.popitem(last=False)
            req.slot, req.status = self.free.pop(0), Status.RUNNING
            self.running[req.slot] = req
            batch.append(req)
            tokens += n
        return batch

    def release(self, req: Request) -> None:
        """A finished request leaves its slot (the next step may refill it)."""
        del self.running[req.slot]
        self.free.append(req.slot)
        self.free.sort()

    def abort(self, req: Request) -> bool:
        """Take `req` out of the queue or its slot; False when it is in neither (finished, or not
        added here). Identity, not ==: a Request's == compares its fields."""
        if self.running.get(req.slot) is req:
            self.release(req)
        elif self.waiting.get(id(req)) is req:
            del self.waiting[id(req)]
        else:
            return False
        req.status = Status.ABORTED
        return True

    def abort_all(self) -> list[Request]:
        gone = list(self.running.values()) + list(self.waiting.values())
        for req in gone:
            req.status = Status.ABORTED
        self.running.clear()
        self.waiting.clear()
        self.free = list(range(self.num_slots))
        return gone
