"""`python -m minitflow.evaluate`: accuracy, processed tokens and wall-clock on a benchmark.

Files in OUTPUT_DIR, per method:

- `{method}_settings.json`: what defines the run (model, checkpoint sha256, method, dataset
  file sha256, sampling (a greedy run: no seed), max_new_tokens, row set). A rerun with other settings is
  refused with one line; `--overwrite` starts afresh. `--max_samples` may change between
  runs (it takes a prefix of the same samples).
- `{method}_partial.rank{r}.jsonl`: one finished sample per line, appended as it completes,
  so a crashed or interrupted run resumes where it stopped.
- `{method}_results.json`: summary and samples, written (atomically) by rank 0 at the end.
- `{method}.rank{r}.lock`: held (flock) while rank r runs: a second evaluate process on the
  same folder refuses instead of computing every sample twice.
- `{method}.rank{r}.failed`: the error of rank r of a launch of several that failed (eval/ranks.py: mark_failed):
  the ranks waiting for it stop at once with that error instead of waiting minutes for a dead process.
- `{method}.rank{r}.alive`: rank r's heartbeat in a launch of several, rewritten every ranks.HEARTBEAT_S while
  it runs (ranks.start_heartbeat): a rank waiting for one killed (kill -9, the OOM killer) before it
  took its lock, which leaves no marker, stops once it has not changed for ranks.HEARTBEAT_STALE_S. A clean
  run removes them (each rank its own at its end, rank 0 once every rank has joined a complete merge).

Several ranks (`torchrun --nproc-per-node N`, or RANK / WORLD_SIZE / LOCAL_RANK set by hand)
take the samples i % N == rank; each runs on its own GPU (cuda:LOCAL_RANK) and writes its own
partial file. No torch.distributed collective is used: rank 0, after its own share, polls the
partial files until every sample is there and merges them. A barrier on NCCL would time out
(its watchdog) when ranks finish minutes apart, as long generations do; reading files has no
such limit, needs no process group, and is the same code path as a resume. Rank 0 gives up
when no new sample has appeared for --merge_timeout seconds (a dead rank), or at once when every
other rank has exited (its lock free, or, killed before it took it, its heartbeat stopped): it then
writes results marked complete: false, and a rerun finishes the missing samples.
`--method oracle` scores the gold answers through the same pipeline (it must reach 100%); it runs
no model, so --model, the sampling flags, --device, --dtype, --batch_size, --seed and --refill_share
are refused with it.

The whole shard goes through the method's pipeline at once (`--batch_size` = the engine's
slots); each question is appended as soon as it is scored, and scoring (code runs in the
sandbox, sympy in a child process) happens on a background thread, so the model never waits
for it. Every row stores both verdicts: `correct` (the strict scorer) and `correct_official`
(the official release's protocol, quirks included); the summary has `accuracy` and
`accuracy_official`. A row's `truncated` says whether an output was cut at max_new_tokens as the official
evaluator decides it (textmas: a sender or the receiver); the summary's `truncation_stats` counts them with
the official keys (split by `correct_official`), plus `unknown` for rows written before it was recorded;
its `token_usage_stats` is the official one (avg_/sum_ prompt, completion and total official tokens per
output), and a textmas row keeps the official `conversation_log` (what its senders said, then its answer).
`wall_time` of a row is its rank's run time since that rank's previous row finished (model loading
excluded), so the rows of one rank file sum to that rank's run. The summary's `rank_wall_times` are
those sums per rank file, `total_wall_time` the largest of them (ranks run side by side: the run's
wall-clock, not the sum over ranks, which is N times it), and `mean_wall_time` the seconds one rank
spends per question (all rows' time over their number: the same on 1 or 8 GPUs). A resume adds its
time to the rank files it writes: after a resume with another world size, `total_wall_time` is a lower bound.

`--n_samples K` (K > 1) samples K outputs per question (run_method's `samples`: sample j of question i
seeded from the question's seed and j, what is deterministic run once). A row is then one question
with its K samples (`samples`: prediction, verdicts, usage each; `n_correct`, `n_correct_official`),
written once all K are scored: a resume redoes a question whose samples were not all written. The
summary's `accuracy` / `accuracy_official` are the mean over all samples (avg@K), `pass_at_k` /
`pass_at_k_official` the unbiased pass@k (1 - C(n-c, k) / C(n, k), averaged over questions) for
k = 1, 2, 4, ... <= K, `maj_at_k` / `maj_at_k_official` (not for code) the share of questions whose
majority answer is correct (maj@K, scoring.majority_correct), the token means per sample and
`mean_wall_time` per question (all K).
Ranks split questions, never a question's samples. K = 1 writes the files as without the flag.
"""

from __future__ import annotations

import argparse
import sys

from minitflow.errors import Parser, run_cli, stop_in_one_line_at_start
stop_in_one_line_at_start(__name__)  # run as `python -m`: a Ctrl-C in the imports below is one line too

from minitflow.flags import EVALUATE_METHODS, ORACLE_DEFAULTED, add_model_args


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m minitflow.evaluate", description=__doc__.split("\n")[0])
    add_model_args(p, EVALUATE_METHODS)
    p.add_argument("--data_file", default=None, help="local JSONL(.gz) copy of the test split (no network)")
    p.add_argument("--max_samples", type=int, default=-1, help="the first N samples (default: -1, all)")
    p.add_argument("--output_dir", default="results", help="where results, settings and run.log go (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard this method's earlier results in --output_dir instead of resuming them")
    p.add_argument("--merge_timeout", type=float, default=3600.0,
                   help="rank 0: seconds without a new sample from any rank before it writes incomplete results "
                   "(default: %(default)g, an hour)")
    p.add_argument("--mmlu_rows", default=None, choices=["official", "ok", "all"],
                   help="MMLU-Redux rows: official (the release's loader, default), ok (clean rows only), all")
    p.add_argument("--include_all_mmlu", action="store_true", help="the same as --mmlu_rows official (older flag)")
    p.add_argument("--minerva_zero_shot", action="store_true",
                   help="MATH: the bare problem instead of the official 4-shot Minerva prompt")
    p.add_argument("--n_samples", type=int, default=1,
                   help="sampled outputs per question (default: %(default)s); above 1 the summary has avg@K accuracy, "
                   "pass@k for k = 1, 2, 4, ... <= K and maj@K (use a --temperature above 0)")
    p.set_defaults(batch_size=20)
    # argparse leaves an attribute the namespace already has unless the flag is given: None here is "left out"
    args = p.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(ORACLE_DEFAULTED)))
    given = tuple(f for f in ORACLE_DEFAULTED if getattr(args, f) is not None)
    for f in ORACLE_DEFAULTED:
        if f not in given:
            setattr(args, f, p.get_default(f))
    # the run's modules (the model's import torch: seconds), now that the flags are parsed: --help and a
    # mistyped flag have answered at once
    from minitflow.eval.evaluation import evaluate, log, logging_restored
    with logging_restored():
        summary = evaluate(args, given)
        if summary is not None and not summary["complete"]:  # a script's `evaluate && report` must not go on
            log.error("results incomplete: %d of the samples are there (a rank died); rerun the same command to "
                      "finish them", summary["n"])
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
