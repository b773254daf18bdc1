"""Turn a `pytest --benchmark-json` file of bench/ into the markdown table of README_TABLE.md.

    python bench/table.py bench.json [more.json ...] > table.md   (several: a GPU run made in parts)
    python bench/table.py --fastest-decode-lora decode.json       (gpu_session.sh: the LoRA path
                                                                   the parts after `decode` run)
"""

from __future__ import annotations

import json
import sys

# extra_info key of each benchmark's side-by-side ratio, and what it compares against
RATIOS = {
    "time_vs_naive": "time / naive per-sender LoRA",
    "time_vs_per_row": "time / per-row sampling loop",
    "time_vs_sort": "time / the sort-based nucleus",
    "time_vs_int64": "time / the int64 hash",
    "lora_overhead": "time with LoRA / without",
    "capture_overhead": "time with capture / plain prefill",
    "time_vs_sender_prefill": "time / senders' capture prefill",
    "time_vs_baseline": "time / baseline method",
    "speedup_vs_transformers": "HF generate time / ours",
    "speedup_vs_static": "static batches' time / continuous batching",
    "speedup_vs_no_cache": "prefill time without / with the prefix cache",
    "speedup_vs_padded": "one padded prefill forward's time / forwards by length",
    "speedup_vs_chunked": "chunked (stage barriers) time / pipelined",
    "speedup_vs_each": "time refilling each place / refilling in groups",
    "speedup_vs_old_code": "the pre-serving code's chunked time / pipelined",
    "speedup_vs_official": "official release's time / ours",
    "memory_vs_full": "condition peak bytes, streamed / all L+1 layers",
    "memory_vs_one_call": "generator stage peak, one question per call / all in one call",
    "memory_vs_whole": "generator stage peak, in pieces / every stage whole",
    "time_vs_default": "tflow time / with the generator's defaults",  # runs before the CUDA default changed
    "time_vs_one_per_call": "tflow time / one question per generator call",
    "time_vs_on_heads": "time / rotating the heads-split view",
}
RATES = ("useful_tokens_per_s", "tokens_per_s", "questions_per_s", "generated_tokens_per_s", "rows_per_s")
# further facts shown when a benchmark records them (GPU runs)
EXTRAS = {
    "row_step_use": lambda v: f"{100 * v:.0f}% of computed row-steps used",
    "static_row_step_use": lambda v: f"static: {100 * v:.0f}%",
    "cached_share": lambda v: f"{100 * v:.0f}% of prompt tokens cached",
    "padded_token_rows": lambda v: f"{v:,} token-rows padded",
    "bandwidth_fraction": lambda v: f"{100 * v:.0f}% of copy bandwidth",
    "peak_gib": lambda v: f"peak {v:.1f} GiB",
    "speedup_vs_official": lambda v: f"{v:.1f}x the official release",
    "time_vs_one_call": lambda v: f"time {v:.2f}x one call's",
    "time_vs_whole": lambda v: f"time {v:.2f}x whole stages'",
    "peak_rise_mib_pieces": lambda v: f"+{v:.0f} MiB above the weights in pieces",
    "peak_rise_mib_whole": lambda v: f"+{v:.0f} MiB whole",
}


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def rows(data: dict) -> list[str]:
    out = ["| benchmark | best | median | rate (best) | ratio (best) | ratio means | also |",
           "|---|---|---|---|---|---|---|"]
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        rate = next((f"{info[k]:,.{0 if info[k] >= 100 else 1}f} {k.replace('_per_s', '')}/s"
                     for k in RATES if k in info), "")
        key = next((k for k in RATIOS if k in info), None)
        ratio = f"{info[key]:.2f}" if key else ""
        st = b["stats"]
        also = ", ".join(fmt(info[k]) for k, fmt in EXTRAS.items() if k in info)
        out.append(f"| `{b['name']}` | {fmt_time(st['min'])} | {fmt_time(st['median'])} | {rate} | {ratio} | "
                   f"{RATIOS.get(key, '')} | {also} |")
    return out


def fastest_decode_lora(benchmarks: list[dict]) -> str:
    """The lora_linear.DECODE_LORA path whose captured decode step with LoRA took the least time
    on average over the batch sizes, each relative to the fastest path at that batch; a path
    that missed a batch size (its part ran out of time) is not chosen."""
    times: dict[str, dict[int, float]] = {}
    for b in benchmarks:
        info = b.get("extra_info", {})
        if b["name"].startswith("test_decode_step") and str(info.get("mode", "")).startswith("graphs"):
            times.setdefault(info["decode_lora"], {})[info["batch"]] = info["batch"] / info["tokens_per_s"]
    batches = set().union(*times.values())
    whole = [p for p in times if set(times[p]) == batches]
    if not whole:
        raise SystemExit("no captured decode step with LoRA for every batch size: run bench/test_micro.py's decode_step")
    best = {n: min(times[p][n] for p in whole) for n in batches}
    return min(whole, key=lambda p: sum(times[p][n] / best[n] for n in batches))


def benchmarks(paths: list[str]) -> list[dict]:
    """The benchmarks of every pytest-benchmark JSON in `paths`. Other JSON files are skipped with
    a note: a GPU session's folder also holds bench/lora_kernel_sweep.py's list of timings, and
    `table.py OUT_DIR/*.json` failed on it (a TypeError, no table); and the empty file of a part
    that selected no test (CPU) or that its time limit cut short, on which it failed too (JSONDecodeError)."""
    out = []
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError:
            print(f"table.py: {path} is empty or cut short (a part that ran no test, or ran out of time): skipped",
                  file=sys.stderr)
            continue
        if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
            out += data["benchmarks"]
        else:
            print(f"table.py: {path} is not a pytest-benchmark JSON: skipped", file=sys.stderr)
    return out


def main() -> None:
    if sys.argv[1:2] == ["--fastest-decode-lora"]:
        print(fastest_decode_lora(benchmarks(sys.argv[2:])))
        return
    data = {"benchmarks": benchmarks(sys.argv[1:])}
    devices = sorted({b.get("extra_info", {}).get("device", "") for b in data["benchmarks"]} - {""})
    print(f"Device: {'; '.join(devices)}\n")
    print("\n".join(rows(data)))


if __name__ == "__main__":
    main()
