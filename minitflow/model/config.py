"""Qwen3 architecture hyper-parameters, read from a HF `config.json`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from minitflow.errors import UserError
from minitflow.files import model_file, read_json_object

SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM",)
MAX_POSITIONS = 1 << 20  # 512 MiB of float32 cos/sin tables at head_dim 128
# transformers' Qwen3Config default, for a config.json without max_position_embeddings: transformers
# builds that model with 32,768 positions, not Qwen3's released 40,960
DEFAULT_POSITIONS = 32768
# the dtypes a model runs in: each --dtype name and torch's attribute for it (engine.llm.resolve_dtype
# reads it); here, torch-free, so that the command lines' --dtype choices and help need no torch
DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def _positive_int(d: dict, key: str, source: str, default: int | None = None) -> int:
    """d[key] as a positive int; a missing (without default) or ill-typed value is one clear error."""
    if key not in d or d[key] is None:
        if default is None:
            raise UserError(f"{source}: {key} is missing (an incomplete config.json?)")
        return default
    v = d[key]
    if not _is_int(v) or v < 1:
        raise UserError(f"{source}: {key} must be a positive integer, got {v!r}")
    return v


def _check_full_attention(d: dict, layers: int, source: str) -> None:
    """Refuse a config.json in which transformers' Qwen3 gives some layer sliding-window attention:
    minitflow runs full attention in every layer. transformers 5's layer_types, where given, say
    which layers slide; else layers >= max_window_layers (default 28) do, and only with
    use_sliding_window true (sliding_window defaults to 4,096). So use_sliding_window true with
    max_window_layers >= num_hidden_layers is full attention there as here, and loads."""
    use = d.get("use_sliding_window")
    use = False if use is None else use
    if not isinstance(use, bool):  # transformers refuses "false" too; bool("false") would slide
        raise UserError(f"{source}: use_sliding_window must be true or false, got {use!r}")
    window = d.get("sliding_window", 4096) if use else None
    layer_types = d.get("layer_types")  # transformers 5's per-layer attention kinds
    if layer_types is not None:
        kinds = layer_types if isinstance(layer_types, list) else [layer_types]
        other = next((k for k in kinds if k != "full_attention"), None)
        if other is not None:  # "sliding_attention" ran here as full attention
            raise UserError(f"{source}: layer_types holds {other!r}: only full attention is supported "
                            "(every entry \"full_attention\")")
        if len(kinds) != layers:  # transformers refuses it as well
            raise UserError(f"{source}: layer_types lists {len(kinds)} layers, num_hidden_layers is {layers}")
        return
    if window is None:  # use_sliding_window false, or sliding_window null: no layer slides in transformers
        return
    first = d.get("max_window_layers", 28)
    if not _is_int(first):
        raise UserError(f"{source}: max_window_layers must be an integer, got {first!r}")
    if first < layers:
        raise UserError(f"{source}: sliding-window attention is not supported: with use_sliding_window true, "
                        f"sliding_window {window!r} and max_window_layers {first}, transformers gives layers "
                        f"{max(first, 0)}-{layers - 1} of {layers} a window")


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = False
    max_position_embeddings: int = DEFAULT_POSITIONS
    eos_token_ids: tuple[int, ...] = field(default=())

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Qwen3Config":
        archs = d.get("architectures") or []
        if not isinstance(archs, list):
            archs = [archs]
        # model_type decides what transformers builds (AutoConfig): a "qwen2" or "qwen3_moe" file that
        # names Qwen3ForCausalLM ran as Qwen3 here and as Qwen2 (q/k/v biases, no q/k norm) there
        model_type = d.get("model_type")
        if model_type != "qwen3" and (model_type is not None or not any(a in SUPPORTED_ARCHITECTURES for a in archs)):
            raise UserError(
                f"{source}: model_type={model_type!r} architectures={archs} is not Qwen3 "
                f"(minitflow supports {', '.join(SUPPORTED_ARCHITECTURES)}, model_type \"qwen3\")"
            )
        # both checked: Qwen3's README has users add rope_scaling (YaRN) to a config.json that
        # transformers 5 saved with rope_parameters, and transformers then takes rope_scaling
        for key in ("rope_scaling", "rope_parameters"):
            value = d.get(key)
            if value is not None and not isinstance(value, dict):
                raise UserError(f"{source}: {key} must be an object or null, got {value!r}")
            nested = sorted(k for k, v in (value or {}).items() if isinstance(v, dict))
            if nested:  # transformers 5's per-layer-type form: its Qwen3 model finds no rope_type (a KeyError)
                raise UserError(f"{source}: {key} holds per-layer-type RoPE settings ({nested[0]!r}), which Qwen3 "
                                "does not take: give one rope_type and rope_theta")
            rope_type = (value or {}).get("rope_type", (value or {}).get("type", "default"))
            if rope_type != "default":  # null too: transformers looks up a RoPE named None (a KeyError)
                raise UserError(
                    f"{source}: rope type {rope_type!r} is not supported (only the default RoPE); "
                    f"remove {key} from config.json to run at the native context length"
                )
        rope = d.get("rope_scaling") or d.get("rope_parameters") or {}  # transformers' order
        # the dict's own, then the top-level one; absent: transformers' Qwen3Config default (10,000),
        # not Qwen3's own 1,000,000: the model must be the one transformers builds from the file
        theta = rope.get("rope_theta", d.get("rope_theta", 10_000.0))
        quant = d.get("quantization_config")
        if not quant and d.get("quantization"):  # MLX's (mlx-community's 4-bit Qwen3): {"group_size": 64, "bits": 4}
            quant = {"quant_method": "mlx"}
        if quant:  # its packed weights and scales would be refused only as "unexpected tensor ... (not Qwen3?)"
            method = quant.get("quant_method") if isinstance(quant, dict) else None
            raise UserError(f"{source}: quantized checkpoints ({method or 'quantization_config'}) are not supported: "
                            "use the unquantized (bfloat16) model")
        tie = d.get("tie_word_embeddings")
        tie = False if tie is None else tie
        if not isinstance(tie, bool):  # bool("false") is True: lm_head.weight would be dropped silently
            raise UserError(f"{source}: tie_word_embeddings must be true or false, got {tie!r}")
        bias = d.get("attention_bias")
        if bias is not None and not isinstance(bias, bool):  # transformers reads "false" as true: biases
            raise UserError(f"{source}: attention_bias must be true or false, got {bias!r}")
        if bias:  # transformers builds q/k/v/o biases (zeros where the file has none); minitflow has none
            raise UserError(f"{source}: attention_bias true is not supported (Qwen3 has no attention biases)")
        act = d.get("hidden_act", "silu")
        if act not in ("silu", "swish"):  # SwiGLU (transformers reads swish as silu): another would run as silu
            raise UserError(f"{source}: hidden_act {act!r} is not supported (Qwen3 uses silu)")
        eos = d.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        if not all(_is_int(e) and e >= 0 for e in eos_ids):
            raise UserError(f"{source}: eos_token_id must be a token id or a list of them, got {eos!r}")
        need = {k: _positive_int(d, k, source) for k in
                ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
        _check_full_attention(d, need["num_hidden_layers"], source)
        heads = need["num_attention_heads"]
        kv_heads = _positive_int(d, "num_key_value_heads", source, heads)
        if heads % kv_heads:
            raise UserError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
        # absent: transformers' Qwen3Config default, 128, not hidden_size // heads (80 at Qwen3-4B): its model
        # reads that; 0 or false is an error, not a default
        head_dim = d.get("head_dim")
        if head_dim is None:
            head_dim = 128
        if not _is_int(head_dim) or head_dim < 1:
            raise UserError(f"{source}: head_dim must be a positive integer, got {head_dim!r}")
        if head_dim % 2:  # RoPE rotates pairs: an odd one loads, then fails in the first forward
            raise UserError(f"{source}: head_dim must be even for rotary embeddings, got {head_dim}")
        eps = d.get("rms_norm_eps", 1e-6)
        if not _is_number(eps) or not 0 < eps < 1:
            raise UserError(f"{source}: rms_norm_eps must be a small positive number, got {eps!r}")
        if not _is_number(theta) or not 0 < theta < math.inf:
            raise UserError(f"{source}: rope_theta must be a positive number, got {theta!r}")
        positions = _positive_int(d, "max_position_embeddings", source, DEFAULT_POSITIONS)
        if positions > MAX_POSITIONS:  # the rotary tables hold every position: 10**12 was an allocation traceback
            raise UserError(f"{source}: max_position_embeddings {positions} is more than the {MAX_POSITIONS:,} "
                            "positions minitflow's rotary tables hold (Qwen3 has 40,960)")
        vocab = need["vocab_size"]
        if any(e >= vocab for e in eos_ids):  # such an id can never be sampled: generation would never stop
            raise UserError(f"{source}: eos_token_id {max(eos_ids)} is outside the vocabulary of {vocab}")
        return cls(
            vocab_size=need["vocab_size"],
            hidden_size=need["hidden_size"],
            intermediate_size=need["intermediate_size"],
            num_hidden_layers=need["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(eps),
            rope_theta=float(theta),
            tie_word_embeddings=tie,
            max_position_embeddings=positions,
            eos_token_ids=eos_ids,
        )

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "Qwen3Config":
        path = Path(model_dir) / "config.json"
        if not model_file(path):
            raise UserError(f"no config.json in {model_dir}: not a HF model directory")
        return cls.from_dict(read_json_object(path, "config"), source=str(path))


# Qwen3-4B's shape, used by benchmarks to build random weights on the GPU without a download.
QWEN3_4B = Qwen3Config(
    vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
    rope_theta=1_000_000.0, tie_word_embeddings=True, max_position_embeddings=40960,
    eos_token_ids=(151645, 151643),
)
