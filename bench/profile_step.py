"""Where a decode step's device time goes: kernels per step and the costliest kernels, with and
without LoRA, at batch 1 and 20 (8 on CPU).

    python bench/profile_step.py [STEPS]        (default 5)

The bare model call of one decode token per row over 256 cached tokens (the eager step that
the engine captures as a CUDA graph; LoRA: 2 senders x rank 4 on all 7 projections), under
torch.profiler. On CUDA it prints the kernels launched per step, their summed device time per
step and the ten kernels that take most of it: set the summed time beside the graph step's
wall time (bench/test_micro.py::test_decode_step) to see how much of a step is kernels and
how much is the gaps between them, and how much LoRA's kernels add. On CPU the same table
lists operators and their CPU time. Shape: MINITFLOW_BENCH_SHAPE as in the benchmarks.
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from benchlib import make_setup, new_cache, random_ids, random_lora, random_model
from minitflow.model import lora_linear

CONTEXT = 256


def lora_path(cuda: bool) -> str:
    """What the LoRA rows below run: on CUDA lora_linear.DECODE_LORA (gpu_session.sh passes the
    decode benchmark's fastest), except that "folded" needs an engine's buffers beneath the
    weights, so a bare model call runs it as "bmm+expand"; on CPU the bmm reference."""
    if not cuda:
        return "bmm (the CPU path)"
    path = lora_linear.DECODE_LORA
    return "bmm+expand (a bare model call cannot fold: DECODE_LORA folded)" if path == "folded" else path


def main(steps: int) -> None:
    setup = make_setup()
    cfg, dev, dt = setup.cfg, setup.device, setup.dtype
    cuda = dev.type == "cuda"
    model = random_model(cfg, dt, dev, max_positions=CONTEXT + 8)
    print(f"{setup.name} shape, {dt}, {torch.cuda.get_device_name() if cuda else 'CPU'}, {steps} steps per row, "
          f"LoRA at decode: {lora_path(cuda)}")
    for batch in setup.decode_batches:
        lora = random_lora(cfg, batch, dev, dt)
        cache = new_cache(cfg, batch, CONTEXT + 1, dev, dt)
        with torch.inference_mode():
            model(random_ids(cfg, batch, CONTEXT, dev), torch.arange(CONTEXT, device=dev)[None].expand(batch, -1),
                  cache, CONTEXT, need_logits=False)
        tok = random_ids(cfg, batch, 1, dev, seed=1)
        pos = torch.full((batch, 1), CONTEXT, device=dev)
        for lo, name in ((None, "no LoRA"), (lora, "LoRA")):
            def step():
                model(tok, pos, cache, CONTEXT + 1, lora=lo)
            with torch.inference_mode():
                step()  # warm-up: workspaces, fused kernels' compilation
                if cuda:
                    torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
                    for _ in range(steps):
                        step()
                    if cuda:
                        torch.cuda.synchronize()
            events = prof.key_averages()
            if cuda:
                rows = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
                took, what = (lambda e: e.self_device_time_total), "kernels"
            else:
                rows = [e for e in events if e.key.startswith("aten::")]
                took, what = (lambda e: e.self_cpu_time_total), "aten ops"
            print(f"\n== batch {batch}, {name}: {sum(e.count for e in rows) / steps:.0f} {what} per step, "
                  f"{sum(took(e) for e in rows) / steps / 1e3:.3f} ms of their time per step")
            for e in sorted(rows, key=took, reverse=True)[:10]:
                print(f"  {took(e) / steps / 1e3:8.3f} ms  {e.count / steps:5.0f}x  {e.key[:90]}")

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
