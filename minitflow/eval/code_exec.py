"""Run HumanEval(+)/MBPP(+) programs against their tests; the judge never runs inside the sandbox.

How one problem is checked (mirrors evalplus 0.3.1 `evaluate.py` / `eval/__init__.py`):

1. Expected outputs: the canonical solution runs in a sandbox (`sandbox.py`,
   threat model in docs/sandbox.md) on the base and plus inputs (evalplus
   `trusted_exec`: a fresh exec per input set, deep-copied inputs, CPU time
   per call, wall time per set) and sends its outputs back as plain data.
   They are computed once per task and kept in memory (and on disk under
   $MINITFLOW_EXPECTED_CACHE if set), keyed by a hash of the task id, canonical
   code, entry point, inputs and atol.
2. The candidate runs in a fresh sandbox of its own, which never sees the
   expected outputs: it gets the program and the inputs, applies evalplus'
   `reliability_guard`, calls the entry point on each input under
   `max(1 s, 4 x reference CPU time)` and sends each output back.  It has
   no say in the verdict: this (parent) process decodes each output into
   plain builtins, Fraction and Decimal (nothing else can be encoded: objects
   that equal everything, classes, generators... fail; a subclass comes as its
   base type, marked as such for the tolerance's type check) and compares it
   with evalplus' rules (special oracles, float tolerance), stopping at the
   first failure.
3. Each input set has a wall budget, `min(sum(limits), max(timeout,
   4 x reference wall time)) + 1` s, counted while this process waits for
   the sandbox; past it the sandbox is killed as a whole (timeout).
   `exit()`/`sys.exit()` raise and fail; `os._exit()` ends the sandbox
   without outputs, which fails too.

Deviations from evalplus 0.3.1, meant to be no stricter:
* Per-input limits are CPU time (ITIMER_PROF) instead of wall time: wall-clock
  ratios swing 2-4x on a busy machine, CPU time does not.
* The set budget uses `max(timeout, 4 x reference wall)` (evalplus: `timeout`),
  which a correct solution can miss when the reference alone needs ~40 s (Mbpp/599).
* Its `find_zero` oracle (HumanEval/32) fails every program; fixed as upstream did later.
* Base and plus inputs run in one process; when base fails, plus is not run
  and `passed_plus` is reported False ("correct" = base AND plus is unaffected).
* Outputs that are not plain data (numpy arrays, custom classes) fail; evalplus
  compares them live, where a few (e.g. a 1-element array) could pass.  A subclass
  of a plain type (namedtuple, IntEnum, a float subclass) compares as its base
  type: evalplus lets its own __eq__ decide.  A Fraction whose numerator and
  denominator hold more than 65,536 bits together is refused (normalising it
  here is a gcd, quadratic in its size).
* Float outputs compared with a tolerance must have the expected shape: evalplus' np.allclose
  broadcasts, so it passes `[[]]` against `[x]` (and builds an n x n array for n rows of one).

Original HumanEval rows (no `base_input`) run their `test` script: `check()`
runs in one sandbox with a proxy for the candidate, which runs in another; the
proxy carries arguments and plain-data results between them through this
process, so the program never sees the test's expected values nor runs where
the asserts are.  There are no plus tests: passed_plus = passed_base.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from minitflow.files import replacing

from .sandbox import Limits, Sandbox, evalplus_utils_path, isolation, isolation_summary  # noqa: F401
from .sandbox_child import CODEC_VERSION, NotNoneFlag, Subclassed, check_hashes, decode, dumps

DEFAULT_TIMEOUT = 60.0  # seconds per test set (evalplus EVALPLUS_TIMEOUT_PER_TASK)
VALUES_SLACK = 1 << 16  # values an output may hold beyond twice the expected one's (see _values)
MEMORY_MB = 4096  # evalplus' default EVALPLUS_MAX_MEMORY_BYTES
REFERENCE_TIMEOUT = 300.0  # budget for running the canonical solution (Mbpp/599 needs ~40 s)
REFERENCE_MEMORY_MB = 8192  # the canonical solution's own cap (evalplus: none; Mbpp/255 builds 1.4 GB)
MIN_TIME_LIMIT = 1.0  # evalplus DEFAULT_MIN_TIME_LIMIT
TIME_LIMIT_FACTOR = 4.0  # evalplus DEFAULT_GT_TIME_LIMIT_FACTOR
STARTUP_TIMEOUT = 60.0  # until a sandbox's runner is up (interpreter start on a busy machine)
EXEC_SLACK = 10.0  # the launcher's own hard stop comes this long after the parent's budgets
CACHE_ENV = "MINITFLOW_EXPECTED_CACHE"
MEMORY_CACHE_BYTES = 2 << 30  # expected outputs kept in memory (least recently used dropped)

CodeResult = tuple[bool, bool, str]  # (passed_base, passed_plus, detail)

MBPP_SPECIAL = frozenset({"are_equivalent", "sum_div", "surface_Area", "digit_distance_nums"})


# ================================================================= the task


def _prompt_imports(prompt: str) -> str:
    lines = [ln for ln in prompt.splitlines() if re.match(r"(from\s+\S+\s+)?import\s+\S", ln)]
    return "\n".join(lines)


def _tabs_as_spaces(body: str) -> str:
    """Leading tabs as 4 spaces: the prompt indents its docstring with spaces, and a body
    indented with tabs under it is a TabError, though it is the same program."""
    return re.sub(r"(?m)^[ \t]+", lambda m: m.group(0).replace("\t", "    "), body)


_FUTURE_RE = re.compile(r"^from[ \t]+__future__[ \t]+import[ \t]*(?:\([^)]*\)|[^\n]*)", re.M)


def prompt_imports(sample: Any) -> str:
    """The imports build_program gives a program defining its entry point (HumanEval's prompt's):
    what they bind, the program need not define (extract_code's `prelude`)."""
    meta = sample.meta
    return _prompt_imports(meta["prompt"]) if meta.get("dataset") == "humaneval" else ""


def build_program(sample: Any, code: str) -> str:
    """The program to test. HumanEval: a body-only completion gets the prompt
    prepended; a full function gets the prompt's imports (e.g. `List`) prepended,
    after its own `from __future__` imports (which must come first)."""
    meta = sample.meta
    if meta.get("dataset") != "humaneval":
        return code
    entry = re.escape(meta["entry_point"])
    if not re.search(rf"^\s*(?:async\s+)?def\s+{entry}\s*\(", code, re.M):
        return meta["prompt"] + _tabs_as_spaces(code)
    imports = _prompt_imports(meta["prompt"])
    if not imports:
        return code
    at = max((m.end() for m in _FUTURE_RE.finditer(code)), default=0)
    return f"{code[:at]}\n{imports}\n{code[at:]}" if at else f"{imports}\n{code}"


@dataclass(frozen=True)
class Task:
    """What the judge knows about one evalplus problem (never sent to a candidate's sandbox
    except the inputs)."""

    key: str
    id: str
    dataset: str
    entry_point: str
    reference: str
    base: list
    plus: list
    atol: float
    not_none: bool
    inputs: list  # base + plus


def _task(sample: Any) -> Task:
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

    meta = sample.meta
    dataset = meta["dataset"]
    raw_base, raw_plus = meta["base_input"], meta.get("plus_input") or []
    reference = meta.get("prompt", "") + meta["canonical_solution"]
    atol = meta.get("atol", 0) or 0
    # the id too: MBPP+ decodes a task's inputs by its id (evalplus' mbpp_deserialize_inputs); the
    # codec's version too: a disk cache entry of an older one spells the outputs otherwise
    blob = json.dumps([dataset, str(sample.id), meta["entry_point"], reference, raw_base, raw_plus, atol,
                       CODEC_VERSION], default=repr, sort_keys=True).encode()
    base, plus = raw_base, raw_plus
    if dataset == "mbpp":  # MBPP+ stores tuples/sets/complex in a JSON encoding
        from evalplus.data.mbpp import mbpp_deserialize_inputs

        base = mbpp_deserialize_inputs(sample.id, base)
        plus = mbpp_deserialize_inputs(sample.id, plus)
    entry = meta["entry_point"]
    return Task(key=hashlib.sha256(blob).hexdigest(), id=str(sample.id), dataset=dataset,
                entry_point=entry, reference=reference, base=list(base), plus=list(plus), atol=atol,
                not_none=dataset == "mbpp" and entry in MBPP_OUTPUT_NOT_NONE_TASKS,
                inputs=list(base) + list(plus))


def _set_eq(task: Task) -> bool:
    """MBPP tasks evalplus judges by set(out) == set(exp)."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_SET_EQ_TASKS

    return task.dataset == "mbpp" and task.entry_point in MBPP_OUTPUT_SET_EQ_TASKS


def _special(task: Task) -> bool:
    """Tasks whose verdict is not plain equality (no byte-equality shortcut)."""
    if task.dataset == "humaneval":
        return task.entry_point == "find_zero"
    return task.entry_point in MBPP_SPECIAL or _set_eq(task) or task.not_none


# ========================================================== expected outputs


@dataclass(frozen=True)
class Expected:
    """The canonical solution's outputs (encoded JSON, one per input) and timings."""

    outputs: list[bytes | bytearray]
    cpu: list[float]
    walls: tuple[float, float]  # wall seconds of the base and the plus set

    def nbytes(self) -> int:
        return sum(len(o) for o in self.outputs)


class ReferenceFailed(Exception):
    """The canonical solution itself failed (broken or crafted data file)."""


_cache: OrderedDict[str, Expected] = OrderedDict()
_cache_bytes = [0]
_cache_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def _disk_path(key: str) -> str | None:
    root = os.environ.get(CACHE_ENV)
    return os.path.join(root, f"{key}.jsonl") if root else None


def _disk_load(key: str, n: int) -> Expected | None:
    """A cached entry: a header line, then one output per line; None if absent or not ours."""
    path = _disk_path(key)
    if path is None or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        try:
            head = json.loads(f.readline())
        except ValueError:
            return None  # not an entry of ours: recomputed and overwritten
        outputs = [ln.rstrip(b"\n") for ln in f]
    if not isinstance(head, dict) or head.get("key") != key or len(outputs) != n or len(head.get("cpu", [])) != n:
        return None
    return Expected(outputs, [float(t) for t in head["cpu"]], tuple(head["walls"]))


def _disk_store(key: str, exp: Expected) -> None:
    """Written through files.replacing: never half-written, an unwritable folder is one line."""
    path = _disk_path(key)
    if path is None:
        return
    with replacing(path) as tmp, open(tmp, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # owner-only whatever the umask, as mkstemp made it: entries judge programs
        f.write(json.dumps({"key": key, "cpu": exp.cpu, "walls": list(exp.walls)}).encode() + b"\n")
        for out in exp.outputs:
            f.write(out + b"\n")


def _remember(key: str, exp: Expected) -> None:
    size = exp.nbytes()
    with _cache_lock:
        if size > MEMORY_CACHE_BYTES:
            return
        _cache[key] = exp
        _cache_bytes[0] += size
        while _cache_bytes[0] > MEMORY_CACHE_BYTES:
            _, old = _cache.popitem(last=False)
            _cache_bytes[0] -= old.nbytes()


def clear_expected_cache() -> None:
    """Forget the in-memory expected outputs (tests; not the disk cache)."""
    with _cache_lock:
        _cache.clear()
        _cache_bytes[0] = 0


def expected_outputs(task: Task) -> Expected:
    """The canonical solution's outputs for `task`, computed once (per-task lock)."""
    with _cache_lock:
        if task.key in _cache:
            _cache.move_to_end(task.key)
            return _cache[task.key]
        lock = _key_locks.setdefault(task.key, threading.Lock())
    with lock:
        with _cache_lock:
            if task.key in _cache:
                return _cache[task.key]
        exp = _disk_load(task.key, len(task.inputs))
        if exp is None:
            exp = _run_reference(task)
            _disk_store(task.key, exp)
        _remember(task.key, exp)
        return exp


def _run_reference(task: Task) -> Expected:
    job = {"mode": "reference", "program": task.reference, "entry_point": task.entry_point,
           "inputs": task.inputs, "sets": [len(task.base), len(task.plus)], "limits": None,
           "not_none": task.not_none, "memory_bytes": 0, "evalplus_utils": evalplus_utils_path()}
    limits = Limits(memory_bytes=REFERENCE_MEMORY_MB << 20,
                    cpu_seconds=REFERENCE_TIMEOUT + EXEC_SLACK,
                    wall_seconds=STARTUP_TIMEOUT + REFERENCE_TIMEOUT + EXEC_SLACK, file_bytes=1 << 30)
    outputs: list[bytes | bytearray] = []
    cpu: list[float] = []
    walls: list[float] = []
    with Sandbox(job, limits, max_record_bytes=2 << 30) as box:
        left, started = STARTUP_TIMEOUT, False
        try:
            while len(walls) < 2:
                rec, waited = box.next_record(left)
                left -= waited
                if rec is None:
                    raise ReferenceFailed(f"sandbox exited with {box.runner_exit} and no result "
                                          f"{box.diagnostics()[-200:]}".strip())
                (kind, *rest), value = rec
                if kind == "ready" and not started:
                    started, left = True, REFERENCE_TIMEOUT
                elif kind == "ok" and value is not None and len(rest) == 1:
                    if b"\x00" in value:
                        raise ReferenceFailed(f"output #{len(outputs)} is not plain data")
                    outputs.append(value)
                    cpu.append(float(rest[0]))
                elif kind == "wall" and len(rest) == 1:
                    walls.append(float(rest[0]))
                elif kind != "loaded":
                    raise ReferenceFailed(f"{kind} {str(rest)[:200]}")
        except TimeoutError:
            raise ReferenceFailed("no result in time" if started else "sandbox did not start") from None
    if len(outputs) != len(task.inputs):
        raise ReferenceFailed(f"{len(outputs)} outputs for {len(task.inputs)} inputs")
    return Expected(outputs, cpu, (walls[0], walls[1]))


# ================================================================== judging


def _outputs_match(task: Task, inp: Any, out: Any, exp: Any, atol: float) -> tuple[bool, float]:
    """evalplus 0.3.1 `unsafe_execute` comparison on decoded plain data; (ok, atol for later inputs)."""
    import numpy as np
    from evalplus.eval import is_floats
    from evalplus.eval._special_oracle import (
        MBPP_OUTPUT_SET_EQ_TASKS,
        _digit_distance_nums,
        _poly,
        _surface_Area,
    )

    entry = task.entry_point
    # a subclass (namedtuple, np.float64's kin...) equals as its value does, but is never of
    # the other's type: evalplus' tolerance asserts type(out) == type(exp) on the live objects
    foreign = isinstance(out, Subclassed) or isinstance(exp, Subclassed)
    out = out.value if isinstance(out, Subclassed) else out
    exp = exp.value if isinstance(exp, Subclassed) else exp
    exact = out == exp
    if task.dataset == "mbpp":
        if entry == "are_equivalent":  # Mbpp/164
            exact = True
        elif entry == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry == "surface_Area":  # Mbpp/581
            exact = exact or abs(out - _surface_Area(*inp)) <= atol
        elif entry == "digit_distance_nums":  # Mbpp/558
            exact = exact or out == _digit_distance_nums(*inp)
        elif entry in MBPP_OUTPUT_SET_EQ_TASKS:
            if isinstance(out, (list, tuple)):
                check_hashes(list(out))  # set(out) of colliding values would stall the judge
            exact = set(out) == set(exp)
        elif task.not_none:  # the sandbox sent bools as they are, anything else as "is not None"
            exact = (out == exp) if isinstance(out, bool) else (isinstance(out, NotNoneFlag) and exp == out.flag)
    if task.dataset == "humaneval" and entry == "find_zero":
        return bool(abs(_poly(*inp, out)) <= atol), atol
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        if foreign or type(out) is not type(exp):
            return False, atol
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False, atol
        # same shape, no broadcasting: against [x] evalplus passes [[]] (an empty (1, 0) array), and
        # n rows of one float against n floats would make an n x n array (gigabytes) in this process
        got, want = np.asarray(out), np.asarray(exp)
        if got.shape != want.shape:
            return False, atol
        return bool(np.allclose(got, want, rtol=1e-07, atol=atol)), atol
    return bool(exact), atol


def _judge(task: Task, i: int, rec: tuple[list, bytes | None], expected: bytes, special: bool,
           limit: float, atol: float) -> tuple[str, float]:
    """('' if input i passed else why, atol for later inputs).  Only the output counts:
    nothing the sandbox says about itself can make an input pass."""
    (kind, *rest), value = rec
    if kind == "ok" and value is not None and not rest:
        if not special and value == expected and b"NaN" not in expected:
            # same encoding, same plain value; evalplus' tolerance still turns on here for later inputs
            return "", (1e-6 if atol == 0 and _FLOATS_RE.fullmatch(expected) else atol)
        if b"\x00" in value:  # a streamed output that turned out not to be plain data
            kind, rest = "unencodable", ["output is not plain data"]
    if kind == "ok" and value is not None and not rest:
        got, want = _values(value), _values(expected)
        if got > 2 * want + VALUES_SLACK:
            return f"wrong output: {got} values against {want} expected", atol
        try:
            out = decode(json.loads(value))
            exp = decode(json.loads(expected))
            ok, atol = _outputs_match(task, task.inputs[i], out, exp, atol)
        except Exception as e:  # noqa: BLE001 - a malformed or incomparable output fails
            return f"output not comparable ({type(e).__name__})", atol
        return ("" if ok else "wrong output"), atol
    if kind == "unencodable" and task.dataset == "mbpp" and task.entry_point == "are_equivalent":
        return "", atol  # evalplus accepts any return value there
    if kind == "timeout":
        return f"timeout (> {limit:.2f}s CPU)", atol
    if kind in ("err", "unencodable") and rest:
        return str(rest[0])[:300], atol
    if kind == "oversize":
        return f"output of {rest[0] if rest else '?'} bytes is too large", atol
    return f"unexpected record {str(kind)[:20]!r}", atol


# evalplus' is_floats (a float, or a non-empty list or tuple of floats) on an encoded output, unparsed
_FLOAT = rb"-?(?:\d+\.\d+(?:e[-+]\d+)?|\d+e[-+]\d+|Infinity|NaN)"  # json.dumps of a float
_FLOATS_RE = re.compile(rb'%s|\["[lt]"(?:,%s)+\]' % (_FLOAT, _FLOAT))


def _values(encoded: bytes) -> int:
    """An upper bound on the values an encoded output holds (separators, list openings, one). An
    output equal to the expected one has as many; a parsed value costs 10-25x its bytes in Python
    objects, so the byte cap alone let a wrong output of many tiny lists take tens of GB."""
    return encoded.count(b",") + encoded.count(b"[") + 1


def _budgets(exp: Expected, n_base: int, timeout: float) -> tuple[list[float], tuple[float, float]]:
    """Per-input CPU limits and per-set wall budgets (see the module docstring)."""
    limits = [max(MIN_TIME_LIMIT, TIME_LIMIT_FACTOR * t) for t in exp.cpu]
    sets = (limits[:n_base], limits[n_base:])
    budgets = tuple(min(sum(lim), max(timeout, TIME_LIMIT_FACTOR * wall)) + 1
                    for lim, wall in zip(sets, exp.walls))
    return limits, budgets  # type: ignore[return-value]


def _run_candidate(task: Task, program: str, exp: Expected, timeout: float) -> CodeResult:
    n_base = len(task.base)
    limits, budgets = _budgets(exp, n_base, timeout)
    job = {"mode": "candidate", "program": program, "entry_point": task.entry_point,
           "inputs": task.inputs, "limits": limits, "not_none": task.not_none, "set_eq": _set_eq(task),
           "memory_bytes": MEMORY_MB << 20, "evalplus_utils": evalplus_utils_path()}
    box_limits = Limits(memory_bytes=MEMORY_MB << 20, cpu_seconds=sum(budgets) + EXEC_SLACK,
                        wall_seconds=STARTUP_TIMEOUT + sum(budgets) + EXEC_SLACK)
    biggest = max((len(o) for o in exp.outputs), default=0)
    cap = min(16 * biggest, 2 * biggest + (256 << 20)) + (64 << 10)  # same value, other spelling
    special = _special(task)
    atol, n_done = task.atol, 0
    with Sandbox(job, box_limits, max_record_bytes=cap) as box:
        why = _not_started(box)
        if why is not None:
            return False, False, why
        left = budgets[0]
        try:
            rec, waited = box.next_record(left)
            left -= waited
            if rec is None or rec[0][0] != "loaded":
                why = _no_result(box, rec) if rec is None else _judge(task, 0, rec, b"", True, 0, 0)[0]
                return False, False, f"fail: {why}"
            for i in range(len(task.inputs)):
                if i == n_base:
                    left = budgets[1]
                rec, waited = box.next_record(left)
                left -= waited
                where, idx = ("base", i) if i < n_base else ("plus", i - n_base)
                why = _no_result(box, rec) if rec is None else None
                if why is None:
                    why, atol = _judge(task, i, rec, exp.outputs[i], special, limits[i], atol)
                if why:
                    return where == "plus", False, f"fail: {where} input #{idx}: {why}"
                n_done += 1
        except TimeoutError:
            base_ok = n_done >= n_base > 0
            return base_ok, False, f"timeout during exec after {n_done} passing input(s)"
    return True, True, "pass"


def _not_started(*boxes: Sandbox) -> str | None:
    """None once every sandbox has said it is ready; otherwise why one did not."""
    try:
        for box in boxes:
            rec, _ = box.next_record(STARTUP_TIMEOUT)
            if rec is None or rec[0][0] != "ready":
                return _no_result(box, rec)
    except TimeoutError:
        return "timeout during startup: the sandbox did not start"
    return None


def _no_result(box: Sandbox, rec: Any) -> str:
    if rec is not None:
        return f"unexpected record {str(rec[0][0])[:20]!r}"
    tail = box.diagnostics().strip().splitlines()[-1:] or [""]
    return f"sandbox exited with {box.runner_exit or 'no status'} and no result {tail[0][:200]}".strip()


# ============================================================= test scripts


def _run_script(sample: Any, program: str, timeout: float) -> CodeResult:
    """Original HumanEval rows: the row's `check()` in one sandbox, the program in another."""
    meta = sample.meta
    utils = evalplus_utils_path()
    serve = {"mode": "serve", "program": program, "entry_point": meta["entry_point"],
             "memory_bytes": MEMORY_MB << 20, "evalplus_utils": utils}
    check = {"mode": "check", "prompt": meta["prompt"], "test": meta.get("test") or "",
             "entry_point": meta["entry_point"], "evalplus_utils": utils}
    lim = Limits(memory_bytes=MEMORY_MB << 20, cpu_seconds=timeout + EXEC_SLACK,
                 wall_seconds=STARTUP_TIMEOUT + timeout + EXEC_SLACK)
    cap = 16 << 20
    with Sandbox(serve, lim, max_record_bytes=cap) as cand, Sandbox(check, lim, max_record_bytes=cap) as judge:
        why = _not_started(cand, judge)
        if why is not None:
            return False, False, why
        left = timeout + 1
        try:
            rec, waited = cand.next_record(left)
            left -= waited
            if rec is None or rec[0][0] != "loaded":
                why = _no_result(cand, rec) if rec is None else _judge_script_error(rec)
                return False, False, f"fail: base input #0: {why}"
            while True:
                rec, waited = judge.next_record(left)
                left -= waited
                if rec is None:
                    return False, False, f"fail: test script: {_no_result(judge, rec)}"
                (kind, *rest), value = rec
                if kind == "verdict" and rest and rest[0] is True:
                    return True, True, "pass (base-only dataset: no plus tests)"
                if kind == "verdict":
                    return False, False, f"fail: base input #0: {str(rest[1:2])[1:-1][:300]}"
                if kind != "call" or value is None:
                    return False, False, f"fail: test script: unexpected record {str(kind)[:20]!r}"
                cand.send(value + b"\n")
                reply, waited = cand.next_record(left)
                left -= waited
                if reply is not None and reply[0][0] == "ok" and reply[1] is not None:
                    judge.send(dumps(["ok"]).encode() + b"\t" + reply[1] + b"\n")
                else:
                    why = _no_result(cand, reply) if reply is None else _judge_script_error(reply)
                    judge.send((dumps(["err", why[:300]]) + "\n").encode())
        except TimeoutError:
            return False, False, "timeout during exec after 0 passing input(s)"


def _judge_script_error(rec: tuple[list, bytes | None]) -> str:
    kind, *rest = rec[0]
    return str(rest[0])[:300] if kind in ("err", "unencodable") and rest else f"unexpected record {str(kind)[:20]!r}"


# ================================================================ public API


def run_code_tests(
    sample: Any,
    completion: str,
    timeout: float = DEFAULT_TIMEOUT,
    as_written: bool = False,
) -> CodeResult:
    """(passed_base, passed_plus, detail) for a program (already extracted from
    the response, see scoring.extract_code). Correct = passed_base and passed_plus.
    `as_written`: run `completion` as it is, without build_program's prompt or imports."""
    meta = sample.meta
    dataset = meta.get("dataset")
    if dataset not in ("humaneval", "mbpp"):
        raise ValueError(f"sample {sample.id!r} is not a code task (meta['dataset']={dataset!r})")
    program = completion if as_written else build_program(sample, completion)
    if "base_input" not in meta:  # original HumanEval: run its check() script
        return _run_script(sample, program, float(timeout))
    task = _task(sample)
    try:
        exp = expected_outputs(task)
    except ReferenceFailed as e:
        return False, False, f"error: the canonical solution failed: {e}"
    return _run_candidate(task, program, exp, float(timeout))


def run_code_tests_many(
    items: Sequence[tuple[Any, str]],
    workers: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    as_written: bool = False,
) -> list[CodeResult]:
    """run_code_tests over (sample, program) pairs, `workers` sandboxes at a time; keeps order."""
    if not items:
        return []
    isolation()  # probe once, before the threads
    if workers <= 1:
        return [run_code_tests(s, c, timeout, as_written) for s, c in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda it: run_code_tests(it[0], it[1], timeout, as_written), items))
