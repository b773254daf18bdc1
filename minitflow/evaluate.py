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
- `{method}.rank{r}.failed`: the error of rank r of a launch of several that failed (see mark_failed):
  the ranks waiting for it stop at once with that error instead of waiting minutes for a dead process.
- `{method}.rank{r}.alive`: rank r's heartbeat in a launch of several, rewritten every HEARTBEAT_S while
  it runs (see start_heartbeat): a rank waiting for one killed (kill -9, the OOM killer) before it
  took its lock, which leaves no marker, stops once it has not changed for HEARTBEAT_STALE_S. A clean
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
`accuracy_official`.
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
import json
import logging
import math
import os
import queue
import secrets
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from minitflow.cli import (add_model_args, check_model_args, check_n_samples, check_questions_fit, load_for,
                           method_options, model_and_checkpoint, model_dir_for, plan_load, run_cli, sampling_from)
from minitflow.engine.llm import resolve_device, resolve_dtype
from minitflow.engine.sampler import SamplingParams
from minitflow.errors import UserError
from minitflow.files import (NO_FLOCK, RESCORING, check_output_dir, decode_utf8, file_sha256, json_lines, lock_held, lock_holder,
                             lock_path, os_reason, rank_locks, sign_lock, try_lock, write_json)

METHODS = ("baseline", "textmas", "tflow", "latentmas", "oracle")
# the flags that choose or run a model, which the oracle does not have
ORACLE_REFUSES = ("model", "max_new_tokens", "temperature", "top_p", "top_k", "greedy", "compile", "eager",
                  "refill_share")
# those of them with a default that is not None: refused only where the command line gave them (main knows)
ORACLE_DEFAULTED = ("device", "dtype", "batch_size", "seed")
RANK0_WAIT_S = 300.0  # how long rank r > 0 waits for rank 0 of its run to take the folder
HEARTBEAT_S = 2.0  # how often each rank of a launch of several rewrites its heartbeat
HEARTBEAT_STALE_S = 30.0  # a heartbeat unchanged this long (by the reader's clock): its rank is gone
STARTED = time.time()  # about when this process started: a failure marker older than it is an earlier launch's
log = logging.getLogger("minitflow.evaluate")


# ---- ranks and locks ---------------------------------------------------------------------

def world() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment; (0, 1) without it."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise UserError("RANK and WORLD_SIZE must be integers") from None
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"RANK {rank} is not in [0, WORLD_SIZE {size})")
    local = os.environ.get("LOCAL_RANK")
    if local and not local.strip().isdigit():  # resolve_device reads it: a traceback on a GPU node
        raise UserError(f"LOCAL_RANK must be a GPU index (an integer >= 0), got {local!r}")
    return rank, size


def check_rank_device(device: str, size: int) -> None:
    """Ranks of a launch by hand without LOCAL_RANK all ran on the same GPU (cuda and auto mean
    cuda:LOCAL_RANK, else GPU 0): N models on one card, out of memory or N times slower, without a
    word. Refused unless --device names the GPU (cuda:N, one per rank) or the run is on the CPU."""
    name = str(device).strip().lower()
    if size > 1 and not os.environ.get("LOCAL_RANK") and not name.startswith("cuda:") \
            and resolve_device(device).type == "cuda":
        raise UserError(f"WORLD_SIZE is {size} but LOCAL_RANK is not set, so every rank would run on the same GPU: "
                        "set LOCAL_RANK to each rank's GPU on its node (torchrun sets it), or pass --device cuda:N")


def run_id(size: int) -> str:
    """The same string on every rank of one launch, different for another launch."""
    if size == 1:
        return f"{socket.gethostname()}:{os.getpid()}"
    keys = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "WORLD_SIZE")
    return "|".join(os.environ.get(k, "") for k in keys)


class RankBusy(UserError):
    """Another live evaluate process holds this rank's lock: a second launch on the folder. Launches by
    hand share a run id, so this rank's failure marker would read, to the first launch's ranks, as
    their own rank's failure (its rank 1 stopped, "rank 0 of this launch failed"): none is written."""


def take_lock(out_dir: Path, method: str, rank: int) -> IO[str]:
    """Hold `{method}.rank{rank}.lock` until this process exits (the OS drops it on a crash); a file
    system without flock is one line, not a traceback: without the lock two runs could share the folder.
    The signature an earlier launch left in it is cleared at once: a relaunch by hand or with
    --master-port has the same run_id, and its ranks r > 0 must not take the old signature for
    rank 0 having checked the folder."""
    path = lock_path(out_dir, method, rank)
    deadline = time.monotonic() + 0.5  # rank 0's lock_held probe holds a lock for microseconds: ask again
    while True:
        try:
            f = try_lock(path)
        except OSError as e:
            if e.errno in NO_FLOCK:
                raise UserError(f"cannot lock {path}: {os_reason(e)}; evaluate needs flock on the "
                                "file system of --output_dir (Lustre: mount with -o flock), or use another "
                                "--output_dir") from None
            raise UserError(f"cannot write {path}: {os_reason(e)}") from None
        if f is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if f is None:
        if lock_holder(path).startswith(RESCORING):
            raise UserError(f"score --results is rescoring {method} in {out_dir}; wait for it to finish")
        raise RankBusy(f"another evaluate process is running {method} (rank {rank}) in {out_dir}; "
                       "wait for it or use another --output_dir")
    sign_lock(f, "")
    failure_path(out_dir, method, rank).unlink(missing_ok=True)  # an earlier launch's, under this rank's lock
    return f


def failure_path(out_dir: Path, method: str, rank: int) -> Path:
    return out_dir / f"{method}.rank{rank}.failed"


def mark_failed(out_dir: Path, method: str, rank: int, size: int, error: BaseException) -> None:
    """Rank `rank` of a launch of several failed: say so in `{method}.rank{rank}.failed`, so that the
    ranks polling for it stop at once with its error instead of waiting RANK0_WAIT_S (or
    --merge_timeout) for a process that is gone. Where the folder does not exist yet (a rank refused
    before it made it: other flags, no model on its node) the marker makes it: the other ranks make
    it anyway and would wait there for minutes (rank 0 for --merge_timeout, an hour) for a rank that
    never comes; a failed launch of several leaves the folder with its markers, which say why. Not
    under torchrun (TORCHELASTIC_RUN_ID set), whose agent ends every rank once one fails: a bad flag
    there leaves no folder. Nor for a rank refused because another process holds its lock (RankBusy):
    the marker would be that process's launch's. A kill -9 leaves no marker: the ranks' heartbeats
    (start_heartbeat) and the waits' timeouts end those."""
    if size == 1 or not str(out_dir).strip() or (os.environ.get("TORCHELASTIC_RUN_ID") and not out_dir.is_dir()):
        return
    if isinstance(error, RankBusy):  # the marker's name is the live holder's launch's: see RankBusy
        return
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    try:
        write_json(failure_path(out_dir, method, rank), {"run_id": run_id(size), "time": time.time(), "error": text})
    except UserError:  # a full disk: the error in hand is the one to report
        pass


def launch_failure(out_dir: Path, method: str, rank: int, rid: str) -> str | None:
    """The error rank `rank` of *this* launch left in its failure marker, or None. A marker of an
    earlier launch with the same run id (a relaunch by hand) was written before this process
    started, so its time tells it apart (across nodes, clocks must agree better than that gap)."""
    try:
        marker = json.loads(failure_path(out_dir, method, rank).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(marker, dict) and marker.get("run_id") == rid and isinstance(marker.get("time"), (int, float))
            and marker["time"] >= STARTED):
        return None
    return str(marker.get("error"))


def heartbeat_path(out_dir: Path, method: str, rank: int) -> Path:
    return out_dir / f"{method}.rank{rank}.alive"


def start_heartbeat(output_dir: str, method: str, rank: int, size: int) -> Callable[[], None]:
    """A rank of a launch of several: rewrite `{method}.rank{rank}.alive` every HEARTBEAT_S until the
    process dies (kill -9 leaves no failure marker, and a rank takes no lock before the checks that
    precede the folder) or calls the returned function, which lets a write in hand finish (an exit
    mid-write would leave its temporary file). Written only once the folder exists (the first rank
    to claim it makes it): a run refused before then must leave no folder behind. A beat changes
    the file's text; readers time it by their own clock: the nodes' clocks need not agree."""
    stop = threading.Event()
    out_dir, rid = Path(output_dir), run_id(size)
    head = {"run_id": rid, "host": socket.gethostname(), "pid": os.getpid()}

    def beat() -> None:
        n = 0
        while not stop.is_set():
            if str(output_dir).strip() and out_dir.is_dir():
                try:
                    write_json(heartbeat_path(out_dir, method, rank), {**head, "beat": n, "time": time.time()},
                               indent=None)
                except UserError:  # a full disk: the run itself reports it; a stale beat at worst stops its waiters
                    pass
                n += 1
            stop.wait(HEARTBEAT_S)

    thread = threading.Thread(target=beat, daemon=True, name=f"rank{rank}-heartbeat")
    thread.start()

    def halt(remove: bool = False) -> None:
        """Stop beating; with `remove`, also delete the heartbeat (no rank will wait on it any more)."""
        stop.set()
        thread.join(timeout=30)  # a write on a hung file system must not hold the exit for ever
        if remove and not thread.is_alive():  # a write still in hand would put it back
            path = heartbeat_path(out_dir, method, rank)
            try:
                path.unlink(missing_ok=True)
            except OSError as e:  # the run is done: say so, do not fail it
                log.warning("cannot remove %s: %s", path, os_reason(e))

    return halt


class RankPulse:
    """What a rank saw of rank `rank`'s heartbeat while it waits for it. That rank of *this* launch
    is gone once its heartbeat (this run id) changed while watched, or was first seen written after
    this process started (across nodes, clocks must agree better than that gap, as for failure
    markers), and then did not change for HEARTBEAT_STALE_S. A heartbeat an earlier launch left does
    neither and never counts: without one of this launch's, the waits end as before (RANK0_WAIT_S,
    --merge_timeout)."""

    def __init__(self, out_dir: Path, method: str, rank: int, rid: str):
        self.path, self.rid = heartbeat_path(out_dir, method, rank), rid
        self.text: str | None = None
        self.since = time.monotonic()
        self.ours = False

    def gone(self) -> str | None:
        """None while that rank may be alive, else who it was, from its last beat (for the error line)."""
        text = lock_holder(self.path)
        try:
            beat = json.loads(text)
        except ValueError:
            beat = None
        if not (isinstance(beat, dict) and beat.get("run_id") == self.rid):
            self.text, self.since = None, time.monotonic()
            return None
        if text != self.text:
            when = beat.get("time")
            self.ours = self.ours or self.text is not None or (isinstance(when, (int, float)) and when >= STARTED)
            self.text, self.since = text, time.monotonic()
            return None
        if self.ours and time.monotonic() - self.since > HEARTBEAT_STALE_S:
            return f"{beat.get('host')} pid {beat.get('pid')}"
        return None


def _wait_for_rank0(out_dir: Path, method: str, rid: str) -> str:
    """Rank r > 0 starts only once rank 0 of *this* launch holds the folder (and has checked
    the settings, or cleared it for --overwrite). Returns rank 0's signature. Stops at once on
    rank 0's failure marker, and once its heartbeat stopped (killed: no marker)."""
    path = lock_path(out_dir, method, 0)
    pulse = RankPulse(out_dir, method, 0, rid)
    deadline = time.monotonic() + RANK0_WAIT_S
    while time.monotonic() < deadline:
        signature = lock_holder(path)
        if signature.rpartition(" ")[0] == rid and lock_held(path):
            return signature
        error = launch_failure(out_dir, method, 0, rid)
        if error is not None:
            raise UserError(f"rank 0 of this launch failed, so this rank stops: {error}")
        who = pulse.gone()
        if who is not None:
            raise UserError(f"rank 0 of this launch ({who}) is gone: its heartbeat {pulse.path} has not changed for "
                            f"{HEARTBEAT_STALE_S:.0f} s (killed?), so this rank stops")
        time.sleep(0.2)
    raise UserError(f"rank 0 of this launch did not take {out_dir} within {RANK0_WAIT_S:.0f} s "
                    "(another run holds it, or rank 0 failed)")


def _of_another_launch(path: Path, r: int, size: int) -> bool:
    """Rank 0, before it touches the folder: whether a live process of another launch holds rank r's
    lock: any rank >= size, or one that has joined a rank 0 (this launch's rank 0 has not signed
    yet). A launch whose rank 0 died (kill -9 by hand or under srun, a merge timeout) leaves such a
    rank appending rows of its settings: --overwrite deleted its file under it and it wrote them
    back into the new run, which counted them. This launch's rank r clears its lock's text just
    after taking it, so a "joined" text is read again after a pause."""
    if r >= size:
        return lock_held(path)

    def joined() -> bool:
        return lock_holder(path).endswith(" joined")

    if not (joined() and lock_held(path)):
        return False
    time.sleep(0.2)
    return joined() and lock_held(path)


def _wait_for_ranks_to_join(out_dir: Path, method: str, size: int) -> bool:
    """Rank 0 holds the folder until every rank r > 0 has seen it hold it: a rank 0 with nothing
    left to do would otherwise exit first, and rank r would wait for it in vain. Rank 0's
    signature holds a nonce, so a rank's "joined" left by an earlier launch does not count.
    False when a rank neither joined nor ended within RANK0_WAIT_S: it may still come."""
    joined = lock_holder(lock_path(out_dir, method, 0)) + " joined"
    rid = run_id(size)
    pulses = {r: RankPulse(out_dir, method, r, rid) for r in range(1, size)}
    deadline = time.monotonic() + RANK0_WAIT_S
    while time.monotonic() < deadline:
        if all(lock_holder(lock_path(out_dir, method, r)) == joined or launch_failure(out_dir, method, r, rid) is not None
               or _killed(out_dir, method, r, pulses[r]) for r in range(1, size)):
            return True
        time.sleep(0.2)
    log.warning("not every rank joined within %.0f s (a rank failed?)", RANK0_WAIT_S)
    return False


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


def _settings_path(out_dir: Path, method: str) -> Path:
    return out_dir / f"{method}_settings.json"


def _compare_settings(path: Path, settings: dict) -> None:
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


def _remove_stale_locks(out_dir: Path, method: str, size: int) -> None:
    """--overwrite: the locks of ranks >= `size` that a larger earlier launch left go with its other files.
    Each is unlinked while this process holds its flock, so one a live process took meanwhile is refused, not
    deleted. The run.rank{r}.log files stay: they are per folder, shared by every method."""
    for r, path in rank_locks(out_dir, method).items():
        if r < size:
            continue
        lock = try_lock(path)
        if lock is None:
            raise UserError(f"another evaluate process is running {method} (rank {r}) in {out_dir}")
        with lock:
            path.unlink(missing_ok=True)


def claim_folder(out_dir: Path, method: str, settings: dict, overwrite: bool, rank: int, size: int) -> IO[str]:
    """Lock this rank's files; rank 0 also checks (or writes, or with `overwrite` clears) the
    folder's settings, and rank r > 0 waits for it. Returns the open lock (keep it).
    Rank r > 0 takes its lock only once rank 0 of its launch holds the folder: two launches started
    together on one folder, each rank locking at once, could split the locks (one launch's rank 0,
    the other's rank 1), each launch then had a rank refused, torchrun ended both, and neither ran.
    A live process running rank r here already is still refused at once (the lock tried and let go)."""
    rid = run_id(size)
    if rank > 0:
        take_lock(out_dir, method, rank).close()
        signature = _wait_for_rank0(out_dir, method, rid)
        lock = take_lock(out_dir, method, rank)
        sign_lock(lock, signature + " joined")  # rank 0 may exit now
        _compare_settings(_settings_path(out_dir, method), settings)
        return lock
    lock = take_lock(out_dir, method, rank)
    for r, other in rank_locks(out_dir, method).items():
        if r > 0 and _of_another_launch(other, r, size):
            raise UserError(f"another evaluate process is running {method} (rank {r}) in {out_dir}")
    if overwrite:
        _remove_stale_locks(out_dir, method, size)
    path, results = _settings_path(out_dir, method), out_dir / f"{method}_results.json"
    if overwrite or not any(p.stat().st_size for p in _partials(out_dir, method)):
        for f in [path, results, *_partials(out_dir, method)]:  # nothing finished to keep
            f.unlink(missing_ok=True)
    if path.is_file():
        _compare_settings(path, settings)
    elif _partials(out_dir, method):
        raise UserError(f"{out_dir} holds {method} samples but no {path.name}, so they may come from other "
                        "settings; pass --overwrite to start afresh or use another --output_dir")
    else:
        write_json(path, settings)
    sign_lock(lock, f"{rid} {secrets.token_hex(8)}")
    return lock


# ---- finished samples --------------------------------------------------------------------

def _partials(out_dir: Path, method: str) -> list[Path]:
    return sorted(out_dir.glob(f"{method}_partial.rank*.jsonl"))


def _rows(part: Path) -> Iterator[dict]:
    """The rows of one partial file. Lines are split on "\\n" only: predictions may hold U+0085
    or U+2028, which str.splitlines would cut a row at."""
    for _, line in json_lines(decode_utf8(_whole_lines(part.read_bytes()), str(part))):
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by a crash (or an integer past the digit limit): redo that sample
            continue
        if isinstance(row, dict) and "id" in row:
            yield row


def read_finished(out_dir: Path, method: str) -> dict[str, dict]:
    """id -> row over every rank's partial file."""
    return {row["id"]: row for part in _partials(out_dir, method) for row in _rows(part)}


def rank_wall_times(out_dir: Path, method: str, ids: list[str]) -> dict[str, float]:
    """{rank: seconds} that each rank file's rows of `ids` took: a row's wall_time is its rank's time
    since its previous row, so the rows of one file add up to that rank's run (its resumes added),
    and the ranks ran side by side. A sample two ranks both finished (a resume with another world
    size) counts in both: both spent the time."""
    want = set(ids)
    times = {}
    for part in _partials(out_dir, method):
        rank = part.name[len(f"{method}_partial.rank"):-len(".jsonl")]
        times[rank] = sum(float(r.get("wall_time", 0)) for r in _rows(part) if r["id"] in want)
    return dict(sorted(times.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1))


def _whole_lines(data: bytes) -> bytes:
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


def _remaining(samples, done: dict[str, dict], rank: int, size: int) -> list[tuple[int, object]]:
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
    if len(_whole_lines(data)) < len(data):
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


def sample_row(sample, prediction: str, meta: dict, correct: bool, extracted: str, wall: float) -> dict:
    usage = meta.get("token_usage", {})
    return {"id": sample.id, "question": sample.question, "gold": sample.answer, "prediction": prediction,
            "extracted": extracted, "correct": bool(correct), "processed_tokens": usage.get("processed_tokens", 0),
            "official_tokens": usage.get("total_tokens", 0), "token_usage": usage,
            "finish_reason": meta.get("finish_reason"), "wall_time": wall}


SAMPLE_KEYS = ("prediction", "extracted", "correct", "correct_official", "extracted_official", "processed_tokens",
               "official_tokens", "token_usage", "finish_reason")


def question_row(sample, rows: list[dict]) -> dict:
    """--n_samples K: one question's row from its K sample rows (sample_row's, in sample order): the
    samples' own fields under `samples`, the counts the summary reads, and the question's wall time
    (the samples' added: each is its rank's time since the row before it)."""
    return {"id": sample.id, "question": sample.question, "gold": sample.answer, "n_samples": len(rows),
            "samples": [{k: r[k] for k in SAMPLE_KEYS} for r in rows],
            "n_correct": sum(r["correct"] for r in rows), "n_correct_official": sum(r["correct_official"] for r in rows),
            "processed_tokens": sum(r["processed_tokens"] for r in rows),
            "official_tokens": sum(r["official_tokens"] for r in rows), "wall_time": sum(r["wall_time"] for r in rows)}


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


def _killed(out_dir: Path, method: str, r: int, pulse: RankPulse) -> str | None:
    """Rank r's heartbeat stopped while it held no lock (killed before it took the folder), or None."""
    who = pulse.gone()
    return None if who is None or lock_held(lock_path(out_dir, method, r)) else who


def _ranks_exited(out_dir: Path, method: str, size: int, pulses: dict[int, RankPulse]) -> bool:
    """Whether every rank r > 0 of this launch has joined and exited (its lock free), or failed (its
    marker, also before it joined: other flags, a question too long), or was killed before it joined
    (its heartbeat stopped): no row will come. A rank exits only once its rows are written, or when it failed."""
    joined = lock_holder(lock_path(out_dir, method, 0)) + " joined"
    rid = run_id(size)

    def gone(r: int) -> bool:
        p = lock_path(out_dir, method, r)
        if _killed(out_dir, method, r, pulses[r]) is not None:
            return True
        return (lock_holder(p) == joined or launch_failure(out_dir, method, r, rid) is not None) and not lock_held(p)

    return all(gone(r) for r in range(1, size))


def wait_for_ranks(out_dir: Path, method: str, ids: list[str], stall_s: float, poll_s: float = 1.0,
                   size: int | None = None) -> dict[str, dict]:
    """Rank 0: the finished rows, once every id is there or nothing new came for `stall_s`, or (with
    `size`) once every other rank of this launch has exited: a rank that failed in a launch by hand
    or by srun, which end no other rank, left rank 0 waiting --merge_timeout (an hour) for rows
    that could no longer come."""
    want = set(ids)
    last_sig, last_change, done = None, time.monotonic(), {}
    pulses = {r: RankPulse(out_dir, method, r, run_id(size)) for r in range(1, size or 1)}
    while True:
        sig = [(p.name, p.stat().st_size) for p in _partials(out_dir, method)]
        if sig != last_sig:
            done = read_finished(out_dir, method)
            last_sig, last_change = sig, time.monotonic()
            if want <= done.keys():
                return done
        elif time.monotonic() - last_change > stall_s:
            log.warning("no new sample for %.0f s: %d of %d missing (a rank died?); writing incomplete results, "
                        "rerun to finish them", stall_s, len(want - done.keys()), len(want))
            return done
        elif size is not None and _ranks_exited(out_dir, method, size, pulses):
            done = read_finished(out_dir, method)  # rows a rank wrote just before it exited
            if not want <= done.keys():
                rid = run_id(size)
                failed = [f"rank {r}: {e}" for r in range(1, size) if (e := launch_failure(out_dir, method, r, rid))]
                failed += [f"rank {r} ({who}): its heartbeat stopped (killed?)" for r in range(1, size)
                           if (who := _killed(out_dir, method, r, pulses[r]))]
                log.warning("every other rank has exited: %d of %d missing (%s); writing incomplete results, rerun "
                            "to finish them", len(want - done.keys()), len(want), "; ".join(failed) or "a rank failed")
            return done
        time.sleep(poll_s)


def dataset_label(dataset: str, samples) -> str:
    """The report's column: humaneval splits into HumanEval and HumanEval+ (the file with plus tests)."""
    if dataset == "humaneval":
        return "humaneval+" if any(s.meta.get("plus_input") for s in samples) else "humaneval"
    return dataset


# ---- the run -----------------------------------------------------------------------------

def _setup_logging(out_dir: Path, rank: int) -> None:
    """The run's log lines go to its run.log (and rank 0's to stderr too), in place of the root logger's
    handlers, which are not closed: main() puts them back (_logging_restored)."""
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
def _logging_restored() -> Iterator[None]:
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
        if stop_beating is not None:
            stop_beating(remove=True)

    try:
        return _evaluate(args, rank, size, given, settled)
    except BaseException as e:
        mark_failed(Path(args.output_dir), args.method, rank, size, e)
        raise
    finally:
        if stop_beating is not None:
            stop_beating()


def _evaluate(args: argparse.Namespace, rank: int, size: int, given: tuple[str, ...],
              settled: Callable[[], None]) -> dict | None:
    """One rank's run. `settled` is called once no rank of this launch will wait on this one (a rank
    r > 0 that wrote its rows, having joined; rank 0 once every rank joined a complete merge): a
    clean run leaves no heartbeat behind. Other ends keep it: a late rank may still read it."""
    from minitflow.eval.data import load_samples, prompt_style, resolve_dataset, resolve_mmlu_rows
    from minitflow.eval.scoring import check_eval_dependencies, oracle_prediction
    from minitflow.tflow.methods import SEEDS, run_method

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
    # the model before the folder: a missing one, or one without tokenizer.json, leaves no folder behind
    model_dir = model_dir_for(args) if args.method != "oracle" else None
    sampling = sampling_from(args) if model_dir is not None else None  # oracle: no model, not even its top_k
    if sampling is not None:
        check_n_samples(args.n_samples, sampling)
    settings = run_settings(args, dataset, sampling)
    # the samples before the folder: a bad data file leaves no empty folder behind
    samples = load_samples(dataset, args.data_file, args.max_samples, mmlu_rows=args.mmlu_rows,
                           minerva_fewshot=not args.minerva_zero_shot)
    if not samples:
        raise UserError(f"no samples to evaluate in {args.data_file or dataset}")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"sample id {dup} occurs twice in {args.data_file or dataset}")
    # before the checkpoint is read and the memory checked, without making the folder: those may still refuse
    check_output_dir(args.output_dir, "--output_dir", create=False)
    plan = None
    if model_dir is not None:  # every sample, done or another rank's: the same verdict on every rank and resume
        fits = check_questions_fit(model_dir, [s.question for s in samples], sampling.max_new_tokens, ids,
                                   method=args.method, style=args.dataset, options=method_options(args))
        # the memory check before the folder is touched: a refused run must leave no lock, settings or log.
        # It sizes from what is left to run, read without writing (--overwrite: everything); claim_folder
        # then holds the folder, and load_for checks again for what is left once it is held (reading nothing)
        left = _remaining(samples, read_finished_before_claim(args.output_dir, args.method, args.overwrite),
                          rank, size)
        if left:  # it checks the weight headers too: missing or bad weights leave no claimed folder behind
            # each sample a request of its own: --n_samples K fills K times the questions' slots
            plan = plan_load(args, positions=[fits[i] for i, _ in left for _ in range(args.n_samples)])
        # nothing left (a finished run merged or summarised again): the weights are never read, so they
        # need not be there; the settings are still compared, from the model's config and tokenizer
    out_dir = check_output_dir(args.output_dir, "--output_dir")
    lock = claim_folder(out_dir, args.method, settings, args.overwrite, rank, size)  # noqa: F841 (held)
    _setup_logging(out_dir, rank)
    part = out_dir / f"{args.method}_partial.rank{rank}.jsonl"
    start_partial(part)  # before reading: a line a crash cut off is dropped, with a warning
    done = read_finished(out_dir, args.method)
    mine = _remaining(samples, done, rank, size)
    label = dataset_label(dataset, samples)  # humaneval+ where the file has the plus tests
    log.info("%s on %s: %d samples, %d already done, %d for rank %d/%d", args.method, label, len(samples),
             len(done.keys() & set(ids)), len(mine), rank, size)
    if dataset in ("humaneval", "mbpp"):
        from minitflow.eval.sandbox import isolation_summary
        log.info("%s", isolation_summary())  # it begins "code sandbox: "
    llm = generator = None
    if args.method != "oracle" and mine:
        # the memory check sizes the KV cache from this rank's remaining samples, in the order they run
        llm, generator, _, _ = load_for(args, positions=[fits[i] for i, _ in mine for _ in range(args.n_samples)],
                                        plan=plan)
    k = args.n_samples
    scorer = BackgroundScorer(dataset, part, correct=sum(done[i]["n_correct"] if k > 1 else bool(done[i]["correct"])
                                                         for i in ids if i in done),
                              seen=k * sum(i in done for i in ids), show=rank == 0 and bool(mine),
                              label=f"{args.method}/{label}", total=k * len(mine), n_samples=k)
    try:
        if args.method == "oracle":
            for _, s in mine:
                scorer.put(s, oracle_prediction(dataset, s), {})
        elif mine:
            index = [i for i, _ in mine]
            chunk = [s for _, s in mine]
            run_method(args.method, llm, [s.question for s in chunk], style=args.dataset, sampling=sampling,
                       generator=generator, batch_size=args.batch_size, refill_share=args.refill_share,
                       seeds=[(args.seed + i) % SEEDS for i in index],  # same sample, same seed, any sharding
                       labels=[s.id for s in chunk],  # an error mid-run names the sample
                       on_result=lambda q, r: scorer.put(chunk[q], r.answer, r.metadata(), r.sample),
                       **({"samples": k} if k > 1 else {}), **method_options(args))
    except KeyboardInterrupt:
        scorer.cancel()
        raise
    finally:
        scorer.close()
    if rank != 0:  # rank 0 knows this rank is done from its lock (free, "joined"), not from its heartbeat
        log.info("rank %d done: %d samples", rank, len(mine))
        settled()
        return None
    done = (wait_for_ranks(out_dir, args.method, ids, args.merge_timeout, size=size) if size > 1
            else read_finished(out_dir, args.method))
    rows = [done[i] for i in ids if i in done]
    n = len(rows)
    rank_times = rank_wall_times(out_dir, args.method, ids)
    model_label, checkpoint = model_and_checkpoint(args)
    summary = {
        "method": args.method, "dataset": dataset, "dataset_label": label,
        "n": n, "complete": n == len(samples),
        **({"accuracy": sum(bool(r["correct"]) for r in rows) / max(n, 1),
            "accuracy_official": sum(bool(r.get("correct_official")) for r in rows) / max(n, 1)} if k == 1 else
           {"accuracy": None, "accuracy_official": None}),  # sampled_summary's, below
        "mmlu_rows": args.mmlu_rows if dataset == "mmlu" else None,
        "mean_processed_tokens": sum(r["processed_tokens"] for r in rows) / max(n, 1),
        "mean_official_tokens": sum(r["official_tokens"] for r in rows) / max(n, 1),
        # ranks run side by side: the run took as long as its slowest rank, not the sum of all rows
        "total_wall_time": max(rank_times.values(), default=0.0), "rank_wall_times": rank_times,
        "mean_wall_time": sum(r["wall_time"] for r in rows) / max(n, 1),  # one rank's seconds per question
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
    write_json(out_dir / f"{args.method}_results.json", {"summary": summary, "samples": rows})
    if size > 1 and summary["complete"] and _wait_for_ranks_to_join(out_dir, args.method, size):  # (incomplete: a rank died)
        settled()
    log.info("accuracy %.4f (official protocol %.4f) on %d samples; mean processed tokens %.1f; results in %s", summary["accuracy"],
             summary["accuracy_official"], n, summary["mean_processed_tokens"], out_dir / f"{args.method}_results.json")
    if k > 1:
        log.info("avg@%d %.4f; %s", k, summary["accuracy"],
                 ", ".join([f"pass@{j} {v:.4f}" for j, v in summary["pass_at_k"].items()]
                           + [f"maj@{j} {v:.4f}" for j, v in summary.get("maj_at_k", {}).items()]))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minitflow.evaluate", description=__doc__.split("\n")[0])
    add_model_args(p, METHODS)
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
    with _logging_restored():
        summary = evaluate(args, given)
        if summary is not None and not summary["complete"]:  # a script's `evaluate && report` must not go on
            log.error("results incomplete: %d of the samples are there (a rank died); rerun the same command to "
                      "finish them", summary["n"])
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
