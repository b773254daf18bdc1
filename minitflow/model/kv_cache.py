"""A preallocated KV cache of slots: (layers, slots, kv_heads, max_len, head_dim).

A slot is one row of the cache, owned by one running request. Rows write at their own
positions, so prompts of different lengths share one cache and one decode step. Positions
past a row's length hold junk that the attention mask hides until the row overwrites them.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, batch: int, max_len: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (num_layers, batch, kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.batch, self.max_len = batch, max_len

    @staticmethod
    def targets(positions: torch.Tensor, rows: torch.Tensor | None = None,
                real: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple:
        """Where a forward writes, computed once for all its layers: (cache rows, positions,
        which (batch, token) pairs to take). `rows` (B,) are the batch rows' cache rows (default:
        row b is slot b); `real` (batch indices, token indices) lists the real tokens of a
        right-padded batch, the only ones written."""
        b, t = positions.shape
        index = torch.arange(b, device=positions.device) if rows is None else rows
        r, p = index[:, None].expand(b, t), positions
        if real is None:
            return r, p, None
        return r[real], p[real], real

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, targets: tuple, kv_len: int,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, Hkv, T, D) at this forward's `targets`. Returns the rows' first kv_len
        positions: a view when rows is None (the first B slots), a gathered copy otherwise."""
        r, p, sel = targets
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)  # (B, T, Hkv, D)
        if sel is not None:
            kt, vt = kt[sel], vt[sel]
        self.k[layer][r, :, p] = kt
        self.v[layer][r, :, p] = vt
        b = k.shape[0]
        if rows is None:
            return self.k[layer][:b, :, :kv_len], self.v[layer][:b, :, :kv_len]
        return self.k[layer][rows, :, :kv_len], self.v[layer][rows, :, :kv_len]

    def read(self, slot: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of one slot's keys and values at positions [start, end): (layers, Hkv, n, D) each."""
        return self.k[:, slot, :, start:end].clone(), self.v[:, slot, :, start:end].clone()

    def write(self, slot: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Copy keys/values (layers, Hkv, n, D) into a slot from `start` (a cached prefix, or KV
        handed over from another request)."""
        n = k.shape[2]
        self.k[:, slot, :, start:start + n] = k
        self.v[:, slot, :, start:start + n] = v
