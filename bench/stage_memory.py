"""Where tflow's memory goes, stage by stage, for one question (a GPU's peak is the question):

    python bench/stage_memory.py TOKENIZER_DIR [NEW_TOKENS]

On CUDA (the benchmarks' shape: Qwen3-4B, bf16, CUDA graphs, the official generator
dimensions) the allocator's bytes; on CPU (tiny, float32, Qwen3's vocabulary) the resident set. Prints one JSON line:
the weights; what the engine holds after a baseline question (KV cache, captured graphs, the
prefix cache); and, for a tflow question run after it, the peak of each stage above what was
allocated when the question started (senders' prefill, the generator call, receiver prefill and
decode) and its stage seconds; then the same question twice more, warm (its sender prompts in the
prefix cache, every kernel compiled): with the generator in pieces (`tflow_pieces_*`) and with
every generator stage whole (`tflow_whole_*`); and the engine's KV cache, LoRA slot buffers and
prefix cache sizes at the end. The H200 runs measured tflow-1 at 8.9 GiB against the official 8.2 and against our
baseline's 7.9: this says which stage holds the difference. The warm pair says what the
generator's pieces cost and save on one question (on the H200 its stage took 0.15 s in pieces of
1,024 tokens, 0.02 s in the first run, before there were pieces).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from benchlib import QUESTIONS, one_slot_tflow, peak_rss_kib, resident_kib, tensor_bytes
from minitflow.engine.runner import lora_tensors
from minitflow.tflow import methods

GIB = 2**30


class Meter:
    """Bytes now and the peak since the last reset: the CUDA allocator's, or the resident set."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else resident_kib() * 1024

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated() if self.cuda else peak_rss_kib() * 1024

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif Path("/proc/self/clear_refs").exists():  # Linux resets VmHWM to VmRSS on "5"
            Path("/proc/self/clear_refs").write_text("5")


def main(tokenizer_dir: str, new_tokens: str = "256") -> dict:
    setup, llm, gen, sampling = one_slot_tflow(tokenizer_dir, int(new_tokens))
    meter = Meter(setup.device)
    out: dict = {"device": setup.label, "weights_gib": tensor_bytes([*llm.model.parameters(), *gen.parameters()]) / GIB}
    base_now = meter.now()
    meter.reset()
    with torch.inference_mode():
        methods.run_method("baseline", llm, QUESTIONS[:1], sampling=sampling)
    out["baseline_peak_above_start_gib"] = (meter.peak() - base_now) / GIB
    out["after_baseline_gib"] = meter.now() / GIB

    # `tflow`: the first tflow question (its graphs captured, the fused functions compiled), what
    # the method benchmark's peak includes; then the same question warm, in pieces and whole
    for label, options in (("tflow", {}), ("tflow_pieces", {}), ("tflow_whole", {"generator_piece": None})):
        out.update(tflow_stages(llm, gen, sampling, meter, label, **options))
    runner = llm.engine.runner
    out.update(kv_cache_gib=tensor_bytes([runner.cache.k, runner.cache.v]) / GIB if runner.cache is not None else 0.0,
               lora_slot_buffers_gib=tensor_bytes(lora_tensors(runner.lora)) / GIB if runner.lora is not None else 0.0,
               prefix_cache_gib=llm.engine.prefix_cache.used / GIB)
    return out


def tflow_stages(llm, gen, sampling, meter: Meter, label: str, **options) -> dict:
    """One tflow question: each stage's peak above what was allocated when it started, and the
    question's stage seconds, under `label`; `options` go to run_method (generator_piece=None:
    every generator stage on all its tokens at once, the fewest launches and the most memory)."""
    marks: dict[str, int] = {}
    real = methods._TFlow.receivers

    def receivers(self, group):  # the senders are done here; the generator runs inside
        marks["senders"] = meter.peak()
        meter.reset()
        real(self, group)
        marks["generator"] = meter.peak()  # the receiver's request is only queued by now
        meter.reset()

    start = meter.now()
    meter.reset()
    methods._TFlow.receivers = receivers
    try:
        res = methods.run_method("tflow", llm, QUESTIONS[:1], sampling=sampling, generator=gen, batch_size=1,
                                 **options)
    finally:
        methods._TFlow.receivers = real
    marks["receiver"] = meter.peak()
    out = {f"{label}_{k}_peak_above_start_gib": (v - start) / GIB for k, v in marks.items()}
    out.update({f"{label}_{k}": v for k, v in res[0].timings.items()})
    out.update({f"{label}_start_gib": start / GIB, f"{label}_end_gib": meter.now() / GIB,
                f"{label}_new_tokens": len(res[0].token_ids)})
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
