"""`python -m minitflow.score`: rescoring predictions files and evaluate output folders."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minitflow.errors import UserError
from minitflow.score import main

GSM = [
    {"question": "q0", "answer": "work\n#### 18"},
    {"question": "q1", "answer": "work\n#### 70,000"},
    {"question": "q2", "answer": "work\n#### 3"},
]
MMLU = [
    {"subject": "s", "question": "Q0", "choices": ["a", "b", "c", "d"], "answer": 0, "error_type": "ok"},
    {"subject": "s", "question": "Q1", "choices": ["a", "b", "c", "d"], "answer": 1,
     "error_type": "wrong_groundtruth", "correct_answer": "2"},
    {"subject": "s", "question": "Q2", "choices": ["a", "b", "c", "d"], "answer": 3, "error_type": "no_correct_answer"},
]
TOY = {
    "task_id": "Toy/0", "entry_point": "add", "prompt": "def add(a, b):\n    \"\"\"Add.\"\"\"\n",
    "canonical_solution": "    return a + b\n", "base_input": [[1, 2], [0, 0]], "plus_input": [[5, -7]], "atol": 0,
}


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_predictions_in_order_with_repeated_ids(tmp_path, capsys):
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    preds = _jsonl(tmp_path / "p.jsonl", [
        {"id": "gsm8k/1", "prediction": "Profit: 70,000.\n\\boxed{70,000}"},
        {"id": "gsm8k/0", "prediction": "The answer is 18. Check: 9 * 2 = 18 and 16 - 7 = 9."},
        {"id": "gsm8k/0", "prediction": "\\boxed{17}"},  # a second sample of the same problem
        {"id": "gsm8k/2", "prediction": None},
    ])
    out = tmp_path / "o.jsonl"
    assert main(["--dataset", "gsm8k", "--data_file", str(data), "--predictions", str(preds),
                 "--output", str(out)]) == 0
    assert _read(out) == [
        {"id": "gsm8k/1", "correct": True, "extracted": "70000"},
        {"id": "gsm8k/0", "correct": True, "extracted": "18"},
        {"id": "gsm8k/0", "correct": False, "extracted": "17"},
        {"id": "gsm8k/2", "correct": False, "extracted": ""},
    ]
    assert "accuracy 0.5000 (2/4, strict scorer, gsm8k)" in capsys.readouterr().out
    # the official scorer reads "70,000" as 70 and takes the last number after "The answer is 18."
    assert main(["--dataset", "gsm8k", "--data_file", str(data), "--predictions", str(preds),
                 "--output", str(out), "--scorer", "official"]) == 0
    assert [r["correct"] for r in _read(out)] == [False, False, False, False]
    assert [r["extracted"] for r in _read(out)][:2] == ["70", "9"]


def test_mmlu_row_sets(tmp_path, capsys):
    data = _jsonl(tmp_path / "mmlu.jsonl", MMLU)
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": "mmlu/s/1", "prediction": "The answer is (C)."}])
    assert main(["--dataset", "mmlu", "--data_file", str(data), "--predictions", str(preds)]) == 0
    assert "accuracy 1.0000" in capsys.readouterr().out  # official row set: corrected gold C
    assert main(["--dataset", "mmlu", "--data_file", str(data), "--predictions", str(preds),
                 "--mmlu_rows", "all"]) == 0
    assert "accuracy 0.0000" in capsys.readouterr().out  # original gold B
    with pytest.raises(UserError, match="unknown id 'mmlu/s/1'"):  # not a clean row
        main(["--dataset", "mmlu", "--data_file", str(data), "--predictions", str(preds), "--mmlu_rows", "ok"])
    gsm = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    gsm_preds = _jsonl(tmp_path / "g.jsonl", [{"id": "gsm8k/0", "prediction": "\\boxed{18}"}])
    with pytest.raises(UserError, match="--mmlu_rows applies to mmlu only, not gsm8k"):  # else ignored
        main(["--dataset", "gsm8k", "--data_file", str(gsm), "--predictions", str(gsm_preds), "--mmlu_rows", "ok"])


@pytest.mark.parametrize("lines, message", [
    (['{"id": "gsm8k/9", "prediction": "1"}'], "unknown id 'gsm8k/9'"),
    (['{"id": "gsm8k/0", "prediction": "1"}', "{not json"], r"p.jsonl:2: not valid JSON"),
    (['{"id": "gsm8k/0"}'], 'p.jsonl:1: expected an object with "id" and "prediction"'),
    (['{"id": "gsm8k/0", "prediction": 5}'], "p.jsonl:1: prediction must be a string"),
    ([""], "no predictions in"),
])
def test_bad_predictions_are_one_line_errors(tmp_path, lines, message):
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message):
        main(["--dataset", "gsm8k", "--data_file", str(data), "--predictions", str(preds)])


def test_command_line_error_is_one_line(tmp_path):
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": "nope", "prediction": "1"}])
    proc = subprocess.run([sys.executable, "-m", "minitflow.score", "--dataset", "gsm8k", "--data_file", str(data),
                           "--predictions", str(preds)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ") and "'nope'" in proc.stderr


def _results_folder(tmp_path: Path, data: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    rows = [
        {"id": "gsm8k/0", "prediction": "The answer is 18. Check: 16 - 7 = 9.", "correct": False, "extracted": "9",
         "processed_tokens": 10},
        {"id": "gsm8k/1", "prediction": "\\boxed{70,000}", "correct": False, "extracted": "70", "processed_tokens": 7},
        {"id": "gsm8k/2", "prediction": "\\boxed{3}", "correct": True, "extracted": "3", "processed_tokens": 5},
    ]
    summary = {"method": "baseline", "dataset": "gsm8k", "n": 3, "accuracy": 1 / 3,
               "config": {"data_file": str(data), "dataset": "gsm8k"}}
    (folder / "baseline_results.json").write_text(json.dumps({"summary": summary, "samples": rows}))
    partial = "".join(json.dumps(r) + "\n" for r in rows) + '{"id": "gsm8k/0", "predic'  # a line cut by a crash
    (folder / "baseline_partial.rank0.jsonl").write_text(partial)
    return folder


def test_rescore_results_folder_in_place(tmp_path, capsys):
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    folder = _results_folder(tmp_path, data)
    assert main(["--results", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "baseline: accuracy 1.0000 strict, 0.3333 official" in out
    data_out = json.loads((folder / "baseline_results.json").read_text())
    assert data_out["summary"]["accuracy"] == 1.0
    assert data_out["summary"]["accuracy_official"] == pytest.approx(1 / 3)
    assert data_out["summary"]["method"] == "baseline" and data_out["summary"]["n"] == 3
    first = data_out["samples"][0]
    assert (first["correct"], first["extracted"], first["correct_official"], first["extracted_official"]) == (
        True, "18", False, "9")
    assert first["processed_tokens"] == 10  # other fields untouched
    partial = (folder / "baseline_partial.rank0.jsonl").read_text().split("\n")
    assert [json.loads(line)["correct"] for line in partial[:3]] == [True, True, True]
    assert partial[3] == '{"id": "gsm8k/0", "predic'
    assert sorted(p.name for p in folder.iterdir()) == ["baseline_partial.rank0.jsonl", "baseline_results.json"]


def test_rescore_results_errors(tmp_path):
    with pytest.raises(UserError, match="results folder not found"):
        main(["--results", str(tmp_path / "missing")])
    (tmp_path / "x_results.json").write_text("{}")
    with pytest.raises(UserError, match=r"x_results.json is a file, not a folder: give the evaluate output folder"):
        main(["--results", str(tmp_path / "x_results.json")])  # not "not found": it is there
    (tmp_path / "x_results.json").unlink()
    with pytest.raises(UserError, match="no \\*_results.json"):
        main(["--results", str(tmp_path)])
    # a run stopped before rank 0 wrote its results file: the line says what to do, not only "no results"
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "tflow_partial.rank0.jsonl").write_text('{"id": "gsm8k/0", "correct": true}\n')
    with pytest.raises(UserError, match=rf"^no \*_results.json in {re.escape(str(tmp_path / 'stopped'))}, only unfinished "
                                        r"runs \(partial rows\): tflow in .*rerun their evaluate command to finish them"):
        main(["--results", str(tmp_path / "stopped")])
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    folder = _results_folder(tmp_path, data)
    bad = json.loads((folder / "baseline_results.json").read_text())
    bad["samples"][1]["id"] = "gsm8k/77"
    (folder / "baseline_results.json").write_text(json.dumps(bad))
    before = (folder / "baseline_results.json").read_text()
    with pytest.raises(UserError, match="unknown id 'gsm8k/77'"):
        main(["--results", str(folder)])
    assert (folder / "baseline_results.json").read_text() == before  # nothing half-written
    with pytest.raises(UserError, match="--scorer goes with --predictions"):  # both verdicts are rescored
        main(["--results", str(folder), "--scorer", "official"])


@pytest.mark.parametrize("case, message", [
    ("no --dataset", r"^--predictions needs --dataset$"),
    ("--workers 0", r"^--workers must be >= 1, got 0$"),
    ("--output with --results", r"^--output goes with --predictions; --results rewrites the folder in place$"),
    ("not JSON", r"baseline_results.json: not valid JSON \(Expecting property name enclosed in double quotes\)$"),
    ("no samples list", r'baseline_results.json: expected \{"summary": \{...\}, "samples": \[...\]\}$'),
    ("no dataset", r"baseline_results.json: the summary names no dataset; pass --dataset$"),
    ("a row without prediction", r'baseline_results.json: sample 2 lacks "id" or "prediction"$'),
    ("a row without id", r'baseline_results.json: sample 2 lacks "id" or "prediction"$'),
    ("a row that is no object", r'baseline_results.json: sample 2 lacks "id" or "prediction"$'),
])
def test_score_command_line_and_results_file_refusals(case, message, tmp_path):
    """Each is one line before anything is scored or written."""
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    folder = _results_folder(tmp_path, data)
    results = folder / "baseline_results.json"
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": "gsm8k/0", "prediction": "18"}])
    argv = ["--results", str(folder)]
    if case == "no --dataset":
        argv = ["--data_file", str(data), "--predictions", str(preds)]
    elif case == "--workers 0":
        argv = ["--dataset", "gsm8k", "--data_file", str(data), "--predictions", str(preds), "--workers", "0"]
    elif case == "--output with --results":
        argv += ["--output", str(tmp_path / "o.jsonl")]
    else:
        doc = json.loads(results.read_text())
        if case == "not JSON":
            results.write_text("{summary")
        elif case == "no samples list":
            results.write_text(json.dumps({"summary": doc["summary"]}))
        elif case == "no dataset":
            summary = {k: v for k, v in doc["summary"].items() if k not in ("dataset", "config")}
            results.write_text(json.dumps({**doc, "summary": summary}))
        elif case == "a row without prediction":
            del doc["samples"][1]["prediction"]
            results.write_text(json.dumps(doc))
        elif case == "a row without id":
            del doc["samples"][1]["id"]
            results.write_text(json.dumps(doc))
        else:
            doc["samples"][1] = [doc["samples"][1]["id"], doc["samples"][1]["prediction"]]
            results.write_text(json.dumps(doc))
    before = {p.name: p.read_text() for p in folder.iterdir()}
    with pytest.raises(UserError, match=message):
        main(argv)
    assert {p.name: p.read_text() for p in folder.iterdir()} == before and not (tmp_path / "o.jsonl").exists()


def test_rescore_leaves_a_partial_file_without_a_whole_row_as_it_is(tmp_path, capsys):
    """A partial file holding only a line cut by a crash (or rows of ids the data file lacks) has
    nothing to rescore: it is not rewritten, and the results file is rescored."""
    folder = _results_folder(tmp_path, _jsonl(tmp_path / "gsm8k.jsonl", GSM))
    part = folder / "baseline_partial.rank0.jsonl"
    part.write_text('{"id": "gsm8k/9", "prediction": "1", "correct": true}\n{"id": "gsm8k/0", "predic')
    before, inode = part.read_text(), part.stat().st_ino
    assert main(["--results", str(folder)]) == 0
    assert "baseline: accuracy 1.0000 strict" in capsys.readouterr().out
    assert part.read_text() == before and part.stat().st_ino == inode  # a rewrite replaces the file


def test_rescore_is_refused_while_an_evaluate_run_of_that_method_holds_the_folder(tmp_path, capsys):
    """A live evaluate appends rows to the partial files score rewrites: refused before any file
    is read; a lock no process holds (a finished run's) does not count."""
    from minitflow.eval.ranks import take_lock
    folder = _results_folder(tmp_path, _jsonl(tmp_path / "gsm8k.jsonl", GSM))
    (folder / "baseline.rank0.lock").write_text("")
    held = take_lock(folder, "baseline", 1)  # rank 1 of a running 2-rank evaluate
    before = {p.name: p.read_text() for p in folder.iterdir()}
    try:
        with pytest.raises(UserError, match=r"another evaluate process is running baseline \(rank 1\) in "):
            main(["--results", str(folder)])
        assert {p.name: p.read_text() for p in folder.iterdir()} == before
    finally:
        held.close()
    assert main(["--results", str(folder)]) == 0
    assert "baseline: accuracy 1.0000 strict" in capsys.readouterr().out


def test_rescore_on_a_file_system_without_flock(tmp_path, capsys, monkeypatch):
    """A finished folder copied onto Lustre mounted noflock: flock() fails with ENOSYS there, and
    score --results ended in a traceback while checking the locks; no evaluate can hold one there."""
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    folder = _results_folder(tmp_path, _jsonl(tmp_path / "gsm8k.jsonl", GSM))
    (folder / "baseline.rank0.lock").write_text("")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    assert main(["--results", str(folder)]) == 0
    assert "baseline: accuracy 1.0000 strict" in capsys.readouterr().out
    (folder / "baseline.rank0.lock").unlink()  # copied without its lock files: score leaves none behind
    assert main(["--results", str(folder)]) == 0
    assert not list(folder.glob("*.lock"))


def test_rescore_where_a_lock_cannot_be_taken_is_one_line_and_leaves_no_lock(tmp_path, monkeypatch):
    """flock failing otherwise (an I/O error) is refused before any file is read; the lock file
    score made for it goes."""
    import errno
    import fcntl

    def broken_flock(fd, op):
        raise OSError(errno.EIO, "Input/output error")

    folder = _results_folder(tmp_path, _jsonl(tmp_path / "gsm8k.jsonl", GSM))
    before = {p.name: p.read_text() for p in folder.iterdir()}
    monkeypatch.setattr(fcntl, "flock", broken_flock)
    with pytest.raises(UserError, match=rf"^cannot lock {re.escape(str(folder / 'baseline.rank0.lock'))}: "):
        main(["--results", str(folder)])
    assert {p.name: p.read_text() for p in folder.iterdir()} == before


def test_code_predictions_share_one_run(tmp_path, capsys):
    data = _jsonl(tmp_path / "he.jsonl", [TOY])
    preds = _jsonl(tmp_path / "p.jsonl", [
        {"id": "Toy/0", "prediction": "```python\ndef add(a, b):\n    return a + b\n```"},
        {"id": "Toy/0", "prediction": "```py\ndef add(a, b):\n    return a + b\n```"},  # official: no ```python block
        {"id": "Toy/0", "prediction": "```python\ndef add(a, b):\n    return a - b\n```"},
    ])
    out = tmp_path / "o.jsonl"
    main(["--dataset", "humaneval", "--data_file", str(data), "--predictions", str(preds), "--output", str(out)])
    assert [r["correct"] for r in _read(out)] == [True, True, False]
    main(["--dataset", "humaneval", "--data_file", str(data), "--predictions", str(preds), "--output", str(out),
          "--scorer", "official"])
    assert [r["correct"] for r in _read(out)] == [True, False, False]
    # the file has plus tests: humaneval+, as evaluate and report label it
    assert "(2/3, strict scorer, humaneval+)" in capsys.readouterr().out.splitlines()[0]


def test_code_predictions_without_plus_tests_say_humaneval(tmp_path, capsys):
    data = _jsonl(tmp_path / "he.jsonl", [{**TOY, "plus_input": []}])
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": "Toy/0", "prediction": "```python\ndef add(a, b):\n    return a + b\n```"}])
    main(["--dataset", "humaneval", "--data_file", str(data), "--predictions", str(preds)])
    assert "(1/1, strict scorer, humaneval)" in capsys.readouterr().out


def test_rescore_each_results_file_against_its_own_data_file(tmp_path, capsys):
    """Two methods in one folder, run on two data files (ids alike, golds not): each file is
    rescored against its own run's data file, not the one the first file named."""
    folder = tmp_path / "run"
    folder.mkdir()
    for method, gold in (("baseline", 5), ("tflow", 7)):
        data = _jsonl(tmp_path / f"{method}.jsonl", [{"question": "q", "answer": f"w\n#### {gold}"}])
        summary = {"method": method, "dataset": "gsm8k", "n": 1,
                   "config": {"data_file": str(data), "dataset": "gsm8k"}}
        rows = [{"id": "gsm8k/0", "prediction": f"\\boxed{{{gold}}}"}]
        (folder / f"{method}_results.json").write_text(json.dumps({"summary": summary, "samples": rows}))
    assert main(["--results", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "baseline: accuracy 1.0000 strict" in out and "tflow: accuracy 1.0000 strict" in out


def test_rescore_finds_a_relative_data_file_from_another_directory(tmp_path, monkeypatch, capsys):
    """evaluate run with a relative --data_file (the README's ../shared/data/...): its folder is
    rescored from another working directory, so the run must record where that file is."""
    from minitflow.evaluate import main as evaluate_main
    (tmp_path / "data").mkdir()
    _jsonl(tmp_path / "data" / "gsm8k.jsonl", GSM)
    monkeypatch.chdir(tmp_path)
    assert evaluate_main(["--method", "oracle", "--dataset", "gsm8k", "--data_file", "data/gsm8k.jsonl",
                          "--output_dir", "run"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["--results", str(tmp_path / "run")]) == 0
    assert "oracle: accuracy 1.0000 strict, 1.0000 official" in capsys.readouterr().out


def test_rescore_refusal_in_a_later_results_file_leaves_the_earlier_ones_untouched(tmp_path):
    """Two methods in one folder, the second with an unknown id: every file is checked and
    scored before any is written, so the refusal leaves the whole folder as it was."""
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    folder = _results_folder(tmp_path, data)
    bad = json.loads((folder / "baseline_results.json").read_text())
    bad["summary"]["method"] = "tflow"
    bad["samples"][1]["id"] = "gsm8k/77"
    (folder / "tflow_results.json").write_text(json.dumps(bad))
    before = {p.name: p.read_text() for p in folder.iterdir()}
    with pytest.raises(UserError, match="tflow_results.json: unknown id 'gsm8k/77'"):
        main(["--results", str(folder)])
    assert {p.name: p.read_text() for p in folder.iterdir()} == before


def test_rescore_refuses_a_results_file_with_a_question_twice(tmp_path):
    """evaluate writes each question once: a repeated row (files merged by hand) would be counted
    twice in the rescored accuracy, beside a summary n that counts it once. Refused, nothing written."""
    folder = _results_folder(tmp_path, _jsonl(tmp_path / "gsm8k.jsonl", GSM))
    bad = json.loads((folder / "baseline_results.json").read_text())
    bad["samples"].append(dict(bad["samples"][0]))
    (folder / "baseline_results.json").write_text(json.dumps(bad))
    before = {p.name: p.read_text() for p in folder.iterdir()}
    with pytest.raises(UserError, match=r"baseline_results.json: sample id 'gsm8k/0' occurs twice \(samples 1 and 4\)"):
        main(["--results", str(folder)])
    assert {p.name: p.read_text() for p in folder.iterdir()} == before


def test_rescore_refuses_a_data_file_changed_since_the_run(tmp_path, capsys):
    """The run recorded its data file's sha256: a file replaced since (other golds under the same
    ids) is refused, not silently scored against; --data_file names a file to use anyway."""
    from minitflow.evaluate import main as evaluate_main
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    assert evaluate_main(["--method", "oracle", "--dataset", "gsm8k", "--data_file", str(data),
                          "--output_dir", str(tmp_path / "run")]) == 0
    _jsonl(data, [{**GSM[0], "answer": "work\n#### 19"}, *GSM[1:]])
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(UserError, match=r"oracle_results.json: the run's data file .*gsm8k.jsonl has changed since "
                                        r"the run \(sha256\)"):
        main(["--results", str(tmp_path / "run")])
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert main(["--results", str(tmp_path / "run"), "--data_file", str(data)]) == 0
    assert "oracle: accuracy 0.6667 strict" in capsys.readouterr().out


def _mmlu_folder(tmp_path: Path) -> Path:
    from minitflow.evaluate import main as evaluate_main
    data = _jsonl(tmp_path / "mmlu.jsonl", MMLU)
    assert evaluate_main(["--method", "oracle", "--dataset", "mmlu", "--data_file", str(data),
                          "--output_dir", str(tmp_path / "run")]) == 0
    return tmp_path / "run"


def test_rescore_with_another_mmlu_row_set_records_it(tmp_path, capsys):
    """--results --mmlu_rows all on an official-rows run: the verdicts use the original golds, so
    the summary must say so, not keep claiming the official row set."""
    folder = _mmlu_folder(tmp_path)
    assert main(["--results", str(folder), "--mmlu_rows", "all"]) == 0
    assert "oracle: accuracy 0.5000 strict" in capsys.readouterr().out  # relabelled row: original gold B
    assert json.loads((folder / "oracle_results.json").read_text())["summary"]["mmlu_rows"] == "all"


def test_rescore_refuses_mmlu_rows_on_a_run_of_another_dataset(tmp_path):
    """As with --predictions: --mmlu_rows on a gsm8k run would be ignored without a word."""
    folder = _results_folder(tmp_path, _jsonl(tmp_path / "gsm8k.jsonl", GSM))
    before = {p.name: p.read_text() for p in folder.iterdir()}
    with pytest.raises(UserError, match=r"baseline_results.json: --mmlu_rows applies to mmlu only, not gsm8k"):
        main(["--results", str(folder), "--mmlu_rows", "ok"])
    assert {p.name: p.read_text() for p in folder.iterdir()} == before


def test_rescore_records_its_own_n_and_what_it_scored_against(tmp_path):
    """A summary edited or merged by hand keeps no stale `n`, and the verdicts say which data
    file they came from (an override included), beside the run's own settings."""
    data = _jsonl(tmp_path / "gsm8k.jsonl", GSM)
    folder = _results_folder(tmp_path, tmp_path / "elsewhere.jsonl")
    path = folder / "baseline_results.json"
    edited = json.loads(path.read_text())
    edited["summary"]["n"] = 5
    path.write_text(json.dumps(edited))
    assert main(["--results", str(folder), "--data_file", str(data)]) == 0
    summary = json.loads(path.read_text())["summary"]
    assert summary["n"] == 3
    assert summary["rescored_with"] == {"dataset": "gsm8k", "data_file": str(data.resolve()),
                                        "data_file_sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    assert summary["config"]["data_file"] == str(tmp_path / "elsewhere.jsonl")  # the run's own, as it ran


def test_rescore_refuses_a_results_file_without_samples(tmp_path):
    """An empty samples list is not an accuracy of 0.0000 on 0 samples."""
    folder = _results_folder(tmp_path, _jsonl(tmp_path / "gsm8k.jsonl", GSM))
    path = folder / "baseline_results.json"
    empty = json.loads(path.read_text())
    empty["samples"] = []
    path.write_text(json.dumps(empty))
    before = {p.name: p.read_text() for p in folder.iterdir()}
    with pytest.raises(UserError, match=r"baseline_results.json: no samples to rescore"):
        main(["--results", str(folder)])
    assert {p.name: p.read_text() for p in folder.iterdir()} == before


def test_an_evaluate_started_while_score_rescores_is_refused(tmp_path, monkeypatch):
    """score rewrites the partial files whole: an evaluate (re)started meanwhile would append rows
    to a file about to be replaced and lose them. score holds the method's locks, so the
    evaluate is refused with a line that names score, and the locks are free again after."""
    import minitflow.score as score
    from minitflow.eval.ranks import take_lock
    folder = _results_folder(tmp_path, _jsonl(tmp_path / "gsm8k.jsonl", GSM))
    (folder / "baseline.rank1.lock").write_text("")  # an earlier 2-rank launch
    rescore = score._rescore_files
    refused = []

    def during(*a, **k):
        for rank in (0, 1):
            with pytest.raises(UserError, match=r"score --results is rescoring baseline in .*; wait for it"):
                take_lock(folder, "baseline", rank)
            refused.append(rank)
        return rescore(*a, **k)

    monkeypatch.setattr(score, "_rescore_files", during)
    assert main(["--results", str(folder)]) == 0
    assert refused == [0, 1]
    assert sorted(p.name for p in folder.iterdir()) == [  # the rank-0 lock score made is gone again
        "baseline.rank1.lock", "baseline_partial.rank0.jsonl", "baseline_results.json"]
    assert (folder / "baseline.rank1.lock").read_text() == ""  # as it was
    take_lock(folder, "baseline", 1).close()  # free once score is done
