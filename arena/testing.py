"""Numerical comparison helpers shared by the tests and the GPU check scripts.

The metric is fla's: relative RMS error `||ref - out||_rms / ||ref||_rms`, passing also when the max
absolute difference is tiny (both tensors ~0).
"""

from __future__ import annotations

import torch


def rel_rms_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.detach().double(), out.detach().double()
    if not torch.isfinite(out).all():
        return float("inf")  # a NaN-poisoned element that was never written, or an overflow
    denom = ref.pow(2).mean().sqrt().item()
    err = (ref - out).pow(2).mean().sqrt().item()
    return err / denom if denom > 0 else err


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float, atol: float = 1e-6) -> None:
    """Fail with a readable message unless `out` matches `ref` to relative RMS error `ratio`."""
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    err = rel_rms_error(ref, out)
    max_abs = (ref.detach().double() - out.detach().double()).abs().max().item() if ref.numel() else 0.0
    if err <= ratio or max_abs <= atol:
        return
    raise AssertionError(f"{name}: relative RMS error {err:.3g} > {ratio:g} (max abs diff {max_abs:.3g})")


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
