"""`python -m minitflow.report DIR...`: a Table-1-style markdown table from evaluation results.

Rows are methods, columns datasets, each with Acc. (%: the strict scorer, and in parentheses
the official release's protocol, the metric of the paper's Table 1), Token (mean official token count,
generating agents only, as in the paper), Proc. (mean tokens processed by all agents,
tflow senders' forward passes included) and Speed (mean seconds per question on one rank, i.e. one
device, the one the results name (a CPU or a GPU): the same whatever the run's world size; its
wall-clock is the summary's `total_wall_time`). Under the table, each run's n and, where its file
records them, its outputs cut at max_new_tokens as the official evaluator counts them (truncated T/N), and
in a line of their own its official token usage per output (avg prompt / completion / total tokens); neither
for the oracle, which generates nothing.
A run with several samples per question (evaluate --n_samples K) shows avg@K (the mean accuracy
over every sample) as its Acc., and its pass@k and maj@K (strict) in a line under the table.
`--plot FILE.png` also draws accuracy and tokens as bar charts (needs matplotlib).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from minitflow.errors import Parser, UserError, run_cli, stop_in_one_line_at_start
stop_in_one_line_at_start(__name__)  # run as `python -m`: a Ctrl-C in the imports below is one line too

from minitflow.files import check_output_file, read_text, replacing, unfinished

LABELS = {"baseline": "Single", "textmas": "TextMAS", "tflow": "TFlow", "latentmas": "LatentMAS", "oracle": "Oracle"}
ORDER = ["baseline", "textmas", "tflow", "latentmas", "oracle"]


NUMBERS = ("accuracy", "mean_official_tokens", "mean_processed_tokens", "mean_wall_time")
PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def read_summary(f: Path) -> dict:
    """The summary of one results file, checked: a bad file is one line naming it."""
    text = read_text(f, "results file")  # a UserError (a ValueError too) of its own
    try:
        data = json.loads(text)
    except ValueError:  # JSONDecodeError, or an integer past the digit limit
        raise UserError(f"{f} is not a minitflow results file (not valid JSON)") from None
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict):
        raise UserError(f"{f} is not a minitflow results file (needs an object with a \"summary\" object)")
    for key in ("method", "dataset"):
        if not isinstance(summary.get(key), str):
            raise UserError(f"{f}: summary.{key} is missing or not a string")
    for key in ("n", *NUMBERS):
        v = summary.get(key)
        if not _is_number(v):
            raise UserError(f"{f}: summary.{key} is missing or not a number")
    return summary


def column(summary: dict) -> str:
    """The dataset column: `dataset_label` where evaluate wrote one (humaneval vs humaneval+); an
    MMLU run on another row set than the official one gets its own column ("mmlu (all rows)"):
    accuracies over different questions side by side would read as a comparison."""
    label = summary.get("dataset_label")
    label = label if isinstance(label, str) and label else summary["dataset"]
    rows = summary.get("mmlu_rows")
    if summary["dataset"] == "mmlu" and isinstance(rows, str) and rows != "official":
        label += f" ({rows} rows)"
    return label


def collect(dirs: list[str]) -> dict[tuple[str, str], dict]:
    """(method, dataset column) -> summary, from every *_results.json under the given
    directories (or a results file given itself). Two files for one cell are refused, never one
    silently dropped; one file reached twice is one file."""
    found: dict[tuple[str, str], dict] = {}
    source: dict[tuple[str, str], Path] = {}
    seen: set[Path] = set()
    for d in dirs:
        path = Path(d)
        if not path.exists():
            raise UserError(f"no such results directory: {path}")
        if path.is_file() and not path.name.endswith("_results.json"):
            raise UserError(f"{path} is neither a results directory nor a *_results.json file")
        for f in [path] if path.is_file() else sorted(path.rglob("*_results.json")):
            if f.resolve() in seen:  # `report results results/gsm8k` names it twice: one file, no clash
                continue
            seen.add(f.resolve())
            summary = read_summary(f)
            key = (summary["method"], column(summary))
            if key in found:
                raise UserError(f"{source[key]} and {f} both hold {key[0]} on {key[1]}: pass the directories "
                                "of one of them only")
            found[key], source[key] = summary, f
    if not found:  # a folder of runs still going (or stopped before the merge) says so, not only "none"
        missing = unfinished(dirs)
        pending = f"; unfinished (partial rows, no results file): {'; '.join(missing)}" if missing else ""
        raise UserError(f"no *_results.json under {', '.join(dirs)}{pending}")
    return found


def ordered_methods(results: dict[tuple[str, str], dict]) -> list[str]:
    """The paper's methods in its order, then any other method found (by name): none is dropped."""
    found = {m for m, _ in results}
    return [m for m in ORDER if m in found] + sorted(found - set(ORDER))


def markdown_table(results: dict[tuple[str, str], dict], missing: list[str] | None = None) -> str:
    """The table and its notes; `missing` names the unfinished runs it leaves out."""
    methods = ordered_methods(results)
    datasets = sorted({k[1] for k in results})
    head = "| Method | " + " | ".join(f"{d} Acc. | {d} Token | {d} Proc. | {d} Speed (s)" for d in datasets) + " |"
    sep = "|---|" + "---|" * (4 * len(datasets))
    lines = [head, sep]
    for m in methods:
        cells = []
        for d in datasets:
            s = results.get((m, d))
            cells += (["–"] * 4 if s is None else
                      [f"{100 * s['accuracy']:.1f} ({_official(s)})", f"{s['mean_official_tokens']:.0f}",
                       f"{s['mean_processed_tokens']:.0f}", f"{s['mean_wall_time']:.2f}"])
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    devices = {k: device_of(k[0], s) for k, s in results.items()}
    shared = set(devices.values()) - {None}
    one = next(iter(shared)) if len(shared) == 1 else None  # the runs' one device, named once in the note
    counts = ", ".join(f"{m}/{d}: n={s['n']}" + _truncated(s) + (" (incomplete run)" if s.get("complete") is False else "")
                       + (_on(devices[m, d]) if devices[m, d] and not one else "")
                       for (m, d), s in sorted(results.items()))
    where = f" ({one})" if one else " (the device each run used: under Samples)" if shared else ""
    note = f"\n\nNot shown, unfinished (partial rows, no results file): {'; '.join(missing)}" if missing else ""
    sampled = [f"{LABELS.get(m, m)}/{d}: avg@{s['n_samples']} {100 * s['accuracy']:.1f}, "
               + ", ".join(f"pass@{k} {100 * v:.1f}" for k, v in s["pass_at_k"].items())
               + "".join(f", maj@{k} {100 * v:.1f}" for k, v in _maj(s).items())
               for (m, d), s in sorted(results.items()) if _sampled(s)]
    if sampled:
        note = ("\n\nSeveral samples per question (Acc. is avg@K, strict): " + "; ".join(sampled)) + note
    usage = [f"{LABELS.get(m, m)}/{d}: " + " / ".join(f"{v:.0f}" for v in _usage(s))
             for (m, d), s in sorted(results.items()) if _usage(s)]
    if usage:
        note = ("\n\nOfficial token usage per output (avg prompt / completion / total tokens, generating agents): "
                + "; ".join(usage)) + note
    cut = (" Truncated: outputs cut at max_new_tokens (an answering agent's, textmas' senders' too), as the official "
           "evaluator counts them." if any(_truncated(s) for s in results.values()) else "")
    return "\n".join(lines) + ("\n\nAcc.: strict scorer (official protocol, as in the paper's Table 1, in "
                               f"parentheses). Speed: seconds per question on one rank{where}.{cut} "
                               f"Samples: {counts}") + note


def _truncated(summary: dict) -> str:
    """", truncated T/N" of a run's outputs (N: those that record it, and how many do not); nothing for a file
    from before evaluate counted them (unknown, not none), nor for the oracle (it generates nothing)."""
    stats = summary.get("truncation_stats")
    if (summary["method"] == "oracle" or not isinstance(stats, dict)
            or not all(_is_count(stats.get(k)) for k in ("total_truncated", "unknown"))):
        return ""
    k = summary.get("n_samples") if _sampled(summary) else 1
    known = summary["n"] * k - stats["unknown"]
    return (f", truncated {stats['total_truncated']}/{known}"
            + (f" ({stats['unknown']} not recorded)" if stats["unknown"] else ""))


def _usage(summary: dict) -> tuple[float, ...]:
    """The run's official avg prompt, completion and total tokens per output (`token_usage_stats`); none for a
    file from before evaluate wrote them (unknown, not 0), nor for the oracle (it generates nothing)."""
    stats = summary.get("token_usage_stats")
    if summary["method"] == "oracle" or not isinstance(stats, dict):
        return ()
    values = tuple(stats.get(f"avg_{k}_tokens") for k in ("prompt", "completion", "total"))
    return values if all(_is_number(v) for v in values) else ()


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: object) -> bool:
    """A finite int or float as JSON gives them (a bool is no number)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _maj(summary: dict) -> dict:
    """The run's maj@K (none for code, and in files written before it was)."""
    maj = summary.get("maj_at_k")
    return maj if isinstance(maj, dict) else {}


def _sampled(summary: dict) -> bool:
    """Whether a run has several samples per question (evaluate --n_samples K > 1) with its pass@k."""
    k = summary.get("n_samples")
    return isinstance(k, int) and not isinstance(k, bool) and k > 1 and isinstance(summary.get("pass_at_k"), dict)


def device_of(method: str, summary: dict) -> str | None:
    """What a run's Speed was measured on: evaluate's `device` ("cpu", "cuda (GPU name)"); None for the
    oracle (no model, no device); "device not recorded" for a file from before evaluate wrote it."""
    if method == "oracle":
        return None
    device = summary.get("device")
    return device if isinstance(device, str) and device else "device not recorded"


def _on(device: str) -> str:
    return " (device not recorded)" if device == "device not recorded" else f" on {device}"


def _official(summary: dict) -> str:
    v = summary.get("accuracy_official")
    return f"{100 * v:.1f}" if _is_number(v) else "–"


def plot(results: dict[tuple[str, str], dict], out: Path) -> None:
    plt = pyplot()
    methods = ordered_methods(results)
    datasets = sorted({k[1] for k in results})
    fig, axes = plt.subplots(1, 2, figsize=(5 + 2 * len(datasets), 4))
    width = 0.8 / len(methods)
    for ax, key, title in ((axes[0], "accuracy", "Accuracy (%)"), (axes[1], "mean_official_tokens", "Tokens / question")):
        for i, m in enumerate(methods):
            vals = [results.get((m, d), {}).get(key, 0) * (100 if key == "accuracy" else 1) for d in datasets]
            ax.bar([j + i * width for j in range(len(datasets))], vals, width, label=LABELS.get(m, m))
        ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(datasets))], datasets)
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    with replacing(out) as tmp:
        fig.savefig(tmp, dpi=120, format=plot_format(out))
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the Agg backend; without matplotlib, one line naming the install."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError('--plot needs matplotlib: pip install "minitflow[plot]"') from None  # as scoring names [eval]
    return plt


def plot_format(out: Path) -> str:
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        raise UserError(f"--plot {out}: unknown image type {out.suffix or '(none)'!r}; use one of "
                        + ", ".join("." + f for f in PLOT_FORMATS))
    return fmt


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m minitflow.report", description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="+", help="output directories of minitflow.evaluate (their subfolders "
                   "searched too) or *_results.json files")
    p.add_argument("--plot", default=None, help="also draw accuracy and tokens as bar charts in this file, of the "
                   f"type its suffix names ({', '.join('.' + f for f in PLOT_FORMATS)}; needs matplotlib)")
    args = p.parse_args(argv)
    if args.plot:
        plot_format(Path(args.plot))
        check_output_file(args.plot, "--plot")
        pyplot()  # before the table is printed: a missing matplotlib leaves no half output
    results = collect(args.dirs)
    print(markdown_table(results, unfinished(args.dirs)))
    if args.plot:
        plot(results, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
