"""`python -m minitflow.generate`: answer questions with baseline, textmas, tflow or latentmas.

A superset of the official `infer.py`: one question (--question, --input_file text, stdin)
or many (--input_file a .jsonl, one {"question": ..., optional "context": ...} per line,
batched with --batch_size). `context` is private to the senders (textmas, tflow, latentmas); a
row's "sender_question" is what they read instead, as in train's rows.
--n_samples K samples K answers per question (run_method's `samples`: what does not sample runs
once): each printed, and each a result of its own with its `sample` index, question-major.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minitflow.errors import Parser, UserError, run_cli, stop_in_one_line_at_start
stop_in_one_line_at_start(__name__)  # run as `python -m`: a Ctrl-C in the imports below is one line too

from minitflow.files import check_output_file, decode_utf8, json_rows, read_text, write_json, write_text
from minitflow.flags import add_model_args
from minitflow.tflow import prompts


def _rows_file(input_file: str | Path | None) -> bool:
    """A .jsonl --input_file: one question per row, and a list of results for it."""
    return input_file is not None and Path(input_file).suffix.lower() == ".jsonl"


def read_inputs(args: argparse.Namespace) -> list[dict]:
    """Questions from --question, --input_file (text or .jsonl, split on "\n" only) or stdin."""
    if args.question is not None and args.input_file is not None:  # one of them would be ignored
        raise UserError("pass either --question or --input_file, not both")
    if args.question is not None:
        rows = [{"question": args.question, "context": args.context}]
    elif args.input_file is not None:
        path = Path(args.input_file)
        if path.suffix.lower() == ".json":  # read as text, its JSON would be one question, answered without a word
            raise UserError(f"--input_file {path}: give questions as .jsonl (one {{\"question\": ...}} per line) "
                            "or a plain text file (one question)")
        if _rows_file(path) and getattr(args, "context", None) is not None:  # rows carry their own
            raise UserError(f"--context goes with --question or a text file; {path} gives each row's "
                            "\"context\" itself")
        text = read_text(path, "input file")
        if _rows_file(path):
            rows = []
            for n, row in json_rows(text, str(path)):
                row = {"question": row} if isinstance(row, str) else row
                if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                    raise UserError(f"{path}:{n} needs a \"question\" string")
                if not row["question"].strip():
                    raise UserError(f"{path}:{n}: the question is empty")
                # what its senders read, as train reads the row: a "sender_question" was ignored unsaid
                sq = prompts.sender_text(row, row["question"].strip(), f"{path}:{n}")
                rows.append({**row, "sender_question": sq})
        else:
            rows = [{"question": text, "context": args.context}]
    elif not sys.stdin.isatty():
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        rows = [{"question": decode_utf8(data, "stdin"), "context": args.context}]
    else:
        rows = []
    rows = [{**r, "question": r["question"].strip()} for r in rows]
    if not rows or any(not r["question"] for r in rows):
        if args.question is None and args.input_file is not None:  # not "use --input_file": it was used
            raise UserError(f"no question given: --input_file {args.input_file} holds none")
        if args.question is not None:  # not "use --question": it was used, with nothing but spaces
            raise UserError("no question given: --question is empty")
        if rows:  # not "use stdin": it was read, with nothing but spaces
            raise UserError("no question given: stdin is empty (or pass --question or --input_file)")
        raise UserError("no question given: use --question, --input_file or stdin")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m minitflow.generate", description=__doc__.split("\n")[0])
    p.add_argument("--question", default=None, help="one question (without it and --input_file: stdin)")
    p.add_argument("--input_file", default=None, help="a text file (one question) or .jsonl (many)")
    p.add_argument("--context", default=None, help="private context that only the senders read")
    p.add_argument("--output", default=None,
                   help="write a JSON result: one object for one question (and one answer), else a list; an "
                   "--output ending in .jsonl gets one result per line")
    p.add_argument("--n_samples", type=int, default=1,
                   help="sampled answers per question, K results each (default: %(default)s; use a --temperature "
                   "above 0)")
    add_model_args(p)
    args = p.parse_args(argv)
    # the model's modules (torch: seconds), now that the flags are parsed: --help and a mistyped flag have
    # answered at once
    from minitflow.cli import (check_model_args, check_n_samples, check_questions_fit, load_for, method_options,
                               model_and_checkpoint, model_dir_for, plan_load, sampling_from)
    from minitflow.model.weights import model_files
    from minitflow.tflow.methods import run_method
    check_model_args(args)
    check_n_samples(args.n_samples)
    rows = read_inputs(args)  # before the model is resolved: a hub id is downloaded there
    model_dir = model_dir_for(args)  # once: everything below reads this folder
    if args.output is not None:  # before loading anything: a bad path must not cost a whole generation
        # nor be a file the run reads: the model's weights or config, the checkpoint (the demo's are the package's)
        checkpoint = model_and_checkpoint(args)[1]
        check_output_file(args.output, "--output", inputs={"--input_file": args.input_file, "--checkpoint": checkpoint,
                                                           **model_files(model_dir)})
    sampling = sampling_from(args, model_dir)
    check_n_samples(args.n_samples, sampling)
    k = args.n_samples
    questions = [r["question"] for r in rows]
    senders = [r.get("sender_question") or prompts.with_context(r.get("context"), r["question"]) for r in rows]
    fits = check_questions_fit(model_dir, questions, sampling.max_new_tokens,
                               [f"question {i + 1}" for i in range(len(questions))], method=args.method,
                               style=args.dataset, sender_questions=senders, options=method_options(args))
    llm, generator, _, _ = load_for(args, plan_load(args, model_dir), positions=[f for f in fits for _ in range(k)])
    results = run_method(args.method, llm, questions, style=args.dataset, sampling=sampling, generator=generator,
                         batch_size=args.batch_size, refill_share=args.refill_share,
                         sender_questions=senders if senders != questions else None,
                         **({"samples": k} if k > 1 else {}), **method_options(args))
    payload = [{"method": args.method, "dataset_prompt": prompts.resolve_style(args.dataset), "question": r.question,
                **({"sample": r.sample} if k > 1 else {}), "answer": r.answer, "metadata": r.metadata()}
               for r in results]
    # the file first: stdout's reader gone (`| head -1`) ends the printing, and must not lose the run
    if args.output is not None and _rows_file(args.output):  # JSON Lines, as the name says: it held one indented list
        write_text(args.output, "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in payload))
    elif args.output is not None:
        write_json(args.output, payload if _rows_file(args.input_file) or k > 1 else payload[0], indent=2)
    for item in payload:
        print(item["answer"])
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
