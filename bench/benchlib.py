"""Benchmark helpers: the shape to measure (chosen by CUDA availability), random models, timing.

A plain module rather than conftest.py so that test modules can import it at collection time
without clashing with tests/conftest.py (both would be the module `conftest`).

On CPU (CI: 2 cores, no GPU) every benchmark runs at a tiny Qwen3 shape in float32, so the
whole `pytest --benchmark-only bench/` stays within a few minutes; only the ratios mean
anything there. With CUDA they run at Qwen3-4B's shape in bf16 with random weights built
directly on the GPU (nothing is downloaded). `MINITFLOW_BENCH_SHAPE=tiny|qwen3-4b` overrides
the choice and `MINITFLOW_BENCH_LAYERS=N` cuts the layer count (smoke runs of the big shape).
`MINITFLOW_BENCH_DECODE_LORA` sets lora_linear.DECODE_LORA for the run (bench/gpu_session.sh
passes the decode-step benchmark's fastest to the parts after it); `record` notes the path.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

try:  # `pip install -e .` is the normal set-up; a bare checkout still runs the benchmarks
    import minitflow  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minitflow.engine.llm import sync
from minitflow.model.kv_cache import KVCache
from minitflow.model.config import QWEN3_4B, Qwen3Config
from minitflow.model.lora import PROJECTIONS, LoraWeights, build_lora, projection_shapes
from minitflow.model.qwen3 import Qwen3Model
from minitflow.model.weights import empty_model
from minitflow.model import lora_linear

_path = os.environ.get("MINITFLOW_BENCH_DECODE_LORA")
if _path:
    if _path not in lora_linear.DECODE_LORA_PATHS:
        raise ValueError(f"MINITFLOW_BENCH_DECODE_LORA={_path!r}: choose one of {', '.join(lora_linear.DECODE_LORA_PATHS)}")
    lora_linear.DECODE_LORA = _path

TINY = Qwen3Config(
    vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=8, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
    max_position_embeddings=2048, eos_token_ids=(4095,),
)
SHAPES = {"tiny": TINY, "qwen3-4b": QWEN3_4B}

QUESTIONS = [  # GSM8K-style, written for this benchmark
    "A baker makes 12 trays of 24 cookies and sells 3/4 of them. How many cookies are left?",
    "Tom reads 15 pages a day for 2 weeks, then 20 pages a day for 10 days. How many pages in total?",
    "A shirt costs $40 and is discounted by 15%, then by another $5. What is the final price?",
    "Sara has 3 times as many marbles as Ben, and together they have 84. How many does Sara have?",
]

RANK = 4  # per sender, as the official ParameterGenerator produces
SENDERS = 2
COEF = 0.5 * 2.0  # sender weight 0.5 times the LoRA scale alpha/rank = 8/4


def shape_name() -> str:
    return os.environ.get("MINITFLOW_BENCH_SHAPE") or ("qwen3-4b" if torch.cuda.is_available() else "tiny")


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a benchmark needs to know about where and at what size it runs."""

    name: str  # "tiny" or "qwen3-4b"
    cfg: Qwen3Config
    device: torch.device
    dtype: torch.dtype
    decode_batches: tuple[int, ...]  # batch sizes of the decode-step benchmark
    rounds: int  # pedantic rounds for the micro benchmarks
    warmup: int

    @property
    def label(self) -> str:
        if self.device.type == "cuda":
            return f"{torch.cuda.get_device_name(self.device)}, {self.name}, {str(self.dtype)[6:]}"
        threads = torch.get_num_threads()
        return f"CPU, {threads} thread{'s' * (threads > 1)}, {self.name} shapes, {str(self.dtype)[6:]} - ratios only"


@functools.cache
def make_setup() -> Setup:
    name = shape_name()
    if name not in SHAPES:
        raise ValueError(f"MINITFLOW_BENCH_SHAPE={name!r}: choose one of {', '.join(SHAPES)}")
    cfg = SHAPES[name]
    if os.environ.get("MINITFLOW_BENCH_LAYERS"):
        cfg = dataclasses.replace(cfg, num_hidden_layers=int(os.environ["MINITFLOW_BENCH_LAYERS"]))
    if torch.cuda.is_available():
        return Setup(name, cfg, torch.device("cuda"), torch.bfloat16, (1, 20), rounds=20, warmup=3)
    # bf16 matmuls on CPU are slow and unrepresentative; float32 keeps the CPU ratios meaningful.
    return Setup(name, cfg, torch.device("cpu"), torch.float32, (1, 8), rounds=10, warmup=2)


# ---- building blocks -------------------------------------------------------------------------
def random_model(cfg: Qwen3Config, dtype: torch.dtype, device: torch.device,
                 seed: int = 0, max_positions: int | None = None) -> Qwen3Model:
    """Random weights initialised in place on the target device: no float32 or CPU copy."""
    torch.manual_seed(seed)
    model = empty_model(cfg, dtype, device, max_positions)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return model


def sender_factors(cfg: Qwen3Config, batch: int, device: torch.device, dtype: torch.dtype,
                   seed: int, rank: int = RANK) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    """One sender's random factors for every projection of every layer: {(layer, proj): (A, B)}."""
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = projection_shapes(cfg)
    out = {}
    for layer in range(cfg.num_hidden_layers):
        for p in PROJECTIONS:
            n_in, n_out = shapes[p]
            a = torch.randn(batch, rank, n_in, generator=g, device=device, dtype=dtype) * 0.01
            b = torch.randn(batch, n_out, rank, generator=g, device=device, dtype=dtype) * 0.01
            out[(layer, p)] = (a, b)
    return out


def random_lora(cfg: Qwen3Config, batch: int, device: torch.device, dtype: torch.dtype) -> LoraWeights:
    """Two senders of rank 4 fused the way the engine consumes them (build_lora)."""
    senders = [sender_factors(cfg, batch, device, dtype, seed=s) for s in range(SENDERS)]
    return build_lora(cfg, senders, [COEF] * SENDERS)


def new_cache(cfg: Qwen3Config, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> KVCache:
    return KVCache(cfg.num_hidden_layers, batch, max_len, cfg.num_key_value_heads, cfg.head_dim, dtype, device)


def random_ids(cfg: Qwen3Config, batch: int, length: int, device: torch.device | str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # stay clear of the EOS ids at the top of the vocabulary
    return torch.randint(0, cfg.vocab_size - 300, (batch, length), generator=g).to(device)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _status_kib(field: str) -> int | None:
    """A memory line of this process's /proc/self/status (KiB), or None without /proc."""
    path = Path("/proc/self/status")
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_rss_kib() -> int:
    """This process's peak resident set (KiB) since it started its program: VmHWM, not
    ru_maxrss, which a child inherits from its parent at fork (a benchmark subprocess of a
    large pytest process would report the parent's size)."""
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    import resource  # no /proc (not Linux): the inherited-maximum caveat applies
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def resident_kib() -> int:
    """This process's resident set now (KiB): VmRSS (Linux only)."""
    rss = _status_kib("VmRSS")
    if rss is None:
        raise RuntimeError("needs Linux's /proc")
    return rss


def script_json(script: str, *args: str, **run_kwargs) -> dict:
    """Run bench/`script` with `args` in a fresh Python process (a memory benchmark's peak is
    its own) and parse the JSON object it prints on its last line."""
    import json
    import subprocess
    out = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), *map(str, args)],
                         capture_output=True, text=True, check=True, **run_kwargs)
    return json.loads(out.stdout.strip().splitlines()[-1])


@functools.cache
def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy (read + write): the practical bandwidth limit
    that decode steps are compared against (3.02 TB/s on the H100 of issue 4)."""
    n = (1 << 30) if device.type == "cuda" else (1 << 26)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * n / min(round_times(lambda: dst.copy_(src), device, rounds=10, warmup=3))


# ---- timing ---------------------------------------------------------------------------------
def round_times(fn: Callable[[], Any], device: torch.device, rounds: int, warmup: int,
                iterations: int = 1) -> list[float]:
    """Seconds per call of each round of `iterations` back-to-back calls, one sync per round."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / iterations)
    return times


def pedantic_vs(benchmark, fn: Callable[[], Any], other: Callable[[], Any], device: torch.device,
                rounds: int, warmup: int, iterations: int = 1) -> tuple[float, float]:
    """Seconds per call of fn (timed by benchmark.pedantic) and of its comparison `other`.

    Both are the fastest round: on a shared runner the slow rounds measure other processes,
    not this code. With one call per round, `other` runs in pedantic's untimed setup hook
    before every round, so both sides see the same machine load; pedantic refuses a setup hook
    with several iterations, and then `other` is timed half before and half after. Each round
    syncs after its last call, so GPU work is inside the round without a sync per call.
    """
    calls = 0

    def step() -> None:
        nonlocal calls
        fn()
        calls += 1
        if calls % iterations == 0:
            sync(device)

    other_times: list[float] = []

    def time_other() -> None:
        sync(device)
        t0 = time.perf_counter()
        other()
        sync(device)
        other_times.append(time.perf_counter() - t0)

    if iterations == 1:
        benchmark.pedantic(step, rounds=rounds, warmup_rounds=warmup, setup=time_other)
        other_times = other_times[warmup:] or other_times
    else:
        half = max(1, rounds // 2)
        other_times = round_times(other, device, half, warmup, iterations)
        benchmark.pedantic(step, rounds=rounds, iterations=iterations, warmup_rounds=warmup)
        other_times += round_times(other, device, half, 0, iterations)
    sync(device)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: pedantic ran once and kept no statistics
        return min(round_times(fn, device, 1, 0, iterations)), min(other_times)
    return stats.stats.min, min(other_times)


def record(benchmark, setup: Setup, **info: Any) -> None:
    """extra_info with floats cut to 4 significant digits for the JSON and the README table."""
    benchmark.extra_info["device"] = setup.label
    benchmark.extra_info["decode_lora"] = lora_linear.DECODE_LORA
    for k, v in info.items():
        benchmark.extra_info[k] = float(f"{v:.4g}") if isinstance(v, float) else v


# ---- the real tokenizer and a generator, for the end-to-end benchmarks ------------------------
def tokenizer_dir() -> Path | None:
    """MINITFLOW_BENCH_TOKENIZER (a directory with tokenizer.json) or ../shared's golden model."""
    env = os.environ.get("MINITFLOW_BENCH_TOKENIZER")
    golden = Path(__file__).resolve().parents[2] / "shared" / "reference" / "golden-small" / "model"
    for d in (Path(env) if env else None, golden):
        if d is not None and (d / "tokenizer.json").is_file():
            return d
    return None


def tokenized_model(setup: Setup, model: Qwen3Model):
    """(model with Qwen3's vocabulary, Qwen3 tokenizer), or a pytest skip without a tokenizer:
    the tiny CPU model gets Qwen3's 151,936-row vocabulary so that the tokenizer's ids fit."""
    import pytest
    from minitflow.model.tokenizer import Tokenizer
    tok_dir = tokenizer_dir()
    if tok_dir is None:
        pytest.skip("no Qwen3 tokenizer: set MINITFLOW_BENCH_TOKENIZER or provide ../shared/reference")
    tokenizer = Tokenizer(tok_dir)
    if model.cfg.vocab_size >= tokenizer.vocab_size:
        return model, tokenizer
    cfg = dataclasses.replace(model.cfg, vocab_size=QWEN3_4B.vocab_size, eos_token_ids=QWEN3_4B.eos_token_ids)
    return random_model(cfg, setup.dtype, setup.device, max_positions=4096), tokenizer


def one_slot_tflow(tokenizer_dir: str, new_tokens: int):
    """(setup, a one-slot LLM with a Qwen3 tokenizer, a random TFlowGenerator, the official
    sampling on Qwen3-4B with `new_tokens`) for the scripts that run tflow one question at a
    time at the benchmarks' shape (the tiny one gets Qwen3's vocabulary)."""
    from minitflow import LLM, SamplingParams
    from minitflow.model.tokenizer import Tokenizer
    setup = make_setup()
    tokenizer = Tokenizer(tokenizer_dir)
    cfg = setup.cfg
    if cfg.vocab_size < tokenizer.vocab_size:
        cfg = dataclasses.replace(cfg, vocab_size=QWEN3_4B.vocab_size, eos_token_ids=QWEN3_4B.eos_token_ids)
    model = random_model(cfg, setup.dtype, setup.device, max_positions=4096)
    llm = LLM(model, tokenizer, eos_token_ids=[], num_slots=1)
    sampling = SamplingParams(max_new_tokens=new_tokens, temperature=0.6, top_p=0.95, top_k=20, ignore_eos=True, seed=0)
    return setup, llm, bench_generator(setup, cfg), sampling


def bench_generator(setup: Setup, cfg: Qwen3Config):
    """A random TFlowGenerator: the official dimensions at the 4B shape, small ones on CPU."""
    from minitflow.tflow.checkpoint import arch_for, random_generator
    overrides = None if setup.name == "qwen3-4b" else dict(d_model=128, head_dim=32, output_dim=32, token_dim=32)
    gen = random_generator(cfg, seed=0, arch=arch_for(cfg, overrides))
    gen.parameter_generator.to(setup.dtype)  # as load_checkpoint does; the aggregator stays float32
    return gen.to(setup.device).eval().requires_grad_(False)


def check_same_tokens(a: list[list[int]], b: list[list[int]], device: torch.device) -> float:
    """The share of equal tokens between two runs of the same requests, after checking it: CPU
    float32 must match exactly; on CUDA (bf16) only the lengths must. There GEMM kernels change
    with the batch size, so a sampled token may flip, and on random weights a flipped sender
    token changes the receiver's whole prompt (an H200 run saw 35-47% agreement): the share is
    recorded, and tests/test_gpu.py checks the decode paths against eager."""
    agree = sum(u == v for x, y in zip(a, b) for u, v in zip(x, y)) / max(sum(len(x) for x in a), 1)
    if device.type == "cuda":
        assert [len(x) for x in a] == [len(x) for x in b]
    else:
        assert a == b
    return agree
