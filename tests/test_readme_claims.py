"""README and --help sentences that no other test backs, checked against the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minitflow import demo, demo_dir
from minitflow.errors import run_cli
from minitflow.evaluate import main as evaluate_main
from minitflow.generate import main as generate_main
from minitflow.eval.code_exec import DEFAULT_TIMEOUT
from minitflow.eval.math_equiv import MATH_TIMEOUT
from minitflow.score import main as score_main
from minitflow.train import parse_args as train_parse_args


def _help(capsys, parse, argv=("--help",)) -> str:
    with pytest.raises(SystemExit):
        parse(list(argv))
    return " ".join(capsys.readouterr().out.split())


def test_train_help_shows_only_defaults_that_say_something(capsys):
    """ArgumentDefaultsHelpFormatter printed "(default: None)" after the required --model,
    --train and --out, "(default: )" after --pg_arch, and a second "(default: None)" after
    --save_every's own "default: every --eval_every steps"."""
    text = _help(capsys, train_parse_args)
    assert "(default: None)" not in text and "(default: )" not in text
    assert "(default: the official ones)" in text  # --pg_arch: what empty means
    assert "--steps STEPS optimiser steps (default: 1000)" in text  # real defaults still shown


def test_demo_and_evaluate_help_name_their_output_defaults(capsys):
    assert "(default: minitflow-demo)" in _help(capsys, demo.main)
    text = _help(capsys, evaluate_main)
    assert "--output_dir OUTPUT_DIR where results, settings and run.log go (default: results)" in text
    assert "(default: -1, all)" in text
    # the README's "rank 0: `--merge_timeout`, an hour"; --help left that default unsaid
    assert "incomplete results (default: 3600, an hour)" in text
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "(rank 0: `--merge_timeout`, an hour)" in readme


def test_demo_help_names_every_default(capsys):
    """demo --help showed `--seed SEED` and `--pretrain_steps PRETRAIN_STEPS` with no word and --steps
    without its default: the 450 and 150 steps docs/demo.md describes were nowhere in --help."""
    from minitflow.demo import DemoConfig, PretrainConfig
    text = _help(capsys, demo.main)
    assert "--seed SEED seed of the rows, the backbone and the generators (default: 0)" in text
    assert f"--pretrain_steps PRETRAIN_STEPS backbone pre-training steps (default: {PretrainConfig.steps})" in text
    assert f"tflow_zero.pt (default: {DemoConfig.steps})" in text
    docs = " ".join((Path(__file__).resolve().parents[1] / "docs" / "demo.md").read_text().split())
    assert f"{PretrainConfig.steps} steps of 32 rows" in docs and f"{DemoConfig.steps} steps of 16 rows" in docs


def test_demo_held_out_claim_is_what_the_build_keeps_out():
    """The docs said no held-out fact set is in the training rows; the build keeps out only the
    held-out rows themselves (facts + question), and most of their fact sets come back in training
    with another question. The numbers the docs give are those of build_demo's seed 0."""
    from minitflow.demo import DemoConfig
    cfg = DemoConfig(out="unused")
    held = demo.make_examples(cfg.heldout, cfg.seed + 1234)  # as _build makes them
    train = demo.make_examples(cfg.train_rows, cfg.seed + 1, exclude=[r["sender_question"] for r in held])
    assert not {r["sender_question"] for r in held} & {r["sender_question"] for r in train}
    facts = {r["context"] for r in held}
    assert (len(facts & {r["context"] for r in train}), len(facts)) == (268, 270)
    root = Path(__file__).resolve().parents[1]
    docs = " ".join((root / "docs" / "demo.md").read_text().split())
    readme = " ".join((root / "README.md").read_text().split())
    assert "no held-out fact set" not in docs + readme
    assert "their fact sets do, with another question (268 of the 270 distinct ones)" in docs
    assert "though 268 of their 270 fact sets are there with another question" in readme


def test_generate_help_says_what_seed_and_a_missing_question_mean(capsys):
    """--seed and --question had no help: neither that question i samples with seed + i nor
    that with no --question and no --input_file the question is read from stdin."""
    text = _help(capsys, generate_main)
    assert "question i samples with seed + i" in text and "(default: 0)" in text
    assert "--question QUESTION one question (without it and --input_file: stdin)" in text


def test_score_help_names_its_defaults_and_the_readme_its_math_timeout(capsys):
    """score --help left --workers' 2 and --timeout's per-dataset defaults unsaid; the README's
    "a 5 s alarm stops a comparison" is MATH_TIMEOUT."""
    text = _help(capsys, score_main)
    # MATH's comparisons run in --workers processes too (scoring._score_text): not only code sandboxes
    assert "--workers WORKERS code sandboxes run at once, or processes comparing MATH answers (default: 2)" in text
    assert f"sympy check (default: {DEFAULT_TIMEOUT:g} / {MATH_TIMEOUT:g})" in text
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert f"where a {MATH_TIMEOUT:g} s alarm stops a comparison" in readme


def test_generate_and_evaluate_help_name_the_method_dataset_and_device_defaults(capsys):
    """--method (tflow), --dataset (gsm8k) and --device (auto) had defaults --help never named: a
    reader of `generate --help` could not tell which method ran without --method."""
    import argparse
    import re
    from minitflow.flags import add_model_args
    p = argparse.ArgumentParser()
    add_model_args(p)
    method, dataset = p.get_default("method"), p.get_default("dataset")
    assert (method, dataset, p.get_default("device")) == ("tflow", "gsm8k", "auto")
    for main in (generate_main, evaluate_main):
        text = _help(capsys, main)
        assert re.search(r"--method \{[a-z,]+\} \(default: " + method + r"\)", text), text[:300]
        assert f"math; default: {dataset})" in text
        assert "--device DEVICE auto (the default: a GPU where there is one" in text


def _box_rows(path: Path, n: int = 2) -> Path:
    rows = [{"question": r["sender_question"], "answer": f"#### {demo.gold_value(r['answer'])}"}
            for r in demo.make_examples(n, seed=7)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_textmas_sender_max_new_tokens_is_a_setting_a_resume_keeps(tmp_path, capsys):
    """README: `--sender_max_new_tokens N` is "a run's setting, kept by resume": resuming a
    folder with another value (or without it) is refused in one line; the same value resumes."""
    data, out = _box_rows(tmp_path / "box.jsonl"), tmp_path / "out"

    def args(*extra: str) -> list[str]:
        return ["--method", "textmas", "--dataset", "gsm8k", "--data_file", str(data), "--device", "cpu",
                "--greedy", "--max_new_tokens", "4", "--batch_size", "2", "--output_dir", str(out), *extra]

    assert run_cli(evaluate_main, args("--sender_max_new_tokens", "3")) == 0
    capsys.readouterr()
    for other in (("--sender_max_new_tokens", "5"), ()):
        assert run_cli(evaluate_main, args(*other)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "sender_max_new_tokens" in err[0], err
    assert run_cli(evaluate_main, args("--sender_max_new_tokens", "3")) == 0


def test_report_help_names_every_plot_type_and_results_files(tmp_path, capsys):
    """report --help said --plot writes "a bar chart PNG" and DIRS are evaluate's output
    directories; the plot's type follows its suffix (PLOT_FORMATS) and a *_results.json file
    may be named itself."""
    from minitflow import report
    text = _help(capsys, report.main)
    assert "or *_results.json files" in text
    assert "of the type its suffix names (" + ", ".join("." + f for f in report.PLOT_FORMATS) + "; needs matplotlib)" \
        in text and "PNG" not in text
    summary = {"method": "baseline", "dataset": "gsm8k", "n": 1, "accuracy": 1.0, "mean_official_tokens": 3,
               "mean_processed_tokens": 3, "mean_wall_time": 0.5}
    results = tmp_path / "baseline_results.json"
    results.write_text(json.dumps({"summary": summary, "samples": []}))
    pytest.importorskip("matplotlib")
    assert run_cli(report.main, [str(results), "--plot", str(tmp_path / "chart.svg")]) == 0
    assert "| Single | 100.0 (–) | 3 | 3 | 0.50 |" in capsys.readouterr().out
    assert b"<svg" in (tmp_path / "chart.svg").read_bytes()[:400]


def test_train_help_says_what_lora_a_random_generator_starts_training_with(capsys):
    """train --help said --init random is a "zero initial LoRA"; d6a9b4b changed that to "starts
    small, not zero", checked on checkpoint.random_generator, which is generate --random_generator's
    generator. The trainer's --init random is build_generator's: init_for_training zeroes
    proj_out_B, so every B factor, and the LoRA, is zero (A is random, so gradients reach B)."""
    import torch
    from minitflow.model.config import Qwen3Config
    from minitflow.tflow.training import TrainConfig, build_generator
    text = _help(capsys, train_parse_args)
    assert "'random' (a new generator whose LoRA starts at zero, B factors 0 and A random, as the official " \
           "training init: the receiver starts as the frozen backbone)" in text
    assert "starts small" not in text

    class Backbone:  # what build_generator reads of an LLM
        cfg = Qwen3Config.from_dir(demo_dir())
        device = torch.device("cpu")
    gen = build_generator(TrainConfig(model="", train="", out=""), Backbone())
    hidden = torch.randn(2, Backbone.cfg.num_hidden_layers + 1, 5, Backbone.cfg.hidden_size,
                         generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        factors = gen(hidden, None)
    assert all(b.abs().max() == 0 for _, b in factors.values())
    assert all(a.abs().max() > 0 for a, _ in factors.values())


def test_readme_layout_names_every_folder_and_module():
    """The Architecture block is the map a new reader opens first; it left out docs/ (which the
    README links twice) and minitflow/data/ (the demo and the official prompts). Every tracked
    top-level folder and folder of minitflow/ must head a line of it, and every module be named
    (by its stem, as in extract/scoring/math_equiv, or a glob such as sandbox*.py)."""
    import fnmatch
    import re
    import subprocess
    root = Path(__file__).resolve().parents[1]
    try:  # tracked files only: evaluate's results/, a demo build or a venv beside them are no part of it
        files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    block = (root / "README.md").read_text().split("## Architecture", 1)[1].split("```")[1]
    heads = set(re.findall(r"^ *([\w.]+)/", block, re.M))
    folders = {f.split("/")[0] for f in files if f.count("/") >= 1 and not f.startswith(".")}
    folders |= {f.split("/")[1] for f in files if f.startswith("minitflow/") and f.count("/") >= 2}
    missing = sorted(f"{d}/" for d in folders - heads)
    globs = re.findall(r"\w*\*\w*\.py", block)
    for f in files:
        name = f.rsplit("/", 1)[-1]
        if not (f.startswith("minitflow/") and name.endswith(".py")) or name == "__init__.py" \
                or any(fnmatch.fnmatch(name, g) for g in globs):
            continue
        if not re.search(rf"(?<![\w.]){re.escape(name[:-3])}\b", block):
            missing.append(f)
    assert {"bench", "docs", "tests", "eval", "data"} <= folders and globs, (folders, globs)
    assert not missing, f"not in README's layout: {missing}"


def test_generate_output_ending_in_jsonl_is_json_lines(tmp_path, capsys):
    """`generate --output out.jsonl` wrote one indented JSON list into a file named JSON Lines, which
    no JSONL reader (score --predictions, pandas' lines=True, the next generate) could read past its
    "[" line. README: "an `--output` ending in `.jsonl` gets one object per line"; .json unchanged."""
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "an `--output` ending in `.jsonl` gets one object per line" in readme
    rows = tmp_path / "q.jsonl"
    rows.write_text("".join(json.dumps({"question": f"Q{i}?"}) + "\n" for i in range(2)))
    base = ["--method", "baseline", "--device", "cpu", "--max_new_tokens", "2", "--greedy"]
    for source in (["--input_file", str(rows)], ["--question", "Q0?"]):
        out = tmp_path / "o.JSONL"
        assert run_cli(generate_main, [*base, *source, "--output", str(out)]) == 0
        lines = out.read_text(encoding="utf-8").splitlines()
        got = [json.loads(line) for line in lines]
        assert [g["question"] for g in got] == ["Q0?", "Q1?"][:2 if "--input_file" in source else 1]
        assert {"method", "dataset_prompt", "answer", "metadata"} <= set(got[0])
    assert run_cli(generate_main, [*base, "--input_file", str(rows), "--output", str(tmp_path / "o.json")]) == 0
    assert [g["question"] for g in json.loads((tmp_path / "o.json").read_text())] == ["Q0?", "Q1?"]
    capsys.readouterr()


@pytest.mark.parametrize("question", ["", "  \n"])
def test_generate_empty_question_names_the_flag_given(question, capsys):
    """`--question ""` (an unset shell variable) said "use --question, --input_file or stdin", as if
    no question flag had been passed; it is refused before anything loads, naming --question."""
    assert run_cli(generate_main, ["--question", question, "--method", "baseline"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no question given: --question is empty"], err


def test_evaluate_another_dataset_in_the_same_folder_names_the_dataset(tmp_path, capsys, monkeypatch):
    """Two datasets with the same method in one --output_dir (the default `results` is one folder)
    were refused naming data_file_sha256 (alphabetically first of the differing settings) and
    suggesting --overwrite, which deletes the finished run; the dataset is named first and the
    hint is another folder. Other differences keep the --overwrite hint."""
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "(`--overwrite` starts afresh; another dataset goes in another folder, as `results/gsm8k` above)" in readme
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not shared.is_dir():
        pytest.skip("needs ../shared")
    monkeypatch.chdir(tmp_path)  # the default --output_dir, ./results
    base = ["--method", "oracle", "--max_samples", "2"]
    assert run_cli(evaluate_main, [*base, "--dataset", "gsm8k", "--data_file", str(shared / "gsm8k" / "test.jsonl")]) == 0
    capsys.readouterr()
    mmlu = [*base, "--dataset", "mmlu", "--data_file", str(shared / "mmlu_redux" / "test.jsonl")]
    assert run_cli(evaluate_main, mmlu) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "with dataset='gsm8k', this one has dataset='mmlu'" in err[0], err
    assert "use another --output_dir for mmlu (--overwrite would delete that gsm8k run)" in err[0], err
    assert (tmp_path / "results" / "oracle_results.json").is_file()
    settings = tmp_path / "results" / "oracle_settings.json"
    saved = json.loads(settings.read_text())
    settings.write_text(json.dumps({**saved, "minerva_zero_shot": True}))
    assert run_cli(evaluate_main, [*base, "--dataset", "gsm8k", "--data_file", str(shared / "gsm8k" / "test.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "minerva_zero_shot=True" in err and "pass --overwrite to start afresh" in err, err


def test_report_plot_without_matplotlib_names_the_plot_extra(tmp_path, capsys, monkeypatch):
    """pyproject has a `plot` extra that nothing named: the error said `pip install matplotlib`, while a
    missing scorer names `pip install "minitflow[eval]"`. Refused before the table is printed or a file made."""
    import sys
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the project allows 3.10
    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert any(r.startswith("matplotlib") for r in extras["project"]["optional-dependencies"]["plot"])
    from minitflow import report
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    (tmp_path / "r").mkdir()
    assert run_cli(report.main, [str(tmp_path / "r"), "--plot", str(tmp_path / "t.png")]) == 2
    out = capsys.readouterr()
    assert out.err.strip().splitlines() == ['error: --plot needs matplotlib: pip install "minitflow[plot]"']
    assert out.out == "" and not (tmp_path / "t.png").exists()


# flags of other tools the README quotes (pytest's, torchrun's, hf download's): no parser of ours has them;
# and argparse's own --help, which every parser has without adding it
_FOREIGN_FLAGS = {"--benchmark-only", "--benchmark-json", "--nnodes", "--node-rank", "--nproc-per-node",
                  "--master-addr", "--master-port", "--revision", "--help"}


def _texts() -> tuple[Path, str, str]:
    root = Path(__file__).resolve().parents[1]
    return root, (root / "README.md").read_text(), (root / "bench" / "README_TABLE.md").read_text()


def test_every_flag_the_readme_names_is_a_flag_of_some_parser():
    """A flag renamed or dropped in the code would leave the README telling users to pass one that
    argparse refuses; every `--flag` the README or bench/README_TABLE.md names must be added by some
    parser under minitflow/ or bench/ (or be one of the other tools' flags above)."""
    import re
    root, readme, table = _texts()
    sources = "".join(p.read_text() for d in ("minitflow", "bench") for p in (root / d).rglob("*.py"))
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", readme + table)) - _FOREIGN_FLAGS
    assert {"--model", "--refill_share", "--checkpoint_layers"} <= flags, flags
    missing = sorted(f for f in flags if f'"{f}"' not in sources)
    assert not missing, f"flags the README names that no parser adds: {missing}"


def test_every_path_and_test_the_readme_names_exists():
    """Tables cite the test or benchmark that produces each number, and prose points at files; a rename
    leaves a citation nobody can run. Every repo path (tests/, bench/, docs/, minitflow/, .ci/) and every
    `test_...` name in README.md and bench/README_TABLE.md must exist (a benchmark's old name in a recorded
    run is kept with its new one in brackets, "(now ...)")."""
    import re
    root, readme, table = _texts()
    text = readme + table
    paths = {p.rstrip(".,):") for p in re.findall(r"(?<![\w/.])(?:tests|bench|docs|minitflow|\.ci)/[\w./*-]+", text)}
    assert "tests/test_demo.py" in paths and "bench/scorer_trust.py" in paths, paths
    missing = sorted(p for p in paths if not any(root.glob(p)) and not (root / p).exists())
    sources = "".join(p.read_text() for d in ("tests", "bench") for p in (root / d).rglob("*.py"))
    defined = set(re.findall(r"^\s*def (test_\w+)", sources, re.M))
    defined |= {p.stem for d in ("tests", "bench") for p in (root / d).glob("test_*.py")}  # a module named
    renamed = set(re.findall(r"`(test_\w+)\[[^\]]*\]` \(now `", table))
    names = set(re.findall(r"`(test_\w+)", text)) - renamed
    assert "test_tflow_generator_options" in names, names
    missing += sorted(n for n in names if n not in defined)
    assert not missing, f"named in the README but not in the tree: {missing}"


def test_every_number_in_the_readme_tables_is_in_the_recorded_runs():
    """The project's rule: a README number names a benchmark and bench/README_TABLE.md's recorded runs
    contain it. A re-run that moved a ratio or a time in the table file but not in the README (or the
    reverse) is caught here: every ratio, time and memory figure in a README table row must occur there."""
    import re
    _, readme, table = _texts()
    rows = "\n".join(line for line in readme.splitlines() if line.startswith("|"))
    numbers = set(re.findall(r"(\d+(?:\.\d+)?)(?:×| (?:s|ms|µs|GiB)\b)", rows))
    assert len(numbers) > 20, numbers
    missing = sorted(n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?!\d)", table))
    assert not missing, f"README table numbers no recorded run holds: {missing}"


def test_every_code_name_the_readme_cites_exists():
    """The README points at code by name (`methods.GENERATOR_BATCH`, `Engine._waits`); a rename left
    it pointing at nothing. Each `module.NAME` / `Class.attr` must be an attribute of that module or
    class (a dataclass field counts)."""
    import importlib
    import re
    root, readme, _ = _texts()
    modules = {p.stem: ".".join(p.relative_to(root).with_suffix("").parts)
               for p in (root / "minitflow").rglob("*.py") if p.stem != "__init__"}
    classes = {m.group(1): modules[p.stem] for p in (root / "minitflow").rglob("*.py")
               for m in re.finditer(r"^class (\w+)", p.read_text(), re.M)}
    missing, checked = [], 0
    for name in set(re.findall(r"`((?:\w+\.)+\w+)(?:\(\))?`", readme)):
        *owner, attr = name.split(".")
        if owner[-1] in modules:
            obj = importlib.import_module(modules[owner[-1]])
        elif owner[-1] in classes:
            obj = getattr(importlib.import_module(classes[owner[-1]]), owner[-1])
        else:  # a file name (tflow.pt, run.log), a JSON key (metadata.timings) or torch's own
            continue
        checked += 1
        fields = getattr(obj, "__dataclass_fields__", {})
        if not (hasattr(obj, attr) or attr in fields or attr in getattr(obj, "__annotations__", {})):
            missing.append(name)
    assert checked >= 10 and not missing, (checked, missing)


@pytest.mark.parametrize("flags, message", [
    ((), "error: --method tflow needs --checkpoint PATH"),
    (("--method", "baseline", "--eager", "--compile"), "error: --eager and --compile exclude each other")])
@pytest.mark.parametrize("main", [generate_main, evaluate_main])
def test_flag_errors_are_refused_before_the_hub_is_asked(main, flags, message, tmp_path, capsys, monkeypatch):
    """README: "`tflow` with `--model` and without `--checkpoint` is refused". With a hub id it was
    refused only after the model was resolved: online, `generate --model Qwen/Qwen3-4B --question q`
    downloaded 8 GB, then said --checkpoint was missing; offline it named the cache, not the flag.
    --eager with --compile was refused as late."""
    import minitflow.model.weights as weights

    def no_hub(*args, **kwargs):
        raise AssertionError("the model was resolved before the flags were checked")
    monkeypatch.setattr(weights, "resolve_model_dir", no_hub)
    argv = ["--model", "nobody/not-cached", "--device", "cpu", *flags]
    argv += ["--question", "q"] if main is generate_main else ["--output_dir", str(tmp_path / "out")]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "out").exists()


def test_the_evaluation_blocks_report_line_reports_the_folders_it_wrote(tmp_path, capsys, monkeypatch):
    """The Evaluation block writes tflow on gsm8k to results/gsm8k and results/gsm8k-k4, then ran
    `report results/*`, which refuses two runs of one method on one dataset: its last line failed
    for whoever ran the block as shown. Each folder the block writes gets a tflow summary here and
    the block's own report line must table them."""
    import re
    import shlex
    from minitflow import report
    block = (Path(__file__).resolve().parents[1] / "README.md").read_text().split("## Evaluation", 1)[1]
    block = block.split("```bash\n", 1)[1].split("```", 1)[0]
    folders = set(re.findall(r"--output_dir (\S+)", block))
    assert {"results/gsm8k", "results/gsm8k-k4"} <= folders, folders
    summary = {"method": "tflow", "dataset": "gsm8k", "n": 1, "accuracy": 1.0, "mean_official_tokens": 3,
               "mean_processed_tokens": 3, "mean_wall_time": 0.5}
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "tflow_results.json").write_text(json.dumps({"summary": summary, "samples": []}))
    line = next(line for line in block.splitlines() if line.startswith("python -m minitflow.report "))
    argv = shlex.split(line.split("#", 1)[0])[3:]
    argv = [a for a in argv if a != "--plot" and not a.endswith(".png")]  # matplotlib is another test's
    monkeypatch.chdir(tmp_path)
    argv = [str(f) for a in argv for f in (sorted(Path().glob(a)) if "*" in a else [a])]  # as the shell expands it
    assert run_cli(report.main, argv) == 0, capsys.readouterr().err
    assert "| TFlow | 100.0 (–) | 3 | 3 | 0.50 |" in capsys.readouterr().out


def test_the_kernel_counts_table_is_what_op_count_counts(monkeypatch):
    """The Performance section's kernels table quotes `python bench/op_count.py`. Since 2e97a9b the
    model checks host positions (aminmax and two reads), which its CUDA-path count took as 3 kernels
    once per step (12, not the README's 9) although a GPU's positions are on the device, unchecked."""
    import re
    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "bench"))
    import op_count
    readme = (root / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| kernels per layer, without / with LoRA"))
    without, with_lora = map(int, re.search(r"\*\*(\d+) / (\d+)\*\*", row).groups())
    folded = int(re.search(r"\*\*(\d+)\*\* with LoRA folded", row).group(1))
    once = int(re.search(r"\*\*(\d+)\*\*", next(line for line in readme.splitlines()
                                                 if line.startswith("| kernels once per step"))).group(1))
    counts = {lora: op_count.ops_per_layer(lora, fused=True) for lora in (False, True, "folded")}
    assert [sum(counts[lora][0].values()) for lora in (False, True, "folded")] == [without, with_lora, folded]
    assert {sum(c[1].values()) for c in counts.values()} == {once}, {k: c[1] for k, c in counts.items()}


def test_the_readme_numbers_of_the_engine_are_its_constants():
    """Numbers the README states as the code's own (defaults, block and step sizes, limits), each
    beside the constant or default it names: a change of either side shows here, not in a reader's run."""
    import inspect
    from minitflow.engine import engine, prefix_cache, runner
    from minitflow.engine.llm import HF_DEFAULT_TOP_K, LLM
    from minitflow.tflow import generator, prompts, stream
    root = Path(__file__).resolve().parents[1]
    readme = " ".join((root / "README.md").read_text().split())
    demo_bytes = sum(f.stat().st_size for f in (root / "minitflow" / "data" / "demo").iterdir())
    llm = inspect.signature(LLM.__init__).parameters
    claims = {
        f"(`minitflow/data/demo/`, {demo_bytes / 1e6:.1f} MB)": True,  # the size is in the phrase
        "`num_slots` slots (rows of one preallocated KV cache; default 16)": llm["num_slots"].default == 16,
        "LRU within `prefix_cache_bytes`, default 1 GiB": llm["prefix_cache_bytes"].default == 1 << 30,
        "keeps the KV of 16-token blocks": prefix_cache.BLOCK == 16,
        "(in steps of 256 positions)": runner.cache_positions(257, 10_000) == 512 == 2 * runner.KV_BUCKET,
        "the first 256·k cache slots (k ≤ 4, then powers of two)":
            [runner.kv_bucket(n, 1 << 20) for n in (1, 700, 1024, 1025, 3000)] == [256, 768, 1024, 2048, 4096],
        "read by the host 4 steps later (`engine.TokenRing`)": engine.RUN_AHEAD == 4,
        "K above `stream.MAX_SAMPLES` (65,536": stream.MAX_SAMPLES == 65_536,
        "pieces of 1,024 parameter tokens (`generator.PIECE_TOKENS`": generator.PIECE_TOKENS == 1024,
        "generate up to the official 1,024 tokens": prompts.TEXTMAS_SENDER_MAX_NEW_TOKENS == 1024,
        "per-dataset budget (gsm8k 2,048": prompts.default_max_new_tokens("gsm8k") == 2048,
        "LatentMAS defaults to 0.5, the others to 0": stream.REFILL_SHARE == {
            "baseline": 0.0, "textmas": 0.0, "tflow": 0.0, "latentmas": 0.5},
        "a model without one gets HF's default, top-k 50": HF_DEFAULT_TOP_K == 50,
    }
    missing = [phrase for phrase in claims if phrase not in readme]
    assert not missing, f"README no longer says: {missing}"
    wrong = [phrase for phrase, holds in claims.items() if not holds]
    assert not wrong, f"the code disagrees with the README: {wrong}"


def test_evaluate_refuses_a_bad_data_file_or_output_dir_before_the_hub_is_asked(tmp_path, capsys, monkeypatch):
    """A mistyped --data_file or an --output_dir that is a file was found only after the model was
    resolved: online, a hub id's whole download first. Both are read before the model now (and still
    before any folder is made)."""
    import minitflow.model.weights as weights

    def no_hub(*args, **kwargs):
        raise AssertionError("the model was resolved before the data file and the folder's path were checked")
    monkeypatch.setattr(weights, "resolve_model_dir", no_hub)
    rows, taken = _box_rows(tmp_path / "box.jsonl"), tmp_path / "a_file"
    taken.write_text("")
    base = ["--model", "nobody/not-cached", "--method", "baseline", "--device", "cpu"]
    for flags, message in (
            (["--data_file", str(tmp_path / "missing.jsonl"), "--output_dir", str(tmp_path / "out")],
             "error: data file not found"),
            (["--data_file", str(rows), "--output_dir", str(taken)], "error: --output_dir: ")):
        assert run_cli(evaluate_main, [*base, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "out").exists()


def test_generate_reads_its_input_file_before_the_hub_is_asked(tmp_path, capsys, monkeypatch):
    """With --output, generate named the model's files (resolving a hub id: its download) before it
    read --input_file, so a mistyped input path cost the download first."""
    import minitflow.model.weights as weights

    def no_hub(*args, **kwargs):
        raise AssertionError("the model was resolved before --input_file was read")
    monkeypatch.setattr(weights, "resolve_model_dir", no_hub)
    argv = ["--model", "nobody/not-cached", "--method", "baseline", "--input_file", str(tmp_path / "missing.jsonl"),
            "--output", str(tmp_path / "out.json")]
    assert run_cli(generate_main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: input file not found"), err
