"""Parent side of the code sandbox: which isolation, temp folders, uids, launching, reading.

One `Sandbox` is one run of `sandbox_child.py` (the untrusted runner) under
`sandbox_init.py` (the trusted launcher).  The parent talks to the runner over
its own pipes only: a job pipe (the runner's fd 0), a result pipe (fd 3, one
JSON record per line) and a diagnostics pipe (fds 1/2); the launcher reports
on a status pipe the runner does not hold.  Nothing read from the runner is
trusted: records are parsed as data, size-capped, and judged by the caller.

Isolation is probed once per process (`isolation()`), strongest first:
"namespaces" (mount/net/pid/ipc/uts, plus a user namespace when not root) if
the kernel lets us, else the "floor" (rlimits, its own uid when root, empty
environment, its own session).  MINITFLOW_SANDBOX=namespaces|floor forces one
(an unavailable forced mode is an error).  See docs/sandbox.md.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import importlib.util
import json
import math
import os
import pickle
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any


SANDBOX_ENV = "MINITFLOW_SANDBOX"
UID_BASE = 2_000_000_000  # sandbox uids: UID_BASE + (evaluator pid) * UID_SLOTS + slot
UID_SLOTS = 256
DIR_PREFIX = "minitflow-sandbox-"
_HERE = os.path.dirname(os.path.abspath(__file__))
INIT_PATH = os.path.join(_HERE, "sandbox_init.py")
CHILD_PATH = os.path.join(_HERE, "sandbox_child.py")
F_SETPIPE_SZ = 1031  # Linux fcntl
CLOSE_GRACE = 10.0  # seconds the launcher gets to kill and sweep before it is killed itself
CANCEL_POLL_S = 0.1  # how often a sandbox waiting for its program looks for a cancel
MAX_HEADER_BYTES = 64 << 10  # a record's header (before the value): a kind and a short text


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up or run (not the program's fault)."""


class SandboxCancelled(Exception):
    """cancel_sandboxes() stopped this sandbox: no verdict, neither a pass nor a failure."""


_CANCELLED = threading.Event()


def cancel_sandboxes(cancel: bool = True) -> None:
    """Stop every sandbox of this process (their waits raise SandboxCancelled within
    CANCEL_POLL_S and leaving them kills their programs) and refuse new ones, until called
    with False: a Ctrl-C'd evaluation leaves at once instead of after the programs in hand."""
    if cancel:
        _CANCELLED.set()
    else:
        _CANCELLED.clear()


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox (rlimits of the runner, caps of its tmpfs)."""

    memory_bytes: int
    cpu_seconds: float
    wall_seconds: float  # the launcher's own hard stop, a safety net behind the parent's deadlines
    file_bytes: int = 64 << 20
    open_files: int = 64
    processes: int = 1  # the runner itself: no fork, no thread (RLIMIT_NPROC counts its uid)
    tmpfs_bytes: int = 256 << 20
    tmpfs_files: int = 16384  # files and folders in it (each costs ~1 KiB of kernel memory beyond tmpfs_bytes)


@dataclass(frozen=True)
class Isolation:
    mode: str  # "namespaces" or "floor"
    userns: bool  # namespaces through a user namespace (evaluator not root)
    as_root: bool  # evaluator is root: each sandbox runs as its own uid
    note: str  # why not namespaces, if so


# ------------------------------------------------------------- temp folders


def _proc_start_time(pid: int) -> str | None:
    """Start time of a live process (field 22 of /proc/pid/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _uid_range(pid: int) -> range:
    start = UID_BASE + (pid % (1 << 22)) * UID_SLOTS
    return range(start, start + UID_SLOTS)


def live_processes(uids: range | set[int], started_before: int | None = None) -> list[int]:
    """Live (not zombie) processes whose real uid is in `uids`, from /proc; only those whose
    start time (clock ticks since boot, as _proc_start_time) is below `started_before` if given."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                fields = dict(ln.split(b":", 1) for ln in f if b":" in ln)
            uid, state = int(fields[b"Uid"].split()[0]), fields[b"State"].split()[0]
        except (OSError, KeyError, ValueError, IndexError):
            continue
        if uid in uids and state not in (b"Z", b"X"):  # zombies are dead already
            if started_before is not None and int(_proc_start_time(int(name)) or started_before) >= started_before:
                continue  # gone meanwhile, or younger than the bound
            out.append(int(name))
    return out


def _kill_uids(uids: range, started_before: int | None = None) -> None:
    """SIGKILL every process whose real uid is in `uids` (scan /proc until none is left);
    only processes started before `started_before` (clock ticks since boot) if given."""
    for _ in range(50):
        found = live_processes(uids, started_before)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not found:
            return
        time.sleep(0.05)


SYSV = (("shm", "shmid", "shmctl"), ("msg", "msqid", "msgctl"), ("sem", "semid", "semctl"))


def _remove_sysv(uids: range, changed_before: float | None = None) -> None:
    """IPC_RMID every System V segment, queue and semaphore set owned by a sandbox uid in
    `uids` (only those last changed before `changed_before`, epoch seconds, if given): on the
    floor (no IPC namespace) they outlive the processes the sweep kills, holding memory
    outside every limit. Only root (the owner of the uids) can; others have none."""
    if os.geteuid() != 0:
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for kind, id_col, call in SYSV:
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                header, *rows = [line.split() for line in f]
        except OSError:
            continue
        for row in rows:
            fields = dict(zip(header, row))
            if changed_before is not None and int(fields.get("ctime", changed_before)) >= changed_before:
                continue
            if int(fields.get("uid", -1)) in uids:
                getattr(libc, call)(int(fields[id_col]), *((0, 0) if kind == "sem" else (0, None)))  # IPC_RMID


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _uptime_ticks() -> int:
    """Now, in the clock ticks since boot that process start times count."""
    with open("/proc/uptime", "rb") as f:
        return int(float(f.read().split()[0]) * _CLK_TCK)


def _boot_time() -> float:
    """Epoch seconds of the boot (btime of /proc/stat): process start ticks count from it."""
    with open("/proc/stat", "rb") as f:
        return float(next(ln for ln in f if ln.startswith(b"btime ")).split()[1])


def _pid_namespace() -> int:
    """This process's PID namespace (inode of /proc/self/ns/pid): pids mean something only in it."""
    return os.stat("/proc/self/ns/pid").st_ino


def cleanup_stale(tmp: str | None = None) -> list[str]:
    """Remove sandbox folders whose evaluator is dead (killed mid-run), after killing
    any process still running under that evaluator's sandbox uids; returns the paths.
    Only folders of evaluators in this PID namespace: another's pids are not in our /proc,
    so a live evaluator there (a container or `unshare -p` sharing /tmp) would look dead."""
    tmp = tmp or tempfile.gettempdir()
    removed = []
    ours = str(_pid_namespace())
    for name in os.listdir(tmp):
        m = re.fullmatch(re.escape(DIR_PREFIX) + r"(\d+)-(\d+)-(\d+)", name)
        if not m or m.group(1) != ours:
            continue
        pid, start = int(m.group(2)), m.group(3)
        path = os.path.join(tmp, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            continue  # not an evaluator's: a program on the floor may make one in a shared /tmp
        now = _proc_start_time(pid)
        if now == start:
            continue  # its evaluator is alive
        if os.geteuid() == 0:
            # pid_max is often 32768: a process holding the dead evaluator's pid now (or from
            # any moment on) may be an evaluator whose sandboxes run under these same uids; they
            # all started after it did, so only what is older than it (than now) was the dead one's
            ticks = int(now) if now is not None else _uptime_ticks()
            _kill_uids(_uid_range(pid), ticks)
            _remove_sysv(_uid_range(pid), _boot_time() + ticks / _CLK_TCK)
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    return removed


def _remove_root(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child
        shutil.rmtree(path, ignore_errors=True)


_root_lock = threading.Lock()
_root_dir: dict[int, str] = {}


def _sandbox_root() -> str:
    """This process's folder for sandboxes: $TMPDIR/minitflow-sandbox-<PID namespace>-<pid>-<start
    time>/. Created on first use, after removing stale folders of dead evaluators."""
    pid = os.getpid()
    with _root_lock:
        if pid not in _root_dir:
            tmp = tempfile.gettempdir()
            cleanup_stale(tmp)
            path = os.path.join(tmp, f"{DIR_PREFIX}{_pid_namespace()}-{pid}-{_proc_start_time(pid)}")
            os.makedirs(path, mode=0o711, exist_ok=True)
            os.chmod(path, 0o711)  # sandbox uids must reach their own folder inside (floor)
            atexit.register(_remove_root, path, pid)
            _root_dir[pid] = path
        return _root_dir[pid]


# -------------------------------------------------------------------- uids

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _take_uid() -> int:
    with _uid_lock:
        for uid in _uid_range(os.getpid()):
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid
    raise SandboxError(f"more than {UID_SLOTS} sandboxes at once")


def _release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


# ---------------------------------------------------------------- isolation


def _python_binds() -> list[str]:
    """Read-only paths the runner needs: the Python installation and its site-packages."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    spec = importlib.util.find_spec("evalplus")
    if spec and spec.submodule_search_locations:
        paths.add(os.path.dirname(list(spec.submodule_search_locations)[0]))
    real = sorted({os.path.realpath(p) for p in paths})
    out: list[str] = []
    for p in real:  # drop paths inside another bound path
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


HIDDEN_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/libexec", "/usr/games")


@functools.lru_cache(maxsize=None)
def _root_layout() -> tuple[list[str], dict[str, str]]:
    """(bind paths, symlinks) of the namespace root: /usr, a few /etc files, Python."""
    binds, links = ["/usr"], {}
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            links[top] = os.readlink(top)
        elif os.path.isdir(top):
            binds.append(top)
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        if os.path.exists(f):
            binds.append(f)
    binds += [p for p in _python_binds() if not any(p.startswith(b + "/") for b in binds)]
    return binds, links


@functools.lru_cache(maxsize=None)
def evalplus_utils_path() -> str:
    """evalplus/eval/utils.py (standard library only), loaded by path in the runner so that
    it does not import the evalplus package (numpy, psutil)."""
    spec = importlib.util.find_spec("evalplus")
    if spec is None or not spec.submodule_search_locations:
        raise SandboxError("evalplus is not installed (pip install evalplus)")
    return os.path.join(list(spec.submodule_search_locations)[0], "eval", "utils.py")


_iso_lock = threading.Lock()
_iso: dict[int, Isolation] = {}


def _probe(iso: Isolation) -> str:
    """Run a one-line program under `iso`; '' if it works, else why not."""
    job = {"mode": "candidate", "program": "def f(x):\n    return x + 1\n", "entry_point": "f",
           "inputs": [[41]], "limits": [5.0], "not_none": False, "memory_bytes": 1 << 30,
           "evalplus_utils": evalplus_utils_path()}
    try:
        with Sandbox(job, Limits(memory_bytes=1 << 30, cpu_seconds=20, wall_seconds=30), iso) as box:
            records = []
            while len(records) < 3:
                rec, _ = box.next_record(20.0)
                if rec is None:
                    break
                records.append([*rec[0], rec[1]] if rec[1] is not None else rec[0])
    except (SandboxError, TimeoutError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    if records != [["ready"], ["loaded"], ["ok", b"42"]]:
        return f"probe program got {records!r} {box.diagnostics()[-300:]!r}"
    return ""


def isolation() -> Isolation:
    """The isolation sandboxes use in this process (probed once)."""
    pid = os.getpid()
    with _iso_lock:
        if pid in _iso:
            return _iso[pid]
        want = os.environ.get(SANDBOX_ENV, "auto").strip().lower() or "auto"
        if want not in ("auto", "namespaces", "floor"):
            raise SandboxError(f"{SANDBOX_ENV}={want!r}: expected auto, namespaces or floor")
        as_root = os.geteuid() == 0
        note = f"forced by {SANDBOX_ENV}=floor"
        if want != "floor":
            ns = Isolation("namespaces", userns=not as_root, as_root=as_root, note="")
            why = _probe(ns)
            if not why:
                _iso[pid] = ns
                return ns
            if want == "namespaces":
                raise SandboxError(f"{SANDBOX_ENV}=namespaces but namespaces do not work here: {why}")
            note = f"namespaces unavailable: {why}"
        floor = Isolation("floor", userns=False, as_root=as_root, note=note)
        why = _probe(floor)
        if why:
            raise SandboxError(f"cannot run sandboxed code on this machine: {why}")
        _iso[pid] = floor
        return floor


def isolation_summary() -> str:
    """One line for run.log: which isolation code sandboxes get here."""
    iso = isolation()
    who = "own uid per sandbox (from %d)" % UID_BASE if iso.as_root else "evaluator's uid"
    common = ("rlimits (address space, CPU, processes, open files, file size), empty environment, "
              "no inherited descriptors, own session killed as a whole")
    if iso.mode == "namespaces":
        how = ("namespaces: mount (new root on tmpfs, read-only /usr and Python), pid, network "
               "(no interfaces), ipc, uts" + (", user (nested, no capabilities)" if iso.userns else ""))
        who = who if iso.as_root else "uid 1000 in a nested user namespace"
        return f"code sandbox: {how}; {who}; {common}"
    return f"code sandbox: floor (no namespaces; {iso.note}); {who}; {common}; network NOT blocked"


# ------------------------------------------------------------------ sandbox


def _set_nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


_child_source: list[str] = []


def _runner_argv() -> list[str]:
    if not _child_source:
        with open(CHILD_PATH, encoding="utf-8") as f:
            _child_source.append(f.read())
    return [os.path.realpath(sys.executable), "-I", "-B", "-c", _child_source[0]]


def _wait_exit(proc: subprocess.Popen, timeout: float) -> None:
    """Popen.wait(timeout) without its sleep-polling (it adds ~20 ms per sandbox)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        proc.wait(timeout)
        return
    try:
        if not select.select([fd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    proc.wait()


class Sandbox:
    """One isolated runner process tree.  Use as a context manager: leaving it kills
    everything the runner started and removes its folder."""

    def __init__(self, job: dict[str, Any], limits: Limits, iso: Isolation | None = None,
                 max_record_bytes: int = 64 << 20) -> None:
        self.iso = iso or isolation()
        self.limits = limits
        self.max_record_bytes = max_record_bytes
        self.uid: int | None = None
        self.dir: str | None = None
        self.proc: subprocess.Popen | None = None
        self.runner_exit: str | None = None
        self._out = bytearray()  # pending bytes for the job pipe
        self._bufs = {"result": bytearray(), "status": bytearray()}
        self._diag = bytearray()
        self._eof: set[str] = set()
        self._scanned = 0  # bytes of the result buffer already searched for a newline
        self._fds: dict[str, int] = {}
        if _CANCELLED.is_set():
            raise SandboxCancelled
        try:
            self._start(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ starting

    def _config(self, fds: dict[str, int]) -> dict[str, Any]:
        lim, ns = self.limits, self.iso.mode == "namespaces"
        cpu = max(1, math.ceil(lim.cpu_seconds))
        rlimits = {"AS": lim.memory_bytes, "DATA": lim.memory_bytes, "CPU": [cpu, cpu + 2],
                   "FSIZE": lim.file_bytes, "NOFILE": lim.open_files, "NPROC": lim.processes,
                   "CORE": 0, "MSGQUEUE": 0}
        home = "/sandbox" if ns else self.dir
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": "/tmp" if ns else home,
               "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        binds, links = _root_layout() if ns else ([], {})
        hide = [d for d in HIDDEN_DIRS if ns and os.path.isdir(d) and not os.path.islink(d)]
        return {"mode": self.iso.mode, "userns": self.iso.userns, "uid": self.uid, "gid": self.uid,
                "root": self.dir, "binds": binds, "symlinks": links, "hide": hide, "argv": _runner_argv(),
                "env": env, "rlimits": rlimits, "fds": fds, "tmpfs_bytes": lim.tmpfs_bytes,
                "tmpfs_files": lim.tmpfs_files, "wall_limit": lim.wall_seconds}

    def _start(self, job_bytes: bytes) -> None:
        if self.iso.as_root:
            self.uid = _take_uid()
        self.dir = tempfile.mkdtemp(prefix="sb-", dir=_sandbox_root())
        # our ends go into self._fds as each pipe is made, so close() closes them whatever fails
        # next: a Popen that raised (EAGAIN at the process limit, EMFILE, Ctrl-C) left three open
        # per try, and a caller that went on after such errors ran out of descriptors
        theirs: dict[str, int] = {}
        try:
            for key in ("job", "result", "diag"):
                r, w = os.pipe()
                theirs[key], self._fds[key] = (r, w) if key == "job" else (w, r)
            try:
                fcntl.fcntl(self._fds["result"], F_SETPIPE_SZ, 1 << 20)  # fewer wake-ups for big outputs
            except OSError:
                pass
            self.proc = subprocess.Popen(
                [os.path.realpath(sys.executable), "-I", "-S", "-B", INIT_PATH],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=theirs["diag"],
                pass_fds=tuple(theirs.values()), close_fds=True, start_new_session=True,
                cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        finally:
            for fd in theirs.values():
                os.close(fd)
        self._fds["status"] = self.proc.stdout.fileno()
        for fd in self._fds.values():
            _set_nonblocking(fd)
        try:
            self.proc.stdin.write((json.dumps(self._config(theirs)) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.proc.wait()
            self._pump(0)
            raise SandboxError(f"sandbox launcher exited at start ({self.proc.returncode}): "
                               f"{self.diagnostics()[-500:]}") from None
        self._out += job_bytes

    # ------------------------------------------------------------ talking

    def send(self, data: bytes) -> None:
        """Queue bytes for the runner's fd 0 (written while waiting for records)."""
        self._out += data

    def diagnostics(self) -> str:
        return self._diag.decode("utf-8", "replace")

    def _pump(self, timeout: float) -> None:
        """One select round: write pending job bytes, read whatever arrived."""
        readers = {self._fds[k]: k for k in ("result", "status", "diag") if k not in self._eof}
        writers = [self._fds["job"]] if self._out and "job" not in self._eof else []
        r, w, _ = select.select(list(readers), writers, [], timeout)
        if w:
            try:
                n = os.write(self._fds["job"], self._out[:1 << 16])
                del self._out[:n]
            except BlockingIOError:
                pass
            except BrokenPipeError:
                self._eof.add("job")
                self._out.clear()
        for fd in r:
            key = readers[fd]
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                self._eof.add(key)
            elif key == "diag":
                self._diag += chunk
                del self._diag[:-4096]
            else:
                self._bufs[key] += chunk
        self._status_lines()

    def _status_lines(self) -> None:
        buf = self._bufs["status"]
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            text = line.decode("utf-8", "replace")
            if text.startswith("exit "):
                self.runner_exit = text[5:]
            elif text.startswith("error "):
                raise SandboxError(f"sandbox setup failed: {text[6:]} {self.diagnostics()[-500:]}".strip())

    def _take_record(self) -> tuple[list, bytearray | None] | None:
        """The next complete record line, split into (header, value); no copy of the value."""
        buf = self._bufs["result"]
        cut = buf.find(b"\n", self._scanned)
        if cut < 0:
            self._scanned = len(buf)  # a line may be huge: never rescan what was searched
            return (["oversize", len(buf)], None) if len(buf) > self.max_record_bytes else None
        self._scanned = 0
        if cut > self.max_record_bytes:
            return ["oversize", cut], None
        self._bufs["result"] = buf[cut + 1:]
        del buf[cut:]
        tab = buf.find(b"\t", 0, MAX_HEADER_BYTES + 1)
        if tab < 0 and len(buf) > MAX_HEADER_BYTES:  # parsed, a record-sized header of `[],` is ~20x its bytes
            return ["garbage", bytes(buf[:80]).decode("utf-8", "replace")], None
        head = bytes(buf if tab < 0 else buf[:tab])
        if tab >= 0:
            del buf[:tab + 1]  # O(1) in CPython: the value is what is left
        try:
            header = json.loads(head)
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, list) or not header or not isinstance(header[0], str):
            return ["garbage", head[:80].decode("utf-8", "replace")], None
        return header, (buf if tab >= 0 else None)

    def next_record(self, wait: float) -> tuple[tuple[list, bytearray | None] | None, float]:
        """((header, raw value JSON or None), seconds spent waiting).  None once the runner
        has exited (or closed its result pipe) and nothing is left; TimeoutError after `wait` s.
        A closed result pipe waits for the launcher's status line too: the runner's death closes
        the pipe before its launcher reaps it and says how it ended (runner_exit)."""
        start = time.monotonic()
        while True:
            if _CANCELLED.is_set():
                raise SandboxCancelled
            rec = self._take_record()
            if rec is not None:
                return rec, time.monotonic() - start
            if "result" in self._eof and (self.runner_exit is not None or "status" in self._eof):
                return None, time.monotonic() - start
            if self.runner_exit is not None:
                self._pump(0)  # whatever the runner wrote before it exited is in the pipe
                return self._take_record(), time.monotonic() - start
            if "status" in self._eof and self.proc.poll() is not None:
                raise SandboxError(f"sandbox launcher exited with {self.proc.returncode}: "
                                   f"{self.diagnostics()[-500:]}")
            left = wait - (time.monotonic() - start)
            if left <= 0:
                raise TimeoutError
            self._pump(min(left, CANCEL_POLL_S))

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Kill everything in the sandbox, wait for the launcher, remove the folder."""
        proc = self.proc
        if proc is not None:
            try:
                proc.stdin.close()  # the launcher's signal to kill and sweep
            except OSError:
                pass
            try:
                _wait_exit(proc, CLOSE_GRACE)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
                if self.uid is not None:
                    _kill_uids(range(self.uid, self.uid + 1))
            proc.stdout.close()
            self.proc = None
        for key in ("job", "result", "diag"):
            fd = self._fds.pop(key, None)
            if fd is not None:
                os.close(fd)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self.uid is not None:
            if self.iso.mode == "floor":  # a namespace's IPC objects die with it
                _remove_sysv(range(self.uid, self.uid + 1))
            _release_uid(self.uid)
            self.uid = None
