"""The fast training loop (arena.train.Trainer + batch_stream) against the plain loop it replaced.

    python -m pytest -q tests/test_train_loop.py

Same seed, same config: the per-step losses must match the plain loop's (arena.testing.reference_losses:
inline generation, boolean-mask scoring, per-tensor AdamW, a host read every step). On CPU both run in fp32,
so they agree to rounding; the GPU twin (bf16, fused ops, `max |d loss| <= 0.02` over 200 steps) is
scripts/check_fast_loop.py. Also: background workers give the same batches as inline generation, and a run that
starts later in the stream sees the same batches as one that got there.
"""

from __future__ import annotations

import pytest
import torch

from arena.testing import reference_losses, trainer_losses
from arena.train import Run, batch_stream, graphs_wanted


def make_run(mixer: dict, task: dict, **train) -> Run:
    config = {
        "task": {"num_test": 10, **task},
        "train": {"steps": 40, "batch_size": 8, "lr": 3e-3, "warmup_steps": 5, "device": "cpu", "seed": 3,
                  **train},
        "model": {"d_model": 32, "n_layers": 2, "mlp_ratio": 2.0},
        "logger": {"kind": "none"},
    }
    return Run(config, {"m": mixer}, "m")


TASKS = {
    "fixed-set": {"name": "mqar", "seq_len": 32, "num_train": 40},  # 5 batches an epoch: reshuffles are crossed
    "fresh": {"name": "stack", "seq_len": 48, "num_train": 0},
}
MIXERS = {"kda": {"name": "kda"}, "gdn": {"name": "gdn", "allow_neg_eigval": True},
          "mamba2": {"name": "mamba2", "headdim": 16, "d_state": 8}, "mla": {"name": "mla"}}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("mixer", list(MIXERS))
def test_trainer_losses_equal_the_plain_loop(mixer, task):
    steps = 25
    ref = reference_losses(make_run(MIXERS[mixer], TASKS[task]), steps)
    fast = trainer_losses(make_run(MIXERS[mixer], TASKS[task]), steps)
    assert len(fast) == steps
    worst = max(abs(a - b) for a, b in zip(ref, fast))
    assert worst <= 1e-4, f"{mixer}/{task}: max |d loss| {worst:.3g}; plain {ref[-3:]}, trainer {fast[-3:]}"
    assert ref[-1] < ref[0], "the run must learn, or equal curves prove little"


def test_fused_trainer_equals_plain_loop_under_the_interpreter():
    """KDA with the fused Triton ops (run by the CPU interpreter) against the plain layer in the plain loop."""
    from arena.kernels.triton_delta import interpreting

    if not interpreting():
        pytest.skip("needs TRITON_INTERPRET=1 (tests/conftest.py sets it)")
    steps, task = 4, {"name": "stack", "seq_len": 24, "num_train": 0}  # small: the interpreter is slow
    ref = reference_losses(make_run({"name": "kda", "fused": "off"}, task, batch_size=4), steps)
    fast = trainer_losses(make_run({"name": "kda", "fused": "on"}, task, batch_size=4), steps)
    worst = max(abs(a - b) for a, b in zip(ref, fast))
    assert worst <= 1e-4, f"max |d loss| {worst:.3g}"


def test_worker_processes_give_the_inline_batches():
    inline = batch_stream(make_run(MIXERS["kda"], TASKS["fresh"], data_workers=0))
    workers = batch_stream(make_run(MIXERS["kda"], TASKS["fresh"], data_workers=2))
    try:
        for _ in range(5):
            a, b = next(inline), next(workers)
            assert torch.equal(a.inputs, b.inputs) and torch.equal(a.scored_index, b.scored_index)
            assert torch.equal(a.scored_targets, b.scored_targets)
    finally:
        workers.close()


def test_batch_workers_survive_a_sigterm_to_the_process_group():
    """`timeout`, SLURM and a stopped sweep send SIGTERM to the whole process group. The trainer checkpoints and
    stops at its next step; a batch worker that died of the signal instead failed the run first ("DataLoader
    worker ... killed by signal: Terminated", seen in a GPU sweep stopped by its time limit)."""
    import multiprocessing
    import os
    import signal
    import time

    before = {child.pid for child in multiprocessing.active_children()}
    stream = batch_stream(make_run(MIXERS["kda"], TASKS["fresh"], data_workers=1))
    try:
        next(stream)
        (worker,) = [c for c in multiprocessing.active_children() if c.pid not in before]
        os.kill(worker.pid, signal.SIGTERM)
        time.sleep(0.5)
        assert worker.is_alive(), "the batch worker died of SIGTERM"
        for _ in range(8):  # more batches than the prefetch queue holds: the worker is still generating them
            next(stream)
    finally:
        stream.close()


@pytest.mark.parametrize("task", list(TASKS))
def test_stream_started_later_sees_the_same_batches(task):
    run = make_run(MIXERS["kda"], TASKS[task])
    whole = batch_stream(run)
    batches = [next(whole) for _ in range(9)]
    later = batch_stream(run, start_step=6)
    for expected in batches[6:]:
        got = next(later)
        assert torch.equal(expected.inputs, got.inputs)


def test_scored_index_matches_the_mask():
    batch = next(batch_stream(make_run(MIXERS["kda"], TASKS["fresh"])))
    from arena.tasks import IGNORE

    run = make_run(MIXERS["kda"], TASKS["fresh"])
    raw = run.task.generate(8, [3, 3, 0])
    assert torch.equal(batch.inputs, raw.inputs)
    mask = raw.targets != IGNORE
    assert torch.equal(batch.scored_targets, raw.targets[mask])
    assert batch.scored_index.numel() == int(mask.sum()) > 0


def test_bad_data_workers_is_a_config_error(tmp_path):
    from arena.errors import ConfigError
    from arena.train import train

    with pytest.raises(ConfigError, match="data_workers"):  # when the config is built, before any training
        train(make_run(MIXERS["kda"], TASKS["fresh"], data_workers=-3), tmp_path, "bad")


def test_cuda_graphs_choice_is_checked_before_training():
    from arena.errors import ConfigError

    with pytest.raises(ConfigError, match="train.cuda_graphs=on needs a CUDA device"):
        make_run(MIXERS["kda"], TASKS["fresh"], cuda_graphs="on")  # device=cpu
    with pytest.raises(ConfigError, match="train.cuda_graphs='sometimes' is not valid"):
        make_run(MIXERS["kda"], TASKS["fresh"], cuda_graphs="sometimes")
    assert make_run(MIXERS["kda"], TASKS["fresh"], cuda_graphs="auto").train_cfg.cuda_graphs == "auto"
    assert make_run(MIXERS["kda"], TASKS["fresh"]).train_cfg.cuda_graphs == "auto"  # validated on an H100
    assert not graphs_wanted(make_run(MIXERS["kda"], TASKS["fresh"]).train_cfg, torch.device("cpu"))  # CPU: eager


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (scripts/check_fast_loop.py)")
@pytest.mark.parametrize("mixer", list(MIXERS))
def test_cuda_graph_replay_equals_eager_steps(mixer):
    """Captured forward/backward replayed each step: the same losses as eager steps (same kernels, same order)."""
    runs = {mode: make_run(MIXERS[mixer], TASKS["fresh"], device="cuda", cuda_graphs=mode) for mode in ("on", "off")}
    graphed, eager = (trainer_losses(runs[mode], 30) for mode in ("on", "off"))
    worst = max(abs(a - b) for a, b in zip(graphed, eager))
    assert worst <= 1e-3, f"{mixer}: max |d loss| {worst:.3g}"
    assert graphed[-1] < graphed[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_default_captures_on_cuda_and_says_so():
    """The default (auto) replays graphs on a CUDA device after the first step, and `replaying` (summary.json's
    cuda_graphs_used) reports it; off never captures."""
    from arena.train import Trainer

    for mode, expected in (("auto", True), ("off", False)):
        run = make_run(MIXERS["kda"], TASKS["fresh"], device="cuda", cuda_graphs=mode)
        trainer, batches = Trainer(run), batch_stream(run)
        try:
            assert not trainer.replaying  # nothing captured before the first step
            trainer.step(next(batches), 0)
            assert trainer.replaying is expected, mode
        finally:
            batches.close()
