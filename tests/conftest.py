"""Shared fixtures: deterministic seeds, the repository root, and a Hydra-free default dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tiny tensors: one intra-op thread is several times faster than two on small CPU boxes (see
# TrainConfig.cpu_threads); pytest-xdist gives the parallelism instead, one process per core.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def repo_root() -> Path:
    return REPO
