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
