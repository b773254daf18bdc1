"""float16 training's loss scaling (torch.amp.GradScaler) on the tiny random Qwen3 of test_train (conftest's
`tiny`), on the CPU."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch

from minitflow.engine.llm import LLM
from minitflow.errors import UserError
from minitflow.tflow import training
from minitflow.tflow.training import lr_lambda, train
from helpers import ARCH, KILL_AFTER_SAVE, ROOT, _cfg, _optimiser_grads, rates_taken


@pytest.fixture(scope="module")
def llm16(tiny) -> LLM:
    return LLM.load(tiny, dtype="float16", device="cpu")


def _scaled_loss(monkeypatch, factor: float) -> None:
    real = training.answer_loss
    monkeypatch.setattr(training, "answer_loss", lambda *a, **k: real(*a, **k) * factor)


def _overflow_at(monkeypatch, calls: set[int]) -> None:
    """The backward of these answer_loss calls (1-based) hands an inf gradient on, the loss itself
    finite: what a float16 overflow in the receiver's backward does."""
    real, n = training.answer_loss, []

    def loss(*args, **kwargs):
        out = real(*args, **kwargs)
        n.append(1)
        if len(n) in calls:
            out.register_hook(lambda g: g * float("inf"))
        return out
    monkeypatch.setattr(training, "answer_loss", loss)


def _state(path) -> dict:
    return torch.load(str(path) + ".state.pt", weights_only=True)


def test_a_small_float16_loss_still_reaches_the_generator(tiny, llm16, tmp_path, monkeypatch):
    """Without loss scaling, the float16 gradient of a loss 1e4 times smaller underflowed to zero in
    the receiver's backward: the optimiser got zeros and proj_out_B (zero at the start) never moved.
    The scaler keeps it: the optimiser gets 1e-4 times the gradient of the loss as it is."""
    seen = _optimiser_grads(monkeypatch)
    train(_cfg(tiny, tmp_path / "a.pt", eval=None, steps=1, clip=1e9), llm=llm16)
    _scaled_loss(monkeypatch, 1e-4)
    gen = train(_cfg(tiny, tmp_path / "b.pt", eval=None, steps=1, clip=1e9), llm=llm16)["generator"]
    whole, small = (torch.cat([g.flatten() for g in grads]) for grads in seen)
    assert whole.norm() > 0 and small.norm() > 0  # all zero before the scaler
    assert torch.allclose(small * 1e4, whole, rtol=1e-2, atol=1e-3 * whole.norm())
    assert gen.parameter_generator.model.proj_out_B.weight.abs().max() > 0


def test_an_overflowed_float16_step_is_skipped_and_the_run_goes_on(tiny, llm, llm16, tmp_path, monkeypatch):
    """A float16 step whose scaled gradient overflows (the loss finite) raised "the training loss
    diverged" and ended the run. The scaler's way now: the step applies nothing, the scale halves,
    a line says so, and the run goes on; the step counts (the schedule moves past it, the data
    stream too, as --resume replays them). float32 has no scaler: an inf gradient is still refused."""
    lrs = rates_taken(monkeypatch)
    _overflow_at(monkeypatch, {2})
    out, lines = tmp_path / "o.pt", []
    result = train(_cfg(tiny, out, eval=None, steps=4, eval_every=1), llm=llm16, log=lines.append)
    assert "step 2: the float16 gradient overflowed at loss scale 65536: the step is skipped (no update) and the " \
           "scale lowered to 32768" in lines
    assert result["step"] == 4 and [h["step"] for h in result["history"]] == [1, 2, 3, 4]
    f = lr_lambda(1, 4)
    assert lrs == pytest.approx([1e-2 * f(0), 1e-2 * f(2), 1e-2 * f(3)], abs=1e-12)  # step 2's rate is not taken
    state = _state(out)
    assert state["scaler"]["scale"] == 32768.0 and state["scheduler"]["last_epoch"] == 4
    assert all(torch.isfinite(v).all() for v in result["generator"].state_dict().values())
    _overflow_at(monkeypatch, {2})
    with pytest.raises(UserError, match=r"^step 2: the training loss diverged \(loss [0-9.]+, gradient norm (inf|nan)\)"):
        train(_cfg(tiny, tmp_path / "f.pt", eval=None, steps=4, eval_every=1), llm=llm)
    assert "scaler" not in _state(tmp_path / "f.pt")  # float32's state is as it was


def test_a_float16_gradient_that_overflows_unscaled_is_a_divergence(tiny, llm16, tmp_path, monkeypatch):
    """Overflow after overflow halves the scale; once it falls below 1 the gradient overflowed at
    its true size or smaller, which no scale fixes: refused as a divergence, the last save kept
    (here from a scale of 2: skipped at 2, refused at 1)."""
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=2.0))
    _overflow_at(monkeypatch, {1, 2, 3})
    out, lines = tmp_path / "d.pt", []
    with pytest.raises(UserError, match=rf"^step 2: the training loss diverged \(loss [0-9.]+, its float16 gradient "
                                        rf"overflows at loss scale 1, so unscaled too\); the step is not applied and "
                                        rf"{out} keeps step 1: rerun with a lower --lr or --dtype bfloat16$"):
        train(_cfg(tiny, out, eval=None, steps=4, eval_every=1), llm=llm16, log=lines.append)
    assert lines == ["step 1: the float16 gradient overflowed at loss scale 2: the step is skipped (no update) and "
                     "the scale lowered to 1", "step 1: train loss " + lines[1].split()[-1]]
    assert _state(out)["step"] == 1 and _state(out)["scaler"]["scale"] == 1.0


OVERFLOW_AT_STEP_1 = """
from minitflow.tflow import training
real_loss, calls = training.answer_loss, []
def answer_loss(*args, **kwargs):
    out = real_loss(*args, **kwargs)
    calls.append(1)
    if len(calls) == 1:
        out.register_hook(lambda g: g * float("inf"))
    return out
training.answer_loss = answer_loss
"""


def test_a_killed_float16_run_resumes_to_the_straight_runs_weights_and_loss_scale(tiny, llm16, tmp_path,
                                                                                   monkeypatch):
    """As test_train's test_a_run_killed_after_a_periodic_save_resumes_to_the_straight_runs_weights,
    on a float16 backbone whose step 1 overflowed: the state carries the scaler (its scale and the
    count of steps since the last overflow, which decides when the scale grows again), so the
    resumed run ends bitwise at the straight run's weights, history and scaler."""
    out = tmp_path / "b.pt"
    cmd = [sys.executable, "-c", OVERFLOW_AT_STEP_1 + KILL_AFTER_SAVE, "2", "--model", str(tiny), "--train",
           str(tiny / "train.jsonl"), "--out", str(out), "--pg_arch", ",".join(f"{k}={v}" for k, v in ARCH.items()),
           "--steps", "6", "--batch_size", "4", "--lr", "1e-2", "--warmup", "1", "--eval_every", "3", "--save_every",
           "2", "--no-checkpoint_layers", "--no-progress", "--device", "cpu", "--dtype", "float16"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert "step 1: the float16 gradient overflowed at loss scale 65536" in proc.stderr
    assert "lr_scheduler.step()" not in proc.stderr  # torch's warning that a skipped first step is out of order
    assert _state(out)["step"] == 2 and _state(out)["scaler"]["scale"] == 32768.0
    _overflow_at(monkeypatch, {1})
    result = train(_cfg(tiny, tmp_path / "a.pt", eval=None, steps=6, eval_every=3), llm=llm16)
    monkeypatch.undo()  # the resume runs steps 3-6: no overflow there
    resumed = train(_cfg(tiny, out, eval=None, steps=6, eval_every=3, resume=str(out)), llm=llm16)
    assert resumed["step"] == 6 and resumed["history"] == result["history"]
    want = result["generator"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed["generator"].state_dict().items())
    assert _state(out)["scaler"] == _state(tmp_path / "a.pt")["scaler"]
    assert _state(out)["scaler"]["scale"] == 32768.0 and _state(out)["scaler"]["_growth_tracker"] == 5


def test_a_float16_state_from_before_the_scaler_resumes_with_a_fresh_one(tiny, llm16, tmp_path):
    """A float16 run saved before the scaler has no "scaler" entry in its state: it resumes, with a
    scaler as a new run's (scale 65536, no steps counted towards its growth)."""
    out = tmp_path / "b.pt"
    train(_cfg(tiny, out, eval=None, steps=4), llm=llm16, stop_after=2)
    state = _state(out)
    assert state["scaler"] == {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                               "_growth_tracker": 2}
    del state["scaler"]
    torch.save(state, str(out) + ".state.pt")
    resumed = train(_cfg(tiny, out, eval=None, steps=4, resume=str(out)), llm=llm16)
    assert resumed["step"] == 4
    assert _state(out)["scaler"]["_growth_tracker"] == 2  # counted from the resume: a fresh scaler
