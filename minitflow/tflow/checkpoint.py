"""Load and save ParameterGenerator checkpoints in the official TFlow format.

A checkpoint is a `torch.save` dict: `parameter_generator` (state dict), `pg_layer_aggregator`
(`layer_weights`, `log_temperature`), `pg_config_flags`, `samples_seen`, and optionally
`pg_arch` (generator dimensions; absent = official constants with the backbone's layer count).
Our module names equal the official ones, so the name table below is the identity; it is
kept so that a renamed module shows up here and nowhere else.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn as nn

from minitflow.errors import UserError
from minitflow.files import check_output_file, replacing
from minitflow.model.config import Qwen3Config
from minitflow.model.lora import projection_shapes
from minitflow.tflow.generator import PG_OUTPUT_SCALE, LayerAggregator, ParameterGenerator, PGArch

# The only flags the official release (and minitflow) run with.
PG_CONFIG_FLAGS = {"use_cond_proj": False, "use_cond_tokens": True, "cond_tokens_mode": "replace"}
# the legacy torch.save format starts with a pickle of protocol 2 (its default) or 3: torch's
# weights-only loader reads both (not 4 or 5)
LEGACY_HEADS = (b"\x80\x02", b"\x80\x03")
# official state-dict prefix -> ours
NAME_TABLE = {"hidden_in.": "hidden_in.", "model.": "model."}


def _rename(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official names -> ours, and apart the keys under no known prefix."""
    out, unknown = {}, []
    for key, value in state.items():
        prefix = next((p for p in NAME_TABLE if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            out[NAME_TABLE[prefix] + key[len(prefix):]] = value
    return out, unknown


class TFlowGenerator(nn.Module):
    """LayerAggregator + ParameterGenerator: senders' hidden states -> scaled LoRA factors."""

    def __init__(self, arch: PGArch, backbone: Qwen3Config):
        super().__init__()
        self.arch = arch
        self.pg_layer_aggregator = LayerAggregator(backbone.num_hidden_layers + 1)
        self.parameter_generator = ParameterGenerator(arch, backbone.hidden_size, projection_shapes(backbone))
        self.samples_seen = 0

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        """hidden (B, L+1, S, H) over the question span, mask (B, S) -> {(layer, module): (A, B)}
        with the official 0.01 output scale applied (LoRA scale and sender weight not yet)."""
        cond = self.pg_layer_aggregator(hidden.float()).to(next(self.parameter_generator.parameters()).dtype)
        return self.parameter_generator(cond, mask, scale=PG_OUTPUT_SCALE)


def check_pg_arch(overrides: object) -> dict:
    """Generator dimension overrides as {name: positive int}, checked before any model loads."""
    names = {f.name for f in fields(PGArch)}
    if overrides is not None and not isinstance(overrides, dict):
        raise UserError(f"pg_arch must be a mapping of name -> integer, got {type(overrides).__name__}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - names, key=str)
    if unknown:
        raise UserError(f"pg_arch has unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    for key, value in overrides.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"pg_arch {key} must be a positive integer, got {value!r}")
    PGArch(**overrides)  # the dimensions must also fit together
    return overrides


def arch_for(backbone: Qwen3Config, overrides: dict | None = None) -> PGArch:
    return PGArch(**{"num_base_model_layers": backbone.num_hidden_layers, **check_pg_arch(overrides)})


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global CPU RNG seeded with `seed` inside, the caller's state back on exit.
    Module constructors draw only from the global RNG, so a seeded build must seed it, and a
    library call must not reset the caller's random stream as a side effect."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def random_generator(backbone: Qwen3Config, seed: int = 0, arch: PGArch | None = None) -> TFlowGenerator:
    """A randomly initialised generator, only on explicit request (smoke tests, training starts)."""
    with seeded(seed):
        return TFlowGenerator(arch or arch_for(backbone), backbone)


def torch_load(path: Path) -> object:
    """torch.load with weights_only=True: a checkpoint is tensors, numbers and strings, so a
    pickle that needs anything else (code that would run on load) is refused, not executed.
    A file that is neither torch.save's zip archive nor its legacy pickle (text, cut short)
    is named as such first: torch's own error for it blames the weights_only rule."""
    with open(path, "rb") as f:
        head = f.read(9)
    legacy = head[:2] in LEGACY_HEADS
    if not zipfile.is_zipfile(path) and not legacy:
        # safetensors: an 8-byte header length (text read as one is far past the file's end), then its JSON
        if head[8:9] == b"{" and int.from_bytes(head[:8], "little") + 8 <= path.stat().st_size:
            raise UserError(f"{path} is a safetensors file: a TFlow checkpoint is a torch.save dict (parameter_generator, "
                            "pg_layer_aggregator, pg_config_flags, ...), as `train` writes it")
        raise UserError(f"{path} is not a torch checkpoint: not a torch.save file, or cut short")
    if not legacy:
        _check_crcs(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "weights only" in text.lower() or "weights_only" in text:
            if re.search(r"Unsupported operand (1[4-9][0-9]|2[0-9][0-9])\b", text):  # opcodes of protocols 4 and 5
                raise UserError(f"{path}: torch's weights_only loader cannot read its pickle protocol (4 or 5); "
                                "re-save it with torch.save's default pickle_protocol") from None
            glob = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            what = f"the global {glob.group(1)}" if glob else "objects other than tensors, numbers and strings"
            raise UserError(f"{path}: refusing to load it: its pickle needs {what}, which could run code; minitflow "
                            "loads checkpoints with weights_only=True (re-save it as plain tensors)") from None
        raise UserError(f"{path} is not a torch checkpoint ({text.splitlines()[0] if text else 'UnpicklingError'})") from None
    except Exception as e:  # truncated zip, not a torch file at all
        raise UserError(f"{path} is not a readable torch checkpoint ({type(e).__name__})") from None


def _check_crcs(path: Path) -> None:
    """torch.load never checks the CRC-32 torch.save writes for each record: a flipped bit on
    disk loads as a different weight. Python's zipfile checks it while reading a record through.
    A file saved with CRCs turned off (every CRC 0) has nothing to check."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if not any(i.CRC for i in infos):
                return
            for info in infos:
                with zf.open(info) as record:
                    while record.read(1 << 24):
                        pass
    except zipfile.BadZipFile as e:
        raise UserError(f"{path} is corrupt ({e}): copy or download it again") from None


def _tensor_dict(obj: object, name: str, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UserError(f"{path}: {name} must be a state dict (name -> tensor)")
    bad = next((k for k, v in obj.items() if not v.is_floating_point()), None)
    if bad is not None:
        raise UserError(f"{path}: {name}.{bad} is {obj[bad].dtype}, expected floating point")
    # saved from a model left on the meta device (or offloaded), or sparse: the checks below would be a traceback
    bad = next((k for k, v in obj.items() if v.is_meta or v.layout != torch.strided), None)
    if bad is not None:
        raise UserError(f"{path}: {name}.{bad} holds no dense data ({obj[bad].layout}, device {obj[bad].device}): "
                        "save the generator's materialised weights")
    # a NaN or inf weight runs without complaint and turns every answer into garbage
    bad = next((k for k, v in obj.items() if not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UserError(f"{path}: {name}.{bad} holds NaN or inf values (a diverged or corrupt checkpoint)")
    return obj


def checkpoint_file(path: str | Path) -> Path:
    """`path` as a file to read, else one line: a folder (the official release's checkpoint_dir,
    say) was "not found" though it is there."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"TFlow checkpoint {path} is a directory: pass the checkpoint file in it (a torch.save .pt)")
    if path.is_symlink() and not path.exists():  # a hub cache snapshot's link whose blob is gone
        raise UserError(f"TFlow checkpoint {path} is a broken link (to {os.readlink(path)}, which is missing)")
    if not path.is_file():  # a hub id too: the official checkpoint is a file its README places, not a repo
        raise UserError(f"TFlow checkpoint not found: {path} (--checkpoint takes the file, e.g. the official "
                        "release's checkpoints/tflow/tflow_best.pt; a hub id is not looked up)")
    return path


def load_checkpoint(path: str | Path, backbone: Qwen3Config, dtype: torch.dtype | str = torch.float32,
                    device: torch.device | str = "cpu") -> TFlowGenerator:
    """A generator with every tensor from `path`. A checkpoint lacking any generator tensor is
    refused (a partly random generator would run silently); one without `pg_config_flags`
    (legacy) loads non-strictly: extra tensors are ignored, with a warning. `dtype` is a
    torch.dtype or a name as LLM.load takes it ("bfloat16", "auto"; torch read a name as a device)."""
    from minitflow.engine.llm import resolve_dtype
    dtype = resolve_dtype(dtype, torch.device(device))
    path = checkpoint_file(path)
    state = torch_load(path)
    if not isinstance(state, dict) or "parameter_generator" not in state or "pg_layer_aggregator" not in state:
        raise UserError(f"{path} is not a TFlow checkpoint (needs parameter_generator and pg_layer_aggregator)")
    flags = state.get("pg_config_flags")
    if flags is not None and not isinstance(flags, dict):
        raise UserError(f"{path}: pg_config_flags must be a dict, got {type(flags).__name__}")
    if flags is not None:
        for key, want in PG_CONFIG_FLAGS.items():
            if key in flags and flags[key] != want:
                raise UserError(f"{path}: pg_config_flags.{key}={flags[key]!r} but minitflow runs {key}={want!r}")
    try:
        arch = arch_for(backbone, state.get("pg_arch"))
    except UserError as e:  # the file's pg_arch, not a flag: name the file
        raise UserError(f"{path}: {e}") from None
    if arch.num_base_model_layers != backbone.num_hidden_layers:
        raise UserError(f"{path}: generator is for {arch.num_base_model_layers} layers, "
                        f"the backbone has {backbone.num_hidden_layers}")
    gen = TFlowGenerator(arch, backbone)
    own = gen.parameter_generator.state_dict()
    pg_state, unexpected = _rename(_tensor_dict(state["parameter_generator"], "parameter_generator", path))
    unexpected += [k for k in pg_state if k not in own]
    if unexpected and flags is not None:
        raise UserError(f"{path}: unexpected generator tensor {unexpected[0]}")
    pg_state = {k: v for k, v in pg_state.items() if k in own}
    missing = [k for k in own if k not in pg_state]
    if missing:
        raise UserError(f"{path}: {len(missing)} of the generator's {len(own)} tensors are missing "
                        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); minitflow never runs "
                        "a partly random generator")
    for key, value in pg_state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise UserError(f"{path}: generator tensor {key} has shape {tuple(value.shape)}, this backbone "
                            f"needs {tuple(own[key].shape)} (checkpoint for another backbone or pg_arch?)")
    if flags is None:
        extra = f"; ignoring {len(unexpected)} extra tensors ({', '.join(unexpected[:3])})" if unexpected else ""
        print(f"warning: {path}: legacy checkpoint without pg_config_flags, loaded with the official flags{extra}",
              file=sys.stderr)
    gen.parameter_generator.load_state_dict(pg_state, strict=True)
    agg = _tensor_dict(state["pg_layer_aggregator"], "pg_layer_aggregator", path)
    want_agg = {"layer_weights": (backbone.num_hidden_layers + 1,), "log_temperature": ()}
    for key, shape in want_agg.items():
        if key not in agg:
            raise UserError(f"{path}: pg_layer_aggregator.{key} is missing")
        if key == "log_temperature" and tuple(agg[key].shape) == (1,):  # torch's load_state_dict, so the
            agg[key] = agg[key].reshape(())                             # official loader, reads it as the scalar
        if tuple(agg[key].shape) != shape:
            whose = "this backbone (its layers + 1) needs" if key == "layer_weights" else "a scalar has"
            raise UserError(f"{path}: pg_layer_aggregator.{key} has shape {tuple(agg[key].shape)}, "
                            f"{whose} {shape}")
    if set(agg) - set(want_agg) and flags is not None:
        raise UserError(f"{path}: unexpected pg_layer_aggregator tensor {sorted(set(agg) - set(want_agg))[0]}")
    gen.pg_layer_aggregator.load_state_dict({k: agg[k] for k in want_agg})
    seen = state.get("samples_seen", 0)
    if not isinstance(seen, int) or isinstance(seen, bool):
        raise UserError(f"{path}: samples_seen must be an integer, got {type(seen).__name__}")
    gen.samples_seen = seen
    gen.parameter_generator.to(dtype)
    return gen.to(device).eval().requires_grad_(False)


def save_checkpoint(gen: TFlowGenerator, path: str | Path, extra: dict | None = None) -> None:
    """Official format plus `pg_arch`, so `generate --checkpoint` loads it unchanged."""
    path = check_output_file(path, "checkpoint")
    payload = {
        "parameter_generator": {k: v.detach().cpu() for k, v in gen.parameter_generator.state_dict().items()},
        "pg_layer_aggregator": {k: v.detach().cpu() for k, v in gen.pg_layer_aggregator.state_dict().items()},
        "pg_config_flags": dict(PG_CONFIG_FLAGS),
        "samples_seen": int(gen.samples_seen),
        "pg_arch": gen.arch.to_dict(),
        **(extra or {}),
    }
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            # on disk before the rename makes it the checkpoint (as files.write_bytes): after a
            # power cut the rename alone could leave an empty file where the last save was
            os.fsync(f.fileno())
