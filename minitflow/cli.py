"""What the command lines that load a model share: the checks of the model/generation flags and loading
(the flags themselves are flags.py's, and run_cli, which makes user errors one line, is errors.py's:
torch-free, so that --help, a mistyped flag, score and report answer before torch loads)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from minitflow.engine.llm import LLM, generation_config, generation_top_k, resolve_device, resolve_dtype
from minitflow.engine.sampler import SamplingParams
from minitflow.errors import UserError
from minitflow.files import demo_dir
from minitflow.flags import OFFICIAL_TEMPERATURE, OFFICIAL_TOP_P
from minitflow.model.config import Qwen3Config
from minitflow.tflow import prompts
from minitflow.tflow.methods import slots_per_question
from minitflow.tflow.stream import check_samples

if TYPE_CHECKING:
    from minitflow.tflow.checkpoint import TFlowGenerator

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
    if args.greedy and args.temperature is not None:  # one of them would be ignored
        raise UserError("pass either --greedy or --temperature (0 is greedy), not both")
    for flag in ("top_p", "top_k"):
        if args.greedy and getattr(args, flag) is not None:  # greedy samples nothing: it would be ignored
            raise UserError(f"--{flag} has no effect with --greedy (which takes the top token): pass one of them")
        if args.temperature == 0 and getattr(args, flag) is not None:  # temperature 0 is greedy: ignored as well
            raise UserError(f"--{flag} has no effect with --temperature 0 (greedy: the top token): pass one of them")
    given = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_p", "top_k", "seed")}
    try:  # SamplingParams' own checks; each of its errors begins with the field's name, which is the flag's
        SamplingParams(**{k: v for k, v in given.items() if v is not None})
    except UserError as e:
        raise UserError(f"--{e}") from None
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.refill_share is not None and not 0 <= args.refill_share <= 1:
        raise UserError(f"--refill_share must be in [0, 1], got {args.refill_share}")
    if args.sender_max_new_tokens is not None and args.method != "textmas":  # else ignored without a word
        raise UserError("--sender_max_new_tokens is only valid with --method textmas")
    if args.sender_max_new_tokens is not None and args.sender_max_new_tokens < 1:
        raise UserError(f"--sender_max_new_tokens must be >= 1, got {args.sender_max_new_tokens}")
    from minitflow.tflow.latentmas import CLI_FLAGS, validate_options
    validate_options(args.method, latent_steps=args.latent_steps, topology=args.mas_topology,
                     realign=args.latent_realign, think=args.think, flags=CLI_FLAGS)
    if args.checkpoint and args.method != "tflow":
        raise UserError("--checkpoint is only valid with --method tflow")
    if args.random_generator and args.method != "tflow":  # else ignored, yet recorded as the run's checkpoint
        raise UserError("--random_generator is only valid with --method tflow")
    if args.checkpoint and args.random_generator:
        raise UserError("pass either --checkpoint or --random_generator, not both")
    if args.eager and args.compile:
        raise UserError("--eager and --compile exclude each other (--compile captures CUDA graphs of its own)")
    if args.method == "tflow" and not model_and_checkpoint(args)[1] and not args.random_generator:
        # here, not after the model is resolved: a hub id would be downloaded (8 GB at 4B) only to be refused
        raise UserError("--method tflow needs --checkpoint PATH (or --random_generator for a smoke test; "
                        "minitflow never falls back to a random generator silently)")
    if args.checkpoint:
        from minitflow.tflow.checkpoint import checkpoint_file
        checkpoint_file(args.checkpoint)
    resolve_device(args.device)


def sampling_from(args: argparse.Namespace, model_dir: Path) -> SamplingParams:
    """The flags' sampling; an unset --top_k is the model's (`model_dir`'s generation_config.json), as HF's."""
    style = prompts.resolve_style(args.dataset)
    max_new = args.max_new_tokens if args.max_new_tokens is not None else prompts.default_max_new_tokens(style)
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


def check_n_samples(n_samples: object, sampling: SamplingParams | None = None) -> None:
    """--n_samples: an integer in [1, MAX_SAMPLES]; above 1, with `sampling`, not greedy (K identical outputs)."""
    check_samples(n_samples, "--n_samples")
    if sampling is not None and n_samples > 1 and sampling.temperature == 0:
        raise UserError(f"--n_samples {n_samples} with greedy decoding (--greedy or --temperature 0) gives "
                        f"{n_samples} identical outputs per question: sample with a --temperature above 0, or "
                        "leave --n_samples out")


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
    every command line reads text, and that must fail before outputs, checkpoint and weights.
    Called once a run, which passes the folder on: a hub id not in the cache is looked up on the hub
    each time, and two calls could see two snapshots if the hub's main moved between them."""
    from minitflow.model.weights import resolve_model_dir
    return resolve_model_dir(model_and_checkpoint(args)[0], need_tokenizer=True)


@dataclass
class LoadPlan:
    """What plan_load checked and read, for load_for: nothing of it is on the device yet."""
    model_dir: Path
    device: torch.device
    cfg: Qwen3Config
    weights: int  # bytes of the backbone's parameters in the run's dtype plus the generator's
    generator: "TFlowGenerator | None"  # a checkpoint's, on the CPU until the backbone has loaded
    model: str
    checkpoint: str | None


def generator_bytes(gen, dtype: torch.dtype) -> int:
    """Bytes a tflow generator takes on the device: its parameter generator in the run's dtype,
    its layer aggregator in float32 (load_for keeps it there); `gen` may be on meta."""
    return (sum(p.numel() for p in gen.parameter_generator.parameters()) * dtype.itemsize
            + sum(p.numel() for p in gen.pg_layer_aggregator.parameters()) * 4)


def plan_load(args: argparse.Namespace, model_dir: Path,
              positions: Sequence[tuple[int, int]] | None = None) -> LoadPlan:
    """Every check load_for makes before it allocates on the device: the flags, the config and
    weight headers of `model_dir` (model_dir_for's, read once), a --checkpoint (read and checked on the CPU: a file
    that is no checkpoint, or is for other dimensions, must not cost a model load), and with
    `positions` the memory check. evaluate runs it before it claims its output folder."""
    from minitflow.model.weights import read_weights
    from minitflow.tflow.checkpoint import TFlowGenerator, arch_for, load_checkpoint
    check_model_args(args)
    model, checkpoint = model_and_checkpoint(args)
    device = resolve_device(args.device)
    cfg, numel = read_weights(model_dir)
    dtype = resolve_dtype(args.dtype, device)
    weights = numel * dtype.itemsize
    generator = None
    if args.method == "tflow" and checkpoint:
        generator = load_checkpoint(checkpoint, cfg, dtype, "cpu")
        if device.type != "cpu":  # on the CPU it is in memory already: MemAvailable is read after it
            weights += generator_bytes(generator, dtype)
    elif args.method == "tflow":  # a random one, built after the backbone: counted on meta, nothing allocated
        with torch.device("meta"):
            weights += generator_bytes(TFlowGenerator(arch_for(cfg), cfg), dtype)
    plan = LoadPlan(model_dir, device, cfg, weights, generator, str(model), checkpoint)
    if positions is not None:
        check_memory(args, plan, positions)
    return plan


def load_for(args: argparse.Namespace, plan: LoadPlan, positions: Sequence[tuple[int, int]] | None = None):
    """(llm, generator or None, model label, checkpoint label) for the flags given and `plan`,
    plan_load's for them. With `positions` (check_questions_fit's, one per question of the run in
    the order they run): no more slots than those questions fill (engine_slots), and a run whose
    weights and KV cache cannot fit in the device's free memory is refused before anything is on
    the device (check_memory: made again here, for these positions; it reads nothing)."""
    from minitflow.tflow.checkpoint import random_generator
    if positions is not None:
        check_memory(args, plan, positions)
    device = plan.device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # --batch_size questions in flight; the engine's slots are the requests they run at once
    llm = LLM.load(plan.model_dir, dtype=args.dtype, device=device, compile=args.compile, need_tokenizer=True,
                   num_slots=engine_slots(args.method, args.batch_size, len(positions) if positions else None),
                   cuda_graphs=False if args.eager else None)
    generator = plan.generator
    if generator is not None:
        generator = generator.to(device=llm.device)
    elif args.method == "tflow":
        generator = random_generator(llm.cfg, seed=args.seed).to(device=llm.device, dtype=llm.dtype)
        generator.pg_layer_aggregator.float()
    return llm, generator, plan.model, (plan.checkpoint or ("random" if generator is not None else None))


def check_questions_fit(model_dir: Path, questions: Sequence[str], max_new_tokens: int,
                        names: Sequence[str], method: str | None = None, style: str = "gsm8k",
                        sender_questions: Sequence[str] | None = None,
                        options: dict | None = None) -> list[tuple[int, int]] | None:
    """Refuse a question too long for the model even bare (every method's answering prompt holds
    it whole), counted with the model's tokenizer against its positions (the bound the engine
    enforces, LLM.max_seq_len): before the weights load (minutes at 4B) and before evaluate
    touches its folder; the engine would refuse it only when its turn came, after every question
    before it had run, and generate would then lose all of them. With `method`, also inside that
    method's prompts (methods.positions_needed): a question that fits bare may not fit there,
    and returns each question's (positions needed, positions its senders hold beside the engine)
    (methods.request_positions): what load_for's memory check sizes the KV cache from."""
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
        return None
    from minitflow.tflow.methods import request_positions
    senders = questions if sender_questions is None else sender_questions
    # textmas' senders generate their own 1,024 tokens whatever max_new_tokens says: named, or the
    # line sends the user to a flag that cannot make the question fit (as run_method's own check)
    limits = f" and sender_max_new_tokens {(options or {}).get('sender_max_new_tokens') or prompts.TEXTMAS_SENDER_MAX_NEW_TOKENS}" \
        if method == "textmas" else ""
    fits = []
    for name, question, sender in zip(names, questions, senders):
        need, held = request_positions(method, encode, style, question, sender, max_new_tokens, **(options or {}))
        if need > limit:
            raise UserError(f"{name}: its {method} prompts need {need} positions with max_new_tokens {max_new_tokens}"
                            f"{limits}, more than the model's {limit} positions")
        fits.append((need, held))
    return fits


def engine_slots(method: str, batch_size: int, questions: int | None = None) -> int:
    """The engine's slots for `batch_size` questions in flight (textmas: two a question), no more
    than the run's `questions` fill: batch_size 20 for 3 questions kept 20 slots' KV and CUDA
    graphs for nothing (outputs do not depend on it)."""
    return min(batch_size, questions or batch_size) * slots_per_question(method)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on `device`: CUDA's free memory (torch.cuda.mem_get_info), on CPU
    MemAvailable from /proc/meminfo; None where it cannot be read (not Linux)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def kv_cache_bytes(cfg, dtype: torch.dtype, method: str, batch_size: int,
                   positions: Sequence[tuple[int, int]]) -> tuple[int, int, int]:
    """(bytes, slots, positions per slot) of the KV cache a run of `batch_size` questions in flight
    holds at least, `positions` being each question's (positions needed, positions its senders
    hold beside the engine) in run order: the engine's slots (load_for's num_slots) grown, as the
    engine grows them (runner.cache_positions), to the run's longest request; for latentmas also
    the first group's sender rows (latentmas.Rows, as many rows as the group and as long as its
    longest), held until its judgers are in their slots, that is while the engine's cache is first
    made for the group's longest judger; and each later question's sender row (its group holds at
    least that row) beside the engine's cache grown for the judgers surely admitted before that
    group starts: admission is first in, first out and the group starts once a judger has ended,
    so at least questions [0, i - 2n + 2) of n in flight (at least question 0)."""
    from minitflow.engine.runner import cache_positions
    from minitflow.model.kv_cache import kv_bytes
    n = min(batch_size, len(positions))
    slots = engine_slots(method, batch_size, len(positions))
    per_position = kv_bytes(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, dtype)
    limit = cfg.max_position_embeddings  # LLM.max_seq_len: load_for loads every position
    size = cache_positions(max(need for need, _ in positions), limit)
    total = slots * size * per_position
    first = positions[:n]
    held = max(h for _, h in first)
    if held:  # latentmas: the first group's sender rows beside the engine's cache made for that group
        total = max(total, (slots * cache_positions(max(need for need, _ in first), limit) + n * held) * per_position)
    admitted = 0  # the longest need among the judgers surely admitted before question i's senders run
    for i in range(n, len(positions)):
        known = max(1, i - 2 * n + 2)  # questions [0, known): grows by at most one per question
        admitted = max(admitted, positions[known - 1][0])
        if positions[i][1]:
            total = max(total, (slots * cache_positions(admitted, limit) + positions[i][1]) * per_position)
    return total, slots, size


def _size(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def check_memory(args: argparse.Namespace, plan: LoadPlan, positions: Sequence[tuple[int, int]]) -> None:
    """Refuse a run whose weights (plan.weights: from the safetensors headers, in the run's dtype,
    and the tflow generator's) and KV cache (kv_cache_bytes) exceed the memory free on the
    plan's device, naming the largest --batch_size that fits: an out-of-memory error would
    otherwise come at the first long request, maybe hours in. A lower bound, so that only what
    clearly cannot fit is refused: activations, CUDA graphs, the prefix cache (filled as prompts
    repeat), tflow's per-slot LoRA buffers and the rotary tables are left out, not guessed.
    Nothing is on the device yet, so the free memory is all the run's; nothing is read again."""
    device, cfg, weights = plan.device, plan.cfg, plan.weights
    available = available_memory(device)
    if available is None or not positions:
        return
    dtype = resolve_dtype(args.dtype, device)

    def needed(batch: int) -> tuple[int, int, int]:
        kv, slots, size = kv_cache_bytes(cfg, dtype, args.method, batch, positions)
        return weights + kv, slots, size

    batch = min(args.batch_size, len(positions))
    need, slots, size = needed(batch)
    if need <= available:
        return
    lo, hi = 0, batch - 1  # the largest batch in [1, batch) that fits (0: none); needed() grows with it
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if needed(mid)[0] <= available else (lo, mid - 1)
    hint = (f"--batch_size {lo} is the largest that fits" if lo else
            "not even --batch_size 1 fits (fewer --max_new_tokens, a smaller --dtype or a device with more memory)")
    raise UserError(f"--batch_size {args.batch_size} cannot fit on {device}: the weights ({_size(weights)}, "
                    f"{str(dtype).removeprefix('torch.')}) and KV cache ({_size(need - weights)}: {slots} "
                    f"slot{'s' * (slots != 1)} x {size} positions) need at least "
                    f"{need:,} bytes, {available:,} are free; {hint}")
