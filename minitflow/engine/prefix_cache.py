"""Keys and values of token prefixes, kept between requests so that only the suffix of a
prompt is prefilled (role prompts, few-shot blocks: the same for every question).

Prompts are cut into blocks of BLOCK tokens; a block's key is (its parent's entry id, its
tokens), so a lookup walks the chain from the first block and matches exactly (no hashing
collisions to reason about). Entries are evicted least recently used first within a byte
budget; a lookup touches a chain from its last block to its first, so leaves go before the
prefixes they extend.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass

import torch

BLOCK = 16


@dataclass
class _Entry:
    id: int
    k: torch.Tensor  # (layers, kv_heads, BLOCK, head_dim)
    v: torch.Tensor

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


class PrefixCache:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries: OrderedDict[tuple[int, tuple[int, ...]], _Entry] = OrderedDict()
        self.used = 0
        self._ids = itertools.count(1)
        self.hits = self.lookups = 0  # tokens found / tokens asked for, since creation

    def _chain(self, ids: list[int], limit: int) -> list[tuple[tuple[int, tuple[int, ...]], _Entry]]:
        found, parent = [], 0
        for start in range(0, limit - BLOCK + 1, BLOCK):
            key = (parent, tuple(ids[start:start + BLOCK]))
            entry = self.entries.get(key)
            if entry is None:
                break
            found.append((key, entry))
            parent = entry.id
        return found

    def lookup(self, ids: list[int], limit: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """The longest cached prefix of ids[:limit] in whole blocks: (length, k, v) with k/v
        (layers, kv_heads, length, head_dim), or (0, None, None)."""
        if self.budget <= 0:
            return 0, None, None
        found = self._chain(ids, limit)
        self.lookups += limit
        if not found:
            return 0, None, None
        for key, _ in reversed(found):
            self.entries.move_to_end(key)
        self.hits += len(found) * BLOCK
        k = torch.cat([e.k for _, e in found], dim=2)
        v = torch.cat([e.v for _, e in found], dim=2)
        return len(found) * BLOCK, k, v

    def insert(self, ids: list[int], read) -> None:
        """Store the whole blocks of `ids` not stored yet; `read(start, end)` returns their (k, v)
        from the slot that just computed them."""
        if self.budget <= 0:
            return
        found = self._chain(ids, len(ids))
        parent = found[-1][1].id if found else 0
        for start in range(len(found) * BLOCK, len(ids) - BLOCK + 1, BLOCK):
            k, v = read(start, start + BLOCK)
            entry = _Entry(next(self._ids), k, v)
            if entry.nbytes > self.budget:
                return
            self._evict(self.budget - entry.nbytes)
            self.entries[(parent, tuple(ids[start:start + BLOCK]))] = entry
            self.used += entry.nbytes
            parent = entry.id

    def _evict(self, room: int) -> None:
        while self.used > room and self.entries:
            _, entry = self.entries.popitem(last=False)
            self.used -= entry.nbytes

    def clear(self) -> None:
        self.entries.clear()
        self.used = 0
