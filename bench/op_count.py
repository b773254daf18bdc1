"""Tensor ops one decode step launches per layer, op by op (the CPU path), with and without LoRA.

    python bench/op_count.py

Counts every non-view ATen op of a 2-layer model's decode step with a dispatch mode and
divides by the layers. On CUDA each op is at least one kernel launch, also inside a CUDA graph;
the fused elementwise functions (model/layers.py: rms_norm, norm_rope, silu_mul) fold the
RMSNorm, q/k-norm + RoPE and SiLU·up ops (pow, mean, add, rsqrt, mul, to, neg, cat, silu)
into 5 kernels per layer.
"""

from __future__ import annotations

import collections
import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchlib import TINY, random_lora, random_model
from minitflow.model.kv_cache import KVCache

VIEWS = {"view", "transpose", "t", "unsqueeze", "expand", "slice", "select", "split", "split_with_sizes",
         "_unsafe_view", "chunk", "permute", "alias", "detach", "unbind", "reshape", "squeeze", "as_strided",
         "lift_fresh", "detach_"}  # views, and the bookkeeping of this script's own torch.tensor inputs


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def ops_per_layer(with_lora: bool) -> tuple[float, dict[str, int]]:
    cfg = dataclasses.replace(TINY, num_hidden_layers=2)
    model = random_model(cfg, torch.float32, "cpu", max_positions=512)
    lora = random_lora(cfg, 1, torch.device("cpu"), torch.float32) if with_lora else None
    cache = KVCache(cfg.num_hidden_layers, 1, 300, cfg.num_key_value_heads, cfg.head_dim, torch.float32, "cpu")
    with torch.inference_mode(), Count() as c:
        model(torch.tensor([[5]]), torch.tensor([[256]]), cache, 257, lora=lora)
    ops = {k: v for k, v in c.ops.items() if k not in VIEWS}
    return sum(ops.values()) / cfg.num_hidden_layers, ops


if __name__ == "__main__":
    for with_lora in (False, True):
        n, ops = ops_per_layer(with_lora)
        print(f"{'with' if with_lora else 'without'} LoRA: {n:.1f} ops per layer; whole step: {sorted(ops.items())}")
