"""The Table-1 report from result files."""

from __future__ import annotations

import json
import re

import pytest

from minitflow.errors import run_cli
from minitflow.report import collect, main, markdown_table


def _write(d, method, dataset, acc, official, processed, wall, n=10, acc_official=None):
    d.mkdir(parents=True, exist_ok=True)
    summary = {"method": method, "dataset": dataset, "n": n, "accuracy": acc, "mean_official_tokens": official,
               "mean_processed_tokens": processed, "mean_wall_time": wall}
    if acc_official is not None:
        summary["accuracy_official"] = acc_official
    (d / f"{method}_results.json").write_text(json.dumps({"summary": summary, "samples": []}))


def test_table_and_plot(tmp_path, capsys):
    _write(tmp_path / "a", "baseline", "gsm8k", 0.8, 300, 300, 1.5)
    _write(tmp_path / "a", "tflow", "gsm8k", 0.875, 310, 700, 1.25, acc_official=0.85)
    _write(tmp_path / "b", "textmas", "mmlu", 0.5, 2000, 2000, 9.0, acc_official=0.4)
    _write(tmp_path / "b", "latentmas", "mmlu", 0.25, 150, 900, 3.0, acc_official=0.25)
    table = markdown_table(collect([str(tmp_path / "a"), str(tmp_path / "b")]))
    lines = table.splitlines()
    assert lines[0].startswith("| Method | gsm8k Acc. | gsm8k Token | gsm8k Proc. | gsm8k Speed (s) | mmlu Acc.")
    assert lines[2] == "| Single | 80.0 (–) | 300 | 300 | 1.50 | – | – | – | – |"  # older file: no official verdict
    assert lines[3] == "| TextMAS | – | – | – | – | 50.0 (40.0) | 2000 | 2000 | 9.00 |"
    assert lines[4] == "| TFlow | 87.5 (85.0) | 310 | 700 | 1.25 | – | – | – | – |"
    assert lines[5] == "| LatentMAS | – | – | – | – | 25.0 (25.0) | 150 | 900 | 3.00 |"  # the fourth method
    assert "official protocol, as in the paper's Table 1" in table
    # not the run's wall-clock on N GPUs; files from before evaluate recorded the device do not say one
    assert "Speed: seconds per question on one rank (device not recorded)." in table and "GPU" not in table
    assert "incomplete" not in table  # files from before `complete` existed are not flagged
    pytest.importorskip("matplotlib")
    png = tmp_path / "chart.png"
    assert run_cli(main, [str(tmp_path / "a"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli(main, [str(tmp_path / "missing")]) == 2
    assert "no such results directory" in capsys.readouterr().err


def _device(d, method, device):
    path = d / f"{method}_results.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "summary": {**data["summary"], "device": device}}))


def test_speed_names_the_device_the_runs_used(tmp_path):
    """The note said "(GPU)" whatever the runs ran on: it names the summaries' device, once when
    every run used one, else beside each run (the oracle runs no model: none)."""
    _write(tmp_path, "baseline", "gsm8k", 0.8, 300, 300, 90.0)
    _write(tmp_path, "oracle", "gsm8k", 1.0, 0, 0, 0.0)
    _device(tmp_path, "baseline", "cpu")
    table = markdown_table(collect([str(tmp_path)]))
    assert "Speed: seconds per question on one rank (cpu). Samples: baseline/gsm8k: n=10, oracle/gsm8k: n=10" \
        in table and "GPU" not in table
    _write(tmp_path / "gpu", "tflow", "gsm8k", 0.9, 300, 600, 2.0)
    _device(tmp_path / "gpu", "tflow", "cuda (NVIDIA H100 80GB HBM3)")
    _write(tmp_path / "old", "textmas", "gsm8k", 0.7, 900, 900, 5.0)
    table = markdown_table(collect([str(tmp_path)]))
    assert ("Speed: seconds per question on one rank (the device each run used: under Samples). Samples: "
            "baseline/gsm8k: n=10 on cpu, oracle/gsm8k: n=10, textmas/gsm8k: n=10 (device not recorded), "
            "tflow/gsm8k: n=10 on cuda (NVIDIA H100 80GB HBM3)") in table


def test_humaneval_and_humaneval_plus_are_two_columns(tmp_path, capsys):
    for name, label, acc in (("he", "humaneval", 0.6), ("heplus", "humaneval+", 0.5)):
        _write(tmp_path / name, "tflow", "humaneval", acc, 300, 600, 2.0)
        path = tmp_path / name / "tflow_results.json"
        data = json.loads(path.read_text())
        data["summary"]["dataset_label"] = label
        path.write_text(json.dumps(data))
    lines = markdown_table(collect([str(tmp_path)])).splitlines()
    assert lines[0].startswith("| Method | humaneval Acc. |") and "| humaneval+ Acc. |" in lines[0]
    assert lines[2] == "| TFlow | 60.0 (–) | 300 | 600 | 2.00 | 50.0 (–) | 300 | 600 | 2.00 |"
    # two results for one cell (older files without a label): refused, never one silently dropped
    _write(tmp_path / "old1", "tflow", "humaneval", 0.6, 300, 600, 2.0)
    _write(tmp_path / "old2", "tflow", "humaneval", 0.5, 300, 600, 2.0)
    assert run_cli(main, [str(tmp_path / "old1"), str(tmp_path / "old2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "old1" in err and "old2" in err and "both hold tflow on humaneval" in err


def test_one_file_reached_twice_a_file_argument_and_an_incomplete_run(tmp_path, capsys):
    _write(tmp_path / "res" / "gsm8k", "tflow", "gsm8k", 0.5, 300, 600, 2.0, n=4)
    path = tmp_path / "res" / "gsm8k" / "tflow_results.json"
    data = json.loads(path.read_text())
    data["summary"]["complete"] = False  # a rank died: rank 0 wrote what it had
    path.write_text(json.dumps(data))
    # the same file through a folder and its parent, or named itself: one cell, not a clash
    for dirs in ([tmp_path / "res", tmp_path / "res" / "gsm8k"], [path], [tmp_path / "res", tmp_path / "res"]):
        assert run_cli(main, [str(d) for d in dirs]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "| TFlow | 50.0 (–) |" in out and "tflow/gsm8k: n=4 (incomplete run)" in out
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert run_cli(main, [str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "notes.txt" in err


def test_a_run_with_partial_rows_but_no_results_file_is_flagged(tmp_path, capsys):
    """A run still going or stopped before rank 0 wrote {method}_results.json: its folder, named
    on the command line, must not vanish from the report without a word."""
    _write(tmp_path / "a", "baseline", "gsm8k", 0.8, 300, 300, 1.5)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "tflow_partial.rank0.jsonl").write_text('{"id": "gsm8k/0", "correct": true}\n')
    assert run_cli(main, [str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| Single | 80.0 (–) |" in out
    assert f"Not shown, unfinished (partial rows, no results file): tflow in {tmp_path / 'b'}" in out
    assert run_cli(main, [str(tmp_path / "a")]) == 0
    assert "unfinished" not in capsys.readouterr().out
    # only unfinished runs: the one-line error names them (it said only "no *_results.json under ...")
    assert run_cli(main, [str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"no *_results.json under {tmp_path / 'b'}" in err
    assert f"unfinished (partial rows, no results file): tflow in {tmp_path / 'b'}" in err


def test_a_method_outside_the_paper_s_four_gets_its_own_row(tmp_path):
    """A results file of a method the report has no label for (a new one, a renamed run) is a row
    after the known ones, under its own name, never dropped from the table."""
    _write(tmp_path / "a", "tflow", "gsm8k", 0.5, 300, 600, 2.0)
    _write(tmp_path / "a", "tflow_v2", "gsm8k", 0.625, 280, 560, 1.5)
    lines = markdown_table(collect([str(tmp_path / "a")])).splitlines()
    assert lines[2] == "| TFlow | 50.0 (–) | 300 | 600 | 2.00 |"
    assert lines[3] == "| tflow_v2 | 62.5 (–) | 280 | 560 | 1.50 |"


def test_plot_without_matplotlib_is_refused_before_the_table(tmp_path, capsys, monkeypatch):
    """--plot without matplotlib: one line and exit 2 before anything is printed, not a table on
    stdout followed by an error (a script that keeps the output would keep half a run)."""
    import sys
    _write(tmp_path / "a", "tflow", "gsm8k", 0.5, 300, 600, 2.0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert run_cli(main, [str(tmp_path / "a"), "--plot", str(tmp_path / "chart.png")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--plot needs matplotlib" in err and not (tmp_path / "chart.png").exists()


def test_mmlu_runs_on_other_row_sets_get_their_own_column(tmp_path, capsys):
    """Accuracies over different MMLU-Redux rows are not one column: the official set keeps
    "mmlu", others are named; one method on two row sets is two cells, not a clash."""
    for method, rows in (("baseline", "official"), ("tflow", "all"), ("textmas", None)):
        _write(tmp_path / f"{method}-{rows}", method, "mmlu", 0.5, 100, 100, 1.0)
        path = tmp_path / f"{method}-{rows}" / f"{method}_results.json"
        data = json.loads(path.read_text())
        data["summary"]["mmlu_rows"] = rows  # None: a run of another dataset's style, or an older file
        path.write_text(json.dumps(data))
    _write(tmp_path / "tflow-official", "tflow", "mmlu", 0.75, 100, 100, 1.0)
    results = collect([str(tmp_path)])
    assert sorted(results) == [("baseline", "mmlu"), ("textmas", "mmlu"), ("tflow", "mmlu"),
                               ("tflow", "mmlu (all rows)")]
    assert "| mmlu (all rows) Acc." in markdown_table(results).splitlines()[0]


def _summary_keys(d, method, **keys):
    path = d / f"{method}_results.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "summary": {**data["summary"], **keys}}))


def test_token_usage_is_shown_where_recorded_and_the_oracle_claims_no_generation(tmp_path):
    """The summary's official token_usage_stats was shown nowhere; the oracle, which generates nothing
    (its outputs are the gold answers), read "truncated 0/N" as if its outputs had been measured."""
    usage = {"avg_prompt_tokens": 120.4, "avg_completion_tokens": 339.6, "avg_total_tokens": 460.0,
             "sum_prompt_tokens": 1204, "sum_completion_tokens": 3396, "sum_total_tokens": 4600}
    cut = {"total_truncated": 2, "truncated_among_correct": 0, "truncated_among_incorrect": 2,
           "rate_truncated_in_correct": 0.0, "rate_truncated_in_incorrect": 0.5, "unknown": 0}
    zero = {k: 0 for k in usage}
    _write(tmp_path, "tflow", "gsm8k", 0.9, 340, 700, 2.0)
    _summary_keys(tmp_path, "tflow", token_usage_stats=usage, truncation_stats=cut)
    _write(tmp_path, "oracle", "gsm8k", 1.0, 0, 0, 0.0)  # as evaluate writes it: every row truncated False
    _summary_keys(tmp_path, "oracle", token_usage_stats=zero, truncation_stats={**cut, "total_truncated": 0,
                                                                                  "truncated_among_incorrect": 0})
    _write(tmp_path, "baseline", "gsm8k", 0.8, 300, 300, 1.5)  # an older file: neither recorded
    table = markdown_table(collect([str(tmp_path)]))
    assert ("Samples: baseline/gsm8k: n=10, oracle/gsm8k: n=10, tflow/gsm8k: n=10, truncated 2/10" in table
            and "truncated 0/" not in table)
    assert ("\n\nOfficial token usage per output (avg prompt / completion / total tokens, generating agents): "
            "TFlow/gsm8k: 120 / 340 / 460") in table
    assert "Single/" not in table and "Oracle/" not in table  # unknown is not 0, and the oracle generates nothing
    (tmp_path / "tflow_results.json").unlink()
    table = markdown_table(collect([str(tmp_path)]))
    assert "token usage" not in table and "truncated" not in table.lower()


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("method"), r"summary.method is missing or not a string$"),
    (lambda s: s.update(dataset=["gsm8k"]), r"summary.dataset is missing or not a string$"),
    (lambda s: s.update(mean_wall_time="1.5"), r"summary.mean_wall_time is missing or not a number$"),
])
def test_a_results_file_whose_summary_lacks_a_field_is_one_line(edit, message, tmp_path, capsys):
    """A results file edited by hand or written by another tool: one line naming the file and the
    field (the table reads them all)."""
    _write(tmp_path, "baseline", "gsm8k", 0.5, 100, 100, 1.0)
    path = tmp_path / "baseline_results.json"
    data = json.loads(path.read_text())
    edit(data["summary"])
    path.write_text(json.dumps(data))
    assert run_cli(main, [str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(f"^error: {re.escape(str(path))}: {message}", err, re.M), err
