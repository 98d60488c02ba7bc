"""Layers shared by several mixers: short causal convolution, L2 norm, gated RMSNorm, decay-gate inits.

ShortConv and GatedRMSNorm each have a plain PyTorch forward (CPU, the reference) and a `fused` one that runs
the Triton ops of arena.kernels.fused (one pass each way); the mixers choose per call with `use_fused`.
`decay_params` builds the decay rate A_log and step-size bias dt_bias of KDA, GDN and Mamba2 by the scheme a
mixer's `init` names (DECAY_INITS). Tests: tests/mixers/ (test_kda_gdn.py, test_mamba2.py, test_norms.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from arena.errors import choice_error
from arena.kernels.norm import rms_norm


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
        if T == 1:  # decoding: the window times the taps, one multiply and one sum (fewer ops than k shifted adds)
            y = (padded * weight.t()).sum(1, keepdim=True)
        else:
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

    def flops_per_token(self) -> float:
        """Forward FLOPs per token: one multiply-add (2 FLOPs) per tap and channel; bias and SiLU not counted."""
        return 2.0 * self.kernel_size * self.conv.in_channels


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
        return rms_norm(o, self.norm.weight, self.norm.eps) * self.act(gate)  # = self.norm(o) * act(gate)

    def fused(self, o: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """The same as `forward` in one Triton pass; the result has o's dtype."""
        from arena.kernels.fused.gated_norm import gated_rmsnorm

        return gated_rmsnorm(o, gate, self.norm.weight, eps=self.norm.eps, activation=self.activation)


def no_weight_decay(p: nn.Parameter) -> nn.Parameter:
    p._no_weight_decay = True  # the trainer skips decay for these (decay rates, their biases, Mamba2's D)
    return p


def decay_rate_init(shape, low: float = 1.0, high: float = 16.0) -> torch.Tensor:
    """A_log = log(U(low, high)): per-head decay rates, as in Mamba2 / KDA (GDN uses low=0)."""
    return torch.empty(shape).uniform_(low, high).clamp_min(1e-4).log()


def dt_bias_init(shape, dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4) -> torch.Tensor:
    """Bias b with softplus(b) = dt, dt ~ logUniform(dt_min, dt_max) clamped at `floor` (Mamba's init)."""
    dt = torch.exp(torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp_min(floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


# How A_log and dt_bias start (a mixer's `init`); each mixer's docstring says what each scheme is for it and why its
# default. dt = exp(U(log dt_min, log dt_max)) floored at dt_floor, dt_bias = softplus^-1(dt), is Mamba's dt init.
#   fla      the reference layer's constructor in fla 0.6.0: A_log = log U(fla_A_range) with Mamba's dt init (KDA
#            (1, 16), or A_log = 0 under its bounded "safe" gate; GDN (0, 16); Mamba2 its A_init_range)
#   mamba    Mamba2's scheme (mamba_ssm): A_log = log U(1, 16) (Mamba2: A_init_range) with Mamba's dt init
#   zero_dt  fla's A_log with dt_bias = 0: fla 0.4.0's KimiDeltaAttention constructor (its models' _init_weights
#            then overwrote dt_bias with Mamba's dt init), so softplus(dt_bias) = log 2 ~ 0.69 for every channel
DECAY_INITS = ("fla", "mamba", "zero_dt")


def check_decay_init(where: str, init: str) -> None:
    """One-line ConfigError unless `init` is one of DECAY_INITS; `where` names the mixer ("mixer kda")."""
    if init not in DECAY_INITS:
        raise choice_error(f"{where}: init", init, DECAY_INITS)


def decay_params(where: str, init: str, heads: int, dt_channels: int, fla_A_range: tuple[float, float],
                 mamba_A_range: tuple[float, float] = (1.0, 16.0), dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_floor: float = 1e-4) -> tuple[nn.Parameter, nn.Parameter]:
    """(A_log [heads], dt_bias [dt_channels]) initialised by scheme `init` (see DECAY_INITS), both marked
    `_no_weight_decay`. A_log is drawn first, then dt: the order the layers have always used, so a seed gives the
    same parameters as before `init` existed."""
    check_decay_init(where, init)
    low, high = mamba_A_range if init == "mamba" else fla_A_range
    A_log = decay_rate_init(heads, low, high)
    dt_bias = torch.zeros(dt_channels) if init == "zero_dt" else dt_bias_init(dt_channels, dt_min, dt_max, dt_floor)
    return no_weight_decay(nn.Parameter(A_log)), no_weight_decay(nn.Parameter(dt_bias))
