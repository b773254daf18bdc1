"""run_cli (minitflow/errors.py), every command line's wrapper: a CLI whose stdout reader has gone
exits 141 without a traceback; a broken pipe that is not stdout stays the run's error."""

from __future__ import annotations

import subprocess
import sys


def test_a_cli_whose_stdout_reader_has_gone_exits_141_without_a_traceback():
    """`python -m minitflow.generate ... | head -0` ended in a BrokenPipeError traceback, exit 1
    (train's final JSON line the same, after saving). Now exit 141, as a shell tool's, and quiet."""
    code = ("import sys\nfrom minitflow.errors import run_cli\n"
            "def main(argv):\n    print('x' * 100000)\n    return 0\n"
            "sys.exit(run_cli(main, []))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the program writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error():
    """Exit 141 is for stdout's reader gone only: a BrokenPipeError from another pipe (a scoring
    child that died) stays the run's error, with stdout left as it was."""
    code = ("import os, sys\nfrom minitflow.errors import run_cli\n"
            "def main(argv):\n    r, w = os.pipe()\n    os.close(r)\n    os.write(w, b'x')\n    return 0\n"
            "sys.exit(run_cli(main, []))\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert got.returncode == 1 and "BrokenPipeError" in got.stderr
