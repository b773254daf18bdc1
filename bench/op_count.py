"""Tensor ops one decode step launches per layer, with and without LoRA, and per sampling
step: op by op (the CPU path), and as the CUDA path launches them.

    python bench/op_count.py

Counts every non-view ATen op of a decode step (bf16, batch 1, 256 cached tokens) with a
dispatch mode, for 2 and 3 layers: the difference is what each layer adds, the rest what a
step costs once (embedding, mask, rotary tables, final norm, lm_head). On CUDA each op is at least one kernel
launch, also inside a CUDA graph. The "CUDA path" count takes each call of a fused elementwise
function (model/fused.py: `fused_on_cuda`, one torch.compile kernel on a GPU) as one kernel
instead of its ops, the LoRA part of a decode projection, and q/k norm + RoPE with the cache write
of keys and values, as the one Triton kernel each is there (model/lora_kernel.py,
model/qkv_kernel.py), and leaves out `to` calls that convert nothing. LoRA is counted both ways
the engine can hold it at decode: as factor pairs (lora_linear.DECODE_LORA "kernel") and folded
beneath the weights ("folded": u from the projection's matmul, B u added by the next kernel). A
fused function with reductions or a scan over a long row (the sampler's nucleus steps) may
compile to a few kernels rather than one. It is the proxy this CPU
machine can measure for the launch-bound graph step; what a kernel fewer saves on a GPU is
measured there (bench/gpu_session.sh). The sampling step is counted for one row of Qwen3's
vocabulary at the official settings (temperature 0.6, top-p 0.95) and with top-k 20, and one
generator call (one question: two sender rows of 120 condition tokens) at Qwen3-4B's shape with
the official dimensions, on the meta device (shapes only), with every stage whole and in pieces.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchlib import TINY, random_lora, random_model
from minitflow.engine import sampler
from minitflow.engine.sampler import Sampler, SamplingParams
from minitflow.model import attention, layers, qwen3
from minitflow.model.kv_cache import KVCache
from minitflow.model.layers import qk_norm_rope
from minitflow.model.lora_linear import Folded, expanded, project
from minitflow.tflow import generator as pg

VIEWS = {"view", "transpose", "t", "unsqueeze", "expand", "slice", "select", "split", "split_with_sizes",
         "_unsafe_view", "chunk", "permute", "alias", "detach", "unbind", "reshape", "squeeze", "as_strided",
         "lift_fresh", "detach_", "narrow", "flatten", "unflatten", "new_empty", "empty", "empty_strided"}
# views and allocations (no kernel), and the bookkeeping of this script's own torch.tensor inputs


class Count(TorchDispatchMode):
    """Counts ATen ops; inside a fused function (when `fused` is set) it counts the call once."""

    def __init__(self, fused: bool):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.fused, self.inside = fused, 0

    @contextlib.contextmanager
    def uncounted(self):
        """The ops run inside belong to one kernel already counted (or to none)."""
        self.inside += 1
        try:
            yield
        finally:
            self.inside -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        out = func(*args, **(kwargs or {}))
        no_copy = name in ("to", "_to_copy") and isinstance(out, torch.Tensor) and out is args[0]
        if not self.inside and not (self.fused and no_copy):
            self.ops[name] += 1
        return out


def _counted(mode: Count, fn):
    """`fn` (a `fused_on_cuda` function) counted as one kernel by `mode`."""
    def call(*args):
        mode.ops[f"fused:{fn.eager.__name__}"] += 1
        with mode.uncounted():
            return fn.eager(*args)
    return call


def _counted_lora(mode: Count):
    """`project` as the CUDA path runs it at decode: `W x`, then for factor pairs one Triton
    kernel for the LoRA part (model/lora_kernel.py), counted once; a folded LoRA's B u is left to
    the next kernel, as on CUDA."""
    import torch.nn.functional as F
    from minitflow.model.lora_linear import lora_linear_ref

    def call(x, weight, lora=None):
        if lora is None or isinstance(lora, Folded) or x.shape[1] != 1:
            return project(x, weight, lora)
        y = F.linear(x, weight)  # counted: the CUDA path runs it too
        mode.ops["triton:lora_decode"] += 1
        with mode.uncounted():
            return y + (lora_linear_ref(x, weight, lora) - y), None  # the LoRA part, uncounted
    return call


def _counted_qkv(mode: Count, update):
    """q/k norm + RoPE and the cache write as the CUDA path runs them with a cache: one Triton
    kernel (model/qkv_kernel.py), counted at the norm, which also adds a folded LoRA's pending B u
    (`expand` before it counts nothing); the write counts nothing more but the index arrays the
    kernel reads, built (and counted) at the first layer."""
    def uncounted_expand(*args):
        with mode.uncounted():
            return expanded(*args)

    def norm(*args):
        mode.ops["triton:qkv_to_cache"] += 1
        with mode.uncounted():
            return qk_norm_rope.eager(*args)

    def write(cache, layer, k, v, targets, kv_len, rows=None):
        targets.flat()
        with mode.uncounted():
            return update(cache, layer, k, v, targets, kv_len, rows)
    return norm, write, uncounted_expand


def _uncounted(mode: Count, fn):
    """`fn` run without counting its ops: work the CUDA path does not launch."""
    def call(*args):
        with mode.uncounted():
            return fn(*args)
    return call


@contextlib.contextmanager
def counting(mode: Count):
    """`mode` active; with `mode.fused`, every fused function counted as one kernel (the model
    and the sampler look them up as module globals at each call)."""
    update, look_past, expand, check = KVCache.update, sampler._look_past, layers.expand, qwen3.check_positions
    saved = [(m, n, f) for m in (attention, layers, qwen3, sampler, pg) for n, f in vars(m).items()
             if callable(f) and hasattr(f, "eager")]
    try:
        if mode.fused:
            for m, n, f in saved:
                setattr(m, n, _counted(mode, f))
            sampler._look_past = lambda *_: True  # as on CUDA: the top-k path's tie pass always runs
            layers.project = _counted_lora(mode)
            layers.qk_norm_rope, KVCache.update, layers.expand = _counted_qkv(mode, update)
            # host positions (this CPU run's) are checked with a sync; a GPU's are on the device, unchecked
            qwen3.check_positions = _uncounted(mode, check)
        with torch.inference_mode(), mode:
            yield
    finally:
        for m, n, f in saved:
            setattr(m, n, f)
        sampler._look_past = look_past
        layers.project = project
        KVCache.update = update
        layers.expand = expand
        layers.qk_norm_rope = qk_norm_rope
        qwen3.check_positions = check


def _ops(mode: Count) -> collections.Counter:
    return collections.Counter({k: v for k, v in mode.ops.items() if k not in VIEWS})


def folded(model, lora):
    """`lora` (batch 1) as an engine holds it under DECODE_LORA "folded": each A in the spare
    rows beneath its weight (one slot)."""
    from minitflow.model.lora import LoraWeights
    layers_ = []
    for layer, groups in zip(model.layers, lora.layers):
        out = {}
        for k, (a, bs) in groups.items():
            full = layer.spare_rows(k, a.shape[1])
            full[full.shape[0] - a.shape[1]:] = a[0]
            out[k] = Folded(full, full.shape[0] - a.shape[1], 0, bs)
        layers_.append(out)
    return LoraWeights(layers_, 1)


def step_ops(layers_: int, with_lora: bool | str, fused: bool) -> collections.Counter:
    """`with_lora`: False, True (factor pairs) or "folded"."""
    cfg = dataclasses.replace(TINY, num_hidden_layers=layers_)
    model = random_model(cfg, torch.bfloat16, "cpu", max_positions=512)
    lora = random_lora(cfg, 1, torch.device("cpu"), torch.bfloat16) if with_lora else None
    if with_lora == "folded":
        lora = folded(model, lora)
    cache = KVCache(cfg.num_hidden_layers, 1, 300, cfg.num_key_value_heads, cfg.head_dim, torch.bfloat16, "cpu")
    mode = Count(fused)
    with counting(mode):
        model(torch.tensor([[5]]), torch.tensor([[256]]), cache, 257, lora=lora)
    return _ops(mode)


def sampling_ops(params: SamplingParams, fused: bool) -> collections.Counter:
    """One sampling step of one row over Qwen3's vocabulary."""
    logits = torch.randn(1, 151936, generator=torch.Generator().manual_seed(0))
    s = Sampler([params], torch.device("cpu"))
    s.args(None, [0], logits.shape[1])  # the token-id hash table, built once per vocabulary
    mode = Count(fused)
    with counting(mode):
        s.sample(logits, None, [0])
    return _ops(mode)


def generator_ops(piece: int | None, fused: bool) -> collections.Counter:
    """One generator call for one question at Qwen3-4B's shape (official dimensions, bf16)."""
    from minitflow.model.config import QWEN3_4B
    from minitflow.tflow.checkpoint import arch_for, random_generator
    from minitflow.tflow.condition import generator_factors
    with torch.device("meta"):
        gen = random_generator(QWEN3_4B, seed=0, arch=arch_for(QWEN3_4B)).to(torch.bfloat16)
    mode = Count(fused)
    with counting(mode):
        generator_factors(gen, torch.zeros(2, 120, QWEN3_4B.hidden_size, device="meta"), None, piece)
    return _ops(mode)


def engine_step_ops(kind: str, fused: bool) -> collections.Counter:
    """One engine step at Qwen3-4B's 36 layers (tiny widths, float32): `lora`, the step that
    admits a LoRA request (its factors copied into its slot), prefills its 100-token prompt and
    runs its first decode step, the LoRA buffers made by an earlier request; `sender`, a tflow
    sender's prefill-only request over 170 tokens capturing all 37 hidden states, summed with
    the layer aggregator's weights as the layers run."""
    from minitflow import LLM, Capture
    cfg = dataclasses.replace(TINY, num_hidden_layers=36)
    model = random_model(cfg, torch.float32, "cpu", max_positions=512)
    llm = LLM(model, eos_token_ids=[], num_slots=2, prefix_cache_bytes=0)
    with torch.inference_mode():
        if kind == "lora":
            lora = random_lora(cfg, 1, torch.device("cpu"), torch.float32)
            llm.generate([list(range(3, 40))], SamplingParams(max_new_tokens=2), lora=lora)
            llm.add_request(list(range(1, 101)), SamplingParams(max_new_tokens=4), lora=lora)
        else:
            weights = torch.softmax(torch.arange(37.0), 0)
            llm.add_request(list(range(1, 171)), generate=False,
                            capture=Capture(list(range(37)), [20], [160], layer_weights=weights))
    mode = Count(fused)
    with counting(mode):
        llm.step()
    return _ops(mode)


def ops_per_layer(with_lora: bool | str, fused: bool) -> tuple[dict[str, int], dict[str, int]]:
    """(ops each layer adds, ops a step runs once)."""
    two, three = step_ops(2, with_lora, fused), step_ops(3, with_lora, fused)
    layer = three - two
    return dict(layer), dict(two - layer - layer)


if __name__ == "__main__":
    for fused in (False, True):
        for with_lora in (False, True, "folded"):
            layer, once = ops_per_layer(with_lora, fused)
            what = {False: "without LoRA", True: "with LoRA", "folded": "with folded LoRA"}[with_lora]
            print(f"{'CUDA path' if fused else 'op by op'}, {what}: "
                  f"{sum(layer.values())} ops per layer {sorted(layer.items())}; "
                  f"{sum(once.values())} once per step {sorted(once.items())}")
    official = SamplingParams(temperature=0.6, top_p=0.95, seed=1)
    for name, params in (("top-p 0.95", official), ("top-k 20, top-p 0.95", SamplingParams(
            temperature=0.6, top_p=0.95, top_k=20, seed=1))):
        for fused in (False, True):
            ops = sampling_ops(params, fused)
            print(f"sampling, {name}, {'CUDA path' if fused else 'op by op'}: {sum(ops.values())} ops "
                  f"{sorted(ops.items())}")
    for kind, what in (("lora", "LoRA request's admission, prefill and first decode step"),
                       ("sender", "tflow sender's capturing prefill")):
        for fused in (False, True):
            ops = engine_step_ops(kind, fused)
            print(f"{what}, 36 layers, {'CUDA path' if fused else 'op by op'}: {sum(ops.values())} ops "
                  f"{sorted(ops.items(), key=lambda kv: -kv[1])[:8]}")
    for piece in (None, 2 * pg.PIECE_TOKENS, pg.PIECE_TOKENS):
        for fused in (False, True):
            ops = generator_ops(piece, fused)
            print(f"generator, one question, Qwen3-4B, {f'pieces of {piece}' if piece else 'whole stages'}, "
                  f"{'CUDA path' if fused else 'op by op'}: {sum(ops.values())} ops "
                  f"{sorted(ops.items(), key=lambda kv: -kv[1])[:6]}")
