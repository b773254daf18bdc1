"""Keys and values of token prefixes, kept between requests so that only the suffix of a
prompt is prefilled (role prompts, few-shot blocks: the same for every question).

Prompts are cut into blocks of BLOCK tokens; a block's key is (its parent's entry id, its
tokens), so a lookup walks the chain from the first block and matches exactly (no hashing
collisions to reason about). A first block's parent is its chain's `root`: 0 for KV that depends
on the tokens alone, another (negative) number for KV that also depends on something else, e.g.
a set of LoRA factors. Entries are evicted least recently used first within a byte
budget; a lookup or an insert touches a chain from its last block to its first, so leaves go
before the prefixes they extend (a block evicted before its children would leave them stored
but unreachable, holding the budget for nothing).

A block may also keep a request's condition rows (the capture's layer sum at each position,
for one set of layer weights): a capture whose span starts inside a shared prefix (the 4-shot
block of minerva_math lies inside the sender's question) then reuses the prefix's KV *and*
its rows of the condition. A row at position p depends only on tokens <= p, like the KV.
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
    cond: dict = None  # condition key -> (first valid row, (BLOCK, hidden) float32)

    def __post_init__(self):
        self.cond = {}

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size() + \
            sum(t.numel() * t.element_size() for _, t in self.cond.values())


def _accept(span: tuple[object, int] | None):
    """lookup's test of a block at `a` for span = (condition key, span start s): one reaching past
    s must hold that condition's rows from s on (None: every block)."""
    if span is None:
        return None
    ckey, s = span
    return lambda a, e: a + BLOCK <= s or (ckey in e.cond and e.cond[ckey][0] <= max(s - a, 0))


class PrefixCache:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries: OrderedDict[tuple[int, tuple[int, ...]], _Entry] = OrderedDict()
        self.used = 0
        self._ids = itertools.count(1)

    def _chain(self, ids: list[int], limit: int, accept=None, root: int = 0
               ) -> list[tuple[tuple[int, tuple[int, ...]], _Entry]]:
        found, parent = [], root
        for start in range(0, limit - BLOCK + 1, BLOCK):
            key = (parent, tuple(ids[start:start + BLOCK]))
            entry = self.entries.get(key)
            if entry is None or (accept is not None and not accept(start, entry)):
                break
            found.append((key, entry))
            parent = entry.id
        return found

    def lookup(self, ids: list[int], limit: int, span: tuple[object, int] | None = None, root: int = 0,
               found: list | None = None
               ) -> tuple[int, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The longest cached prefix of ids[:limit] in whole blocks: (length, k, v, cond) with
        k/v (layers, kv_heads, length, head_dim), or (0, None, None, None). With span = (condition
        key, span start s), blocks reaching past s must hold that condition's rows from s on, and
        `cond` holds the rows of positions [s, length) (None when length <= s). `found`: what
        `chain` gave for the same arguments with no insert or eviction since (the engine's admission
        walked it already)."""
        if self.budget <= 0:
            return 0, None, None, None
        if found is None:
            found = self._chain(ids, limit, _accept(span), root)
        if not found:
            return 0, None, None, None
        self._touch(found)
        n = len(found) * BLOCK
        k = torch.cat([e.k for _, e in found], dim=2)
        v = torch.cat([e.v for _, e in found], dim=2)
        cond = None
        if span is not None and n > span[1]:
            ckey, s = span
            cond = torch.cat([e.cond[ckey][1][max(s - i * BLOCK, 0):] for i, (_, e) in enumerate(found)
                              if (i + 1) * BLOCK > s])
        return n, k, v, cond

    def chain(self, ids: list[int], limit: int, span: tuple[object, int] | None = None, root: int = 0) -> list:
        """The blocks `lookup` would take now, without copying the KV or marking them used: valid
        for `lookup(found=...)` until the next insert or eviction."""
        return [] if self.budget <= 0 else self._chain(ids, limit, _accept(span), root)

    def insert(self, ids: list[int], read, cond: tuple[object, int, torch.Tensor] | None = None,
               block_bytes: int | None = None, root: int = 0) -> None:
        """Store the whole blocks of `ids` not stored yet; `read(start, end)` returns their (k, v)
        from the slot that just computed them. `cond` = (condition key, span start s, rows (S, H)
        of positions s, s+1, ...): blocks inside the span keep their rows, stored or not yet (replacing
        rows of that key from a later first row).
        `block_bytes` (one block's k and v; the engine's KV cache knows it) lets a block that
        cannot fit be refused before `read` copies it: a full cache then copies nothing."""
        if self.budget <= 0:
            return
        found = self._chain(ids, len(ids), root=root)
        self._touch(found)  # room for the new blocks comes from other chains first
        chain = {key for key, _ in found}
        parent = found[-1][1].id if found else root
        for start in range(len(found) * BLOCK, len(ids) - BLOCK + 1, BLOCK):
            if block_bytes is not None and not self._room_for(block_bytes, chain):
                break
            k, v = read(start, start + BLOCK)
            entry = _Entry(next(self._ids), k, v)
            if not self._room_for(entry.nbytes, chain):
                break
            key = (parent, tuple(ids[start:start + BLOCK]))
            self.entries[key] = entry
            self.used += entry.nbytes
            found.append((key, entry))
            chain.add(key)
            parent = entry.id
        self._touch(found)  # new blocks were appended after their parents: leaves first again
        if cond is None:
            return
        ckey, s, rows = cond
        for i, (key, entry) in enumerate(found):
            a = i * BLOCK
            first = max(s - a, 0)
            held = entry.cond.get(ckey)
            if a + BLOCK <= s or a + BLOCK > s + rows.shape[0] or key not in self.entries or \
                    (held is not None and held[0] <= first):
                continue
            # rows a later-starting span stored (from a later first row) are replaced by these, which
            # cover them too: else a span starting earlier never took this block from the cache
            block = rows.new_zeros(BLOCK, rows.shape[1])
            block[first:] = rows[max(a - s, 0): a + BLOCK - s]
            entry.cond[ckey] = (first, block)
            gone = 0 if held is None else held[1].numel() * held[1].element_size()
            self.used += block.numel() * block.element_size() - gone
        self._evict(self.budget)

    def _room_for(self, nbytes: int, chain: set) -> bool:
        """Make room for a block of `nbytes` by evicting outside `chain`; False when the rest of the
        prompt does not fit beside its own prefix."""
        return nbytes <= self.budget and self._evict(self.budget - nbytes, keep=chain)

    def _touch(self, chain: list[tuple[tuple[int, tuple[int, ...]], _Entry]]) -> None:
        """Mark a chain used, its first block last: each block stays more recent than the
        blocks that extend it, so eviction takes leaves first."""
        for key, _ in reversed(chain):
            self.entries.move_to_end(key)

    def _evict(self, room: int, keep: set = frozenset()) -> bool:
        """Drop least recently used entries until at most `room` bytes are used, stopping at
        one in `keep` (the chain being stored); whether that made the room."""
        while self.used > room and self.entries:
            key = next(iter(self.entries))
            if key in keep:
                return False
            self.used -= self.entries.pop(key).nbytes
        return self.used <= room

    def clear(self) -> None:
        self.entries.clear()
        self.used = 0
