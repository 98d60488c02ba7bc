"""The timing and the training steps of `python -m arena.bench train` (arena/bench/train.py).

    ms = window_ms(steps.full, start, count, device)   # mean of a window of steps between two synchronizes
    ms = median_ms(fn, reps, warmup, device)           # median of single calls (CUDA events on CUDA)
    steps = (TrainerSteps if pick_loop("auto") == "trainer" else PlainSteps)(run)

PlainSteps is the loop body of arena/train.py at d3f81f9 (per-step host syncs), TrainerSteps arena.train.Trainer
on batch_stream batches. Like arena/bench/train.py, this file must also run inside a checkout of an older arena
(one without Trainer: `has_trainer`). Run through `python -m arena.bench train`; tests:
tests/bench/test_bench_train.py.
"""

from __future__ import annotations

import statistics
import time

# ------------------------------------------------------------------------------------------------------ timing

def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def window_ms(step, start: int, count: int, device) -> float:
    """Mean ms of `step(i)` for i in start .. start + count - 1, between two synchronizes."""
    _sync(device)
    t0 = time.perf_counter()
    for i in range(start, start + count):
        step(i)
    _sync(device)
    return (time.perf_counter() - t0) * 1e3 / count


def median_ms(fn, reps: int, warmup: int, device) -> float:
    """Median ms of `fn()` over `reps` calls after `warmup` untimed ones (CUDA events on CUDA)."""
    import torch

    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    _sync(device)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    _sync(device)
    return statistics.median(start.elapsed_time(end) for start, end in events)


# ------------------------------------------------------------------------------------------------- the steps

class Diverged(RuntimeError):
    """The loss became non-finite (the old loop would have stopped the run there)."""


def _plain_step(run, model, optimizer, step: int, batch=None) -> None:
    """The loop body of arena/train.py at d3f81f9: one optimizer step, with its host syncs and .item()s.
    `batch` None generates the step's batch (task.generate(B, [seed, 3, step])) as that loop did."""
    import torch
    import torch.nn.functional as F

    from arena.evaluate import scored_logits
    from arena.train import lr_at

    cfg, device, amp = run.train_cfg, run.device, run.amp
    if batch is None:
        batch = run.task.generate(cfg.batch_size, [cfg.seed, 3, step])
    batch = batch.to(device)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        logits, targets = scored_logits(model, batch)
    loss = F.cross_entropy(logits, targets)
    if not torch.isfinite(loss):
        raise Diverged(f"loss became {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    _sync(device)
    loss.item()
    (logits.argmax(-1) == targets).sum().item()


class PlainSteps:
    """Steps of the old loop: `full(i)` generates batch i, `reused(i)` steps on one batch already on the device."""
    loop = "plain"

    def __init__(self, run):
        from arena.train import make_optimizer

        self.run, self.model = run, run.model
        self.optimizer = make_optimizer(self.model, run.train_cfg)
        self.fixed = None

    def full(self, step: int) -> None:
        _plain_step(self.run, self.model, self.optimizer, step)

    def reused(self, step: int) -> None:
        if self.fixed is None:
            cfg = self.run.train_cfg
            self.fixed = self.run.task.generate(cfg.batch_size, [cfg.seed, 3, step]).to(self.run.device)
        _plain_step(self.run, self.model, self.optimizer, step, self.fixed)

    def close(self) -> None:
        pass


class TrainerSteps:
    """Steps of arena.train.Trainer on arena.train.batch_stream batches (prefetched, no host sync)."""
    loop = "trainer"

    def __init__(self, run):
        import arena.train as train

        self.trainer = train.Trainer(run)
        model = getattr(self.trainer, "model", None)
        self.model = run.model if model is None else model
        self.stream = train.batch_stream(run, start_step=0)
        self.fixed = None

    def full(self, step: int) -> None:
        self.trainer.step(next(self.stream), step)

    def reused(self, step: int) -> None:
        if self.fixed is None:
            self.fixed = next(self.stream)
        self.trainer.step(self.fixed, step)

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()  # stops the stream's background workers


def has_trainer() -> bool:
    import arena.train as train

    return hasattr(train, "Trainer") and hasattr(train, "batch_stream")


def pick_loop(requested: str) -> str:
    if requested == "auto":
        return "trainer" if has_trainer() else "plain"
    if requested == "trainer" and not has_trainer():
        raise ValueError("loop=trainer but this arena.train has no Trainer / batch_stream; use loop=plain or auto")
    return requested
