"""What the command lines share: model/generation flags, loading, and one-line user errors."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

import torch

from minitflow.engine.llm import LLM, generation_config, generation_top_k, resolve_device, resolve_dtype
from minitflow.engine.sampler import SamplingParams
from minitflow.errors import UserError
from minitflow.files import demo_dir
from minitflow.tflow import prompts
from minitflow.tflow.methods import METHODS, slots_per_question

OFFICIAL_TEMPERATURE, OFFICIAL_TOP_P = 0.6, 0.95


def add_model_args(p: argparse.ArgumentParser, methods: tuple[str, ...] = METHODS) -> None:
    p.add_argument("--method", default="tflow", choices=methods)
    p.add_argument("--dataset", default="gsm8k", help="prompt style: " + ", ".join(prompts.STYLES)
                   + " (aliases humaneval, mbpp, math)")
    p.add_argument("--model", default=None, help="HF-format Qwen3 directory or hub id "
                   "(default: the embedded demo model, see README)")
    p.add_argument("--checkpoint", default=None, help="TFlow ParameterGenerator checkpoint (tflow only)")
    p.add_argument("--random_generator", action="store_true",
                   help="tflow with a randomly initialised generator (smoke tests only)")
    p.add_argument("--max_new_tokens", type=int, default=None, help="default: the official value per style")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--temperature", type=float, default=None, help=f"default: the official {OFFICIAL_TEMPERATURE}")
    p.add_argument("--top_p", type=float, default=None, help=f"default: the official {OFFICIAL_TOP_P}")
    p.add_argument("--top_k", type=int, default=None,
                   help="default: the model's generation_config.json top_k, else HF generate's 50; Qwen3-4B's is 20, "
                   "which HF generate applies under the official code (0 = off)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (temperature 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=8,
                   help="questions in flight (default: %(default)s); the engine gets this many slots (textmas: twice, for its "
                   "two senders)")
    p.add_argument("--refill_share", type=float, default=None,
                   help="start new questions once this share of the batch is free, together (default: 0, as each "
                   "place frees; latentmas 0.5); throughput only, never an answer")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (CUDA graphs on GPU)")
    p.add_argument("--eager", action="store_true",
                   help="on CUDA, run every decode step op by op instead of replaying CUDA graphs (debugging)")
    p.add_argument("--sender_max_new_tokens", type=int, default=None,
                   help="new tokens per sender (textmas; default the official "
                   f"{prompts.TEXTMAS_SENDER_MAX_NEW_TOKENS}, whatever --max_new_tokens says)")
    g = p.add_argument_group("latentmas")
    g.add_argument("--latent_steps", type=int, default=None, help="latent steps per sender (latentmas; default 0)")
    g.add_argument("--mas_topology", default=None, help="sequential (default) or hierarchical (latentmas)")
    g.add_argument("--latent_realign", action="store_true", help="map hidden states back with W_a (latentmas)")
    g.add_argument("--think", action="store_true", help="open a <think> block in every agent's prompt (latentmas)")


def method_options(args: argparse.Namespace) -> dict:
    """The method-specific keyword arguments of run_method (textmas' sender limit, LatentMAS'
    settings); a textmas run without --sender_max_new_tokens has none, as before the flag."""
    if args.method == "textmas" and args.sender_max_new_tokens is not None:
        return {"sender_max_new_tokens": args.sender_max_new_tokens}
    if args.method != "latentmas":
        return {}
    return {"latent_steps": args.latent_steps or 0, "topology": args.mas_topology or "sequential",
            "realign": args.latent_realign, "think": args.think}


def check_model_args(args: argparse.Namespace) -> None:
    """Refuse bad generation flags before anything is loaded: values that would otherwise be
    replaced silently (max_new_tokens 0 -> the default), accepted (nan) or run nothing."""
    prompts.resolve_style(args.dataset)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    if args.greedy and args.temperature is not None:  # one of them would be ignored
        raise UserError("pass either --greedy or --temperature (0 is greedy), not both")
    for flag in ("top_p", "top_k"):
        if args.greedy and getattr(args, flag) is not None:  # greedy samples nothing: it would be ignored
            raise UserError(f"--{flag} has no effect with --greedy (which takes the top token): pass one of them")
        if args.temperature == 0 and getattr(args, flag) is not None:  # temperature 0 is greedy: ignored as well
            raise UserError(f"--{flag} has no effect with --temperature 0 (greedy: the top token): pass one of them")
    if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise UserError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if args.top_p is not None and not (math.isfinite(args.top_p) and 0 < args.top_p <= 1):
        raise UserError(f"--top_p must be in (0, 1], got {args.top_p}")
    if args.top_k is not None and args.top_k < 0:
        raise UserError(f"--top_k must be >= 0, got {args.top_k}")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.refill_share is not None and not 0 <= args.refill_share <= 1:
        raise UserError(f"--refill_share must be in [0, 1], got {args.refill_share}")
    if args.sender_max_new_tokens is not None and args.method != "textmas":  # else ignored without a word
        raise UserError("--sender_max_new_tokens is only valid with --method textmas")
    if args.sender_max_new_tokens is not None and args.sender_max_new_tokens < 1:
        raise UserError(f"--sender_max_new_tokens must be >= 1, got {args.sender_max_new_tokens}")
    from minitflow.tflow.latentmas import validate_options
    validate_options(args.method, latent_steps=args.latent_steps, topology=args.mas_topology,
                     realign=args.latent_realign, think=args.think)
    if args.checkpoint and args.method != "tflow":
        raise UserError("--checkpoint is only valid with --method tflow")
    if args.random_generator and args.method != "tflow":  # else ignored, yet recorded as the run's checkpoint
        raise UserError("--random_generator is only valid with --method tflow")
    if args.checkpoint and args.random_generator:
        raise UserError("pass either --checkpoint or --random_generator, not both")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UserError(f"TFlow checkpoint not found: {args.checkpoint}")
    resolve_device(args.device)


def sampling_from(args: argparse.Namespace) -> SamplingParams:
    """The flags' sampling; an unset --top_k is the model's (generation_config.json), as HF's."""
    style = prompts.resolve_style(args.dataset)
    max_new = args.max_new_tokens if args.max_new_tokens is not None else prompts.default_max_new_tokens(style)
    model_dir = model_dir_for(args)
    top_k = args.top_k
    if top_k is None:
        top_k = generation_top_k(model_dir)
    unsupported = unsupported_generation_settings(model_dir)
    if unsupported:  # not silent: the run is not sampled as HF generate would sample it
        print(f"warning: {model_dir / 'generation_config.json'} sets "
              f"{', '.join(f'{k}={v!r}' for k, v in unsupported.items())}, which HF generate applies under the "
              "official code and minitflow does not: its sampling differs", file=sys.stderr)
    temperature = 0.0 if args.greedy else OFFICIAL_TEMPERATURE if args.temperature is None else args.temperature
    return SamplingParams(max_new_tokens=max_new, temperature=temperature,
                          top_p=OFFICIAL_TOP_P if args.top_p is None else args.top_p, top_k=top_k, seed=args.seed)


# generation_config.json settings HF `generate` applies by itself (the official code leaves them to
# the file) that minitflow's sampler has no counterpart for, with the value that changes nothing
NEUTRAL_GENERATION = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "min_p": 0, "typical_p": 1.0,
                      "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0,
                      "min_length": 0, "num_beams": 1, "bad_words_ids": None, "suppress_tokens": None,
                      "begin_suppress_tokens": None, "sequence_bias": None, "forced_bos_token_id": None,
                      "forced_eos_token_id": None}


def unsupported_generation_settings(model_dir: Path) -> dict:
    """{key: value} of the model's generation_config.json that HF generate would apply and
    minitflow ignores (absent, null or neutral values are left out)."""
    cfg = generation_config(model_dir)
    return {k: cfg[k] for k, neutral in NEUTRAL_GENERATION.items()
            if cfg.get(k) is not None and cfg[k] != neutral and cfg[k] != []}


def model_and_checkpoint(args: argparse.Namespace) -> tuple[str, str | None]:
    """The model directory (or hub id) and checkpoint the flags select: no --model means the
    embedded demo and, for tflow, its trained tflow.pt."""
    model, checkpoint = args.model, args.checkpoint
    if model is None:
        model = str(demo_dir())
        if checkpoint is None and not args.random_generator and args.method == "tflow":
            checkpoint = str(Path(model) / "tflow.pt")
    return model, checkpoint


def model_dir_for(args: argparse.Namespace) -> Path:
    """The model folder the flags select (a hub id: its snapshot), refused without tokenizer.json:
    every command line reads text, and that must fail before outputs, checkpoint and weights."""
    from minitflow.model.weights import resolve_model_dir
    return resolve_model_dir(model_and_checkpoint(args)[0], need_tokenizer=True)


def load_for(args: argparse.Namespace, questions: int | None = None):
    """(llm, generator or None, model label, checkpoint label) for the flags given; with
    `questions`, the run's count: no more slots than they can fill (batch_size 20 for 3
    questions kept 20 slots' KV and CUDA graphs for nothing; outputs do not depend on it)."""
    from minitflow.tflow.checkpoint import load_checkpoint, random_generator
    check_model_args(args)
    model, checkpoint = model_and_checkpoint(args)
    if args.method == "tflow" and not checkpoint and not args.random_generator:
        raise UserError("--method tflow needs --checkpoint PATH (or --random_generator for a smoke test; "
                        "minitflow never falls back to a random generator silently)")
    device = resolve_device(args.device)
    if args.eager and args.compile:
        raise UserError("--eager and --compile exclude each other (--compile captures CUDA graphs of its own)")
    model_dir = model_dir_for(args)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    generator = None
    if args.method == "tflow" and checkpoint:
        # before the backbone: a checkpoint that is no checkpoint, or is for other dimensions, must
        # not cost a model load first (minutes at 4B); the config, checked against the weights'
        # headers (a generator is built at its sizes), is all the check needs
        from minitflow.model.weights import check_weights
        generator = load_checkpoint(checkpoint, check_weights(model_dir), resolve_dtype(args.dtype, device), device)
    # --batch_size questions in flight; the engine's slots are the requests they run at once
    llm = LLM.load(model_dir, dtype=args.dtype, device=device, compile=args.compile, need_tokenizer=True,
                   num_slots=min(args.batch_size, questions or args.batch_size) * slots_per_question(args.method),
                   cuda_graphs=False if args.eager else None)
    if args.method == "tflow" and generator is None:
        generator = random_generator(llm.cfg, seed=args.seed).to(device=llm.device, dtype=llm.dtype)
        generator.pg_layer_aggregator.float()
    return llm, generator, str(model), (checkpoint or ("random" if generator is not None else None))


def check_questions_fit(model_dir: Path, questions: Sequence[str], max_new_tokens: int,
                        names: Sequence[str], method: str | None = None, style: str = "gsm8k",
                        sender_questions: Sequence[str] | None = None, options: dict | None = None) -> None:
    """Refuse a question too long for the model even bare (every method's answering prompt holds
    it whole), counted with the model's tokenizer against its positions (the bound the engine
    enforces, LLM.max_seq_len): before the weights load (minutes at 4B) and before evaluate
    touches its folder; the engine would refuse it only when its turn came, after every question
    before it had run, and generate would then lose all of them. With `method`, also inside that
    method's prompts (methods.positions_needed): a question that fits bare may not fit there."""
    from minitflow.model.config import Qwen3Config
    from minitflow.model.tokenizer import Tokenizer
    limit = Qwen3Config.from_dir(model_dir).max_position_embeddings
    encode = Tokenizer(model_dir).encode
    for name, question in zip(names, questions):
        n = len(encode(question))
        if n + max_new_tokens > limit:
            raise UserError(f"{name}: the question alone is {n} tokens; with max_new_tokens {max_new_tokens} that is "
                            f"more than the model's {limit} positions")
    if method is None:
        return
    from minitflow.tflow.methods import positions_needed
    senders = questions if sender_questions is None else sender_questions
    for name, question, sender in zip(names, questions, senders):
        need = positions_needed(method, encode, style, question, sender, max_new_tokens, **(options or {}))
        if need > limit:
            raise UserError(f"{name}: its {method} prompts need {need} positions with max_new_tokens {max_new_tokens}, "
                            f"more than the model's {limit} positions")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, torchrun ending a failed job's ranks, `kill`), raised where
    Ctrl-C would be, so the same clean-up runs: temporary files removed, scoring stopped. Its
    default action ended the process inside a write, leaving the write's temporary file."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `main`; a UserError becomes one line on stderr and exit code 2; Ctrl-C and SIGTERM
    unwind (exit 130 and 143)."""
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
