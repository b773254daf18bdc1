"""What an evaluate folder holds per method: its settings, the finished rows (one JSON line per
question in each rank's `{method}_partial.rank{r}.jsonl`, appended as it is scored, so a stopped run
resumes), and the background scorer that writes them while the model runs on."""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterator

from minitflow.errors import UserError
from minitflow.files import decode_utf8, json_lines, os_reason

log = logging.getLogger("minitflow.evaluate")


# ---- the settings that define a run ------------------------------------------------------

def recorded_seed(settings: dict) -> dict:
    """Settings with the seed as it matters: greedy decoding takes the top token whatever the seed, so a
    greedy run records none (a resume with another --seed was refused, --overwrite offered, for the same
    answers), unless it seeds a --random_generator; also applied to a folder's older record."""
    if settings.get("temperature") == 0 and settings.get("checkpoint_sha256") != "random" and "seed" in settings:
        return {**settings, "seed": None}
    return settings


def recorded_options(options: object) -> object:
    """Method options as a folder records them: textmas' sender limit at the official default is left out,
    as a run without --sender_max_new_tokens records it (the same run: a resume with the flag at its
    default, or without it after a run with it, was refused, --overwrite offered); anything else as it is."""
    from minitflow.tflow.prompts import TEXTMAS_SENDER_MAX_NEW_TOKENS
    if isinstance(options, dict) and options.get("sender_max_new_tokens") == TEXTMAS_SENDER_MAX_NEW_TOKENS:
        return {k: v for k, v in options.items() if k != "sender_max_new_tokens"}
    return options


def settings_path(out_dir: Path, method: str) -> Path:
    return out_dir / f"{method}_settings.json"


def compare_settings(path: Path, settings: dict) -> None:
    """A resume: the folder's recorded settings (`path`) must be this run's, else one line naming the first
    that differs and the way out."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError, JSONDecodeError and a huge integer are ValueErrors
        raise UserError(f"{path} is unreadable; pass --overwrite to start afresh") from None
    if not isinstance(saved, dict):  # valid JSON, but not what evaluate writes (an edit, another tool)
        raise UserError(f"{path} is not a settings object; pass --overwrite to start afresh")
    if saved.get("n_samples", 1) != settings.get("n_samples", 1):  # absent: 1 (a file lacking it is no wildcard)
        raise UserError(f"{path.parent} holds a {settings['method']} run with --n_samples {saved.get('n_samples', 1)}, "
                        f"this one has --n_samples {settings.get('n_samples', 1)}: its questions' samples cannot be "
                        "mixed; pass the same --n_samples, --overwrite to start afresh, or use another --output_dir")
    # a setting the file lacks was added to minitflow after it was written: not compared. --include_all_mmlu
    # is --mmlu_rows official under its older name: where the file records the row set (mmlu_rows), that is
    # compared, not which of the two flags chose it (a resume with the other was refused, --overwrite offered)
    alias = {"include_all_mmlu"} if "mmlu_rows" in saved else set()
    if "method_options" in saved:  # a folder written before recorded_options, with the default given
        saved = {**saved, "method_options": recorded_options(saved["method_options"])}
    saved = recorded_seed(saved)  # a greedy folder written before recorded_seed
    # another dataset first: its data file's sha256 differs too, and named first it hid the plain reason
    diff = sorted((k for k in saved if k not in alias and saved.get(k) != settings.get(k)),
                  key=lambda k: (k != "dataset", k))
    if diff:
        k = diff[0]
        # the same method on another dataset in one folder (the default --output_dir is shared): --overwrite
        # would delete the finished run, so the way out is another folder
        hint = (f"use another --output_dir for {settings['dataset']} (--overwrite would delete that "
                f"{saved.get(k)} run)" if k == "dataset" else
                "pass --overwrite to start afresh or use another --output_dir")
        raise UserError(f"{path.parent} holds a {settings['method']} run with {k}={saved.get(k)!r}, this one has "
                        f"{k}={settings.get(k)!r}{f' (and {len(diff) - 1} more)' if len(diff) > 1 else ''}; {hint}")


# ---- finished samples --------------------------------------------------------------------

def partials(out_dir: Path, method: str) -> list[Path]:
    return sorted(out_dir.glob(f"{method}_partial.rank*.jsonl"))


def file_rows(part: Path) -> Iterator[dict]:
    """The rows of one partial file. Lines are split on "\\n" only: predictions may hold U+0085
    or U+2028, which str.splitlines would cut a row at."""
    for _, line in json_lines(decode_utf8(whole_lines(part.read_bytes()), str(part))):
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a crash (or an integer past the digit limit): redo that sample
            continue
        if isinstance(row, dict) and "id" in row:
            yield row


def read_finished(out_dir: Path, method: str) -> dict[str, dict]:
    """id -> row over every rank's partial file."""
    return {row["id"]: row for part in partials(out_dir, method) for row in file_rows(part)}


def rank_wall_times(out_dir: Path, method: str, ids: list[str]) -> dict[str, float]:
    """{rank: seconds} that each rank file's rows of `ids` took: a row's wall_time is its rank's time
    since its previous row, so the rows of one file add up to that rank's run (its resumes added),
    and the ranks ran side by side. A sample two ranks both finished (a resume with another world
    size) counts in both: both spent the time."""
    want = set(ids)
    times = {}
    for part in partials(out_dir, method):
        rank = part.name[len(f"{method}_partial.rank"):-len(".jsonl")]
        times[rank] = sum(float(r.get("wall_time", 0)) for r in file_rows(part) if r["id"] in want)
    return dict(sorted(times.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1))


def whole_lines(data: bytes) -> bytes:
    """A partial file's bytes without a last line a crash cut off (start_partial drops it from the
    file; reading before the folder is claimed must not stop at it, cut inside a UTF-8 sequence)."""
    start = data.rfind(b"\n") + 1
    if start == len(data):
        return data
    try:
        json.loads(data[start:])
    except ValueError:  # JSONDecodeError, or bytes cut inside a UTF-8 sequence
        return data[:start]
    return data


def read_finished_before_claim(output_dir: str, method: str, overwrite: bool) -> dict[str, dict]:
    """read_finished of a folder not yet claimed, reading only: what a resume will find done
    (nothing with --overwrite, which clears it, or where there is no folder yet). A run that
    finishes samples meanwhile leaves fewer to do, which load_for checks again once claimed."""
    out_dir = Path(output_dir)  # as check_output_dir reads it
    return {} if overwrite or not out_dir.is_dir() else read_finished(out_dir, method)


def remaining(samples, done: dict[str, dict], rank: int, size: int) -> list[tuple[int, object]]:
    """(index, sample) of this rank's share (i % size == rank) not done yet, in run order."""
    return [(i, s) for i, s in enumerate(samples) if i % size == rank and s.id not in done]


def start_partial(part: Path) -> None:
    """A crash may have cut the last line: drop it, saying so (its sample is redone), so the
    file holds complete rows only and the next one starts on a fresh line. A last line that is
    whole but lacks its newline is kept. Only this rank's own file, under its lock."""
    if not (part.is_file() and part.stat().st_size):
        return
    with part.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":  # the common case: no need to read the whole file
            return
    data = part.read_bytes()
    start = data.rfind(b"\n") + 1
    if len(whole_lines(data)) < len(data):
        log.warning("%s: its last line was cut off (%d bytes, a crash mid-write?); dropped it, that sample "
                    "is redone", part, len(data) - start)
        with part.open("r+b") as f:
            f.truncate(start)
        return
    with part.open("ab") as f:
        f.write(b"\n")


def append_sample(part: Path, row: dict) -> None:
    """Append one finished sample as one JSON line (ensure_ascii: no raw line separators). A
    full disk is one line, not a traceback: the user must act, and a rerun resumes (a row cut
    short is dropped then)."""
    try:
        with part.open("ab") as f:
            f.write((json.dumps(row, ensure_ascii=True) + "\n").encode("ascii"))
    except OSError as e:
        raise UserError(f"cannot write {part}: {os_reason(e)}") from None


# ---- a question's row and the summary of many ------------------------------------------------

def sample_row(sample, prediction: str, meta: dict, correct: bool, extracted: str, wall: float) -> dict:
    usage = meta.get("token_usage", {})
    return {"id": sample.id, "question": sample.question, "gold": sample.answer, "prediction": prediction,
            "extracted": extracted, "correct": bool(correct), "processed_tokens": usage.get("processed_tokens", 0),
            "official_tokens": usage.get("total_tokens", 0), "token_usage": usage,
            "finish_reason": meta.get("finish_reason"), "truncated": meta.get("truncated"), "wall_time": wall,
            # textmas: what its agents said (the official metadata.conversation_log); the other methods have none
            **({"conversation_log": meta["conversation_log"]} if "conversation_log" in meta else {})}


SAMPLE_KEYS = ("prediction", "extracted", "correct", "correct_official", "extracted_official", "processed_tokens",
               "official_tokens", "token_usage", "finish_reason", "truncated")


def question_row(sample, rows: list[dict]) -> dict:
    """--n_samples K: one question's row from its K sample rows (sample_row's, in sample order): the
    samples' own fields under `samples`, the counts the summary reads, and the question's wall time
    (the samples' added: each is its rank's time since the row before it)."""
    return {"id": sample.id, "question": sample.question, "gold": sample.answer, "n_samples": len(rows),
            "samples": [{**{k: r[k] for k in SAMPLE_KEYS},
                         **({"conversation_log": r["conversation_log"]} if "conversation_log" in r else {})} for r in rows],
            "n_correct": sum(r["correct"] for r in rows), "n_correct_official": sum(r["correct_official"] for r in rows),
            "processed_tokens": sum(r["processed_tokens"] for r in rows),
            "official_tokens": sum(r["official_tokens"] for r in rows), "wall_time": sum(r["wall_time"] for r in rows)}


def _outputs(rows: list[dict], n_samples: int) -> list[dict]:
    """Every output's row: with --n_samples K a question's row holds its samples' under `samples`."""
    return [o for r in rows for o in (r["samples"] if n_samples > 1 else [r])]


def truncation_stats(rows: list[dict], n_samples: int = 1) -> dict:
    """The official evaluator's `truncation_stats` over every output (with --n_samples K each sample, as the
    official counts each of its outputs): those cut at max_new_tokens (a row's `truncated`), split by the
    official protocol's verdict (`correct_official`, the official evaluator's own), and the rates within
    each. `unknown`: outputs that do not record it (rows written before it was), counted in none of these
    (a missing value is not read as False)."""
    outputs = _outputs(rows, n_samples)
    known = [o for o in outputs if isinstance(o.get("truncated"), bool)]
    right = [o["truncated"] for o in known if o.get("correct_official")]
    wrong = [o["truncated"] for o in known if not o.get("correct_official")]
    return {"total_truncated": sum(right) + sum(wrong), "truncated_among_correct": sum(right),
            "truncated_among_incorrect": sum(wrong),
            "rate_truncated_in_correct": sum(right) / len(right) if right else None,
            "rate_truncated_in_incorrect": sum(wrong) / len(wrong) if wrong else None,
            "unknown": len(outputs) - len(known)}


def token_usage_stats(rows: list[dict], n_samples: int = 1) -> dict:
    """The official evaluator's `token_usage_stats`: the official token_usage's prompt, completion and total
    tokens (generating agents only) summed over every output and averaged per output (with --n_samples K
    each sample, as the official counts each of its outputs; each textmas sample runs its own senders, and
    tflow's and latentmas' senders generate nothing, so they are in none). An output without them (the oracle's)
    counts 0, as the official's `.get(..., 0)`."""
    outputs = _outputs(rows, n_samples)
    sums = {k: sum(o.get("token_usage", {}).get(k, 0) for o in outputs)
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return {**{f"avg_{k}": v / len(outputs) if outputs else 0.0 for k, v in sums.items()},
            **{f"sum_{k}": v for k, v in sums.items()}}


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one question with c of its n samples correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), the chance that k of the n drawn without replacement hold a correct one."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def sampled_summary(rows: list[dict], n_samples: int, dataset: str) -> dict:
    """--n_samples K > 1: the summary's accuracy (avg@K: the mean over every sample), pass@k for k = 1, 2,
    4, ... <= K and, but for code, maj@K (the majority answer's verdict, scoring.majority_correct),
    strict and official, and the token means per sample."""
    from minitflow.eval.scoring import CODE_DATASETS, majority_correct
    outputs = max(len(rows) * n_samples, 1)
    ks = [2 ** e for e in range(n_samples.bit_length()) if 2 ** e <= n_samples]
    return {"n_samples": n_samples,
            "accuracy": sum(r["n_correct"] for r in rows) / outputs,
            "accuracy_official": sum(r["n_correct_official"] for r in rows) / outputs,
            **{key: {str(k): sum(pass_at_k(n_samples, r[count], k) for r in rows) / max(len(rows), 1) for k in ks}
               for key, count in (("pass_at_k", "n_correct"), ("pass_at_k_official", "n_correct_official"))},
            **({} if dataset in CODE_DATASETS else
               {key: {str(n_samples): sum(majority_correct(dataset, r["samples"], scorer) for r in rows) / max(len(rows), 1)}
                for key, scorer in (("maj_at_k", "strict"), ("maj_at_k_official", "official"))}),
            "mean_processed_tokens": sum(r["processed_tokens"] for r in rows) / outputs,
            "mean_official_tokens": sum(r["official_tokens"] for r in rows) / outputs}


# ---- scoring beside the model -------------------------------------------------------------

class BackgroundScorer:
    """Scores finished questions on a thread and appends their rows, so generation never waits
    for code tests or sympy. Questions queue as they finish; the thread scores whatever has
    queued (up to 16 at once: code runs two sandboxes in parallel) and writes the rows.

    MATH is scored in a child process, on its main thread (scoring.ScoringProcess), where
    SIGALRM stops sympy and math-verify on time. On this thread a comparison past its timeout
    was abandoned, still running: one hard answer left two threads computing (+1 GB) after its
    verdict, holding the GIL beside the model's loop. `timeout`: the scorers' (None: defaults).

    Ctrl-C (`cancel`) drops what is queued and stops the programs and comparisons in hand: the
    run ends at once, not after minutes of hung programs, and a rerun generates those questions
    again (their rows were never written)."""

    def __init__(self, dataset: str, part: Path, correct: int, seen: int, show: bool, label: str, total: int,
                 timeout: float | None = None, n_samples: int = 1):
        from tqdm import tqdm
        self.dataset, self.part, self.timeout = dataset, part, timeout
        # n_samples > 1: a question's scored samples wait here (id -> {sample: (piece, sample)}) until all are in
        self.n_samples, self.pending = n_samples, {}
        self.correct, self.seen = correct, seen
        self.bar = tqdm(total=total, disable=not show, desc=label)
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.last = time.perf_counter()
        self.child = None  # started on the first MATH rows
        self.queued = self.written = 0
        self.cancelled = False
        self.lock = threading.Lock()  # the child is started and killed under it
        self.finished = threading.Event()  # waited on, not join(): a join cut by Ctrl-C may not wait again
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def put(self, sample, prediction: str, meta: dict, j: int = 0) -> None:
        """Queue output `j` (of n_samples) of `sample` for scoring."""
        if self.error is not None:
            raise self.error
        now = time.perf_counter()
        self.queued += 1
        self.queue.put((sample, prediction, meta, now - self.last, j))
        self.last = now

    def _work(self) -> None:
        try:
            self._loop()
        finally:
            self.finished.set()

    def _loop(self) -> None:
        while True:
            items = [self.queue.get()]
            while len(items) < 16 and not self.queue.empty():
                items.append(self.queue.get())
            stop = any(i is None for i in items)
            items = [i for i in items if i is not None]
            try:
                if items and self.error is None:
                    self._score(items)
            except BaseException as e:  # re-raised in the caller's thread
                self.error = e
            if stop:
                return

    def _score(self, items: list[tuple]) -> None:
        from minitflow.eval.scoring import ScoringProcess, score_both
        with self.lock:
            if self.cancelled:
                return
            if self.dataset == "minerva_math" and self.child is None:
                self.child = ScoringProcess()
        verdicts = (self.child or score_both)(self.dataset, [it[1] for it in items], [it[0] for it in items],
                                              timeout=self.timeout)
        for (s, pred, meta, wall, j), v in zip(items, verdicts):
            row = sample_row(s, pred, meta, v["correct"], v["extracted"], wall)
            row.update(correct_official=bool(v["correct_official"]), extracted_official=v["extracted_official"])
            if self.n_samples == 1:
                append_sample(self.part, row)
            else:
                got = self.pending.setdefault(s.id, {})
                got[j] = row
                if len(got) == self.n_samples:
                    append_sample(self.part, question_row(s, [got[k] for k in range(self.n_samples)]))
                    del self.pending[s.id]
            self.correct += bool(v["correct"])
            self.seen += 1
            self.written += 1
        self.bar.update(len(items))
        self.bar.set_postfix(acc=f"{self.correct / max(self.seen, 1):.3f}")

    def cancel(self) -> None:
        """Drop the questions still queued, stop the scoring in hand; `close` then returns at once."""
        from minitflow.eval.sandbox import cancel_sandboxes
        with self.lock:
            self.cancelled = True
            if self.child is not None:
                self.child.kill()
        cancel_sandboxes()

    def close(self) -> None:
        """Wait for every queued question to be scored and written; raise a scorer error (after a
        cancel: say how many questions went unscored). Ctrl-C while waiting cancels."""
        self.queue.put(None)
        try:
            self.finished.wait()
        except KeyboardInterrupt:
            self.cancel()
            self.finished.wait()
            raise
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.child is not None:
            self.child.close()
        self.bar.close()
        if self.cancelled:
            from minitflow.eval.sandbox import cancel_sandboxes
            cancel_sandboxes(False)
            if self.queued > self.written:
                log.warning("interrupted: %d finished questions left unscored; a rerun generates them again",
                            self.queued - self.written)
        elif self.error is not None:
            raise self.error
