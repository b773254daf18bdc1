"""The flags of the command lines that load a model (generate, evaluate) and the constants their
parsers need, torch-free: `--help` and a mistyped flag answer at once, where the modules that run a
model import torch first (seconds on a loaded machine). cli.py checks the flags and loads the model."""

from __future__ import annotations

import argparse

from minitflow.model.config import DTYPES
from minitflow.tflow import prompts
from minitflow.tflow.prompts import METHODS

OFFICIAL_TEMPERATURE, OFFICIAL_TOP_P = 0.6, 0.95
# evaluate's --method choices: the model's methods and the oracle, which scores the gold answers
EVALUATE_METHODS = (*METHODS, "oracle")
# the flags that choose or run a model, which the oracle does not have
ORACLE_REFUSES = ("model", "max_new_tokens", "temperature", "top_p", "top_k", "greedy", "compile", "eager",
                  "refill_share")
# those of them with a default that is not None: refused only where the command line gave them (main knows)
ORACLE_DEFAULTED = ("device", "dtype", "batch_size", "seed")


def add_model_args(p: argparse.ArgumentParser, methods: tuple[str, ...] = METHODS) -> None:
    p.add_argument("--method", default="tflow", choices=methods, help="(default: %(default)s)")
    p.add_argument("--dataset", default="gsm8k", help="prompt style: " + ", ".join(prompts.STYLES)
                   + " (aliases humaneval, mbpp, math; default: %(default)s)")
    p.add_argument("--model", default=None, help="HF-format Qwen3 directory or hub id "
                   "(default: the embedded demo model, see README)")
    p.add_argument("--checkpoint", default=None, help="TFlow ParameterGenerator checkpoint (tflow only)")
    p.add_argument("--random_generator", action="store_true",
                   help="tflow with a randomly initialised generator (smoke tests only)")
    p.add_argument("--max_new_tokens", type=int, default=None, help="default: the official value per style")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="auto (default): bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--device", default="auto", help="auto (the default: a GPU where there is one, cuda:LOCAL_RANK under torchrun; "
                   "else cpu), cpu, cuda, cuda:N")
    p.add_argument("--temperature", type=float, default=None, help=f"default: the official {OFFICIAL_TEMPERATURE}")
    p.add_argument("--top_p", type=float, default=None, help=f"default: the official {OFFICIAL_TOP_P}")
    p.add_argument("--top_k", type=int, default=None,
                   help="default: the model's generation_config.json top_k, else HF generate's 50; Qwen3-4B's is 20, "
                   "which HF generate applies under the official code (0 = off)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (temperature 0)")
    p.add_argument("--seed", type=int, default=0,
                   help="sampling seed: question i samples with seed + i, whatever runs beside it (default: 0)")
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
    g.add_argument("--latent_realign", action="store_true", help="map hidden states back with W_a (latentmas; needs --latent_steps >= 1)")
    g.add_argument("--think", action="store_true", help="open a <think> block in every agent's prompt (latentmas)")
