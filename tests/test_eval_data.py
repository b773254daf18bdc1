"""Dataset names, and loading and oracle checks on the six local benchmark files.

The files live in `../shared/data` beside the repo root; tests skip when absent.
Oracle = the gold answer / canonical solution written as a model response; it
must score 100% through `score_sample` (no known exceptions).

Code oracles run a 40-problem subset by default.  The full runs (164 HumanEval+,
378 MBPP+, 164 HumanEval) take ~2-4 minutes on 2 cores and are marked `slow`:
run them with `pytest -m slow` (or MINITFLOW_SLOW=1).
"""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minitflow.errors import UserError
from minitflow.eval.data import (
    CODE_PREFACE,
    MINERVA_FEWSHOT,
    MINERVA_FEWSHOT_PREFIX,
    load_samples,
    mbpp_test_list,
    mmlu_corrected_letter,
    prompt_style,
    read_records,
    resolve_dataset,
    samples_from_records,
)
from minitflow.eval.scoring import oracle_prediction, run_oracle, score_sample

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

FILES = {
    "gsm8k": ("gsm8k", "gsm8k/test.jsonl", 1319),
    "minerva_math": ("minerva_math", "minerva_math/test.jsonl", 272),
    "mmlu_redux": ("mmlu", "mmlu_redux/test.jsonl", 5665),  # the official row set (default)
    "humaneval": ("humaneval", "humaneval/HumanEval.jsonl.gz", 164),
    "humaneval_plus": ("humaneval", "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz", 164),
    "mbpp_plus": ("mbpp", "mbpp_plus/MbppPlus-v0.2.0.jsonl", 378),
}
CODE_FILES = ["humaneval", "humaneval_plus", "mbpp_plus"]
# Mbpp/599's canonical solution alone needs ~40 s on its plus inputs: full runs only.
SLOW_IDS = {"Mbpp/599"}


def data_file(key: str) -> Path:
    path = DATA / FILES[key][1]
    if not path.is_file():
        pytest.skip(f"benchmark file not available: {path}")
    return path


def run_slow(request) -> bool:
    return "slow" in (request.config.getoption("markexpr") or "") or os.environ.get("MINITFLOW_SLOW") == "1"


# ------------------------------------------------------------------ loading


def test_dataset_names():
    assert resolve_dataset("HumanEvalPlus") == "humaneval"
    assert resolve_dataset("mbppplus") == "mbpp"
    assert resolve_dataset("mmlu_redux") == "mmlu"
    assert resolve_dataset("math") == "minerva_math"
    assert [prompt_style(d) for d in ("gsm8k", "math", "mmlu", "humaneval", "mbpp")] == [
        "gsm8k", "minerva_math", "mmlu", "humanevalplus", "mbppplus"]
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        resolve_dataset("nope")


@pytest.mark.parametrize("key", list(FILES))
def test_load_each_file(key):
    dataset, _, count = FILES[key]
    samples = load_samples(dataset, data_file(key))
    assert len(samples) == count
    assert len({s.id for s in samples}) == count
    for s in samples:
        assert s.question.strip() and s.meta["dataset"] == dataset
    assert len(load_samples(dataset, data_file(key), max_samples=5)) == 5


def test_gsm8k_fields():
    s = load_samples("gsm8k", data_file("gsm8k"))[0]
    assert s.answer == "18" and s.question.startswith("Janet")
    assert all(float(x.answer) == float(x.answer) for x in load_samples("gsm8k", data_file("gsm8k")))


def test_gsm8k_question_is_stripped_text():
    rows = [{"question": "  How many?\n", "answer": "x\n#### 3"}]
    assert samples_from_records("gsm8k", rows)[0].question == "How many?"


def test_minerva_gold_is_last_box():
    s = load_samples("math", data_file("minerva_math"))[0]
    assert s.answer == "1.6" and "\\boxed{1.6}" in s.meta["solution"]


def test_minerva_gold_is_the_solutions_box_even_beside_an_answer_field():
    """The official loader reads the solution's last box; a record's "answer" field was taken first, so a
    file whose two disagree scored against another gold than the official's."""
    rows = [{"problem": "P?", "solution": "so $\\boxed{\\frac{1}{2}}$", "answer": "0.5 m"}]
    assert samples_from_records("minerva_math", rows, "m.jsonl")[0].answer == "\\frac{1}{2}"
    with pytest.raises(UserError, match=r"m.jsonl: record 0 has no \\boxed\{\} answer in 'solution'"):
        samples_from_records("minerva_math", [{"problem": "P?", "solution": "one half", "answer": "1/2"}], "m.jsonl")


PREFACE = ("Please provide a self-contained Python script that solves the following problem "
           "in a markdown code block:\n```python\nYOUR_PYTHON_CODE\n```:\n")


def test_minerva_question_is_official_4shot_prompt():
    samples = load_samples("minerva_math", data_file("minerva_math"))
    s = samples[0]
    assert len(MINERVA_FEWSHOT) == 4
    assert MINERVA_FEWSHOT_PREFIX.startswith(
        "Problem:\nFind the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.\n\nSolution:\n"
        "The expressions inside each square root must be non-negative.")
    assert MINERVA_FEWSHOT_PREFIX.endswith(
        "Final Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.")
    assert MINERVA_FEWSHOT_PREFIX.count("Problem:\n") == 4 and MINERVA_FEWSHOT_PREFIX.count("\n\nSolution:\n") == 4
    assert s.question == (MINERVA_FEWSHOT_PREFIX + "\n\nProblem:\n" + s.meta["problem"] + "\n\nSolution:\n")
    assert s.question.startswith(MINERVA_FEWSHOT_PREFIX) and s.question.endswith("Solution:\n")
    assert s.meta["problem"].startswith("Each of the two Magellan telescopes")
    assert all(x.question.startswith(MINERVA_FEWSHOT_PREFIX + "\n\nProblem:\n") for x in samples)
    bare = load_samples("minerva_math", data_file("minerva_math"), minerva_fewshot=False)
    assert bare[0].question == s.meta["problem"] and bare[0].answer == s.answer


def test_minerva_scoring_stops_at_next_problem():
    s = load_samples("minerva_math", data_file("minerva_math"))[0]
    good = "s = alpha f = \\boxed{1.6} cm.\nFinal Answer: The final answer is $1.6$. I hope it is correct."
    assert score_sample("minerva_math", good, s)[0]
    # a continuation that invents the next few-shot problem must not override the answer
    assert score_sample("minerva_math", good + "\n\nProblem:\nWhat is 2+2?\n\nSolution:\n\\boxed{4}", s)[0]


def test_mmlu_redux_filter_and_format():
    path = data_file("mmlu_redux")
    ok = load_samples("mmlu_redux", path, mmlu_rows="ok")
    everything = load_samples("mmlu", path, include_all_mmlu=True)
    assert [(x.id, x.answer) for x in load_samples("mmlu", path)] == [(x.id, x.answer) for x in everything]
    plain = load_samples("mmlu", path, mmlu_rows="all")
    assert len(plain) == 5700 and all(x.answer == x.meta["original_answer"] for x in plain)
    assert len(ok) == 5330 and all(s.meta["error_type"] == "ok" for s in ok)
    # include_all follows the official loader: no_correct_answer dropped (35 rows) ...
    assert len(everything) == 5700 - 35
    assert not any(s.meta["error_type"] == "no_correct_answer" for s in everything)
    s = everything[0]
    assert s.question.splitlines()[-4:] == ["A: True, True", "B: False, False", "C: True, False", "D: False, True"]
    assert s.question == (
        "Statement 1 | If T: V -> W is a linear transformation and dim(V ) < dim(W) < 1, then T must be "
        "injective. Statement 2 | Let dim(V) = n and suppose that T: V -> V is linear. If T is injective, "
        "then it is a bijection.\nA: True, True\nB: False, False\nC: True, False\nD: False, True")
    assert s.answer == "A" and s.meta["subject"] == "abstract_algebra"
    assert s.meta["error_type"] == "bad_question_clarity"
    assert {x.answer for x in everything} == {"A", "B", "C", "D"}
    for x in ok:
        options = "".join(f"\n{L}: {c.strip()}" for L, c in zip("ABCD", x.meta["choices"]))
        assert x.question.endswith(options) and "\nA: " in x.question
    # ... and wrong_groundtruth rows are scored on the corrected answer
    wrong = [x for x in everything if x.meta["error_type"] == "wrong_groundtruth"]
    assert len(wrong) == 107
    second = everything[1]  # abstract_algebra row 1: answer 3 (D), correct_answer "2"
    assert second.meta["error_type"] == "wrong_groundtruth"
    assert second.answer == "C" and second.meta["original_answer"] == "D"
    # 102 name a parseable letter (5 have an empty correct_answer and keep the original);
    # one of them (global_facts) names the original letter itself
    assert sum(mmlu_corrected_letter(x.meta["correct_answer"], x.meta["choices"]) is not None
               for x in wrong) == 102
    assert sum(x.answer != x.meta["original_answer"] for x in wrong) == 101
    assert all(x.answer == x.meta["original_answer"] for x in everything
               if x.meta["error_type"] != "wrong_groundtruth")
    # ids do not depend on the mode
    assert {x.id for x in ok} <= {x.id for x in everything}


def test_mmlu_corrected_letter_and_include_all_rules():
    choices = ["red", "green", "blue", "cyan"]
    assert mmlu_corrected_letter("C", choices) == "C"
    assert mmlu_corrected_letter("b", choices) == "B"
    assert mmlu_corrected_letter("3", choices) == "D"
    assert mmlu_corrected_letter(" Blue ", choices) == "C"
    assert mmlu_corrected_letter("", choices) is None
    assert mmlu_corrected_letter("0,1", choices) is None
    assert mmlu_corrected_letter("7", choices) is None
    rows = [
        {"subject": "s", "question": " Q1 ", "choices": choices, "answer": 0, "error_type": "OK"},
        {"subject": "s", "question": "Q2", "choices": choices, "answer": 0,
         "error_type": "Wrong Groundtruth", "correct_answer": "2"},
        {"subject": "s", "question": "Q3", "choices": choices, "answer": 1,
         "error_type": "no_correct_answer", "correct_answer": ""},
        {"subject": "s", "question": "Q4", "choices": choices, "answer": 1,
         "error_type": "wrong_groundtruth", "correct_answer": ""},
        {"subject": "s", "question": "Q5", "choices": choices, "answer": 2, "error_type": "expert"},
    ]
    ok = samples_from_records("mmlu", rows, mmlu_rows="ok")
    assert [(x.id, x.answer) for x in ok] == [("mmlu/s/0", "A")]
    assert ok[0].question == "Q1\nA: red\nB: green\nC: blue\nD: cyan"
    allrows = samples_from_records("mmlu", rows, include_all_mmlu=True)
    assert [(x.id, x.answer) for x in allrows] == [
        ("mmlu/s/0", "A"), ("mmlu/s/1", "C"), ("mmlu/s/3", "B"), ("mmlu/s/4", "C")]


def test_code_fields():
    he = load_samples("humanevalplus", data_file("humaneval_plus"))[0]
    assert CODE_PREFACE == PREFACE
    assert he.question == PREFACE + he.meta["prompt"] and he.meta["entry_point"] == "has_close_elements"
    assert he.question.startswith(PREFACE) and he.meta["prompt"] in he.question
    assert he.meta["base_input"] and he.meta["plus_input"]
    original = load_samples("humaneval", data_file("humaneval"))[0]
    assert original.question == PREFACE + original.meta["prompt"]
    assert "def check(candidate)" in original.meta["test"] and "base_input" not in original.meta
    mb = load_samples("mbppplus", data_file("mbpp_plus"))[0]
    assert mb.question == (
        PREFACE + "Write a function to find the shared elements from the given two lists."
        "\nYour answer will be tested on test cases like:\n"
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"
        "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\n"
        "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)")
    assert mb.meta["entry_point"] == "similar_elements" and len(mb.meta["test_list"]) == 3
    assert prompt_style("humaneval") == "humanevalplus" and prompt_style("mbpp") == "mbppplus"


def test_mbpp_questions_follow_official_layout():
    samples = {s.id: s for s in load_samples("mbpp", data_file("mbpp_plus"))}
    header = "\nYour answer will be tested on test cases like:\n"
    for s in samples.values():
        assert s.question.startswith(PREFACE) and s.question.count(header) == 1
        text, tests = s.question[len(PREFACE):].split(header)
        assert text == s.meta["task_text"] and tests.split("\n") == s.meta["test_list"]
        assert len(s.meta["test_list"]) == 3 and all(t.startswith("assert") for t in s.meta["test_list"])
        assert s.meta["test_list"][0] in s.meta["prompt"] and '"""' not in s.question
    # evalplus prepends extra tests to some `assertion` scripts: the tests after the prompt's one are used
    assert samples["Mbpp/3"].meta["test_list"] == [
        "assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"]
    # `import math` lines are not tests
    assert samples["Mbpp/82"].meta["test_list"][1].startswith("assert math.isclose(volume_sphere(25)")
    # the release's task text is kept as is (here with the trailing space left by a removed URL)
    assert samples["Mbpp/734"].meta["task_text"].endswith("of a given list. ")


def test_mbpp_hf_style_rows_and_test_list_helper():
    row = {"task_id": 2, "prompt": "Do X.", "test_list": ["assert f(1) == 1", "assert f(2) == 2",
                                                          "assert f(3) == 3", "assert f(4) == 4"],
           "entry_point": "f", "canonical_solution": "def f(x): return x", "base_input": [[1]]}
    s = samples_from_records("mbpp", [row])[0]
    assert s.question == (PREFACE + "Do X.\nYour answer will be tested on test cases like:\n"
                          "assert f(1) == 1\nassert f(2) == 2\nassert f(3) == 3")
    prompt = '"""\nDo X.\nassert f(2) == 2\n"""\n'
    assertion = "import math\nassert f(0) == 0\nassert f(2) == 2\nassert f(5) == 5\n"
    assert mbpp_test_list(prompt, assertion) == ["assert f(2) == 2", "assert f(5) == 5"]
    assert mbpp_test_list(prompt, assertion + "assert f(6) == 6\nassert f(7) == 7") == [
        "assert f(2) == 2", "assert f(5) == 5", "assert f(6) == 6"]


def test_loader_fallbacks_for_rows_outside_the_releases():
    """Rows the release files never hold: a HumanEval row with neither evalplus inputs nor a `test`
    script is refused naming the fields; an MBPP+ prompt whose docstring ends in no assert takes its
    tests from the `assertion` script, read line by line where it does not parse; an unknown MMLU
    row set is one line (the command lines offer only the three)."""
    he = {"task_id": "Toy/0", "prompt": "def f(x):\n", "entry_point": "f", "canonical_solution": "    return x\n"}
    with pytest.raises(UserError, match=r"^he.jsonl: record lacks field\(s\) base_input, plus_input \(a humaneval file"):
        samples_from_records("humaneval", [he], "he.jsonl")
    assert samples_from_records("humaneval", [{**he, "test": "def check(c): pass"}])[0].meta["test"]
    prompt = '"""\nDo X.\nSee the tests.\n"""\n'
    assertion = "assert f(1) == 1\nassert f(2) == (2\n  assert f(3) == 3\nprint(1)\n"
    assert mbpp_test_list(prompt, assertion) == ["assert f(1) == 1", "assert f(2) == (2", "assert f(3) == 3"]
    row = {"task_id": "Mbpp/9", "prompt": prompt, "assertion": assertion, "entry_point": "f",
           "canonical_solution": "def f(x): return x", "base_input": [[1]]}
    s = samples_from_records("mbpp", [row])[0]
    assert s.meta["task_text"] == "Do X.\nSee the tests."
    assert s.question.endswith("See the tests.\nYour answer will be tested on test cases like:\n"
                               "assert f(1) == 1\nassert f(2) == (2\nassert f(3) == 3")
    with pytest.raises(UserError, match=r"^unknown MMLU row set 'clean'; expected one of: official, ok, all$"):
        samples_from_records("mmlu", [], mmlu_rows="clean")


def test_code_file_of_the_other_benchmark_is_refused():
    """HumanEval+ and MBPP+ files share their fields: the HumanEval+ file run as mbpp crashed in
    evalplus' MBPP input decoding (a traceback once the model had run), and the MBPP+ file run as
    humaneval scored MBPP with HumanEval's prompt. Task ids tell them apart."""
    row = {"prompt": "def f(x):\n", "entry_point": "f", "canonical_solution": "    return x\n",
           "base_input": [[1.5]], "plus_input": [], "atol": 0}
    with pytest.raises(UserError, match=r"HumanEval/0 is a humaneval task .*--dataset humaneval"):
        samples_from_records("mbpp", [{**row, "task_id": "HumanEval/0"}], "he.jsonl")
    with pytest.raises(UserError, match=r"Mbpp/2 is a mbpp task .*--dataset mbpp"):
        samples_from_records("humaneval", [{**row, "task_id": "Mbpp/2"}], "mbpp.jsonl")
    assert samples_from_records("mbpp", [{**row, "task_id": "Mbpp/2"}])[0].id == "Mbpp/2"
    assert samples_from_records("humaneval", [{**row, "task_id": "Toy/0"}])[0].id == "Toy/0"


def test_mmlu_answer_outside_the_choices_is_refused():
    """An `answer` index past the choices was a traceback (IndexError) or, negative, another
    letter taken as the gold ("J" for -1): the oracle scored 100% on a question no model can get."""
    row = {"subject": "s", "question": "Q", "choices": ["a", "b", "c", "d"], "error_type": "ok"}
    for answer in (4, 99, -1):
        with pytest.raises(UserError, match=rf"m.jsonl: record 1: 'answer' {answer} is not .*0 to 3"):
            samples_from_records("mmlu", [{**row, "answer": answer}], "m.jsonl")
    with pytest.raises(UserError, match=r"record 1 has 11 choices, more than the 10 letters A-J"):
        samples_from_records("mmlu", [{**row, "choices": list("abcdefghijk"), "answer": 0}], "m.jsonl")
    assert samples_from_records("mmlu", [{**row, "answer": 3}])[0].answer == "D"
    assert samples_from_records("mmlu", [{**row, "choices": [], "answer": 0}]) == []  # skipped, as upstream


def test_an_empty_question_is_refused_when_read():
    """generate refused an empty question but evaluate ran it: every method answered the bare
    prompt (tflow capturing the prompt around it), scored as if it were the dataset's."""
    with pytest.raises(UserError, match=r"g.jsonl: a record's 'question' is empty \(idx 7\)"):
        samples_from_records("gsm8k", [{"question": "Q?", "answer": "#### 1"},
                                       {"idx": 7, "question": " \n", "answer": "#### 2"}], "g.jsonl")
    with pytest.raises(UserError, match=r"m.jsonl: a record's 'problem' is empty$"):
        samples_from_records("minerva_math", [{"problem": "", "solution": "\\boxed{1}"}], "m.jsonl")


def test_a_gsm8k_gold_that_is_no_number_is_refused_when_read(tmp_path, capsys):
    """A gsm8k record whose answer lacks its `#### N` (the demo's heldout.jsonl: "\\boxed{7}") made a gold
    no scorer reads as a number: evaluate ran every question and scored each wrong, a silent 0%."""
    for answer, shown in (("\\boxed{7}", r"'\\\\boxed\{7\}'"), ("It is 7.", "'It is 7.'"), ("#### seven", "'seven'")):
        with pytest.raises(UserError, match=rf"g.jsonl: record 2 \(idx 5\): 'answer' gives no number as the gold "
                                            rf"\({shown}\): a gsm8k answer ends in '#### N'"):
            samples_from_records("gsm8k", [{"question": "Q?", "answer": "#### 1"},
                                           {"idx": 5, "question": "Q2?", "answer": answer}], "g.jsonl")
    golds = [{"question": "Q?", "answer": a} for a in ("so\n#### 1,234", "#### $5", "#### -3", "18", "3/4")]
    assert [s.answer for s in samples_from_records("gsm8k", golds)] == ["1234", "5", "-3", "18", "3/4"]
    from minitflow import evaluate
    from minitflow.errors import run_cli
    demo = Path(evaluate.__file__).parent / "data" / "demo" / "heldout.jsonl"  # gsm8k-style, golds "\\boxed{N}"
    rc = run_cli(evaluate.main, ["--method", "oracle", "--data_file", str(demo), "--output_dir", str(tmp_path / "r")])
    assert rc == 2 and "heldout.jsonl: record 1: 'answer' gives no number" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before the folder is made


def test_local_formats_and_errors(tmp_path, monkeypatch):
    rows = [{"question": "1+1?", "answer": "two\n#### 2"}]
    gz = tmp_path / "g.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    as_list = tmp_path / "g.json"
    as_list.write_text(json.dumps(rows))
    assert load_samples("gsm8k", gz)[0].answer == "2"
    assert load_samples("gsm8k", as_list)[0].answer == "2"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(ValueError, match="lacks field"):
        load_samples("gsm8k", bad)
    with pytest.raises(UserError):
        load_samples("gsm8k", tmp_path / "missing.jsonl")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"pass --data_file path/to/gsm8k/test.jsonl") as err:
        load_samples("gsm8k")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_samples("gsm9k", bad)


def test_a_lone_surrogate_in_a_data_file_is_refused_when_read(tmp_path):
    """JSON's "\\ud800" escape reads as a lone surrogate, which no UTF-8 file can hold: evaluate
    ran every question, then crashed with a traceback writing results.json (a gold or question
    there). A surrogate pair is one character and stays."""
    path = tmp_path / "g.jsonl"
    path.write_text('{"question": "1+1? \\ud83d\\ude00", "answer": "two\\n#### 2"}\n'
                    '{"question": "2+2?", "answer": "four\\n#### 4\\ud800"}\n')
    with pytest.raises(UserError, match=r"g.jsonl: record 2 holds a lone surrogate \(U\+D800\)"):
        load_samples("gsm8k", path)
    path.write_text(path.read_text().split("\n")[0] + "\n")
    assert load_samples("gsm8k", path)[0].question == "1+1? \U0001f600"


def test_an_unreachable_hub_is_one_error_line_without_the_libraries_retry_warnings(tmp_path):
    """No --data_file, and the hub answers the first ask (_hub_silent) but not load_dataset's:
    datasets / huggingface-hub log every retry before they raise; the user sees only the one
    error line, which names the library's cause."""
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "gsm8k/0", "prediction": "1"}) + "\n")
    script = """if True:
        import logging, sys
        import datasets
        from minitflow.errors import run_cli
        from minitflow.score import main

        def unreachable(*args, **kwargs):  # what load_dataset does with no network, less the ~25 s of retries
            for n in range(1, 6):
                logging.getLogger("huggingface_hub.utils._http").warning("Retrying in %ds [Retry %d/5].", n, n)
            logging.getLogger("datasets.load").warning("Couldn't reach the Hub")
            raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

        datasets.load_dataset = unreachable
        import huggingface_hub
        huggingface_hub.HfApi.dataset_info = lambda *args, **kwargs: None  # the first ask is answered
        sys.exit(run_cli(main, ["--dataset", "gsm8k", "--predictions", sys.argv[1]]))
    """
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    proc = subprocess.run([sys.executable, "-c", script, str(preds)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no local copy of gsm8k: pass --data_file")
    assert "[download failed: ConnectionError: Couldn't reach 'openai/gsm8k' on the Hub" in proc.stderr


# ------------------------------------------------- offline, from the caches a download left

HUB_REV = "0123456789abcdef0123456789abcdef01234567"


def hub_dataset_cache(root: Path, repo: str, files: dict[str, bytes | None]) -> Path:
    """huggingface-hub's cache as a download of dataset `repo` leaves it: refs/main, blobs/<sha256>,
    snapshots/<rev>/<path> a relative link to its blob (None: a link to a blob that is gone)."""
    import hashlib

    base = root / f"datasets--{repo.replace('/', '--')}"
    (base / "blobs").mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(HUB_REV)
    for name, data in files.items():
        blob = base / "blobs" / hashlib.sha256(data or name.encode()).hexdigest()
        if data is not None:
            blob.write_bytes(data)
        link = base / "snapshots" / HUB_REV / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return base / "snapshots" / HUB_REV


def parquet_file(rows: list[dict], tmp_path: Path) -> bytes:
    """The rows as the hub's parquet files hold them (datasets' own writer)."""
    import datasets
    path = tmp_path / "rows.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path.read_bytes()


def arrow_file(rows: list[dict], tmp_path: Path) -> bytes:
    """The rows as MMLU-Redux 2.0's `<subject>/data-00000-of-00001.arrow` (datasets' save_to_disk)."""
    import datasets
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    data = (tmp_path / "saved" / "data-00000-of-00001.arrow").read_bytes()
    return data


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 with huggingface-hub's cache in tmp_path; a download attempt fails the test."""
    import huggingface_hub.constants

    import minitflow.eval.data as data
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(data, "_download_records", lambda dataset: pytest.fail("went online"))
    return tmp_path / "hub"


def test_offline_gsm8k_loads_from_the_hub_cache(offline_hub, tmp_path):
    """HF_HUB_OFFLINE=1 and no --data_file was "no local copy of gsm8k ... [offline mode]" at once,
    with openai/gsm8k downloaded (load_dataset offline reads only its own processed cache, not
    these files). Now the cached test split loads: the same Samples as the file's same rows."""
    rows = read_records(data_file("gsm8k"))[:5]
    hub_dataset_cache(offline_hub, "openai/gsm8k", {
        "README.md": b"---\n---\n",
        "main/test-00000-of-00001.parquet": parquet_file(rows, tmp_path),
        "main/train-00000-of-00001.parquet": parquet_file(read_records(data_file("gsm8k"))[5:9], tmp_path)})
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_samples("gsm8k")
    assert samples == load_samples("gsm8k", path) and len(samples) == 5
    assert samples[0].question.startswith("Janet") and samples[0].answer == "18"


def test_offline_mmlu_loads_every_subject_from_the_hub_cache(offline_hub, tmp_path):
    """MMLU-Redux 2.0 on the hub is one save_to_disk Arrow file per subject config, rows without a
    subject (it is the config's name) and with the normalised error_type: read as the file's rows."""
    from minitflow.eval.data import MMLU_SUBJECTS
    by_subject: dict[str, list[dict]] = {}
    for r in read_records(data_file("mmlu_redux")):
        by_subject.setdefault(r["subject"], []).append(r)
    rows = [r for s in MMLU_SUBJECTS for r in by_subject[s][:2]]
    hf = ("question", "choices", "answer", "source", "correct_answer", "potential_reason")
    files = {f"{s}/data-00000-of-00001.arrow": arrow_file(
        [{**{k: r[k] for k in hf}, "error_type": r["error_type_norm"]} for r in by_subject[s][:2]], tmp_path / s)
        for s in MMLU_SUBJECTS}
    hub_dataset_cache(offline_hub, "edinburgh-dawg/mmlu-redux-2.0", files)
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({**r, "in_redux_v1": False}) + "\n" for r in rows))
    for row_set in ("official", "all"):
        samples = load_samples("mmlu", mmlu_rows=row_set)
        assert samples == load_samples("mmlu", path, mmlu_rows=row_set)
    assert len(samples) == 114 and samples[0].id == "mmlu/abstract_algebra/0"


@pytest.mark.parametrize("case", ["not cached", "a subject missing", "a blob gone", "no pyarrow"])
def test_offline_without_the_cached_files_is_one_line_naming_them(case, offline_hub, tmp_path, monkeypatch):
    """Offline and not (wholly) cached, or without the eval extra to read it: one UserError line naming
    what lacks and --data_file."""
    from minitflow.eval.data import MMLU_SUBJECTS
    rows = [{"question": "q", "choices": ["a", "b"], "answer": 0, "error_type": "ok"}]
    if case == "not cached":
        dataset, match = "gsm8k", r"openai/gsm8k is not in the Hugging Face cache: no snapshot of main in .*datasets--openai--gsm8k"
    elif case == "a subject missing":
        arrow = arrow_file(rows, tmp_path)
        hub_dataset_cache(offline_hub, "edinburgh-dawg/mmlu-redux-2.0",
                          {f"{s}/data-00000-of-00001.arrow": arrow for s in MMLU_SUBJECTS[2:]})
        dataset, match = "mmlu", (r"the cached edinburgh-dawg/mmlu-redux-2.0 \(.*\) lacks abstract_algebra/data-\* "
                                  r"and 1 more of its 57\]")
    elif case == "no pyarrow":
        hub_dataset_cache(offline_hub, "openai/gsm8k", {"main/test-00000-of-00001.parquet": parquet_file(
            [{"question": "1+1?", "answer": "#### 2"}], tmp_path)})
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        dataset, match = "gsm8k", r'reading the cached copy needs pyarrow: pip install "minitflow\[eval\]"\]'
    else:
        hub_dataset_cache(offline_hub, "openai/gsm8k", {"main/test-00000-of-00001.parquet": None})
        dataset, match = "gsm8k", r"the cached .*main/test-00000-of-00001.parquet is a broken link \(to \.\./.*blobs/"
    with pytest.raises(UserError, match=rf"^no local copy of {dataset}: pass --data_file .*\[offline mode: {match}") as e:
        load_samples(dataset)
    assert "\n" not in str(e.value)


def test_offline_cached_arrow_files_and_files_cut_short(offline_hub, tmp_path):
    """A cached Arrow file in IPC file format (not save_to_disk's stream) is read as datasets reads it;
    a cached file cut short (a download stopped) is one line naming it."""
    import pyarrow as pa

    rows = [{"question": "1+1?", "answer": "two\n#### 2"}, {"question": "2+3?", "answer": "#### 5"}]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, pa.Table.from_pylist(rows).schema) as writer:
        writer.write_table(pa.Table.from_pylist(rows))
    snapshot = hub_dataset_cache(offline_hub, "openai/gsm8k", {
        "main/test-00000-of-00001.arrow": sink.getvalue().to_pybytes()})
    assert [(s.question, s.answer) for s in load_samples("gsm8k")] == [("1+1?", "2"), ("2+3?", "5")]
    (snapshot / "main" / "test-00000-of-00001.arrow").unlink()
    parquet = parquet_file(rows, tmp_path)
    (snapshot / "main" / "test-00000-of-00001.parquet").write_bytes(parquet[:len(parquet) // 2])
    with pytest.raises(UserError, match=r"\[offline mode: cannot read the cached .*main/test-00000-of-00001.parquet: "
                                        r"Could not open Parquet input source"):
        load_samples("gsm8k")


def test_offline_code_benchmarks_load_from_the_evalplus_cache(offline_hub, tmp_path, monkeypatch):
    """HumanEval+ / MBPP+ come from evalplus' release file, where evalplus caches it: offline, that
    file loads (the same Samples as --data_file on it); absent, the line names it."""
    import shutil

    from evalplus.data import humaneval, mbpp, utils
    monkeypatch.setattr(utils, "CACHE_DIR", str(tmp_path / "evalplus"))
    monkeypatch.setattr(mbpp, "MBPP_OVERRIDE_PATH", None)
    monkeypatch.setattr(humaneval, "HUMANEVAL_OVERRIDE_PATH", None)
    (tmp_path / "evalplus").mkdir()
    shutil.copy(data_file("mbpp_plus"), tmp_path / "evalplus" / "MbppPlus-v0.2.0.jsonl")
    samples = load_samples("mbpp", max_samples=20)
    assert samples == load_samples("mbpp", data_file("mbpp_plus"), max_samples=20) and samples[0].id == "Mbpp/2"
    with pytest.raises(UserError, match=r"\[offline mode: no evalplus release file at .*evalplus/HumanEvalPlus-v0.1.10.jsonl\]"):
        load_samples("humaneval")
    with pytest.raises(UserError, match=r"\[offline mode; minerva_math has no hub source\]"):
        load_samples("minerva_math")


def test_offline_and_not_cached_is_one_error_line_from_the_cli(tmp_path):
    """What a researcher sees: HF_HUB_OFFLINE=1, the cache (HF_HOME) without gsm8k, no --data_file."""
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "gsm8k/0", "prediction": "1"}) + "\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "minitflow.score", "--dataset", "gsm8k", "--predictions", str(preds)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: no local copy of gsm8k: pass --data_file path/to/gsm8k/test.jsonl")
    assert f"[offline mode: openai/gsm8k is not in the Hugging Face cache: no snapshot of main in {tmp_path}" in proc.stderr


SILENT_HUB = """
import os, socket, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
held = []
threading.Thread(target=lambda: [held.append(srv.accept()) for _ in iter(int, 1)], daemon=True).start()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{srv.getsockname()[1]}"
from minitflow.errors import UserError
from minitflow.eval.data import load_samples
try:
    samples = load_samples("gsm8k")
except UserError as e:
    sys.exit(f"error: {e}")
print(len(samples), samples[0].answer)
"""


@pytest.mark.parametrize("cached", [False, True])
def test_a_hub_that_does_not_answer_is_one_line_in_seconds_or_the_cached_copy(cached, tmp_path):
    """No --data_file, HF_HUB_OFFLINE unset, and a hub that takes the connection and never answers
    (a firewall, a proxy): load_dataset's first request, retried by huggingface-hub at 60 s each,
    held evaluate and score for over 5 minutes before the one line (with no network at all, ~24 s).
    Now a first ask with HF_HUB_ETAG_TIMEOUT (1 s here) says so at once, and the copy an earlier
    download left in the Hugging Face cache is read as offline, as load_dataset's own fallback did."""
    import time
    if cached:
        rows = read_records(data_file("gsm8k"))[:3]
        hub_dataset_cache(tmp_path / "hf" / "hub", "openai/gsm8k",
                          {"main/test-00000-of-00001.parquet": parquet_file(rows, tmp_path)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "TRANSFORMERS_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_ETAG_TIMEOUT="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", SILENT_HUB], capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a hub that does not answer held the dataset's download for 60 s")
    took = time.monotonic() - start
    if cached:
        assert proc.returncode == 0 and proc.stdout == f"3 {load_samples('gsm8k', data_file('gsm8k'))[0].answer}\n", proc
    else:
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr  # sys.exit's one line
        assert proc.stderr.startswith("error: no local copy of gsm8k: pass --data_file path/to/gsm8k/test.jsonl "), proc.stderr
        assert "[the Hugging Face hub at http://127.0.0.1:" in proc.stderr
        assert ("did not answer (ReadTimeout; HF_HUB_ETAG_TIMEOUT=1 s): openai/gsm8k is not in the Hugging Face cache: "
                "no snapshot of main in") in proc.stderr, proc.stderr
    assert took < 30, took  # the interpreter and imports included, on a busy machine


# ------------------------------------------------------------------- oracle


@pytest.mark.parametrize("key", ["gsm8k", "minerva_math", "mmlu_redux"])
def test_oracle_text_datasets_full(key):
    dataset = FILES[key][0]
    result = run_oracle(dataset, str(data_file(key)))
    assert result["n"] == FILES[key][2]
    assert result["failures"] == [] and result["accuracy"] == 1.0


def test_oracle_mmlu_all_rows():
    samples = load_samples("mmlu", data_file("mmlu_redux"), include_all_mmlu=True)
    assert all(score_sample("mmlu", oracle_prediction("mmlu", s), s)[0] for s in samples)


def _subset(samples, n):
    fast = [s for s in samples if s.id not in SLOW_IDS]
    step = max(1, len(fast) // n)
    return fast[::step][:n]


@pytest.mark.parametrize("key, n", [("humaneval_plus", 15), ("mbpp_plus", 15), ("humaneval", 10)])
def test_oracle_code_subset(key, n):
    dataset = FILES[key][0]
    samples = _subset(load_samples(dataset, data_file(key)), n)
    result = run_oracle(dataset, str(data_file(key)), samples=samples, workers=2)
    assert result["n"] == n
    assert result["failures"] == [] and result["accuracy"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("key", CODE_FILES)
def test_oracle_code_full(key, request):
    if not run_slow(request):
        pytest.skip("full code oracle takes minutes: run with -m slow or MINITFLOW_SLOW=1")
    dataset, _, count = FILES[key]
    result = run_oracle(dataset, str(data_file(key)), workers=2)
    assert result["n"] == count
    assert result["failures"] == [] and result["accuracy"] == 1.0
