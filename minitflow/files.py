"""Reading inputs and writing outputs so that a bad path is one UserError line and no output is
ever half-written: text is decoded as UTF-8 with a clear error, JSON lines are split on "\\n"
only (str.splitlines also splits on U+0085, U+2028, ... that JSON strings may hold raw), output
paths are checked before any work, and every file is written to a temporary sibling and then
renamed over the target (a crash leaves the old file or the new one, never a mix). Evaluate's
per-rank lock files are found and tested here too: score reads them, and a command line is no
library for another.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import IO, Any, Iterator

from minitflow.errors import UserError


# ---- package data ------------------------------------------------------------------------

def demo_dir() -> Path:
    """The shipped demo: a HF-format Qwen3 directory that also holds `tflow.pt` and `heldout.jsonl`."""
    return Path(str(resources.files("minitflow").joinpath("data/demo")))


def env_true(name: str) -> bool:
    """An environment flag read as huggingface-hub reads its own (HF_HUB_OFFLINE...): one of its
    true values (1, ON, YES, TRUE) in any case; anything else is off ("no" and "off" too)."""
    from huggingface_hub.constants import ENV_VARS_TRUE_VALUES
    return os.environ.get(name, "").strip().upper() in ENV_VARS_TRUE_VALUES


def hub_offline() -> str | None:
    """The variable that puts huggingface-hub offline, None when online: HF_HUB_OFFLINE, or where
    that is unset or empty the older TRANSFORMERS_OFFLINE, as the hub reads them. Else
    TRANSFORMERS_OFFLINE=1 had a partly cached model tried online, refused by the hub as
    OfflineModeIsEnabled: not a word of what the cache lacks."""
    name = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
    return name if env_true(name) else None


def connection_errors(kind: str = "TransportError") -> tuple[type[Exception], ...]:
    """Connection errors and timeouts of the HTTP clients huggingface-hub has used: requests'
    are OSErrors, httpx's (and httpx2's) TransportErrors; kind="TimeoutException": httpx's timeouts."""
    import importlib
    errors: list[type[Exception]] = [OSError] if kind == "TransportError" else []
    for module in ("httpx", "httpx2"):
        try:
            errors.append(getattr(importlib.import_module(module), kind))
        except ImportError:
            pass
    return tuple(errors)


def hub_silence(repo: str, repo_type: str = "model") -> str | None:
    """Why the hub did not answer a first ask for `repo`'s info within HF_HUB_ETAG_TIMEOUT (10 s), or
    None: it answered, an HTTP error included (gated, private, no such repo), which the download that
    follows words. huggingface-hub's own first requests wait without a timeout or retry for minutes:
    a hub behind a firewall that drops packets, or a proxy that never answers, held a run that long."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import HfHubHTTPError
    ask = HfApi().model_info if repo_type == "model" else HfApi().dataset_info
    try:
        ask(repo, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:
        return None
    except connection_errors() as e:
        return (f"the Hugging Face hub at {constants.ENDPOINT} did not answer ({type(e).__name__}; "
                f"HF_HUB_ETAG_TIMEOUT={constants.HF_HUB_ETAG_TIMEOUT:g} s)")
    return None


# ---- reading -----------------------------------------------------------------------------

def model_file(path: Path) -> bool:
    """Whether a model folder holds `path` as a file. A broken symbolic link is a UserError, not
    an absent file: the Hugging Face cache links each file of a snapshot to a blob, and a
    download cut short or a cleaned cache leaves the link. Read as absent, a
    generation_config.json or tokenizer_config.json fell back to defaults without a word (other
    eos ids, top_k 50), and a model.safetensors or config.json was called missing."""
    if path.is_file():
        return True
    if path.is_symlink() and not path.exists():
        raise UserError(f"{path} is a broken link (to {os.readlink(path)}, which is missing: a download cut short "
                        "or a cleaned cache?): download the model again, e.g. `hf download <hub id>`")
    return False


def decode_utf8(data: bytes, source: str) -> str:
    """UTF-8 text without a leading byte-order mark: Notepad and PowerShell write one, and it is no
    text (it went into a question's prompt as tokens, and failed a .jsonl's first row as JSON)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise UserError(f"{source} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def os_reason(e: OSError) -> str:
    """How a one-line error names an OSError: its strerror ("Permission denied"), else its class."""
    return e.strerror or type(e).__name__


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of `path`; a missing, unreadable or non-UTF-8 file is a UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {os_reason(e)}") from None
    return decode_utf8(data, f"{what} {path}")


def read_json_object(path: Path, what: str) -> dict:
    """A file that must hold one JSON object (a HF config): anything else is one UserError line.
    ValueError, not only JSONDecodeError: an integer past the int-digit limit is a plain one."""
    text = read_text(path, what)  # a UserError (a ValueError too) of its own
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def json_reason(e: ValueError) -> str:
    """What a JSON error says: a JSONDecodeError's message, or a plain ValueError's (json.loads
    raises one for an integer past Python's int-digit limit, which JSONDecodeError handlers miss)."""
    return e.msg if isinstance(e, json.JSONDecodeError) else str(e)


def json_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the non-blank lines, split on "\\n" only."""
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield n, line


def json_rows(text: str, where: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank JSON line; a line that is not JSON is a
    UserError naming `where:line`."""
    for n, line in json_lines(text):
        try:
            yield n, json.loads(line)
        except ValueError as e:
            raise UserError(f"{where}:{n}: not valid JSON ({json_reason(e)})") from None


# ---- checking outputs before the work ---------------------------------------------------

def _non_empty(path: str | os.PathLike, what: str) -> Path:
    if not str(path).strip():  # Path("") would silently mean the current directory
        raise UserError(f"{what} is an empty path")
    return Path(path)


def _probe(folder: Path, what: str) -> None:
    """Create and remove a file in `folder`: the only reliable test that we may write there."""
    probe = folder / f".minitflow-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {what} in {folder}: {os_reason(e)}") from None


def _make_dir(folder: Path, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what}: {folder} exists and is not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent is a file, read-only file system, permissions
        raise UserError(f"cannot create the folder {folder} for {what}: {os_reason(e)}") from None


def check_output_file(path: str | os.PathLike, what: str = "output",
                      inputs: dict[str, str | os.PathLike | None] | None = None) -> Path:
    """Fail now, before any work, if `path` cannot be written as a file later, or is one of the
    `inputs` ({flag: path}) the run reads: writing it would replace that input with the results."""
    raw = str(path)  # before Path(), which drops a trailing separator ("out/" -> "out")
    path = _non_empty(path, what)
    if raw.endswith(os.sep) or path.is_dir():
        raise UserError(f"{what} {path} is a directory; give a file path")
    if path.exists() and not path.is_file():
        raise UserError(f"{what} {path} exists and is not a regular file")
    for flag, source in (inputs or {}).items():
        if source is not None and path.exists() and Path(source).is_file() and os.path.samefile(path, source):
            raise UserError(f"{what} {path} is also {flag}, which this run reads; writing it would replace that "
                            "input: choose another path")
    folder = _nearest_folder(path.parent, what)  # made only when the file is written: a failed run leaves none
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} is read-only")
    _probe(folder, what)
    return path


def _nearest_folder(folder: Path, what: str) -> Path:
    """`folder` or, where it does not exist yet, its nearest existing ancestor: the folder in
    which something must be created. A file there means the folder can never be made."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create the folder {folder} for {what}: {existing} is not a directory")
    return existing


def check_output_dir(path: str | os.PathLike, what: str = "output directory", create: bool = True) -> Path:
    """Create `path` if needed and fail now if files cannot be written in it. `create=False`: the
    same verdict where it can be given without making the folder (a file in its place, no write
    permission where it would be made), for checks that must leave nothing behind if a later one fails."""
    path = _non_empty(path, what)
    if not create:
        if path.exists() and not path.is_dir():
            raise UserError(f"{what}: {path} exists and is not a directory")
        _probe(_nearest_folder(path, what), what)
        return path
    _make_dir(path, what)
    _probe(path, what)
    return path


def unfinished(dirs: list[str]) -> list[str]:
    """"{method} in {folder}" for each run under `dirs` with partial rows but no {method}_results.json
    (still going, or stopped before rank 0 merged): not in the table, so named beside it."""
    out = []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            continue
        for folder in sorted({p.parent for p in path.rglob("*_partial.rank*.jsonl")}):
            methods = {p.name.split("_partial.rank")[0] for p in folder.glob("*_partial.rank*.jsonl")}
            out += [f"{m} in {folder}" for m in sorted(methods) if not (folder / f"{m}_results.json").is_file()]
    return sorted(set(out))


# ---- evaluate's per-rank locks ----------------------------------------------------------

def file_sha256(path: str | os.PathLike | None) -> str | None:
    """The hex sha256 of a file's bytes (None: no such file), read in 1 MiB blocks: what a run
    records of its data file and checkpoint, and what a rescore compares."""
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lock_path(out_dir: Path, method: str, rank: int) -> Path:
    """`{method}.rank{rank}.lock`: held (flock) by rank `rank` of a running evaluate of `method` in `out_dir`."""
    return out_dir / f"{method}.rank{rank}.lock"


def rank_locks(out_dir: Path, method: str) -> dict[int, Path]:
    """{rank: path} of the lock files of `method` in `out_dir`, held or not."""
    found = {}
    for path in out_dir.glob(f"{method}.rank*.lock"):
        r = path.name[len(method) + len(".rank"):-len(".lock")]
        if r.isdecimal():  # isdigit: "²" too, which int() refuses
            found[int(r)] = path
    return found


RESCORING = "score --results"  # what `score --results` writes into the locks it holds
# flock's errors on a file system without it (Lustre mounted noflock: ENOSYS; some NFS: ENOLCK)
NO_FLOCK = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)


def try_lock(path: Path) -> IO[str] | None:
    """The open file of `path` with its flock taken (kept while the file stays open; the OS
    drops it on a crash), or None when another process holds it. OSError when the file cannot
    be opened or the file system has no flock (errno in NO_FLOCK)."""
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    except OSError:
        f.close()
        raise
    return f


def lock_holder(path: Path) -> str:
    """What the holder of the lock `path` wrote into it ("" when absent or unreadable): a launch's
    run id, a rank's "joined", or score --results."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def sign_lock(lock: IO[str], text: str) -> None:
    """Replace what the held lock file says with `text`; a full disk is one line."""
    try:
        lock.seek(0)
        lock.truncate()
        lock.write(text)
        lock.flush()
    except OSError as e:
        raise UserError(f"cannot write {lock.name}: {os_reason(e)}") from None


def lock_held(path: Path) -> bool:
    """Whether another process holds the flock on `path`. On a file system without flock nobody
    can (evaluate refuses to run there), so a folder copied onto one (Lustre mounted noflock) is
    not held."""
    try:
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


# ---- atomic writes -----------------------------------------------------------------------

@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on
    any error it is removed. An OSError while writing becomes a one-line UserError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # check_output_file leaves a new folder to the write
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies, as for open()
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {os_reason(e)}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any, indent: int | None = None) -> str:
    """json.dumps keeping text readable (ensure_ascii=False) but escaping what UTF-8 cannot hold: a path
    whose bytes are not UTF-8 (a Latin-1 "résultats") reaches Python as lone surrogates, which failed
    the write after a whole run; as \\udcXX escapes (always inside a JSON string) they read back the same."""
    return json.dumps(obj, indent=indent, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    write_text(path, json_text(obj, indent) + "\n")
