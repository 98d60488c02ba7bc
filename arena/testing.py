"""Numerical comparison helpers shared by the tests and the GPU check scripts, and `load_script` for the tests of
scripts/*.py.

The metric is fla's: relative RMS error `||ref - out||_rms / ||ref||_rms`. It means the same at every scale,
so there is no absolute escape by default: a reference of magnitude 1e-7 is held to the ratio like one of
magnitude 1. A caller whose reference is ~0 by nature (a gradient that is zero in exact arithmetic and rounding
noise in practice) passes an explicit `atol` derived from the size of the quantities around it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"  # a checkout's scripts/ (they are not installed)


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py imported as module `name` (and registered in sys.modules, as an import would: dataclasses
    look their module up by name), for tests of what a script defines; a checkout only."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def rel_rms_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """||ref - out||_rms / ||ref||_rms, for reports (an all-zero reference gives the absolute RMS error; inf for a
    non-finite result). Pass/fail decisions go through `assert_close` / `close_problem`, which have no such escape."""
    ref, out = ref.detach().double(), out.detach().double()
    if not torch.isfinite(out).all():
        return float("inf")  # a NaN-poisoned element that was never written, or an overflow
    denom = ref.pow(2).mean().sqrt().item()
    err = (ref - out).pow(2).mean().sqrt().item()
    return err / denom if denom > 0 else err


def close_problem(ref: torch.Tensor, out: torch.Tensor, ratio: float, atol: float = 0.0) -> str | None:
    """Why `out` does not match `ref` (the rule of `assert_close`), or None when it does."""
    if ref.shape != out.shape:
        return f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    if not ref.numel():
        return None
    ref, out = ref.detach().double(), out.detach().double()
    diff = ref - out
    max_abs, ref_max = diff.abs().max().item(), ref.abs().max().item()
    if not torch.isfinite(out).all():
        return f"non-finite values in the result (max abs diff {max_abs:.3g})"
    ref_rms = ref.pow(2).mean().sqrt().item()
    # an all-zero reference has no scale: only an all-zero result matches it relatively
    err = diff.pow(2).mean().sqrt().item() / ref_rms if ref_rms > 0 else (0.0 if max_abs == 0 else float("inf"))
    if err <= ratio:
        return None
    if ref_max <= atol and max_abs <= atol:  # the reference is ~0 at the caller's scale, and so is the result
        return None
    floor = f", floor atol {atol:.3g}" if atol else ""
    return (f"relative RMS error {err:.3g} > {ratio:g} (max abs diff {max_abs:.3g}, reference max abs "
            f"{ref_max:.3g}{floor})")


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float, atol: float = 0.0) -> None:
    """Fail with a readable message unless `out` matches `ref` to relative RMS error `ratio`.

    `atol` (default 0: none) is an absolute floor for a reference that is ~0 at the caller's scale: the pair
    also passes when both max|ref| and max|ref - out| are <= atol. Derive it from the size of the quantities
    around the reference (e.g. 1e-6 x the largest gradient of the layer), never from the tensor under test;
    a reference above the floor is always held to `ratio`. An all-zero reference needs an all-zero result
    unless a floor is given.
    """
    problem = close_problem(ref, out, ratio, atol)
    if problem is not None:
        raise AssertionError(f"{name}: {problem}")


def reference_losses(run, steps: int) -> list[float]:
    """Per-step training losses of `run` through the plain loop the trainer replaced: batches generated inline,
    scored positions taken by a boolean mask, the per-tensor AdamW, and a host read of the loss every step.
    The oracle for `trainer_losses` (same seed and config: the same curve up to rounding)."""
    import torch.nn.functional as F

    from arena.evaluate import scored_logits
    from arena.tasks.base import split_seed
    from arena.train import lr_at, make_optimizer

    cfg, task, model, device, amp = run.train_cfg, run.task, run.model, run.device, run.amp
    decay, no_decay = (g["params"] for g in make_optimizer(model, cfg).param_groups)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False, fused=False)
    fixed = task.generate(task.cfg.num_train, split_seed(cfg.seed, "train")) if task.cfg.num_train else None
    order_rng = torch.Generator().manual_seed(cfg.seed)
    order, cursor = (torch.randperm(len(fixed), generator=order_rng) if fixed is not None else None), 0
    losses = []
    for step in range(steps):
        if fixed is not None:
            if cursor + cfg.batch_size > len(order):
                order, cursor = torch.randperm(len(fixed), generator=order_rng), 0
            batch = fixed[order[cursor: cursor + cfg.batch_size]]
            cursor += cfg.batch_size
        else:
            batch = task.generate(cfg.batch_size, [cfg.seed, 3, step])
        batch = batch.to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits, targets = scored_logits(model, batch)  # the boolean-mask scoring the old loop used
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=False)
        optimizer.step()
        losses.append(loss.item())
    return losses


def trainer_losses(run, steps: int) -> list[float]:
    """Per-step training losses of `run` through `arena.train.Trainer` and `batch_stream` (read once, at the end)."""
    from arena.train import Trainer, batch_stream

    trainer, batches, losses = Trainer(run), batch_stream(run), []
    try:
        for step in range(steps):
            trainer.step(next(batches), step)
            losses.append(trainer.last_loss)
    finally:
        batches.close()
    return torch.stack(losses).tolist()
