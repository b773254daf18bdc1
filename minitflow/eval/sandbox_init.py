"""Trusted launcher of one sandbox: sets up isolation, starts the runner, and kills it all.

Started by `sandbox.py` as `python -I -S -B sandbox_init.py` (standard library
only) in its own session, with:
    fd 0  control pipe: one JSON config line, then EOF when the parent is done
          (or dies), which ends the sandbox
    fd 1  status pipe: "started", "exit code=N" / "exit signal=N", "error TEXT"
    fd 2  diagnostics pipe (shared with the runner's stdout/stderr)
    the runner's job, result and diagnostics pipe ends (numbers in the config)

Isolation "namespaces" (the parent's probe picks it when the kernel allows):
this process unshares mount, network, IPC, UTS and PID namespaces (plus a user
namespace when not run as root), builds a new root on a size-capped tmpfs with
read-only binds of /usr and the Python prefix, and forks the PID namespace's
init, which pivots into that root, mounts /proc and forks the runner.  The
bin folders (/usr/bin, /usr/sbin...) are empty there: no shell, no tools,
only the Python executable.  The
runner drops to the sandbox uid (root) or into a nested user namespace (not
root), sets rlimits, no_new_privs and a seccomp filter (no memfd_create, keyrings, io_uring or vsock), and execs Python.  When the runner exits
the init exits, and the kernel kills every process left in the namespace.

Isolation "floor": no namespaces; the runner gets the same rlimits, uid and
environment, runs in the host temp folder, and the sweep below kills it.

Whatever happens, on the way out this process kills the init (or the runner's
process group) and, as root, every process of the sandbox uid (`kill(-1)`
from a process of that uid, which also reaches `setsid()` grandchildren).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import select
import signal
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME = 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
NESTED_ID = 1000  # the runner's uid/gid inside its own user namespace (non-root evaluator)
RLIMITS = {"AS": "RLIMIT_AS", "DATA": "RLIMIT_DATA", "CPU": "RLIMIT_CPU", "FSIZE": "RLIMIT_FSIZE",
           "NOFILE": "RLIMIT_NOFILE", "NPROC": "RLIMIT_NPROC", "CORE": "RLIMIT_CORE",
           "STACK": "RLIMIT_STACK", "MEMLOCK": "RLIMIT_MEMLOCK", "MSGQUEUE": "RLIMIT_MSGQUEUE"}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class SetupError(Exception):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)} (errno {errno.errorcode.get(err, err)})")


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(src), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


def _locked_flags(path: str) -> int:
    """Flags of the mount holding `path` that a bind remount must keep (locked in user namespaces)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                   (os.ST_RELATIME, MS_RELATIME)):
        if f & st:
            out |= ms
    return out


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _bind(src: str, root: str, readonly: bool = True, device: bool = False) -> None:
    target = root + src
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(src, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | _locked_flags(src)
    if readonly:
        flags |= MS_RDONLY
    if not device:
        flags |= MS_NODEV
    _mount(None, target, None, flags)


def _no_sysv_ipc() -> None:
    """No SysV shared memory, message queues or semaphore sets in the sandbox's IPC namespace:
    their memory is the kernel's, outside every rlimit (a detached segment keeps its pages; the
    default semaphore limits allow 32000 sets of 32000, 2 MiB each), so a program could fill the RAM."""
    for name in ("shmmni", "msgmni"):
        _write(f"/proc/sys/kernel/{name}", "0")
    _write("/proc/sys/kernel/sem", "0 0 0 0")  # SEMMSL SEMMNS SEMOPM SEMMNI


def _build_root(cfg: dict) -> None:
    """New root on a tmpfs at cfg['root'] (only in this process's mount namespace)."""
    root = cfg["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    size = f"size={cfg['tmpfs_bytes']},nr_inodes={cfg['tmpfs_files']}"  # files cost kernel memory too
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=0755")
    for path in cfg["binds"]:
        if os.path.exists(path):
            _bind(path, root)
    for link, target in cfg["symlinks"].items():
        os.symlink(target, root + link)
    for d in cfg["hide"]:  # no shells or tools: empty read-only folders over the bin dirs
        _mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=16,mode=0755")
        python = cfg["argv"][0]
        if python.startswith(d + "/"):
            _bind(python, root)
        _mount(None, root + d, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.makedirs(root + "/dev", exist_ok=True)
    for dev in ("null", "zero", "random", "urandom"):
        _bind(f"/dev/{dev}", root, readonly=False, device=True)
    os.makedirs(root + "/dev/shm")
    _mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,nr_inodes=1024,mode=1777")
    for d, mode in (("/tmp", 0o1777), ("/proc", 0o555), ("/sandbox", 0o700)):
        os.makedirs(root + d, exist_ok=True)
        os.chmod(root + d, mode)
    uid, gid = cfg["uid"], cfg["gid"]
    if uid is not None:
        os.chown(root + "/sandbox", uid, gid)


def _pivot(root: str) -> None:
    os.chdir(root)
    nr = SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        os.chroot(".")
    else:
        _check(_libc.syscall(nr, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def _seal_userns() -> None:
    """No user namespace below the runner's: in one of its own a program holds every capability,
    so it could mount a tmpfs of half the RAM or make an IPC namespace without our limits.
    The limit is per user namespace; we still hold CAP_SYS_RESOURCE in this one (not after exec)."""
    _write("/proc/sys/user/max_user_namespaces", "0")


def _nested_userns() -> None:
    """Non-root evaluator: leave the namespace where we hold capabilities (uid 0) for
    a child user namespace where the runner is uid NESTED_ID and holds none after exec."""
    _prctl(PR_SET_DUMPABLE, 1)  # to write our own maps; exec resets it anyway
    _check(_libc.unshare(CLONE_NEWUSER), "unshare user namespace for the runner")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{NESTED_ID} 0 1")
    _write("/proc/self/gid_map", f"{NESTED_ID} 0 1")
    _seal_userns()
    os.setresgid(NESTED_ID, NESTED_ID, NESTED_ID)
    os.setresuid(NESTED_ID, NESTED_ID, NESTED_ID)


def _own_userns(uid: int, gid: int) -> None:
    """Root evaluator, after dropping to the sandbox uid: a user namespace that maps that uid to
    itself, only to seal it (`_seal_userns`). Where the kernel refuses us one, it refuses the
    program too (same credentials, same root)."""
    _prctl(PR_SET_DUMPABLE, 1)  # setresuid cleared it; we write our own maps
    if _libc.unshare(CLONE_NEWUSER) != 0:
        return
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _seal_userns()


PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
AF_VSOCK = 40
# (seccomp audit arch, syscalls refused, socket's number). Refused: memfd_create, whose pages count
# against no rlimit but RLIMIT_FSIZE per file (64 fds x 64 MiB: another 4 GiB beside the address-space
# cap); add_key/request_key/keyctl: the runner inherits the evaluator's session keyring (a login's, from
# pam_keyinit) and possesses its keys whatever its uid, and keyrings have no namespace;
# io_uring_setup/enter/register (its IORING_OP_SOCKET makes sockets without socket(2)); and
# socket(AF_VSOCK): vsock has no network namespaces, so in a VM a program would reach the hypervisor
# host and other VMs from behind a namespace without interfaces
SECCOMP_DENY = {"x86_64": (0xC000003E, (319, 248, 249, 250, 425, 426, 427), 41),
                "aarch64": (0xC00000B7, (279, 217, 218, 219, 425, 426, 427), 198)}


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp_filter() -> None:
    """Refuse (EPERM) the syscalls of SECCOMP_DENY, socket(AF_VSOCK), and any syscall of another ABI
    (i386, x32) too. Needs no_new_privs; a kernel without seccomp filters (EINVAL) or an unknown
    machine goes without."""
    arch = SECCOMP_DENY.get(platform.machine())
    if arch is None:
        return
    audit, nrs, socket_nr = arch
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    n = len(nrs)
    allow, deny = n + 7, n + 8  # the two returns, last; a jump's offset counts from the next instruction
    code = [(ld, 0, 0, 4), (jeq, 0, deny - 2, audit), (ld, 0, 0, 0), (jge, deny - 4, 0, 0x40000000)]
    code += [(jeq, deny - 5 - i, 0, nr) for i, nr in enumerate(nrs)]
    code += [(jeq, 0, allow - 5 - n, socket_nr),
             (ld, 0, 0, 16),  # socket's family: args[0]'s low 32 bits (the kernel reads an int) on these little-endian machines
             (jeq, deny - 7 - n, allow - 7 - n, AF_VSOCK)]
    code += [(ret, 0, 0, 0x7FFF0000), (ret, 0, 0, 0x00050000 | errno.EPERM)]  # ALLOW, ERRNO(EPERM)
    insns = (_SockFilter * len(code))(*[_SockFilter(*c) for c in code])
    prog = _SockFprog(len(code), insns)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        if ctypes.get_errno() != errno.EINVAL:
            _check(-1, "seccomp filter")


def _exec_runner(cfg: dict, cwd: str) -> None:
    """In the forked runner: fds, session, rlimits, identity, then exec. Never returns."""
    try:
        fds = cfg["fds"]
        os.setsid()
        os.dup2(fds["job"], 0)
        os.dup2(fds["diag"], 1)
        os.dup2(fds["diag"], 2)
        os.dup2(fds["result"], 3)
        os.closerange(4, 1 << 16)
        import resource

        for name, value in cfg["rlimits"].items():
            soft, hard = value if isinstance(value, list) else (value, value)
            resource.setrlimit(getattr(resource, RLIMITS[name]), (soft, hard))
        if cfg["mode"] == "namespaces" and cfg["userns"]:
            _nested_userns()
        elif cfg["uid"] is not None:
            os.setgroups([])
            os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
            _own_userns(cfg["uid"], cfg["gid"])
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _seccomp_filter()
        os.chdir(cwd)
        os.umask(0o077)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as e:  # noqa: BLE001 - report and die, never return into the init
        try:
            os.write(2, f"sandbox runner setup failed: {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(127)


def _status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"exit signal={os.WTERMSIG(status)}"
    return f"exit code={os.waitstatus_to_exitcode(status)}"


def _say(text: str) -> None:
    try:
        os.write(1, (text.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def _ns_init(cfg: dict) -> None:
    """PID 1 of the new PID namespace. Never returns."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # The kernel gives a namespace's init only the signals it handles from inside: Python's
        # SIGINT handler let a runner of the same kernel uid (a non-root evaluator's) raise
        # KeyboardInterrupt here, reported as a sandbox error that stopped the evaluation
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _check(_libc.unshare(CLONE_NEWNS), "unshare mount namespace for the pivot")
        # /proc of this PID namespace, mounted while the host's /proc is still visible
        # (a user namespace may only mount a proc that is not more revealing than one it sees)
        _mount("proc", cfg["root"] + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        _pivot(cfg["root"])
        _libc.sethostname(b"sandbox", 7)
        runner = os.fork()
        if runner == 0:
            _exec_runner(cfg, "/sandbox")
        for fd in cfg["fds"].values():
            os.close(fd)
        while True:  # reap everything; the runner's end is the sandbox's end
            pid, status = os.wait()
            if pid == runner:
                _say(_status_text(status))
                os._exit(0)
    except BaseException as e:  # noqa: BLE001
        _say(f"error namespace init: {type(e).__name__}: {e}")
        os._exit(1)


def _start_sweeper(uid: int, fds: list[int]) -> tuple[int, int]:
    """Fork, before any namespace exists (a dead PID namespace refuses forks), a helper that
    waits until the returned pipe end is closed (by us, or by our death), then kills every
    process of `uid`, setsid() grandchildren included: kill(-1) as that uid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in [w, 0, 1, 2, *fds]:
                os.close(fd)
            os.read(r, 1)
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.close(r)
    return pid, w


def _wait_for_end(child: int, deadline: float) -> int | None:
    """Until the control pipe closes, `child` exits, or the deadline passes; child's status if it exited."""
    try:
        pidfd = os.pidfd_open(child)
    except (AttributeError, OSError):
        pidfd = None
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        watch = [0] + ([pidfd] if pidfd is not None else [])
        ready, _, _ = select.select(watch, [], [], min(left, 0.5 if pidfd is None else left))
        if 0 in ready and not os.read(0, 4096):
            return None


def main() -> None:
    cfg = json.loads(sys.stdin.buffer.readline())
    namespaces = cfg["mode"] == "namespaces"
    sweeper = None if cfg["uid"] is None else _start_sweeper(cfg["uid"], list(cfg["fds"].values()))
    if namespaces:
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
        if cfg["userns"]:
            uid, gid = os.getuid(), os.getgid()
            _check(_libc.unshare(flags | CLONE_NEWUSER), "unshare")
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
        else:
            _check(_libc.unshare(flags), "unshare")
        _no_sysv_ipc()
        _build_root(cfg)
    elif cfg["uid"] is not None:
        os.chown(cfg["root"], cfg["uid"], cfg["gid"])
        os.chmod(cfg["root"], 0o700)
    # Not dumpable: no ptrace or /proc/PID/fd access from the runner, even when it shares our
    # uid (no root). Set after the uid maps: a non-dumpable process's /proc/self is root's.
    _prctl(PR_SET_DUMPABLE, 0)
    child = os.fork()
    if child == 0:
        if sweeper is not None:
            os.close(sweeper[1])
        if namespaces:
            _ns_init(cfg)
        _exec_runner(cfg, cfg["root"])
    for fd in cfg["fds"].values():
        os.close(fd)
    _say("started")
    status = _wait_for_end(child, time.monotonic() + cfg["wall_limit"])
    if status is None:  # the parent is done (or gone), or the wall limit passed
        try:
            os.kill(child if namespaces else -child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    elif not namespaces:
        _say(_status_text(status))
    if sweeper is not None:
        os.close(sweeper[1])  # the sweeper kills whatever runs as the sandbox uid
    elif not namespaces:
        try:
            os.killpg(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if status is None:
        os.waitpid(child, 0)
    if sweeper is not None:
        os.waitpid(sweeper[0], 0)
    _say("closed")


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # noqa: BLE001 - the parent reads this line
        _say(f"error {type(e).__name__}: {e}")
        sys.exit(1)
