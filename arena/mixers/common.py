"""Layers shared by several mixers: short causal convolution, L2 norm, gated RMSNorm, Mamba-style inits.

ShortConv and GatedRMSNorm each have a plain PyTorch forward (CPU, the reference) and a `fused` one that runs
the Triton ops of arena.kernels.fused (one pass each way); the mixers choose per call with `use_fused`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ShortConv(nn.Module):
    """Depthwise causal conv1d over time with an optional SiLU, continuing from a cache of past inputs.

    x: [B, T, C] -> y: [B, T, C]. The cache holds the last `kernel_size - 1` inputs, [B, kernel_size - 1, C].
    """

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = False, activation: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.activation = activation
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        k = self.kernel_size
        if cache is None:
            cache = x.new_zeros(B, k - 1, C)
        padded = torch.cat([cache, x], dim=1)  # [B, k-1+T, C]
        # k shifted multiply-adds instead of a grouped nn.Conv1d call: same result, and far faster for
        # depthwise convs on CPU (fp64 grouped conv falls back to a per-channel loop)
        weight = self.conv.weight[:, 0, :]  # [C, k]
        y = sum(padded[:, i: i + T] * weight[:, i] for i in range(k))
        if self.conv.bias is not None:
            y = y + self.conv.bias
        if self.activation:
            y = F.silu(y)
        return y, padded[:, T:]

    def fused(self, x: torch.Tensor, cache: torch.Tensor | None = None,
              norm_head_dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The same as `forward` (then `l2norm` per head of `norm_head_dim` channels, if given) in one Triton pass."""
        from arena.kernels.fused.short_conv import causal_conv1d

        y = causal_conv1d(x, self.conv.weight[:, 0, :], self.conv.bias, activation=self.activation,
                          norm_head_dim=norm_head_dim, initial_cache=cache)
        return y, last_inputs(x, cache, self.kernel_size - 1)

    def cache_size(self) -> int:
        return (self.kernel_size - 1) * self.conv.in_channels


def last_inputs(x: torch.Tensor, cache: torch.Tensor | None, n: int) -> torch.Tensor:
    """The conv cache after x: the last n inputs of [cache; x] (zeros before the start), [B, n, C]."""
    B, T, C = x.shape
    if T >= n:
        return x[:, T - n:].contiguous()
    before = x.new_zeros(B, n, C) if cache is None else cache.to(x.dtype)
    return torch.cat([before, x], dim=1)[:, T:]


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (the form fla's kernels use), computed in >= fp32."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


class GatedRMSNorm(nn.Module):
    """Per-head RMSNorm, then times activation(gate): `RMSNorm(o) * w * act(gate)` (norm before gate, as fla)."""

    def __init__(self, dim: int, eps: float = 1e-5, activation: str = "sigmoid"):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=eps)
        self.activation = activation
        self.act = {"sigmoid": torch.sigmoid, "swish": F.silu}[activation]

    def forward(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return self.norm(o) * self.act(gate)

    def fused(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """The same as `forward` in one Triton pass; the result has o's dtype."""
        from arena.kernels.fused.gated_norm import gated_rmsnorm

        return gated_rmsnorm(o, gate, self.norm.weight, eps=self.norm.eps, activation=self.activation)


def decay_rate_init(shape, low: float = 1.0, high: float = 16.0) -> torch.Tensor:
    """A_log = log(U(low, high)): per-head decay rates, as in Mamba2 / KDA (GDN uses low=0)."""
    return torch.empty(shape).uniform_(low, high).clamp_min(1e-4).log()


def dt_bias_init(shape, dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4) -> torch.Tensor:
    """Bias b with softplus(b) = dt, dt ~ logUniform(dt_min, dt_max) clamped at `floor` (Mamba's init)."""
    dt = torch.exp(torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp_min(floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
