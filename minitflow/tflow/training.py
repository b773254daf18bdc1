"""Training the TFlow generator on a frozen Qwen3 backbone: the library behind
`python -m minitflow.train` (minitflow/train.py, its flags and docs) and the demo builder.

Per step, for a batch: the senders read `sender_question` in one prefill without gradients
(`condition.sender_states`, all L+1 layers: the layer aggregator needs their gradients); the
generator turns that condition into LoRA factors fused exactly as at inference
(`methods.generated_lora`); the receiver runs the cache-free forward with them, and the loss is
the cross-entropy of the answer tokens followed by `<|im_end|>` (`answer_loss`). `train` is the
loop (AdamW, warm-up then cosine, clipping, evaluation, checkpoint + optimiser sidecar for
resume); `make_optimizer` is shared with the demo's backbone pre-training.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import os
import random
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from minitflow.engine.llm import LLM, resolve_device, resolve_dtype
from minitflow.engine.sampler import SamplingParams
from minitflow.errors import UserError, check_int, is_int
from minitflow.model.config import DTYPES
from minitflow.model.lora import LoraWeights
from minitflow.model.qwen3 import Capture, Qwen3Model
from minitflow.model.weights import model_files
from minitflow.tflow import prompts
from minitflow.files import check_output_file, json_rows, read_text
from minitflow.tflow.checkpoint import (TFlowGenerator, arch_for, check_pg_arch, load_checkpoint, save_checkpoint,
                                        seeded, torch_load)
from minitflow.tflow.condition import sender_states
from minitflow.tflow.train_config import RESUME_BACKBONE, RESUME_FIXED, TrainConfig
from minitflow.tflow.methods import generated_lora, positions_needed, run_method
from minitflow.tflow.prompts import sender_text

IGNORE = -100


# ---- data --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    sender_question: str  # what the senders read; the receiver sees only `question`


def read_examples(path: str | Path) -> list[Example]:
    path = Path(path)
    rows = []
    for n, row in json_rows(read_text(path, "examples file"), str(path)):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
            raise UserError(f"{path}:{n}: a row needs string fields \"question\" and \"answer\"")
        # stripped, as generate and evaluate read a question: a trailing "\n" trained (and the
        # held-out exact match ran) a receiver prompt that inference never builds
        question = row["question"].strip()
        if not question:  # as generate and evaluate refuse one
            raise UserError(f"{path}:{n}: the question is empty")
        sq = sender_text(row, question, f"{path}:{n}")  # as generate reads the row
        # a blank target trains the receiver to answer nothing (and as a held-out gold, a blank
        # greedy answer matched it)
        if not row["answer"].strip():
            raise UserError(f"{path}:{n}: the answer is empty")
        # a "\ud800" escape reads as a lone surrogate, which is no Unicode: rows_digest's UTF-8 was a
        # traceback, and the tokenizer's refusal named a character of a prompt, not the row
        for name, text in (("question", question), ("answer", row["answer"]), ("sender_question", sq)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise UserError(f"{path}:{n}: the {name} holds a lone surrogate (U+{ord(text[e.start]):04X}), "
                                "which is not valid Unicode") from None
        rows.append(Example(question, row["answer"], sq))
    if not rows:
        raise UserError(f"{path}: no examples")
    return rows


@dataclass
class Batch:
    """Right-padded prompt+answer ids, and per row the positions whose next token is an answer token."""

    input_ids: torch.Tensor  # (B, T)
    positions: torch.Tensor  # (B, T)
    starts: list[int]  # first position predicting an answer token
    ends: list[int]  # one past the last
    targets: torch.Tensor  # (B, S) answer tokens, IGNORE past each row's answer

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


def make_batch(llm: LLM, system: str | None, questions: Sequence[str], answers: Sequence[str],
               history: Sequence[Sequence[dict]] | None = None) -> Batch:
    """Chat prompt (system unless None, optional earlier turns, user question) + answer + `<|im_end|>`.

    The answer is tokenised on its own after the generation prompt: the tokens a greedy
    receiver has to produce one by one.
    """
    # <|im_end|> itself, not the tokenizer's eos token: a base model's is <|endoftext|>, and the
    # receiver's turn (the chat template's) ends with <|im_end|> whatever the eos token is
    eos = None if llm.tokenizer is None else llm.tokenizer.token_to_id("<|im_end|>")
    if eos is None:
        raise UserError("training needs the model's tokenizer.json with an <|im_end|> token")
    rows, spans = [], []
    for i, (q, a) in enumerate(zip(questions, answers)):
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + \
            [*(history[i] if history else []), {"role": "user", "content": q}]
        prompt = llm.chat_ids(msgs)
        target = llm.encode(a) + [eos]
        rows.append(prompt + target)
        spans.append((len(prompt) - 1, len(prompt) - 1 + len(target)))
    t = max(len(r) for r in rows)
    if t > llm.max_seq_len:
        raise UserError(f"a training sequence has {t} tokens, more than the model's {llm.max_seq_len} positions")
    s = max(e - b for b, e in spans)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    targets = torch.full((len(rows), s), IGNORE, dtype=torch.long)
    for i, (r, (b, e)) in enumerate(zip(rows, spans)):
        ids[i, :len(r)] = torch.tensor(r)
        targets[i, :e - b] = torch.tensor(r[b + 1:e + 1])
    dev = llm.device
    return Batch(ids.to(dev), torch.arange(t, device=dev)[None].expand(len(rows), t),
                 [b for b, _ in spans], [e for _, e in spans], targets.to(dev))


def answer_loss(model: Qwen3Model, batch: Batch, lora: LoraWeights | None = None,
                checkpoint_layers: bool = False) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens, through the model's cache-free forward.

    Logits are computed only where an answer token is predicted: the final hidden states are
    taken by the forward's `capture` hook (layer L = after the final norm), which spares the
    lm_head over the long prompt.
    """
    cap = Capture(layers=[model.cfg.num_hidden_layers], starts=batch.starts, ends=batch.ends)
    t = batch.input_ids.shape[1]
    model(batch.input_ids, batch.positions, None, t, lora=lora, capture=cap, need_logits=False,
          checkpoint_layers=checkpoint_layers)
    logits = model.lm_head(cap.hidden[:, 0])
    return F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)


# ---- the generator -----------------------------------------------------------------------

def init_for_training(gen: TFlowGenerator) -> TFlowGenerator:
    """Start from a zero LoRA, as the official `init_lora_projection_heads_training` does.

    proj_out_B = 0 makes every B factor zero, so the receiver starts exactly as the frozen
    backbone and the first gradients only grow B; proj_out_A ~ N(0, 0.02) keeps A random so
    those gradients are informative. cond_token_proj = 0 starts the condition tokens at zero
    (uniform pooling), with small random queries that learn to pick positions once it grows.
    Like nn.init, it draws from torch's global RNG (build_generator seeds it).
    """
    model = gen.parameter_generator.model
    with torch.no_grad():
        torch.nn.init.normal_(model.proj_out_A.weight, mean=0.0, std=0.02)
        torch.nn.init.zeros_(model.proj_out_A.bias)
        torch.nn.init.zeros_(model.proj_out_B.weight)
        torch.nn.init.zeros_(model.proj_out_B.bias)
        torch.nn.init.zeros_(model.cond_token_proj.weight)
        torch.nn.init.normal_(model.cond_token_query, mean=0.0, std=0.002)
    return gen


def zero_condition(gen: TFlowGenerator) -> TFlowGenerator:
    """The ablation: `hidden_in` fixed at zero, so the generator's condition is 0 for any input.

    The generator then emits one static LoRA for every question (attention over identical
    keys and values does not depend on the sequence length or mask). Because the ablation
    lives in the weights, its checkpoint runs unchanged through `generate --checkpoint`.
    """
    with torch.no_grad():
        gen.parameter_generator.hidden_in.weight.zero_()
        gen.parameter_generator.hidden_in.bias.zero_()
    gen.parameter_generator.hidden_in.requires_grad_(False)
    return gen


def trainable(gen: TFlowGenerator) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in gen.named_parameters() if p.requires_grad]


def condition(llm: LLM, style: str, sender_questions: Sequence[str], zero: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Senders' hidden states (no gradients), as normal tensors the generator can differentiate through.

    With `zero` the generator's input projection is zero anyway, so the senders' forward is
    skipped and a (2n, L+1, 1, H) zero tensor stands in for it.
    sender_states' tensors are the batch stacked outside inference mode, so they are used as
    they are: a clone here (2n x (L+1) x S x H: 0.45 GB in bf16 for 8 questions of 150 tokens at
    4B) bought nothing.
    """
    a_sys, b_sys, _ = prompts.tflow_agents(style)
    if zero:
        return torch.zeros(2 * len(sender_questions), llm.cfg.num_hidden_layers + 1, 1, llm.cfg.hidden_size,
                           device=llm.device), None
    hidden, mask, _, _ = sender_states(llm, [a_sys, b_sys], list(sender_questions))
    return hidden, mask


# ---- evaluation --------------------------------------------------------------------------

def answers_match(prediction: str, gold: str) -> bool:
    """Exact match after stripping; when the gold is `\\boxed{x}`, the boxed contents are compared."""
    from minitflow.eval.scoring import extract_boxed
    pred, want = prediction.strip(), gold.strip()
    if pred == want:
        return True
    gb = extract_boxed(want)
    return gb is not None and extract_boxed(pred) == gb


def batch_loss(llm: LLM, gen: TFlowGenerator, style: str, chunk: Sequence[Example], zero: bool = False,
               checkpoint_layers: bool = False) -> tuple[torch.Tensor, int]:
    """Senders -> generator -> receiver: the answer cross-entropy of one batch, and its token count."""
    hidden, mask = condition(llm, style, [e.sender_question for e in chunk], zero)
    batch = make_batch(llm, prompts.tflow_agents(style)[2], [e.question for e in chunk], [e.answer for e in chunk])
    with _autocast(llm):
        lora = generated_lora(llm, gen, hidden, mask, len(chunk))
        return answer_loss(llm.model, batch, lora, checkpoint_layers=checkpoint_layers), batch.n_targets


@torch.no_grad()
def eval_loss(llm: LLM, gen: TFlowGenerator, examples: Sequence[Example], style: str, zero: bool,
              batch_size: int) -> float:
    total, count = 0.0, 0
    for s in range(0, len(examples), batch_size):
        loss, n = batch_loss(llm, gen, style, examples[s:s + batch_size], zero)
        total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


def eval_accuracy(llm: LLM, gen: TFlowGenerator, examples: Sequence[Example], style: str, batch_size: int,
                  max_new_tokens: int) -> tuple[float, list[str]]:
    """Greedy generation through `run_method("tflow")`: exactly the inference path when `gen` is
    the generator as `generate --checkpoint` loads it (`as_loaded`)."""
    res = run_method("tflow", llm, [e.question for e in examples], style=style, generator=gen,
                     batch_size=batch_size, sender_questions=[e.sender_question for e in examples],
                     sampling=SamplingParams(max_new_tokens=max_new_tokens))
    hits = [answers_match(r.answer, e.answer) for r, e in zip(res, examples)]
    return sum(hits) / len(hits), [r.answer for r in res]


def as_loaded(gen: TFlowGenerator, dtype: torch.dtype) -> TFlowGenerator:
    """A frozen copy of `gen` as `load_checkpoint(..., dtype)` gives it back from its checkpoint
    (the parameter generator in the backbone's dtype, the layer aggregator in float32): what
    `generate --checkpoint` will run, so what an evaluation's exact match must run."""
    frozen = copy.deepcopy(gen).eval().requires_grad_(False)
    frozen.parameter_generator.to(dtype)
    return frozen


def autocast_dtype(dtype: torch.dtype) -> torch.dtype | None:
    """The dtype a training step's generator and receiver math autocasts to, on any device: a
    half-precision backbone's own (`generate --checkpoint` runs the parameter generator in it,
    `as_loaded`), and none (None) for a float32 one. It was bfloat16 on every CUDA run: --dtype
    float32 trained in bfloat16, and float16 trained a bfloat16 receiver, not the one it runs."""
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _autocast(llm: LLM):
    dtype = autocast_dtype(llm.dtype)
    return torch.autocast(llm.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


# ---- the loop ----------------------------------------------------------------------------

def lr_lambda(warmup: int, total: int):
    """Linear warm-up to 1, then cosine decay to 0 at `total`."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def make_optimizer(named: Sequence[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float,
                   warmup: int, steps: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (betas 0.9, 0.98) with `lr_lambda`'s schedule over `steps`; weight decay on the
    matrices only, not on vectors (norms, biases) nor on learned position embeddings."""
    decay = [p for n, p in named if p.dim() >= 2 and "pos" not in n]
    rest = [p for n, p in named if not (p.dim() >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, steps))


def batch_order(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless shuffled full batches (batch_size <= n), epoch after epoch; the same seed gives the
    same stream, so a resumed run replays it up to where it stopped."""
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for s in range(0, n - batch_size + 1, batch_size):
            yield order[s:s + batch_size]


def _state_path(out: str | Path) -> Path:
    return Path(str(out) + ".state.pt")


def build_generator(cfg: TrainConfig, llm: LLM, loaded: TFlowGenerator | None = None) -> TFlowGenerator:
    """The generator to train: `loaded` (cfg.init read already), cfg.init, or a random one."""
    if loaded is not None:
        gen = loaded
    elif cfg.init == "random":
        with seeded(cfg.seed):  # init_for_training draws on from the stream that built the modules
            gen = init_for_training(TFlowGenerator(arch_for(llm.cfg, cfg.pg_arch), llm.cfg))
    else:
        gen = load_checkpoint(cfg.init, llm.cfg)
    gen = gen.float().to(llm.device).train().requires_grad_(True)
    gen.parameter_generator.model.cond_proj.requires_grad_(False)  # unused by the official flags
    if cfg.condition == "zero":
        zero_condition(gen)
    return gen


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Every flag, the input files and the output paths, before any model is loaded: a bad
    value must not cost a model load or, worse, surface at the first save 200 steps in. Returns
    `cfg` with its numbers as plain int and float (a library caller's numpy ones)."""
    plain = _plain_fields(cfg)
    cfg = replace(cfg, **plain)
    plain |= _numbers(cfg)
    plain |= _combinations(cfg)
    _inputs(cfg)
    _outputs(cfg)
    return replace(cfg, **plain)


def _plain_fields(cfg: TrainConfig) -> dict[str, object]:
    """The path, str and bool fields with the types argparse gives the CLI's (a library caller's may lack them):
    returns the paths as str."""
    # a library caller's fields are not typed by argparse either: dataset=5 was an AttributeError, a Path
    # --resume too, and a Path elsewhere went into the state's config, which --resume (weights_only) could not
    # read back; overwrite="no" is true. Paths become str; the rest must have their type
    plain: dict[str, object] = {}
    for name in ("model", "train", "out", "eval", "init", "resume"):
        v = getattr(cfg, name)
        if not (isinstance(v, (str, os.PathLike)) or (v is None and name in ("eval", "resume"))):
            raise UserError(f"--{name} must be a path (str or os.PathLike), got {v!r}")
        plain[name] = None if v is None else os.fspath(v)
    for name in ("dataset", "condition", "dtype", "device"):
        v = getattr(cfg, name)
        if not (isinstance(v, str) or (v is None and name == "device")):
            raise UserError(f"--{name} must be a str, got {v!r}")
    for name in ("checkpoint_layers", "progress", "overwrite"):
        if not isinstance(getattr(cfg, name), bool):
            raise UserError(f"{name} must be True or False, got {getattr(cfg, name)!r}")
    if cfg.condition not in ("sender", "zero"):
        raise UserError(f"--condition must be sender or zero, got {cfg.condition!r}")
    return plain


def _numbers(cfg: TrainConfig) -> dict[str, object]:
    """The ints and floats in range, before the load that their errors followed: returns them plain (numpy's too)."""
    plain: dict[str, object] = {}
    # a library caller's TrainConfig is not typed by argparse: steps=2.5 ran 3 steps, eval_every=1.5
    # recorded at step 3 only, batch_size=2.5 and seed=1.5 were torch's or Python's TypeError once
    # the backbone had loaded; numpy numbers (seed np.int64 was torch's TypeError) are taken as
    # plain ones: saved in the state they made it a pickle that --resume refuses to load
    for name, low in (("steps", 1), ("batch_size", 1), ("grad_accum", 1), ("eval_every", 1), ("eval_size", 1),
                      ("eval_batch_size", 1), ("eval_max_new_tokens", 1), ("save_every", 1), ("warmup", 0)):
        v = getattr(cfg, name)
        if name == "save_every" and v is None:  # every --eval_every
            continue
        if not is_int(v):
            raise UserError(f"--{name} must be an integer, got {v!r}")
        if v < low:
            raise UserError(f"--{name} must be >= {low}, got {v}")
        plain[name] = int(v)
    # torch's seed range: 2^64 was a traceback; Python's random read -1 as 1
    if not (is_int(cfg.seed) and 0 <= cfg.seed < 1 << 64):
        raise UserError(f"--seed must be an integer in [0, 2^64), got {cfg.seed!r}")
    plain["seed"] = int(cfg.seed)
    for name, low, inclusive in (("lr", 0.0, False), ("weight_decay", 0.0, True), ("clip", 0.0, False)):
        v = getattr(cfg, name)
        # the optimiser works in float32: past its largest value (--lr 1e39) it was torch's traceback
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                and v <= torch.finfo(torch.float32).max and (v >= low if inclusive else v > low)):
            raise UserError(f"--{name} must be a finite float32 number {'>=' if inclusive else '>'} {low:g}, got {v!r}")
        plain[name] = float(v)
    return plain


def _combinations(cfg: TrainConfig) -> dict[str, object]:
    """The dtype, pg_arch and the flags that exclude each other, before the load: returns pg_arch checked."""
    if cfg.dtype != "auto" and cfg.dtype not in DTYPES:
        raise UserError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    pg_arch = check_pg_arch(cfg.pg_arch)  # None: no overrides (it was an AttributeError after the load)
    if cfg.resume and cfg.init != "random":  # the resumed run's generator is what continues
        raise UserError("pass either --resume or --init, not both (a resume continues its own generator)")
    if cfg.pg_arch and cfg.init != "random":
        raise UserError("--pg_arch applies to --init random only (a checkpoint carries its own)")
    return {"pg_arch": pg_arch}


def _inputs(cfg: TrainConfig) -> None:
    """What the run reads (--init's checkpoint, --resume's state, the dataset's style, the device), there now."""
    if cfg.init != "random" and Path(cfg.init).is_dir():  # "no such checkpoint" of a folder that is there
        raise UserError(f"--init {cfg.init} is a directory: pass the checkpoint file in it (or 'random')")
    if cfg.init != "random" and not Path(cfg.init).is_file():
        raise UserError(f"--init {cfg.init}: no such checkpoint (or pass 'random')")
    if cfg.resume and not _state_path(cfg.resume).is_file():
        if cfg.resume.endswith(".state.pt") and Path(cfg.resume).is_file():  # the sidecar named, not its checkpoint
            raise UserError(f"--resume {cfg.resume} is a training state: pass its checkpoint, --resume "
                            f"{cfg.resume.removesuffix('.state.pt')}")
        raise UserError(f"--resume {cfg.resume}: no training state {_state_path(cfg.resume).name} beside it")
    prompts.resolve_style(cfg.dataset)
    resolve_device(cfg.device)


def _outputs(cfg: TrainConfig) -> None:
    """--out and its state sidecar writable and no earlier run's: the first save comes only steps into the run."""
    # --init too: with --overwrite, the first save replaced the checkpoint the run started from; and
    # the backbone's files (`model/model.safetensors --overwrite` wrote the checkpoint over its weights,
    # and without --overwrite it was refused as "an earlier run's", offering --overwrite)
    model_dir = local_model_dir(cfg.model)
    backbone = {} if model_dir is None else model_files(model_dir)
    check_output_file(cfg.out, "--out", inputs={"--train": cfg.train, "--eval": cfg.eval,
                                                "--init": None if cfg.init == "random" else cfg.init, **backbone})
    check_output_file(_state_path(cfg.out), "--out's training state")
    if not cfg.overwrite and not (cfg.resume and Path(cfg.resume).resolve() == Path(cfg.out).resolve()):
        held = next((p for p in (Path(cfg.out), _state_path(cfg.out)) if p.exists()), None)
        if held is not None:  # a rerun with other flags replaced a trained checkpoint at its first save
            raise UserError(f"--out {cfg.out}: {held.name} exists (an earlier run's): pass --overwrite to replace "
                            f"it, or --resume {cfg.out} to continue that run")


def load_state(path: Path) -> dict:
    """The optimiser sidecar, loaded like every checkpoint (weights_only=True, one-line errors)."""
    state = torch_load(path)
    need = ("optimizer", "scheduler", "step", "condition")
    if not isinstance(state, dict) or any(k not in state for k in need):
        raise UserError(f"{path} is not a minitflow training state (needs {', '.join(need)})")
    return state


def check_rows_fit(cfg: TrainConfig, llm: LLM | None, model_dir: Path | None, style: str,
                   train_rows: Sequence[Example], eval_rows: Sequence[Example]) -> None:
    """Every row's prompts against the model's positions, with its tokenizer alone (`llm` when
    given, else `model_dir`'s, the backbone's resolved folder): make_batch or the engine refused a
    long row only when its batch, or the first evaluation, came, steps into the run and before their save."""
    if llm is not None:
        encode, limit = llm.encode, llm.max_seq_len
    else:
        from minitflow.model.config import Qwen3Config
        from minitflow.model.tokenizer import Tokenizer
        encode, limit = Tokenizer(model_dir).encode, Qwen3Config.from_dir(model_dir).max_position_embeddings
    senders = cfg.condition == "sender"  # training with the zero condition runs no sender; evaluation does
    for path, rows, new_tokens, run_senders in ((cfg.train, train_rows, 0, senders),
                                                (cfg.eval, eval_rows, cfg.eval_max_new_tokens, True)):
        for i, e in enumerate(rows, 1):
            answer = len(encode(e.answer)) + 1  # and <|im_end|>: the receiver's training sequence
            need = positions_needed("tflow", encode, style, e.question, e.sender_question if run_senders else "",
                                    max(answer, new_tokens))
            if need > limit:
                raise UserError(f"{path}: row {i}: its tflow prompts need {need} positions with its answer"
                                f"{f' or {new_tokens} new tokens' if new_tokens else ''}, more than the model's "
                                f"{limit} positions")


def rows_digest(rows: Sequence[Example]) -> str:
    """sha256 of the training rows in order, as trained (question, answer, sender text): a run's
    identity of its data, whatever the file's path or JSON layout."""
    text = json.dumps([[e.question, e.answer, e.sender_question] for e in rows], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_resume_flags(cfg: TrainConfig, state: dict, train_digest: str | None = None) -> None:
    """Refuse a --resume whose flags differ from the saved run's in RESUME_FIXED: another --lr or
    --weight_decay would be overwritten by the loaded optimiser without a word, another --seed,
    --batch_size or --grad_accum would skip into a different data stream, not continue the run,
    another --dataset (or leaving it out: gsm8k) would go on in another prompt style, and another
    --warmup or --clip would go on with another schedule or clipping. Other training rows
    (`train_digest`, rows_digest of --train) replayed the saved index stream over other data."""
    saved = state.get("config")
    if not isinstance(saved, dict):  # a state without its config: nothing to compare
        return

    def same(n: str) -> bool:  # --dataset as the style it names: math is minerva_math (a resume was refused)
        if n == "dataset":
            try:
                return prompts.resolve_style(saved[n]) == prompts.resolve_style(cfg.dataset)
            except UserError:  # a name of no style (the saved one edited): compared as written
                pass
        return saved[n] == getattr(cfg, n)

    differ = [n for n in RESUME_FIXED if n not in RESUME_BACKBONE and n in saved and not same(n)]
    if differ:
        raise UserError(f"--resume {cfg.resume}: it was trained with "
                        f"{', '.join(f'--{n} {saved[n]}' for n in differ)}, not "
                        f"{', '.join(str(getattr(cfg, n)) for n in differ)}; pass the same values to resume")
    want = state.get("train_sha256")
    if train_digest is not None and isinstance(want, str) and want != train_digest:
        raise UserError(f"--resume {cfg.resume}: it was trained on other rows than --train {cfg.train}'s "
                        f"(sha256 {want[:12]}, these {train_digest[:12]}); pass the same training rows to resume")


def backbone_identity(model: str, model_dir: Path | None, dtype: torch.dtype) -> dict:
    """What --resume compares for --model and --dtype: the model as named (a folder by its
    absolute path, so ./m and /abs/m agree; a hub id as given), the sha256 of its config.json
    and `weights_sample` of its weights (None without `model_dir`: a caller's `llm` whose
    cfg.model is no folder here), and the backbone dtype as resolved (--dtype auto is bfloat16
    on CUDA, float32 on CPU)."""
    path = Path(model).expanduser()
    return {"model": str(path.resolve()) if path.is_dir() else model,
            "model_config_sha256": None if model_dir is None else
            hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest(),
            "model_weights_sample": None if model_dir is None else weights_sample(model_dir),
            "dtype": str(dtype).removeprefix("torch.")}


SAMPLE_WINDOWS, SAMPLE_BYTES = 8, 4096


def weights_sample(model_dir: Path) -> str | None:
    """sha256 over the weight files the backbone loads: each one's name and size, and 8 windows
    of 4 KiB spread evenly over it (the first holds the safetensors header: every tensor's name,
    dtype, shape and offset). Hashing the weights whole reads gigabytes at 4B; this reads 32 KiB
    a file, and a fine-tune with the same config.json (the same shapes) changes the bytes the
    windows land on. It proves nothing about the bytes between them. None where the weights are
    not here (a caller's llm named by a hub id whose cache holds its config.json only)."""
    from minitflow.model.weights import weight_files
    try:
        files = sorted(set(weight_files(model_dir).values()))
    except UserError:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as f:
            for i in range(SAMPLE_WINDOWS):
                f.seek(i * max(0, size - SAMPLE_BYTES) // (SAMPLE_WINDOWS - 1))
                digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def local_model_dir(model: str) -> Path | None:
    """`model`'s folder as far as it is here, downloading nothing: a folder with config.json, or
    a hub id's cached snapshot; None otherwise. For train(cfg, llm=...): the caller's backbone is
    loaded already (maybe built in memory), and cfg.model only names it; resolving it as --model
    refused such a caller, or downloaded the whole model to hash its config.json."""
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    from huggingface_hub import snapshot_download
    try:
        local = Path(snapshot_download(model, allow_patterns=["config.json"], local_files_only=True))
    except Exception:  # not a hub id, or not in the cache: nothing here to hash
        return None
    return local if (local / "config.json").is_file() else None


def check_resume_backbone(cfg: TrainConfig, state: dict, identity: dict) -> None:
    """Refuse a --resume on another backbone than the saved run's (`backbone_identity`): another
    --model, or another --dtype, went on training the generator against other hidden states
    without a word. The same model at another path (a folder moved or copied to a faster disk, a
    hub id's local copy) resumes with a note: its config.json and weights sample are the saved
    ones. A state saved before a record resumes with a warning: refusing it would strand the run,
    and it cannot tell what it was trained on (before the weights sample, a new path with the
    same config.json)."""
    saved = state.get("backbone")
    if not isinstance(saved, dict):
        print(f"warning: --resume {cfg.resume}: its state predates the record of --model and --dtype; "
              "resuming without checking them", file=sys.stderr)
        return
    if saved.get("dtype") != identity["dtype"]:
        raise UserError(f"--resume {cfg.resume}: it was trained on a {saved.get('dtype')} backbone, not "
                        f"{identity['dtype']} (--dtype {cfg.dtype}); pass --dtype {saved.get('dtype')} to resume")
    moved = saved.get("model") != identity["model"]
    configs = saved.get("model_config_sha256"), identity["model_config_sha256"]
    if None in configs:  # a caller's llm with no config.json here (this run or the saved one): the name alone
        print(f"warning: --resume {cfg.resume}: this run's or the saved run's --model names a caller's llm with no "
              "config.json here: only the model names are compared", file=sys.stderr)
    if (moved and None in configs) or (None not in configs and configs[0] != configs[1]):
        was, now = (f"{d.get('model')} (config.json sha256 {str(d.get('model_config_sha256'))[:12]})"
                    for d in (saved, identity))
        raise UserError(f"--resume {cfg.resume}: it was trained with --model {was}, not {now}; "
                        "pass the same --model to resume")
    was, now = saved.get("model_weights_sample"), identity["model_weights_sample"]
    if was is not None and now is not None and was != now:  # a fine-tune of the same shapes, or replaced weights
        raise UserError(f"--resume {cfg.resume}: it was trained with --model {saved.get('model')}, whose weights "
                        f"are not those of {identity['model']} (sampled sha256 {was[:12]}, not {now[:12]}), though "
                        "their config.json is the same; pass the same --model to resume")
    if moved and None not in configs:
        print(f"{'warning' if None in (was, now) else 'note'}: --resume {cfg.resume}: --model is {identity['model']}, "
              f"not the {saved.get('model')} it was trained with; their config.json is the same, and "
              + (f"{'the state predates the record of the weights' if was is None else 'the weights are not here'}: "
                 "resuming without comparing them" if None in (was, now) else
                 "so are the weights (sampled): resuming"), file=sys.stderr)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP stopped `train`: raised once the step it landed in has finished and
    the run is saved, or at once, without saving, on a second signal; or a gone stderr did
    (`Console`, signum SIGPIPE), once the step was saved. The message says which, and how to
    resume; `signum` gives the command line its exit code (128 + signum)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum


class Console:
    """stderr for the progress bar and log lines, whose writes never raise: where its reader has
    gone (`train ... 2>&1 | head`, or `| tee log` that the same Ctrl-C ended) the write raised
    BrokenPipeError from tqdm or a log line, wherever in the step or before its save it came,
    and the run stopped unsaved. The first failed write sets `gone` and drops all later output;
    the loop then saves the step and stops. Anything else (fileno, encoding) is the stream's."""

    def __init__(self, stream):
        self.stream, self.gone = stream, False

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        return self._guard(lambda: self.stream.write(text)) or len(text)

    def flush(self) -> None:
        self._guard(self.stream.flush)

    def _guard(self, call: Callable[[], object]):
        if self.gone:
            return None
        try:
            return call()
        except (OSError, ValueError):  # EPIPE, EIO (a terminal hung up), ValueError: a closed file
            self.gone = True
            return None


@contextmanager
def deferred_signals(note: Callable[[int], str]) -> Iterator[list[int]]:
    """Inside, the first SIGINT, SIGTERM or SIGHUP (the terminal or ssh session gone: its default
    killed the run where it stood) is only recorded (in the yielded list, which the
    loop checks between steps) and `note(signum)` written to stderr: raised where it landed it
    cut the step anywhere, opt.step included, and the run lost every step since its last save.
    A second one raises Interrupted at once (a write it cuts removes its temporary file: the
    files on disk stay the last whole save). The previous handlers come back on exit. An ignored
    signal stays ignored (a shell's background job ignores SIGINT: the terminal's Ctrl-C is not
    for it), and outside the main thread, where Python runs no handler, signals are left alone."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum: int, frame: object) -> None:
        if got:
            raise Interrupted(signum)
        got.append(signum)
        try:
            os.write(2, f"\n{note(signum)}\n".encode())  # not print: the handler may run inside one
        except OSError:  # stderr gone (`train ... 2>&1 | tee log`: the same Ctrl-C ended tee): raised here,
            pass  # it cut the step where it landed, unsaved, as the signal itself did before

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)  # None: set outside Python


@dataclass
class _RunInputs:
    """What `train` reads and checks before the backbone loads (minutes at 4B): the rows, the
    --resume state, the run's identity (`rows_digest`, `backbone_identity`) and the generator to
    start from, so that a bad flag, file or resume fails first."""
    style: str
    train_rows: list[Example]
    eval_rows: list[Example]
    state: dict | None  # the --resume training state
    digest: str  # rows_digest of the training rows
    identity: dict  # backbone_identity
    loaded: TFlowGenerator | None  # the generator read from --resume or --init
    # the backbone's folder, resolved once (an uncached hub id is looked up on the hub each time); None: a caller's
    # llm whose folder is not here (local_model_dir)
    model_dir: Path | None
    continues: bool  # --resume is --out: this run's saves replace the state it resumed from


def _check_run(cfg: TrainConfig, llm: LLM | None) -> _RunInputs:
    """The rows, the --resume state against this run's flags, rows and backbone, and the generator to
    resume or start from against the backbone's config.json: all before the backbone loads."""
    style = prompts.resolve_style(cfg.dataset)
    train_rows = read_examples(cfg.train)
    eval_rows = read_examples(cfg.eval)[:cfg.eval_size] if cfg.eval else []
    if cfg.batch_size > len(train_rows):  # batches are full: fewer rows would shrink it silently
        raise UserError(f"--batch_size {cfg.batch_size} exceeds the {len(train_rows)} rows of {cfg.train}")
    state = load_state(_state_path(cfg.resume)) if cfg.resume else None
    if state is not None and state["condition"] != cfg.condition:
        raise UserError(f"--resume: checkpoint was trained with --condition {state['condition']}")
    digest = rows_digest(train_rows)
    if state is not None:
        check_resume_flags(cfg, state, digest)
    if state is not None and int(state["step"]) >= cfg.steps:  # else nothing runs and --out is never written
        raise UserError(f"--resume {cfg.resume}: it has run {int(state['step'])} steps already, so --steps "
                        f"{cfg.steps} leaves none to run; pass a larger --steps")
    # the generator to resume or start from is read before the backbone (minutes at 4B): a bad
    # one, or one for other dimensions, fails first; the backbone's config.json is all it needs
    # the state carries the generator it was saved with (older ones do not: their checkpoint then)
    start = (None if cfg.init == "random" else cfg.init) if state is None else \
        _state_path(cfg.resume) if "parameter_generator" in state else cfg.resume
    from minitflow.model.config import Qwen3Config
    from minitflow.model.weights import resolve_model_dir
    if llm is None:
        model_dir = resolve_model_dir(cfg.model, need_tokenizer=True)
        backbone = Qwen3Config.from_dir(model_dir)
    else:  # the caller's backbone: cfg.model only names it (see local_model_dir)
        model_dir, backbone = local_model_dir(cfg.model), llm.cfg
    identity = backbone_identity(cfg.model, model_dir, llm.dtype if llm is not None else
                                 resolve_dtype(cfg.dtype, resolve_device(cfg.device)))
    if state is not None:
        check_resume_backbone(cfg, state, identity)
    layers = cfg.pg_arch.get("num_base_model_layers", backbone.num_hidden_layers)
    if layers != backbone.num_hidden_layers:  # trained, then refused by load_checkpoint at every later use
        raise UserError(f"--pg_arch num_base_model_layers={layers}, but the backbone has {backbone.num_hidden_layers} "
                        "layers: drop it (the generator takes the backbone's)")
    loaded = None if start is None else load_checkpoint(start, backbone)
    if state is not None:  # the resumed generator keeps its dimensions: other --pg_arch ones would be ignored
        differ = {k: v for k, v in cfg.pg_arch.items() if getattr(loaded.arch, k) != v}
        if differ:
            raise UserError(f"--resume {cfg.resume}: its generator has "
                            f"{', '.join(f'{k}={getattr(loaded.arch, k)}' for k in differ)}, not the --pg_arch "
                            f"{', '.join(f'{k}={v}' for k, v in differ.items())}; drop --pg_arch to resume")
    check_rows_fit(cfg, llm, model_dir, style, train_rows, eval_rows)
    continues = bool(cfg.resume) and Path(cfg.resume).resolve() == Path(cfg.out).resolve()
    return _RunInputs(style, train_rows, eval_rows, state, digest, identity, loaded, model_dir, continues)


@dataclass
class _Run:
    """The generator and its optimisation, and where the loop stands: what a save writes and a
    resume reads back."""
    gen: TFlowGenerator
    params: list[tuple[str, torch.nn.Parameter]]  # trainable(gen)
    opt: torch.optim.AdamW
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    order: Iterator[list[int]]  # batch_order, replayed up to `step`
    answer_tokens: list[int]  # each training row's answer tokens and <|im_end|>, as make_batch targets
    step: int
    history: list[dict]
    logged_loss: float  # the answer-token loss sum and count since the last record
    logged_tokens: int
    saved: int | None = None  # the step of this call's last save


def _start_run(cfg: TrainConfig, llm: LLM, inputs: _RunInputs) -> _Run:
    """The generator, AdamW, its schedule, the float16 loss scaler and the data stream: fresh, or
    as the --resume state left them, so the resumed run goes on as the straight run did."""
    state = inputs.state
    if state is not None:
        gen = inputs.loaded.float().to(llm.device).train().requires_grad_(True)
        gen.parameter_generator.model.cond_proj.requires_grad_(False)
        if state["condition"] == "zero":
            gen.parameter_generator.hidden_in.requires_grad_(False)
    else:
        gen = build_generator(cfg, llm, inputs.loaded)
    params = trainable(gen)
    opt, sched = make_optimizer(params, cfg.lr, cfg.weight_decay, cfg.warmup, cfg.steps)
    # float16 only: its gradients underflow to zero below 6e-8 (a small loss's do), so the loss is
    # scaled up for the backward and the gradients unscaled before clipping. bfloat16 has float32's
    # range and float32 needs none: disabled, the scaler hands each call through (bitwise as before)
    scaler = torch.amp.GradScaler(llm.device.type, enabled=llm.dtype == torch.float16)
    step, history = 0, []
    if state is not None:
        try:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if "scaler" in state:  # a float16 state from before the scaler has none: a fresh one starts
                scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise UserError(f"--resume {cfg.resume}: the optimiser state does not fit this generator ({e})") from None
        step, history = int(state["step"]), list(state.get("history", []))
        # the rate of this run's schedule (its --steps and --warmup): the optimiser saved the old
        # schedule's, which a longer --steps would have used for one step (0 after a finished run)
        for group, base, f in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * f(sched.last_epoch)

    answer_tokens = [len(llm.encode(e.answer)) + 1 for e in inputs.train_rows]  # and <|im_end|>, as make_batch
    order = batch_order(len(inputs.train_rows), cfg.batch_size, cfg.seed)
    for _ in range(step * cfg.grad_accum):  # replay the stream up to where we stopped
        next(order)
    # the answer-token loss sum and count since the last record: a resume from a save between two
    # records goes on with the saved ones, so the next record is the one a straight run makes
    logged_loss, logged_tokens = (0.0, 0) if state is None else tuple(state.get("logged", (0.0, 0)))
    return _Run(gen, params, opt, sched, scaler, order, answer_tokens, step, history, logged_loss, logged_tokens)


def _forward_backward(cfg: TrainConfig, llm: LLM, inputs: _RunInputs, run: _Run) -> tuple[float, int]:
    """One step's forward and backward over its --grad_accum micro-batches, the gradients left in
    the generator's .grad; returns the step's answer-token loss sum and count."""
    run.opt.zero_grad(set_to_none=True)
    loss_sum, tok_sum = 0.0, 0
    batches = [next(run.order) for _ in range(cfg.grad_accum)]
    step_tokens = sum(run.answer_tokens[i] for b in batches for i in b)
    for b in batches:
        chunk = [inputs.train_rows[i] for i in b]
        loss, n_targets = batch_loss(llm, run.gen, inputs.style, chunk, cfg.condition == "zero", cfg.checkpoint_layers)
        # the step's loss is the mean over all its answer tokens, as one batch of them would
        # take it: a micro-batch weighs by its tokens (1.0 without accumulation, bitwise as before)
        run.scaler.scale(loss * (n_targets / step_tokens)).backward()
        loss_sum += loss.item() * n_targets
        tok_sum += n_targets
        run.gen.samples_seen += len(chunk)
    # answer_tokens counts what make_batch targets; a mismatch would scale the step wrongly
    assert tok_sum == step_tokens, (tok_sum, step_tokens)
    return loss_sum, tok_sum


def _optimiser_step(cfg: TrainConfig, llm: LLM, run: _Run, loss_sum: float, tok_sum: int,
                    say: Callable[[str], object]) -> torch.Tensor:
    """Clip the step's gradients and apply them; or skip the step (a float16 overflow the scaler
    handles), or raise (a divergence): a non-finite update would make every weight NaN. The
    schedule moves on either way. Returns the gradient norm before clipping."""
    scaler = run.scaler
    scaler.unscale_(run.opt)  # clipping and the guard below see the true gradient
    grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in run.params], cfg.clip)
    # float16: a finite loss whose scaled gradient overflowed is the scaler's to handle: the
    # step is skipped and the scale halved, the usual start of a run (65536 is its first
    # guess). It is a divergence only once the scale falls below 1: the gradient then
    # overflowed unscaled (or scaled down), which no scale can fix
    overflowed = scaler.is_enabled() and math.isfinite(loss_sum) and not math.isfinite(float(grad_norm))
    kept = f"{cfg.out} keeps step {run.saved}" if run.saved is not None else f"{cfg.out} is left as it was"
    if overflowed:
        scale = scaler.get_scale()
        scaler.update()  # unscale_ found the inf or NaN: the scale halves
        if scaler.get_scale() < 1:
            raise UserError(f"step {run.step + 1}: the training loss diverged (loss "
                            f"{loss_sum / max(tok_sum, 1):.4g}, its float16 gradient overflows at loss "
                            f"scale {scale:g}, so unscaled too); the step is not applied and {kept}: "
                            "rerun with a lower --lr or --dtype bfloat16")
        say(f"step {run.step + 1}: the float16 gradient overflowed at loss scale {scale:g}: the step is "
            f"skipped (no update) and the scale lowered to {scaler.get_scale():g}")
    elif not (math.isfinite(loss_sum) and math.isfinite(float(grad_norm))):
        # stepping would make every weight NaN, and the next save would replace the last good
        # checkpoint and state with ones that load_checkpoint refuses: nothing left to resume
        if run.step == 0 and cfg.init == "random":  # the zero LoRA: the backbone alone, no rate to blame
            dtype = str(llm.dtype).removeprefix("torch.")
            hint = " (float16 overflows: try --dtype bfloat16 or float32)" if dtype == "float16" else ""
            raise UserError(f"step 1: the training loss or its gradient is not finite (loss "
                            f"{loss_sum / max(tok_sum, 1):.4g}, gradient norm {float(grad_norm):.4g}) "
                            f"before any update, where the generator adds nothing: the {dtype} "
                            f"backbone's own forward is not finite on these rows{hint}; a lower --lr "
                            "would not help")
        raise UserError(f"step {run.step + 1}: the training loss diverged (loss {loss_sum / max(tok_sum, 1):.4g}, "
                        f"gradient norm {float(grad_norm):.4g}); the step is not applied and {kept}: "
                        "rerun with a lower --lr or --clip")
    else:
        scaler.step(run.opt)  # opt.step(): the gradients are finite
        scaler.update()
    # a skipped step is a step still: its batches are consumed and the schedule moves on,
    # as --resume replays them (batch_order, sched.last_epoch == step); torch warns when the
    # first step is one, as if the call order were wrong
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before")
        run.sched.step()
    return grad_norm


def _save(cfg: TrainConfig, inputs: _RunInputs, run: _Run) -> None:
    """The checkpoint first, then the state with the generator in it: an interrupt between the
    two files leaves the state a save behind, and --resume reads the state alone, so it redoes
    those steps exactly. (State first left the checkpoint behind: cut at the last step, the
    run's result was never written and --resume refused a state at --steps.)"""
    if run.saved is None and not inputs.continues:  # an earlier run's state beside our checkpoint would resume that run
        _state_path(cfg.out).unlink(missing_ok=True)
    save_checkpoint(run.gen, cfg.out)
    save_checkpoint(run.gen, _state_path(cfg.out), extra={
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(), "step": run.step,
        "condition": cfg.condition, "history": run.history, "config": asdict(cfg), "backbone": inputs.identity,
        "train_sha256": inputs.digest, "logged": [run.logged_loss, run.logged_tokens],
        **({"scaler": run.scaler.state_dict()} if run.scaler.is_enabled() else {})})
    run.saved = run.step


def _record(cfg: TrainConfig, llm: LLM, inputs: _RunInputs, run: _Run, say: Callable[[str], object]) -> None:
    """One history record and log line: the training loss since the last record (the
    progress bar showed only the last step's, and nothing was kept), and the evaluation."""
    train_loss = run.logged_loss / run.logged_tokens
    rec = {"step": run.step, "train_loss": train_loss}
    line = f"step {run.step}: train loss {train_loss:.4f}"
    if inputs.eval_rows:
        gen, eval_rows = run.gen, inputs.eval_rows
        gen.eval()
        rec["eval_loss"] = eval_loss(llm, gen, eval_rows, inputs.style, cfg.condition == "zero", cfg.eval_batch_size)
        rec["eval_accuracy"], _ = eval_accuracy(llm, as_loaded(gen, llm.dtype), eval_rows, inputs.style,
                                                cfg.eval_batch_size, cfg.eval_max_new_tokens)
        gen.train()
        line += (f"  eval loss {rec['eval_loss']:.4f}  exact match {rec['eval_accuracy']:.3f} "
                 f"({len(eval_rows)} questions)")
    run.history.append(rec)
    say(line)


def _signal_name(signum: int) -> str:
    """A signal as train's messages name it (SIGPIPE: stderr gone, `Console`)."""
    return {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP",
            signal.SIGPIPE: "stderr gone"}[signum]


def train(cfg: TrainConfig, llm: LLM | None = None, log=None, stop_after: int | None = None) -> dict:
    """Run the training described by `cfg`; returns {"step", "history", "out", "seconds",
    "generator"}: a history record every --eval_every steps and at the last holds the step, the
    training loss since the previous record and, at an evaluation, eval_loss and eval_accuracy.
    Pass `llm` to reuse a loaded backbone (it stays frozen); `cfg.model` then only names it (its
    config.json is hashed for --resume where it is a folder or a cached hub snapshot here).
    `stop_after` ends this call after that many steps (checkpoint and state saved, with the training
    loss since the last record; the schedule still spans `cfg.steps`), to be continued with `resume`.
    SIGINT, SIGTERM or SIGHUP during the steps finishes the step, saves as `save_every` does and raises
    Interrupted (`deferred_signals`)."""
    cfg = check_config(cfg)
    if stop_after is not None:
        check_int(stop_after, "stop_after")
    inputs = _check_run(cfg, llm)
    # no torch.manual_seed: nothing after the seeded build (build_generator) draws from torch's
    # RNG, and reseeding it reset a library caller's random stream
    if llm is None:
        llm = LLM.load(inputs.model_dir, dtype=cfg.dtype, device=cfg.device, max_seq_len=None, need_tokenizer=True)
    llm.model.requires_grad_(False)
    run = _start_run(cfg, llm, inputs)

    bar, console = None, Console(sys.stderr)
    if cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=run.step, desc="train", file=console, dynamic_ncols=True)
    # beside the progress bar, tqdm.write: a print landed behind the bar's text on its line
    say = log or (lambda msg: bar.write(msg, file=console) if bar is not None else print(msg, file=console))
    t0 = time.perf_counter()
    last = cfg.steps if stop_after is None else min(cfg.steps, run.step + stop_after)

    def note(signum: int) -> str:  # it may land in a step, or in the evaluation or save after one
        return (f"{_signal_name(signum)}: the step under way finishes and is saved to {cfg.out}, then the run "
                "stops (again to stop at once, losing the steps since the last save)")
    try:
        with deferred_signals(note) as signalled:
            while run.step < last:
                loss_sum, tok_sum = _forward_backward(cfg, llm, inputs, run)
                run.logged_loss, run.logged_tokens = run.logged_loss + loss_sum, run.logged_tokens + tok_sum
                grad_norm = _optimiser_step(cfg, llm, run, loss_sum, tok_sum, say)
                run.step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / max(tok_sum, 1):.4f}", lr=f"{run.sched.get_last_lr()[0]:.2e}",
                                    gnorm=f"{float(grad_norm):.1e}")
                # at --steps, not at stop_after's stop: that one's loss goes on in the state, as a
                # signal's does, so the resumed run's records are the straight run's
                if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
                    _record(cfg, llm, inputs, run, say)
                    run.logged_loss, run.logged_tokens = 0.0, 0
                # what a crash (SIGKILL, a node lost) costs: the steps since the last save
                if run.step % (cfg.save_every or cfg.eval_every) == 0 or run.step == last:
                    _save(cfg, inputs, run)
                # a gone stderr (`train ... 2>&1 | head`: the reader stopped) ends the run as SIGPIPE
                # would end a writer, but saved: its progress and log lines can go nowhere
                stop = signalled[0] if signalled else signal.SIGPIPE if console.gone else None
                if stop is not None and run.step < last:  # the step is whole: save it, and stop
                    if run.saved != run.step:
                        _save(cfg, inputs, run)
                    raise Interrupted(stop, f"{_signal_name(stop)}: stopped after step {run.step} of "
                                      f"{cfg.steps}, saved to {cfg.out} and its state; continue with --resume "
                                      f"{cfg.out} and the same flags")
    except Interrupted as e:
        if str(e):
            raise
        kept_step = run.saved if run.saved is not None else int(inputs.state["step"]) if inputs.continues else None
        kept = (f"--resume {cfg.out} continues from step {kept_step}" if kept_step is not None else
                "nothing was saved")
        raise Interrupted(e.signum, f"{_signal_name(e.signum)} again: stopped at once, without saving "
                                    f"(step {run.step} of {cfg.steps}); {kept}") from None
    finally:
        if bar is not None:
            bar.close()
    return {"step": run.step, "history": run.history, "out": cfg.out, "seconds": time.perf_counter() - t0,
            "generator": run.gen}
