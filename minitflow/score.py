"""`python -m minitflow.score`: score (or rescore) model outputs without running a model.

Two modes:

  --predictions P.jsonl   one {"id", "prediction"} per line, ids as evaluate writes them
                          (gsm8k/<idx or line>, minerva_math/<idx or line>,
                          mmlu/<subject>/<k>, task ids for code); an id may repeat
                          (several samples of one problem).  --output O.jsonl gets one
                          {"id", "correct", "extracted"} per input line, in order.
  --results DIR           rescore an evaluate output folder in place: every
                          {method}_results.json (and its partial files, so a resumed
                          run keeps the new verdicts) gets both verdicts per row and
                          summary accuracy / accuracy_official recomputed; the dataset,
                          data file and MMLU row set default to the run's own.
                          Refused while a live evaluate run of a method there holds
                          its {method}.rank*.lock; score holds those locks itself
                          while it rescores, so an evaluate started meanwhile is
                          refused. The summary's n is recounted and `rescored_with`
                          records the data file the verdicts used.

Both print the accuracy.  Unknown ids and bad lines are one-line errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import IO, Any

from minitflow.errors import Parser, UserError, run_cli, stop_in_one_line_at_start
stop_in_one_line_at_start(__name__)  # run as `python -m`: a Ctrl-C in the imports below is one line too

from minitflow.files import (NO_FLOCK, RESCORING, check_output_file, file_sha256, json_reason, json_rows, json_text,
                             lock_path, os_reason, rank_locks, read_text, sign_lock, try_lock, unfinished,
                             write_text)


def read_predictions(path: Path) -> list[tuple[str, str | None]]:
    """(id, prediction) per non-empty line; a bad line is a UserError naming it."""
    out = []
    for lineno, row in json_rows(read_text(path, "predictions file"), str(path)):
        if not isinstance(row, dict) or "id" not in row or "prediction" not in row:
            raise UserError(f'{path}:{lineno}: expected an object with "id" and "prediction"')
        pred = row["prediction"]
        if pred is not None and not isinstance(pred, str):
            raise UserError(f"{path}:{lineno}: prediction must be a string, got {type(pred).__name__}")
        out.append((str(row["id"]), pred))
    if not out:
        raise UserError(f"no predictions in {path}")
    return out


def _samples_by_id(dataset: str, data_file: str | None, mmlu_rows: str) -> dict[str, Any]:
    from minitflow.eval.data import load_samples

    return {s.id: s for s in load_samples(dataset, data_file, mmlu_rows=mmlu_rows)}


def _lookup(by_id: dict[str, Any], ids: list[str], where: str, dataset: str, data_file: str | None) -> list[Any]:
    for k, i in enumerate(ids):
        if i not in by_id:
            raise UserError(f"{where}: unknown id {i!r} (entry {k + 1}) for {dataset} in "
                            f"{data_file or 'the online copy'}")
    return [by_id[i] for i in ids]


def score_predictions(args: argparse.Namespace) -> dict[str, Any]:
    from minitflow.eval.data import dataset_label, resolve_dataset
    from minitflow.eval.scoring import check_eval_dependencies, score_samples

    if not args.dataset:
        raise UserError("--predictions needs --dataset")
    dataset = resolve_dataset(args.dataset)
    if args.mmlu_rows is not None and dataset != "mmlu":  # else ignored without a word
        raise UserError(f"--mmlu_rows applies to mmlu only, not {dataset}")
    check_eval_dependencies(dataset)
    path = Path(args.predictions)
    preds = read_predictions(path)
    # before scoring (code runs take minutes): a directory or unwritable --output fails now, not at the end
    output = (check_output_file(args.output, "--output", inputs={"--predictions": path, "--data_file": args.data_file})
              if args.output is not None else None)
    ids = [i for i, _ in preds]
    by_id = _samples_by_id(dataset, args.data_file, args.mmlu_rows or "official")
    samples = _lookup(by_id, ids, str(path), dataset, args.data_file)
    scores = score_samples(dataset, [p for _, p in preds], samples, workers=args.workers,
                           timeout=args.timeout, scorer=args.scorer)
    if output is not None:
        write_text(output, "".join(json.dumps({"id": i, "correct": bool(ok), "extracted": ext},
                                                 ensure_ascii=False) + "\n" for i, (ok, ext) in zip(ids, scores)))
    correct = sum(bool(ok) for ok, _ in scores)
    label = dataset_label(dataset, samples)  # humaneval+ where the file has plus tests, as evaluate and report say
    print(f"accuracy {correct / len(scores):.4f} ({correct}/{len(scores)}, {args.scorer} scorer, {label})")
    return {"accuracy": correct / len(scores), "n": len(scores), "correct": correct}


def _rescore_rows(dataset: str, rows: list[dict], by_id: dict[str, Any], where: str, args,
                  data_file: str | None) -> None:
    from minitflow.eval.scoring import score_both

    for k, r in enumerate(rows):
        if not isinstance(r, dict) or "id" not in r or "prediction" not in r:
            raise UserError(f'{where}: sample {k + 1} lacks "id" or "prediction"')
    samples = _lookup(by_id, [str(r["id"]) for r in rows], where, dataset, data_file)
    both = score_both(dataset, [r["prediction"] for r in rows], samples, workers=args.workers, timeout=args.timeout)
    for r, b in zip(rows, both):
        r.update(b)


def _check_once(rows: list, path: Path) -> None:
    """evaluate writes each question once: a repeated id (files merged by hand) is refused, not counted twice."""
    first: dict[str, int] = {}
    for k, r in enumerate(rows):
        if isinstance(r, dict) and "id" in r:
            i = str(r["id"])
            if i in first:
                raise UserError(f"{path}: sample id {i!r} occurs twice (samples {first[i] + 1} and {k + 1}); "
                                "evaluate writes each question once")
            first[i] = k


def _check_unchanged(path: Path, data_file: str | None, sha: str | None, settings: Any) -> None:
    """The run's own data file (`sha`: its sha256 now) must still be the one it ran on (its recorded
    sha256): one replaced since holds other golds under the same ids. --data_file names a file to
    score against anyway."""
    recorded = settings.get("data_file_sha256") if isinstance(settings, dict) else None
    if sha is None or not isinstance(recorded, str) or len(recorded) != 64:
        return  # online, an older folder without the record, or a missing file (load_samples names it)
    if sha != recorded:
        raise UserError(f"{path}: the run's data file {data_file} has changed since the run (sha256); pass "
                        "--data_file to rescore against it as it is now")


def _rescore_partials(folder: Path, method: str, dataset: str, by_id: dict[str, Any], args,
                      data_file: str | None) -> list[tuple[Path, str]]:
    """The new text of each {method}_partial.rank*.jsonl with its verdicts rescored (a cut last
    line stays as it is); nothing is written here."""
    out = []
    for part in sorted(folder.glob(f"{method}_partial.rank*.jsonl")):
        lines = read_text(part, "partial file").split("\n")
        parsed: list[tuple[int, dict]] = []
        for n, line in enumerate(lines):
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:  # JSONDecodeError, or an integer past the digit limit
                row = None  # evaluate redoes a line cut by a crash
            if isinstance(row, dict) and "id" in row and "prediction" in row and str(row["id"]) in by_id:
                parsed.append((n, row))
        if not parsed:
            continue
        _rescore_rows(dataset, [row for _, row in parsed], by_id, str(part), args, data_file)
        for n, row in parsed:
            lines[n] = json_text(row)
        out.append((part, "\n".join(lines)))
    return out


def rescore_results(args: argparse.Namespace) -> list[dict[str, Any]]:
    folder = Path(args.results)
    if folder.is_file():
        raise UserError(f"--results {folder} is a file, not a folder: give the evaluate output folder that holds it")
    if not folder.is_dir():
        raise UserError(f"results folder not found: {folder}")
    files = sorted(folder.glob("*_results.json"))
    if not files:
        missing = unfinished([str(folder)])
        if missing:  # "no results" alone sent the user looking for the wrong folder
            raise UserError(f"no *_results.json in {folder}, only unfinished runs (partial rows): {'; '.join(missing)}; "
                            "rerun their evaluate command to finish them (it resumes), then score --results")
        raise UserError(f"no *_results.json in {folder} (evaluate writes {{method}}_results.json)")
    locks: list[tuple[Path, IO[str], bool]] = []
    signed: list[tuple[IO[str], str]] = []
    try:
        for path in files:  # before any file is read: a live run would append rows scored the old way, or lose ours
            locks += _hold_method(folder, path.name[:-len("_results.json")])
        for _, lock, _ in locks:  # signed once all are held, and given back their text at the end
            lock.seek(0)
            signed.append((lock, lock.read()))
            sign_lock(lock, RESCORING)
        return _rescore_files(files, folder, args)
    finally:
        for lock, text in signed:
            sign_lock(lock, text)
        for path, lock, made in locks:
            if made:  # a lock file score made itself goes, while still held
                path.unlink(missing_ok=True)
            lock.close()


def _hold_method(folder: Path, method: str) -> list[tuple[Path, IO[str], bool]]:
    """(path, open lock, whether score made the file) for rank 0's lock of `method` and every
    other rank's there, held as a run of evaluate holds them: an evaluate (re)started while files
    are rescored would append rows to a partial file about to be replaced (and lose them), so it
    is refused until score is done. Refused if a run holds one."""
    held: list[tuple[Path, IO[str], bool]] = []
    for r in sorted({0, *rank_locks(folder, method)}):
        path = lock_path(folder, method, r)
        made = not path.exists()
        try:
            lock = try_lock(path)
        except OSError as e:
            if e.errno in NO_FLOCK:  # no evaluate can hold the folder there (it refuses to run): nothing to hold
                if made:
                    path.unlink(missing_ok=True)
                continue
            lock, err = None, f"cannot lock {path}: {os_reason(e)}"
        else:
            err = f"another evaluate process is running {method} (rank {r}) in {folder}; " \
                  "rescore it once that run has finished"
        if lock is None:
            for _, f, _ in held:
                f.close()
            if made:
                path.unlink(missing_ok=True)
            raise UserError(err)
        held.append((path, lock, made))
    return held


def _rescore_files(files: list[Path], folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from minitflow.eval.data import dataset_label, resolve_dataset, resolve_mmlu_rows
    from minitflow.eval.scoring import check_eval_dependencies
    from minitflow.eval.rows import token_usage_stats, truncation_stats

    summaries = []
    writes: list[tuple[Path, str]] = []
    lines: list[str] = []
    for path in files:
        text = read_text(path, "results file")  # a UserError (a ValueError too) of its own
        try:
            data = json.loads(text)
        except ValueError as e:
            raise UserError(f"{path}: not valid JSON ({json_reason(e)})") from None
        if not isinstance(data, dict) or not isinstance(data.get("summary"), dict) \
                or not isinstance(data.get("samples"), list):
            raise UserError(f'{path}: expected {{"summary": {{...}}, "samples": [...]}}')
        summary, rows = data["summary"], data["samples"]
        if summary.get("n_samples", 1) != 1:  # its rows hold K predictions each, under "samples"
            raise UserError(f"{path}: a run with --n_samples {summary['n_samples']} (several predictions per question); "
                            "score --results rescores one-sample runs only")
        config = summary.get("config") or {}
        name = args.dataset or summary.get("dataset") or config.get("dataset")
        if not name:
            raise UserError(f"{path}: the summary names no dataset; pass --dataset")
        dataset = resolve_dataset(name)
        if args.mmlu_rows is not None and dataset != "mmlu":  # else ignored without a word
            raise UserError(f"{path}: --mmlu_rows applies to mmlu only, not {dataset}")
        check_eval_dependencies(dataset)
        # each file's own run's data file (a folder may hold methods run on other files)
        data_file = args.data_file if args.data_file is not None else config.get("data_file")
        sha = file_sha256(data_file)  # None: online, or no such file
        if args.data_file is None:
            _check_unchanged(path, data_file, sha, summary.get("settings"))
        rows_set = args.mmlu_rows or resolve_mmlu_rows(config.get("mmlu_rows"), config.get("include_all_mmlu"))
        by_id = _samples_by_id(dataset, data_file, rows_set)
        _check_once(rows, path)
        if not rows:  # an accuracy of nothing would read as 0.0000
            raise UserError(f"{path}: no samples to rescore")
        _rescore_rows(dataset, rows, by_id, str(path), args, data_file)
        n = summary["n"] = len(rows)  # a summary edited or merged by hand may say otherwise
        # what these verdicts were scored against, overrides included (settings keep what the run used)
        summary["rescored_with"] = {"dataset": dataset, "data_file": data_file and os.path.abspath(data_file),
                                    "data_file_sha256": sha}
        summary["accuracy"] = sum(bool(r["correct"]) for r in rows) / max(n, 1)
        summary["accuracy_official"] = sum(bool(r["correct_official"]) for r in rows) / max(n, 1)
        if "truncation_stats" in summary:  # split by the official verdicts, which may have changed
            summary["truncation_stats"] = truncation_stats(rows)
        if "token_usage_stats" in summary:  # the verdicts leave it as it was, but n is recounted from the rows
            summary["token_usage_stats"] = token_usage_stats(rows)
        if dataset == "mmlu":  # the row set the verdicts used (--mmlu_rows may differ from the run's)
            summary["mmlu_rows"] = rows_set
        method = path.name[:-len("_results.json")]
        writes += _rescore_partials(folder, method, dataset, by_id, args, data_file)
        writes.append((path, json_text(data, indent=1) + "\n"))
        label = dataset_label(dataset, by_id.values())
        lines.append(f"{method}: accuracy {summary['accuracy']:.4f} strict, {summary['accuracy_official']:.4f} "
                     f"official (the paper's metric) on {n} {label} samples; rescored {path}")
        summaries.append(summary)
    # every file checked and scored before any is written: a refusal in a later file leaves the folder as it was
    for target, text in writes:
        write_text(target, text)
    print("\n".join(lines))
    return summaries


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m minitflow.score", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=None, help="gsm8k, minerva_math, mmlu, humaneval, mbpp (or an alias)")
    p.add_argument("--data_file", default=None, help="local JSONL(.gz) copy of the test split (no network)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", default=None, help='JSONL, one {"id", "prediction"} per line')
    src.add_argument("--results", default=None, help="an evaluate output folder to rescore in place")
    p.add_argument("--scorer", default=None, choices=["strict", "official"],
                   help="with --predictions: strict (default) or official (the paper's protocol)")
    p.add_argument("--output", default=None, help='with --predictions: JSONL of {"id", "correct", "extracted"}')
    p.add_argument("--mmlu_rows", default=None, choices=["official", "ok", "all"],
                   help="MMLU-Redux row set (default: official, or the run's own with --results)")
    p.add_argument("--workers", type=int, default=2, help="code sandboxes run at once, or processes comparing MATH "
                   "answers (default: %(default)s)")
    from minitflow.eval.code_exec import DEFAULT_TIMEOUT
    from minitflow.eval.math_equiv import MATH_TIMEOUT
    p.add_argument("--timeout", type=float, default=None, help="seconds per code test set / sympy check "
                   f"(default: {DEFAULT_TIMEOUT:g} / {MATH_TIMEOUT:g})")
    args = p.parse_args(argv)
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        # the scorers read 0 as "unset" (the default) and would run a negative budget as given
        raise UserError(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
    if args.results:
        if args.output:
            raise UserError("--output goes with --predictions; --results rewrites the folder in place")
        if args.scorer:  # both verdicts are rewritten: a choice of one would be ignored
            raise UserError("--scorer goes with --predictions; --results rescores both verdicts (correct and "
                            "correct_official)")
        rescore_results(args)
    else:
        args.scorer = args.scorer or "strict"
        score_predictions(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
