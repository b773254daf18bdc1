"""Several evaluate processes on one output folder: ranks, locks, failure markers, heartbeats, waits.

Ranks (`torchrun --nproc-per-node N`, or RANK / WORLD_SIZE / LOCAL_RANK set by hand) share a folder
through files, not a torch.distributed collective: a barrier on NCCL times out (its watchdog) when
ranks finish minutes apart, and reading files needs no process group. Each rank holds
`{method}.rank{r}.lock` (flock) while it runs; rank r > 0 starts only once rank 0 of its launch holds
the folder; a rank that fails leaves `{method}.rank{r}.failed`, and each rank rewrites
`{method}.rank{r}.alive` while it runs, so a rank waiting for a dead one stops at once instead of
after minutes. Rank 0 merges by polling the partial files (wait_for_ranks). The files themselves
are described in minitflow/evaluate.py's docstring.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import IO, Callable

from minitflow.engine.llm import resolve_device
from minitflow.errors import UserError
from minitflow.eval.rows import compare_settings, partials, read_finished, settings_path
from minitflow.files import (NO_FLOCK, RESCORING, lock_held, lock_holder, lock_path, os_reason, rank_locks, sign_lock,
                             try_lock, write_json)

RANK0_WAIT_S = 300.0  # how long rank r > 0 waits for rank 0 of its run to take the folder
HEARTBEAT_S = 2.0  # how often each rank of a launch of several rewrites its heartbeat
HEARTBEAT_STALE_S = 30.0  # a heartbeat unchanged this long (by the reader's clock): its rank is gone
STARTED = time.time()  # about when this process started: a failure marker older than it is an earlier launch's
log = logging.getLogger("minitflow.evaluate")


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
    if local and not local.strip().isdecimal():  # resolve_device reads it: a traceback on a GPU node
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


def wait_for_ranks_to_join(out_dir: Path, method: str, size: int) -> bool:
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
        compare_settings(settings_path(out_dir, method), settings)
        return lock
    lock = take_lock(out_dir, method, rank)
    for r, other in rank_locks(out_dir, method).items():
        if r > 0 and _of_another_launch(other, r, size):
            raise UserError(f"another evaluate process is running {method} (rank {r}) in {out_dir}")
    if overwrite:
        _remove_stale_locks(out_dir, method, size)
    path, results = settings_path(out_dir, method), out_dir / f"{method}_results.json"
    if overwrite or not any(p.stat().st_size for p in partials(out_dir, method)):
        for f in [path, results, *partials(out_dir, method)]:  # nothing finished to keep
            f.unlink(missing_ok=True)
    if path.is_file():
        compare_settings(path, settings)
    elif partials(out_dir, method):
        raise UserError(f"{out_dir} holds {method} samples but no {path.name}, so they may come from other "
                        "settings; pass --overwrite to start afresh or use another --output_dir")
    else:
        write_json(path, settings)
    sign_lock(lock, f"{rid} {secrets.token_hex(8)}")
    return lock


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
        sig = [(p.name, p.stat().st_size) for p in partials(out_dir, method)]
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
