"""Make tests/data/golden-official-styles/golden.json: the official release's baseline, textmas
and tflow on ../shared/reference/golden-small for every dataset prompt style.

Needs a checkout of the official release (github.com/BWR-hhh/TFlow) named by
MINITFLOW_OFFICIAL_TFLOW, with its requirements (transformers, einops, accelerate); the
suite does not run this. The questions are the official loaders' own, fed the local copies in
../shared/data through a stand-in for `datasets.load_dataset` (MBPP+: the HF dataset's
`test_list` is not in evalplus' file, so those questions are minitflow's, checked against the
official layout in tests/test_eval_data.py). The official generator is hard-wired to Qwen3-4B's
dimensions: `_PG_ARCH` is set from the fixture's `pg_arch`, and the generator runs in float32
like everything else. TextMAS senders are cut to SENDER_NEW tokens (official constant 1024)
except in the rows marked sender_max_new_tokens 1024. Greedy (do_sample False), CPU, one
question per `solve` call. `calls`: the new token ids of each `generate` call, in order
(textmas: A, B, C).
"""
import gzip, hashlib, json, os, sys
from pathlib import Path

OFF = Path(os.environ["MINITFLOW_OFFICIAL_TFLOW"])
SHARED = Path(os.environ.get("MINITFLOW_SHARED") or Path(__file__).resolve().parents[4] / "shared")
sys.path.insert(0, str(OFF))
import torch

torch.set_num_threads(1)
import src.data.datasets as off_data
import src.methods.textmas as off_textmas
import src.methods.tflow as off_tflow
from src.configs import get_config
from src.methods import build_method

GOLD = SHARED / "reference" / "golden-small"
NEW, SENDER_NEW, PER = 24, 32, 2
FILES = {"gsm8k": "gsm8k/test.jsonl", "minerva_math": "minerva_math/test.jsonl", "mmlu": "mmlu_redux/test.jsonl",
         "humanevalplus": "humaneval_plus/HumanEvalPlus-v0.1.10.jsonl.gz", "mbppplus": "mbpp_plus/MbppPlus-v0.2.0.jsonl"}


def records(style):
    path = SHARED / "data" / FILES[style]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def official_questions(style):
    if style == "mbppplus":
        from minitflow.eval.data import load_samples
        return [s.question for s in load_samples("mbpp_plus", SHARED / "data" / FILES[style], max_samples=PER)]
    rows = records(style)
    off_data.load_dataset = lambda *a, **k: rows
    import datasets
    datasets.get_dataset_config_names = lambda *a, **k: ["all"]
    datasets.concatenate_datasets = lambda parts: [r for p in parts for r in p]
    return [r["question"] for r in off_data.load_dataset_for_eval(style, max_samples=PER)]


calls = []


def spy(model):
    real = model.generate

    def generate(*a, **k):
        out = real(*a, **k)
        n = k["input_ids"].shape[-1]
        calls.append([int(t) for t in out[0, n:]])
        return out
    model.generate = generate


def main():
    ck = torch.load(GOLD / "tflow.pt", map_location="cpu", weights_only=False)
    off_tflow._PG_ARCH = dict(ck["pg_arch"])
    off_tflow._PG_TORCH_DTYPE = torch.float32
    rows = []
    for style in FILES:
        questions = official_questions(style)
        for method in ("baseline", "textmas", "tflow"):
            for sender_new in ([SENDER_NEW, 1024] if method == "textmas" and style == "gsm8k" else [SENDER_NEW]):
                off_textmas._SENDER_MAX_NEW_TOKENS = sender_new
                cfg = get_config(method)
                cfg["method"] = method
                cfg["data"]["dataset"] = style
                cfg["model"].update(name=str(GOLD / "model"), dtype="float32", do_sample=False, device_map=None,
                                    max_new_tokens_by_dataset={style: NEW})
                cfg["method_config"].setdefault("training", {})["eval_checkpoint"] = str(GOLD / "tflow.pt")
                m = build_method(cfg)
                m.setup()
                spy(m.agents[0].model if hasattr(m, "agents") else m.agent.model)
                for q in questions[:1] if sender_new == 1024 else questions:
                    calls.clear()
                    out = m.solve(q)
                    usage = out["metadata"]["token_usage"]
                    row = {"style": style, "method": method, "question": q, "calls": calls[:],
                           "answer": out["answer"], "token_usage": usage}
                    if method == "textmas":
                        row["sender_max_new_tokens"] = sender_new
                    rows.append(row)
                    print(style, method, [len(c) for c in calls], usage["total_tokens"], flush=True)
    about = __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
    out = {"_about": about, "official_commit": os.environ.get("OFFICIAL_COMMIT", ""), "max_new_tokens": NEW,
           "dtype": "float32", "rows": rows}
    Path(os.environ.get("OUT", Path(__file__).with_name("golden.json"))).write_text(
        json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
