"""Make tests/data/golden-official-styles/golden.json: the official release's baseline, textmas
and tflow on ../shared/reference/golden-small for every dataset prompt style.

Needs a checkout of the official release (github.com/BWR-hhh/TFlow) named by
MINITFLOW_OFFICIAL_TFLOW, with its requirements (transformers, einops, accelerate); the
suite does not run this. The questions are the official loaders' own, fed the local copies in
../shared/data through a stand-in for `datasets.load_dataset` (MBPP+: the official loader reads
the HF dataset's `prompt` and `test_list`, which evalplus' file lacks; they are rebuilt from it
by minitflow.eval.data.split_mbpp_prompt / mbpp_test_list and formatted by the official loader;
MMLU-Redux: `error_type` is the file's `error_type_norm`, the HF dataset's spelling, which the
official loader's `no_correct_answer` filter expects). `official.questions`: the count and
sha256 of each loader's whole question list (JSON).
The first PER questions of each loader, plus EXTRA: questions found by a scan of the shared
data where an agent emits an added token that the official decode drops from its text
(checked here). The official generator is hard-wired to Qwen3-4B's dimensions: `_PG_ARCH` is
set from the fixture's `pg_arch`, and the generator runs in float32 like everything else.
TextMAS senders are cut to SENDER_NEW tokens (official constant 1024) except in the rows
marked sender_max_new_tokens 1024. Greedy (do_sample False), CPU, one question per `solve`
call, every row the same at torch threads 1, 2, 3 and 4 (checked here). `calls`: the new
token ids of each `generate` call, in order (textmas: A, B, C); `index`: the question's
place in its loader's list; `truncated`: the official truncated_by_max_new_tokens. Rows
with `model` "eos" ran on golden-small's model with `eos_variant` in its
generation_config.json: Qwen3-4B lists a second EOS id (<|endoftext|>), golden-small emits
neither of its own, and the EXTRA questions emit this one: agents stop early.
"""
import gzip, hashlib, json, os, sys, tempfile
from pathlib import Path

OFF = Path(os.environ["MINITFLOW_OFFICIAL_TFLOW"])
SHARED = Path(os.environ.get("MINITFLOW_SHARED") or Path(__file__).resolve().parents[4] / "shared")
sys.path.insert(0, str(OFF))
import torch
import transformers

import src.data.datasets as off_data
import src.methods.textmas as off_textmas
import src.methods.tflow as off_tflow
from src.configs import get_config
from src.methods import build_method

GOLD = SHARED / "reference" / "golden-small"
NEW, SENDER_NEW, PER, THREADS = 24, 32, 2, (1, 2, 3, 4)
OFFICIAL_SENDER_NEW = off_textmas._SENDER_MAX_NEW_TOKENS
FILES = {"gsm8k": "gsm8k/test.jsonl", "minerva_math": "minerva_math/test.jsonl", "mmlu": "mmlu_redux/test.jsonl",
         "humanevalplus": "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz", "mbppplus": "mbpp_plus/MbppPlus-v0.2.0.jsonl"}
# (style, method, loader index): an agent there emits <tool_response> (151665) within the budget
EXTRA = [("gsm8k", "textmas", 125), ("mmlu", "baseline", 325)]
ADDED = range(151643, 151669)  # the tokenizer's added tokens, all special: decode drops them
# golden-small never emits its EOS (<|im_end|>): a copy whose generation_config lists a second EOS
# id, as Qwen3-4B's lists <|endoftext|>, one that the EXTRA questions do emit: they stop early
EOS_VARIANT = {"eos_token_id": [151645, 151665]}


def records(style):
    path = SHARED / "data" / FILES[style]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if style == "mmlu":  # the HF dataset's labels: the CSVs' raw spellings ("No Correct Answer"), normalised
        rows = [dict(r, error_type=r["error_type_norm"]) for r in rows]
    if style == "mbppplus":  # the HF dataset's fields, rebuilt from evalplus' file
        from minitflow.eval.data import mbpp_test_list, split_mbpp_prompt
        rows = [{"prompt": split_mbpp_prompt(r["prompt"])[0], "test_list": mbpp_test_list(r["prompt"], r["assertion"]),
                 "test": r["assertion"]} for r in rows]
    return rows


def official_questions(style):
    """The official loader's whole question list for `style`, read from the local copy."""
    rows = records(style)
    off_data.load_dataset = lambda *a, **k: rows
    import datasets
    datasets.get_dataset_config_names = lambda *a, **k: ["all"]
    datasets.concatenate_datasets = lambda parts: [r for p in parts for r in p]
    return [r["question"] for r in off_data.load_dataset_for_eval(style)]


calls = []


def spy(model):
    real = model.generate

    def generate(*a, **k):
        out = real(*a, **k)
        n = k["input_ids"].shape[-1]
        calls.append([int(t) for t in out[0, n:]])
        return out
    model.generate = generate


def eos_variant_dir() -> Path:
    """golden-small's model with EOS_VARIANT in its generation_config.json (the rest linked)."""
    d = Path(tempfile.mkdtemp(prefix="golden-eos-"))
    for f in (GOLD / "model").iterdir():
        if f.name != "generation_config.json":
            (d / f.name).symlink_to(f)
    gen = json.loads((GOLD / "model" / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**gen, **EOS_VARIANT}))
    return d


def plan(lists):
    """(style, method, sender budget or None, [(index, question)], model variant) per official
    method instance."""
    out = [(s, m, SENDER_NEW if m == "textmas" else None, [(i, lists[s][i])], "eos") for s, m, i in EXTRA]
    for style, questions in lists.items():
        for method in ("baseline", "textmas", "tflow"):
            idx = list(range(PER)) + sorted(i for s, m, i in EXTRA if (s, m) == (style, method))
            for sender_new in [SENDER_NEW] + [OFFICIAL_SENDER_NEW] * (method == "textmas" and style == "gsm8k"):
                use = idx[:1] if sender_new == OFFICIAL_SENDER_NEW else idx
                out.append((style, method, sender_new if method == "textmas" else None,
                            [(i, questions[i]) for i in use], None))
    return out


def run(jobs, eos_dir):
    rows = []
    for style, method, sender_new, questions, variant in jobs:
        off_textmas._SENDER_MAX_NEW_TOKENS = sender_new or OFFICIAL_SENDER_NEW
        cfg = get_config(method)
        cfg["method"] = method
        cfg["data"]["dataset"] = style
        cfg["model"].update(name=str(eos_dir if variant else GOLD / "model"), dtype="float32", do_sample=False,
                            device_map=None, max_new_tokens_by_dataset={style: NEW})
        cfg["method_config"].setdefault("training", {})["eval_checkpoint"] = str(GOLD / "tflow.pt")
        m = build_method(cfg)
        m.setup()
        spy(m.agents[0].model if hasattr(m, "agents") else m.agent.model)
        for index, q in questions:
            calls.clear()
            out = m.solve(q)
            row = {"style": style, "method": method, "index": index, "question": q, "calls": calls[:],
                   "answer": out["answer"], "token_usage": out["metadata"]["token_usage"],
                   "truncated": out["metadata"]["truncated_by_max_new_tokens"]}
            if sender_new is not None:
                row["sender_max_new_tokens"] = sender_new
            if variant:
                row["model"] = variant
            rows.append(row)
            print(torch.get_num_threads(), variant, style, method, index, [len(c) for c in calls], flush=True)
    return rows


def main():
    ck = torch.load(GOLD / "tflow.pt", map_location="cpu", weights_only=False)
    off_tflow._PG_ARCH = dict(ck["pg_arch"])
    off_tflow._PG_TORCH_DTYPE = torch.float32
    lists = {style: official_questions(style) for style in FILES}
    jobs, eos_dir = plan(lists), eos_variant_dir()
    torch.set_num_threads(THREADS[0])
    rows = run(jobs, eos_dir)
    for style, method, index in EXTRA:  # the scan's finding holds for the official single-sample run
        row, eos = sorted((r for r in rows if (r["style"], r["method"], r["index"]) == (style, method, index)),
                          key=lambda r: "model" in r)
        assert any(t in ADDED for c in row["calls"] for t in c), (style, method, index)
        assert any(c[-1] in EOS_VARIANT["eos_token_id"] and len(c) < len(o) for c, o in zip(eos["calls"], row["calls"]))
    for t in THREADS[1:]:
        torch.set_num_threads(t)
        assert run(jobs, eos_dir) == rows, f"rows differ at {t} torch threads: replace the knife-edge ones"
    about = __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
    out = {"_about": about,
           "official": {"repo": "github.com/BWR-hhh/TFlow", "commit": os.environ.get("OFFICIAL_COMMIT", ""),
                        "transformers": transformers.__version__, "torch": torch.__version__,
                        "sender_max_new_tokens": OFFICIAL_SENDER_NEW,
                        "questions": {style: {"count": len(q), "sha256": hashlib.sha256(
                            json.dumps(q, ensure_ascii=False).encode()).hexdigest()} for style, q in lists.items()}},
           "max_new_tokens": NEW, "dtype": "float32", "eos_variant": EOS_VARIANT,
           "_checked": "official rows identical at torch threads 1, 2, 3 and 4 (this script); minitflow "
                       "reproduces every row at torch threads 1, 2, 3 and 4",
           "rows": rows}
    Path(os.environ.get("OUT", Path(__file__).with_name("golden.json"))).write_text(
        json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
