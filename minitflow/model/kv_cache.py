"""A preallocated KV cache of slots: (layers, slots, kv_heads, max_len, head_dim).

A slot is one row of the cache, owned by one running request. Rows write at their own
positions, so prompts of different lengths share one cache and one decode step. Positions
past a row's length hold junk that the attention mask hides until the row overwrites them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Sequence

import torch

from minitflow.model.transfer import host_to_device


def real_tokens(lengths: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(batch indices, token indices) of the real tokens of a batch right-padded to the longest
    of `lengths`, row by row: the `real` argument of a forward. Built on the host and moved
    without a sync; None when no row is padded (every token is written)."""
    if min(lengths) == max(lengths):
        return None
    rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    tokens = torch.cat([torch.arange(n) for n in lengths])
    return host_to_device(rows, device), host_to_device(tokens, device)


@dataclass
class WriteTargets:
    """Where one forward writes its keys and values: cache rows and positions, (B, T) for every
    token or (N,) for the `sel` = (batch indices, token indices) of a padded batch's real ones."""

    rows: torch.Tensor
    positions: torch.Tensor
    sel: tuple[torch.Tensor, torch.Tensor] | None
    _flat: tuple | None = field(default=None, repr=False)

    def flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch index, token index, cache row, position) of each written token, (N,) each and
        contiguous: what the q/k/v kernel reads; built at the first layer, reused by the rest."""
        if self._flat is None:
            if self.sel is None:
                b, t = self.positions.shape
                bt = torch.arange(b * t, device=self.positions.device)
                flat = (bt // t, bt % t, self.rows.reshape(-1), self.positions.reshape(-1))
            else:
                flat = (*self.sel, self.rows, self.positions)
            # the kernel reads each with stride 1; an expanded row index reshapes to stride 0 and
            # nonzero(as_tuple=True) gives strided views
            self._flat = tuple(i.contiguous() for i in flat)
        return self._flat


def kv_bytes(num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, slots: int = 1,
             positions: int = 1) -> int:
    """Bytes of a KVCache of `slots` rows of `positions` each, keys and values (Qwen3-4B in
    bfloat16: 36 layers x 8 KV heads x 128 x 2 x 2 bytes = 144 KiB per slot-position)."""
    return 2 * num_layers * slots * kv_heads * positions * head_dim * dtype.itemsize


class KVCache:
    def __init__(self, num_layers: int, batch: int, max_len: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (num_layers, batch, kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.batch, self.max_len = batch, max_len

    @staticmethod
    def targets(positions: torch.Tensor, rows: torch.Tensor | None = None,
                real: tuple[torch.Tensor, torch.Tensor] | None = None) -> "WriteTargets":
        """Where a forward writes, computed once for all its layers. `rows` (B,) are the batch
        rows' cache rows (default: row b is slot b); `real` (batch indices, token indices) lists
        the real tokens of a right-padded batch, the only ones written."""
        b, t = positions.shape
        index = torch.arange(b, device=positions.device) if rows is None else rows
        r, p = index[:, None].expand(b, t), positions
        if real is None:
            return WriteTargets(r, p, None)
        return WriteTargets(r[real], p[real], real)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, targets: "WriteTargets", kv_len: int,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, Hkv, T, D) at this forward's `targets` (an `index_put_` each; on CUDA the
        layer writes through one Triton kernel instead, model/qkv_kernel.py), then `attended`."""
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)  # (B, T, Hkv, D)
        if targets.sel is not None:
            kt, vt = kt[targets.sel], vt[targets.sel]
        self.k[layer][targets.rows, :, targets.positions] = kt
        self.v[layer][targets.rows, :, targets.positions] = vt
        return self.attended(layer, kv_len, rows, k.shape[0])

    def attended(self, layer: int, kv_len: int, rows: torch.Tensor | None, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values a forward of `b` rows attends over: the rows' first kv_len
        positions, a view when rows is None (the first b slots), a gathered copy otherwise."""
        if rows is None:
            return self.k[layer][:b, :, :kv_len], self.v[layer][:b, :, :kv_len]
        return self.k[layer][rows, :, :kv_len], self.v[layer][rows, :, :kv_len]

    def nbytes(self, n: int) -> int:
        """Bytes of one slot's keys and values over `n` positions: what read() copies, known without copying."""
        layers, _, kv_heads, _, head_dim = self.k.shape
        return 2 * layers * kv_heads * n * head_dim * self.k.element_size()

    def read(self, slot: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of one slot's keys and values at positions [start, end): (layers, Hkv, n, D) each."""
        return self.k[:, slot, :, start:end].clone(), self.v[:, slot, :, start:end].clone()

    def write(self, slot: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Copy keys/values (layers, Hkv, n, D) into a slot from `start` (a cached prefix, or KV
        handed over from another request)."""
        n = k.shape[2]
        self.k[:, slot, :, start:start + n] = k
        self.v[:, slot, :, start:start + n] = v
