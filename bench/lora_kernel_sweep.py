"""The decode LoRA kernel's tiling on a GPU: `python bench/lora_kernel_sweep.py [OUT.json]`.

For each fused weight of Qwen3-4B (q/k/v, gate/up, o, down) at batch 1 and 20, bf16, two
senders of rank 4: the time of `W x` plus the LoRA part as the engine runs it at decode
(model/lora_kernel.py, one Triton kernel) for each tiling (block_n, block_k, num_warps), and
as the bmm reference runs it (one bmm for u = A x, one baddbmm_ per B block:
lora_linear.lora_linear_ref), and as "bmm+expand" (a bmm for u, then the kernel with the default
tiling only expanding). Each is captured as a CUDA graph of 20 calls and replayed, so
the times are the device's, launches included as a decode step pays them. Prints one line per
case with the best tiling; with OUT.json also writes every time, rewritten after each case (a
time limit keeps what finished). The default tiling is block_n 128, block_k 256, 4 warps; what
wins here decides whether it changes. Needs CUDA.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

WEIGHTS = {"qkv": (2560, (4096, 1024, 1024)), "gate_up": (2560, (9728, 9728)), "o": (4096, (2560,)),
           "down": (9728, (2560,))}  # input size, output blocks
RANK, CALLS = 8, 20
TILINGS = list(itertools.product((64, 128, 256), (256, 512), (4, 8)))  # block_n, block_k, num_warps


def graph_time(fn) -> float:
    """Seconds per call of `fn`, replayed as a CUDA graph of CALLS calls (best of 5 replays)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS):
            fn()
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3 / CALLS)
    return best


def main(out: str | None = None) -> None:
    from minitflow.model.lora_kernel import lora_decode_
    from minitflow.model.lora_linear import lora_linear_ref
    dev, dt = torch.device("cuda"), torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    results = []
    for (name, (k, outs)), batch in itertools.product(WEIGHTS.items(), (1, 20)):
        x = torch.randn(batch, 1, k, generator=g, device=dev).to(dt)
        w = (0.02 * torch.randn(sum(outs), k, generator=g, device=dev)).to(dt)
        a = (0.02 * torch.randn(batch, RANK * len(outs), k, generator=g, device=dev)).to(dt)
        blocks = tuple((0.02 * torch.randn(batch, o, RANK, generator=g, device=dev)).to(dt) for o in outs)
        want = lora_linear_ref(x, w, (a, blocks))
        row = {"weight": name, "batch": batch, "bmm_s": graph_time(lambda: lora_linear_ref(x, w, (a, blocks)))}
        row["plain_s"] = graph_time(lambda: F.linear(x, w))
        times = {}
        for bn, bk, nw in TILINGS:
            got = lora_decode_(F.linear(x, w), x, a, blocks, block_n=bn, block_k=bk, num_warps=nw)
            torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
            times[f"{bn}/{bk}/{nw}"] = graph_time(
                lambda: lora_decode_(F.linear(x, w), x, a, blocks, block_n=bn, block_k=bk, num_warps=nw))
        best = min(times, key=times.get)

        def bmm_expand():  # lora_linear.DECODE_LORA "bmm+expand": cuBLAS computes u, the kernel expands
            return lora_decode_(F.linear(x, w), x, a, blocks, u=torch.bmm(x, a.transpose(1, 2)))
        torch.testing.assert_close(bmm_expand(), want, rtol=2e-2, atol=2e-2)
        row.update(kernel_s=times, best=best, default=times["128/256/4"], bmm_expand_s=graph_time(bmm_expand))
        results.append(row)
        print(f"{name:8s} b{batch:<3d} W x {row['plain_s'] * 1e6:7.1f} us | +LoRA bmm {row['bmm_s'] * 1e6:7.1f} us"
              f" | kernel default {row['default'] * 1e6:7.1f} us, best {times[best] * 1e6:7.1f} us ({best})"
              f" | bmm+expand {row['bmm_expand_s'] * 1e6:7.1f} us", flush=True)
        if out:  # after each case: gpu_session.sh's time limit may cut the sweep short
            save(results, out)


def save(results: list[dict], out: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(os.path.abspath(out)), delete=False) as f:
        json.dump(results, f, indent=1)
    os.replace(f.name, out)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit("lora_kernel_sweep: needs CUDA")
    main(*sys.argv[1:2])
