"""Shared test helpers: what more than one test module uses (command-line checks, tiny models, engine
emulations, sample rows; the code samples, torch-free, are in code_samples.py). A helper lives here
rather than in one test module so that no test module imports another; fixtures live in conftest.py.
No tests here."""

from __future__ import annotations

import json
import re
import shutil
import zlib
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from minitflow import demo_dir
from minitflow.engine import runner
from minitflow.engine.engine import TokenRing
from minitflow.engine.llm import LLM
from minitflow.engine.prefix_cache import BLOCK
from minitflow.engine.request import Request
from minitflow.errors import run_cli
from minitflow.model.lora import PROJECTIONS, projection_shapes
from minitflow.tflow.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = demo_dir()


def seed_keys(seeds: list[int]) -> torch.Tensor:
    """(B,) int32 row keys by the tensor hash (sampler._hash32 on both halves of each seed): what
    sampler._seed_key computes in Python, and keys for tests that call the sampler's kernels."""
    from minitflow.engine.sampler import _GOLDEN, _M32, _bits, _hash32, _s32
    lo = _bits(torch.tensor([s & _M32 for s in seeds], dtype=torch.int64))
    hi = _bits(torch.tensor([(s >> 32) & _M32 for s in seeds], dtype=torch.int64))
    return _hash32(lo ^ _hash32(hi ^ _s32(_GOLDEN)))


# ---- command lines ------------------------------------------------------------------------

def fails(capsys, main, argv: list[str], *words: str) -> str:
    """Run a CLI: exit 2 with exactly one `error:` line, the last on stderr, naming `words`."""
    rc = run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def no_model_load(monkeypatch) -> None:
    """Loading a model during a test that must fail first is a test failure."""
    def boom(*a, **k):
        raise AssertionError("a model was loaded before the bad input was refused")
    monkeypatch.setattr(LLM, "load", classmethod(boom))


def model_copy(tmp_path: Path) -> Path:
    """The demo model's small files, to corrupt one at a time."""
    d = tmp_path / "model"
    d.mkdir()
    for f in DEMO.iterdir():
        if f.suffix == ".json" and f.name != "results.json":
            shutil.copy(f, d / f.name)
    return d


def gen_args(*extra) -> list:
    return ["--method", "baseline", "--question", "How many does the red box hold?", "--device", "cpu",
            "--max_new_tokens", "2", *extra]


# ---- tiny models ----------------------------------------------------------------------------

def write_tiny_qwen3(out_dir: Path, tokenizer_dir: Path, *, tie: bool, seed: int, hidden: int = 32,
                     layers: int = 2, heads: int = 2, kv_heads: int = 1, head_dim: int = 16,
                     intermediate: int = 80, vocab: int = 151936, bos: int = 151643,
                     eos: tuple[int, ...] = (151645, 151643), embed: float = 1.0, head: float = 1.0,
                     norm: float = 0.3, proj: float = 4.0) -> Path:
    """A random Qwen3 as a HF directory (float32 safetensors), drawn from `seed` alone with
    torch.Generator + randn in a fixed order, so the same weights come back on any machine and
    need not be committed. Projections are scaled up (std `proj`/sqrt(fan_in)) so that the
    prompt, the positions and the latent steps all change the greedy text."""
    from safetensors.torch import save_file
    out_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float, mean: float = 0.0) -> torch.Tensor:
        return (mean + std * torch.randn(*shape, generator=g)).float().contiguous()

    q, kv = heads * head_dim, kv_heads * head_dim
    sd = {"model.embed_tokens.weight": randn(vocab, hidden, std=embed)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = randn(hidden, std=norm, mean=1.0)
        sd[p + "self_attn.q_proj.weight"] = randn(q, hidden, std=proj / hidden ** 0.5)
        sd[p + "self_attn.k_proj.weight"] = randn(kv, hidden, std=proj / hidden ** 0.5)
        sd[p + "self_attn.v_proj.weight"] = randn(kv, hidden, std=proj / hidden ** 0.5)
        sd[p + "self_attn.o_proj.weight"] = randn(hidden, q, std=proj / q ** 0.5)
        sd[p + "self_attn.q_norm.weight"] = randn(head_dim, std=norm, mean=1.0)
        sd[p + "self_attn.k_norm.weight"] = randn(head_dim, std=norm, mean=1.0)
        sd[p + "post_attention_layernorm.weight"] = randn(hidden, std=norm, mean=1.0)
        sd[p + "mlp.gate_proj.weight"] = randn(intermediate, hidden, std=proj / hidden ** 0.5)
        sd[p + "mlp.up_proj.weight"] = randn(intermediate, hidden, std=proj / hidden ** 0.5)
        sd[p + "mlp.down_proj.weight"] = randn(hidden, intermediate, std=proj / intermediate ** 0.5)
    sd["model.norm.weight"] = randn(hidden, std=norm, mean=1.0)
    if not tie:
        sd["lm_head.weight"] = randn(vocab, hidden, std=head)
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": vocab,
           "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
           "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
           "rope_theta": 1000000.0, "rope_scaling": None, "attention_bias": False, "attention_dropout": 0.0,
           "tie_word_embeddings": tie, "use_sliding_window": False, "sliding_window": None,
           "max_window_layers": layers, "use_cache": True, "bos_token_id": bos, "eos_token_id": eos[0],
           "torch_dtype": "float32", "initializer_range": 0.02}
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    (out_dir / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos, "eos_token_id": list(eos)}, indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, out_dir / name)
    return out_dir


EOS = (1021, 1019)


# ---- the engine -----------------------------------------------------------------------------

def _random_factors(cfg, batch, rank, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = projection_shapes(cfg)
    return {(layer, p): (torch.randn(batch, rank, shapes[p][0], generator=g) * 0.3,
                         torch.randn(batch, shapes[p][1], rank, generator=g) * 0.3)
            for layer in range(cfg.num_hidden_layers) for p in PROJECTIONS}


class LateRing(TokenRing):
    """TokenRing's CUDA behaviour on the CPU: each step's tokens are read `run_ahead` steps later
    (at once when nothing runs), so a finished request's slot runs junk steps until the host hears."""

    def __init__(self, run_ahead: int):
        super().__init__(torch.device("cpu"), run_ahead)
        self.run_ahead = run_ahead

    def pop(self, drain: bool = False) -> list[tuple[list[Request | None], list[int]]]:
        out = []
        while self.pending and (drain or len(self.pending) > self.run_ahead):
            owners, toks, _ = self.pending.popleft()
            out.append((owners, toks))
        return out


@contextmanager
def _kv_bucket(size: int):
    old, runner.KV_BUCKET = runner.KV_BUCKET, size
    try:
        yield
    finally:
        runner.KV_BUCKET = old


def _llm(model, **kw) -> LLM:
    return LLM(model, eos_token_ids=[], **kw)


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(0, 150, (2 * BLOCK + 3,), generator=g).tolist()  # a common "role prompt"
    return [shared + torch.randint(0, 150, (int(k),), generator=g).tolist()
            for k in torch.randint(1, 20, (n,), generator=g)]


class WordTokenizer:
    """One id below the tiny model's EOS (159) per word or punctuation mark; decode writes `w<id>`
    words, which encode reads back as one id each (the textmas receiver reads its senders' texts).
    No id is special (Tokenizer.special_ids)."""

    special_ids: frozenset[int] = frozenset()

    def encode(self, text: str) -> list[int]:
        return [zlib.crc32(w.encode()) % 150 for w in re.findall(r"\w+|[^\w\s]", text)]

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids)

    def encode_counting_prefixes(self, text: str, cuts: list[int]) -> tuple[list[int], list[int]]:
        return self.encode(text), [len(self.encode(text[:c])) for c in cuts]


def _word_llm(model, slots: int = 2, cache: int = 0, **kw) -> LLM:
    return LLM(model, WordTokenizer(), eos_token_ids=[], num_slots=slots, prefix_cache_bytes=cache, **kw)


def _block_bytes(model) -> int:
    cfg = model.cfg
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * BLOCK * cfg.head_dim * 4  # float32 k and v


def _clean(llm: LLM, slots: int, cache: int) -> None:
    """Nothing in flight (a finished row's junk steps may stay unread: CUDA's run-ahead), every slot
    free, the prefix cache's byte count its entries' and within its budget."""
    e = llm.engine
    assert not e.in_flight() and not e.scheduler.running and e.scheduler.free == list(range(slots))
    pc = e.prefix_cache
    assert pc.used == sum(x.nbytes for x in pc.entries.values()) <= max(cache, 0)


# ---- training -------------------------------------------------------------------------------

ARCH = {"d_model": 64, "head_dim": 16, "token_dim": 64, "output_dim": 64}


def _cfg(tiny: Path, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(model=str(tiny), train=str(tiny / "train.jsonl"), eval=str(tiny / "eval.jsonl"), out=str(out),
                       pg_arch=dict(ARCH), steps=4, batch_size=4, lr=1e-2, warmup=1, eval_every=2, eval_size=4,
                       eval_batch_size=4, eval_max_new_tokens=4, checkpoint_layers=False, progress=False, device="cpu")
    return replace(base, **kw)


def _optimiser_grads(monkeypatch) -> list[list[torch.Tensor]]:
    """Spy on the trainer's optimiser: per optimiser step, the gradients it is given (after
    accumulation and clipping), in parameter order."""
    from minitflow.tflow import training
    seen, real = [], training.make_optimizer

    def make(*args, **kwargs):
        opt, sched = real(*args, **kwargs)
        opt.register_step_pre_hook(lambda o, a, k: seen.append(
            [torch.zeros_like(p) if p.grad is None else p.grad.clone() for g in o.param_groups for p in g["params"]]))
        return opt, sched
    monkeypatch.setattr(training, "make_optimizer", make)
    return seen


def rates_taken(monkeypatch) -> list[float]:
    """The learning rate of each optimiser step train() takes from here on, appended as it steps."""
    from minitflow.tflow import training
    lrs, real = [], training.make_optimizer

    def make(*args, **kwargs):
        opt, sched = real(*args, **kwargs)
        opt.register_step_pre_hook(lambda o, a, k: lrs.append(o.param_groups[0]["lr"]))
        return opt, sched
    monkeypatch.setattr(training, "make_optimizer", make)
    return lrs


KILL_AFTER_SAVE = """
import os, signal, sys
from minitflow.tflow import training
from minitflow.train import parse_args
real = training.save_checkpoint
def save(gen, path, extra=None):
    real(gen, path, extra)
    if extra is not None and extra["step"] == int(sys.argv[1]):  # the state: the save is complete
        os.kill(os.getpid(), signal.SIGKILL)
training.save_checkpoint = save
training.train(parse_args(sys.argv[2:]))
"""


# ---- evaluate -------------------------------------------------------------------------------

def _partial_ids(part: Path) -> list[str]:
    """Ids of the complete rows of a partial file (a line cut by a crash is not one)."""
    ids = []
    for line in part.read_bytes().decode("utf-8").split("\n"):
        try:
            ids.append(json.loads(line)["id"])
        except json.JSONDecodeError:
            continue
    return ids


def _box_rows(path: Path, n: int = 8, wrong: tuple[int, ...] = (1, 4, 6)) -> Path:
    """gsm8k-format rows the demo model answers right (the facts are in the question); the
    rows in `wrong` have a gold answer that is off by one, so they score wrong."""
    from minitflow import demo
    rows = []
    for i, r in enumerate(demo.make_examples(n, seed=7)):
        gold = int(demo.gold_value(r["answer"]))
        gold = (gold + 1) % 10 if i in wrong else gold
        rows.append({"question": r["sender_question"], "answer": f"Read it off.\n#### {gold}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _demo_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--method", "baseline", "--dataset", "gsm8k", "--data_file", str(data), "--device", "cpu",
            "--greedy", "--max_new_tokens", "8", "--batch_size", "3", "--output_dir", str(out), *extra]


def _last_plan(out: Path) -> str:
    """The last run's "N samples, K already done, M for rank r/w" log line."""
    return [line for line in (out / "run.log").read_text().splitlines() if " already done, " in line][-1]


def golden_with_eos(folder: Path, model: Path, eos_ids: list[int]) -> LLM:
    """The model in `model` (golden-small's) with `eos_ids` in its generation_config.json, its other
    files linked into `folder`: the official fixtures made with extra EOS ids ran on it."""
    for f in model.iterdir():
        if f.name != "generation_config.json":
            (folder / f.name).symlink_to(f)
    gen = json.loads((model / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": eos_ids}))
    llm = LLM.load(folder, dtype="float32", device="cpu")
    assert llm.eos_token_ids == set(eos_ids)
    return llm
