"""Shared fixtures: deterministic seeds, the repository root, and a Hydra-free default dtype."""

from __future__ import annotations

import os

# The Triton kernels run in Triton's CPU interpreter here; Triton reads this once, at its first import.
# On a GPU machine, run the tests with TRITON_INTERPRET=0 to compile them for the card instead.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Tiny tensors: one intra-op thread is several times faster than two on small CPU boxes (see
# TrainConfig.cpu_threads); pytest-xdist gives the parallelism instead, one process per core.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Slow tests (`@pytest.mark.slow`: whole sweeps and multi-process runs, 20-90 s each) run first. pytest-xdist
    hands each worker a queue of tests it cannot take back, so a slow test queued late can leave one core running
    it while the other has finished; started first, the slow ones run side by side and the many short tests fill
    in after them. The sort is stable: the order within each group stays as collected (identical on every worker,
    as xdist requires)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def smoke_train(tmp_path):
    """Train a tiny 2-layer model on CPU through the real trainer and return its metrics.jsonl records.

    `smoke_train(task_spec, steps=60, eval_every=20, batch_size=32, warmup_steps=10, mixer={"name": "gdn"})`;
    early stopping is off (target accuracy 2.0) so every evaluation window is recorded.
    """
    import json

    from arena.train import Run, train

    def run(task: dict, steps: int = 60, eval_every: int = 20, batch_size: int = 32, warmup_steps: int = 10,
            mixer: dict | None = None) -> list[dict]:
        config = {
            "task": dict(task),
            "train": {"steps": steps, "eval_every": eval_every, "batch_size": batch_size, "lr": 3e-3,
                      "warmup_steps": warmup_steps, "target_accuracy": 2.0, "device": "cpu"},
            "model": {"d_model": 32, "n_layers": 2, "mlp_ratio": 2.0},
            "logger": {"kind": "none"},
        }
        spec = mixer or {"name": "gdn"}
        summary = train(Run(config, {"mixer": spec}, "mixer"), tmp_path, f"smoke-{task['name']}")
        assert summary["status"] == "completed", summary["message"]
        return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]

    return run


@pytest.fixture
def ctrl_c_at_step(monkeypatch):
    """`ctrl_c_at_step(n)`: from now on arena.train.Trainer.step raises KeyboardInterrupt (as Ctrl-C would) when
    asked for step n, before doing it; `ctrl_c_at_step(None)` puts the real step back."""
    from arena.train import Trainer

    real_step = Trainer.step

    def arm(index: int | None) -> None:
        def step(self, batch, at):
            if at == index:
                raise KeyboardInterrupt
            real_step(self, batch, at)

        monkeypatch.setattr(Trainer, "step", real_step if index is None else step)

    return arm
