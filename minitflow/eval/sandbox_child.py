"""The untrusted side of the code sandbox: runs a program on inputs and sends back plain data.

This file is executed by the sandbox (`python -I -c <this source>`) as an
unprivileged process, so it imports only the standard library (and evalplus'
`reliability_guard` / `swallow_io`, for evalplus' semantics).  Nothing it sends
is trusted: the parent never reads a verdict from here, only outputs, which it
decodes with `decode` into plain builtins and compares itself.

The parent imports `encode` / `decode` from here too, so both sides share one
codec.  The codec is JSON with tagged arrays, so that nothing but data can cross:

    None/bool/str/float/int (|x| < 2**63)  -> JSON scalars (float repr is exact)
    big int  -> ["I", hex]        bytes -> ["b", hex]     bytearray -> ["B", hex]
    complex  -> ["c", re, im]     list -> ["l", *items]   tuple -> ["t", *items]
    set      -> ["s", *items]     frozenset -> ["f", *items]
    dict     -> ["d", k0, v0, k1, v1, ...]
    Fraction -> ["F", numerator hex, denominator hex]       Decimal -> ["D", str]
    dict.keys() / dict.items() -> ["s", *items]   (they equal sets; their type is no set's)
    numpy scalar -> ["n", dtype name, value]   (float64/complex128 only as the output itself:
                                                inside it they are floats/complexes)
    "is not None" oracle flag -> ["nn", bool]   (MBPP tasks whose outputs are re.Match or None)
    an output (top level only) of another type than its value's -> ["x", value]

Subclasses of these types (namedtuple, OrderedDict, Counter, IntEnum...) are
sent as their base type (an output itself wrapped in "x": evalplus' float tolerance
asks for the expected output's very type); anything else (classes, generators,
arrays, objects whose __eq__ says yes to everything) cannot be encoded, which fails
the input.  Fraction and Decimal compare with ints and floats by value, as evalplus
compares them live: the parent builds them itself from the numbers.

Record protocol on fd 3 (one JSON array per line):
    ["ready"]                      job read, nothing of the program run yet
    ["loaded"]                     the program executed and defines the entry point
    ["ok", value]                  output of the next input (reference runs add cpu seconds)
    ["err", text] / ["timeout", s] / ["unencodable", text]
    ["wall", s]                    reference runs: total wall time
    check mode: ["call", args] ... ["verdict", ok, text]
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from typing import Any

_SMALL_INT = 2**63
CODEC_VERSION = 2  # part of the expected-output cache key: 2 = np.float64 outputs, "x", Fraction, Decimal
FRACTION_MAX_BITS = 1 << 16  # numerator + denominator: normalising one is a gcd, quadratic in size
NUMPY_DTYPES = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "longdouble", "complex64", "complex128",
})


class Unencodable(Exception):
    """The value is not plain data."""


class Subclassed:
    """Decoded ["x", value]: an output whose type was a subclass of value's (a namedtuple, a
    float subclass): equal as value is, but never of the expected output's type (evalplus'
    float tolerance asserts type(out) == type(exp))."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Subclassed({self.value!r})"


class NotNoneFlag:
    """Decoded ["nn", flag]: the program returned a non-bool for an 'is not None' task."""

    __slots__ = ("flag",)

    def __init__(self, flag: bool) -> None:
        self.flag = flag

    def __repr__(self) -> str:
        return f"NotNoneFlag({self.flag})"


def _numpy_scalar(x: Any) -> Any:
    name = x.dtype.name
    if name not in NUMPY_DTYPES:
        raise Unencodable(f"numpy {name}")
    value = x.item()
    if isinstance(value, complex):
        return ["n", name, ["c", value.real, value.imag]]
    return ["n", name, value if type(value) is not int or -_SMALL_INT < value < _SMALL_INT else ["I", hex(value)]]


def encode(x: Any) -> Any:
    """Plain-data tree for `x` (see the module docstring); raises Unencodable."""
    try:
        return _enc(x)
    except RecursionError:
        raise Unencodable("nested too deeply (or contains itself)") from None


def _module_class(module: str, name: str) -> Any:
    """A class of a module the program has imported (None if it has not: nothing can be one)."""
    return getattr(sys.modules.get(module), name, None)


_NUMBER_CLASSES = (("fractions", "Fraction"), ("decimal", "Decimal"), ("_pydecimal", "Decimal"))


def _number(x: Any) -> Any:
    """Fraction, Decimal (subclasses too: their numbers only) and numpy scalars, else Unencodable."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(x, np.generic):
        return _numpy_scalar(x)
    for module, name in _NUMBER_CLASSES:
        cls = _module_class(module, name)
        if cls is None or not isinstance(x, cls):
            continue
        if name == "Fraction":
            num, den = cls.numerator.__get__(x), cls.denominator.__get__(x)
            if type(num) is not int or type(den) is not int:
                raise Unencodable("Fraction of non-integers")
            return ["F", hex(num), hex(den)]
        return ["D", cls.__str__(x)]
    raise Unencodable(type(x).__name__)


PLAIN_TYPES = frozenset({type(None), bool, int, float, str, list, tuple, dict, set, frozenset, complex, bytes,
                         bytearray})


def encode_output(x: Any) -> Any:
    """encode(x), wrapped in ["x", ...] if x's type is not the one its value decodes to
    (a Subclassed is sent as its value, wrapped)."""
    if type(x) is Subclassed:
        return ["x", encode(x.value)]
    np = sys.modules.get("numpy")
    if np is not None and isinstance(x, np.generic) and x.dtype.name in NUMPY_DTYPES:
        return _numpy_scalar(x)  # its dtype says its type: float64 too, a float (np.str_: a str, below)
    value = encode(x)
    if type(x) in PLAIN_TYPES:
        return value
    if any(type(x) is _module_class(module, name) for module, name in _NUMBER_CLASSES):
        return value
    return ["x", value]


def _enc(x: Any) -> Any:
    t = type(x)
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if -_SMALL_INT < x < _SMALL_INT else ["I", hex(x)]
    if t is list or t is tuple:
        tag = "l" if t is list else "t"
        if _simple(x):
            return [tag, *x]
        return [tag, *map(_enc, x)]
    if t is dict:
        out = ["d"]
        for k, v in dict.items(x):
            out.append(_enc(k))
            out.append(_enc(v))
        return out
    if t is set or t is frozenset:
        return ["s" if t is set else "f", *map(_enc, x)]
    if t is complex:
        return ["c", x.real, x.imag]
    if t is bytes or t is bytearray:
        return ["b" if t is bytes else "B", bytes(x).hex()]
    # subclasses of plain types travel as their base type
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return _enc(int.__index__(x))
    if isinstance(x, float):
        return float.__float__(x)
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, dict):
        return _enc(dict(dict.items(x)))
    if isinstance(x, list):
        return _enc(list(list.__iter__(x)))
    if isinstance(x, tuple):
        return _enc(tuple(tuple.__iter__(x)))
    if isinstance(x, frozenset):
        return _enc(frozenset(frozenset.__iter__(x)))
    if isinstance(x, set):
        return _enc(set(set.__iter__(x)))
    if isinstance(x, complex):
        return _enc(complex(x.real, x.imag))
    if t is _DICT_KEYS or t is _DICT_ITEMS:  # equal to the set of their items, as evalplus compares them
        return ["s", *map(_enc, x)]
    return _number(x)


_DICT_KEYS, _DICT_ITEMS = type({}.keys()), type({}.items())


def dumps(x: Any) -> str:
    """One JSON line (no newline inside: json escapes them)."""
    return json.dumps(x, ensure_ascii=True, separators=(",", ":"))


HASH_SHARE_MAX = 64  # distinct values with one hash that a decoded set or dict may hold


def check_hashes(keys: list) -> None:
    """ValueError if more than HASH_SHARE_MAX distinct values share one hash: a set or dict of n
    such values takes O(n^2) time to build (hash flooding), stalling whoever decodes it."""
    hashes = list(map(hash, keys))  # TypeError for an unhashable key, as set() would raise
    if len(keys) - len(set(hashes)) <= HASH_SHARE_MAX:
        return
    seen: dict[int, list] = {}
    for h, k in zip(hashes, keys):
        same = seen.setdefault(h, [])
        if k not in same:  # equal values (duplicates) cost nothing to insert
            same.append(k)
            if len(same) > HASH_SHARE_MAX:
                raise ValueError("too many distinct values with one hash")


def decode(node: Any, numpy_module: Any = None, nested: bool = False) -> Any:
    """Inverse of `encode` (and of `encode_output` at the top) on a json-parsed tree; builds
    only builtins, Fraction, Decimal, numpy scalars of whitelisted dtypes, and Subclassed at
    the top.  Raises ValueError/TypeError/KeyError/RecursionError on anything malformed."""
    t = type(node)
    if node is None or t is bool or t is str or t is int or t is float:
        return node
    if t is not list or not node or type(node[0]) is not str:
        raise ValueError("malformed value")
    tag = node[0]
    if tag in ("l", "t", "s", "f"):
        items = [i if type(i) is not list else decode(i, numpy_module, True) for i in node[1:]]
        if tag == "l":
            return items
        if tag == "t":
            return tuple(items)
        check_hashes(items)
        return set(items) if tag == "s" else frozenset(items)
    if tag == "d":
        if len(node) % 2 != 1:
            raise ValueError("malformed dict")
        vals = [decode(i, numpy_module, True) for i in node[1:]]
        check_hashes(vals[0::2])
        return dict(zip(vals[0::2], vals[1::2]))
    if tag == "I" and len(node) == 2 and type(node[1]) is str:
        return int(node[1], 16)
    if tag == "c" and len(node) == 3 and all(type(v) in (int, float) for v in node[1:]):
        return complex(node[1], node[2])
    if tag in ("b", "B") and len(node) == 2 and type(node[1]) is str:
        data = bytes.fromhex(node[1])
        return data if tag == "b" else bytearray(data)
    if tag == "nn" and len(node) == 2 and type(node[1]) is bool:
        return NotNoneFlag(node[1])
    if tag == "F" and len(node) == 3 and all(type(v) is str for v in node[1:]):
        from fractions import Fraction

        num, den = int(node[1], 16), int(node[2], 16)
        if den == 0 or num.bit_length() + den.bit_length() > FRACTION_MAX_BITS:
            raise ValueError("malformed or oversized Fraction")
        return Fraction(num, den)
    if tag == "D" and len(node) == 2 and type(node[1]) is str:
        import decimal

        try:
            return decimal.Decimal(node[1])
        except decimal.InvalidOperation:
            raise ValueError("malformed Decimal") from None
    if tag == "x" and len(node) == 2 and not nested:
        return Subclassed(decode(node[1], numpy_module, True))
    if tag == "n" and len(node) == 3 and node[1] in NUMPY_DTYPES:
        if numpy_module is None:
            import numpy as numpy_module  # noqa: PLC0415 - only for numpy outputs
        value = decode(node[2], numpy_module, True)
        if type(value) not in (bool, int, float, complex):
            raise ValueError("malformed numpy scalar")
        return numpy_module.dtype(node[1]).type(value)
    raise ValueError(f"unknown tag {tag[:10]!r}")


# ================================================================ the runner


def _evalplus_utils(job: dict) -> Any:
    """evalplus/eval/utils.py loaded by path (standard library only; the package would import numpy)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_evalplus_eval_utils", job["evalplus_utils"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


STREAM_MIN_ITEMS = 4096  # containers this long are encoded and sent item by item


_SCALARS = frozenset({str, float, bool, type(None)})
_SCALARS_AND_INT = _SCALARS | {int}


def _simple(items: Any) -> bool:
    """All items encode as themselves (JSON scalars; ints below 2**63)."""
    kinds = set(map(type, items))
    if kinds <= _SCALARS:
        return True
    if not kinds <= _SCALARS_AND_INT:
        return False
    ints = [i for i in items if type(i) is int]
    return -_SMALL_INT < min(ints) and max(ints) < _SMALL_INT


def _pieces(x: Any) -> Any:
    """The text of dumps(encode(x)), in pieces, so a huge output never exists twice in memory.
    Runs of plain scalars go through one json.dumps call per STREAM_MIN_ITEMS items."""
    t = type(x)
    if t in _CONTAINER_TAGS and len(x) > STREAM_MIN_ITEMS:
        yield '["' + _CONTAINER_TAGS[t] + '"'
        items = _dict_flat(x) if t is dict else iter(x)
        while True:
            chunk = list(itertools.islice(items, STREAM_MIN_ITEMS))
            if not chunk:
                break
            if _simple(chunk):
                yield "," + dumps(chunk)[1:-1]
            elif not any(type(i) in _CONTAINER_TAGS and len(i) > STREAM_MIN_ITEMS for i in chunk):
                yield "," + dumps([_enc(i) for i in chunk])[1:-1]  # small items: one dumps call
            else:
                for item in chunk:
                    yield ","
                    yield from _pieces(item)
        yield "]"
    else:
        yield dumps(encode(x))


_CONTAINER_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f", dict: "d"}


def _dict_flat(d: dict) -> Any:
    for k, v in dict.items(d):
        yield k
        yield v


class _Channel:
    """Writes records to the result pipe with private references (the program may patch os)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.write = fd, os.write

    def _write(self, text: str) -> None:
        view = memoryview(text.encode("ascii"))
        while view:
            view = view[self.write(self.fd, view):]

    def send(self, header: list, value: str | None = None) -> None:
        self._write((dumps(header) if value is None else f"{dumps(header)}\t{value}") + "\n")

    def send_streamed(self, header: list, x: Any) -> None:
        """A record whose value is written while it is encoded.  If encoding fails half way, a
        NUL (never in JSON from dumps) ends the value, and the parent treats it as unencodable."""
        self._write(dumps(header) + "\t")
        buf, size = [], 0
        try:
            for piece in _pieces(x):
                buf.append(piece)
                size += len(piece)
                if size >= 1 << 20:
                    self._write("".join(buf))
                    buf, size = [], 0
        except (Unencodable, ValueError, TypeError, RecursionError):
            buf.append("\x00")
        buf.append("\n")
        self._write("".join(buf))


def split_record(line: bytes) -> tuple[Any, bytes | None]:
    """(parsed header, raw value JSON or None) of one record line (no newline).
    json.dumps never writes a raw tab, so the first tab ends the header."""
    head, tab, value = line.partition(b"\t")
    return json.loads(head), (value if tab else None)


def _cpu_time_limit(seconds: float, exc_type: type):
    """evalplus' `time_limit`, but on CPU time (ITIMER_PROF) so load on the machine does not matter."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def limit():
        def on_prof(signum, frame):  # noqa: ARG001
            raise exc_type("Timed out!")

        signal.signal(signal.SIGPROF, on_prof)
        signal.setitimer(signal.ITIMER_PROF, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)

    return limit()


def _send_output(chan: _Channel, out: Any, not_none: bool, extra: list, typed: bool = True,
                 set_eq: bool = False) -> None:
    """One ["ok", *extra] record with the output's value (or why it cannot be sent); `typed`:
    a subclass's value wrapped as such (encode_output), for the judge's type check; `set_eq`
    (MBPP tasks judged by set(out)): an iterable that is no data (a generator, map, filter,
    range) is sent as the list of its items, as evalplus' set(out) takes them."""
    if not_none and type(out) is not bool:
        chan.send(["ok", *extra], dumps(["nn", out is not None]))
        return
    if type(out) in _CONTAINER_TAGS and len(out) > STREAM_MIN_ITEMS:
        chan.send_streamed(["ok", *extra], out)
        return
    try:
        value = dumps(encode_output(out) if typed else encode(out))
    except (Unencodable, ValueError, TypeError) as e:  # TypeError: an object posing as a Decimal...
        if set_eq:
            try:
                items = list(out)
            except BaseException:  # noqa: BLE001 - not iterable, or its iteration fails: no output
                items = None
            if items is not None:
                _send_output(chan, Subclassed(items), False, extra)
                return
        chan.send(["unencodable", f"output is not plain data ({str(e)[:100]})"])
        return
    chan.send(["ok", *extra], value)


def _exec(source: str, env: dict[str, Any]) -> None:
    """exec `source` as Python (and evalplus) runs it: without this module's `from __future__
    import annotations`, which a plain exec() passes on (a `def f(x: List[int])` with no
    `List` then passed instead of raising NameError)."""
    exec(compile(source, "<string>", "exec", dont_inherit=True), env)  # noqa: S102 - this process is the sandbox


def _load(job: dict, chan: _Channel, swallow_io: Any) -> Any:
    """exec the program; its entry point, or None after reporting why not."""
    env: dict[str, Any] = {}
    try:
        with swallow_io():
            _exec(job["program"], env)
    except BaseException as e:  # noqa: BLE001 - SystemExit included on purpose
        chan.send(["err", f"program raised {_describe(e)}"])
        return None
    fn = env.get(job["entry_point"])
    if not callable(fn):
        chan.send(["err", f"no function named {job['entry_point']!r}"])
        return None
    return fn


def _run_reference(job: dict, chan: _Channel) -> None:
    """evalplus `trusted_exec` per input set: a fresh exec of the program, deep-copied
    inputs, CPU time per call; ["wall", s] after each set (calls and encoding)."""
    import copy
    import time

    swallow_io = _evalplus_utils(job).swallow_io
    chan.send(["ready"])
    inputs = iter(job["inputs"])
    for size in job["sets"]:
        start = time.perf_counter()
        fn = _load(job, chan, swallow_io)
        if fn is None:
            return
        chan.send(["loaded"])
        for _ in range(size):
            args = copy.deepcopy(next(inputs))
            try:
                with swallow_io():
                    t = time.process_time()
                    out = fn(*args)
                    cpu = time.process_time() - t
            except BaseException as e:  # noqa: BLE001
                chan.send(["err", _describe(e)])
                return
            _send_output(chan, (out is not None) if job["not_none"] else out, False, [cpu])
        chan.send(["wall", time.perf_counter() - start])


def _preload(program: str) -> None:
    """Import what evalplus' worker has imported before its guard and the guard stops a program
    from importing itself (it removes os.putenv and open): multiprocessing, and, when the program
    imports a module outside the standard library, numpy (scipy, pandas... need it too) and that
    module (pandas reads a file at import; evalplus has it through `datasets`). Without it
    `import numpy` raises TypeError, failing correct programs that evalplus passes. Imports by
    `__import__(name)` / `importlib.import_module(name)` count (numpy if the name is computed).
    A preload that fails is left to fail again, with its own error, where the program imports.
    numpy costs ~0.15 s CPU, so programs importing only the standard library go without."""
    import ast
    import importlib
    import sys

    import multiprocessing  # noqa: F401
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return  # it cannot load anyway
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module or "")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            arg = node.args[0] if node.args else None
            constant = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            names.add(arg.value if constant else "numpy")
    outside = sorted(n for n in names if n and n.partition(".")[0] not in sys.stdlib_module_names)
    if not outside:
        return
    import numpy  # noqa: F401
    for name in outside:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - not installed, or broken: the program's import says so
            pass


def _is_dynamic_import(func: Any) -> bool:
    import ast

    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name in ("__import__", "import_module")


def _guarded_entry(job: dict, chan: _Channel) -> tuple[Any, Any]:
    """A candidate's start: evalplus' reliability guard, then exec; (evalplus utils, its entry
    point or None after reporting why not). "ready" and "loaded" mark the two phases; what
    evalplus has imported before its guard is imported before "ready" (`_preload`)."""
    utils = _evalplus_utils(job)
    _preload(job["program"])
    chan.send(["ready"])
    utils.reliability_guard(maximum_memory_bytes=job["memory_bytes"])
    fn = _load(job, chan, utils.swallow_io)
    if fn is not None:
        chan.send(["loaded"])
    return utils, fn


def _run_candidate(job: dict, chan: _Channel) -> None:
    """evalplus `unsafe_execute`: guard, exec, then each input under its CPU time limit."""
    utils, fn = _guarded_entry(job, chan)
    if fn is None:
        return
    for i, inp in enumerate(job["inputs"]):
        try:
            with _cpu_time_limit(job["limits"][i], utils.TimeoutException):
                with utils.swallow_io():
                    out = fn(*inp)
        except utils.TimeoutException:
            chan.send(["timeout", job["limits"][i]])
            return
        except BaseException as e:  # noqa: BLE001 - SystemExit included on purpose
            chan.send(["err", _describe(e)])
            return
        _send_output(chan, out, job["not_none"], [], set_eq=job.get("set_eq", False))


def _run_serve(job: dict, chan: _Channel, requests: Any) -> None:
    """Candidate for a test script: answer one call per request line (args as a value)."""
    utils, fn = _guarded_entry(job, chan)
    if fn is None:
        return
    readline = requests.readline
    while True:
        line = readline()
        if not line:
            return
        try:
            args = decode(json.loads(line))
            with utils.swallow_io():
                out = fn(*args)
        except BaseException as e:  # noqa: BLE001
            chan.send(["err", _describe(e)])
            continue
        _send_output(chan, out, False, [], typed=False)  # the test script compares what it gets


def _run_check(job: dict, chan: _Channel, replies: Any) -> None:
    """A dataset's test script (`check(candidate)`), whose candidate is a proxy to the
    program's own sandbox: this process never runs the program and gets back plain data."""
    swallow_io = _evalplus_utils(job).swallow_io
    readline = replies.readline

    def candidate(*args: Any) -> Any:
        chan.send(["call"], dumps(encode(list(args))))
        line = readline()
        if not line:
            raise RuntimeError("the program's sandbox went away")
        header, value = split_record(line.rstrip(b"\n"))
        if header[0] == "ok" and value is not None:
            return decode(json.loads(value))
        raise RuntimeError(f"candidate failed: {header[1] if len(header) > 1 else header[0]}")

    chan.send(["ready"])
    env: dict[str, Any] = {}
    try:
        with swallow_io():  # the row's prompt (helpers the test may use) and test script
            _exec(job["prompt"], env)
            env[job["entry_point"]] = candidate
            _exec(job["test"], env)
            env["check"](candidate)
    except BaseException as e:  # noqa: BLE001
        chan.send(["verdict", False, _describe(e)])
        return
    chan.send(["verdict", True, "pass"])


def runner_main() -> None:
    """Entry point inside the sandbox: fd 0 = job (pickle, then request lines), fd 3 = records."""
    import pickle

    requests = os.fdopen(0, "rb", buffering=1 << 16)
    job = pickle.load(requests)
    chan = _Channel(3)
    mode = job["mode"]
    if mode in ("reference", "candidate"):
        requests.close()  # fd 0 becomes /dev/null: nothing more will come
        devnull = os.open(os.devnull, os.O_RDONLY)
        if devnull != 0:
            os.dup2(devnull, 0)
            os.close(devnull)
        (_run_reference if mode == "reference" else _run_candidate)(job, chan)
    elif mode == "serve":
        _run_serve(job, chan, requests)
    elif mode == "check":
        _run_check(job, chan, requests)
    else:
        chan.send(["err", f"unknown mode {mode!r}"])
    os._exit(0)


if __name__ == "__main__":
    runner_main()
