"""`python -m minitflow.evaluate` end to end on golden-small: files, resume, and torchrun sharding."""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import GOLDEN, SHARED, need_shared
from helpers import _box_rows, _demo_args, _last_plan, _partial_ids
from minitflow.errors import run_cli
from minitflow.evaluate import main

GSM8K = SHARED / "data" / "gsm8k" / "test.jsonl"


def _args(method: str, out: Path, *extra: str) -> list[str]:
    args = ["--method", method, "--model", str(GOLDEN / "model"), "--dataset", "gsm8k", "--data_file", str(GSM8K),
            "--max_samples", "5", "--max_new_tokens", "6", "--device", "cpu", "--dtype", "float32",
            "--output_dir", str(out), "--batch_size", "2", *extra]
    if method == "tflow":
        args += ["--checkpoint", str(GOLDEN / "tflow.pt")]
    return args


@pytest.mark.parametrize("method", ["baseline", "textmas", "tflow"])
def test_evaluate_writes_files_and_resumes(method, tmp_path):
    need_shared(GOLDEN)
    extra = ["--temperature", "0.7"] if method != "textmas" else ["--greedy"]
    assert run_cli(main, _args(method, tmp_path, *extra)) == 0
    result = json.loads((tmp_path / f"{method}_results.json").read_text())
    summary, rows = result["summary"], result["samples"]
    assert summary["n"] == 5 and summary["complete"] and len(rows) == 5
    assert (tmp_path / "run.log").read_text().count("accuracy") == 1
    assert all(r["processed_tokens"] >= r["official_tokens"] > 0 for r in rows)
    if method == "tflow":
        assert all(r["processed_tokens"] > r["official_tokens"] for r in rows)  # senders' forward passes
        assert summary["checkpoint_sha256"] and len(summary["checkpoint_sha256"]) == 64
    # crash after two samples: keep them, and a half-written line
    part = tmp_path / f"{method}_partial.rank0.jsonl"
    lines = part.read_text().split("\n")
    part.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    (tmp_path / f"{method}_results.json").unlink()
    assert run_cli(main, _args(method, tmp_path, *extra)) == 0
    assert "5 samples, 2 already done, 3 for rank 0/1" in (tmp_path / "run.log").read_text()
    ids = _partial_ids(part)
    assert len(ids) == 5 and len(set(ids)) == 5  # the 3 missing computed once, the 2 done not again
    again = json.loads((tmp_path / f"{method}_results.json").read_text())["samples"]
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]


def test_torchrun_two_ranks_equal_single_process(tmp_path):
    need_shared(GOLDEN)
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert run_cli(main, _args("tflow", single, "--temperature", "0.8")) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m",
                           "minitflow.evaluate", *_args("tflow", multi, "--temperature", "0.8")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = json.loads((single / "tflow_results.json").read_text())
    b = json.loads((multi / "tflow_results.json").read_text())
    assert b["summary"]["world_size"] == 2 and b["summary"]["n"] == 5
    strip = lambda rows: [{k: r[k] for k in ("id", "prediction", "correct", "processed_tokens")} for r in rows]  # noqa: E731
    assert strip(b["samples"]) == strip(a["samples"])
    assert len(list(multi.glob("tflow_partial.rank*.jsonl"))) == 2


def test_evaluate_user_errors(tmp_path, capsys):
    assert run_cli(main, ["--method", "oracle", "--dataset", "poetry", "--output_dir", str(tmp_path)]) == 2
    assert "poetry" in capsys.readouterr().err
    assert run_cli(main, ["--method", "oracle", "--dataset", "gsm8k", "--data_file", str(tmp_path / "x.jsonl"),
                          "--output_dir", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("rows", ["", '{"question": "1+1?", "answer": 2}\n', "not json\n"])
def test_a_bad_data_file_leaves_no_output_folder(rows, tmp_path, capsys):
    """An empty or malformed data file left an empty --output_dir behind; one that
    existed before stays."""
    data = tmp_path / "q.jsonl"
    data.write_text(rows)
    out = tmp_path / "out"
    argv = ["--method", "oracle", "--dataset", "gsm8k", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()
    out.mkdir()
    assert run_cli(main, argv) == 2 and out.is_dir()


@pytest.mark.parametrize("flags", [["--model", "nobody/not-a-model"], ["--method", "tflow", "--checkpoint", "none.pt"]])
def test_a_missing_model_or_checkpoint_leaves_no_output_folder(flags, tmp_path, capsys, monkeypatch):
    """The model and checkpoint are resolved before the output folder is made or claimed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    out = tmp_path / "out"
    argv = ["--method", "baseline", "--dataset", "gsm8k", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, argv + flags) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("dataset,path,limit", [
    ("gsm8k", "gsm8k/test.jsonl", "-1"), ("minerva_math", "minerva_math/test.jsonl", "-1"),
    ("mmlu", "mmlu_redux/test.jsonl", "-1"), ("humanevalplus", "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz", "8"),
    ("mbppplus", "mbpp_plus/MbppPlus-v0.2.0.jsonl", "8")])
def test_oracle_method_scores_everything(dataset, path, limit, tmp_path):
    need_shared(SHARED / "data")
    args = ["--method", "oracle", "--dataset", dataset, "--data_file", str(SHARED / "data" / path),
            "--max_samples", limit, "--output_dir", str(tmp_path)]
    assert run_cli(main, args) == 0
    results = json.loads((tmp_path / "oracle_results.json").read_text())
    summary = results["summary"]
    assert summary["accuracy"] == 1.0 and summary["n"] > 0
    # the official protocol's verdict is stored beside the strict one for every row
    assert all("correct_official" in r and "extracted_official" in r for r in results["samples"])
    assert summary["accuracy_official"] == sum(r["correct_official"] for r in results["samples"]) / summary["n"]
    if dataset in ("humanevalplus", "mbppplus"):  # run.log names the sandbox once, not "code sandbox: code sandbox:"
        sandbox = [line for line in (tmp_path / "run.log").read_text().splitlines() if "code sandbox" in line]
        assert len(sandbox) == 1 and sandbox[0].count("code sandbox") == 1, sandbox
    # the log names the data as the results do (it said "on humaneval" for the HumanEval+ file)
    label = {"humanevalplus": "humaneval+", "mbppplus": "mbpp+"}.get(dataset, dataset)
    assert summary["dataset_label"] == label
    assert f"oracle on {label}: " in (tmp_path / "run.log").read_text()


# ---- on the demo model / oracle, no ../shared needed ------------------------------------

def test_the_code_benchmarks_are_labelled_plus_where_their_rows_have_plus_tests():
    from minitflow.eval.data import Sample
    from minitflow.eval.data import dataset_label
    plus, base = Sample("Mbpp/2", "q", "", {"plus_input": [[1]]}), Sample("Mbpp/3", "q", "", {"plus_input": []})
    assert [dataset_label(d, [base, plus]) for d in ("mbpp", "humaneval")] == ["mbpp+", "humaneval+"]
    assert [dataset_label(d, [base]) for d in ("mbpp", "humaneval", "gsm8k")] == ["mbpp", "humaneval", "gsm8k"]


def test_two_ranks_merge_to_the_single_process_summary(tmp_path):
    """Two ranks (RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them, no process group):
    rank 0 merges by polling the rank files; the summary equals one process's."""
    data = _box_rows(tmp_path / "box.jsonl")
    assert run_cli(main, _demo_args(data, tmp_path / "single")) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(20000 + os.getpid() % 20000)}
    procs = [subprocess.Popen([sys.executable, "-m", "minitflow.evaluate", *_demo_args(data, tmp_path / "multi")],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    one = json.loads((tmp_path / "single" / "baseline_results.json").read_text())
    two = json.loads((tmp_path / "multi" / "baseline_results.json").read_text())
    pick = lambda s: {k: s[k] for k in ("accuracy", "n", "complete")}  # noqa: E731
    assert pick(two["summary"]) == pick(one["summary"]) == {"accuracy": 5 / 8, "n": 8, "complete": True}
    assert two["summary"]["accuracy_official"] == one["summary"]["accuracy_official"]
    # rows stream out of the pipeline: their wall times add up to a run, not to a batch each
    assert all(r["wall_time"] >= 0 for r in one["samples"])
    assert two["summary"]["world_size"] == 2
    times = two["summary"]["rank_wall_times"]  # the ranks ran side by side: the run took the slower one's time
    assert times.keys() == {"0", "1"} and two["summary"]["total_wall_time"] == max(times.values())
    assert sum(times.values()) == pytest.approx(sum(r["wall_time"] for r in two["samples"]))
    assert [r["id"] for r in two["samples"]] == [r["id"] for r in one["samples"]]
    shares = [_partial_ids(tmp_path / "multi" / f"baseline_partial.rank{r}.jsonl") for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == sorted(r["id"] for r in one["samples"]) and len(shares[1]) == 4
    # rank 1 logs to its own run.rank1.log, not to stderr (rank 0's run.log and stderr have the run's lines)
    assert "rank 1 done: 4 samples" in (tmp_path / "multi" / "run.rank1.log").read_text()
    assert "rank 1 done" not in outs[1][1] and "rank 1 done" not in (tmp_path / "multi" / "run.log").read_text()
    assert "accuracy 0.6250" in outs[0][1]


def _oracle_rows(path: Path) -> Path:
    """gsm8k rows whose reasoning (and so the oracle's prediction) holds U+0085, U+2028 and \\r."""
    rows = [{"question": f"What is {i} + 1?", "answer": f"Count\u0085 on\u2028 from {i}\r.\n#### {i + 1}"}
            for i in range(6)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_line_separators_inside_predictions_resume_complete(tmp_path):
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, args) == 0
    part = out / "oracle_partial.rank0.jsonl"
    assert len(_partial_ids(part)) == 6
    summary = json.loads((out / "oracle_results.json").read_text())
    assert summary["summary"]["n"] == 6 and summary["summary"]["complete"]
    log = (out / "run.log").read_text()
    assert "accuracy" in log and "truncated by max_new_tokens" not in log  # the oracle generates nothing to cut
    assert "\u0085" in summary["samples"][0]["prediction"] and "\r" in summary["samples"][0]["prediction"]
    assert run_cli(main, args) == 0  # nothing left to do: nothing recomputed
    assert "6 samples, 6 already done, 0 for rank 0/1" in _last_plan(out)
    assert _partial_ids(part) == [f"gsm8k/{i}" for i in range(6)]


def test_partial_rows_round_trip_any_text(tmp_path):
    from minitflow.eval.rows import append_sample, read_finished
    text = "a\u0085b\u2028c\rd\ne\u2029f\x1cg"
    for i in range(3):
        append_sample(tmp_path / "m_partial.rank0.jsonl", {"id": f"x/{i}", "prediction": text, "correct": True})
    done = read_finished(tmp_path, "m")
    assert sorted(done) == ["x/0", "x/1", "x/2"] and all(r["prediction"] == text for r in done.values())


def test_partial_lines_that_parse_but_are_no_row_are_passed_over(tmp_path):
    """A line that is JSON but no sample row (a list, a string, an object without "id": an edit by
    hand) is passed over as a line a crash cut is: that sample is run again."""
    from minitflow.eval.rows import read_finished
    (tmp_path / "m_partial.rank0.jsonl").write_text('{"id": "x/0"}\n[1]\n"x/1"\n{"correct": true}\n{"id": "x/2"}\n')
    assert sorted(read_finished(tmp_path, "m")) == ["x/0", "x/2"]


def test_rank_locks_are_the_methods_numbered_lock_files(tmp_path):
    """Files the pattern also matches that are no rank's lock (a copy, a typo) are no rank of the
    method (--overwrite and the rescoring lock go over these ranks)."""
    from minitflow.files import rank_locks
    for name in ("m.rank0.lock", "m.rank12.lock", "m.rank.lock", "m.rankx.lock", "m.rank\u00b2.lock", "m.rank1.old.lock",
                 "n.rank1.lock"):
        (tmp_path / name).write_text("")
    assert rank_locks(tmp_path, "m") == {0: tmp_path / "m.rank0.lock", 12: tmp_path / "m.rank12.lock"}


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out), "--max_samples", "3"]
    assert run_cli(main, args) == 0
    capsys.readouterr()
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text(encoding="utf-8").replace("What is 5", "What is five"), encoding="utf-8")
    assert run_cli(main, [*args[:2], "--data_file", str(other), *args[4:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "data_file_sha256" in err[-1] and "--overwrite" in err[-1]
    assert run_cli(main, [*args[:2], "--data_file", str(other), *args[4:], "--overwrite"]) == 0
    assert "3 samples, 0 already done, 3 for rank 0/1" in _last_plan(out)
    # a longer prefix of the same rows is the same run: only the new samples are computed
    assert run_cli(main, [*args[:2], "--data_file", str(other), "--output_dir", str(out)]) == 0
    assert "6 samples, 3 already done, 3 for rank 0/1" in _last_plan(out)


def test_a_larger_run_cut_short_leaves_no_smaller_runs_results_behind(tmp_path, monkeypatch):
    """A finished 3-sample folder resumed with more samples and stopped: its 3-sample results file, complete,
    stayed, and report showed that run (n=3) as this folder's, not the unfinished one."""
    from minitflow.eval import scoring
    from minitflow.files import unfinished
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, [*args, "--max_samples", "3"]) == 0
    results = out / "oracle_results.json"
    assert json.loads(results.read_text())["summary"]["complete"] is True and not unfinished([out])
    real, calls = scoring.oracle_prediction, []

    def stopped(dataset, sample):  # Ctrl-C at the second new sample
        calls.append(sample.id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(dataset, sample)

    monkeypatch.setattr(scoring, "oracle_prediction", stopped)
    assert run_cli(main, args) == 130
    assert not results.exists() and unfinished([out])
    monkeypatch.setattr(scoring, "oracle_prediction", real)
    assert run_cli(main, args) == 0
    assert json.loads(results.read_text())["summary"]["n"] == 6 and not unfinished([out])

def test_resume_with_other_sampling_is_refused(tmp_path, capsys):
    data, out = _box_rows(tmp_path / "box.jsonl", n=2), tmp_path / "out"
    assert run_cli(main, _demo_args(data, out)) == 0
    capsys.readouterr()
    assert run_cli(main, _demo_args(data, out, "--max_new_tokens", "9")) == 2
    assert "max_new_tokens=8" in capsys.readouterr().err


def test_a_greedy_run_resumes_with_another_seed_and_a_sampled_one_does_not(tmp_path, capsys):
    """Greedy decoding takes the top token whatever the seed: a greedy folder resumed with another --seed
    (the same answers) was refused, --overwrite offered, which deleted the finished rows. Also for a folder
    that recorded its seed before; a sampled run's seed still decides its answers and is compared."""
    data, out = _box_rows(tmp_path / "box.jsonl", n=2), tmp_path / "out"
    assert run_cli(main, _demo_args(data, out, "--max_samples", "1")) == 0
    assert run_cli(main, _demo_args(data, out, "--seed", "3")) == 0
    assert "2 samples, 1 already done, 1 for rank 0/1" in _last_plan(out)
    settings = out / "baseline_settings.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "seed": 0}))  # as written before
    assert run_cli(main, _demo_args(data, out, "--seed", "5")) == 0
    sampled = _demo_args(data, tmp_path / "sampled", "--temperature", "0.7")
    sampled.remove("--greedy")
    assert run_cli(main, sampled) == 0
    capsys.readouterr()
    assert run_cli(main, [*sampled, "--seed", "3"]) == 2
    assert "seed=0, this one has seed=3" in capsys.readouterr().err
    from minitflow.eval.rows import recorded_seed  # a greedy --random_generator: the seed draws its weights
    assert recorded_seed({"temperature": 0, "checkpoint_sha256": "random", "seed": 3})["seed"] == 3


def test_resume_in_another_dtype_is_refused_and_an_older_settings_file_still_resumes(tmp_path, capsys):
    """float32 and bfloat16 give other long answers; a settings file from before a setting
    existed (no "dtype") resumes."""
    data, out = _box_rows(tmp_path / "box.jsonl", n=2), tmp_path / "out"
    assert run_cli(main, _demo_args(data, out)) == 0
    capsys.readouterr()
    assert run_cli(main, _demo_args(data, out, "--dtype", "bfloat16")) == 2
    assert "dtype='float32'" in capsys.readouterr().err
    path = next(out.glob("*_settings.json"))
    saved = json.loads(path.read_text())
    del saved["dtype"]
    path.write_text(json.dumps(saved))
    assert run_cli(main, _demo_args(data, out)) == 0


def test_the_summary_names_the_device_and_a_resume_on_another_is_refused(tmp_path, capsys):
    """report's Speed said "(GPU)" of a CPU run: the summary names the device the seconds were
    measured on, report prints it, and a resume on another kind of device (whose rows would mix
    CPU and GPU seconds in one mean) is refused."""
    from minitflow import report
    data, out = _box_rows(tmp_path / "box.jsonl", n=2), tmp_path / "out"
    assert run_cli(main, _demo_args(data, out)) == 0
    summary = json.loads((out / "baseline_results.json").read_text())["summary"]
    assert summary["device"] == "cpu" and summary["settings"]["device"] == "cpu"
    capsys.readouterr()
    assert run_cli(report.main, [str(out)]) == 0
    table = capsys.readouterr().out
    assert "Speed: seconds per question on one rank (cpu)." in table and "GPU" not in table
    path = out / "baseline_settings.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "device": "cuda"}))  # as a GPU run leaves it
    assert run_cli(main, _demo_args(data, out)) == 2
    assert "device='cuda', this one has device='cpu'" in capsys.readouterr().err


def test_second_process_on_one_folder_refuses(tmp_path, capsys):
    from minitflow.eval.ranks import take_lock
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    out.mkdir()
    held = take_lock(out, "oracle", 0)  # as a running evaluate holds it
    try:
        assert run_cli(main, ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]) == 2
        assert "another evaluate process" in capsys.readouterr().err
        assert not list(out.glob("oracle_partial*"))
    finally:
        held.close()
    assert run_cli(main, ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]) == 0


def test_the_folder_stays_held_until_the_results_are_written(tmp_path, monkeypatch):
    """The rank's lock is held by being referenced (closed, it frees the folder): the run, in phases,
    keeps it until its results are written, and lets it go when it returns."""
    import gc
    from minitflow.eval import evaluation
    from minitflow.eval.ranks import lock_path
    from minitflow.files import lock_held
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    written, held = evaluation.write_json, []

    def write_json(path, obj):
        gc.collect()  # a lock no longer referenced is closed here, even inside a cycle
        held.append((path.name, lock_held(lock_path(out, "oracle", 0))))
        written(path, obj)
    monkeypatch.setattr(evaluation, "write_json", write_json)
    assert run_cli(main, ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]) == 0
    assert held == [("oracle_results.json", True)]
    assert not lock_held(lock_path(out, "oracle", 0))


def test_an_output_dir_without_flock_is_one_line(tmp_path, capsys, monkeypatch):
    """Lustre mounted without -o flock (and some NFS) fails flock() with ENOSYS / ENOLCK: evaluate
    ended in a traceback; now one line naming the lock and the fix, exit 2."""
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    monkeypatch.setattr(fcntl, "flock", no_flock)
    assert run_cli(main, ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot lock ") and "oracle.rank0.lock" in err[0]
    assert "flock" in err[0] and not list(out.glob("oracle_partial*"))


def test_overwrite_removes_the_unheld_locks_of_ranks_a_larger_launch_left(tmp_path):
    """An 8-rank run, now rerun in 1 process with --overwrite: the stale rank 1..7 locks of that
    method go, another method's locks and the per-folder rank logs stay; without --overwrite
    nothing is removed."""
    from minitflow.eval.ranks import take_lock
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    out.mkdir()
    kept = [out / "run.rank3.log", out / "tflow.rank3.lock"]
    for f in [*(out / f"oracle.rank{r}.lock" for r in range(1, 8)), *kept]:
        f.write_text("")
    assert run_cli(main, args) == 0
    assert len(list(out.glob("oracle.rank*.lock"))) == 8  # a resume keeps them
    held = take_lock(out, "oracle", 5)  # a live rank 5: refused, nothing removed
    try:
        assert run_cli(main, [*args, "--overwrite"]) == 2 and len(list(out.glob("oracle.rank*.lock"))) == 8
    finally:
        held.close()
    assert run_cli(main, [*args, "--overwrite"]) == 0
    assert [p.name for p in out.glob("oracle.rank*.lock")] == ["oracle.rank0.lock"] and all(p.is_file() for p in kept)


def test_rank0_writes_incomplete_results_when_a_rank_never_reports(tmp_path, monkeypatch):
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert run_cli(main, [*args, "--merge_timeout", "0.5"]) == 1  # incomplete: a script must not go on
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 3 and not summary["complete"] and summary["accuracy"] == 1.0  # of the rows there
    assert "results incomplete: 3 of the samples are there" in (out / "run.log").read_text()
    monkeypatch.setenv("WORLD_SIZE", "1")  # a rerun in one process finishes rank 1's share
    assert run_cli(main, args) == 0
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 6 and summary["complete"] and summary["accuracy"] == 1.0


def _rank0_of_two(monkeypatch) -> None:
    """This process as rank 0 of a launch of two (the environment torchrun sets)."""
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)


def test_rank0_stops_waiting_once_every_other_rank_has_exited(tmp_path, monkeypatch):
    """A launch by hand (or srun, which ends no other rank): rank 1 joined, then failed before its
    rows. Rank 0 waited --merge_timeout (an hour by default) for rows that could no longer come;
    its lock, free, says rank 1 is gone."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    _rank0_of_two(monkeypatch)
    errors: list[BaseException] = []

    def rank1_fails():
        try:
            settings = out / "oracle_settings.json"
            while not settings.is_file():
                time.sleep(0.02)
            ranks.claim_folder(out, "oracle", json.loads(settings.read_text()), False, 1, 2).close()  # joined, died
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    rank1 = threading.Thread(target=rank1_fails)
    rank1.start()
    t0 = time.monotonic()
    assert run_cli(main, ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out),
                          "--merge_timeout", "20"]) == 1  # incomplete
    rank1.join()
    assert not errors and time.monotonic() - t0 < 10
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 3 and not summary["complete"]


def test_resume_after_a_kill_mid_write_drops_the_cut_line_with_a_warning(tmp_path, capsys):
    """A kill while a row is appended leaves half a line: the resume keeps the complete rows,
    drops that half with one warning (the file holds whole rows only) and redoes its sample."""
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, args) == 0
    part = out / "oracle_partial.rank0.jsonl"
    lines = part.read_bytes().split(b"\n")
    part.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:25])
    (out / "oracle_results.json").unlink()
    capsys.readouterr()
    assert run_cli(main, args) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cut off" in line]
    assert len(warnings) == 1 and part.name in warnings[0]
    assert "6 samples, 3 already done, 3 for rank 0/1" in _last_plan(out)
    rows = part.read_bytes().decode("utf-8").split("\n")
    assert rows[-1] == "" and [json.loads(r)["id"] for r in rows[:-1]] == [f"gsm8k/{i}" for i in range(6)]
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 6 and summary["complete"] and summary["accuracy"] == 1.0
    # a last row that is whole but lost its newline is kept, not redone
    part.write_bytes(part.read_bytes()[:-1])
    assert run_cli(main, args) == 0
    assert "6 samples, 6 already done, 0 for rank 0/1" in _last_plan(out)
    assert "cut off" not in capsys.readouterr().err


def test_rank1_waits_for_this_launchs_rank0_not_a_signature_left_by_the_last(tmp_path, monkeypatch):
    """A relaunch by hand (or torchrun --master-port) has the same run_id as the launch before:
    rank 1 must not take the signature that launch left in rank 0's lock for rank 0 having
    checked the folder (it would read settings rank 0 is about to replace, or partial rows
    that --overwrite is about to delete)."""
    from minitflow.eval import ranks
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 0.5)
    settings = {"method": "oracle"}
    (tmp_path / "oracle_settings.json").write_text(json.dumps(settings))
    (tmp_path / "oracle.rank0.lock").write_text(ranks.run_id(2) + " 5ca1ab1e")  # left by the last launch's rank 0
    rank0 = ranks.take_lock(tmp_path, "oracle", 0)  # this launch's rank 0: locked, not yet done checking
    try:
        with pytest.raises(ranks.UserError, match="rank 0 of this launch did not take"):
            ranks.claim_folder(tmp_path, "oracle", settings, False, 1, 2)
        ranks.sign_lock(rank0, ranks.run_id(2) + " 0ddba11")  # rank 0 has checked the folder
        ranks.claim_folder(tmp_path, "oracle", settings, False, 1, 2).close()
    finally:
        rank0.close()


def test_rank0_refuses_the_folder_while_a_rank_of_an_earlier_launch_still_runs(tmp_path, monkeypatch):
    """A launch by hand (or srun) whose rank 0 died while its rank 1 ran on: the relaunch's rank 0
    deleted the folder (--overwrite) under that rank 1, which wrote rows of its old settings back
    into the new run, and the new results counted them. Refused now; this launch's own rank 1
    (signed with the run id, waiting for its rank 0) is not."""
    from minitflow.eval import ranks
    for k, v in {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    part = tmp_path / "oracle_partial.rank1.jsonl"
    part.write_text('{"id": "x/1", "correct": true}\n')
    old = ranks.take_lock(tmp_path, "oracle", 1)  # the earlier launch's rank 1, still appending
    ranks.sign_lock(old, ranks.run_id(2) + " 5ca1ab1e joined")
    try:
        with pytest.raises(ranks.UserError, match=r"another evaluate process is running oracle \(rank 1\)"):
            ranks.claim_folder(tmp_path, "oracle", {"method": "oracle"}, True, 0, 2)
        assert part.is_file() and not (tmp_path / "oracle_settings.json").exists()
    finally:
        old.close()
    ours = ranks.take_lock(tmp_path, "oracle", 1)
    ranks.sign_lock(ours, ranks.run_id(2))
    try:
        ranks.claim_folder(tmp_path, "oracle", {"method": "oracle"}, True, 0, 2).close()
    finally:
        ours.close()
    assert not part.exists() and (tmp_path / "oracle_settings.json").is_file()


def test_rank0_with_nothing_left_to_do_waits_for_rank1_to_join(tmp_path, monkeypatch):
    """A resume of a finished run: rank 0 has nothing to compute and is done at once. Had it
    exited (dropping its lock) before rank 1 looked, rank 1 would wait RANK0_WAIT_S for a rank 0
    "of this launch" to hold the folder and then fail the launch."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, args) == 0  # every sample done
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 3.0)
    _rank0_of_two(monkeypatch)
    codes: list[int] = []
    rank0 = threading.Thread(target=lambda: codes.append(run_cli(main, args)))
    rank0.start()
    rank0.join(timeout=1.5)  # rank 1 starts late (a slower load)
    settings = json.loads((out / "oracle_settings.json").read_text())
    ranks.claim_folder(out, "oracle", settings, False, 1, 2).close()  # rank 1: sees rank 0 hold the folder
    rank0.join(timeout=10)
    assert codes == [0] and json.loads((out / "oracle_results.json").read_text())["summary"]["complete"]


def test_rank0_gives_up_on_a_rank_that_never_joins_and_keeps_its_heartbeat(tmp_path, monkeypatch):
    """The same resume with rank 1 never coming: after RANK0_WAIT_S rank 0 ends with the complete
    results and a warning, and leaves its heartbeat, which a late rank 1 still reads."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, args) == 0  # every sample done
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 1.0)
    monkeypatch.setattr(ranks, "HEARTBEAT_S", 0.05)
    _rank0_of_two(monkeypatch)
    t0 = time.monotonic()
    assert run_cli(main, args) == 0
    assert 1.0 <= time.monotonic() - t0 < 10
    assert json.loads((out / "oracle_results.json").read_text())["summary"]["complete"]
    assert "not every rank joined within 1 s (a rank failed?)" in (out / "run.log").read_text()
    assert [p.name for p in out.glob("*.alive")] == ["oracle.rank0.alive"]


def _evaluate_with_file_limit(args: list[str], limit: int) -> subprocess.CompletedProcess:
    """evaluate in a child whose writes fail past `limit` bytes a file (RLIMIT_FSIZE: EFBIG, as
    ENOSPC on a full disk)."""
    import resource
    import signal

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "minitflow.evaluate", *args], capture_output=True, text=True,
                          env=env, preexec_fn=limited, timeout=120)


def test_a_full_disk_while_appending_rows_is_one_line_and_resumes(tmp_path):
    """RLIMIT_FSIZE makes the partial file's appends fail as on a full disk (EFBIG, like
    ENOSPC): exit 2 with one line naming the file, not a traceback; a rerun finishes the run."""
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    proc = _evaluate_with_file_limit(args, 400)
    assert proc.returncode == 2, proc.stderr[-1500:]
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error: cannot write ") and "oracle_partial.rank0.jsonl" in err[-1]
    assert "Traceback" not in proc.stderr
    assert run_cli(main, args) == 0
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 6 and summary["complete"]


def test_a_resume_on_a_full_disk_is_one_line(tmp_path):
    """A resume writes nothing before signing its lock (the settings are there): a full disk
    (RLIMIT_FSIZE, EFBIG like ENOSPC) must be one line, exit 2, not a traceback."""
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, args) == 0
    (out / "oracle.rank0.lock").write_text("")
    proc = _evaluate_with_file_limit(args, 8)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot write ")


def test_a_whole_last_row_without_its_newline_is_kept_and_the_next_row_starts_a_line(tmp_path):
    from minitflow.eval.rows import append_sample, read_finished, start_partial
    part = tmp_path / "m_partial.rank0.jsonl"
    part.write_bytes(b'{"id": "x/0", "correct": true}\n{"id": "x/1", "correct": false}')
    start_partial(part)
    append_sample(part, {"id": "x/2", "correct": True})
    assert sorted(read_finished(tmp_path, "m")) == ["x/0", "x/1", "x/2"]


def test_rank0_waits_for_its_own_ids_not_for_as_many_rows(tmp_path):
    """Rows of samples outside this run (a longer --max_samples before) do not stand in for
    a rank's missing ones."""
    from minitflow.eval.ranks import wait_for_ranks
    from minitflow.eval.rows import append_sample
    append_sample(tmp_path / "m_partial.rank0.jsonl", {"id": "x/0"})
    append_sample(tmp_path / "m_partial.rank1.jsonl", {"id": "x/9"})  # not in this run
    late = threading.Timer(0.3, lambda: append_sample(tmp_path / "m_partial.rank1.jsonl", {"id": "x/1"}))
    late.start()
    try:
        done = wait_for_ranks(tmp_path, "m", ["x/0", "x/1"], stall_s=20, poll_s=0.05)
    finally:
        late.join()
    assert {"x/0", "x/1"} <= done.keys()


def test_a_folder_with_settings_but_no_finished_sample_starts_afresh(tmp_path):
    """A run that stopped before its first sample (a model that did not fit) leaves settings and
    nothing to keep: a rerun with other settings starts afresh instead of refusing."""
    from minitflow.eval.ranks import claim_folder
    claim_folder(tmp_path, "oracle", {"method": "oracle", "seed": 1}, False, 0, 1).close()
    (tmp_path / "oracle_partial.rank0.jsonl").write_bytes(b"")
    claim_folder(tmp_path, "oracle", {"method": "oracle", "seed": 2}, False, 0, 1).close()
    assert json.loads((tmp_path / "oracle_settings.json").read_text())["seed"] == 2


def test_summary_means_and_accuracies_come_from_the_rows(tmp_path):
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out), "--max_samples", "4"]
    assert run_cli(main, args) == 0
    part = out / "oracle_partial.rank0.jsonl"
    rows = [json.loads(line) for line in part.read_text().splitlines()]
    for k, r in enumerate(rows):  # as a model's rows: tokens, and official verdicts that differ
        r.update(processed_tokens=10 * (k + 1), official_tokens=k + 1, correct_official=k == 0)
    part.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_cli(main, args) == 0  # nothing left to compute: the summary is made from the rows
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert (summary["accuracy"], summary["accuracy_official"]) == (1.0, 0.25)
    assert (summary["mean_processed_tokens"], summary["mean_official_tokens"]) == (25.0, 2.5)


def _mmlu_rows(path: Path) -> Path:
    rows = [{"question": f"Q{i}?", "choices": ["w", "x", "y", "z"], "answer": i % 4, "subject": "s",
             "error_type": "ok" if i % 2 else "wrong_groundtruth", "correct_answer": "D"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_include_all_mmlu_with_another_row_set_is_refused(tmp_path, capsys):
    """--include_all_mmlu --mmlu_rows ok ran the official 5,665 rows without a word, not the ok ones."""
    data, out = _mmlu_rows(tmp_path / "mmlu.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--dataset", "mmlu", "--data_file", str(data), "--output_dir", str(out)]
    for rows in ("ok", "all"):
        assert run_cli(main, [*args, "--include_all_mmlu", "--mmlu_rows", rows]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--include_all_mmlu" in err[0] and f"--mmlu_rows {rows}" in err[0]
        assert not out.exists()
    assert run_cli(main, [*args, "--include_all_mmlu", "--mmlu_rows", "official"]) == 0


def test_include_all_mmlu_resumes_a_run_of_the_official_rows(tmp_path, capsys):
    """--include_all_mmlu is --mmlu_rows official (the default) by another name, yet a resume with the one of
    a folder the other started was refused ("include_all_mmlu=False, this one has ... True"), offering
    --overwrite, which deletes the finished rows of the same row set. The row set is still compared."""
    data, out = _mmlu_rows(tmp_path / "mmlu.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--dataset", "mmlu", "--data_file", str(data), "--output_dir", str(out)]
    for first, then in (([], ["--include_all_mmlu"]), (["--include_all_mmlu"], []),
                        (["--include_all_mmlu"], ["--mmlu_rows", "official"])):
        assert run_cli(main, [*args, "--overwrite", *first, "--max_samples", "1"]) == 0
        assert run_cli(main, [*args, *then]) == 0, capsys.readouterr().err
        summary = json.loads((out / "oracle_results.json").read_text())["summary"]
        assert (summary["n"], summary["mmlu_rows"], summary["accuracy"]) == (4, "official", 1.0)
    capsys.readouterr()
    assert run_cli(main, [*args, "--mmlu_rows", "ok"]) == 2  # another row set: refused as before
    assert "mmlu_rows='official', this one has mmlu_rows='ok'" in capsys.readouterr().err


def test_textmas_sender_limit_at_its_default_resumes_a_run_without_it(tmp_path, capsys):
    """--sender_max_new_tokens 1024 is what a textmas run without the flag runs, yet a resume with the one of a
    folder the other started was refused (method_options={} against {'sender_max_new_tokens': 1024}),
    offering --overwrite, which deletes the finished rows. Another limit is still refused."""
    data, out = tmp_path / "g.jsonl", tmp_path / "out"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) + "\n"
                            for i in range(2)))
    args = ["--method", "textmas", "--data_file", str(data), "--output_dir", str(out), "--max_new_tokens", "2",
            "--max_samples", "1"]
    default = ["--sender_max_new_tokens", "1024"]
    settings = out / "textmas_settings.json"
    for first, then in (([], default), (default, [])):
        assert run_cli(main, [*args, "--overwrite", *first]) == 0
        assert run_cli(main, [*args, *then]) == 0, capsys.readouterr().err  # all done: no model runs
    # a folder written before, which recorded the default given: resumed with or without it
    settings.write_text(json.dumps({**json.loads(settings.read_text()),
                                    "method_options": {"sender_max_new_tokens": 1024}}))
    assert run_cli(main, [*args, *default]) == 0 and run_cli(main, args) == 0
    capsys.readouterr()
    assert run_cli(main, [*args, "--sender_max_new_tokens", "8"]) == 2
    assert "this one has method_options={'sender_max_new_tokens': 8}" in capsys.readouterr().err


def test_dataset_flags_of_another_dataset_are_refused_not_ignored(tmp_path, capsys):
    """--mmlu_rows / --include_all_mmlu on gsm8k, or --minerva_zero_shot on mmlu, changed nothing
    yet were recorded as the run's settings (a resume without them was then refused)."""
    data, out = _mmlu_rows(tmp_path / "mmlu.jsonl"), tmp_path / "out"
    gsm = tmp_path / "gsm8k.jsonl"
    gsm.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    for dataset, path, flags, word in (("gsm8k", gsm, ["--mmlu_rows", "ok"], "--mmlu_rows applies to mmlu only"),
                                       ("gsm8k", gsm, ["--include_all_mmlu"], "--include_all_mmlu applies"),
                                       ("mmlu", data, ["--minerva_zero_shot"], "--minerva_zero_shot applies")):
        args = ["--method", "oracle", "--dataset", dataset, "--data_file", str(path), "--output_dir", str(out)]
        assert run_cli(main, [*args, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0] and not out.exists()
    assert run_cli(main, ["--method", "oracle", "--dataset", "gsm8k", "--data_file", str(gsm),
                          "--output_dir", str(out)]) == 0


def test_oracle_needs_no_model_and_refuses_the_flags_of_one(tmp_path, monkeypatch, capsys):
    """The oracle scores gold answers and runs no model, offline too. A --model (or sampling flag)
    with it was ignored without a word, while the folder's results looked like that model's run:
    one line now, before any folder. So are --device, --dtype, --batch_size, --seed and --refill_share,
    which were ignored as well (they have defaults: refused only when given, even as the default's value)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gsm = tmp_path / "gsm8k.jsonl"
    gsm.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    args = ["--method", "oracle", "--dataset", "gsm8k", "--data_file", str(gsm), "--output_dir", str(tmp_path / "out")]
    for flag in (["--model", "nobody/not-cached"], ["--model", str(GOLDEN / "model")], ["--temperature", "0.5"],
                 ["--greedy"], ["--max_new_tokens", "9"], ["--device", "cpu"], ["--dtype", "float32"],
                 ["--batch_size", "4"], ["--batch_size", "20"], ["--seed", "3"], ["--seed", "0"],
                 ["--refill_share", "0.5"], ["--device=auto"]):
        assert run_cli(main, [*args, *flag]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        name = flag[0].partition("=")[0]
        assert err == [f"error: {name} has no effect with --method oracle, which scores the gold answers and "
                       "runs no model: leave it out"]
    assert not (tmp_path / "out").exists()
    assert run_cli(main, args) == 0
    summary = json.loads((tmp_path / "out" / "oracle_results.json").read_text())["summary"]
    assert summary["accuracy"] == 1.0
    # left out, they keep their defaults in the recorded config
    assert {k: summary["config"][k] for k in ("device", "dtype", "batch_size", "seed")} == {
        "device": "auto", "dtype": "auto", "batch_size": 20, "seed": 0}


@pytest.mark.parametrize("case, message", [
    ("RANK x", r"RANK and WORLD_SIZE must be integers"),
    ("RANK 2 of 2", r"RANK 2 is not in \[0, WORLD_SIZE 2\)"),
    ("--merge_timeout 0", r"--merge_timeout must be > 0 seconds, got 0.0"),
    ("an id twice", r"sample id gsm8k/3 occurs twice in .*gsm8k.jsonl"),
    ("rows without settings", r".*out holds oracle samples but no oracle_settings.json, so they may come from other "
                              r"settings; pass --overwrite to start afresh or use another --output_dir"),
    ("unreadable settings", r".*out/oracle_settings.json is unreadable; pass --overwrite to start afresh"),
])
def test_a_run_refused_before_it_runs_is_one_line(case, message, tmp_path, monkeypatch, capsys):
    """Bad launch variables and flags, and a data file with a sample id twice, leave no folder; a folder
    whose settings are missing or unreadable beside finished rows is refused, its rows kept."""
    data, out = tmp_path / "gsm8k.jsonl", tmp_path / "out"
    rows = [{"idx": 3, "question": "1+1?", "answer": "#### 2"}, {"idx": 4, "question": "2+2?", "answer": "#### 4"}]
    if case == "an id twice":
        rows[1]["idx"] = 3
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--method", "oracle", "--dataset", "gsm8k", "--data_file", str(data), "--output_dir", str(out)]
    if case.startswith("RANK"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", case.split()[1])
    elif case == "--merge_timeout 0":
        args += ["--merge_timeout", "0"]
    elif case.endswith("settings"):
        out.mkdir()
        (out / "oracle_partial.rank0.jsonl").write_text(json.dumps({"id": "gsm8k/3", "correct": True}) + "\n")
        if case == "unreadable settings":
            (out / "oracle_settings.json").write_text("{cut sh")
    before = {p.name: p.read_text() for p in out.iterdir()} if out.exists() else None
    assert run_cli(main, args) == 2
    assert re.fullmatch(f"error: {message}\n", capsys.readouterr().err)
    if before is None:
        assert not out.exists()
    else:
        assert {p.name: p.read_text() for p in out.iterdir() if p.suffix != ".lock"} == before


def test_resume_with_another_mmlu_row_set_is_refused(tmp_path, capsys):
    """The row set decides which rows and which golds (a corrected one, or the original): a
    resume must not mix two."""
    data, out = _mmlu_rows(tmp_path / "mmlu.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--dataset", "mmlu", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, [*args, "--mmlu_rows", "all"]) == 0
    capsys.readouterr()
    assert run_cli(main, [*args, "--mmlu_rows", "official"]) == 2
    assert "mmlu_rows='all'" in capsys.readouterr().err


def test_an_error_mid_run_names_the_sample_id(tmp_path, monkeypatch, capsys):
    """A request refused mid-run (here: NaN logits from a poisoned weight) was named by its index
    in the rank's remaining share ("question 0"), which a researcher cannot map to a sample;
    evaluate now passes the sample ids, and the refusal names the sample."""
    import torch

    import minitflow.eval.evaluation as ev
    need_shared(GOLDEN)
    load = ev.load_for

    def poisoned(*a, **kw):
        llm, *rest = load(*a, **kw)
        with torch.no_grad():
            llm.model.norm.weight.fill_(float("nan"))
        return (llm, *rest)

    monkeypatch.setattr(ev, "load_for", poisoned)
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"})
                                              + "\n" for i in range(3)))
    args = _args("baseline", tmp_path / "run", "--greedy")
    args[args.index(str(GSM8K))] = str(tmp_path / "q.jsonl")
    assert run_cli(main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"error: request \d+ \(gsm8k/[0-2], single\): the model's logits are NaN", err), err


def test_total_wall_time_is_the_slowest_rank_not_the_sum_over_ranks(tmp_path):
    """Each row's wall_time is its rank's time since that rank's previous row, and ranks run side by
    side: summing every rank's rows gave N times the run's wall-clock. The run takes as long as its
    slowest rank; the mean stays one rank's seconds per question."""
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out), "--max_samples", "4"]
    assert run_cli(main, args) == 0
    rows = [json.loads(line) for line in (out / "oracle_partial.rank0.jsonl").read_text().splitlines()]
    for k, r in enumerate(rows):
        r["wall_time"] = float(k + 1)  # rank 0 ran samples 0 and 2 (1 + 3 s), rank 1 samples 1 and 3 (2 + 4 s)
    outside = {**rows[0], "id": "gsm8k/5", "wall_time": 100.0}  # a longer --max_samples before: not this run
    (out / "oracle_partial.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[0::2]))
    (out / "oracle_partial.rank1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows[1::2], outside]))
    assert run_cli(main, args) == 0  # nothing left to compute: the summary is made from the rows
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["rank_wall_times"] == {"0": 4.0, "1": 6.0}
    assert summary["total_wall_time"] == 6.0 and summary["mean_wall_time"] == 2.5


def test_rank1_stops_at_once_when_rank0_of_its_launch_was_refused(tmp_path, monkeypatch):
    """Rank 0 refused the folder (a resume with other settings) and exited: rank 1 waited
    RANK0_WAIT_S (5 minutes) for it and then blamed "another run, or rank 0 failed". Rank 0 now
    leaves its error in a marker and rank 1 stops with it; a marker an earlier launch with the same
    run id left (written before this process started) does not stop it."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, args) == 0
    settings = json.loads((out / "oracle_settings.json").read_text())
    (out / "oracle_settings.json").write_text(json.dumps({**settings, "seed": 1}))  # the folder's run: other settings
    _rank0_of_two(monkeypatch)
    marker = out / "oracle.rank0.failed"
    marker.write_text(json.dumps({"run_id": ranks.run_id(2), "time": 0.0, "error": "an earlier launch's"}))
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 0.5)
    with pytest.raises(ranks.UserError, match="rank 0 of this launch did not take"):  # the stale marker: no stop
        ranks.claim_folder(out, "oracle", settings, False, 1, 2)
    assert run_cli(main, args) == 2  # rank 0: refused, seed=1 in the folder
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 30.0)
    t0 = time.monotonic()
    with pytest.raises(ranks.UserError, match=r"rank 0 of this launch failed, so this rank stops: .* with seed=1"):
        ranks.claim_folder(out, "oracle", settings, False, 1, 2)
    assert time.monotonic() - t0 < 10  # RANK0_WAIT_S 30


def test_rank0_stops_waiting_for_a_rank_that_failed_before_it_joined(tmp_path, monkeypatch):
    """Ranks started with other flags: rank 1's --max_samples 0 is refused before it takes the folder,
    so it never joined and rank 0 waited --merge_timeout (an hour) for its rows. Its marker ends the
    wait: results incomplete, exit 1, nothing of rank 1 merged."""
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out), "--merge_timeout", "30"]
    _rank0_of_two(monkeypatch)
    codes: list[int] = []
    t0 = time.monotonic()
    rank0 = threading.Thread(target=lambda: codes.append(run_cli(main, args)))
    rank0.start()
    while not (out / "oracle_settings.json").is_file() and rank0.is_alive():
        time.sleep(0.02)
    time.sleep(0.2)  # rank 0 has read RANK long ago
    monkeypatch.setenv("RANK", "1")
    assert run_cli(main, [*args, "--max_samples", "0"]) == 2
    rank0.join(timeout=60)
    assert codes == [1] and time.monotonic() - t0 < 20  # --merge_timeout 30
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 3 and not summary["complete"]
    assert "(rank 1: --max_samples must be -1 (all) or >= 1, got 0)" in (out / "run.log").read_text()  # why, in rank 0's log


def test_rank0_with_nothing_left_stops_waiting_for_a_rank_that_failed_before_joining(tmp_path, monkeypatch):
    """A resume of a finished run, rank 1 started with other flags (refused before it took the
    folder): rank 0 waited RANK0_WAIT_S for it to join. Its marker ends the wait."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    assert run_cli(main, args) == 0  # every sample done
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 30.0)
    _rank0_of_two(monkeypatch)
    codes: list[int] = []
    t0 = time.monotonic()
    rank0 = threading.Thread(target=lambda: codes.append(run_cli(main, args)))
    rank0.start()
    while not (out / "oracle.rank0.lock").read_text().startswith(ranks.run_id(2)) and rank0.is_alive():  # signed
        time.sleep(0.02)
    monkeypatch.setenv("RANK", "1")
    assert run_cli(main, [*args, "--max_samples", "0"]) == 2
    rank0.join(timeout=60)
    assert codes == [0] and time.monotonic() - t0 < 20  # RANK0_WAIT_S 30


def test_a_finished_run_is_summarised_again_without_the_weights(tmp_path, capsys):
    """A rerun with every sample done read the weight headers first (check_weights), so a folder
    summarised again where the weights are gone was refused for them, though none is read; the
    settings are still compared (from the model's config, tokenizer and generation config)."""
    import shutil
    from minitflow import demo_dir
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "model.safetensors"):
        shutil.copy(demo_dir() / name, model / name)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"question": f"The red box holds {i}. How many does it hold?",
                                        "answer": f"#### {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out"
    args = ["--method", "baseline", "--model", str(model), "--data_file", str(data), "--max_new_tokens", "2",
            "--device", "cpu", "--dtype", "float32", "--output_dir", str(out)]
    assert run_cli(main, args) == 0
    results = out / "baseline_results.json"
    first = json.loads(results.read_text())
    results.unlink()
    (model / "model.safetensors").unlink()
    capsys.readouterr()
    assert run_cli(main, args) == 0, capsys.readouterr().err
    again = json.loads(results.read_text())
    assert again["samples"] == first["samples"] and again["summary"]["complete"]
    assert run_cli(main, [*args, "--temperature", "0.7"]) == 2  # other settings: refused still
    assert "temperature" in capsys.readouterr().err
    assert run_cli(main, [*args, "--overwrite"]) == 2  # samples to run: the missing weights are refused first
    assert f"no model.safetensors or model.safetensors.index.json in {model}" in capsys.readouterr().err
    assert json.loads(results.read_text()) == again  # refused before the folder was cleared


# the heartbeat's times in the tests' child processes (production has no knob for them): a beat every
# 0.2 s, gone after 5 s unchanged, so a kill test takes seconds, not the real HEARTBEAT_STALE_S (30 s)
FAST_BEATS = ("ranks.HEARTBEAT_S = 0.2", "ranks.HEARTBEAT_STALE_S = 5.0")
STUCK = "run.claim_folder = lambda *a, **k: time.sleep(600)"  # a rank checking for ever (a slow disk)


def _evaluate_child(*setup: str) -> list[str]:
    """The command of `python -m minitflow.evaluate` in a child that first runs `setup` on the modules (the
    command line as `ev`, the run it imports as `run`)."""
    return [sys.executable, "-c", "import sys, time; import minitflow.evaluate as ev; import minitflow.eval.evaluation as run; "
            "import minitflow.eval.ranks as ranks; " + "; ".join(setup)
            + "; sys.exit(ev.run_cli(ev.main, sys.argv[1:]))"]


def test_rank1_stops_soon_after_rank0_is_killed_before_it_took_the_folder(tmp_path):
    """kill -9 (the OOM killer, an admin) of rank 0 while it still checks, before it takes the folder,
    leaves no failure marker: rank 1 waited RANK0_WAIT_S (300 s) for it. Rank 0's heartbeat stops
    with it, and rank 1 stops HEARTBEAT_STALE_S later with one line naming it."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(20000 + os.getpid() % 20000)}
    rank0 = subprocess.Popen([*_evaluate_child(*FAST_BEATS, STUCK), *args], env={**env, "RANK": "0", "LOCAL_RANK": "0"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rank1 = subprocess.Popen([*_evaluate_child(*FAST_BEATS), *args], env={**env, "RANK": "1", "LOCAL_RANK": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "oracle.rank0.alive").is_file() and (out / "oracle.rank1.lock").is_file()) \
                and time.monotonic() < deadline:
            time.sleep(0.1)  # rank 1 waits for rank 0 (its lock tried), and rank 0 beats
        time.sleep(1.0)  # rank 1 has seen a beat change
        rank0.kill()
        t0 = time.monotonic()
        _, err = rank1.communicate(timeout=120)
    finally:
        for p in (rank0, rank1):
            p.kill()
            p.wait()
    assert rank1.returncode == 2 and time.monotonic() - t0 < 5.0 + 20 < ranks.RANK0_WAIT_S  # FAST_BEATS: 5 s
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: rank 0 of this launch (") and "is gone" in lines[0], err
    assert f"pid {rank0.pid})" in lines[0] and "has not changed for 5 s" in lines[0]


def test_a_heartbeat_an_earlier_launch_left_does_not_stop_rank1(tmp_path, monkeypatch):
    """A relaunch by hand has the same run id as the launch before, whose rank 0 left its last beat:
    that one never changes, yet it is no sign that this launch's rank 0 died (it may still load)."""
    from minitflow.eval import ranks
    _rank0_of_two(monkeypatch)
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 1.0)
    monkeypatch.setattr(ranks, "HEARTBEAT_STALE_S", 0.1)
    (tmp_path / "oracle.rank0.alive").write_text(json.dumps({"run_id": ranks.run_id(2), "host": "h", "pid": 1,
                                                             "beat": 7, "time": ranks.STARTED - 5}))
    with pytest.raises(ranks.UserError, match="rank 0 of this launch did not take"):
        ranks.claim_folder(tmp_path, "oracle", {"method": "oracle"}, False, 1, 2)


def test_a_rank_refused_before_the_folder_exists_still_stops_the_others(tmp_path, monkeypatch):
    """A rank refused before any rank made the folder (other flags, no model on its node) left no
    marker, since the folder was not there: rank 0 then waited --merge_timeout (an hour) for its
    rows, and rank 1 RANK0_WAIT_S (5 minutes) for a rank 0 that had failed. The marker makes the folder."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out), "--merge_timeout", "30"]
    _rank0_of_two(monkeypatch)
    monkeypatch.setenv("RANK", "1")
    assert run_cli(main, [*args, "--max_samples", "0"]) == 2  # rank 1, first and alone: refused
    assert (out / "oracle.rank1.failed").is_file() and not (out / "oracle_settings.json").exists()
    monkeypatch.setenv("RANK", "0")
    t0 = time.monotonic()
    assert run_cli(main, args) == 1  # rank 0: its share, then stops waiting for rank 1
    assert time.monotonic() - t0 < 20  # --merge_timeout 30
    assert "(rank 1: --max_samples must be -1 (all) or >= 1, got 0)" in (out / "run.log").read_text()
    # the other way round: rank 0 refused first, rank 1 stops at once
    other = tmp_path / "other"
    assert run_cli(main, [*args[:-4], "--output_dir", str(other), "--max_samples", "0"]) == 2
    assert (other / "oracle.rank0.failed").is_file()
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 30.0)
    monkeypatch.setenv("RANK", "1")
    t0 = time.monotonic()
    with pytest.raises(ranks.UserError, match=r"rank 0 of this launch failed, so this rank stops: --max_samples must"):
        ranks.claim_folder(other, "oracle", {"method": "oracle"}, False, 1, 2)
    assert time.monotonic() - t0 < 10  # RANK0_WAIT_S 30
    # under torchrun, whose agent ends the other ranks itself, a bad flag leaves no folder
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "1234")
    assert run_cli(main, [*args[:-4], "--output_dir", str(tmp_path / "none"), "--max_samples", "0"]) == 2
    assert not (tmp_path / "none").exists()


def test_rank0_stops_waiting_soon_after_rank1_is_killed_before_it_joined(tmp_path, monkeypatch):
    """A launch by hand or by srun (which end no other rank): rank 1 killed (kill -9, the OOM killer)
    while it still checks, before it takes its lock, leaves no marker and no lock: rank 0 waited
    --merge_timeout (an hour) for its rows. Its heartbeat stops with it: results incomplete, exit 1."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out), "--merge_timeout", "300"]
    _rank0_of_two(monkeypatch)
    monkeypatch.setattr(ranks, "HEARTBEAT_S", 0.2)  # rank 0's, in this process (FAST_BEATS)
    monkeypatch.setattr(ranks, "HEARTBEAT_STALE_S", 5.0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "RANK": "1", "LOCAL_RANK": "1"}
    rank1 = subprocess.Popen([*_evaluate_child(*FAST_BEATS, STUCK), *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    codes: list[int] = []
    rank0 = threading.Thread(target=lambda: codes.append(run_cli(main, args)))
    try:
        rank0.start()
        deadline = time.monotonic() + 120
        while not (out / "oracle.rank1.alive").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # rank 0 (polling each second) has seen a beat change
        assert rank0.is_alive()  # waiting for rank 1's rows
        rank1.kill()
        t0 = time.monotonic()
        rank0.join(timeout=120)
    finally:
        rank1.kill()
        rank1.wait()
    assert codes == [1] and time.monotonic() - t0 < 5.0 + 20  # --merge_timeout 300
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 3 and not summary["complete"]
    assert f"(rank 1 ({socket.gethostname()} pid {rank1.pid}): its heartbeat stopped (killed?))" in (out / "run.log").read_text()


def test_ranks_by_hand_without_local_rank_on_a_gpu_node_are_refused(tmp_path, monkeypatch, capsys):
    """Ranks launched by hand with RANK and WORLD_SIZE but no LOCAL_RANK all resolved --device cuda
    (or auto) to GPU 0: N models on one card, without a word. One line now, as for a LOCAL_RANK
    that is no integer (a ValueError traceback where CUDA is there). Here CUDA is only said to be."""
    from minitflow.engine import llm
    need_shared(GOLDEN)
    monkeypatch.setattr(llm.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(llm.torch.cuda, "device_count", lambda: 2)
    _rank0_of_two(monkeypatch)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    args = _args("baseline", tmp_path / "out", "--greedy")
    args[args.index("cpu")] = "cuda"
    assert run_cli(main, args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: WORLD_SIZE is 2 but LOCAL_RANK is not set, so every rank would run on the same GPU: set LOCAL_RANK to "
        "each rank's GPU on its node (torchrun sets it), or pass --device cuda:N"]
    for local in ("gpu1", "\u00b2"):  # a superscript 2 passed isdigit, then int() raised a traceback
        monkeypatch.setenv("LOCAL_RANK", local)
        assert run_cli(main, args) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: LOCAL_RANK must be a GPU index (an integer >= 0), got {local!r}"]


def test_a_rank_leaves_its_last_heartbeat_whole_and_no_temporary_file(tmp_path, monkeypatch):
    """A rank's exit stops its heartbeat after the write in hand: an exit mid-write left the write's
    temporary file in the results folder. The last beat stays (a waiter learns from it that the rank is gone)."""
    from minitflow.eval import ranks
    from minitflow.files import replacing
    _rank0_of_two(monkeypatch)
    monkeypatch.setattr(ranks, "HEARTBEAT_S", 0.0)  # beat without a pause: the exit always meets a write
    writes = []
    write_json = ranks.write_json

    def slow_write(path, obj, indent=1):
        writes.append(obj["beat"])
        with replacing(path) as tmp:
            time.sleep(0.05)
            tmp.write_text(json.dumps(obj))

    monkeypatch.setattr(ranks, "write_json", slow_write)
    stop = ranks.start_heartbeat(str(tmp_path), "oracle", 0, 2)
    deadline = time.monotonic() + 30
    while len(writes) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop()
    monkeypatch.setattr(ranks, "write_json", write_json)
    assert [p.name for p in tmp_path.iterdir()] == ["oracle.rank0.alive"]
    assert json.loads((tmp_path / "oracle.rank0.alive").read_text())["beat"] == writes[-1]


def test_a_clean_run_of_two_ranks_leaves_no_heartbeat_and_an_incomplete_one_keeps_rank0s(tmp_path, monkeypatch):
    """The ranks' heartbeats `{method}.rank{r}.alive` stayed in the results folder after a clean,
    merged run. Each rank now removes its own at a clean end (rank 0 once every rank has joined);
    an incomplete merge keeps rank 0's (a late rank may still come and read it), and the resume
    that finishes the run leaves none."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    args = ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]
    _rank0_of_two(monkeypatch)
    monkeypatch.setattr(ranks, "HEARTBEAT_S", 0.05)  # beats before the short merge below gives up
    assert run_cli(main, [*args, "--merge_timeout", "0.5"]) == 1  # rank 1 never came: incomplete
    assert [p.name for p in out.glob("*.alive")] == ["oracle.rank0.alive"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(20000 + os.getpid() % 20000)}
    procs = [subprocess.Popen([*_evaluate_child(*FAST_BEATS), *args], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    summary = json.loads((out / "oracle_results.json").read_text())["summary"]
    assert summary["n"] == 6 and summary["complete"] and summary["world_size"] == 2
    assert not list(out.glob("*.alive")) and not list(out.glob(".*"))  # nor a beat's temporary file
    assert {p.name for p in out.glob("oracle.rank*")} == {"oracle.rank0.lock", "oracle.rank1.lock"}


def test_a_second_launch_refused_on_a_held_rank_does_not_stop_the_first(tmp_path, monkeypatch, capsys):
    """Two launches by hand on one folder (the same command run twice) share a run id. The second's
    rank 0, refused because the first's rank 0 holds its lock, left a failure marker that the first's
    rank 1, waiting for its rank 0, read as its own: it stopped with "rank 0 of this launch failed ...
    another evaluate process is running". A rank refused for a lock another process holds leaves none."""
    from minitflow.eval import ranks
    data, out = _oracle_rows(tmp_path / "sep.jsonl"), tmp_path / "out"
    _rank0_of_two(monkeypatch)
    out.mkdir()
    (out / "oracle_settings.json").write_text(json.dumps({"method": "oracle"}))
    first0 = ranks.take_lock(out, "oracle", 0)  # the first launch's rank 0, still checking the folder
    errors: list[BaseException] = []
    joined: list = []

    def first1():  # the first launch's rank 1, waiting for its rank 0
        try:
            joined.append(ranks.claim_folder(out, "oracle", {"method": "oracle"}, False, 1, 2))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    rank1 = threading.Thread(target=first1)
    rank1.start()
    try:
        lock1 = out / "oracle.rank1.lock"
        while not lock1.is_file() and rank1.is_alive():
            time.sleep(0.02)  # it has tried its lock: it waits
        assert run_cli(main, ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]) == 2
        assert "another evaluate process is running oracle (rank 0)" in capsys.readouterr().err
        assert not (out / "oracle.rank0.failed").exists()
        time.sleep(1.0)  # the first's rank 1 polls every 0.2 s: a marker would have stopped it by now
        assert rank1.is_alive() and not errors
        ranks.sign_lock(first0, ranks.run_id(2) + " 0ddba11")  # the first's rank 0 has checked the folder
        rank1.join(timeout=30)
        assert not errors and len(joined) == 1
    finally:
        first0.close()
        rank1.join(timeout=30)
        for lock in joined:
            lock.close()


def test_two_launches_started_together_leave_the_first_running(tmp_path, monkeypatch):
    """Two torchrun launches started together on one folder: every rank took its lock at once, so the
    locks could split (the first's rank 0 got rank 0's, the second's rank 1 rank 1's). The first's rank 1
    was refused ("another evaluate process is running (rank 1)"), torchrun ended the whole first launch,
    the second's rank 0 was refused as well: neither ran. Rank r > 0 now takes its lock once its own
    rank 0 holds the folder; a rank r that another live process runs here is still refused at once."""
    from minitflow.eval import ranks
    monkeypatch.setattr(ranks, "run_id", lambda size: "second|2" if threading.current_thread().name == "second1"
                        else "first|2")
    monkeypatch.setattr(ranks, "RANK0_WAIT_S", 2.0)
    settings = {"method": "oracle"}
    errors: list[BaseException] = []

    def second1():  # the second launch's rank 1, first at the folder: it waits for its rank 0
        try:
            ranks.claim_folder(tmp_path, "oracle", settings, False, 1, 2).close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    waiting = threading.Thread(target=second1, name="second1")
    waiting.start()
    try:
        time.sleep(0.5)  # it waits for the second launch's rank 0, which never comes (refused, or ended by torchrun)
        first0 = ranks.claim_folder(tmp_path, "oracle", settings, False, 0, 2)
        try:
            first1 = ranks.claim_folder(tmp_path, "oracle", settings, False, 1, 2)  # was: refused, rank 1 is held
            try:
                assert ranks.lock_holder(tmp_path / "oracle.rank1.lock") == ranks.lock_holder(tmp_path / "oracle.rank0.lock") + " joined"
                with pytest.raises(ranks.RankBusy, match=r"another evaluate process is running oracle \(rank 1\)"):
                    ranks.claim_folder(tmp_path, "oracle", settings, False, 1, 2)  # a third rank 1: refused at once
            finally:
                first1.close()
        finally:
            first0.close()
    finally:
        waiting.join(timeout=30)
    assert len(errors) == 1 and "rank 0 of this launch did not take" in str(errors[0])


def test_main_in_process_leaves_the_root_logger_as_it_found_it(tmp_path, capsys):
    """evaluate.main called in-process (a test, a notebook) left its handlers on the root logger, the
    caller's closed (basicConfig force=True): the stderr handler kept capsys' stream, closed after the
    test, and a later test's INFO line (httpx's) was a "Logging error" traceback. Now the caller's
    handlers and level come back unclosed, the run's handlers are closed, and its lines still reach
    stderr and run.log while it runs."""
    import logging
    root = logging.getLogger()
    mine = logging.StreamHandler(io.StringIO())
    found, level = root.handlers[:], root.level
    root.handlers[:] = [mine]
    root.setLevel(logging.WARNING)
    try:
        for run in ("a", "b"):  # twice: the second run's lines go to its own folder only
            out = tmp_path / run
            assert run_cli(main, ["--method", "oracle", "--data_file", str(_oracle_rows(tmp_path / "r.jsonl")),
                                  "--output_dir", str(out)]) == 0
            assert root.handlers == [mine] and root.level == logging.WARNING
            assert "accuracy 1.0000" in capsys.readouterr().err  # a command-line user sees the run's lines
        assert "accuracy 1.0000" in (tmp_path / "b" / "run.log").read_text(encoding="utf-8")
        logging.getLogger("minitflow.test").warning("after the runs")
        assert "after the runs" in mine.stream.getvalue()  # the caller's handler, open and in place
    finally:
        root.handlers[:] = found
        root.setLevel(level)


def test_a_folder_and_data_file_whose_names_are_not_utf8_get_their_results(tmp_path):
    """A path whose bytes are not UTF-8 (a Latin-1 "résultats") reaches Python with lone surrogates, which
    the results file (its config names the data file and --output_dir) could not encode: the whole run
    ended in a UnicodeEncodeError traceback and every resume again, so no results file was ever written.
    They are written as JSON escapes, which read back as the same path: score --results finds the data file."""
    from minitflow import score
    folder = tmp_path / os.fsdecode(b"r\xe9sultats")
    folder.mkdir()
    data, out = _oracle_rows(folder / "sep.jsonl"), folder / "out"
    assert run_cli(main, ["--method", "oracle", "--data_file", str(data), "--output_dir", str(out)]) == 0
    results = json.loads((out / "oracle_results.json").read_text(encoding="utf-8"))
    assert results["summary"]["config"]["data_file"] == str(data) and results["summary"]["n"] == 6
    assert "accuracy 1.0000" in (out / "run.log").read_text(encoding="utf-8")  # its line names the folder
    assert run_cli(score.main, ["--results", str(out)]) == 0
    rescored = json.loads((out / "oracle_results.json").read_text(encoding="utf-8"))["summary"]
    assert rescored["accuracy"] == 1.0 and rescored["rescored_with"]["data_file"] == str(data)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_mid_run_exits_in_one_line_and_the_resume_is_the_straight_run(sig, tmp_path):
    """A scheduler's SIGTERM (SLURM, Kubernetes) and Ctrl-C in the middle of the questions stop alike:
    at once, exit 143 / 130, one line, nothing half-written; the same command then finishes with
    the rows a run without the stop writes, no question lost or counted twice."""
    data = _box_rows(tmp_path / "box.jsonl")
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert run_cli(main, _demo_args(data, straight, "--batch_size", "1")) == 0
    # every question handed to the scorer takes 0.3 s more, so they are scored one at a time and the
    # signal lands with questions still to generate (slowed appends let all 8 queue, then be scored and
    # written as one batch after the stop); SIGINT as a terminal gives it, even where the suite runs
    # with it ignored (nohup, `&`)
    setup = ("import signal", "signal.signal(signal.SIGINT, signal.default_int_handler)",
             "put = run.BackgroundScorer.put", "run.BackgroundScorer.put = lambda *a: (put(*a), time.sleep(0.3))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([*_evaluate_child(*setup), *_demo_args(data, out, "--batch_size", "1")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = out / "baseline_partial.rank0.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (part.is_file() and part.read_bytes().count(b"\n") >= 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(getattr(signal, sig))
        t0 = time.monotonic()
        _, err = child.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 128 + getattr(signal, sig) if sig == "SIGTERM" else child.returncode == 130, err
    assert took < 20.0, took  # under 1 s idle; well inside SLURM's 30 s KillWait on a loaded machine
    assert "Traceback" not in err and err.strip().splitlines()[-1] == ("terminated" if sig == "SIGTERM" else "interrupted")
    done = part.read_bytes()
    assert done.endswith(b"\n") and 2 <= done.count(b"\n") < 8  # whole rows only, and some left to do
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in straight.iterdir()
                                                           if p.name != "baseline_results.json")
    assert run_cli(main, _demo_args(data, out, "--batch_size", "1")) == 0

    def rows(folder: Path) -> list[tuple]:
        return sorted((r["id"], r["prediction"], r["correct"]) for r in map(json.loads, (folder / "baseline_partial.rank0.jsonl").read_text().splitlines()))
    assert rows(out) == rows(straight) and len(rows(out)) == 8
    summary = lambda folder: json.loads((folder / "baseline_results.json").read_text())["summary"]["accuracy"]
    assert summary(out) == summary(straight) == 5 / 8


def _official_truncation(outputs: list[dict]) -> dict:
    """The official evaluator's truncation_stats (src/evaluation/evaluator.py), recomputed from the outputs'
    `truncated` and the official protocol's verdicts."""
    right = [o for o in outputs if o["correct_official"]]
    wrong = [o for o in outputs if not o["correct_official"]]
    cut_right, cut_wrong = sum(o["truncated"] for o in right), sum(o["truncated"] for o in wrong)
    return {"total_truncated": sum(o["truncated"] for o in outputs), "truncated_among_correct": cut_right,
            "truncated_among_incorrect": cut_wrong,
            "rate_truncated_in_correct": cut_right / len(right) if right else None,
            "rate_truncated_in_incorrect": cut_wrong / len(wrong) if wrong else None, "unknown": 0}


def test_outputs_cut_at_max_new_tokens_are_counted_as_the_official_evaluator_counts_them(tmp_path, capsys):
    """The official evaluator records per question `truncated_by_max_new_tokens` (the full max_new_tokens
    without EOS as the last token; textmas: sender A, B or the receiver) and `truncation_stats` in its
    summary; the rows kept only the answering agent's finish_reason and the summary no count at all."""
    from minitflow import report, score
    data = _box_rows(tmp_path / "box.jsonl")
    out = tmp_path / "sampled"
    # the demo model at temperature 3 rambles on some questions: cut at 5 tokens there, not elsewhere
    sampled = [a for a in _demo_args(data, out, "--temperature", "3", "--max_new_tokens", "5") if a != "--greedy"]
    assert run_cli(main, sampled) == 0
    result = json.loads((out / "baseline_results.json").read_text())
    rows, stats = result["samples"], result["summary"]["truncation_stats"]
    assert {r["truncated"] for r in rows} == {True, False}
    for r in rows:
        assert r["truncated"] == (r["finish_reason"] == "length")
        assert not r["truncated"] or r["token_usage"]["completion_tokens"] == 5
    assert stats == _official_truncation(rows)
    assert f"truncated by max_new_tokens: {stats['total_truncated']}/8 outputs" in capsys.readouterr().err
    # greedy, it answers in 5 tokens, EOS the fifth: at max_new_tokens 5 none is cut, at 4 every one
    for limit, cut in (("5", False), ("4", True)):
        run = tmp_path / f"greedy{limit}"
        assert run_cli(main, _demo_args(data, run, "--max_new_tokens", limit)) == 0
        result = json.loads((run / "baseline_results.json").read_text())
        assert [(r["truncated"], r["token_usage"]["completion_tokens"]) for r in result["samples"]] == [(cut, 5 - (limit == "4"))] * 8
        assert result["summary"]["truncation_stats"]["total_truncated"] == 8 * cut
    # textmas: its senders cut at 3 tokens, its receiver answering in full: every question truncated
    for sender_limit, cut in (("3", True), ("8", False)):
        run = tmp_path / f"textmas{sender_limit}"
        args = [*_demo_args(data, run, "--sender_max_new_tokens", sender_limit, "--max_samples", "3")]
        assert run_cli(main, [a if a != "baseline" else "textmas" for a in args]) == 0
        result = json.loads((run / "textmas_results.json").read_text())
        for r in result["samples"]:
            reasons = [a["finish_reason"] for a in r["token_usage"]["per_agent"].values()]
            assert r["finish_reason"] == "stop" and reasons == ["length" if cut else "stop"] * 2 + ["stop"]
            assert r["truncated"] is cut
        assert result["summary"]["truncation_stats"] == _official_truncation(result["samples"])
    # rows written before `truncated` was (a resume): unknown, counted in none, and said so in the report
    part = out / "baseline_partial.rank0.jsonl"
    old = [json.loads(line) for line in part.read_text().splitlines()]
    for r in old[:3]:
        del r["truncated"]
    part.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert run_cli(main, sampled) == 0  # nothing left to run: the summary from the rows
    stats = json.loads((out / "baseline_results.json").read_text())["summary"]["truncation_stats"]
    assert stats == {**_official_truncation(old[3:]), "unknown": 3}
    capsys.readouterr()
    assert run_cli(report.main, [str(out)]) == 0
    assert f"baseline/gsm8k: n=8, truncated {stats['total_truncated']}/5 (3 not recorded)" in capsys.readouterr().out
    # rescored against other gold answers (each output's own, where it has a number): the split by the
    # official verdicts follows the new verdicts
    other = tmp_path / "other.jsonl"
    golds = [r["extracted_official"] if r["extracted_official"].isdigit() else "0" for r in old]
    other.write_text("".join(json.dumps({**json.loads(line), "answer": f"#### {gold}"}) + "\n"
                             for line, gold in zip(data.read_text().splitlines(), golds)))
    assert run_cli(score.main, ["--results", str(out), "--data_file", str(other)]) == 0
    rescored = json.loads((out / "baseline_results.json").read_text())["samples"]
    assert [r["correct_official"] for r in rescored] != [r["correct_official"] for r in old]
    stats = json.loads((out / "baseline_results.json").read_text())["summary"]["truncation_stats"]
    assert stats == {**_official_truncation(rescored[3:]), "unknown": 3}


def _official_token_usage(outputs: list[dict]) -> dict:
    """The official evaluator's token_usage_stats (src/evaluation/evaluator.py), recomputed from each output's
    official token_usage."""
    sums = {k: sum(o["token_usage"].get(k, 0) for o in outputs) for k in ("prompt_tokens", "completion_tokens",
                                                                         "total_tokens")}
    return {**{f"avg_{k}": v / len(outputs) for k, v in sums.items()}, **{f"sum_{k}": v for k, v in sums.items()}}


def test_textmas_rows_keep_what_its_agents_said_and_the_summary_the_official_token_usage_stats(tmp_path, capsys):
    """The official textmas output keeps metadata.conversation_log ({agent, round, text}: senders A and B,
    then the receiver) and its evaluator's summary token_usage_stats; minitflow's rows dropped the senders'
    texts and its summary had token means only."""
    need_shared(GOLDEN)
    from minitflow import report, score
    from minitflow.model.tokenizer import Tokenizer
    from minitflow.tflow import prompts
    from minitflow.tflow.methods import chat_text, textmas_context
    out = tmp_path / "textmas"
    args = _args("textmas", out, "--greedy", "--max_samples", "3", "--sender_max_new_tokens", "4")
    assert run_cli(main, args) == 0
    path = out / "textmas_results.json"
    result = json.loads(path.read_text())
    rows, stats = result["samples"], result["summary"]["token_usage_stats"]
    tok = Tokenizer(GOLDEN / "model")
    (a, _), (b, _), (c, c_sys) = prompts.textmas_roles("gsm8k")
    for r in rows:
        log = r["conversation_log"]
        assert [(e["agent"], e["round"]) for e in log] == [(a, 0), (b, 0), (c, 1)] and all(e["text"] for e in log)
        assert log[2]["text"] == r["prediction"]
        # the senders' texts are what the receiver read: its prompt rebuilt from them has its prompt tokens
        receiver = chat_text(c_sys, r["question"], textmas_context("gsm8k", [e["text"] for e in log[:2]]))
        assert len(tok.encode(receiver)) == r["token_usage"]["per_agent"][c]["prompt_tokens"]
    assert stats == _official_token_usage(rows) and stats["sum_total_tokens"] == sum(r["official_tokens"] for r in rows)
    assert stats["avg_total_tokens"] == result["summary"]["mean_official_tokens"]
    # rows written before conversation_log was (a resume with nothing left to run): the summary as before
    part = out / "textmas_partial.rank0.jsonl"
    old = [json.loads(line) for line in part.read_text().splitlines()]
    part.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "conversation_log"}) + "\n" for r in old))
    assert run_cli(main, args) == 0
    again = json.loads(path.read_text())
    assert not any("conversation_log" in r for r in again["samples"]) and again["summary"]["token_usage_stats"] == stats
    assert run_cli(report.main, [str(out)]) == 0
    # score --results recounts it from the file's rows (two left, as a summary edited by hand may have)
    again["samples"] = again["samples"][:2]
    path.write_text(json.dumps(again))
    assert run_cli(score.main, ["--results", str(out)]) == 0
    rescored = json.loads(path.read_text())
    assert rescored["summary"]["token_usage_stats"] == _official_token_usage(rescored["samples"]) != stats
    # a results file written before token_usage_stats was: rescored, and left without it
    del rescored["summary"]["token_usage_stats"]
    path.write_text(json.dumps(rescored))
    assert run_cli(score.main, ["--results", str(out)]) == 0
    assert "token_usage_stats" not in json.loads(path.read_text())["summary"]
    capsys.readouterr()
    assert run_cli(report.main, [str(out)]) == 0 and "textmas/gsm8k: n=2" in capsys.readouterr().out
