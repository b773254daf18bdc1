"""One rank's run of `python -m minitflow.evaluate` (its docstring describes the folder it writes and
the summary). The command line parses its flags first, torch-free, then imports this module (the
model's modules: torch), so that --help and a mistyped flag answer at once."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from minitflow.cli import (LoadPlan, check_model_args, check_n_samples, check_questions_fit, load_for,
                           method_options, model_and_checkpoint, model_dir_for, plan_load, sampling_from)
from minitflow.engine.llm import resolve_device, resolve_dtype
from minitflow.engine.sampler import SamplingParams
from minitflow.errors import UserError
from minitflow.eval.ranks import (check_rank_device, claim_folder, mark_failed, start_heartbeat, wait_for_ranks,
                                  wait_for_ranks_to_join, world)
from minitflow.eval.rows import (BackgroundScorer, rank_wall_times, read_finished, read_finished_before_claim,
                                 recorded_options, recorded_seed, remaining, sampled_summary, start_partial,
                                 token_usage_stats, truncation_stats)
from minitflow.files import check_output_dir, file_sha256, write_json
from minitflow.flags import ORACLE_DEFAULTED, ORACLE_REFUSES

log = logging.getLogger("minitflow.evaluate")


# ---- the settings that define a run -----------------------------------------------------

def run_settings(args: argparse.Namespace, dataset: str, sampling: SamplingParams | None) -> dict:
    """What a resumed run must share with the one that wrote the folder (`sampling`: None for the
    oracle, which runs no model)."""
    settings = {"method": args.method, "dataset": dataset,
                "data_file_sha256": file_sha256(args.data_file) if args.data_file else "online",
                "include_all_mmlu": args.include_all_mmlu, "minerva_zero_shot": args.minerva_zero_shot,
                "mmlu_rows": getattr(args, "mmlu_rows", None),
                "scorer": None}  # a flag no more (both verdicts are stored); kept so older folders resume
    if getattr(args, "n_samples", 1) != 1:  # absent with 1: a one-sample folder's settings as before the flag
        settings["n_samples"] = args.n_samples
    if args.method == "oracle":
        return settings
    model, checkpoint = model_and_checkpoint(args)
    model_path = Path(model).expanduser()
    settings.update({
        "model": str(model_path.resolve()) if model_path.is_dir() else model,
        "checkpoint_sha256": "random" if args.random_generator else file_sha256(checkpoint),
        "max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
        "top_p": sampling.top_p, "top_k": sampling.top_k, "seed": sampling.seed,
        "method_options": recorded_options(method_options(args)),
        # bfloat16 and float32 give other long answers: a resume must not mix them
        "dtype": str(resolve_dtype(args.dtype, resolve_device(args.device))).removeprefix("torch."),
        # nor CPU and GPU rows: the summary's seconds per question (report's Speed) names one device
        "device": resolve_device(args.device).type})
    return recorded_seed(settings)


def device_label(args: argparse.Namespace) -> str | None:
    """What the run's seconds per question were measured on, for report's Speed: "cpu", or
    "cuda (the GPU's name)"; None for the oracle, which runs no model."""
    if args.method == "oracle":
        return None
    device = resolve_device(args.device)
    if device.type != "cuda":
        return device.type
    import torch  # set up already: the model ran on it (or would have, had anything been left to run)
    return f"cuda ({torch.cuda.get_device_name(device)})"


# ---- the run -----------------------------------------------------------------------------

def _setup_logging(out_dir: Path, rank: int) -> None:
    """The run's log lines go to its run.log (and rank 0's to stderr too), in place of the root logger's
    handlers, which are not closed: main() puts them back (logging_restored)."""
    # errors: a path that is not UTF-8 (lone surrogates) in a line is escaped, not a "Logging error" traceback
    handlers: list[logging.Handler] = [logging.FileHandler(out_dir / ("run.log" if rank == 0 else f"run.rank{rank}.log"),
                                                           encoding="utf-8", errors="backslashreplace")]
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)


@contextmanager
def logging_restored() -> Iterator[None]:
    """main() called in-process (a test, a notebook) leaves the root logger as it found it, the run's
    handlers closed: one kept would write to the stderr of its time, which may be closed by then."""
    root = logging.getLogger()
    found, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for h in root.handlers:
            if h not in found:
                h.close()
        root.handlers[:] = found
        root.setLevel(level)


def evaluate(args: argparse.Namespace, given: tuple[str, ...] = ()) -> dict | None:
    """One rank's run; a rank of several that fails leaves a marker (mark_failed) for the others.
    `given`: the flags of ORACLE_DEFAULTED the command line set (their defaults are in `args`)."""
    rank, size = world()
    stop_beating = start_heartbeat(args.output_dir, args.method, rank, size) if size > 1 else None

    def settled() -> None:  # no rank of this launch will wait on this one: its heartbeat goes
        stop_beating(remove=True)

    try:
        return _evaluate(args, rank, size, given, settled)
    except BaseException as e:
        mark_failed(Path(args.output_dir), args.method, rank, size, e)
        raise
    finally:
        if stop_beating is not None:
            stop_beating()


def _check_flags(args: argparse.Namespace, size: int, given: tuple[str, ...]) -> str:
    """The checks that need neither the model nor the data (a refused run costs nothing and leaves no
    folder); returns the dataset's name. `args.dataset` becomes its prompt style, `args.mmlu_rows` the row set."""
    from minitflow.eval.data import prompt_style, resolve_dataset, resolve_mmlu_rows
    from minitflow.eval.scoring import check_eval_dependencies

    dataset = resolve_dataset(args.dataset)
    args.dataset = prompt_style(dataset)
    check_model_args(args)
    if args.method == "oracle":  # it runs no model: these would be ignored, yet look like part of the run
        ignored = [f for f in ORACLE_REFUSES if getattr(args, f) not in (None, False)]
        ignored += [f for f in ORACLE_DEFAULTED if f in given]
        if ignored:
            raise UserError(f"--{ignored[0]} has no effect with --method oracle, which scores the gold answers "
                            "and runs no model: leave it out")
    check_eval_dependencies(dataset)  # before any model is loaded: never a silent 0%
    if args.method != "oracle":
        check_rank_device(args.device, size)
    if dataset != "mmlu" and (args.mmlu_rows is not None or args.include_all_mmlu):  # else ignored, yet recorded
        raise UserError(f"--{'mmlu_rows' if args.mmlu_rows is not None else 'include_all_mmlu'} applies to mmlu "
                        f"only, not {dataset}")
    if dataset != "minerva_math" and args.minerva_zero_shot:
        raise UserError(f"--minerva_zero_shot applies to minerva_math only, not {dataset}")
    args.mmlu_rows = resolve_mmlu_rows(args.mmlu_rows, args.include_all_mmlu)
    check_n_samples(args.n_samples)
    if args.method == "oracle" and args.n_samples != 1:  # its prediction is the gold answer: K copies of it
        raise UserError("--n_samples has no effect with --method oracle, which scores the gold answers and runs "
                        "no model: leave it out")
    if args.max_samples == 0 or args.max_samples < -1:  # 0 would read as "the data file has no samples"
        raise UserError(f"--max_samples must be -1 (all) or >= 1, got {args.max_samples}")
    if not args.merge_timeout > 0:
        raise UserError(f"--merge_timeout must be > 0 seconds, got {args.merge_timeout}")
    return dataset


def _summary(args: argparse.Namespace, dataset: str, label: str, n_questions: int, rows: list[dict],
             rank_times: dict[str, float], settings: dict, size: int) -> dict:
    """The results file's summary of the finished `rows` (of `n_questions`): accuracy (avg@K with
    --n_samples K), token and time means, and what the run was (device, model, settings, flags)."""
    k = args.n_samples
    n = len(rows)
    model_label, checkpoint = model_and_checkpoint(args)
    summary = {
        "method": args.method, "dataset": dataset, "dataset_label": label,
        "n": n, "complete": n == n_questions,
        **({"accuracy": sum(bool(r["correct"]) for r in rows) / max(n, 1),
            "accuracy_official": sum(bool(r.get("correct_official")) for r in rows) / max(n, 1)} if k == 1 else
           {"accuracy": None, "accuracy_official": None}),  # sampled_summary's, below
        "mmlu_rows": args.mmlu_rows if dataset == "mmlu" else None,
        "mean_processed_tokens": sum(r["processed_tokens"] for r in rows) / max(n, 1),
        "mean_official_tokens": sum(r["official_tokens"] for r in rows) / max(n, 1),
        # ranks run side by side: the run took as long as its slowest rank, not the sum of all rows
        "total_wall_time": max(rank_times.values(), default=0.0), "rank_wall_times": rank_times,
        "mean_wall_time": sum(r["wall_time"] for r in rows) / max(n, 1),  # one rank's seconds per question
        "truncation_stats": truncation_stats(rows, k),
        "token_usage_stats": token_usage_stats(rows, k),
        "device": device_label(args),
        "model": None if args.method == "oracle" else model_label,
        "checkpoint": checkpoint if args.method == "tflow" else None,
        "checkpoint_sha256": settings.get("checkpoint_sha256"), "world_size": size,
        # the data file as an absolute path: `score --results` reads it from any working directory
        "settings": settings,
        # --n_samples 1 (the default) is left out: a one-sample run's files are as before the flag
        "config": {**{a: v for a, v in vars(args).items() if a != "n_samples" or k > 1},
                   "data_file": args.data_file and os.path.abspath(args.data_file)},
    }
    if k > 1:
        summary.update(sampled_summary(rows, k, dataset))
    return summary


@dataclass(frozen=True)
class _RunPlan:
    """What _plan_run checked and read before the folder is claimed, for the run that claims it."""
    dataset: str
    samples: list  # eval.data.Sample
    ids: list[str]
    model_dir: Path | None  # None: oracle, which runs no model
    sampling: SamplingParams | None
    settings: dict
    plan: LoadPlan | None  # None: nothing left to run before the claim, or no model
    fits: list[tuple[int, int]] | None  # check_questions_fit's, with a model


def _evaluate(args: argparse.Namespace, rank: int, size: int, given: tuple[str, ...],
              settled: Callable[[], None]) -> dict | None:
    """One rank's run. `settled` is called once no rank of this launch will wait on this one (a rank
    r > 0 that wrote its rows, having joined; rank 0 once every rank joined a complete merge): a
    clean run leaves no heartbeat behind. Other ends keep it: a late rank may still read it."""
    run = _plan_run(args, rank, size, given)
    out_dir = check_output_dir(args.output_dir, "--output_dir")
    # held while referenced (closing it frees the folder): until this returns, the results written
    lock = claim_folder(out_dir, args.method, run.settings, args.overwrite, rank, size)  # noqa: F841
    mine, label = _run_share(args, rank, size, run, out_dir)
    return _finish(args, rank, size, settled, run, out_dir, mine, label)


def _plan_run(args: argparse.Namespace, rank: int, size: int, given: tuple[str, ...]) -> _RunPlan:
    """Every check and read that may refuse the run, before its folder is made or claimed: a refused
    run leaves no folder, lock, settings or log behind."""
    from minitflow.eval.data import load_samples

    dataset = _check_flags(args, size, given)
    # the samples and the folder's path before the model (a hub id is downloaded: a mistyped --data_file
    # must not cost that) and before the folder is made: a bad data file leaves no empty folder behind
    samples = load_samples(dataset, args.data_file, args.max_samples, mmlu_rows=args.mmlu_rows,
                           minerva_fewshot=not args.minerva_zero_shot)
    if not samples:
        raise UserError(f"no samples to evaluate in {args.data_file or dataset}")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"sample id {dup} occurs twice in {args.data_file or dataset}")
    # without making the folder: the model, checkpoint and memory checks below may still refuse
    check_output_dir(args.output_dir, "--output_dir", create=False)
    # the model before the folder: a missing one, or one without tokenizer.json, leaves no folder behind
    model_dir = model_dir_for(args) if args.method != "oracle" else None
    sampling = sampling_from(args, model_dir) if model_dir is not None else None  # oracle: no model, not even its top_k
    if sampling is not None:
        check_n_samples(args.n_samples, sampling)
    settings = run_settings(args, dataset, sampling)
    plan = None
    if model_dir is not None:  # every sample, done or another rank's: the same verdict on every rank and resume
        fits = check_questions_fit(model_dir, [s.question for s in samples], sampling.max_new_tokens, ids,
                                   method=args.method, style=args.dataset, options=method_options(args))
        # the memory check before the folder is touched: a refused run must leave no lock, settings or log.
        # It sizes from what is left to run, read without writing (--overwrite: everything); claim_folder
        # then holds the folder, and load_for checks again for what is left once it is held (reading nothing)
        left = remaining(samples, read_finished_before_claim(args.output_dir, args.method, args.overwrite),
                          rank, size)
        if left:  # it checks the weight headers too: missing or bad weights leave no claimed folder behind
            # each sample a request of its own: --n_samples K fills K times the questions' slots
            plan = plan_load(args, model_dir, positions=[fits[i] for i, _ in left for _ in range(args.n_samples)])
        # nothing left (a finished run merged or summarised again): the weights are never read, so they
        # need not be there; the settings are still compared, from the model's config and tokenizer
    return _RunPlan(dataset, samples, ids, model_dir, sampling, settings, plan,
                    fits if model_dir is not None else None)


def _run_share(args: argparse.Namespace, rank: int, size: int, run: _RunPlan,
               out_dir: Path) -> tuple[list[tuple[int, object]], str]:
    """Run this rank's share of the claimed folder into its partial file: (the samples it ran, the
    dataset's label)."""
    from minitflow.eval.data import dataset_label
    from minitflow.eval.scoring import oracle_prediction
    from minitflow.tflow.methods import SEEDS, run_method

    _setup_logging(out_dir, rank)
    part = out_dir / f"{args.method}_partial.rank{rank}.jsonl"
    start_partial(part)  # before reading: a line a crash cut off is dropped, with a warning
    done = read_finished(out_dir, args.method)
    mine = remaining(run.samples, done, rank, size)
    if rank == 0 and not done.keys() >= set(run.ids):  # a smaller run's results (a resume with a larger
        (out_dir / f"{args.method}_results.json").unlink(missing_ok=True)  # --max_samples) read as this run's, done
    label = dataset_label(run.dataset, run.samples)  # humaneval+ where the file has the plus tests
    log.info("%s on %s: %d samples, %d already done, %d for rank %d/%d", args.method, label, len(run.samples),
             len(done.keys() & set(run.ids)), len(mine), rank, size)
    if run.dataset in ("humaneval", "mbpp"):
        from minitflow.eval.sandbox import isolation_summary
        log.info("%s", isolation_summary())  # it begins "code sandbox: "
    llm = generator = None
    if args.method != "oracle" and mine:
        # the memory check sizes the KV cache from this rank's remaining samples, in the order they run
        # no plan where nothing was left before the claim and the claimed folder left some: planned here
        llm, generator, _, _ = load_for(args, run.plan or plan_load(args, run.model_dir),
                                        positions=[run.fits[i] for i, _ in mine for _ in range(args.n_samples)])
    k = args.n_samples
    scorer = BackgroundScorer(run.dataset, part, correct=sum(done[i]["n_correct"] if k > 1 else bool(done[i]["correct"])
                                                             for i in run.ids if i in done),
                              seen=k * sum(i in done for i in run.ids), show=rank == 0 and bool(mine),
                              label=f"{args.method}/{label}", total=k * len(mine), n_samples=k)
    try:
        if args.method == "oracle":
            for _, s in mine:
                scorer.put(s, oracle_prediction(run.dataset, s), {"truncated": False})  # nothing generated, nothing cut
        elif mine:
            index = [i for i, _ in mine]
            chunk = [s for _, s in mine]
            run_method(args.method, llm, [s.question for s in chunk], style=args.dataset, sampling=run.sampling,
                       generator=generator, batch_size=args.batch_size, refill_share=args.refill_share,
                       seeds=[(args.seed + i) % SEEDS for i in index],  # same sample, same seed, any sharding
                       labels=[s.id for s in chunk],  # an error mid-run names the sample
                       on_result=lambda q, r: scorer.put(chunk[q], r.answer, r.metadata(), r.sample),
                       keep_results=False,  # each output goes to the scorer: the run holds what is in flight
                       **({"samples": k} if k > 1 else {}), **method_options(args))
    except KeyboardInterrupt:
        scorer.cancel()
        raise
    finally:
        scorer.close()
    return mine, label


def _finish(args: argparse.Namespace, rank: int, size: int, settled: Callable[[], None], run: _RunPlan,
            out_dir: Path, mine: list[tuple[int, object]], label: str) -> dict | None:
    """Rank r > 0 is done once its rows are written; rank 0 merges every rank's rows and writes
    the results, still holding the folder."""
    if rank != 0:  # rank 0 knows this rank is done from its lock (free, "joined"), not from its heartbeat
        log.info("rank %d done: %d samples", rank, len(mine))
        settled()
        return None
    done = (wait_for_ranks(out_dir, args.method, run.ids, args.merge_timeout, size=size) if size > 1
            else read_finished(out_dir, args.method))
    rows = [done[i] for i in run.ids if i in done]
    summary = _summary(args, run.dataset, label, len(run.samples), rows,
                       rank_wall_times(out_dir, args.method, run.ids), run.settings, size)
    write_json(out_dir / f"{args.method}_results.json", {"summary": summary, "samples": rows})
    if size > 1 and summary["complete"] and wait_for_ranks_to_join(out_dir, args.method, size):  # (incomplete: a rank died)
        settled()
    log.info("accuracy %.4f (official protocol %.4f) on %d samples; mean processed tokens %.1f; results in %s", summary["accuracy"],
             summary["accuracy_official"], summary["n"], summary["mean_processed_tokens"], out_dir / f"{args.method}_results.json")
    cut = summary["truncation_stats"]
    if args.method != "oracle":  # it generates nothing: "0/N cut" would claim a measurement not made
        log.info("truncated by max_new_tokens: %d/%d outputs%s | truncation rate among correct (official protocol): %s, "
                 "among incorrect: %s", cut["total_truncated"], summary["n"] * args.n_samples - cut["unknown"],
                 f" ({cut['unknown']} more do not record it)" if cut["unknown"] else "",
                 *("N/A" if v is None else f"{v:.2%}" for v in (cut["rate_truncated_in_correct"],
                                                                  cut["rate_truncated_in_incorrect"])))
    if args.n_samples > 1:
        log.info("avg@%d %.4f; %s", args.n_samples, summary["accuracy"],
                 ", ".join([f"pass@{j} {v:.4f}" for j, v in summary["pass_at_k"].items()]
                           + [f"maj@{j} {v:.4f}" for j, v in summary.get("maj_at_k", {}).items()]))
    return summary
