"""The trainer's settings (TrainConfig) and those a --resume must repeat: torch-free, so that
`python -m minitflow.train` builds its parser (defaults, help) and answers --help or a mistyped flag
before the trainer, and torch, load (seconds on a loaded machine)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    model: str
    train: str
    out: str
    eval: str | None = None
    dataset: str = "gsm8k"
    init: str = "random"  # "random" or a checkpoint to start from
    pg_arch: dict = field(default_factory=dict)  # overrides of the generator's dimensions
    condition: str = "sender"  # or "zero"
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    clip: float = 1.0
    eval_every: int = 200
    save_every: int | None = None  # steps between saves of checkpoint + state; None: every eval_every
    eval_size: int = 200
    eval_batch_size: int = 32
    eval_max_new_tokens: int = 32
    seed: int = 0
    resume: str | None = None
    device: str | None = None
    dtype: str = "auto"  # backbone dtype: float32 on CPU, bfloat16 on CUDA
    checkpoint_layers: bool = True
    progress: bool = True
    overwrite: bool = True  # False (the command line's default): an --out that holds a checkpoint is refused


# the model and dtype are the backbone the generator was trained against (compared as resolved:
# backbone_identity); the optimiser's state brings back lr and weight_decay; the data stream replays
# from seed, batch_size and grad_accum; the dataset is the prompt style the rows are trained in;
# warmup shapes the schedule (its cosine too) and clip every step
RESUME_BACKBONE = ("model", "dtype")
RESUME_FIXED = (*RESUME_BACKBONE, "lr", "weight_decay", "seed", "batch_size", "grad_accum", "dataset", "warmup", "clip")
