"""The generator trainer on a tiny random Qwen3 (CPU, float32, a few seconds)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from minitflow.engine.llm import LLM
from minitflow.errors import UserError
from minitflow.tflow.checkpoint import arch_for, load_checkpoint, random_generator, save_checkpoint
from minitflow.tflow.training import (IGNORE, Example, TrainConfig, answer_loss, batch_loss, build_generator,
                                      init_for_training, make_batch, read_examples, train, trainable)
from helpers import ARCH, KILL_AFTER_SAVE, ROOT, _cfg, _optimiser_grads, rates_taken

# Parameters no forward uses: the official state dict has cond_proj, but use_cond_proj=False.
UNUSED = {"parameter_generator.model.cond_proj.weight", "parameter_generator.model.cond_proj.bias"}


def _rows(tiny: Path, n: int = 4) -> list[Example]:
    return read_examples(tiny / "train.jsonl")[:n]


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_saved_backbone_is_readable_as_every_written_file(tiny):
    """safetensors' save_file creates its file 0600: a demo built on a shared machine had a
    model.safetensors nobody else could read, beside 0644 config and tokenizer files."""
    assert (tiny / "model.safetensors").stat().st_mode & 0o777 == (tiny / "config.json").stat().st_mode & 0o777
    assert not list(tiny.glob(".*tmp"))


def test_one_step_changes_generator_and_lowers_loss(tiny, llm):
    gen = build_generator(_cfg(tiny, tiny / "unused.pt"), llm)
    rows = _rows(tiny)
    before = _params(gen)
    loss0, _ = batch_loss(llm, gen, "gsm8k", rows)
    opt = torch.optim.AdamW([p for p in gen.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    loss0.backward()
    opt.step()
    with torch.no_grad():
        loss1, _ = batch_loss(llm, gen, "gsm8k", rows)
    assert loss1.item() < loss0.item()
    changed = [k for k, v in _params(gen).items() if not torch.equal(v, before[k])]
    # the zero-initialised B head is what the first step can move (A's gradient is B^T-weighted = 0)
    assert "parameter_generator.model.proj_out_B.weight" in changed


def test_initial_lora_is_zero(tiny, llm):
    """`--init random` starts from the frozen backbone: proj_out_B = 0 makes every B factor zero."""
    gen = build_generator(_cfg(tiny, tiny / "unused.pt"), llm)
    hidden = torch.randn(2, llm.cfg.num_hidden_layers + 1, 5, llm.cfg.hidden_size)
    factors = gen(hidden)
    assert all(b.abs().max() == 0 for _, b in factors.values())
    assert any(a.abs().max() > 0 for a, _ in factors.values())


def test_gradients_reach_every_used_generator_parameter(tiny, llm):
    # the default (non-zero) initialisation, so no zero head blocks the gradient on its way back
    gen = random_generator(llm.cfg, seed=0, arch=arch_for(llm.cfg, ARCH)).float().train().requires_grad_(True)
    loss, _ = batch_loss(llm, gen, "gsm8k", _rows(tiny))
    loss.backward()
    missing = sorted(n for n, p in gen.named_parameters()
                     if n not in UNUSED and (p.grad is None or p.grad.abs().max() == 0))
    # At initialisation the layer weights are all equal, so the softmax over layers is uniform
    # whatever the temperature: log_temperature's gradient is exactly zero until they differ.
    assert missing == ["pg_layer_aggregator.log_temperature"]
    gen.zero_grad(set_to_none=True)
    with torch.no_grad():
        gen.pg_layer_aggregator.layer_weights.normal_()
    loss, _ = batch_loss(llm, gen, "gsm8k", _rows(tiny))
    loss.backward()
    missing = sorted(n for n, p in gen.named_parameters()
                     if n not in UNUSED and (p.grad is None or p.grad.abs().max() == 0))
    assert missing == []
    assert all(p.grad is None for n, p in gen.named_parameters() if n in UNUSED)
    assert all(p.grad is None for p in llm.model.parameters())


def test_training_leaves_the_backbone_unchanged_and_round_trips(tiny, llm, tmp_path):
    before = _params(llm.model)
    out = tmp_path / "tflow.pt"
    result = train(_cfg(tiny, out), llm=llm)
    assert all(torch.equal(v, before[k]) for k, v in llm.model.state_dict().items())
    assert not any(p.requires_grad for p in llm.model.parameters())
    assert [h["step"] for h in result["history"]] == [2, 4]
    assert all(0.0 <= h["eval_accuracy"] <= 1.0 and h["eval_loss"] > 0 for h in result["history"])
    # frozen like the loaded one: SDPA picks another kernel for inputs that require grad (1e-9 apart)
    gen = result["generator"].eval().requires_grad_(False)
    loaded = load_checkpoint(out, llm.cfg)
    assert loaded.samples_seen == 4 * 4
    hidden = torch.randn(3, llm.cfg.num_hidden_layers + 1, 7, llm.cfg.hidden_size)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        want, got = gen(hidden, mask), loaded(hidden, mask)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k][0], got[k][0]) and torch.equal(want[k][1], got[k][1]), k
    assert any(b.abs().max() > 0 for _, b in got.values())  # it did learn something
    # the training state lives beside the checkpoint, not in it
    state = torch.load(str(out) + ".state.pt", weights_only=False)
    assert state["step"] == 4 and "optimizer" in state
    assert "optimizer" not in torch.load(out, weights_only=False)


def test_the_evaluations_exact_match_runs_the_generator_generate_loads(tiny, tmp_path, monkeypatch):
    """Held-out exact match is meant to be the inference path, but it ran the float32 generator
    being trained, while `generate --checkpoint` (as the official code) runs the checkpoint's
    generator in the backbone's dtype: on a bfloat16 backbone (every CUDA run's default) the
    accuracy the trainer reported was not that of the checkpoint it saved. Now the evaluation's
    generator gives bitwise the factors of the saved checkpoint loaded as generate loads it."""
    from minitflow.tflow import training
    llm = LLM.load(tiny, dtype="bfloat16", device="cpu")
    hidden = torch.randn(2, llm.cfg.num_hidden_layers + 1, 5, llm.cfg.hidden_size)
    seen, real = [], training.eval_accuracy

    def spy(llm_, gen, *args, **kwargs):
        with torch.no_grad():
            seen.append(gen(hidden))
        return real(llm_, gen, *args, **kwargs)
    monkeypatch.setattr(training, "eval_accuracy", spy)
    out = tmp_path / "bf.pt"
    result = train(_cfg(tiny, out, steps=2, eval_every=2), llm=llm)
    assert result["history"][-1]["step"] == 2 and len(seen) == 1
    assert result["generator"].training  # the trained generator itself is left as it was: float32, training
    assert next(result["generator"].parameter_generator.parameters()).dtype == torch.float32
    with torch.no_grad():
        want = load_checkpoint(out, llm.cfg, dtype=llm.dtype)(hidden)
    assert any(b.abs().max() > 0 for _, b in want.values())
    for k in want:
        assert torch.equal(seen[0][k][0], want[k][0]) and torch.equal(seen[0][k][1], want[k][1]), k


def test_a_checkpoint_is_synced_to_disk_before_it_replaces_the_last(tiny, llm, tmp_path, monkeypatch):
    """save_checkpoint renamed its temporary file over the last checkpoint without an fsync
    (files.write_bytes has one): after a power cut the rename could reach the disk before the
    data, an empty file where a whole checkpoint was. Now the whole file is synced first."""
    import os
    from minitflow.tflow import checkpoint
    synced, real = [], os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        synced.append((st.st_ino, st.st_size))
        return real(fd)
    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    path = tmp_path / "c.pt"
    save_checkpoint(init_for_training(random_generator(llm.cfg, arch=arch_for(llm.cfg, ARCH))), path)
    st = path.stat()
    assert synced == [(st.st_ino, st.st_size)]
    load_checkpoint(path, llm.cfg)


def test_load_checkpoint_ignores_extra_keys(tiny, llm, tmp_path):
    gen = init_for_training(random_generator(llm.cfg, arch=arch_for(llm.cfg, ARCH)))
    save_checkpoint(gen, tmp_path / "x.pt", extra={"optimizer": {"anything": 1}, "step": 3})
    loaded = load_checkpoint(tmp_path / "x.pt", llm.cfg)
    assert torch.equal(loaded.parameter_generator.model.proj_out_A.weight, gen.parameter_generator.model.proj_out_A.weight)


def _small_backbone():
    from minitflow.model.config import Qwen3Config
    return Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)


def _checksums(gen: torch.nn.Module) -> tuple[float, float]:
    """Two float64 sums over every weight but the zero cond_proj (one position-weighted)."""
    ts = [v.double().flatten() for k, v in gen.state_dict().items() if k not in UNUSED]
    return sum(float(t.abs().sum()) for t in ts), sum(float((t * (torch.arange(t.numel()) % 7)).sum()) for t in ts)


def test_random_generator_leaves_the_global_rng_alone():
    """random_generator called torch.manual_seed(seed): building one reset the caller's random
    stream. Now torch's RNG state is the same before and after, a seed still gives the same
    weights whatever that state, and those are the weights the global reseed gave (pinned
    before the change), so goldens made with --random_generator stay bitwise."""
    cfg, arch = _small_backbone(), dict(d_model=64, head_dim=16, output_dim=16, token_dim=16)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = random_generator(cfg, seed=3, arch=arch_for(cfg, arch)).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(5)  # another caller state
    second = random_generator(cfg, seed=3, arch=arch_for(cfg, arch))
    assert first.keys() == second.state_dict().keys()
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.items())
    assert _checksums(second) == pytest.approx((16667.119778152297, 2268.6831576210334), rel=1e-9)


def test_training_init_is_seeded_and_leaves_the_global_rng_alone():
    """--init random: init_for_training draws on from the stream that built the modules, as
    when random_generator reseeded the global RNG (pinned before the change): the same start
    for a seed whatever the caller's RNG state, which build_generator leaves as it was."""
    from types import SimpleNamespace
    cfg = _small_backbone()
    tc = _cfg(Path("unused"), Path("unused.pt"), seed=5, pg_arch=dict(d_model=64, head_dim=16, output_dim=16, token_dim=16))
    llm = SimpleNamespace(cfg=cfg, device=torch.device("cpu"))
    gens = []
    for caller_seed in (0, 99):
        torch.manual_seed(caller_seed)
        state = torch.get_rng_state()
        gens.append(build_generator(tc, llm))
        assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, gens[1].state_dict()[k]) for k, v in gens[0].state_dict().items())
    assert _checksums(gens[0]) == pytest.approx((16300.421706977719, 1535.4724297561354), rel=1e-9)


def test_cond_proj_starts_at_zero_as_the_officials(tiny, llm, tmp_path):
    """The official ParameterGenerator zeroes cond_proj (unused: use_cond_proj=False) right
    after building it; ours kept nn.Linear's random init, which our checkpoints carried. It is
    zeroed after that init, so every other weight still draws the same random stream."""
    for gen in (random_generator(llm.cfg, arch=arch_for(llm.cfg, ARCH)), build_generator(_cfg(tiny, tmp_path / "x.pt"), llm)):
        assert all(v.abs().max() == 0 for k, v in gen.state_dict().items() if k in UNUSED)
    train(_cfg(tiny, tmp_path / "t.pt", steps=1, eval=None), llm=llm)
    saved = torch.load(tmp_path / "t.pt", weights_only=True)["parameter_generator"]
    assert all(saved[k.removeprefix("parameter_generator.")].abs().max() == 0 for k in UNUSED)


@pytest.mark.parametrize("kw", [{}, {"grad_accum": 2, "batch_size": 2}, {"condition": "zero"}])
def test_resume_continues_exactly(tiny, llm, tmp_path, kw):
    """4 steps in one go == 2 steps, stop, --resume to 4 (same data order, optimiser, schedule);
    with gradient accumulation (the data stream replays grad_accum batches per step) and for the
    zero-condition ablation (its frozen input projection stays out of the optimiser on resume)."""
    straight = train(_cfg(tiny, tmp_path / "a.pt", eval=None, **kw), llm=llm)["generator"]
    half = train(_cfg(tiny, tmp_path / "b.pt", eval=None, **kw), llm=llm, stop_after=2)
    assert half["step"] == 2
    resumed = train(_cfg(tiny, tmp_path / "b.pt", eval=None, resume=str(tmp_path / "b.pt"), **kw), llm=llm)
    assert resumed["step"] == 4 and resumed["generator"].samples_seen == 16
    want = straight.state_dict()
    for k, v in resumed["generator"].state_dict().items():
        assert torch.equal(v, want[k]), k  # bitwise: the same operations on the same values


def test_a_run_stopped_between_records_resumes_to_the_straight_runs_history(tiny, llm, tmp_path):
    """train(stop_after=1) with records every 3 steps made a record of its own at the stop (step 1)
    and started the next one afresh: the resumed run's step-3 training loss averaged steps 2-3
    where the straight run's averages 1-3, a loss curve of other points. The stop now records
    nothing and its loss goes on in the state, as a signal's does: the same history, the same weights."""
    straight = train(_cfg(tiny, tmp_path / "a.pt", eval=None, eval_every=3), llm=llm)
    assert [h["step"] for h in straight["history"]] == [3, 4]
    half = train(_cfg(tiny, tmp_path / "b.pt", eval=None, eval_every=3), llm=llm, stop_after=1)
    assert half["step"] == 1 and half["history"] == []
    resumed = train(_cfg(tiny, tmp_path / "b.pt", eval=None, eval_every=3, resume=str(tmp_path / "b.pt")), llm=llm)
    assert resumed["history"] == straight["history"]
    want = straight["generator"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())


def _straight_and_cut(tiny, llm, tmp_path, monkeypatch, cut: int):
    """The generator of a straight 4-step run (a.pt, a save a step), and the same run (b.pt) cut by
    Ctrl-C at its `cut`-th file write (each save writes two: checkpoint, then state); no
    temporary file is left behind."""
    straight = train(_cfg(tiny, tmp_path / "a.pt", eval=None, eval_every=1), llm=llm)["generator"]
    real, calls = torch.save, []

    def save(*args, **kwargs):
        calls.append(1)
        if len(calls) == cut:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny, tmp_path / "b.pt", eval=None, eval_every=1), llm=llm)
    monkeypatch.setattr(torch, "save", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "a.pt.state.pt", "b.pt", "b.pt.state.pt"]
    return straight


def test_resume_after_an_interrupted_save_continues_exactly(tiny, llm, tmp_path, monkeypatch):
    """Ctrl-C between the two files of a save (checkpoint, training state) left them a save
    apart: --resume then ran the optimiser and data stream of one step on the weights of
    another, without a word. Whichever file the interrupt spares, the resume is exact and no
    temporary file is left."""
    straight = _straight_and_cut(tiny, llm, tmp_path, monkeypatch, cut=6)  # at step 3
    resumed = train(_cfg(tiny, tmp_path / "b.pt", eval=None, eval_every=1, resume=str(tmp_path / "b.pt")), llm=llm)
    assert resumed["step"] == 4 and resumed["generator"].samples_seen == 16
    want = straight.state_dict()
    for k, v in resumed["generator"].state_dict().items():
        assert torch.equal(v, want[k]), k  # bitwise: the same operations on the same values


def test_an_interrupt_at_the_last_save_leaves_the_result_written_and_resumable(tiny, llm, tmp_path, monkeypatch):
    """The state was written before the checkpoint: Ctrl-C at the last step's checkpoint write
    left the state at --steps and the checkpoint a save behind, so the run's result was never
    written and --resume refused ("it has run 4 steps already"). The checkpoint now comes first:
    cut at the last write, the result is on disk, and --resume redoes the last step exactly."""
    straight = _straight_and_cut(tiny, llm, tmp_path, monkeypatch, cut=8)  # the last write
    want = straight.state_dict()
    written = load_checkpoint(tmp_path / "b.pt", llm.cfg).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in written.items())
    resumed = train(_cfg(tiny, tmp_path / "b.pt", eval=None, eval_every=1, resume=str(tmp_path / "b.pt")), llm=llm)
    assert resumed["step"] == 4
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())
    assert torch.load(tmp_path / "b.pt.state.pt", weights_only=True)["step"] == 4


def test_an_overwriting_run_cut_at_its_first_save_does_not_resume_the_earlier_run(tiny, llm, tmp_path, monkeypatch):
    """With the checkpoint written before the state, a run replacing an earlier one (--overwrite)
    and cut between the two files of its first save left the earlier run's state beside its
    checkpoint: --resume continued the earlier run. The earlier state is removed first now."""
    out = tmp_path / "o.pt"
    train(_cfg(tiny, out, eval=None, steps=2), llm=llm)
    real, calls = torch.save, []

    def save(*args, **kwargs):  # the new run's first save: the checkpoint, then its state is cut
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny, out, eval=None, steps=4, eval_every=1), llm=llm)
    monkeypatch.setattr(torch, "save", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.pt"]
    with pytest.raises(UserError, match="no training state o.pt.state.pt beside it"):
        train(_cfg(tiny, out, eval=None, steps=4, eval_every=1, resume=str(out)), llm=llm)


def test_a_diverged_step_is_refused_and_the_last_good_save_kept(tiny, llm, tmp_path):
    """A loss or gradient that is no longer finite (--lr far too high) was stepped: every weight
    turned NaN, and the next save replaced the last good checkpoint and state with ones that
    load_checkpoint refuses, so nothing was left to resume. Now the step is refused in one line
    naming it, and the files on disk are the last good step's: they load and resume."""
    out = tmp_path / "d.pt"
    with pytest.raises(UserError, match=r"step (\d+): the training loss diverged .*; the step is not applied and "
                                        rf"{out} keeps step (\d+): rerun with a lower --lr or --clip") as err:
        train(_cfg(tiny, out, eval=None, steps=8, eval_every=1, lr=1e6, clip=1e30), llm=llm)
    failed, kept = (int(n) for n in re.search(r"step (\d+):.*keeps step (\d+)", str(err.value)).groups())
    assert kept == failed - 1 >= 1
    assert torch.load(str(out) + ".state.pt", weights_only=True)["step"] == kept
    gen = load_checkpoint(out, llm.cfg)  # refused (NaN) before the fix
    assert all(torch.isfinite(v).all() for v in gen.state_dict().values())
    # the state resumes, exactly: the same step diverges again, and the files stay as they were
    with pytest.raises(UserError, match=f"step {failed}: the training loss diverged"):
        train(_cfg(tiny, out, eval=None, steps=8, eval_every=1, lr=1e6, clip=1e30, resume=str(out)), llm=llm)
    assert torch.load(str(out) + ".state.pt", weights_only=True)["step"] == kept


def test_resume_refuses_other_generator_dimensions(tiny, llm, tmp_path):
    """--resume continues the saved generator, so a --pg_arch naming other dimensions would be
    ignored without a word: refused, naming both; the same dimensions (or none) resume."""
    train(_cfg(tiny, tmp_path / "b.pt", eval=None), llm=llm, stop_after=1)
    with pytest.raises(UserError, match="has d_model=64, not the --pg_arch d_model=128; drop --pg_arch"):
        train(_cfg(tiny, tmp_path / "b.pt", eval=None, resume=str(tmp_path / "b.pt"),
                   pg_arch={**ARCH, "d_model": 128}), llm=llm)
    assert train(_cfg(tiny, tmp_path / "b.pt", eval=None, resume=str(tmp_path / "b.pt"), steps=2), llm=llm)["step"] == 2


@pytest.mark.parametrize("kw", [{"lr": 0.5}, {"weight_decay": 0.3}, {"seed": 7}, {"batch_size": 2},
                                {"grad_accum": 2}, {"dataset": "minerva_math"}, {"warmup": 3}, {"clip": 0.5}])
def test_resume_refuses_other_optimiser_and_data_flags(tiny, llm, tmp_path, kw):
    """--lr and --weight_decay come back with the optimiser's state (another value was ignored
    without a word), and the data stream is replayed from --seed, --batch_size and --grad_accum
    (other values skipped into another stream); another --dataset (or none: gsm8k) went on in another
    prompt style, another --warmup on another schedule, another --clip with other clipping:
    refused before the backbone loads, naming both."""
    train(_cfg(tiny, tmp_path / "b.pt", eval=None), llm=llm, stop_after=1)
    (name, value), = kw.items()
    with pytest.raises(UserError, match=f"trained with --{name} {getattr(_cfg(tiny, tmp_path), name)}, not {value}"):
        train(_cfg(tiny, tmp_path / "b.pt", eval=None, model=str(tmp_path / "no-model"),
                   resume=str(tmp_path / "b.pt"), **kw))


def test_resume_takes_the_dataset_by_the_style_it_names(tiny, llm, tmp_path):
    """--dataset math is --dataset minerva_math (an alias of the same prompts): a resume naming the
    style the other way was refused as another dataset."""
    train(_cfg(tiny, tmp_path / "b.pt", eval=None, dataset="minerva_math"), llm=llm, stop_after=1)
    assert train(_cfg(tiny, tmp_path / "b.pt", eval=None, dataset="Math", resume=str(tmp_path / "b.pt"), steps=2),
                 llm=llm)["step"] == 2


@pytest.mark.parametrize("which", ["train", "eval"])
def test_a_row_too_long_for_the_model_is_refused_before_the_backbone_loads(tiny, tmp_path, monkeypatch, which):
    """A question longer than the model's positions failed only when its batch came (train) or at
    the first evaluation (eval), eval_every steps in and before their save, as the engine's
    "request N: ... more than the cache's positions": now one line naming the file and the row."""
    rows = [json.loads(line) for line in (tiny / f"{which}.jsonl").read_text().splitlines()]
    rows[2] = {"question": "How many? " * 900, "answer": "\\boxed{1}"}
    path = tmp_path / f"{which}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from minitflow.tflow import training
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    with pytest.raises(UserError, match=rf"{path}: row 3: its tflow prompts need \d+ positions.* more than the "
                                        r"model's 4096 positions"):
        train(_cfg(tiny, tmp_path / "o.pt", **{which: str(path)}))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("seed", [-1, 2 ** 64])
def test_a_seed_out_of_range_is_refused_before_the_backbone_loads(tiny, tmp_path, monkeypatch, seed):
    """torch seeds from [0, 2^64): --seed 2^64 was torch's overflow traceback after the checks,
    and --seed -1 trained on the data order of --seed 1 (Python's random takes the absolute
    value) with another initialisation. Both are one line now, before the backbone loads."""
    from minitflow.tflow import training
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    with pytest.raises(UserError, match=rf"^--seed must be an integer in \[0, 2\^64\), got {seed}$"):
        train(_cfg(tiny, tmp_path / "o.pt", seed=seed))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw", [{"steps": 2.5}, {"eval_every": 1.5}, {"batch_size": 2.5}, {"grad_accum": 1.5},
                                {"warmup": 0.5}, {"save_every": 1.5}, {"seed": 1.5}, {"seed": True}, {"lr": "1e-3"}])
def test_a_library_config_with_a_number_of_the_wrong_type_is_refused_before_the_backbone_loads(tiny, tmp_path,
                                                                                              monkeypatch, kw):
    """argparse types the command line's flags; a library caller's TrainConfig is not: steps=2.5 ran
    3 steps, eval_every=1.5 recorded at step 3 only, batch_size=2.5 and seed=1.5 were a TypeError once
    the backbone had loaded, a string lr one from math.isfinite. One line each now, before the load."""
    from minitflow.tflow import training
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    (name, value), = kw.items()
    with pytest.raises(UserError, match=rf"^--{name} must be (an integer|a finite float32 number).*, got "
                                        rf"{re.escape(repr(value))}$"):
        train(_cfg(tiny, tmp_path / "o.pt", **kw))
    assert list(tmp_path.iterdir()) == []


def test_a_library_config_with_numpy_numbers_trains_and_resumes(tiny, llm, tmp_path):
    """numpy numbers are integers and floats to a library caller: seed=np.int64 was torch's TypeError
    in the seeded build, and lr=np.float64 went into the state's optimiser and config as a numpy
    scalar, a pickle that --resume's weights-only load refused ("its pickle needs the global
    numpy..."). They are taken as plain numbers: the run resumes to the plain run's weights."""
    import numpy as np
    straight = train(_cfg(tiny, tmp_path / "a.pt", eval=None, seed=3), llm=llm)["generator"]
    kw = dict(eval=None, seed=np.int64(3), lr=np.float64(1e-2), steps=np.int64(4), batch_size=np.int32(4))
    train(_cfg(tiny, tmp_path / "b.pt", **kw), llm=llm, stop_after=2)
    resumed = train(_cfg(tiny, tmp_path / "b.pt", resume=str(tmp_path / "b.pt"), **kw), llm=llm)
    assert resumed["step"] == 4
    want = straight.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())


def test_a_library_config_with_path_objects_trains_and_resumes(tiny, llm, tmp_path):
    """pathlib paths are paths to a library caller: resume=Path was an AttributeError ('endswith'), and
    train/out=Path went into the state's config as PosixPath, a pickle --resume's weights-only load
    refused. They are taken as str: the run resumes to the plain run's weights."""
    straight = train(_cfg(tiny, tmp_path / "a.pt", eval=None, seed=3), llm=llm)["generator"]
    kw = dict(eval=None, seed=3, model=tiny, train=tiny / "train.jsonl", out=tmp_path / "b.pt")
    train(replace(_cfg(tiny, tmp_path / "b.pt"), **kw), llm=llm, stop_after=2)
    resumed = train(replace(_cfg(tiny, tmp_path / "b.pt"), **kw, resume=tmp_path / "b.pt"), llm=llm)
    assert resumed["step"] == 4
    want = straight.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())


@pytest.mark.parametrize("kw,says", [({"dataset": 5}, "--dataset must be a str, got 5"),
                                     ({"train": 5}, "--train must be a path (str or os.PathLike), got 5"),
                                     ({"resume": 5}, "--resume must be a path"),
                                     ({"device": 0}, "--device must be a str, got 0"),
                                     ({"overwrite": "no"}, "overwrite must be True or False, got 'no'")])
def test_a_library_config_with_a_field_of_the_wrong_type_is_one_line(kw, says, tiny, tmp_path):
    """TrainConfig(dataset=5) was an AttributeError ('strip') deep in the checks, resume=5 another;
    overwrite="no" is true and replaced the checkpoint at --out. One line now, naming the field."""
    from minitflow.tflow.training import check_config
    with pytest.raises(UserError, match=f"^{re.escape(says)}"):
        check_config(_cfg(tiny, tmp_path / "o.pt", **kw))


def test_a_library_config_without_pg_arch_overrides_may_say_none(tiny, tmp_path):
    """pg_arch=None passed the checks (check_pg_arch reads it as no overrides) and was an
    AttributeError once the backbone had loaded; the checked config holds {} for it."""
    from minitflow.tflow.training import check_config
    assert check_config(_cfg(tiny, tmp_path / "o.pt", pg_arch=None)).pg_arch == {}


@pytest.mark.parametrize("layers", [1, 5])
def test_a_generator_for_another_layer_count_is_refused_before_the_backbone_loads(tiny, tmp_path, monkeypatch,
                                                                                   layers):
    """--pg_arch num_base_model_layers other than the backbone's (2) trained a generator for 1 or
    5 layers without a word and saved a checkpoint that load_checkpoint, so generate, --init and
    --resume, then refused ("generator is for 5 layers, the backbone has 2"): one line now, before
    the backbone loads."""
    from minitflow.tflow import training
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    with pytest.raises(UserError, match=rf"^--pg_arch num_base_model_layers={layers}, but the backbone has 2 layers"):
        train(_cfg(tiny, tmp_path / "o.pt", pg_arch={**ARCH, "num_base_model_layers": layers}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("head_dim", [1, 2])
def test_a_generator_head_dim_its_rotary_cannot_split_is_refused_before_the_backbone_loads(tiny, tmp_path, monkeypatch,
                                                                                          head_dim):
    """The generator's 2-D rotary embeddings rotate pairs along two axes of head_dim / 2: --pg_arch
    head_dim 2 (which divides d_model 64) passed every check, loaded the backbone, and the first
    step was a shape-mismatch traceback from apply_rope. One line now, before the backbone loads."""
    from minitflow.tflow import training
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    with pytest.raises(UserError, match=rf"^PG arch: head_dim {head_dim} must be a multiple of 4 "):
        train(_cfg(tiny, tmp_path / "o.pt", pg_arch={**ARCH, "head_dim": head_dim}))
    assert list(tmp_path.iterdir()) == []


def test_pg_arch_may_repeat_the_backbones_layer_count(tiny, llm, tmp_path):
    """A pg_arch copied whole from a checkpoint names the backbone's own layer count: accepted."""
    out = tmp_path / "o.pt"
    train(_cfg(tiny, out, eval=None, steps=1, pg_arch={**ARCH, "num_base_model_layers": 2}), llm=llm)
    assert load_checkpoint(out, llm.cfg).arch.num_base_model_layers == 2


def test_zero_condition_is_a_static_lora(tiny, llm, tmp_path):
    out = tmp_path / "zero.pt"
    train(_cfg(tiny, out, condition="zero", eval=None), llm=llm)
    gen = load_checkpoint(out, llm.cfg)
    assert gen.parameter_generator.hidden_in.weight.abs().max() == 0
    h = llm.cfg.hidden_size
    layers = llm.cfg.num_hidden_layers + 1
    with torch.no_grad():
        f1 = gen(torch.randn(2, layers, 5, h))
        f2 = gen(torch.randn(2, layers, 9, h) * 3, torch.tensor([[True] * 9, [True] * 4 + [False] * 5]))
    for k in f1:
        assert torch.allclose(f1[k][1][0], f2[k][1][1], atol=1e-6) and torch.allclose(f1[k][0][0], f2[k][0][1], atol=1e-6)
    assert any(b.abs().max() > 0 for _, b in f1.values())


def test_examples_with_context_and_bad_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "A", "context": "Facts."}) + "\n"
                    + json.dumps({"question": "Q2?", "answer": "B"}) + "\n")
    rows = read_examples(path)
    assert rows[0].sender_question == "Facts. Q?" and rows[1].sender_question == "Q2?"
    path.write_text('{"question": "Q?"}\n')
    with pytest.raises(Exception, match="answer"):
        read_examples(path)


def test_rows_read_as_generate_reads_the_same_file(tmp_path):
    """A question with whitespace around it ("...?\\n", as exported rows often end) was trained,
    and the held-out exact match was run, with that whitespace in the receiver's and senders'
    prompts, while generate and evaluate strip it: the trainer's accuracy was not what
    `generate --checkpoint --input_file` gives on the same file. Both now read the same texts."""
    import argparse
    from minitflow import generate
    from minitflow.tflow.prompts import with_context
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (
        {"question": "What is 3 plus 4?\n", "answer": "7"},
        {"question": "  How many does the red box hold? ", "answer": "\\boxed{2}", "context": "The red box holds 2."})))
    rows = read_examples(path)
    read = generate.read_inputs(argparse.Namespace(question=None, input_file=str(path), context=None))
    assert [(e.question, e.sender_question) for e in rows] == \
        [(r["question"], with_context(r.get("context"), r["question"])) for r in read]
    assert [e.question for e in rows] == ["What is 3 plus 4?", "How many does the red box hold?"]
    assert [e.answer for e in rows] == ["7", "\\boxed{2}"]


@pytest.mark.parametrize("row", [{"answer": ""}, {"answer": " \n"}, {"answer": "A", "sender_question": ""},
                                 {"answer": "A", "sender_question": "  "}])
def test_a_blank_answer_or_sender_question_is_refused(tmp_path, row):
    """A blank answer was a training target of <|im_end|> alone (the receiver learnt to say
    nothing; as a held-out gold, a blank greedy answer matched it) and a blank sender_question
    gave the senders nothing to read: a data bug, refused naming the file and line, as an
    empty question is."""
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n" + json.dumps({"question": "Q2?", **row}) + "\n")
    name = "sender_question" if "sender_question" in row else "answer"
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:2: the {name} is empty$"):
        read_examples(path)


@pytest.mark.parametrize("which", ["train", "eval"])
@pytest.mark.parametrize("field", ["question", "answer", "context", "sender_question"])
def test_a_lone_surrogate_in_a_row_is_refused_naming_the_row_before_the_backbone_loads(tiny, tmp_path, monkeypatch,
                                                                                       which, field):
    """A JSON escape "\\ud800" reads as a lone surrogate: in --train it was a UnicodeEncodeError
    traceback from the rows' sha256, in --eval the tokenizer's "text has a lone surrogate ... at
    character 365" named neither the file nor the row. One line naming both now, before the backbone."""
    from minitflow.tflow import training
    rows = [json.loads(line) for line in (tiny / f"{which}.jsonl").read_text().splitlines()][:4]
    rows[1] = {**rows[1], field: rows[1].get(field, "The red box holds 3.") + "\ud800"}
    if field == "context":
        del rows[1]["sender_question"]  # the senders' text then is the context and the question
    path = tmp_path / f"{which}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "\\ud800" in path.read_text()
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    name = "sender_question" if field == "context" else field
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:2: the {name} holds a lone surrogate \(U\+D800\), "
                                        "which is not valid Unicode$"):
        train(_cfg(tiny, tmp_path / "o.pt", **{which: str(path)}))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minitflow.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_cli_user_errors_are_one_line_exit_2(tiny, tmp_path):
    r = _cli("--model", str(tiny), "--train", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.pt"),
             "--no-progress")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "missing.jsonl" in r.stderr
    r = _cli("--model", str(tmp_path / "nope"), "--train", str(tiny / "train.jsonl"), "--out", str(tmp_path / "o.pt"))
    assert r.returncode == 2 and r.stderr.startswith("error:")
    r = _cli("--model", str(tiny), "--train", str(tiny / "train.jsonl"), "--out", str(tmp_path / "o.pt"),
             "--pg_arch", "d_model=oops")
    assert r.returncode == 2 and "pg_arch" in r.stderr


def test_sigterm_during_a_save_leaves_no_temporary_file(tiny, tmp_path, monkeypatch):
    """SIGTERM (a scheduler's stop, `kill`) ended the process at once: a save it cut left its
    hidden temporary sibling behind (the size of the training state). It then unwound like Ctrl-C,
    cutting the save (the state stayed at step 1); now the save it lands in completes (the state is
    at step 2), the run stops there, nothing else is left, and the exit code is 143."""
    import os
    import signal
    from minitflow import train as train_cli
    from minitflow.errors import run_cli
    real, calls = torch.save, []

    def save(*args, **kwargs):  # the third write (step 2's checkpoint) is where the signal lands
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "t.pt"
    code = run_cli(train_cli.main, ["--model", str(tiny), "--train", str(tiny / "train.jsonl"), "--out", str(out),
                                    "--steps", "4", "--batch_size", "4", "--eval_every", "1", "--pg_arch",
                                    json.dumps(ARCH), "--device", "cpu", "--no-checkpoint_layers", "--no-progress"])
    assert code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pt", "t.pt.state.pt"]
    assert torch.load(str(out) + ".state.pt", weights_only=True)["step"] == 2


def test_cli_trains_and_generate_loads_the_checkpoint(tiny, tmp_path):
    out = tmp_path / "cli.pt"
    r = _cli("--model", str(tiny), "--train", str(tiny / "train.jsonl"), "--eval", str(tiny / "eval.jsonl"),
             "--out", str(out), "--steps", "2", "--batch_size", "2", "--eval_every", "2", "--eval_size", "2",
             "--eval_max_new_tokens", "3", "--pg_arch", json.dumps(ARCH), "--no-checkpoint_layers", "--no-progress")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2 and "eval_accuracy" in summary
    if not (ROOT / "minitflow" / "generate.py").is_file():
        pytest.skip("minitflow.generate is not there yet")
    g = subprocess.run([sys.executable, "-m", "minitflow.generate", "--model", str(tiny), "--checkpoint", str(out),
                        "--question", "How many does the red box hold?", "--context", "The red box holds 1.",
                        "--greedy", "--max_new_tokens", "3", "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert g.returncode == 0, g.stderr


def test_cli_summary_after_a_resume_without_eval_names_the_step_reached(tiny, tmp_path, capsys):
    """The last line printed the last evaluation's step over the step reached: a --resume to
    step 4 without --eval printed step 2 (and step 2's eval loss as if it were the result's)."""
    from minitflow import train as train_cli
    out = tmp_path / "r.pt"
    common = ["--model", str(tiny), "--train", str(tiny / "train.jsonl"), "--out", str(out), "--batch_size", "2",
              "--no-checkpoint_layers", "--no-progress", "--device", "cpu"]
    assert train_cli.main([*common, "--steps", "2", "--eval", str(tiny / "eval.jsonl"), "--eval_size", "2",
                           "--eval_max_new_tokens", "2", "--pg_arch", json.dumps(ARCH)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 2
    assert train_cli.main([*common, "--steps", "4", "--resume", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary.keys() == {"out", "step", "train_loss"} and summary["step"] == 4


def test_checkpointed_layers_give_the_same_loss_and_gradients(tiny, llm):
    gen = random_generator(llm.cfg, seed=0, arch=arch_for(llm.cfg, ARCH)).float().train().requires_grad_(True)
    grads = []
    for recompute in (False, True):
        gen.zero_grad(set_to_none=True)
        loss, _ = batch_loss(llm, gen, "gsm8k", _rows(tiny), checkpoint_layers=recompute)
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None}))
    assert abs(grads[0][0] - grads[1][0]) < 1e-6
    for n, g in grads[0][1].items():
        assert torch.allclose(g, grads[1][1][n], atol=1e-6, rtol=1e-4), n


def test_init_from_a_checkpoint_fine_tunes_it(tiny, llm, tmp_path):
    first = tmp_path / "first.pt"
    train(_cfg(tiny, first, eval=None, steps=2), llm=llm)
    again = train(_cfg(tiny, tmp_path / "second.pt", eval=None, steps=1, init=str(first), pg_arch={}), llm=llm)
    start = load_checkpoint(first, llm.cfg)
    assert again["generator"].samples_seen == start.samples_seen + 4
    assert not torch.equal(again["generator"].parameter_generator.model.proj_out_B.weight,
                           start.parameter_generator.model.proj_out_B.weight)


def test_loss_covers_exactly_the_answer_tokens_and_im_end(tiny, llm):
    """Targets are the answer's tokens then <|im_end|>, nothing of the prompt; the loss equals a
    cross-entropy computed by hand from full logits at those positions only."""
    import torch.nn.functional as F
    qs, answers = ["How many does the red box hold?", "Q?"], ["\\boxed{7}", "a longer answer text"]
    batch = make_batch(llm, "You are C.", qs, answers)
    eos = llm.tokenizer.eos_token_id
    for i, a in enumerate(answers):
        want = llm.encode(a) + [eos]
        row = batch.targets[i]
        assert row[row != IGNORE].tolist() == want
        assert batch.ends[i] - batch.starts[i] == len(want)
        prompt = llm.chat_ids([{"role": "system", "content": "You are C."}, {"role": "user", "content": qs[i]}])
        assert batch.starts[i] == len(prompt) - 1  # the last prompt position predicts the first answer token
    with torch.no_grad():
        loss = answer_loss(llm.model, batch)
        t = batch.input_ids.shape[1]
        logits = llm.model(batch.input_ids, batch.positions, None, t).float()
    picked, targets = [], []
    for i in range(len(qs)):
        picked.append(logits[i, batch.starts[i]:batch.ends[i]])
        targets.append(batch.input_ids[i, batch.starts[i] + 1:batch.ends[i] + 1])
    manual = F.cross_entropy(torch.cat(picked), torch.cat(targets))
    assert torch.allclose(loss, manual, atol=1e-5), (loss.item(), manual.item())


def test_the_target_ends_with_im_end_whatever_the_eos_token(llm, monkeypatch):
    """A base model's tokenizer names <|endoftext|> as its eos token; the receiver's chat turn
    still ends with <|im_end|>, which is what it must learn to emit (it ended with the eos token)."""
    im_end = llm.tokenizer.token_to_id("<|im_end|>")
    endoftext = llm.tokenizer.token_to_id("<|endoftext|>")
    assert im_end is not None and endoftext is not None and im_end != endoftext
    monkeypatch.setattr(llm.tokenizer, "eos_token_id", endoftext)
    batch = make_batch(llm, "You are C.", ["Q?"], ["\\boxed{7}"])
    row = batch.targets[0]
    assert row[row != IGNORE].tolist() == llm.encode("\\boxed{7}") + [im_end]


def test_make_batch_refuses_no_im_end_token_and_a_sequence_past_the_positions(llm, monkeypatch):
    """make_batch's own refusals, for a library caller (train checks every row's length first)."""
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}]
    t = len(llm.chat_ids(msgs)) + len(llm.encode("\\boxed{7}")) + 1
    monkeypatch.setattr(llm, "max_seq_len", t - 1)
    with pytest.raises(UserError, match=rf"^a training sequence has {t} tokens, more than the model's {t - 1} positions$"):
        make_batch(llm, "s", ["Q?"], ["\\boxed{7}"])
    monkeypatch.setattr(llm, "max_seq_len", t)
    assert make_batch(llm, "s", ["Q?"], ["\\boxed{7}"]).input_ids.shape == (1, t)
    monkeypatch.setattr(llm, "tokenizer", None)
    with pytest.raises(UserError, match=r"^training needs the model's tokenizer.json with an <\|im_end\|> token$"):
        make_batch(llm, "s", ["Q?"], ["\\boxed{7}"])


def test_build_generator_reads_cfg_init_when_not_handed_it(tiny, llm, tmp_path):
    """Without `loaded`, a checkpoint --init is read here: its weights, float32, trainable."""
    path = tmp_path / "start.pt"
    save_checkpoint(random_generator(llm.cfg, seed=1, arch=arch_for(llm.cfg, ARCH)), path)
    gen = build_generator(_cfg(tiny, tmp_path / "o.pt", init=str(path), pg_arch={}), llm)
    want = load_checkpoint(path, llm.cfg, dtype="float32").state_dict()
    assert gen.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in gen.state_dict().items())
    assert gen.training and all(p.requires_grad for _, p in trainable(gen))


def test_a_training_state_that_is_not_a_checkpoint_is_named_as_such(tiny, llm, tmp_path):
    """The sidecar goes through the checkpoints' loader: a text file is "not a torch checkpoint",
    not an error that blames weights_only."""
    train(_cfg(tiny, tmp_path / "a.pt", eval=None, steps=2), llm=llm)
    Path(str(tmp_path / "a.pt") + ".state.pt").write_text("not a state\n")
    from minitflow.errors import UserError
    with pytest.raises(UserError, match="state.pt is not a torch checkpoint"):
        train(_cfg(tiny, tmp_path / "b.pt", eval=None, resume=str(tmp_path / "a.pt")), llm=llm)


def test_accumulated_gradient_is_the_mean_of_the_batches_and_is_clipped(tiny, llm, tmp_path, monkeypatch):
    """--grad_accum 2 x --batch_size 2 hands the optimiser the gradient of one batch of 4 (rows
    with answers of one length, so the token mean equals the mean of the two batch means),
    not the sum nor the last batch's; --clip scales it to that norm, same direction."""
    rows = _rows(tiny)
    lengths = [make_batch(llm, "s", [r.question], [r.answer]).n_targets for r in rows]
    assert len(set(lengths)) == 1, lengths  # the premise of the comparison
    seen = _optimiser_grads(monkeypatch)
    for kw in ({"grad_accum": 2, "batch_size": 2}, {"grad_accum": 1, "batch_size": 4}):
        train(_cfg(tiny, tmp_path / "g.pt", eval=None, steps=1, clip=1e9, **kw), llm=llm)
    accumulated, whole = seen
    norm = torch.cat([g.flatten() for g in whole]).norm()
    assert norm > 0
    for a, w in zip(accumulated, whole):
        assert torch.allclose(a, w, rtol=1e-4, atol=1e-6 * norm)
    clip = 0.5 * norm.item()
    train(_cfg(tiny, tmp_path / "c.pt", eval=None, steps=1, clip=clip, grad_accum=2, batch_size=2), llm=llm)
    clipped = torch.cat([g.flatten() for g in seen[2]])
    assert abs(clipped.norm().item() - clip) <= 1e-2 * clip  # torch divides by norm + 1e-6
    assert torch.allclose(clipped / clipped.norm(), torch.cat([g.flatten() for g in whole]) / norm, atol=1e-5)


def test_a_resume_with_a_longer_run_steps_at_the_new_schedules_rate(tiny, llm, tmp_path, monkeypatch):
    """--resume with a larger --steps extends the cosine, but its first step ran at the rate the
    optimiser state saved, the old schedule's: 2 steps of --steps 2 end at rate 0, so the first
    step of the resume to 4 was taken at 0 (wasted) instead of lr * lr_lambda(1, 4)(2). A resume
    with the same --steps still continues bitwise (test_resume_continues_exactly)."""
    from minitflow.tflow.training import lr_lambda
    lrs = rates_taken(monkeypatch)
    out = tmp_path / "r.pt"
    train(_cfg(tiny, out, eval=None, steps=2, warmup=1), llm=llm)
    train(_cfg(tiny, out, eval=None, steps=4, warmup=1, resume=str(out)), llm=llm)
    new = lr_lambda(1, 4)
    assert lrs[2:] == pytest.approx([1e-2 * new(2), 1e-2 * new(3)], abs=1e-12)
    assert lrs[2] > 0


def test_accumulation_weighs_every_answer_token_alike_whatever_the_lengths(tiny, llm, tmp_path, monkeypatch):
    """Each micro-batch's mean loss was divided by --grad_accum: a mean of batch means, so with
    answers of other lengths a token of a short-answer batch weighed more than one of a long,
    and --grad_accum 2 x --batch_size 2 was not the step --batch_size 4 takes on the same rows.
    Each micro-batch now counts by its share of the step's answer tokens: the same gradient."""
    answers = ["\\boxed{1}", "so it is \\boxed{12}, since the red box holds twelve", "\\boxed{3}",
               "the answer is \\boxed{40}"]
    path = tmp_path / "uneven.jsonl"
    path.write_text("".join(json.dumps({"question": f"How many in box {i}?", "answer": a}) + "\n"
                            for i, a in enumerate(answers)))
    from minitflow.tflow.training import batch_order
    order = batch_order(4, 2, _cfg(tiny, path).seed)
    halves = [sum(len(llm.encode(answers[i])) + 1 for i in next(order)) for _ in range(2)]
    assert halves[0] != halves[1], halves  # the premise: the two micro-batches hold unlike token counts
    seen = _optimiser_grads(monkeypatch)
    for kw in ({"grad_accum": 2, "batch_size": 2}, {"grad_accum": 1, "batch_size": 4}):
        train(_cfg(tiny, tmp_path / "g.pt", train=str(path), eval=None, steps=1, clip=1e9, **kw), llm=llm)
    accumulated, whole = seen
    norm = torch.cat([g.flatten() for g in whole]).norm()
    assert norm > 0
    for a, w in zip(accumulated, whole):
        assert torch.allclose(a, w, rtol=1e-4, atol=1e-6 * norm)


def test_learning_rate_warms_up_linearly_then_decays_to_zero_at_the_last_step():
    """The trainer's schedule, read from its optimiser step by step: warm-up to lr over `warmup`
    steps, then a half cosine that reaches 0 at `steps` (not later) and stays there."""
    import math
    from minitflow.tflow.training import make_optimizer
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt, sched = make_optimizer([("w", p)], lr=0.1, weight_decay=0.0, warmup=4, steps=12)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [0.1 * (s + 1) / 4 for s in range(4)] + \
        [0.1 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - 4) / 8))) for s in range(4, 14)]
    assert lrs == pytest.approx(want, abs=1e-12)
    assert lrs[8] == pytest.approx(0.05) and lrs[12] == lrs[13] == pytest.approx(0.0, abs=1e-12)


def test_cli_flags_reach_the_training_config():
    """Every flag of `python -m minitflow.train`, set to a non-default value, lands in its own
    field of TrainConfig."""
    from minitflow.train import parse_args
    cfg = parse_args(["--model", "m", "--train", "t.jsonl", "--eval", "e.jsonl", "--out", "o.pt", "--dataset", "mmlu",
                      "--init", "i.pt", "--pg_arch", "d_model=64,head_dim=16", "--condition", "zero", "--steps", "7",
                      "--batch_size", "3", "--grad_accum", "5", "--lr", "0.25", "--weight_decay", "0.5",
                      "--warmup", "9", "--clip", "2.5", "--eval_every", "11", "--save_every", "3", "--eval_size", "13",
                      "--eval_batch_size", "17", "--eval_max_new_tokens", "19", "--seed", "23", "--resume", "r.pt",
                      "--device", "cpu", "--dtype", "float32", "--no-checkpoint_layers", "--no-progress"])
    want = TrainConfig(model="m", train="t.jsonl", out="o.pt", eval="e.jsonl", dataset="mmlu", init="i.pt",
                       pg_arch={"d_model": 64, "head_dim": 16}, condition="zero", steps=7, batch_size=3, grad_accum=5, lr=0.25,
                       weight_decay=0.5, warmup=9, clip=2.5, eval_every=11, save_every=3, eval_size=13, eval_batch_size=17,
                       eval_max_new_tokens=19, seed=23, resume="r.pt", device="cpu", dtype="float32",
                       checkpoint_layers=False, progress=False, overwrite=False)
    default = TrainConfig(model="m", train="t.jsonl", out="o.pt")
    assert all(getattr(want, f) != getattr(default, f) for f in ("dataset", "init", "condition", "steps", "batch_size",
                                                                 "grad_accum", "lr", "weight_decay", "warmup", "clip",
                                                                 "eval_every", "save_every", "eval_size", "eval_batch_size",
                                                                 "eval_max_new_tokens", "seed", "dtype",
                                                                 "checkpoint_layers", "progress", "overwrite"))
    assert cfg == want


def test_one_batch_matches_the_official_forward_on_golden_small():
    """Loss and gradients of one training batch on golden-small (its tflow.pt, float32, CPU): the
    official release ships no trainer, so the pinned numbers come from its own inference pieces
    with gradients on (a scratch script, not in this repository): TFlowMethod.setup on this model,
    its generator reloaded in float32 and in train mode, `_per_sender_condition` per sender and
    question (the unpadded single-question path), `pg_state_dict_to_lora_factors`,
    `build_weighted_lora_entries` with 0.5/0.5, `patch_linear_multi_lora_factors` on the HF
    receiver, its `build_prompt` + the answer + <|im_end|>, and the summed cross-entropy of the
    answer tokens over the batch's 30 of them. Ours agreed to 5e-6 in every parameter's gradient."""
    from conftest import GOLDEN, need_shared
    need_shared(GOLDEN)
    llm = LLM.load(GOLDEN / "model", dtype="float32", device="cpu")
    gen = load_checkpoint(GOLDEN / "tflow.pt", llm.cfg).float().train().requires_grad_(True)
    gen.parameter_generator.model.cond_proj.requires_grad_(False)
    rows = [("Natalia sold clips to 48 of her friends in April, and then half as many clips in May. How many?",
             "She sold \\boxed{72} clips."), ("What is 2+3?", "\\boxed{5}"),
            ("A baker makes 12 trays of 24 cookies and sells 3/4 of them. How many cookies are left?",
             "72 are left, so \\boxed{72}")]  # questions of three lengths: our batch pads and masks them
    loss, n = batch_loss(llm, gen, "gsm8k", [Example(q, a, q) for q, a in rows])
    loss.backward()
    assert n == 30
    assert loss.item() == pytest.approx(11.943599, rel=1e-6)
    grads = {k: p.grad for k, p in gen.named_parameters() if p.grad is not None}
    official = {"parameter_generator.hidden_in.weight": 1.827911e-03,
                "parameter_generator.model.proj_out_B.weight": 4.334107e-03,
                "parameter_generator.model.cond_token_query": 2.249477e-03,
                "pg_layer_aggregator.layer_weights": 3.804651e-04}
    for k, want in official.items():
        assert grads[k].norm().item() == pytest.approx(want, rel=1e-4), k
    assert torch.cat([g.flatten() for g in grads.values()]).norm().item() == pytest.approx(2.977703e-02, rel=1e-4)


def test_training_leaves_the_callers_rng_alone_and_does_not_depend_on_it(tiny, llm, tmp_path):
    """train() called torch.manual_seed(cfg.seed): a library caller's random stream was reset
    by a training run. Now torch's RNG state is the same before and after a run (with its
    evaluation), and the trained weights depend on --seed alone, not on the caller's state."""
    gens = []
    for caller_seed in (123, 456):
        torch.manual_seed(caller_seed)
        state = torch.get_rng_state()
        gens.append(train(_cfg(tiny, tmp_path / f"{caller_seed}.pt", steps=2), llm=llm)["generator"])
        assert torch.equal(torch.get_rng_state(), state)
    want = gens[0].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in gens[1].state_dict().items())


def test_resume_refuses_other_training_rows_but_takes_the_same_rows_moved(tiny, llm, tmp_path):
    """--resume replayed the saved run's index stream over whatever --train named: a file with
    another row trained a different run without a word. The state keeps the rows' sha256: other
    rows are refused before the backbone loads; the same rows under another path, written with
    another JSON layout, resume exactly."""
    rows = [json.loads(line) for line in (tiny / "train.jsonl").read_text().splitlines()]
    straight = train(_cfg(tiny, tmp_path / "a.pt", eval=None), llm=llm)["generator"]
    train(_cfg(tiny, tmp_path / "b.pt", eval=None), llm=llm, stop_after=2)
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps({**r, "answer": r["answer"] + " " if i == 5 else r["answer"]}) + "\n"
                               for i, r in enumerate(rows)))
    with pytest.raises(UserError, match=r"trained on other rows than --train .*changed.jsonl"):
        train(_cfg(tiny, tmp_path / "b.pt", eval=None, train=str(changed), model=str(tmp_path / "no-model"),
                   resume=str(tmp_path / "b.pt")))
    moved = tmp_path / "elsewhere" / "rows.jsonl"
    moved.parent.mkdir()
    moved.write_text("".join(json.dumps(r, indent=None, separators=(",", ":")) + "\n" for r in rows))
    assert moved.read_bytes() != (tiny / "train.jsonl").read_bytes()
    resumed = train(_cfg(tiny, tmp_path / "b.pt", eval=None, train=str(moved), resume=str(tmp_path / "b.pt")), llm=llm)
    assert resumed["step"] == 4
    want = straight.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())


def test_a_run_killed_after_a_periodic_save_resumes_to_the_straight_runs_weights(tiny, llm, tmp_path):
    """Saves came only every --eval_every steps (200 by default, evaluations or not): a SIGKILL
    lost up to that many steps, and saving more often meant evaluating more often. --save_every
    saves on its own; a run SIGKILLed right after its step-2 save (no handler runs) resumes from
    the files on disk to the straight run's weights, bitwise, and to its history."""
    out = tmp_path / "b.pt"
    cmd = [sys.executable, "-c", KILL_AFTER_SAVE, "2", "--model", str(tiny), "--train", str(tiny / "train.jsonl"),
           "--out", str(out), "--pg_arch", ",".join(f"{k}={v}" for k, v in ARCH.items()), "--steps", "6",
           "--batch_size", "4", "--lr", "1e-2", "--warmup", "1", "--eval_every", "3", "--save_every", "2",
           "--no-checkpoint_layers", "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert torch.load(str(out) + ".state.pt", weights_only=True)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.pt", "b.pt.state.pt"]  # no temporary file
    result = train(_cfg(tiny, tmp_path / "a.pt", eval=None, steps=6, eval_every=3), llm=llm)
    straight, straight_history = result["generator"], result["history"]
    resumed = train(_cfg(tiny, out, eval=None, steps=6, eval_every=3, resume=str(out)), llm=llm)
    assert resumed["step"] == 6 and resumed["generator"].samples_seen == 24
    # the record at step 3 averages steps 1-3 as the straight run's does, steps 1-2 from the state
    assert resumed["history"] == straight_history and [h["step"] for h in straight_history] == [3, 6]
    want = straight.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())


def test_save_every_below_one_is_refused_before_the_backbone_loads(tiny, tmp_path):
    for bad in (0, -2):
        with pytest.raises(UserError, match=f"--save_every must be >= 1, got {bad}"):
            train(_cfg(tiny, tmp_path / "b.pt", model=str(tmp_path / "no-model"), save_every=bad))


def test_the_senders_states_reach_the_generator_without_a_copy(tiny, llm):
    """sender_states cloned the stacked batch and training's condition cloned it again ("out of
    inference mode"): two (2n, L+1, S, H) copies a step, 3x the condition's bytes at the
    stage's peak; then the capture stacked its layers after the last one, and the rows were
    stacked into the batch after the prefill, each a moment with the condition held twice.
    Now the batch is made outside inference mode before the prefill and the prefill writes
    every row's layers into it: the only tensor of the condition's size the stage makes is
    the one it returns, which autograd can save for the backward pass."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from minitflow.tflow import prompts
    from minitflow.tflow.training import condition

    class Made(TorchDispatchMode):  # (numel, data pointer) of every tensor an op returns
        def __init__(self):
            super().__init__()
            self.made: list[tuple[int, int]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.made += [(t.numel(), t.untyped_storage().data_ptr()) for t in (out if isinstance(out, (list, tuple))
                                                                                 else [out]) if isinstance(t, torch.Tensor)]
            return out

    rows = _rows(tiny, 8)
    assert len({len(e.sender_question) for e in rows}) > 1  # spans differ: a mask comes too
    with Made() as seen:
        hidden, mask = condition(llm, prompts.resolve_style("gsm8k"), [e.sender_question for e in rows], False)
    assert hidden.shape[:2] == (16, llm.cfg.num_hidden_layers + 1) and mask is not None
    assert {ptr for n, ptr in seen.made if n == hidden.numel()} == {hidden.untyped_storage().data_ptr()}
    assert not hidden.is_inference() and not mask.is_inference()
    spans = mask.sum(1)
    assert all(hidden[i, :, n:].abs().max() == 0 for i, n in enumerate(spans.tolist()) if n < hidden.shape[2])
    w = torch.ones((), requires_grad=True)
    (hidden * w).sum().backward()  # an inference tensor cannot be saved for backward
    assert float(w.grad) == pytest.approx(float(hidden.sum()), rel=1e-5)


def test_the_training_loss_is_logged_and_kept_without_an_eval_set_or_progress_bar(tiny, llm, tmp_path, monkeypatch):
    """The training loss was shown only on the progress bar (the last step's; --no-progress or a
    log file: nowhere) and kept nowhere. Every --eval_every steps and at the last, the mean loss
    over the answer tokens of the steps since the previous record is logged and kept in the
    history (so in the state beside the checkpoint), with the evaluation when there is one."""
    from minitflow.tflow import training
    real, seen, lines = training.batch_loss, [], []

    def spy(*args, **kwargs):
        loss, n = real(*args, **kwargs)
        if torch.is_grad_enabled():  # a training micro-batch, not an evaluation's
            seen.append((loss.item(), n))
        return loss, n
    monkeypatch.setattr(training, "batch_loss", spy)
    result = train(_cfg(tiny, tmp_path / "a.pt", eval=None, steps=5, eval_every=2, grad_accum=2), llm=llm,
                   log=lines.append)
    assert [h["step"] for h in result["history"]] == [2, 4, 5] and len(seen) == 10
    for h, (lo, hi) in zip(result["history"], [(0, 4), (4, 8), (8, 10)]):
        want = sum(loss * n for loss, n in seen[lo:hi]) / sum(n for _, n in seen[lo:hi])
        assert h.keys() == {"step", "train_loss"} and h["train_loss"] == pytest.approx(want, rel=1e-12)
    assert [line.split(":")[0] for line in lines] == ["step 2", "step 4", "step 5"]
    assert all("train loss" in line for line in lines)
    state = torch.load(tmp_path / "a.pt.state.pt", weights_only=True)
    assert state["history"] == result["history"]
    with_eval = train(_cfg(tiny, tmp_path / "b.pt", steps=2, eval_every=2), llm=llm, log=lines.append)["history"]
    assert [sorted(h) for h in with_eval] == [["eval_accuracy", "eval_loss", "step", "train_loss"]]


def test_log_lines_start_their_own_line_beside_the_progress_bar(tiny, llm, tmp_path, capsys):
    """The step lines were printed into stderr behind the progress bar's text ("train: 50%|...|
    ...step 2: ..."), a line now every --eval_every steps; tqdm.write clears the bar first."""
    train(_cfg(tiny, tmp_path / "a.pt", eval=None, progress=True), llm=llm)
    pieces = re.split(r"[\r\n]", capsys.readouterr().err)
    assert [p.split(":")[0] for p in pieces if p.startswith("step ")] == ["step 2", "step 4"]


def test_resume_refuses_another_backbone_dtype_or_model_before_it_loads(tiny, llm, tmp_path, monkeypatch, capsys):
    """--resume compared neither --dtype nor --model with the saved run's: a float32 run resumed
    on a bfloat16 backbone, or on another model of the same shapes, went on training the generator
    against other hidden states without a word. The state records the resolved dtype and the model
    (its folder's absolute path, or the hub id, its config.json's sha256 and a sample of its
    weights): another config.json, or the same one over other weights (a fine-tune), is one line,
    before the backbone loads; the same folder named another way resumes, and so does the same
    model at another path (it was refused: moved to a faster disk, a run could not go on), with a note."""
    import shutil
    from safetensors.torch import load_file, save_file
    from minitflow.tflow import training
    out = tmp_path / "b.pt"
    train(_cfg(tiny, out, eval=None, dtype="float32"), llm=llm, stop_after=1)
    moved = tmp_path / "moved"
    shutil.copytree(tiny, moved)
    other_config = tmp_path / "other"
    shutil.copytree(tiny, other_config)
    cfg_json = json.loads((other_config / "config.json").read_text())
    (other_config / "config.json").write_text(json.dumps({**cfg_json, "rope_theta": 12345.0}))
    tuned = tmp_path / "tuned"  # the same config.json and shapes, every weight a little different
    shutil.copytree(tiny, tuned)
    save_file({k: v + 1e-3 for k, v in load_file(tuned / "model.safetensors").items()}, tuned / "model.safetensors")
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    with pytest.raises(UserError, match=r"^--resume .*b\.pt: it was trained on a float32 backbone, not bfloat16 "
                                        r"\(--dtype bfloat16\); pass --dtype float32 to resume$"):
        train(_cfg(tiny, out, eval=None, dtype="bfloat16", resume=str(out)))

    def sha(model: Path) -> str:
        return hashlib.sha256((model / "config.json").read_bytes()).hexdigest()[:12]
    assert sha(moved) == sha(tiny) == sha(tuned) != sha(other_config)
    with pytest.raises(UserError, match=rf"trained with --model {re.escape(str(tiny.resolve()))} \(config.json "
                                        rf"sha256 {sha(tiny)}\), not {re.escape(str(other_config.resolve()))} "
                                        rf"\(config.json sha256 {sha(other_config)}\); pass the same --model to "
                                        "resume$"):
        train(_cfg(tiny, out, eval=None, dtype="float32", model=str(other_config), resume=str(out)))
    with pytest.raises(UserError, match=rf"trained with --model {re.escape(str(tiny.resolve()))}, whose weights are "
                                        rf"not those of {re.escape(str(tuned.resolve()))} \(sampled sha256 "
                                        r"[0-9a-f]{12}, not [0-9a-f]{12}\), though their config.json is the same; "
                                        "pass the same --model to resume$"):
        train(_cfg(tiny, out, eval=None, dtype="float32", model=str(tuned), resume=str(out)))
    monkeypatch.undo()
    capsys.readouterr()
    assert train(_cfg(tiny, out, eval=None, dtype="float32", model=str(moved), resume=str(out)),
                 llm=llm, stop_after=1)["step"] == 2
    assert f"note: --resume {out}: --model is {moved.resolve()}, not the {tiny.resolve()} it was trained with; " \
           "their config.json is the same, and so are the weights (sampled): resuming\n" in capsys.readouterr().err
    state = torch.load(Path(str(out) + ".state.pt"), weights_only=True)
    assert state["backbone"]["model"] == str(moved.resolve())  # the next resume names the new path
    relative = Path("..") / moved.name
    monkeypatch.chdir(moved)  # ../moved from inside it: the same folder named another way, without a note
    assert train(_cfg(tiny, out, eval=None, dtype="float32", model=str(relative), resume=str(out)),
                 llm=llm)["step"] == 4
    assert "note:" not in capsys.readouterr().err


def test_a_moved_model_of_a_state_from_before_the_weights_record_resumes_with_a_warning(tiny, llm, tmp_path, capsys):
    """A state saved before the weights sample was recorded has only the path and config.json: a
    moved folder with the same config.json resumes (refusing it would strand the run), saying that
    the weights were not compared; another config.json is still refused."""
    import shutil
    out = tmp_path / "b.pt"
    train(_cfg(tiny, out, eval=None), llm=llm, stop_after=1)
    state_path = Path(str(out) + ".state.pt")
    state = torch.load(state_path, weights_only=True)
    del state["backbone"]["model_weights_sample"]
    torch.save(state, state_path)
    moved = tmp_path / "moved"
    shutil.copytree(tiny, moved)
    capsys.readouterr()
    assert train(_cfg(tiny, out, eval=None, model=str(moved), resume=str(out)), llm=llm)["step"] == 4
    assert f"warning: --resume {out}: --model is {moved.resolve()}, not the {tiny.resolve()} it was trained with; " \
           "their config.json is the same, and the state predates the record of the weights: resuming without " \
           "comparing them" in capsys.readouterr().err


def test_the_weights_sample_reads_a_few_windows_of_each_file_the_backbone_loads(tiny, tmp_path, monkeypatch):
    """weights_sample stands for the weights without reading them: 8 windows of 4 KiB a file,
    and a change in a byte a window covers changes it (the header's first bytes here); None without weights."""
    import builtins
    import shutil
    from minitflow.tflow.training import weights_sample
    copy = tmp_path / "m"
    shutil.copytree(tiny, copy)
    reads, real_open = [], builtins.open

    def spy_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "b" in mode and str(path).endswith(".safetensors"):
            real_read = f.read
            f.read = lambda n=-1: reads.append(n) or real_read(n)
        return f
    monkeypatch.setattr(builtins, "open", spy_open)
    assert weights_sample(copy) == weights_sample(tiny)
    assert reads == [4096] * 16
    monkeypatch.undo()
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1  # the last window ends at the last byte
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert weights_sample(copy) != weights_sample(tiny)
    (copy / "model.safetensors").unlink()  # a hub cache that holds config.json only: no weights to sample
    assert weights_sample(copy) is None


def test_a_state_from_before_the_backbone_record_resumes_with_a_warning(tiny, llm, tmp_path, capsys):
    """A state saved before --model and --dtype were recorded cannot tell what it was trained on:
    it resumes (refusing it would strand the run) and says that they were not checked."""
    out = tmp_path / "b.pt"
    train(_cfg(tiny, out, eval=None), llm=llm, stop_after=1)
    state_path = Path(str(out) + ".state.pt")
    state = torch.load(state_path, weights_only=True)
    del state["backbone"]
    torch.save(state, state_path)
    capsys.readouterr()
    assert train(_cfg(tiny, out, eval=None, resume=str(out)), llm=llm)["step"] == 4
    assert "its state predates the record of --model and --dtype; resuming without checking them" in \
        capsys.readouterr().err


# As a terminal gives them: a suite launched under nohup or with `&` (no job control) hands its
# children SIGHUP / SIGINT ignored, and train rightly keeps an ignored signal ignored
TERMINAL_SIGNALS = """
import signal
def restore_terminal_signals():
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
"""

SIGNAL_IN_A_STEP = TERMINAL_SIGNALS + """
import os, signal, sys, torch
from minitflow.errors import run_cli
from minitflow.train import main
restore_terminal_signals()
sig, at, again = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "again"
real_step, real_save, steps, saves = torch.optim.AdamW.step, torch.save, [], []
def step(self, *args, **kwargs):  # the signal lands inside optimiser step `at`, before its update
    steps.append(1)
    if len(steps) == at:
        os.kill(os.getpid(), sig)
    return real_step(self, *args, **kwargs)
def save(obj, f, *args, **kwargs):  # "again": a second signal once the interrupt's checkpoint is written, not renamed
    real_save(obj, f, *args, **kwargs)
    if again and len(steps) >= at and not saves:
        saves.append(1)
        os.kill(os.getpid(), sig)
torch.optim.AdamW.step, torch.save = step, save
sys.exit(run_cli(main, sys.argv[4:]))
"""


@pytest.fixture(scope="module")
def straight6(tiny, llm, tmp_path_factory) -> dict:
    return train(_cfg(tiny, tmp_path_factory.mktemp("straight") / "a.pt", eval=None, steps=6, eval_every=3), llm=llm)


@pytest.mark.parametrize("sig, at, again", [("SIGINT", 3, False), ("SIGTERM", 5, False), ("SIGINT", 3, True),
                                           ("SIGHUP", 3, False)])
def test_a_signal_finishes_the_step_saves_and_resumes_to_the_straight_runs_weights(tiny, llm, tmp_path, straight6,
                                                                                   sig, at, again):
    """Ctrl-C or SIGTERM raised where it landed, inside opt.step as well, and the run lost every step
    since its last --save_every save. The first one now finishes the step, saves it as --save_every
    does, says where and how to resume, and exits 130 (SIGINT) or 143 (SIGTERM); resuming reaches the
    straight run's weights and history bitwise (at step 5, between two records, the training loss
    of steps 4-5 goes on in the state). A second one during that save stops at once: its temporary
    file is removed and the last whole save (step 2) resumes to the same weights. SIGHUP (the terminal
    or ssh session gone) killed the run where it stood: it is deferred the same way (exit 129)."""
    import signal
    signum = getattr(signal, sig)
    out = tmp_path / "b.pt"
    cmd = [sys.executable, "-c", SIGNAL_IN_A_STEP, str(int(signum)), str(at), "again" if again else "once",
           "--model", str(tiny), "--train", str(tiny / "train.jsonl"), "--out", str(out), "--pg_arch",
           ",".join(f"{k}={v}" for k, v in ARCH.items()), "--steps", "6", "--batch_size", "4", "--lr", "1e-2",
           "--warmup", "1", "--eval_every", "3", "--save_every", "2", "--no-checkpoint_layers", "--no-progress",
           "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + signum, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    name = "SIGINT (Ctrl-C)" if sig == "SIGINT" else sig
    if again:
        assert last == f"{name} again: stopped at once, without saving (step 3 of 6); --resume {out} continues " \
                       "from step 2"
    else:
        assert last == f"{name}: stopped after step {at} of 6, saved to {out} and its state; continue with " \
                       f"--resume {out} and the same flags"
        assert f"{name}: the step under way finishes and is saved to {out}, then the run stops" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.pt", "b.pt.state.pt"]  # no temporary file
    assert torch.load(str(out) + ".state.pt", weights_only=True)["step"] == (2 if again else at)
    resumed = train(_cfg(tiny, out, eval=None, steps=6, eval_every=3, save_every=2, resume=str(out)), llm=llm)
    assert resumed["step"] == 6 and resumed["history"] == straight6["history"]
    want = straight6["generator"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())


def test_train_puts_back_the_callers_signal_handlers(tiny, llm, tmp_path, monkeypatch):
    """A library caller's handlers are its own: train() takes SIGINT and SIGTERM only while it
    steps, and puts back the ones it found, whether it returns or is interrupted (where it raises
    Interrupted, a KeyboardInterrupt, after saving the step the signal landed in); one the caller
    ignores stays ignored."""
    import os
    import signal
    from minitflow.tflow import training
    mine = {s: (lambda *a: None) for s in (signal.SIGINT, signal.SIGTERM)}
    before = {s: signal.signal(s, h) for s, h in mine.items()}
    try:
        train(_cfg(tiny, tmp_path / "a.pt", eval=None, steps=1), llm=llm)
        assert {s: signal.getsignal(s) for s in mine} == mine
        real = torch.nn.utils.clip_grad_norm_

        def clip(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kwargs)
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
        with pytest.raises(training.Interrupted, match=r"^SIGTERM: stopped after step 1 of 4") as e:
            train(_cfg(tiny, tmp_path / "b.pt", eval=None), llm=llm)
        assert e.value.signum == signal.SIGTERM and isinstance(e.value, KeyboardInterrupt)
        assert torch.load(tmp_path / "b.pt.state.pt", weights_only=True)["step"] == 1
        assert {s: signal.getsignal(s) for s in mine} == mine
        # an ignored SIGTERM (as a shell's background job ignores SIGINT) is not taken up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        assert train(_cfg(tiny, tmp_path / "c.pt", eval=None, steps=2), llm=llm)["step"] == 2
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_out_may_not_be_the_init_checkpoint(tiny, llm, tmp_path, monkeypatch):
    """--init X --out X was refused as "an earlier run's" and pointed to --resume X (X has no
    state to resume); with --overwrite, the first save replaced the checkpoint the run started
    from. --init is an input like --train: naming it as --out is refused before the backbone loads."""
    from minitflow.tflow import training
    start = tmp_path / "start.pt"
    train(_cfg(tiny, start, eval=None, steps=1), llm=llm)
    Path(str(start) + ".state.pt").unlink()
    before = start.read_bytes()
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    with pytest.raises(UserError, match=rf"^--out {re.escape(str(start))} is also --init, which this run reads"):
        train(_cfg(tiny, start, eval=None, pg_arch={}, init=str(start), overwrite=True))
    assert start.read_bytes() == before


def test_a_loss_not_finite_before_any_update_does_not_blame_the_learning_rate(tiny, llm, tmp_path, monkeypatch):
    """A fresh run's first step adds a zero LoRA: a NaN loss there is the backbone's forward (a
    float16 overflow), yet the message said the loss "diverged" and to "rerun with a lower --lr or
    --clip", which changes nothing. It now says what it is, and nothing is written."""
    from minitflow.tflow import training
    real = training.answer_loss
    monkeypatch.setattr(training, "answer_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(UserError, match=r"^step 1: the training loss or its gradient is not finite \(loss nan, "
                                        r"gradient norm nan\) before any update, where the generator adds nothing: "
                                        r"the float32 backbone's own forward is not finite on these rows; a lower "
                                        r"--lr would not help$"):
        train(_cfg(tiny, tmp_path / "n.pt", eval=None), llm=llm)
    assert list(tmp_path.iterdir()) == []


def test_a_callers_llm_needs_no_model_folder_to_train_or_resume(tiny, llm, tmp_path, monkeypatch, capsys):
    """train(cfg, llm=...) never read cfg.model; the --resume record of the backbone made it
    resolve cfg.model as --model does: a caller whose LLM was built in memory (no folder) was
    refused ('model directory not found'), and a hub id not in the cache would have been
    downloaded whole to hash its config.json. cfg.model now only names the caller's backbone:
    its config.json is hashed where it is here, and a resume compares the name."""
    import minitflow.model.weights as weights
    monkeypatch.setattr(weights, "resolve_model_dir", lambda *a, **k: pytest.fail("cfg.model was resolved"))
    out = tmp_path / "b.pt"
    train(_cfg(tiny, out, eval=None, model="built-in-memory", steps=2), llm=llm, stop_after=1)
    state = torch.load(Path(str(out) + ".state.pt"), weights_only=True)
    assert state["backbone"] == {"model": "built-in-memory", "model_config_sha256": None, "model_weights_sample": None,
                                 "dtype": "float32"}
    capsys.readouterr()
    assert train(_cfg(tiny, out, eval=None, model="built-in-memory", steps=2, resume=str(out)), llm=llm)["step"] == 2
    assert "only the model names are compared" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"trained with --model built-in-memory \(config.json sha256 None\), not "
                                        r"another \(config.json sha256 None\)"):
        train(_cfg(tiny, out, eval=None, model="another", steps=3, resume=str(out)), llm=llm)
    # a folder here is still hashed when the caller names it
    train(_cfg(tiny, tmp_path / "c.pt", eval=None, steps=1), llm=llm)
    hashed = torch.load(tmp_path / "c.pt.state.pt", weights_only=True)["backbone"]["model_config_sha256"]
    assert hashed == hashlib.sha256((tiny / "config.json").read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_out_may_not_be_a_file_of_the_backbone(tiny, tmp_path, monkeypatch, name):
    """--out MODEL/model.safetensors --overwrite loaded the backbone and wrote the checkpoint over its
    weights at the first save; without --overwrite it was refused as "an earlier run's", offering
    --overwrite. The backbone's files are inputs like --train: refused before the backbone loads,
    in a folder of links too (a hub snapshot's layout)."""
    from minitflow.tflow import training
    monkeypatch.setattr(training.LLM, "load", lambda *a, **k: pytest.fail("the backbone loaded"))
    folder = tmp_path / "m"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).symlink_to(f)
    before = (tiny / name).read_bytes()
    for overwrite in (True, False):
        with pytest.raises(UserError, match=rf"^--out {re.escape(str(folder / name))} is also --model's {name}, "
                                            "which this run reads"):
            train(_cfg(tiny, folder / name, model=str(folder), overwrite=overwrite))
    assert (tiny / name).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"] and all(p.is_symlink() for p in folder.iterdir())


def test_init_random_is_no_file_that_out_could_be(tiny, tmp_path, monkeypatch):
    """--init random names no file: with a file ./random, --out random --overwrite was refused as
    'also --init, which this run reads' (--init was compared with --out as a path)."""
    from minitflow.tflow.training import check_config
    monkeypatch.chdir(tmp_path)
    (tmp_path / "random").write_bytes(b"an earlier run's output")
    check_config(_cfg(tiny, Path("random"), overwrite=True))  # accepted: nothing is read from ./random
    with pytest.raises(UserError, match=r"^--out random is also --init, which this run reads"):
        check_config(_cfg(tiny, Path("random"), overwrite=True, init="./random", pg_arch={}))


def test_init_names_a_folder_as_one(tiny, tmp_path):
    """--init FOLDER said "no such checkpoint" of a folder that is there."""
    from minitflow.tflow.training import check_config
    with pytest.raises(UserError, match=rf"^--init {re.escape(str(tmp_path))} is a directory: pass the checkpoint "
                                        r"file in it \(or 'random'\)$"):
        check_config(_cfg(tiny, tmp_path / "o.pt", init=str(tmp_path), pg_arch={}))


def test_the_first_signals_note_to_a_gone_stderr_does_not_cut_the_step(monkeypatch):
    """The first Ctrl-C is only recorded, and a note written to stderr: where stderr is a pipe
    whose reader the same Ctrl-C ended (`train ... 2>&1 | tee log`), the write raised
    BrokenPipeError from the handler, wherever in the step it landed, and the run stopped
    unsaved, as before deferred signals. The signal is still recorded; the step goes on."""
    import os
    import signal
    from minitflow.tflow import training

    def gone(fd, data):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(training.os, "write", gone)
    # Ctrl-C as a terminal gives it, even where the suite runs with SIGINT ignored (nohup, `&`)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with training.deferred_signals(lambda s: "note") as got:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs at the next bytecode boundaries
                if got:
                    break
    finally:
        signal.signal(signal.SIGINT, previous)
    assert got == [signal.SIGINT]


def test_deferred_signals_off_the_main_thread_leave_the_handlers_alone():
    """Python runs handlers in the main thread only, and signal.signal raises ValueError in any
    other: train() called from a worker thread runs under the handlers as they are."""
    import signal
    import threading
    from minitflow.tflow import training
    before, seen = signal.getsignal(signal.SIGINT), []

    def work():
        with training.deferred_signals(lambda s: "note") as got:
            seen.append((got, signal.getsignal(signal.SIGINT)))
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [([], before)]


def test_autocast_follows_the_backbones_dtype():
    """Training autocast to bfloat16 on every CUDA run, whatever --dtype said: float32 asked for
    float32 math and got bfloat16, float16 trained a bfloat16 receiver. A half-precision backbone's
    own dtype now (the parameter generator's at inference), none for float32."""
    from minitflow.tflow.training import autocast_dtype
    assert autocast_dtype(torch.float32) is None
    assert autocast_dtype(torch.bfloat16) is torch.bfloat16
    assert autocast_dtype(torch.float16) is torch.float16


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_a_training_step_autocasts_to_the_backbones_dtype_or_not_at_all(tiny, monkeypatch, device, dtype):
    """What batch_loss runs the generator and the receiver under: no autocast on a float32 backbone
    (on CUDA it was bfloat16), the backbone's half dtype otherwise (on the CPU there was none:
    the generator ran in float32 and generate runs it in the backbone's dtype)."""
    from minitflow.tflow import training
    llm = LLM.load(tiny, dtype=dtype, device=device)
    seen, real = [], training.generated_lora

    def spy(*args, **kwargs):
        seen.append((torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)))
        return real(*args, **kwargs)
    monkeypatch.setattr(training, "generated_lora", spy)
    gen = build_generator(_cfg(tiny, Path("unused.pt")), llm)
    loss, _ = batch_loss(llm, gen, "gsm8k", _rows(tiny))
    assert torch.isfinite(loss)
    want = getattr(torch, dtype)
    assert seen == [(False, seen[0][1])] if want is torch.float32 else seen == [(True, want)]


def test_a_float32_step_is_the_composition_without_autocast(tiny, llm):
    """A float32 backbone's step is bitwise the senders -> generator -> receiver composition run
    without any autocast, loss and gradients."""
    from minitflow.tflow import prompts
    from minitflow.tflow.methods import generated_lora
    from minitflow.tflow.training import condition
    rows = _rows(tiny)
    gen = build_generator(_cfg(tiny, Path("unused.pt")), llm)
    torch.nn.init.normal_(gen.parameter_generator.model.proj_out_B.weight, std=0.02)  # a LoRA that is not zero
    loss, _ = batch_loss(llm, gen, "gsm8k", rows)
    loss.backward()
    got = {n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None}
    gen.zero_grad(set_to_none=True)
    with torch.autocast("cpu", enabled=False):
        hidden, mask = condition(llm, "gsm8k", [e.sender_question for e in rows], False)
        batch = make_batch(llm, prompts.tflow_agents("gsm8k")[2], [e.question for e in rows], [e.answer for e in rows])
        want = answer_loss(llm.model, batch, generated_lora(llm, gen, hidden, mask, len(rows)))
    want.backward()
    assert torch.equal(loss, want)
    assert got.keys() == {n for n, p in gen.named_parameters() if p.grad is not None} and len(got) > 4
    assert all(torch.equal(g, dict(gen.named_parameters())[n].grad) for n, g in got.items())


BROKEN_STDERR = TERMINAL_SIGNALS + """
import os, signal, sys, torch
from minitflow.errors import run_cli
from minitflow.train import main
restore_terminal_signals()
sig, at = int(sys.argv[1]), int(sys.argv[2])
r, w = os.pipe()  # stderr is a pipe whose reader (head, or tee that the same Ctrl-C ended) goes in step `at`
os.dup2(w, 2)
os.close(w)
real_step, steps = torch.optim.AdamW.step, []
def step(self, *args, **kwargs):
    steps.append(1)
    if len(steps) == at:
        os.close(r)
        if sig:
            os.kill(os.getpid(), sig)
    return real_step(self, *args, **kwargs)
torch.optim.AdamW.step = step
sys.exit(run_cli(main, sys.argv[3:]))
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", None])
def test_a_gone_stderr_never_loses_the_step_it_stops_at(tiny, llm, tmp_path, straight6, sig):
    """`train ... 2>&1 | head` (or `| tee log` ended by the same Ctrl-C): the progress bar's next
    write raised BrokenPipeError out of the step, before its save, and the run stopped with a
    traceback (exit 1), losing the steps since the last --save_every save (step 2 here). A signal's
    step is now saved as with a live stderr (exit 130 / 143); without one, stderr gone ends the run
    as SIGPIPE ends a writer (exit 141), the step saved; resuming reaches the straight run's weights."""
    import signal
    signum = getattr(signal, sig) if sig else 0
    out = tmp_path / "b.pt"
    cmd = [sys.executable, "-c", BROKEN_STDERR, str(int(signum)), "3", "--model", str(tiny), "--train",
           str(tiny / "train.jsonl"), "--out", str(out), "--pg_arch", ",".join(f"{k}={v}" for k, v in ARCH.items()),
           "--steps", "6", "--batch_size", "4", "--lr", "1e-2", "--warmup", "1", "--eval_every", "3",
           "--save_every", "2", "--no-checkpoint_layers", "--device", "cpu"]  # with the progress bar
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + (signum or signal.SIGPIPE), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.pt", "b.pt.state.pt"]
    assert torch.load(str(out) + ".state.pt", weights_only=True)["step"] == 3
    resumed = train(_cfg(tiny, out, eval=None, steps=6, eval_every=3, save_every=2, resume=str(out)), llm=llm)
    assert resumed["step"] == 6 and resumed["history"] == straight6["history"]
    want = straight6["generator"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())


def test_the_console_drops_output_once_its_stream_fails_and_says_so():
    """Console's contract: a write or flush that fails marks it gone; it never raises, and drops
    everything after; anything else is the stream's."""
    from minitflow.tflow.training import Console

    class Pipe:
        def __init__(self):
            self.reader, self.got = True, []

        def write(self, text):
            if not self.reader:
                raise BrokenPipeError(32, "Broken pipe")
            self.got.append(text)
            return len(text)

        def flush(self):
            if not self.reader:
                raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return 7
    pipe = Pipe()
    console = Console(pipe)
    assert console.write("live\n") == 5 and not console.gone and console.fileno() == 7
    pipe.reader = False
    console.flush()
    assert console.gone
    pipe.reader = True  # nothing goes to a stream once it has failed (a pipe's bytes would come out of order)
    assert console.write("again\n") == 6 and pipe.got == ["live\n"]


def test_resume_given_the_state_file_names_its_checkpoint(tiny, tmp_path):
    """--resume OUT.state.pt (the file that holds the run) was refused as having "no training state
    OUT.state.pt.state.pt beside it"; it now says to pass the checkpoint, before anything loads."""
    from minitflow.tflow.training import check_config
    state = tmp_path / "r.pt.state.pt"
    state.write_bytes(b"")
    with pytest.raises(UserError, match=rf"^--resume {re.escape(str(state))} is a training state: pass its "
                                        rf"checkpoint, --resume {re.escape(str(tmp_path / 'r.pt'))}$"):
        check_config(_cfg(tiny, tmp_path / "r.pt", resume=str(state)))
    with pytest.raises(UserError, match=r"no training state other\.pt\.state\.pt beside it$"):
        check_config(_cfg(tiny, tmp_path / "r.pt", resume=str(tmp_path / "other.pt")))


def test_training_condition_keeps_out_of_the_prefix_cache(tiny):
    """Training's sender rows neither take KV from the prefix cache nor store any: a step computes
    the same whatever earlier runs (an evaluation's senders, another batch) left there, so a resumed
    run in a new process, cold cache, is the straight run bit for bit. They stored their blocks, and
    took them when an earlier run had: the rows' last bits then depended on the batch that first
    computed each block."""
    from minitflow import SamplingParams
    from minitflow.tflow import prompts
    from minitflow.tflow.condition import sender_states
    llm = LLM.load(tiny, dtype="float32", device="cpu")
    systems = prompts.tflow_agents("gsm8k")[:2]
    questions = ["How many does the red box hold? " * 3, "And the blue box? " * 3]
    seen = []
    real = llm.engine.runner._forward
    llm.engine.runner._forward = lambda reqs: (seen.extend(r.cached_tokens for r in reqs), real(reqs))[1]
    cold, _, _, _ = sender_states(llm, systems, questions)
    assert llm.engine.prefix_cache.used == 0
    llm.generate([llm.chat_ids([{"role": "system", "content": s}, {"role": "user", "content": q}])
                  for s in systems for q in questions], SamplingParams(max_new_tokens=1))  # the same prompts, cached now
    assert llm.engine.prefix_cache.used > 0
    warm, _, _, _ = sender_states(llm, systems, questions)
    assert not any(seen[:4] + seen[-4:]) and torch.equal(cold, warm)


def test_a_training_run_resolves_its_model_once(tiny, tmp_path, monkeypatch):
    """train resolved cfg.model three times (the run's checks, the rows' fit, LLM.load): a hub id
    online is a round trip to the hub each time, and the hub's main could move between them. Now
    once; LLM.load only checks that folder again (a local path), and the --out check only reads
    the cache (local_model_dir: config.json). Here a hub id whose cached snapshot is `tiny`."""
    import huggingface_hub

    import minitflow.model.weights as weights
    real, calls, hub = weights.resolve_model_dir, [], []
    monkeypatch.setattr(weights, "resolve_model_dir", lambda name, *a, **k: calls.append(name) or real(name, *a, **k))

    def cached(name, allow_patterns=None, local_files_only=False):
        hub.append((name, allow_patterns))
        return str(tiny)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached)
    assert train(_cfg(tiny, tmp_path / "h.pt", eval=None, model="org/model", steps=1))["step"] == 1
    assert calls == ["org/model", tiny]
    assert hub == [("org/model", ["config.json"]), ("org/model", weights.READ_PATTERNS)]
