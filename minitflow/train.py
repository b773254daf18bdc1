"""Train a TFlow ParameterGenerator on a frozen Qwen3 backbone.

    python -m minitflow.train --model DIR_OR_ID --train train.jsonl --eval eval.jsonl --out tflow.pt

Rows are JSONL `{"question", "answer", optional "sender_question"}` (what the senders read;
default the question, or `context + " " + question` when the row has a private "context", as
`generate --input_file` takes it). Per step, for a batch:

1. the senders (agents A and B of the `--dataset` style's official prompts) read
   `sender_question` (default: the question) in one prefill without gradients; their L+1
   hidden states over it are the condition (`tflow.condition.sender_states`, as at inference);
2. the generator (LayerAggregator + ParameterGenerator, the only trainable part) turns the
   condition into LoRA factors, fused for the receiver exactly as at inference (0.01 output
   scale, lora_scale = alpha / rank, sender weights 0.5 / 0.5, `build_lora`);
3. the receiver (agent C's prompt + the question) runs the cache-free forward with those factors
   (`lora=`), and the loss is the cross-entropy of the answer tokens followed by `<|im_end|>`.

The checkpoint is the official format plus `pg_arch` (`tflow.checkpoint.save_checkpoint`), so
`generate --checkpoint` loads it as is; the optimiser, scheduler and step live in a sidecar
`<out>.state.pt` for `--resume`. Ctrl-C, SIGTERM or SIGHUP finishes the step under way, saves it
and exits 130 / 143 / 129 naming the `--resume` to continue with (a second one stops at once, unsaved);
a stderr whose reader has gone (`2>&1 | head`) ends the run the same way, saved, with exit 141.
`--condition zero` is the ablation in which the generator sees
a constant zero condition: the same architecture, but a static LoRA with no per-question
information.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from minitflow.errors import Parser, UserError, run_cli, stop_in_one_line_at_start
stop_in_one_line_at_start(__name__)  # run as `python -m`: a Ctrl-C in the imports below is one line too

from minitflow.model.config import DTYPES
from minitflow.tflow import prompts
from minitflow.tflow.train_config import RESUME_FIXED, TrainConfig


def _parse_arch(text: str) -> dict:
    """'d_model=256,head_dim=64' or a JSON object -> {name: int}. A name given twice is refused:
    one of the two values would be dropped without a word. The names and values are train's to check
    (check_config: check_pg_arch), before any model loads."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        objects: list[list] = []  # each object's pairs as parsed, the outermost last
        try:
            json.loads(text, object_pairs_hook=lambda kv: objects.append(kv) or dict(kv))
        except ValueError:  # JSONDecodeError, or an integer past the digit limit
            raise UserError(f"--pg_arch: not a JSON object: {text}") from None
        pairs = objects[-1]
    else:
        pairs = []
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not value.strip().lstrip("-").isdecimal():  # isdigit: "²" too, which int() refuses
                raise UserError(f"--pg_arch: expected name=integer pairs, got {part!r}")
            pairs.append((key.strip(), int(value)))
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise UserError(f"--pg_arch: {key} is given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value
    return out


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Show a flag's default, except where it has none to show (a required flag's None, an
    unset --eval, --pg_arch's empty string): "(default: None)" there told the user nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, ""):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    d = TrainConfig(model="", train="", out="")
    p = Parser(prog="python -m minitflow.train", description=__doc__.split("\n\n")[0],
               formatter_class=_DefaultsHelp)
    p.add_argument("--model", required=True, help="HF-format Qwen3 directory or hub id (frozen backbone)")
    p.add_argument("--train", required=True,
                   help="training rows (JSONL: question, answer, optional context or sender_question)")
    p.add_argument("--eval", help="held-out rows, same format (loss + greedy exact match every --eval_every steps)")
    p.add_argument("--out", required=True, help="checkpoint to write (official format + pg_arch); "
                                                "the optimiser state goes to OUT.state.pt")
    p.add_argument("--dataset", default=d.dataset, help="prompt style: " + ", ".join(prompts.STYLES))
    p.add_argument("--init", default=d.init, help="'random' (a new generator whose LoRA starts at zero, B factors 0 and A "
                   "random, as the official training init: the receiver starts as the frozen backbone) or a checkpoint "
                   "to fine-tune")
    p.add_argument("--pg_arch", default="", help="generator dimensions for --init random, e.g. d_model=256,head_dim=64 "
                   "(default: the official ones)")
    p.add_argument("--condition", choices=("sender", "zero"), default=d.condition,
                   help="zero: ablation where the generator sees a constant zero condition")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="training rows per micro-batch")
    p.add_argument("--grad_accum", type=int, default=d.grad_accum,
                   help="micro-batches per optimiser step (its loss is the mean over all their answer tokens)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate")
    p.add_argument("--weight_decay", type=float, default=d.weight_decay,
                   help="AdamW weight decay (on weight matrices only)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps before the cosine decay")
    p.add_argument("--clip", type=float, default=d.clip, help="gradient-norm clipping")
    p.add_argument("--eval_every", type=int, default=d.eval_every, help="optimiser steps between evaluations")
    p.add_argument("--save_every", type=int, default=d.save_every,
                   help="optimiser steps between saves of OUT and its state (a crash loses the steps since the "
                        "last; Ctrl-C, SIGTERM or SIGHUP saves the step it lands in; default: every --eval_every steps); "
                        "the last step is always saved")
    p.add_argument("--eval_size", type=int, default=d.eval_size, help="use the first N held-out rows")
    p.add_argument("--eval_batch_size", type=int, default=d.eval_batch_size,
                   help="held-out questions in flight at an evaluation")
    p.add_argument("--eval_max_new_tokens", type=int, default=d.eval_max_new_tokens,
                   help="new tokens of each greedy answer at an evaluation")
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation and data order")
    p.add_argument("--resume", help="a checkpoint written by this trainer (with its .state.pt) to continue, with "
                                    f"the same {', '.join(f'--{n}' for n in RESUME_FIXED)} and training rows (a larger "
                                    "--steps extends its schedule from the step reached)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (auto: cuda when available)")
    p.add_argument("--dtype", default=d.dtype, help=f"backbone dtype: auto (bfloat16 on a GPU, float32 on the CPU) or "
                                                    f"one of {', '.join(DTYPES)}")
    p.add_argument("--checkpoint_layers", action=argparse.BooleanOptionalAction, default=d.checkpoint_layers,
                   help="recompute receiver layers in the backward pass (saves memory, costs ~1/3 more compute)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an --out (and its state) that an earlier run wrote; without it that is refused")
    a = p.parse_args(argv)
    return TrainConfig(model=a.model, train=a.train, out=a.out, eval=a.eval, dataset=a.dataset, init=a.init,
                       pg_arch=_parse_arch(a.pg_arch), condition=a.condition, steps=a.steps,
                       batch_size=a.batch_size, grad_accum=a.grad_accum, lr=a.lr, weight_decay=a.weight_decay,
                       warmup=a.warmup, clip=a.clip, eval_every=a.eval_every, save_every=a.save_every,
                       eval_size=a.eval_size, eval_batch_size=a.eval_batch_size, eval_max_new_tokens=a.eval_max_new_tokens,
                       seed=a.seed, resume=a.resume, device=a.device, dtype=a.dtype,
                       checkpoint_layers=a.checkpoint_layers, progress=a.progress, overwrite=a.overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    # the trainer's modules (torch: seconds), now that the flags are parsed: --help and a mistyped flag have
    # answered at once
    from minitflow.tflow.training import Interrupted, train
    try:
        result = train(cfg)
    except Interrupted as e:  # saved (or, at a second signal, not): the message says which, and how to go on
        try:
            print(e, file=sys.stderr)
        except OSError:  # stderr gone (what stopped the run, or `| tee` that the Ctrl-C ended): the exit code says it
            pass
        return 128 + e.signum
    # the last record is of the step reached: train records at --steps, and a --resume already there is refused
    print(json.dumps({"out": result["out"], **result["history"][-1]}))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
