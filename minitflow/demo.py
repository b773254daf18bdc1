"""The demo task: a small Qwen3 backbone and a trained ParameterGenerator in which TFlow visibly works.

Task ("box lookup"): every question comes with a private context of three facts that only
the senders read, "The red box holds 7. The blue box holds 3. The green box holds 9." (the
same three boxes in the same order, each with a random digit).
The receiver sees only "How many does the blue box hold?" and must answer "\\boxed{3}".
Alone it can only guess (about 1 in 10); with TFlow the answer has to travel from the
senders' hidden states through the generated LoRA weights into the receiver.

Everything here is built by minitflow itself: a byte-level BPE tokenizer over the task and the
official prompts (`tokenizers`), a 4-layer Qwen3 pre-trained on the task with the engine's own
cache-free forward and saved as a HF-format directory (safetensors, HF tensor names), and the
generator trained with `minitflow.tflow.training` (what `python -m minitflow.train` runs). One
command rebuilds it all and prints the table:

    python -m minitflow.demo --out DIR      # default ./minitflow-demo

The shipped result lives in `minitflow/data/demo/` (see `minitflow.demo_dir()`). The build runs in a
hidden folder beside DIR and its files replace DIR's only at the end, so an interrupted or
failed build leaves DIR as it was (a killed one also leaves that hidden .DIR.building-*
folder); a non-empty DIR needs --overwrite.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from minitflow.errors import Parser, UserError, run_cli, stop_in_one_line_at_start
stop_in_one_line_at_start(__name__)  # run as `python -m`: a Ctrl-C in the imports below is one line too

# torch-free: `python -m minitflow.demo --help` and a mistyped flag answer at once; what builds the demo
# imports torch and the trainer in its own functions (seconds), as it imports the engine and the model
from minitflow.files import _nearest_folder, check_output_dir, json_rows, read_text, replacing, write_text
from minitflow.tflow.train_config import TrainConfig

TASK = ("box lookup: the senders read three private facts (\"The red box holds 7. ...\") and the "
        "question; the receiver sees only the question (\"How many does the blue box hold?\") and "
        "answers \"\\boxed{3}\"")
EXAMPLE = {
    "context": "The red box holds 7. The blue box holds 3. The green box holds 9.",
    "question": "How many does the blue box hold?",
    "answer": "\\boxed{3}",
}
STYLE = "gsm8k"  # official prompts the demo runs with (senders A/B, receiver C, textmas roles)
# Three boxes in a fixed order: the lookup is then positional, which a 4-layer model learns in
# a few hundred steps on CPU (with colours drawn from a larger set and shuffled it needs
# thousands, beyond the demo's budget). 1000 fact sets x 3 questions = 3000 distinct rows.
COLORS = ("red", "blue", "green")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK_TOKENS = ("<think>", "</think>")  # added, not special (as in Qwen3)
# Qwen2/3's pre-tokenizer split: letters runs, single digits, punctuation runs, newlines.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


# ---- the task ----------------------------------------------------------------------------

def boxed(value: int | str) -> str:
    return "\\boxed{" + str(value) + "}"


def make_example(rng: random.Random) -> dict:
    """One row: a digit in each box, a question about one of them."""
    values = [rng.randrange(10) for _ in COLORS]
    asked = rng.randrange(len(COLORS))
    facts = " ".join(f"The {c} box holds {v}." for c, v in zip(COLORS, values))
    question = f"How many does the {COLORS[asked]} box hold?"
    # `context` is what `generate --context` / `--input_file` take; `sender_question` is what the
    # senders read (prompts.with_context joins the two with a space)
    return {"question": question, "answer": boxed(values[asked]), "context": facts,
            "sender_question": f"{facts} {question}"}


def make_examples(n: int, seed: int, exclude: Iterable[str] = ()) -> list[dict]:
    """n distinct rows, none whose sender context is in `exclude` (keeps held-out rows out of training)."""
    rng, seen, rows = random.Random(seed), set(exclude), []
    if n + len(seen) > 10 ** len(COLORS) * len(COLORS):
        raise UserError(f"the demo task has only {10 ** len(COLORS) * len(COLORS)} distinct rows")
    while len(rows) < n:
        row = make_example(rng)
        if row["sender_question"] not in seen:
            seen.add(row["sender_question"])
            rows.append(row)
    return rows


def write_jsonl(rows: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    return [row for _, row in json_rows(read_text(path, "rows file"), str(path))]


def gold_value(answer: str) -> str:
    """'\\boxed{3}' -> '3'."""
    return answer.removeprefix("\\boxed{").removesuffix("}")


# ---- prompts the backbone must handle ----------------------------------------------------

def style_systems(style: str = STYLE) -> dict[str, str]:
    """Every system prompt the demo's methods use, by a short name."""
    from minitflow.tflow import prompts
    a, b, c = prompts.tflow_agents(style)
    roles = dict(prompts.textmas_roles(style))
    return {"baseline": prompts.baseline_system(style), "agent_a": a, "agent_b": b, "agent_c": c,
            **{name.lower(): text for name, text in roles.items()}}


def corpus(rows: Sequence[dict]) -> list[str]:
    """Texts the tokenizer is trained on: all official prompts (every style, so any `--dataset`
    encodes compactly), the chat template's words and the task's sentences."""
    from minitflow.model.tokenizer import render_chat
    from minitflow.tflow import prompts
    from minitflow.tflow.methods import textmas_context
    texts: list[str] = []

    def walk(x) -> None:
        if isinstance(x, str):
            texts.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(prompts.official())
    texts.append(prompts.TEXTMAS_ASSISTANT_TURN)
    systems = list(style_systems().values())
    for i, r in enumerate(rows):
        texts.append(render_chat([{"role": "system", "content": systems[i % len(systems)]},
                                  {"role": "user", "content": r["sender_question"]},
                                  {"role": "assistant", "content": r["answer"]}], add_generation_prompt=False))
        texts.append(textmas_context(STYLE, [r["answer"], r["answer"]]))
    return texts


# ---- tokenizer -----------------------------------------------------------------------------

def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE with Qwen's pre-tokenizer split and Qwen's special tokens.

    Byte-level means every string encodes (no unknown tokens) and decodes back exactly, so the
    engine's chat format, question spans and stop strings work as with the real vocabulary.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    n_added = len(SPECIAL_TOKENS) + len(THINK_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_added, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def write_tokenizer(tok, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "bos_token": None, "unk_token": None, "model_max_length": 4096,
        "added_tokens_decoder": {str(tok.token_to_id(t)): {"content": t, "special": t in SPECIAL_TOKENS}
                                 for t in SPECIAL_TOKENS + THINK_TOKENS}}, indent=1))


# ---- backbone ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackboneShape:
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 4096  # room for generate's default max_new_tokens (2048 for gsm8k)
    rope_theta: float = 10000.0


def write_model_config(out: Path, tok, shape: BackboneShape = BackboneShape()) -> dict:
    """config.json + generation_config.json of a HF Qwen3ForCausalLM with tied embeddings."""
    eos, pad = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": tok.get_vocab_size(),
           **asdict(shape), "hidden_act": "silu", "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
           "attention_bias": False, "attention_dropout": 0.0, "use_sliding_window": False, "sliding_window": None,
           "max_window_layers": shape.num_hidden_layers, "rope_scaling": None, "initializer_range": 0.02,
           "use_cache": True, "bos_token_id": pad, "eos_token_id": eos, "torch_dtype": "float32"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": pad, "eos_token_id": [eos, pad], "pad_token_id": pad, "do_sample": False}, indent=1))
    return cfg


def init_weights(model, std: float = 0.02, seed: int = 0) -> None:
    """HF's Qwen3 initialisation: normal(0, 0.02) matrices and embeddings, unit norms."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def save_backbone(model, out: Path) -> None:
    """Our fused weights -> HF tensor names (q/k/v rows of qkv_proj, gate/up rows of gate_up_proj)."""
    import torch
    from safetensors.torch import save_file
    from minitflow.model.weights import _expected_shape, _targets
    tensors = {}
    for name, (param, row) in _targets(model).items():
        rows = _expected_shape(name, model.cfg, param)[0] if param.dim() > 0 else None
        t = param.detach().narrow(0, row, rows) if rows is not None else param.detach()
        tensors[name] = t.to(torch.float32).contiguous().clone()
    with replacing(out / "model.safetensors") as tmp:
        mode = tmp.stat().st_mode  # as open() creates files (umask): save_file makes its own 0600
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, mode)


@dataclass
class PretrainConfig:
    steps: int = 450
    short_steps: int = 200  # first phase: short rows only (see pretrain_batch)
    batch_size: int = 32
    lr: float = 1e-3  # 3e-3 diverges once the long prompts come in
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0


def cloze_batch(llm, chunk: Sequence[dict], chat: bool, system: str | None = None):
    """"facts question" followed directly by the digit, as plain text or as a chat's user turn
    (under `system`): the model learns to know the answer at the question mark itself. That is
    where TFlow's senders stop reading (their condition is the span of the question), so
    their hidden states there carry the answer to the generator.
    """
    import torch
    from minitflow.tflow.training import Batch
    head = ""
    if chat:
        head = (f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else "") + "<|im_start|>user\n"
    seqs = [llm.encode(head + r["sender_question"]) for r in chunk]
    digits = [llm.encode(gold_value(r["answer"])) for r in chunk]
    t = max(len(x) for x in seqs) + 1
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, (x, d) in enumerate(zip(seqs, digits)):
        ids[i, :len(x) + 1] = torch.tensor(x + d)
    return Batch(ids, torch.arange(t)[None].expand(len(seqs), t), [len(x) - 1 for x in seqs],
                 [len(x) for x in seqs], torch.tensor(digits))


def pretrain_batch(llm, rng: random.Random, rows: Sequence[dict], systems: dict[str, str], batch_size: int,
                   short: bool = False):
    """One batch of one kind, with one system prompt (so its rows have similar lengths):

    - cloze (25%): the digit right after the question, as plain text or in a user turn
      (see `cloze_batch`);
    - context (35%): chat, facts + question -> "\\boxed{v}", under any of the demo's system
      prompts or none: what textmas senders, and a receiver given the facts, need;
    - textmas (15%): the Summarizer reads the senders' "\\boxed{v}" messages, then the question;
    - alone (25%): the question only -> a uniformly random digit, so a receiver without the
      facts is calibrated at chance instead of inventing a consistent answer.

    `short` (the first phase): no system prompts and no "alone" rows. Over a long prompt the
    few tokens that matter get too little attention to start learning the lookup, and the
    random "alone" answers make "always guess" a comfortable minimum; on short rows the lookup
    appears within ~100 steps and then carries over to the long prompts.
    """
    from minitflow.tflow import prompts
    from minitflow.tflow.methods import textmas_context
    from minitflow.tflow.training import make_batch
    chunk = [rows[rng.randrange(len(rows))] for _ in range(batch_size)]
    weights = [0.4, 0.4, 0.2, 0.0] if short else [0.25, 0.35, 0.15, 0.25]
    kind = rng.choices(["cloze", "context", "textmas", "alone"], weights=weights)[0]
    system = None if short else systems.get(rng.choice(list(systems) + ["none"]))
    if kind == "cloze":
        return cloze_batch(llm, chunk, chat=rng.random() < 0.5, system=system)
    if kind == "context":
        return make_batch(llm, system, [r["sender_question"] for r in chunk], [r["answer"] for r in chunk])
    if kind == "textmas":
        hist = [[{"role": "user", "content": textmas_context(STYLE, [r["answer"], r["answer"]])},
                 {"role": "assistant", "content": prompts.TEXTMAS_ASSISTANT_TURN}] for r in chunk]
        return make_batch(llm, None if short else systems["summarizer"], [r["question"] for r in chunk],
                          [r["answer"] for r in chunk], hist)
    return make_batch(llm, system, [r["question"] for r in chunk], [boxed(rng.randrange(10)) for _ in chunk])


def pretrain_backbone(model_dir: Path, rows: Sequence[dict], cfg: PretrainConfig | None = None,
                      progress: bool = True):
    """Pre-train the small Qwen3 in `model_dir` (config + tokenizer already there) on the task,
    with the engine's own cache-free forward, and save it as model.safetensors. The weights
    depend on `cfg.seed` alone: torch's global RNG is seeded inside a fork, so the caller's
    own draws go on as if this had not run."""
    import torch
    cfg = cfg or PretrainConfig()
    with torch.random.fork_rng(devices=[]):  # the CPU's generator only: the demo is built on the CPU
        torch.default_generator.manual_seed(cfg.seed)  # torch.manual_seed would reseed every GPU's too
        return _pretrain(model_dir, rows, cfg, progress)


def _pretrain(model_dir: Path, rows: Sequence[dict], cfg: PretrainConfig, progress: bool):
    import torch
    from minitflow.engine.llm import LLM
    from minitflow.model.config import Qwen3Config
    from minitflow.model.qwen3 import Qwen3Model
    from minitflow.model.tokenizer import Tokenizer
    from minitflow.tflow.training import answer_loss, make_optimizer
    mcfg = Qwen3Config.from_dir(model_dir)
    model = Qwen3Model(mcfg, mcfg.max_position_embeddings)
    init_weights(model, seed=cfg.seed)
    llm = LLM(model, Tokenizer(model_dir))
    systems = style_systems()
    opt, sched = make_optimizer(list(model.named_parameters()), cfg.lr, cfg.weight_decay, cfg.warmup, cfg.steps)
    rng = random.Random(cfg.seed)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, desc="pretrain", file=sys.stderr, dynamic_ncols=True)
    model.train()
    ema = None
    for step in range(cfg.steps):
        batch = pretrain_batch(llm, rng, rows, systems, cfg.batch_size, short=step < cfg.short_steps)
        loss = answer_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}")
    if bar is not None:
        bar.close()
    model.eval().requires_grad_(False)
    save_backbone(model, model_dir)
    return model



# ---- evaluation --------------------------------------------------------------------------

@dataclass
class Row:
    method: str
    accuracy: float
    processed_tokens: float  # mean per question, every agent's prompt + completion tokens
    official_tokens: float  # mean per question, generating agents only (the paper's count)
    note: str = ""


def _score(method: str, results, rows: Sequence[dict], note: str = "") -> Row:
    from minitflow.tflow.training import answers_match
    hits = [answers_match(r.answer, e["answer"]) for r, e in zip(results, rows)]
    n = len(rows)
    return Row(method, sum(hits) / n, sum(r.processed_tokens for r in results) / n,
               sum(r.official_usage["total_tokens"] for r in results) / n, note)


def receiver_alone(llm, questions: Sequence[str], style: str, sampling, batch_size: int):
    """The TFlow receiver (agent C's prompt, the question only) with no LoRA, as MethodResults."""
    from minitflow.tflow import prompts
    from minitflow.tflow.stream import AgentUsage, MethodResult
    system = prompts.tflow_agents(style)[2]
    out = []
    for s in range(0, len(questions), batch_size):
        chunk = questions[s:s + batch_size]
        gens = llm.generate([llm.chat_ids([{"role": "system", "content": system}, {"role": "user", "content": q}])
                             for q in chunk], sampling)
        out += [MethodResult("receiver", style, q, g.text, g.finish_reason,
                             {"receiver": AgentUsage(g.prompt_tokens, g.completion_tokens, True)}, {}, len(chunk),
                             g.token_ids) for q, g in zip(chunk, gens)]
    return out


def evaluate(model_dir: str | Path, rows: Sequence[dict], checkpoint: str | Path | None = None,
             zero_checkpoint: str | Path | None = None, style: str = STYLE, batch_size: int = 50,
             max_new_tokens: int = 16, llm=None) -> list[Row]:
    """Greedy accuracy and token counts of every method on `rows` (held-out demo questions)."""
    from minitflow.engine.llm import LLM
    from minitflow.engine.sampler import SamplingParams
    from minitflow.tflow.checkpoint import load_checkpoint
    from minitflow.tflow.methods import run_method
    llm = llm or LLM.load(model_dir, dtype="float32", device="cpu")
    sp = SamplingParams(max_new_tokens=max_new_tokens)
    qs, sq = [r["question"] for r in rows], [r["sender_question"] for r in rows]
    common = dict(style=style, sampling=sp, batch_size=batch_size)
    table = [
        _score("baseline", run_method("baseline", llm, qs, **common), rows, "one agent, question only"),
        _score("receiver alone", receiver_alone(llm, qs, style, sp, batch_size), rows,
               "agent C's prompt, question only, no LoRA"),
    ]
    if checkpoint is not None:
        gen = load_checkpoint(checkpoint, llm.cfg)
        table.append(_score("tflow", run_method("tflow", llm, qs, generator=gen, sender_questions=sq, **common),
                            rows, "senders read facts + question; receiver gets the question + generated LoRA"))
    if zero_checkpoint is not None:
        gen = load_checkpoint(zero_checkpoint, llm.cfg)
        table.append(_score("tflow, zero condition", run_method("tflow", llm, qs, generator=gen,
                                                               sender_questions=sq, **common), rows,
                            "ablation: generator trained and run on a constant zero condition (static LoRA)"))
    table.append(_score("textmas", run_method("textmas", llm, qs, sender_questions=sq,
                                              sender_max_new_tokens=max_new_tokens, **common), rows,
                        "senders read facts + question and write; receiver reads their text + question"))
    table.append(_score("one agent with the facts", run_method("baseline", llm, sq, **common), rows,
                        "upper bound: the facts in the prompt"))
    return table


def markdown_table(table: Sequence[Row], n: int) -> str:
    lines = [f"| method ({n} held-out questions) | exact match | processed tokens / question | "
             "official tokens / question | what it is |", "| --- | ---: | ---: | ---: | --- |"]
    for r in table:
        lines.append(f"| {r.method} | {100 * r.accuracy:.1f}% | {r.processed_tokens:.1f} | {r.official_tokens:.1f} | {r.note} |")
    return "\n".join(lines)


# ---- the whole pipeline ------------------------------------------------------------------

@dataclass
class DemoConfig:
    out: str
    seed: int = 0
    heldout: int = 300
    train_rows: int = 2500
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    steps: int = 150  # generator training steps (and the same for the ablation)
    batch_size: int = 16
    lr: float = 3e-3
    pg_arch: tuple = (("d_model", 128), ("head_dim", 32))
    work: str | None = None  # training rows and optimiser sidecars (default OUT/work, removed at the end)


def check_demo_config(cfg: DemoConfig, overwrite: bool = False) -> None:
    """Every value and the output folder, before anything is built or written."""
    for name, value in (("steps", cfg.steps), ("pretrain_steps", cfg.pretrain.steps),
                        ("heldout", cfg.heldout), ("train_rows", cfg.train_rows), ("batch_size", cfg.batch_size)):
        if value < 1:
            raise UserError(f"--{name} must be >= 1, got {value}")
    if not 0 <= cfg.seed < 1 << 64:  # torch's seed range (and train's): 2^64 was torch's traceback at pre-training
        raise UserError(f"--seed must be an integer in [0, 2^64), got {cfg.seed}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} is not empty; pass --overwrite to replace its demo files, or choose another folder")
    check_output_dir(out, "--out", create=False)  # made once the build has succeeded: a failed one leaves none
    if cfg.work:
        check_output_dir(cfg.work, "--work", create=False)


def build_demo(cfg: DemoConfig, log=print, overwrite: bool = False) -> list[Row]:
    """Tokenizer -> pre-trained backbone -> generator -> zero-condition ablation -> evaluation,
    built in a hidden folder beside `cfg.out`; its files replace those in `cfg.out` at the end."""
    import shutil
    import tempfile
    check_demo_config(cfg, overwrite)
    final = Path(cfg.out)
    # beside --out, or where it does not exist yet, in the nearest folder that does
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=_nearest_folder(final.parent, "--out")))
    try:
        table = _build(cfg, out, log)
        final.mkdir(parents=True, exist_ok=True)
        for f in sorted(out.iterdir()):
            if f.is_file():
                os.replace(f, final / f.name)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return table


def demo_rows(cfg: DemoConfig) -> tuple[list[dict], list[dict]]:
    """The held-out rows and the training rows (none of them a held-out question) of a build."""
    held = make_examples(cfg.heldout, cfg.seed + 1234)
    return held, make_examples(cfg.train_rows, cfg.seed + 1, exclude=[r["sender_question"] for r in held])


def _build(cfg: DemoConfig, out: Path, log) -> list[Row]:
    import shutil
    import torch
    from minitflow.engine.llm import LLM
    from minitflow.tflow.training import train
    work = Path(cfg.work) if cfg.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    held, rows = demo_rows(cfg)
    write_jsonl(held, out / "heldout.jsonl")
    write_jsonl(rows, work / "train.jsonl")
    tok = build_tokenizer(corpus(rows))
    write_tokenizer(tok, out)
    write_model_config(out, tok)
    log(f"tokenizer: {tok.get_vocab_size()} tokens; {len(rows)} training rows, {len(held)} held out")

    t = time.perf_counter()
    pretrain_backbone(out, rows, replace(cfg.pretrain, seed=cfg.seed))
    times["pretrain_s"] = time.perf_counter() - t
    llm = LLM.load(out, dtype="float32", device="cpu")

    for name, condition in (("tflow.pt", "sender"), ("tflow_zero.pt", "zero")):
        t = time.perf_counter()
        tc = TrainConfig(model=str(out), train=str(work / "train.jsonl"), eval=str(out / "heldout.jsonl"),
                         out=str(work / name), pg_arch=dict(cfg.pg_arch), condition=condition, steps=cfg.steps,
                         batch_size=cfg.batch_size, lr=cfg.lr, warmup=20, eval_every=50, eval_size=100,
                         seed=cfg.seed, checkpoint_layers=False, device="cpu", dtype="float32")
        train(tc, llm=llm, log=log)
        shutil.copyfile(work / name, out / name)
        times[f"train_{condition}_s"] = time.perf_counter() - t

    t = time.perf_counter()
    table = evaluate(out, held, out / "tflow.pt", out / "tflow_zero.pt", llm=llm)
    times["evaluate_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0
    write_text(out / "results.json", json.dumps({
        "task": TASK, "style": STYLE, "heldout": len(held), "table": [asdict(r) for r in table],
        "seconds": {k: round(v, 1) for k, v in times.items()}, "threads": torch.get_num_threads(),
        "config": {"seed": cfg.seed, "train_rows": cfg.train_rows, "pretrain": asdict(cfg.pretrain),
                   "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "pg_arch": dict(cfg.pg_arch)},
    }, indent=1) + "\n")
    if not cfg.work:
        shutil.rmtree(work)
    log(markdown_table(table, len(held)))
    log("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = Parser(prog="python -m minitflow.demo", description=TASK)
    ap.add_argument("--out", default="minitflow-demo",
                    help="a new or empty directory for the demo model (HF-format) + tflow.pt + results "
                    "(default: %(default)s)")
    ap.add_argument("--overwrite", action="store_true", help="replace the demo files in a non-empty --out")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the rows, the backbone and the generators (default: %(default)s)")
    ap.add_argument("--pretrain_steps", type=int, default=PretrainConfig.steps,
                    help="backbone pre-training steps (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=DemoConfig.steps,
                    help="generator training steps, for tflow.pt and again for tflow_zero.pt (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--work", help="keep training rows and optimiser states here (default: removed at the end)")
    a = ap.parse_args(argv)
    if a.threads < 0:
        raise UserError(f"--threads must be >= 0, got {a.threads}")
    cfg = DemoConfig(out=a.out, seed=a.seed, steps=a.steps, work=a.work,
                     pretrain=PretrainConfig(steps=a.pretrain_steps,
                                             short_steps=max(0, min(PretrainConfig.short_steps, a.pretrain_steps))))
    check_demo_config(cfg, a.overwrite)
    if a.threads > 0:
        import torch  # here, once the flags are checked: --help and a mistyped flag answer before torch loads
        torch.set_num_threads(a.threads)
    build_demo(cfg, overwrite=a.overwrite)
    return 0


def render_chat_example(style: str = STYLE) -> str:
    """The example question as sender A reads it: agent A's prompt, then facts + question."""
    from minitflow.model.tokenizer import render_chat
    from minitflow.tflow import prompts
    return render_chat([{"role": "system", "content": prompts.tflow_agents(style)[0]},
                        {"role": "user", "content": f"{EXAMPLE['context']} {EXAMPLE['question']}"}])


if __name__ == "__main__":
    sys.exit(run_cli(main))
