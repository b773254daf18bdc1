"""Make tests/data/golden-official-textmas/golden.json: the official release's textmas, each agent's
prompt and new token ids, on golden-small with agents that stop early.

Needs a checkout of the official release (github.com/BWR-hhh/TFlow) named by
MINITFLOW_OFFICIAL_TFLOW, with its requirements (transformers, einops, accelerate); the suite does not
run this. The questions are the official loaders' (../golden-official-styles/make_golden.py's stand-ins
for `datasets.load_dataset`). The model is golden-small with EOS in generation_config.json: its own
<|im_end|> (never emitted) and four ordinary tokens that it often emits, so that senders and
receivers stop early, some at their first token (the official decode keeps an ordinary EOS token in
the text it hands on). TextMAS senders are cut to SENDER_NEW tokens (official constant 1024), the
receiver to NEW. Greedy, float32, CPU, one question per `solve` call. `calls` per row (A, B, C):
each `generate` call's prompt (length and sha256 of its JSON list of ids) and its new token ids;
`texts`: the official conversation log's texts; `token_usage` the official one.
"""
import hashlib, importlib.util, json, os, tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("styles", HERE.parent / "golden-official-styles" / "make_golden.py")
styles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(styles)  # puts the official checkout on sys.path; its main() does not run
import src.methods.textmas as off_textmas  # noqa: E402
from src.configs import get_config  # noqa: E402
from src.methods import build_method  # noqa: E402

NEW, SENDER_NEW = 48, 64
EOS = [151645, 108736, 39051, 137906, 104455]
ROWS = {"gsm8k": [0, 8], "minerva_math": [1, 4], "mmlu": [2, 6], "humanevalplus": [4, 5], "mbppplus": [1, 7]}


def digest(ids):
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def main():
    d = Path(tempfile.mkdtemp(prefix="golden-eos-"))
    for f in (styles.GOLD / "model").iterdir():
        if f.name != "generation_config.json":
            (d / f.name).symlink_to(f)
    gen = json.loads((styles.GOLD / "model" / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": EOS}))
    off_textmas._SENDER_MAX_NEW_TOKENS = SENDER_NEW
    calls, rows = [], []
    for style, indices in ROWS.items():
        questions = styles.official_questions(style)
        cfg = get_config("textmas")
        cfg["data"]["dataset"] = style
        cfg["model"].update(name=str(d), dtype="float32", do_sample=False, device_map=None,
                            max_new_tokens_by_dataset={style: NEW})
        m = build_method(cfg)
        m.setup()
        real = m.agents[0].model.generate

        def generate(*a, **k):
            out = real(*a, **k)
            n = k["input_ids"].shape[-1]
            calls.append({"prompt_len": n, "prompt_sha256": digest([int(t) for t in k["input_ids"][0]]),
                          "new": [int(t) for t in out[0, n:]]})
            return out
        m.agents[0].model.generate = generate
        for i in indices:
            calls.clear()
            out = m.solve(questions[i])
            rows.append({"style": style, "index": i, "question": questions[i], "calls": calls[:],
                         "texts": [e["text"] for e in out["metadata"]["conversation_log"]], "answer": out["answer"],
                         "token_usage": out["metadata"]["token_usage"]})
    out = {"_about": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
           "official": {"repo": "github.com/BWR-hhh/TFlow", "commit": os.environ.get("OFFICIAL_COMMIT", "")},
           "eos_token_id": EOS, "max_new_tokens": NEW, "sender_max_new_tokens": SENDER_NEW, "rows": rows}
    Path(os.environ.get("OUT", HERE / "golden.json")).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n",
                                                                  encoding="utf-8")


if __name__ == "__main__":
    main()
