"""The code sandbox against hostile programs: fake passes, escapes, leftovers (docs/sandbox.md).

Each hostile program is a wrong solution run through `run_code_tests`, the
path `evaluate` uses: it must FAIL and leave nothing behind outside its temp
folder (files, processes, connections, signals).  Properties that only
namespaces give (hidden host files, no network, no shell) are checked when
the machine allows namespaces; the rest hold on every isolation.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from minitflow.eval import code_exec, sandbox
from minitflow.eval.code_exec import run_code_tests
from minitflow.eval.data import Sample
from minitflow.eval.sandbox_child import NotNoneFlag, Unencodable, decode, dumps, encode
from code_samples import ADD, _sample

ISO = sandbox.isolation()
NAMESPACES = ISO.mode == "namespaces"
needs_ns = pytest.mark.skipif(not NAMESPACES, reason=f"no namespaces here: {ISO.note}")
ROOT = os.geteuid() == 0
# Without namespaces and without root the sandbox shares the evaluator's uid: hostile programs
# that signal or fork would hit this user's real processes (docs/sandbox.md), so they do not run.
contained = pytest.mark.skipif(not (NAMESPACES or ROOT), reason="floor isolation without root")
MY_UIDS = sandbox._uid_range(os.getpid())


def _sandbox_procs(uids: range = MY_UIDS) -> list[int]:
    """Live processes running as one of this evaluator's sandbox uids."""
    return sandbox.live_processes(uids)


def _fails_cleanly(sample: Sample, program: str, timeout: float = 10) -> str:
    base, plus, detail = run_code_tests(sample, program, timeout=timeout)
    assert (base, plus) == (False, False), detail
    if ROOT:
        assert _sandbox_procs() == [], "sandbox processes survived"
    assert [p for p in Path(sandbox._sandbox_root()).iterdir()] == [], "sandbox folder left behind"
    return detail


def _probe(body: str, timeout: float = 20, processes: int = 1) -> object:
    """Run `def f():\\n<body>` in a sandbox (reference mode: no evalplus guard, the OS is the
    boundary) and return its output."""
    program = "def f():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    job = {"mode": "reference", "program": program, "entry_point": "f", "inputs": [[]], "sets": [1, 0],
           "limits": None, "not_none": False, "memory_bytes": 0, "evalplus_utils": sandbox.evalplus_utils_path()}
    with sandbox.Sandbox(job, sandbox.Limits(1 << 30, 20, 40, processes=processes)) as box:
        while True:
            rec, _ = box.next_record(timeout)
            assert rec is not None, box.diagnostics()
            if rec[0][0] == "ok":
                return decode(json.loads(rec[1]))
            assert rec[0][0] in ("ready", "loaded"), rec


# ------------------------------------------------------------------ codec


@pytest.mark.parametrize("value", [
    None, True, 0, -5, 2**70, -(2**200), 1.5, -0.0, float("inf"), "a\n\tb\u2028\udc80", b"\x00\xff",
    bytearray(b"xy"), 1 + 2j, [1, [2, (3,)]], (), {1: "a", (2, 3): [4]}, {1, 2}, frozenset({"x"}),
    [[]] * 3, {"nested": {"d": [1.25, None]}},
])
def test_codec_round_trips_plain_data(value):
    line = dumps(encode(value))
    assert "\n" not in line and "\t" not in line
    back = decode(json.loads(line))
    assert back == value and type(back) is type(value)


def test_codec_refuses_what_is_not_data():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

    for bad in (AlwaysEqual(), [AlwaysEqual()], (i for i in range(3)), object, print, {1: AlwaysEqual()}):
        with pytest.raises(Unencodable):
            encode(bad)
    loop: list = []
    loop.append(loop)
    with pytest.raises(Unencodable):
        encode(loop)
    for bad in ('["x"]', '["l", ["os", "system"]]', '{"a": 1}', '["d", 1]', '["I", 5]', '["d", ["l"], 1]',
                '["n", "object", 1]'):
        with pytest.raises((ValueError, TypeError, KeyError)):
            decode(json.loads(bad))


def test_codec_sends_subclasses_as_their_base_type():
    from collections import Counter, OrderedDict, namedtuple

    class Liar(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    point = namedtuple("Point", "x y")
    assert decode(json.loads(dumps(encode(Liar(3))))) == 3 and decode(json.loads(dumps(encode(Liar(3))))) != 4
    assert decode(json.loads(dumps(encode(point(1, 2))))) == (1, 2)
    assert decode(json.loads(dumps(encode(OrderedDict(a=1))))) == {"a": 1}
    assert decode(json.loads(dumps(encode(Counter("aab"))))) == {"a": 2, "b": 1}
    assert isinstance(decode(["nn", True]), NotNoneFlag)


def test_codec_refuses_hash_flooding():
    """Distinct values with one hash make a set or dict O(n^2) to build: a record of a few MiB
    would stall the judge for hours.  Duplicates and the odd collision (-1, -2) are data."""
    p = 2**61 - 1
    flood = [7 + k * p for k in range(1, 2001)]
    for bad in (["s", *flood], ["f", *flood], ["d", *[x for k in flood for x in (k, 0)]]):
        with pytest.raises(ValueError):
            decode(json.loads(json.dumps(bad)))
    assert decode(["s", *([-1, -2] * 500)]) == {-1, -2}
    task = code_exec.Task(key="", id="Mbpp/2", dataset="mbpp", entry_point="similar_elements", reference="",
                          base=[], plus=[], atol=0, not_none=False, inputs=[])
    with pytest.raises(ValueError):
        code_exec._outputs_match(task, ((1,), (1,)), flood, [1], 0)
    assert code_exec._outputs_match(task, ((1,), (1,)), [1] * 1000, [1], 0)[0]


# ------------------------------------------------------- isolation itself


def test_isolation_summary_names_the_mode():
    line = sandbox.isolation_summary()
    assert line.startswith("code sandbox: ") and ISO.mode in line and "\n" not in line


def test_a_cancelled_evaluation_starts_no_new_sandbox(monkeypatch):
    """After cancel_sandboxes() (a Ctrl-C'd evaluation) a new sandbox is refused before it takes a
    uid or starts a process; cancel_sandboxes(False) lets sandboxes run again."""
    sandbox.cancel_sandboxes()
    try:
        with monkeypatch.context() as m:
            m.setattr(sandbox.Sandbox, "_start", lambda self, job: pytest.fail("a sandbox started after the cancel"))
            with pytest.raises(sandbox.SandboxCancelled):
                _probe("return 6 * 7")
    finally:
        sandbox.cancel_sandboxes(False)
    assert _probe("return 6 * 7") == 42


def test_the_runner_gets_nothing_it_does_not_need():
    got = _probe("""
        import os, resource
        fds = sorted(int(x) for x in os.listdir('/proc/self/fd'))
        status = open('/proc/self/status').read()
        caps = [ln.split()[1] for ln in status.splitlines() if ln.startswith('CapEff')][0]
        nnp = [ln.split()[1] for ln in status.splitlines() if ln.startswith('NoNewPrivs')][0]
        lim = {n: resource.getrlimit(getattr(resource, 'RLIMIT_' + n))[1] for n in ('NPROC', 'NOFILE', 'FSIZE', 'AS', 'CPU')}
        return [os.getuid(), os.getgid(), os.getgroups(), sorted(os.environ), os.getsid(0) == os.getpid(),
                os.listdir('.'), caps, nnp, lim, fds]
    """)
    uid, gid, groups, env, own_session, cwd, caps, nnp, lim, fds = got
    assert uid != 0 and gid != 0 and groups == []
    if ROOT:
        assert uid in MY_UIDS
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "MKL_NUM_THREADS", "LC_CTYPE"}
    assert own_session and cwd == [] and caps == "0000000000000000" and nnp == "1"
    assert lim["NPROC"] == 1 and lim["NOFILE"] == 64 and lim["FSIZE"] == 64 << 20
    assert lim["AS"] == 1 << 30 and 0 < lim["CPU"] < 100
    assert fds[:4] == [0, 1, 2, 3] and len(fds) == 5  # + the fd listing /proc/self/fd


USERNS_PROBE = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER: every capability in a namespace of its own
        return 'user namespace made'
    return os.strerror(ctypes.get_errno())
"""


def test_no_user_namespace_of_its_own():
    """With one, a program could mount a tmpfs of half the RAM or get an IPC namespace with no limits."""
    assert _probe(USERNS_PROBE) != "user namespace made"


SYSV_PROBE = """
    import ctypes
    libc = ctypes.CDLL(None)
    return [libc.shmget(0, 1 << 20, 0o1600), libc.msgget(0, 0o1600),  # IPC_PRIVATE, IPC_CREAT
            libc.semget(0, 32000, 0o1600)]  # 32000 semaphores: 2 MiB of kernel memory a set
"""


@needs_ns
def test_no_sysv_shared_memory():
    """A detached SysV segment keeps its pages outside the address-space limit, and a semaphore
    set is kernel memory (the default limits allowed 32000 sets of 2 MiB, 64 GB): a program could
    fill the host's RAM with them."""
    assert _probe(SYSV_PROBE) == [-1, -1, -1]


MEMFD_PROBE = """
    import os
    try:
        fd = os.memfd_create("m")
    except OSError as e:
        return e.errno
    os.write(fd, b"x" * (1 << 20))
    return "memfd made"
"""


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="no seccomp filter here")
def test_no_memfd():
    """memfd pages count against no rlimit but the file size: 64 of them at 64 MiB would hold another
    4 GiB beside the address-space cap."""
    assert _probe(MEMFD_PROBE) == errno.EPERM


SOCKET_NR = {"x86_64": 41, "aarch64": 198}.get(os.uname().machine, -1)
VSOCK_PROBE = f"""
    import ctypes, socket
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    got = []
    for family in (socket.AF_VSOCK, socket.AF_VSOCK | 1 << 32):  # the kernel reads an int: both are vsock
        fd = libc.syscall(ctypes.c_long({SOCKET_NR}), ctypes.c_long(family), ctypes.c_long(socket.SOCK_STREAM), 0)
        got.append(ctypes.get_errno() if fd < 0 else "vsock socket made")
    fd = libc.syscall(425, 4, (ctypes.c_char * 120)())  # io_uring_setup (same number everywhere)
    got.append(ctypes.get_errno() if fd < 0 else "io_uring made")
    return got
"""


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="no seccomp filter here")
def test_no_vsock_nor_io_uring():
    """vsock has no network namespaces: in a VM (Firecracker, as on this project's machines) a
    sandbox's vsock listener took the port from the host's (EADDRINUSE there) and a connection would
    reach the hypervisor host. io_uring's IORING_OP_SOCKET makes sockets without socket(2)."""
    assert _probe(VSOCK_PROBE) == [errno.EPERM] * 3


KEYCTL_NR = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine, -1)
KEYRING_PROBE = f"""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    key = libc.syscall({KEYCTL_NR}, 10, -3, b"user", b"minitflow-secret", 0)  # KEYCTL_SEARCH @s
    if key < 0:
        return ctypes.get_errno()
    buf = ctypes.create_string_buffer(64)
    n = libc.syscall({KEYCTL_NR}, 11, key, buf, 64)  # KEYCTL_READ
    return buf.raw[:n].decode()
"""
KEYRING_EVALUATOR = f"""
import ctypes, json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
# a session keyring of its own, as pam_keyinit gives a login, holding a secret
if libc.syscall({KEYCTL_NR}, 1, b"evaluator-session") < 0:  # KEYCTL_JOIN_SESSION_KEYRING
    print("RESULT " + json.dumps("no keyrings here"))
    sys.exit(0)
assert libc.syscall({KEYCTL_NR} - 2, b"user", b"minitflow-secret", b"tok-3b7e", 8, -3) > 0  # add_key to @s
import test_sandbox as t
print("RESULT " + json.dumps(t._probe(t.KEYRING_PROBE)))
"""


@pytest.mark.skipif(KEYCTL_NR < 0, reason="no seccomp filter here")
def test_the_evaluators_keyrings_are_out_of_reach():
    """A process keeps its session keyring across setuid and exec, and possesses its keys whatever
    its uid: a program read the evaluator's secret from it. Keyrings have no namespace either.
    The evaluator runs in a child process: joining a session keyring cannot be undone."""
    proc = subprocess.run([sys.executable, "-c", KEYRING_EVALUATOR], capture_output=True, text=True,
                          timeout=120, cwd=str(Path(__file__).parents[1]))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    got = json.loads(lines[0][7:])
    if got == "no keyrings here":
        pytest.skip("the kernel has no keyrings")
    assert got == errno.EPERM


@needs_ns
def test_tmpfs_file_counts_are_capped():
    """Each file on a tmpfs costs ~1 KiB of kernel memory that its size cap does not count: the
    kernel's default (millions of files) would let a program pin gigabytes with empty files."""
    files = _probe("import os\nreturn [os.statvfs(d).f_files for d in ('/tmp', '/dev/shm')]")
    assert files[0] <= 16384 and files[1] <= 1024


@needs_ns
def test_namespaces_hide_the_host():
    got = _probe(f"""
        import os, socket
        return [sorted(os.listdir('/')), os.path.exists('/bin/sh'), os.path.exists({str(Path(__file__).resolve())!r}),
                os.path.exists('/etc/passwd'), sorted(os.listdir('/proc')), [n for _, n in socket.if_nameindex()],
                os.getpid()]
    """)
    top, sh, this_file, passwd, procs, ifaces, pid = got
    # the Python installation is bound where it lies: a virtual environment under /work or /home shows that folder
    python_tops = {p.split("/")[1] for p in sandbox._python_binds()}
    assert not {"work", "home"} & set(top) - python_tops and not sh and not this_file and not passwd
    assert ifaces == ["lo"] and pid < 10  # own PID namespace
    assert "1" not in procs  # the namespace's init runs as root: hidden (hidepid)


@needs_ns
def test_the_host_folders_bound_in_are_read_only():
    """/usr and the Python installation are the host's own: a non-root evaluator's runner is its
    uid, so a writable bind would let a program change the evaluator's Python for later runs."""
    paths = ["/usr", *sandbox._python_binds()]
    flags = _probe(f"import os\nreturn [bool(os.statvfs(p).f_flag & os.ST_RDONLY) for p in {paths!r}]")
    assert flags == [True] * len(paths)


@needs_ns
def test_the_old_root_is_detached():
    """pivot_root leaves the host's root mounted over the new one until it is unmounted: its
    mounts stay in the sandbox's namespace, one path lookup away."""
    mounts = _probe("return [ln.split()[4] for ln in open('/proc/self/mountinfo')]")
    assert mounts.count("/") == 1 and len(mounts) < 40, mounts


# --------------------------------------------------------- fake passes


FAKE_PASSES = {
    "result descriptor": """
        import os
        def add(a, b):
            for fd in range(64):
                for msg in (b'{"status": "pass"}\\n', b'["ready"]\\n["loaded"]\\n["ok"]\\t3\\n',
                            b'["verdict", true, "pass"]\\n'):
                    try:
                        os.write(fd, msg)
                    except OSError:
                        pass
            os._exit(0)
    """,
    "reporter on the call stack": """
        import sys
        def add(a, b):
            f = sys._getframe()
            while f is not None:
                for v in list(f.f_locals.values()) + list(f.f_globals.values()):
                    for fake in (({"status": "pass"},), (["verdict", True, "pass"],), (["ok"], '"pass"')):
                        try:
                            v.send(*fake)
                        except Exception:
                            pass
                f = f.f_back
            return 0
    """,
    "comparison replaced": """
        import sys
        def add(a, b):
            for m in list(sys.modules.values()):
                for name in ("_outputs_match", "_judge", "_compare"):
                    if hasattr(m, name):
                        setattr(m, name, lambda *x, **k: (True, 0))
            return -1
    """,
    "builtins.bool patched": """
        import builtins
        builtins.bool = lambda *x: True
        builtins.len = lambda *x: 0
        def add(a, b):
            return -1
    """,
    "object equal to everything": """
        class Anything:
            def __eq__(self, other):
                return True
            def __ne__(self, other):
                return False
            __hash__ = object.__hash__
        def add(a, b):
            return Anything()
    """,
    "int that equals everything": """
        class Liar(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def add(a, b):
            return Liar(-1)
    """,
    "hash-flooding record": """
        import os
        def add(a, b):
            body = ",".join(str(7 + k * (2**61 - 1)) for k in range(1, 2001))
            os.write(3, ('["ok"]\\t["s",' + body + ']\\n').encode())
            os._exit(0)
    """,
    "fake records on stdout/stderr": """
        import os, sys
        def add(a, b):
            for line in ('["ok"]\\t3', '{"status": "pass"}', '["verdict", true, "pass"]'):
                print(line); print(line, file=sys.stderr); os.write(1, (line + "\\n").encode())
            return -1
    """,
    "BaseException subclasses from the entry point": """
        import sys
        class Stop(BaseException):
            pass
        calls = []
        def add(a, b):
            calls.append(1)
            raise (Stop, KeyboardInterrupt, SystemExit, GeneratorExit)[len(calls) % 4](0)
    """,
    "float that equals everything": """
        class F(float):
            def __eq__(self, other):
                return True
            def __ne__(self, other):
                return False
            __hash__ = float.__hash__
        def add(a, b):
            return F(0.5)
    """,
    "isinstance, abs, type and math.isclose patched": """
        import builtins, math
        builtins.isinstance = lambda *x: True
        builtins.abs = lambda x: 0
        builtins.type = lambda *x: int
        math.isclose = lambda *x, **k: True
        def add(a, b):
            return -1
    """,
    "the runner's encoder replaced": """
        import sys
        runner = sys.modules["__main__"]
        for name in ("encode", "_enc", "dumps"):
            setattr(runner, name, lambda *x, **k: "3")
        def add(a, b):
            return -1
    """,
    "atexit hook and __del__ write records": """
        import atexit, os
        fake = b'["ok"]\\ttrue\\n["verdict", true, "pass"]\\n{"status": "pass"}\\n'
        atexit.register(os.write, 3, fake)
        class Late:
            def __del__(self):
                os.write(3, fake)
        def add(a, b):
            Late()
            return -1
    """,
    "later inputs on the stack made easy": """
        import sys
        def add(a, b):
            f = sys._getframe()
            while f is not None:
                job = f.f_locals.get("job")
                if isinstance(job, dict) and "inputs" in job:
                    job["inputs"][:] = [[0, 0]] * len(job["inputs"])
                f = f.f_back
            return 0
    """,
    "SIGALRM set for later": """
        import signal, time
        signal.alarm(1)
        def add(a, b):
            time.sleep(3)
            return a + b
    """,
    "a record header that is not JSON": """
        import os
        def add(a, b):
            os.write(3, b'["ok"\\t3\\n')
            os._exit(0)
    """,
}


@pytest.mark.parametrize("name", list(FAKE_PASSES))
def test_fake_passes_fail(name):
    detail = _fails_cleanly(ADD, textwrap.dedent(FAKE_PASSES[name]))
    if name == "hash-flooding record":  # refused before it is built, not compared
        assert "not comparable" in detail


def test_expected_outputs_never_enter_the_candidates_sandbox():
    marker = "EXPECTED-" + "7f3a91"
    sample = _sample("answer", "    return 'EXPECTED-' + '7f3a91' + str(x)\n", [[1], [2]],
                     prompt='def answer(x):\n    """Toy."""\n')
    hunter = """
        import gc, sys
        def answer(x):
            seen = []
            f = sys._getframe()
            while f is not None:
                seen += list(f.f_locals.values()) + list(f.f_globals.values())
                f = f.f_back
            for o in seen + gc.get_objects():
                t = type(o)
                items = o if t in (list, tuple) else list(dict.values(o)) if t is dict else [o]
                items = [i for v in items for i in (v if type(v) in (list, tuple) else [v])]
                for s in items:
                    if type(s) in (str, bytes, bytearray):
                        text = s if type(s) is str else s.decode("latin-1")
                        at = text.find("EXPECTED-")
                        while at >= 0:
                            end = at + 9
                            while end < len(text) and text[end] in "0123456789abcdef":
                                end += 1
                            if end > at + 9 and text[at:end].endswith(str(x)):
                                return text[at:end]  # the answer itself, were it there
                            at = text.find("EXPECTED-", end)
            return "nothing found"
    """
    assert "EXPECTED" not in hunter.replace('"EXPECTED-"', "")
    detail = _fails_cleanly(sample, textwrap.dedent(hunter))
    assert "wrong output" in detail and marker not in detail


# --------------------------------------------------------------- escapes


@pytest.fixture
def open_dir(tmp_path):
    """A world-writable folder with a world-writable file: only the sandbox protects them."""
    tmp_path.chmod(0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o666)
    return tmp_path


def test_writes_and_deletes_outside_fail(open_dir):
    victim = open_dir / "victim.txt"
    program = f"""
        import ctypes, io, os, posix
        def add(a, b):
            d = {str(open_dir)!r}
            libc = ctypes.CDLL(None)
            for f in (lambda: io.open(d + '/pwned-io', 'w').write('x'),
                      lambda: os.close(os.open(d + '/pwned-os', os.O_CREAT | os.O_WRONLY)),
                      lambda: posix.unlink(d + '/victim.txt'),
                      lambda: io.open(d + '/victim.txt', 'w').write('gone'),
                      lambda: libc.unlink((d + '/victim.txt').encode()),
                      lambda: libc.creat((d + '/pwned-ctypes').encode(), 0o644)):
                try:
                    f()
                except Exception:
                    pass
            return -1
    """
    if not NAMESPACES:  # the floor protects by ownership only: make the folder the evaluator's
        open_dir.chmod(0o755)
        victim.chmod(0o644)
    _fails_cleanly(ADD, textwrap.dedent(program))
    assert sorted(p.name for p in open_dir.iterdir()) == ["victim.txt"]
    assert victim.read_text() == "keep me"


def test_reading_secrets_fails(open_dir, monkeypatch):
    monkeypatch.setenv("MINITFLOW_TEST_TOKEN", "tok-5e1f")
    secret = open_dir / "secret.txt"
    secret.write_text("file-9c2d")
    secret.chmod(0o644 if NAMESPACES else 0o600)
    sample = _sample("leak", "    return 'tok-5e1f' + 'file-9c2d'\n", [[]], prompt='def leak():\n    """Toy."""\n')
    program = f"""
        import os
        def leak():
            token = os.environ.get('MINITFLOW_TEST_TOKEN', '')
            for pid in os.listdir('/proc'):
                try:
                    env = open('/proc/' + pid + '/environ', 'rb').read()
                except Exception:
                    continue
                for item in env.split(b'\\0'):
                    if item.startswith(b'MINITFLOW_TEST_TOKEN='):
                        token = item.split(b'=', 1)[1].decode()
            try:
                content = open({str(secret)!r}).read()
            except Exception:
                content = ''
            return token + content
    """
    _fails_cleanly(sample, textwrap.dedent(program).replace("open(", "__import__('io').open("))


@needs_ns
def test_no_network():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    program = f"""
        import socket
        def add(a, b):
            try:
                s = socket.create_connection(('127.0.0.1', {port}), timeout=2)
                s.sendall(b'hello')
                return a + b
            except OSError:
                return -1
    """
    try:
        _fails_cleanly(ADD, textwrap.dedent(program))
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


@contained
def test_shells_and_forks_are_contained(open_dir):
    marker = open_dir / "from-shell"
    sample = _sample("forks", "    return 200\n", [[]], prompt='def forks():\n    """Toy."""\n')
    program = f"""
        import ctypes, os, posix, time
        def forks():
            cmd = 'echo pwned > {marker}'
            for spawn in (lambda: os.posix_spawn('/bin/sh', ['sh', '-c', cmd], {{}}),
                          lambda: ctypes.CDLL(None).system(cmd.encode())):
                try:
                    spawn()
                except Exception:
                    pass
            n = 0
            for _ in range(200):
                try:
                    pid = posix.fork()
                except OSError:
                    continue
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
            return n
    """
    if not NAMESPACES:
        open_dir.chmod(0o755)
    _fails_cleanly(sample, textwrap.dedent(program), timeout=5)
    assert not marker.exists()


@contained
def test_the_evaluator_cannot_be_signalled():
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
    me = os.getpid()
    program = f"""
        import posix, signal
        def add(a, b):
            for f in (lambda: posix.kill({me}, signal.SIGUSR1), lambda: posix.killpg(posix.getpgid({me}), signal.SIGUSR1),
                      lambda: posix.kill(posix.getppid(), signal.SIGUSR1)):
                try:
                    f()
                except Exception:
                    pass
            return -1
    """
    try:
        _fails_cleanly(ADD, textwrap.dedent(program))
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == []


@contained
def test_setsid_grandchildren_die_with_the_sandbox(open_dir):
    """The process limit stops forks in scored programs; with forks allowed, a grandchild in its
    own session still dies when its sandbox closes (PID namespace / kill(-1) as the sandbox uid)."""
    marker = open_dir / "late"
    program = f"""
        import os, time
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(1.5)
                open({str(marker)!r}, 'w').write('still alive')
                time.sleep(60)
            os._exit(0)
        os.waitpid(pid, 0)
        return 'forked'
    """
    assert _probe(program, processes=8) == "forked"
    if ROOT:
        assert _sandbox_procs() == []
    time.sleep(2.5)
    assert not marker.exists()


@contained
def test_a_killed_evaluator_leaves_nothing_behind(tmp_path):
    script = tmp_path / "evaluator.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from code_samples import ADD
        from minitflow.eval.code_exec import run_code_tests
        run_code_tests(ADD, "import time\\ndef add(a, b):\\n    time.sleep(60)\\n", timeout=60)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=str(Path(__file__).parents[1]))
    tmp = Path(sandbox.tempfile.gettempdir())
    deadline = time.monotonic() + 60
    folder = None
    while time.monotonic() < deadline:
        found = [p for p in tmp.glob(f"{sandbox.DIR_PREFIX}{sandbox._pid_namespace()}-{proc.pid}-*") if any(p.iterdir())]
        if found and _sandbox_procs(sandbox._uid_range(proc.pid)):
            folder = found[0]
            break
        time.sleep(0.1)
    assert folder is not None, "the evaluator never started a sandbox"
    time.sleep(1.0)  # the candidate is asleep inside its sandbox now
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _sandbox_procs(sandbox._uid_range(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sandbox_procs(sandbox._uid_range(proc.pid)) == []  # the launcher saw its parent die
    assert folder.exists()
    assert str(folder) in sandbox.cleanup_stale()
    assert not folder.exists()
    assert Path(sandbox._sandbox_root()).exists()  # ours is alive: not stale


@pytest.mark.skipif(not ROOT, reason="needs root to make a folder of another uid")
def test_stale_folders_are_only_the_evaluators_own(tmp_path, monkeypatch):
    """On the floor a program can write to a shared /tmp: a folder it names after a live evaluator
    (wrong start time) must not make the next evaluator kill that one's sandboxes."""
    fake = tmp_path / f"{sandbox.DIR_PREFIX}{sandbox._pid_namespace()}-{os.getpid()}-1"
    fake.mkdir()
    os.chown(fake, MY_UIDS[0], MY_UIDS[0])
    killed = []
    monkeypatch.setattr(sandbox, "_kill_uids", lambda *args: killed.append(args))
    assert sandbox.cleanup_stale(str(tmp_path)) == [] and killed == [] and fake.exists()
    os.chown(fake, 0, 0)  # the evaluator's own folder, of a dead evaluator: cleaned
    assert sandbox.cleanup_stale(str(tmp_path)) == [str(fake)]
    # ... but its pid is ours now: only processes older than this evaluator were the dead one's
    assert killed == [(MY_UIDS, int(sandbox._proc_start_time(os.getpid())))]
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process holds: the next one to take it starts after the sweep begins
    dead = tmp_path / f"{sandbox.DIR_PREFIX}{sandbox._pid_namespace()}-{gone.pid}-1"
    dead.mkdir()
    before = sandbox._uptime_ticks()
    assert sandbox.cleanup_stale(str(tmp_path)) == [str(dead)]
    assert killed[1][0] == sandbox._uid_range(gone.pid) and before <= killed[1][1] <= sandbox._uptime_ticks()


@pytest.mark.skipif(not ROOT, reason="sandbox uids need root")
def test_a_dead_evaluators_folder_spares_the_sandboxes_of_the_live_one_with_its_pid(tmp_path):
    """pid_max is often 32768: the pid in a dead evaluator's folder may be a live evaluator's now,
    whose sandboxes run under the same uids. Cleaning that folder killed them mid-run (seen as
    "sandbox exited with no status" in a loaded full suite: another evaluator's first sandbox)."""
    stale = tmp_path / f"{sandbox.DIR_PREFIX}{sandbox._pid_namespace()}-{os.getpid()}-1"
    stale.mkdir()
    job = {"mode": "reference", "program": "import time\ndef f():\n    time.sleep(30)\n", "entry_point": "f",
           "inputs": [[]], "sets": [1, 0], "limits": None, "not_none": False, "memory_bytes": 0,
           "evalplus_utils": sandbox.evalplus_utils_path()}
    with sandbox.Sandbox(job, sandbox.Limits(1 << 30, 20, 40)) as box:
        assert [box.next_record(20)[0][0] for _ in range(2)] == [["ready"], ["loaded"]]
        assert sandbox.cleanup_stale(str(tmp_path)) == [str(stale)]
        with pytest.raises(TimeoutError):  # still asleep in f(): no record, no exit
            box.next_record(1.0)
        assert _sandbox_procs() != []


def test_a_second_close_leaves_the_uid_another_sandbox_took_since():
    """close() twice (say an explicit close inside `with`): the second finds nothing left to
    close, and the uid the first gave back, which another sandbox took meanwhile, stays taken."""
    job = {"mode": "reference", "program": "def f():\n    return 1\n", "entry_point": "f", "inputs": [[]],
           "sets": [1, 0], "limits": None, "not_none": False, "memory_bytes": 0,
           "evalplus_utils": sandbox.evalplus_utils_path()}
    box = sandbox.Sandbox(job, sandbox.Limits(1 << 30, 20, 40))
    uid, folder = box.uid, box.dir
    box.close()
    assert (box.proc, box.dir, box.uid) == (None, None, None) and not os.path.exists(folder)
    with sandbox.Sandbox(job, sandbox.Limits(1 << 30, 20, 40)) as other:
        box.close()
        assert other.uid == uid and (uid is None or uid in sandbox._uids_in_use)
        assert [other.next_record(20)[0][0] for _ in range(2)] == [["ready"], ["loaded"]]


def test_a_runner_that_dies_reports_how_even_when_its_pipe_closes_first():
    """The runner's death closes the result pipe before its launcher reaps it and writes the
    status line: reading stopped at the closed pipe, and the failure said "no status"."""
    program = "import os, time\nos.close(3)\ntime.sleep(1)\nos._exit(3)\n"
    base, plus, detail = run_code_tests(ADD, program, timeout=10)
    assert (base, plus) == (False, False) and "sandbox exited with code=3" in detail, detail



@pytest.mark.skipif(not (ROOT and shutil.which("unshare")), reason="needs root and unshare for a PID namespace")
def test_stale_folders_are_only_those_of_this_pid_namespace(tmp_path):
    """An evaluator in another PID namespace sharing /tmp (a container, `unshare -p`) does not see
    this one's pid in its /proc: it took this live evaluator's folder for a dead one's and removed
    it, failing every sandbox started after."""
    live = tmp_path / Path(sandbox._sandbox_root()).name  # named as this live evaluator's own
    live.mkdir()
    code = f"from minitflow.eval import sandbox; print(sandbox.cleanup_stale({str(tmp_path)!r}))"
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60, cwd=str(Path(__file__).parents[1]))
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-2000:]
    assert live.exists()

# ------------------------------------------------ data files and the CLI


def _crafted_humaneval(path: Path) -> Path:
    """Original-HumanEval-format rows (a `test` script): one right canonical solution, three
    wrong ones that cheat.  The truth is 1/4."""
    check = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
    prompt = 'def add(a, b):\n    """Add."""\n'
    rows = [
        "    return a + b\n",
        "    import os\n    os.write(1, b'{\"status\": \"pass\"}\\n')\n    os._exit(0)\n",
        "    class A:\n        def __eq__(self, o):\n            return True\n    return A()\n",
        "    import builtins\n    builtins.AssertionError = type('Quiet', (Exception,), {})\n    return 0\n",
    ]
    with gzip.open(path, "wt") as f:
        for i, body in enumerate(rows):
            f.write(json.dumps({"task_id": f"Crafted/{i}", "prompt": prompt, "entry_point": "add",
                                "canonical_solution": body, "test": check}) + "\n")
    return path


def test_crafted_data_file_scores_the_truth_through_oracle(tmp_path):
    from minitflow.eval.scoring import run_oracle

    path = _crafted_humaneval(tmp_path / "crafted.jsonl.gz")
    result = run_oracle("humaneval", str(path), workers=2)
    assert result["n"] == 4 and result["accuracy"] == 0.25, result["failures"]


def test_crafted_data_file_scores_the_truth_through_the_cli(tmp_path):
    from minitflow.errors import run_cli
    from minitflow.evaluate import main

    path = _crafted_humaneval(tmp_path / "crafted.jsonl.gz")
    out = tmp_path / "out"
    assert run_cli(main, ["--method", "oracle", "--dataset", "humaneval", "--data_file", str(path),
                          "--output_dir", str(out)]) == 0
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 4 and summary["accuracy"] == 0.25


def _script_add() -> Sample:
    """An original HumanEval row (a `check()` script, no inputs): the program runs in a sandbox
    of its own and answers the script's calls through the parent."""
    sample = _sample("add", "    return a + b\n", [], prompt='def add(a, b):\n    """Add."""\n')
    for key in ("base_input", "plus_input", "atol"):
        sample.meta.pop(key)
    sample.meta["test"] = "import random\ndef check(candidate):\n    for _ in range(20):\n" \
                          "        a, b = random.randint(0, 9), random.randint(0, 9)\n" \
                          "        assert candidate(a, b) == a + b\n"
    return sample


def test_test_scripts_judge_outside_the_program():
    assert run_code_tests(_script_add(), "def add(a, b):\n    return a + b\n", timeout=10)[:2] == (True, True)


SCRIPT_FAKES = {  # the program answers the script's calls one record each: forge those answers
    "answers written ahead of the calls": """
        import os
        os.write(3, b'["loaded"]\\n' + b''.join(b'["ok"]\\t%d\\n' % i for i in range(19)))
        def add(a, b):
            return -1
    """,
    "an answer tagged as a subclass or a not-None flag": """
        import os
        def add(a, b):
            os.write(3, b'["ok"]\\t["x",%d]\\n["ok"]\\t["nn",true]\\n' % (a + b))
            os._exit(0)
    """,
}


@pytest.mark.parametrize("name", list(FAKE_PASSES) + list(SCRIPT_FAKES))
def test_fake_passes_fail_against_test_scripts(name):
    _fails_cleanly(_script_add(), textwrap.dedent({**FAKE_PASSES, **SCRIPT_FAKES}[name]))


def test_an_output_of_many_more_values_than_expected_is_refused_before_parsing():
    """A big expected output (2 MB here) lets a record of 4 MB through the byte cap; as 600,000
    empty lists it would parse into ~40x its bytes. It fails on its value count, unparsed,
    while a correct output of the same size still passes."""
    big = _sample("big", "    return 'x' * 2_000_000\n", [[]], prompt="def big():\n    pass\n", sid="Toy/big")
    code_exec.clear_expected_cache()
    flood = run_code_tests(big, "def big():\n    return [[] for _ in range(600_000)]\n")
    assert flood[:2] == (False, False) and "values against 1 expected" in flood[2], flood
    assert run_code_tests(big, "def big():\n    return 'x' * 2_000_000\n")[:2] == (True, True)
    few = _sample("few", "    return [[i] * 3 for i in range(1000)]\n", [[]], prompt="def few():\n    pass\n",
                  sid="Toy/few")
    assert run_code_tests(few, "def few():\n    return [[i] * 3 for i in range(1000)]\n")[:2] == (True, True)
    assert code_exec._values(b'["l",["l",1,2,3]]') == 7  # its 7 values (an upper bound in general)
    code_exec.clear_expected_cache()


def test_an_output_far_larger_than_expected_is_refused_unread():
    """A record may be 16x the expected output's bytes (+ 64 KiB), so that a program cannot make the
    judge buffer and parse gigabytes: one 8 MB string against a 1-byte answer is cut off."""
    code_exec.clear_expected_cache()
    detail = _fails_cleanly(ADD, "def add(a, b):\n    return 'x' * 8_000_000\n")
    assert "too large" in detail, detail


def test_a_huge_record_header_is_refused_unparsed():
    """Only a record's value is counted before parsing; its header (the kind, a short text) is
    parsed as it comes, so a header of a record's full size (16x a big expected output) of `[],`
    would cost the judge ~20x its bytes. One over 64 KiB is garbage, unparsed."""
    program = ("import os\nos.write(3, b'[\"err\"' + b',[]' * 400_000 + b']\\n')\nos._exit(0)\n"
               "def f():\n    pass\n")
    job = {"mode": "candidate", "program": program, "entry_point": "f", "inputs": [[]], "limits": [5.0],
           "not_none": False, "memory_bytes": 1 << 30, "evalplus_utils": sandbox.evalplus_utils_path()}
    with sandbox.Sandbox(job, sandbox.Limits(1 << 30, 20, 40)) as box:
        assert box.next_record(20)[0][0] == ["ready"]
        header, value = box.next_record(20)[0]
    assert header[0] == "garbage" and len(header) == 2 and value is None, str(header)[:200]


def test_unencodable_outputs_fail_outside_the_one_mbpp_task_that_accepts_anything():
    """evalplus accepts any return value for Mbpp/164 (are_equivalent) only: elsewhere in MBPP an
    object that is not plain data (here one equal to everything) fails."""
    sample = _sample("add", "def add(a, b):\n    return a + b\n", [[1, 2], [3, 4]], dataset="mbpp",
                     sid="Mbpp/900", prompt='"""\nWrite a function to add two numbers.\n"""\n')
    detail = _fails_cleanly(sample, textwrap.dedent(FAKE_PASSES["object equal to everything"]))
    assert "not plain data" in detail, detail


def test_float_outputs_are_not_broadcast_against_the_expected_ones():
    """evalplus' np.allclose broadcasts: `[[]]` (shape (1, 0)) "matches" `[1.5]` and rows of one
    value match n equal floats; n such rows against n floats would build an n x n array here."""
    sample = _sample("f", "    return [1.5] if x else [2.0, 2.0]\n", [[1], [0]], prompt="def f(x):\n",
                     sid="Toy/broadcast")
    _fails_cleanly(sample, "def f(x):\n    return [[]] if x else [2.0, 2.0]\n")
    _fails_cleanly(sample, "def f(x):\n    return [1.5] if x else [[2.0], [2.0]]\n")
    assert run_code_tests(sample, "def f(x):\n    return [1.5 + 1e-9] if x else [2.0, 2.0]\n")[:2] == (True, True)


CORRECT = {
    "prints and recurses deeply": """
        import sys
        sys.setrecursionlimit(100_000)
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
        def add(a, b):
            print("thinking...", a, b)
            print("to stderr", file=sys.stderr)
            return a + b + depth(20_000) - 20_000
    """,
    "imports common modules and takes a little time": """
        import collections, datetime, fractions, functools, hashlib, heapq, itertools, math, random, re
        import statistics, string, time
        @functools.lru_cache(maxsize=None)
        def add(a, b):
            time.sleep(0.05)
            return int(fractions.Fraction(a) + b)
    """,
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_programs_pass(name):
    assert run_code_tests(ADD, textwrap.dedent(CORRECT[name]), timeout=10) == (True, True, "pass")


def test_floats_close_to_the_expected_ones_pass():
    sample = _sample("third", "    return x / 3\n", [[1], [2.5]], [[10**6]], prompt="def third(x):\n", sid="Toy/third")
    assert run_code_tests(sample, "def third(x):\n    return x * (1 / 3)\n") == (True, True, "pass")
    _fails_cleanly(sample, "def third(x):\n    return x * 0.3333\n")


_THIRD = _sample("third", "    return x / 3\n", [[1], [2.5]], prompt="def third(x):\n", sid="Toy/third")
_PAIR = _sample("pair", "    return (x / 3, x / 7)\n", [[1]], prompt="def pair(x):\n", sid="Toy/pair")
_UNIQ = _sample("uniq", "    return set(x)\n", [[[1, 2, 2]]], prompt="def uniq(x):\n", sid="Toy/uniq")
_NT = "from collections import namedtuple\nP = namedtuple('P', 'a b')\n"
_SHOUT = _sample("shout", "    return s.upper()\n", [["ab"]], prompt="def shout(s):\n", sid="Toy/shout")


@pytest.mark.parametrize("sample, program, ok", [  # each verdict is evalplus 0.3.1's untrusted_check's
    (ADD, "from fractions import Fraction\ndef add(a, b):\n    return Fraction(a + b)\n", True),
    (ADD, "from decimal import Decimal\ndef add(a, b):\n    return Decimal(a) + b\n", True),
    (ADD, "from fractions import Fraction\ndef add(a, b):\n    return Fraction(a + b, 2)\n", False),
    (ADD, "from decimal import Decimal\ndef add(a, b):\n    return [Decimal(a + b)][0] + Decimal('0.5')\n", False),
    (_THIRD, "from decimal import Decimal\ndef third(x):\n    return Decimal(x * 2) / 6 if x == 1 else x / 3\n", False),
    (_THIRD, "from fractions import Fraction\ndef third(x):\n    return Fraction(x) / 3\n", False),
    (_THIRD, "from fractions import Fraction\ndef third(x):\n    return Fraction(x / 3)\n", True),
    (_THIRD, "import numpy as np\ndef third(x):\n    return np.float64(x) / 3\n", True),
    (_THIRD, "import numpy as np\ndef third(x):\n    return np.array([x / 3])[0]\n", True),
    (_SHOUT, "import numpy as np\ndef shout(s):\n    return np.array([s.upper()])[0]\n", True),  # np.str_
    # the tolerance asks for the expected output's very type: a float subclass or a namedtuple is not
    (_THIRD, "def third(x):\n    return x / 3 + 1e-9\n", True),
    (_THIRD, "import numpy as np\ndef third(x):\n    return np.float64(x / 3 + 1e-9)\n", False),
    (_PAIR, _NT + "def pair(x):\n    return P(x / 3, x / 7)\n", True),
    (_PAIR, _NT + "def pair(x):\n    return P(x / 3 + 1e-9, x / 7)\n", False),
    (_PAIR, "def pair(x):\n    return (x / 3 + 1e-9, x / 7)\n", True),
    # dict views equal sets
    (_UNIQ, "def uniq(x):\n    return dict.fromkeys(x).keys()\n", True),
    (_UNIQ, "def uniq(x):\n    return {k: 0 for k in x}.items()\n", False),
])
def test_outputs_of_other_types_get_evalplus_verdicts(sample, program, ok):
    """evalplus compares the live output: a Fraction or Decimal equal to the expected int or float
    passes (they failed here as "not plain data"), a dict view equals a set, and its float tolerance
    asserts type(out) == type(exp), so a near np.float64 or namedtuple fails (they passed here)."""
    base, plus, detail = run_code_tests(sample, program, timeout=10)
    assert (base, plus) == (ok, ok), detail


_SIMILAR = _sample("similar_elements", "def similar_elements(a, b):\n    return sorted(set(a) & set(b))\n",
                   [[[1, 2, 3], [2, 3, 4]], [[5], [6]]], prompt="", dataset="mbpp", sid="Mbpp/2")


@pytest.mark.parametrize("body, ok", [  # each verdict is evalplus 0.3.1's untrusted_check's
    ("return filter(lambda x: x in b, a)", True),
    ("return map(lambda x: x, sorted(set(a) & set(b)))", True),
    ("return dict.fromkeys(set(a) & set(b)).keys()", True),
    ("return (x for x in a if x not in b)", False),
])
def test_iterators_pass_where_evalplus_takes_set_of_the_output(body, ok):
    """Eight MBPP tasks are judged by set(out) == set(exp): a filter or generator of the right
    items passes in evalplus; it failed here as "not plain data"."""
    base, plus, detail = run_code_tests(_SIMILAR, f"def similar_elements(a, b):\n    {body}\n", timeout=10)
    assert (base, plus) == (ok, ok), detail


@pytest.mark.parametrize("tail, ok", [  # each verdict is evalplus 0.3.1's untrusted_check's
    ("assert add(1, 2) == 4\n", False),  # a wrong self-test at the top runs at load, and fails it
    ("if __name__ == '__main__':\n    assert add(1, 2) == 4\n", True),  # exec'd: __name__ is builtins'
    ("print(add(1, 2))\n", True),
    ("x = input()\n", False),
])
def test_module_level_code_runs_at_load_as_in_evalplus(tail, ok):
    """evalplus' harness execs the whole program (its codegen sanitizer, which would drop these
    statements before, is not part of the evaluator and is not applied: docs/sandbox.md)."""
    base, plus, detail = run_code_tests(ADD, "def add(a, b):\n    return a + b\n" + tail, timeout=10)
    assert (base, plus) == (ok, ok), detail


@pytest.mark.parametrize("cls", ["fractions.Fraction", "decimal.Decimal"])
def test_fraction_and_decimal_subclasses_that_equal_everything_fail(cls):
    module, name = cls.split(".")
    program = (f"import {module}\nclass Liar({cls}):\n    def __eq__(self, other):\n        return True\n"
               f"    __hash__ = {cls}.__hash__\ndef add(a, b):\n    return Liar(-1)\n")
    assert "wrong output" in _fails_cleanly(ADD, program)


def test_codec_builds_fractions_and_decimals_itself():
    from decimal import Decimal
    from fractions import Fraction

    for value in (Fraction(-1, 3), Fraction(2**70, 3), Decimal("-0.1"), Decimal("1e-999")):
        back = decode(json.loads(dumps(encode(value))))
        assert back == value and type(back) is type(value)
    for bad in (["F", "0x1", "0x0"], ["F", "0x1", hex(2**70000)], ["F", 1, 2], ["D", "pi"], ["D", 3]):
        with pytest.raises(ValueError):
            decode(bad)
    assert decode(["x", ["t", 1.0]]).value == (1.0,)
    with pytest.raises(ValueError):  # the type wrapper is for the output itself only
        decode(["l", ["x", 1]])


@pytest.mark.parametrize("program", [
    "import numpy as np\ndef add(a, b):\n    return int(np.add(a, b))\n",
    "def add(a, b):\n    from numpy import int64\n    return int64(a) + int64(b)\n",  # a numpy scalar back
    "import os, scipy\ndef add(a, b):\n    return a + b\n",
    "import multiprocessing\ndef add(a, b):\n    return a + b\n",
    # imported by name: the guard's TypeError failed them
    "np = __import__('numpy')\ndef add(a, b):\n    return int(np.add(a, b))\n",
    "import importlib\ndef add(a, b):\n    return int(importlib.import_module('nu' + 'mpy').add(a, b))\n",
    # evalplus' evaluator has pandas (through `datasets`); imported after the guard it cannot open a file
    "import pandas as pd\ndef add(a, b):\n    return int(pd.Series([a, b]).sum())\n",
])
def test_correct_programs_importing_numpy_pass(program):
    """evalplus' worker has numpy (and multiprocessing) imported before its reliability guard, which
    removes os.putenv: importing numpy after the guard raised TypeError, failing correct programs
    that evalplus passes."""
    assert run_code_tests(ADD, program, timeout=10) == (True, True, "pass")


@pytest.mark.parametrize("program", [
    "from __future__ import annotations\n\ndef add(a: List[int], b: int) -> int:\n    return a + b\n",
    '"""Adds."""\nfrom __future__ import (\n    annotations,\n)\ndef add(a: int, b: int) -> int:\n    return a + b\n',
])
def test_prompt_imports_go_after_the_programs_future_imports(program):
    """A full function gets the HumanEval prompt's imports prepended; put before its own
    `from __future__` line they made a correct program a SyntaxError."""
    sample = _sample("add", "    return a + b\n", [[1, 2]],
                     prompt='from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n')
    assert run_code_tests(sample, program, timeout=10) == (True, True, "pass")


def test_the_launcher_ends_a_sandbox_at_its_wall_limit():
    """Behind the parent's deadlines, the launcher stops the sandbox at its own wall limit, even
    while the parent still waits (a parent stuck elsewhere leaves no runner behind)."""
    job = {"mode": "reference", "program": "import time\ndef f():\n    time.sleep(120)\n", "entry_point": "f",
           "inputs": [[]], "sets": [1, 0], "limits": None, "not_none": False, "memory_bytes": 0,
           "evalplus_utils": sandbox.evalplus_utils_path()}
    start = time.monotonic()
    with sandbox.Sandbox(job, sandbox.Limits(1 << 30, 20, wall_seconds=3)) as box:
        kinds = []
        while True:
            rec, _ = box.next_record(60)
            if rec is None:
                break
            kinds.append(rec[0][0])
    assert kinds == ["ready", "loaded"] and time.monotonic() - start < 30


# ------------------------------------------------------ expected outputs


def test_expected_outputs_are_computed_once_per_task(monkeypatch, tmp_path):
    calls = []
    real = code_exec._run_reference
    monkeypatch.setattr(code_exec, "_run_reference", lambda task: calls.append(task.id) or real(task))
    monkeypatch.setenv(code_exec.CACHE_ENV, str(tmp_path / "cache"))
    sample = _sample("mul", "    return a * b\n", [[2, 3], [4, 5]], [[7, 8]], sid="Toy/mul",
                     prompt='def mul(a, b):\n    """Multiply."""\n')
    code_exec.clear_expected_cache()
    good, bad = "def mul(a, b):\n    return a * b\n", "def mul(a, b):\n    return a + b\n"
    results = code_exec.run_code_tests_many([(sample, good), (sample, bad), (sample, good)], workers=2)
    assert [r[:2] for r in results] == [(True, True), (False, False), (True, True)]
    assert calls == ["Toy/mul"]
    code_exec.clear_expected_cache()  # a new evaluator process: the disk cache answers
    assert run_code_tests(sample, good)[:2] == (True, True)
    assert calls == ["Toy/mul"]
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".jsonl"
    assert not stat.S_IMODE(files[0].stat().st_mode) & 0o077  # owner-only, as mkstemp made it


def test_an_unwritable_expected_outputs_cache_is_one_line(monkeypatch, tmp_path):
    """$MINITFLOW_EXPECTED_CACHE under a file: the cache's own temp-file writer let the OSError out
    (a traceback); it writes through files.replacing now, as every other output does."""
    from minitflow.errors import UserError
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(code_exec.CACHE_ENV, str(tmp_path / "file" / "cache"))
    code_exec.clear_expected_cache()
    with pytest.raises(UserError, match=r"^cannot write \S*/file/cache/\w+\.jsonl: \w"):
        code_exec.expected_outputs(code_exec._task(ADD))
    code_exec.clear_expected_cache()


def test_expected_outputs_cached_by_another_codec_are_not_reused(monkeypatch):
    """The disk cache outlives the code: an entry written when a float subclass was sent as a float
    (before CODEC_VERSION 2) would keep judging np.float64 outputs by the old rule."""
    key = code_exec._task(ADD).key
    monkeypatch.setattr(code_exec, "CODEC_VERSION", code_exec.CODEC_VERSION + 1)
    assert code_exec._task(ADD).key != key


def test_expected_outputs_of_two_tasks_that_decode_their_inputs_apart_are_not_shared():
    """MBPP+ decodes a task's inputs by its id (Mbpp/2's lists become tuples): two tasks with the
    same code and raw inputs but other ids must not share expected outputs."""
    code_exec.clear_expected_cache()
    canonical = "    return type(a).__name__\n"
    two, three = (_sample("kind", canonical, [[[1, 2], [3, 4]]], dataset="mbpp", sid=sid,
                          prompt="def kind(a, b=None):\n    pass\n") for sid in ("Mbpp/2", "Mbpp/3"))
    program = "def kind(a, b=None):\n    return type(a).__name__\n"
    assert run_code_tests(two, program)[:2] == (True, True)
    assert run_code_tests(three, program)[:2] == (True, True)
    code_exec.clear_expected_cache()


# -------------------------------------- the other isolations, run for real

# pid 1 is the namespace's init. A non-root evaluator's init and runner have one kernel uid, so
# the signal arrives; the kernel hands an init only those it handles, and Python handled SIGINT
INIT_SIGNAL = """
    import posix, signal, time
    def add(a, b):
        posix.kill(1, signal.SIGINT)
        time.sleep(0.5)
        return -1
"""

OTHER_ISOLATION_CHECK = """
import json, os, signal, sys, textwrap, time
sys.path[:0] = [{tests!r}, {repo!r}]
import test_sandbox as t
from minitflow.eval import sandbox
from minitflow.eval.code_exec import run_code_tests

out = {{"iso": sandbox.isolation().mode, "userns": sandbox.isolation().userns,
        "uid": os.getuid(), "summary": sandbox.isolation_summary()}}
out["good"] = run_code_tests(t.ADD, "def add(a, b):\\n    return a + b\\n")[:2]
out["cheats"] = {{k: run_code_tests(t.ADD, textwrap.dedent(p))[:2] for k, p in t.FAKE_PASSES.items()}}
os.environ["MINITFLOW_TEST_TOKEN"] = "tok-5e1f"
leak = t._sample("leak", "    return 'tok-5e1f'\\n", [[]], prompt="def leak():\\n    pass\\n")
out["env"] = run_code_tests(leak, "import os\\ndef leak():\\n    return os.environ.get('MINITFLOW_TEST_TOKEN')\\n")[:2]
forks = t._sample("forks", "    return 1\\n", [[]], prompt="def forks():\\n    pass\\n")
out["fork"] = run_code_tests(forks, "import posix\\ndef forks():\\n    return int(posix.fork() > 0)\\n")[:2]
ns = sandbox.isolation().mode == "namespaces"  # on the floor pid 1 is the machine's init
out["init_signal"] = run_code_tests(t.ADD, textwrap.dedent(t.INIT_SIGNAL))[:2] if ns else [False, False]
out["userns"] = t._probe(t.USERNS_PROBE)
out["sysv"] = t._probe(t.SYSV_PROBE)  # before the forks: their zombies count against the uid's 1 process
out["grandchild"] = t._probe(
    "import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    if os.fork() == 0:\\n        time.sleep(60)\\n"
    "    os._exit(0)\\ntime.sleep(0.5)\\nreturn 'forked'\\n", processes=8)
time.sleep(0.5)
survivors = t._sandbox_procs() if os.getuid() == 0 else sorted(set(t.sandbox.live_processes({{os.getuid()}})) - {{os.getpid()}})
out["survivors"] = [open("/proc/%d/cmdline" % p, "rb").read()[:80].decode("ascii", "replace") for p in survivors]
out["leftover"] = os.listdir(sandbox._sandbox_root())
tables = [[line.split() for line in open("/proc/sysvipc/" + kind)] for kind in ("shm", "msg", "sem")]
out["ipc_left"] = [row for head, *rows in tables for row in rows if int(dict(zip(head, row))["uid"]) in t.MY_UIDS]
print("RESULT " + json.dumps(out))
"""


def _run_elsewhere(env_extra: dict, as_user: int | None) -> dict:
    """Run OTHER_ISOLATION_CHECK in a private mount namespace where /root is traversable (the
    Python installation may live there), as root or as `as_user`."""
    script = Path(tempfile.mkdtemp(prefix="sandbox-check-")) / "check.py"  # readable by `as_user`
    script.parent.chmod(0o755)
    script.write_text(OTHER_ISOLATION_CHECK.format(tests=str(Path(__file__).parent), repo=str(Path(__file__).parents[1])))
    script.chmod(0o644)
    prefix = Path(sys.base_prefix).resolve()
    setup = "set -e\n"
    if str(prefix).startswith("/root/"):
        top = "/root/" + prefix.relative_to("/root").parts[0]
        setup += (f"d=$(mktemp -d); mount --bind {top} $d; mount -t tmpfs -o mode=755 tmpfs /root; "
                  f"mkdir -p {top}; mount --bind $d {top}\n")
    run = [sys.executable, str(script)]
    if as_user is not None:
        run = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *run]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", **env_extra}
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", setup + 'exec "$@"',
                           "sh", *run], capture_output=True, text=True, env=env, timeout=180,
                          cwd=str(Path(__file__).parents[1]))
    shutil.rmtree(script.parent)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[0][7:])


def _check_other(got: dict) -> None:
    assert got["good"] == [True, True]
    assert all(v == [False, False] for v in got["cheats"].values()), got["cheats"]
    assert got["env"] == [False, False] and got["fork"] == [False, False]
    assert got["grandchild"] == "forked" and got["survivors"] == [] and got["leftover"] == []
    assert got["userns"] != "user namespace made"
    assert got["init_signal"] == [False, False]  # a wrong program's verdict, not a SandboxError
    assert got["iso"] == "floor" or got["sysv"] == [-1, -1, -1]
    assert got["ipc_left"] == []  # on the floor a segment and a queue outlived their sandbox


can_set_up = pytest.mark.skipif(not (ROOT and NAMESPACES and shutil.which("unshare") and shutil.which("setpriv")),
                                reason="needs root, mount namespaces, unshare and setpriv to set up")


@can_set_up
def test_floor_isolation_as_root():
    got = _run_elsewhere({sandbox.SANDBOX_ENV: "floor"}, None)
    assert got["iso"] == "floor" and "floor" in got["summary"] and "NOT blocked" in got["summary"]
    _check_other(got)


@can_set_up
def test_user_namespaces_for_a_non_root_evaluator():
    got = _run_elsewhere({}, 65534)
    assert got["uid"] == 65534 and got["iso"] == "namespaces" and got["userns"], got["summary"]
    _check_other(got)
