"""Benchmark fixtures: where and at what shape the benchmarks run (see benchlib.make_setup).

CPU (CI: 2 cores, no GPU): a tiny Qwen3 in float32, ratios only. CUDA: Qwen3-4B's shape in
bf16 with random weights built on the GPU. MINITFLOW_BENCH_SHAPE / MINITFLOW_BENCH_LAYERS
override the choice.

CPU runs use one intra-op thread (MINITFLOW_BENCH_THREADS to change): tiny ops gain nothing
from a second thread, and on a shared, oversubscribed runner two OpenMP threads made a
decode-shape SDPA call ~500x slower (12 ms instead of 20 us), drowning every ratio.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchlib import Setup, make_setup, random_model
from partial_json import pytest_runtest_teardown, pytest_sessionfinish  # noqa: F401 - hooks, registered by name
from minitflow.model.config import Qwen3Config
from minitflow.model.qwen3 import Qwen3Model


def pytest_configure(config: pytest.Config) -> None:
    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("MINITFLOW_BENCH_THREADS", "1")))


@pytest.fixture(scope="session")
def setup() -> Setup:
    return make_setup()


@pytest.fixture(scope="session")
def device(setup: Setup) -> torch.device:
    return setup.device


@pytest.fixture(scope="session")
def dtype(setup: Setup) -> torch.dtype:
    return setup.dtype


@pytest.fixture(scope="session")
def cfg(setup: Setup) -> Qwen3Config:
    return setup.cfg


@pytest.fixture(scope="session")
def model(setup: Setup) -> Qwen3Model:
    """One random model shared by every benchmark (4B in bf16 is 8 GB: build it once)."""
    return random_model(setup.cfg, setup.dtype, setup.device, max_positions=4096)

