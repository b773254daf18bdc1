"""The one exception type for user mistakes, and run_cli, which makes it (and Ctrl-C, SIGTERM, a closed
pipe) a command line's one line and exit code; torch-free, so that score and report start without torch."""

import argparse
import numbers
import os
import select
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Callable, NoReturn


class UserError(ValueError):
    """A bad path, flag, shape or file: the message says what is wrong and what to do."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, as every other user error of the command lines:
    a mistyped flag or value printed the whole usage block (a dozen lines for generate) above the
    line that says what is wrong (`--help` prints the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def is_int(x: object) -> bool:
    """An integer, numpy's included, that is not a bool (True is 1 to Python: max_new_tokens=True ran
    one token, batch_size=True one question)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_ordered(items: object, name: str) -> None:
    """Refuse `items` that iterate but are no list of them in order: a mapping ran its keys as the
    items, without a word, and a set ran them in an order that changes from process to process
    (str hashing is salted), so the results, and the default seeds taken in that order, did too."""
    if isinstance(items, Mapping):
        raise UserError(f"{name} is a {type(items).__name__}, whose keys would be the items: pass a list, e.g. "
                        "list(d.values())")
    if isinstance(items, (set, frozenset)):  # not a dict's keys: they keep the order they were put in
        raise UserError(f"{name} is a {type(items).__name__}, whose order changes from run to run: pass a list, "
                        "e.g. sorted(s)")


def check_int(value: object, name: str, low: int = 1) -> int:
    """`value` as a plain int (a numpy one reached json metadata, which refused it) when it is an
    integer >= `low`, else one line naming `name` (2.5 slots was a TypeError from deep inside)."""
    if not is_int(value) or value < low:
        raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, torchrun ending a failed job's ranks, `kill`), raised where
    Ctrl-C would be, so the same clean-up runs: temporary files removed, scoring stopped. Its
    default action ended the process inside a write, leaving the write's temporary file."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll flags its write end POLLERR)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by a stream without a file (a test's capture)
        return False
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


def _stopped_at_start(signum: int, frame: object) -> None:
    """Nothing to clean up yet (no file is open for writing before main): the line and the code."""
    print("interrupted" if signum == signal.SIGINT else "terminated", file=sys.stderr)
    raise SystemExit(128 + signum)


def stop_in_one_line_at_start(module: str) -> None:
    """Called by each command line before its heavy imports, with its `__name__`: run as `python -m`
    (`__main__`), a Ctrl-C or SIGTERM while it imports (torch: seconds), before run_cli takes over, is
    run_cli's one line and exit 130 / 143 too (it was a KeyboardInterrupt traceback, SIGTERM a silent
    -15). Imported as a library it does nothing: the caller's handlers are its own. A signal the
    process ignores (a background job's SIGINT) stays ignored."""
    if module != "__main__":
        return
    for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(sig) == default:
            signal.signal(sig, _stopped_at_start)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `main`; a UserError becomes one line on stderr and exit code 2; Ctrl-C and SIGTERM
    unwind (exit 130 and 143); stdout's reader gone (`| head`) is exit 141, as for a shell tool."""
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        if signal.getsignal(signal.SIGINT) is _stopped_at_start:  # Ctrl-C unwinds from here on: clean-up runs
            signal.signal(signal.SIGINT, signal.default_int_handler)
        previous = signal.signal(signal.SIGTERM, _terminate)
    # a path that is not UTF-8 (lone surrogates: a Latin-1 "résultats") in a printed line is escaped, as stderr
    # does, instead of a UnicodeEncodeError traceback after the work (score's "rescored PATH", report's notes)
    out = sys.stdout
    strict = getattr(out, "errors", None) == "strict" and hasattr(out, "reconfigure")
    if strict:
        out.reconfigure(errors="backslashreplace")
    try:
        code = main(argv)
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is then exit 141, not a traceback
        return code
    except BrokenPipeError:
        if not _stdout_gone():  # another pipe (a scoring child's): an error of the run, not a reader gone
            raise
        # stdout's reader has gone: what was written is written, the rest has no reader
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's own flush cannot fail again
        return 128 + signal.SIGPIPE
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if strict:
            out.reconfigure(errors="strict")
