"""Start-up of the package and its command lines: `import minitflow` and the command lines that only
read result files (score, report) do not import torch (seconds on a loaded machine), those that load
a model import it only once their flags are parsed (--help and a mistyped flag answer at once), and a
Ctrl-C or SIGTERM while a command line imports is its one line and exit code."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import minitflow

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter on this checkout's package (torch is in this one already)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=env)


def _type_checking_imports() -> dict[str, str]:
    """{name: module} of the imports under `if TYPE_CHECKING:` in minitflow/__init__.py."""
    tree = ast.parse((ROOT / "minitflow" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {a.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for a in node.names}


def test_importing_the_package_leaves_torch_out():
    """minitflow/__init__.py imported LLM (so torch) eagerly: every `python -m minitflow.X` paid
    the torch import before its own code ran. The public names are now imported on first use."""
    got = _child("import sys, minitflow\nprint('torch' in sys.modules, sorted(m for m in sys.modules "
                 "if m.startswith('minitflow')))")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[0] == "False", got.stdout


def test_every_public_name_resolves_to_its_modules_object():
    """`from minitflow import LLM`, `minitflow.LLM`, `dir(minitflow)` and `import *` as before the
    lazy __init__; each name is the object its module defines (the lazy table and the
    TYPE_CHECKING imports, which type checkers and tests/test_structure.py read, agree)."""
    import importlib

    declared = {**_type_checking_imports(), "UserError": "minitflow.errors"}
    assert sorted(declared) == sorted(minitflow.__all__)
    for name, module in declared.items():
        assert getattr(minitflow, name) is getattr(importlib.import_module(module), name), name
        assert name in dir(minitflow)
    from minitflow import LLM, SamplingParams, demo_dir  # noqa: F401 - the README's import
    namespace: dict = {}
    exec("from minitflow import *", namespace)
    assert set(minitflow.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        getattr(minitflow, "no_such_name")
    with pytest.raises(ImportError):
        exec("from minitflow import no_such_name", {})
    # a fresh interpreter: the names resolve on first access, not only where the suite imported them
    got = _child("import minitflow\nfrom minitflow import Qwen3Config\nprint(minitflow.LLM.__name__, "
                 "Qwen3Config.__module__, 'build_lora' in dir(minitflow))")
    assert got.returncode == 0 and got.stdout.split() == ["LLM", "minitflow.model.config", "True"], got.stderr


GSM = [{"question": "q0", "answer": "work\n#### 18"}, {"question": "q1", "answer": "work\n#### 3"}]


@pytest.mark.parametrize("command", ["score", "report"])
def test_the_command_lines_that_read_results_start_without_torch(command):
    """score and report read JSON and score it, yet run_cli lived in cli.py, which imports torch
    (model flags, loading): each paid the torch import first. run_cli is in errors.py now."""
    got = _child(f"import sys, minitflow.{command}\nprint('torch' in sys.modules)")
    assert got.returncode == 0 and got.stdout.split() == ["False"], (got.stdout, got.stderr)
    # `python -m ... --help`: the modules it imports, as -X importtime lists them on stderr
    got = subprocess.run([sys.executable, "-X", "importtime", "-m", f"minitflow.{command}", "--help"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    imported = {line.rsplit("|", 1)[-1].strip() for line in got.stderr.splitlines() if line.startswith("import time:")}
    assert got.returncode == 0 and f"python -m minitflow.{command}" in got.stdout, got.stderr[-2000:]
    assert f"minitflow.{command}" in imported or "minitflow.errors" in imported  # the listing was read
    assert "torch" not in imported


def test_scoring_and_reporting_import_no_torch(tmp_path):
    """Not only the imports at the top: scoring predictions (both scorers), rescoring an evaluate
    folder and the report over it run without torch."""
    import json

    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in GSM))
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "gsm8k/0", "prediction": "The answer is 18."}\n{"id": "gsm8k/1", "prediction": "4"}\n')
    run = tmp_path / "run"
    run.mkdir()
    summary = {"method": "baseline", "dataset": "gsm8k", "n": 2, "accuracy": 0.0, "accuracy_official": 0.0,
               "mean_official_tokens": 5, "mean_processed_tokens": 5, "mean_wall_time": 0.5,
               "config": {"dataset": "gsm8k", "data_file": str(data)}}
    samples = [{"id": "gsm8k/0", "prediction": "18", "correct": False, "correct_official": False},
               {"id": "gsm8k/1", "prediction": "4", "correct": False, "correct_official": False}]
    (run / "baseline_results.json").write_text(json.dumps({"summary": summary, "samples": samples}))
    code = (f"import sys\nfrom minitflow import score, report\nargs = ['--dataset', 'gsm8k', '--data_file', {str(data)!r}, "
            f"'--predictions', {str(preds)!r}]\n"
            "assert score.main(args) == 0 and score.main([*args, '--scorer', 'official']) == 0\n"
            f"assert score.main(['--results', {str(run)!r}]) == 0\n"
            f"assert report.main([{str(run)!r}]) == 0\n"
            "print('torch' in sys.modules)")
    got = _child(code)
    assert got.returncode == 0, got.stderr
    out = got.stdout.splitlines()
    assert "accuracy 0.5000 (1/2, strict scorer, gsm8k)" in out[0] and "rescored" in got.stdout
    assert "| Single |" in got.stdout and out[-1] == "False", got.stdout


def _said(got: subprocess.CompletedProcess) -> list[str]:
    """The lines of a run's stderr that are not -X importtime's."""
    return [line for line in got.stderr.splitlines() if not line.startswith("import time:")]


@pytest.mark.parametrize("command", ["score", "report"])
def test_a_flag_error_of_score_and_report_is_one_line(command):
    """argparse printed its usage block above the line that says what is wrong; one line, exit 2."""
    required = {"score": ["--results", "r"], "report": ["r"]}[command]
    got = subprocess.run([sys.executable, "-m", f"minitflow.{command}", *required, "--no_such_flag"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (got.returncode, got.stdout, got.stderr) == \
        (2, "", f"python -m minitflow.{command}: error: unrecognized arguments: --no_such_flag\n")


def _imported(argv: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """(the run, the modules it imported as -X importtime lists them on stderr) of `python -m ARGV...`."""
    got = subprocess.run([sys.executable, "-X", "importtime", "-m", *argv], capture_output=True, text=True, timeout=300,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return got, {line.rsplit("|", 1)[-1].strip() for line in got.stderr.splitlines() if line.startswith("import time:")}


# each command line's required flags (train's), so that the flag under test is the error argparse reports
MODEL_COMMANDS = {"generate": [], "evaluate": [], "train": ["--model", "m", "--train", "t.jsonl", "--out", "o.pt"],
                  "demo": []}


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_the_model_command_lines_answer_help_and_flag_errors_without_torch(command):
    """generate, evaluate, train and demo imported torch (and the model's modules) at their top, before
    argparse ran: --help and a mistyped flag took seconds. Their parsers are built from torch-free
    modules (flags.py, model.config.DTYPES, prompts.METHODS, train_config.py); torch comes after parse_args."""
    got = _child(f"import sys, minitflow.{command}\nprint('torch' in sys.modules)")
    assert got.returncode == 0 and got.stdout.split() == ["False"], (got.stdout, got.stderr)
    got, imported = _imported([f"minitflow.{command}", "--help"])
    assert got.returncode == 0 and got.stdout.startswith(f"usage: python -m minitflow.{command} "), got.stderr[-2000:]
    assert "--seed" in got.stdout and "minitflow.errors" in imported  # the help printed, the listing read
    assert "torch" not in imported
    got, imported = _imported([f"minitflow.{command}", *MODEL_COMMANDS[command], "--no_such_flag", "1"])
    assert (got.returncode, got.stdout) == (2, ""), got.stderr[-2000:]
    assert _said(got) == [f"python -m minitflow.{command}: error: unrecognized arguments: --no_such_flag 1"], \
        got.stderr[-2000:]  # one line: no usage block above it
    assert "torch" not in imported


@pytest.mark.parametrize("command, flag, value", [("generate", "--method", "tlfow"), ("evaluate", "--dtype", "fp8"),
                                                  ("evaluate", "--method", "orcale"), ("train", "--condition", "none")])
def test_a_bad_choice_is_argparses_line_without_torch(command, flag, value):
    """The choices (evaluate's methods with the oracle, the dtypes, train's conditions) are in the parsers
    without torch: a value outside them is argparse's line, alone, and exit 2 at once."""
    got, imported = _imported([f"minitflow.{command}", *MODEL_COMMANDS[command], flag, value])
    [last] = _said(got)
    assert got.returncode == 2 and last.startswith(f"python -m minitflow.{command}: error: argument {flag}: "
                                                   f"invalid choice: '{value}' (choose from "), got.stderr[-2000:]
    assert "torch" not in imported


# put first on PYTHONPATH, it makes a child's import of $PAUSE_AT print the handlers of SIGINT and
# SIGTERM then, and wait there: a signal sent after that line lands inside the command's imports.
# SIGINT is Python's own handler as a terminal starts it, even where the suite runs with it ignored
# (nohup, `&`), or ignored with $PAUSE_SIGINT=ignore
PAUSE = '''import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN if os.environ["PAUSE_SIGINT"] == "ignore" else signal.default_int_handler)
class Pause:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["PAUSE_AT"]:
            handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
            handlers = [getattr(h, "__name__", getattr(h, "name", h)) for h in handlers]
            print("importing", name, *handlers, flush=True)
            time.sleep(120)
        return None
sys.meta_path.insert(0, Pause())
'''


def _paused_child(tmp_path: Path, command: list[str], pause_at: str, sigint: str = "default") -> tuple:
    """(the child, its first stdout line) for `python -m COMMAND...`, waiting in its import of `pause_at`."""
    (tmp_path / "sitecustomize.py").write_text(PAUSE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "PAUSE_AT": pause_at,
           "PAUSE_SIGINT": sigint}
    child = subprocess.Popen([sys.executable, "-m", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT, env=env)
    return child, child.stdout.readline()


AT_START = ["_stopped_at_start", "_stopped_at_start"]
IN_RUN_CLI = ["default_int_handler", "_terminate"]
GENERATE = ["minitflow.generate", "--question", "Q?", "--method", "baseline", "--device", "cpu"]


@pytest.mark.parametrize("argv, pause_at, sig, handlers", [
    (["minitflow.score", "--help"], "minitflow.files", "SIGINT", AT_START),  # score's own imports (no torch now)
    (["minitflow.generate", "--help"], "minitflow.files", "SIGTERM", AT_START),  # a model command's own (no torch)
    # the seconds of a model command's start: torch, imported once main has parsed the flags, inside run_cli
    (GENERATE, "torch", "SIGINT", IN_RUN_CLI),
    (GENERATE, "torch", "SIGTERM", IN_RUN_CLI),
    # score's main imports the scorers' defaults: inside run_cli, whose handling (clean-up) is back
    (["minitflow.score", "--help"], "minitflow.eval.code_exec", "SIGINT", IN_RUN_CLI),
])
def test_a_stop_signal_while_a_command_line_imports_is_one_line(argv, pause_at, sig, handlers, tmp_path):
    """Ctrl-C in a command's first seconds (its imports, before run_cli) was a KeyboardInterrupt
    traceback and SIGTERM a silent -15; now run_cli's line and code: interrupted / 130, terminated / 143.
    The model commands import torch in main, where run_cli's own handling gives the same line and code."""
    child, line = _paused_child(tmp_path, argv, pause_at)
    try:
        assert line.split()[:2] == ["importing", pause_at], (line, child.stderr.read() if not line else "")
        child.send_signal(getattr(signal, sig))
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert (child.returncode, err) == ((130, "interrupted\n") if sig == "SIGINT" else (143, "terminated\n"))
    assert out == ""  # stopped in its imports: no --help printed
    assert line.split()[2:] == handlers, line  # the handlers when the signal came (SIGINT's, SIGTERM's)


def test_an_ignored_sigint_stays_ignored_at_start(tmp_path):
    """A background job (`cmd &` in a script, nohup) starts with SIGINT ignored, and Python keeps
    that: the start-up handler must not make such a command stoppable by a Ctrl-C meant for another."""
    child, line = _paused_child(tmp_path, ["minitflow.score", "--help"], "minitflow.files", sigint="ignore")
    child.kill()
    child.communicate(timeout=60)
    assert line.split() == ["importing", "minitflow.files", "SIG_IGN", "_stopped_at_start"], line


def test_run_cli_takes_ctrl_c_back_so_its_clean_up_runs(capsys):
    """From run_cli on, Ctrl-C is a KeyboardInterrupt again (temporary files removed, scoring
    stopped), not the start-up handler's exit; a library caller's SIGINT handler is left alone."""
    from minitflow.errors import _stopped_at_start, run_cli

    seen = []

    def main(argv):
        seen.append(signal.getsignal(signal.SIGINT))
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, _stopped_at_start)
    try:
        assert run_cli(main, []) == 130
    finally:
        signal.signal(signal.SIGINT, before)
    assert seen == [signal.default_int_handler] and capsys.readouterr().err == "interrupted\n"
    got = _child("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\nimport minitflow.score\n"
                 "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
                 "signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)")
    assert got.stdout.split() == ["True", "True"], got.stderr  # imported, not run with -m: no handler of ours
