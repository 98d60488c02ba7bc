"""Gated DeltaNet (GDN): the delta rule with one scalar decay gate per head (arXiv 2412.06464, fla's layer).

    from arena.mixers import build_mixer
    mixer = build_mixer("gdn", d_model=64, num_heads=2)     # defaults: the Config below
    y, state = mixer(x)                                     # x: [B, T, D] -> y: [B, T, D]
    y_next, state = mixer(x_next, state)                    # continue; T = 1 takes the decode step

Per head (docs/mixers.md §1.3; K = head_dim, V = expand_v * K):
    q, k = l2norm(SiLU(ShortConv(W_q x))), l2norm(SiLU(ShortConv(W_k x)))     [B, T, H, K]
    v    = SiLU(ShortConv(W_v x))                                              [B, T, H, V]
    g    = -exp(A_log[h]) * softplus(a_proj x + dt_bias)                       [B, T, H], g <= 0 (0: decay=False)
    beta = sigmoid(b_proj x)                                                   [B, T, H]
    S_t  = exp(g) (I - beta k k^T) S_{t-1} + beta k v^T,   o_t = S_t^T q_t / sqrt(K)
    y    = o_proj(RMSNorm(o) * silu(g_proj x))
It is KDA (kda.py) with the gate shared by the K channels; the layer around the gates is shared with KDA in
delta_rule.py. The state dict holds the three conv caches and the recurrent state S: [B, H, K, V] (fp32).

init (A_log [H], dt_bias [H] at construction; dt ~ exp U(log 1e-3, log 0.1) floored at 1e-4 is Mamba's dt init):
    fla       (default) fla 0.6.0's GatedDeltaNet: A_log = log U(0, 16), dt_bias = softplus^-1(dt). The reference
              layer's, and the init arena's GDN always had, so earlier results stay comparable.
    mamba     Mamba2's scheme: A_log = log U(1, 16) (no near-zero decay rates), dt_bias = softplus^-1(dt).
    zero_dt   A_log as fla, dt_bias = 0 (the scheme of fla 0.4.0's KDA layer constructor, for comparison with KDA).

decay=False drops the decay gate (g = 0, so S_t = (I - beta k k^T) S_{t-1} + beta k v^T): DeltaNet, the layer
Grazzi et al. 2025 trained on parity. A gate exp(g) < 1 fades a stored sign as exp(g)^T, which a model trained on
short sequences need not prevent (results/2026-12-06_parity_extrapolation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arena.kernels.gated_delta_rule import (
    chunk_gated_delta_rule,
    gated_delta_rule_decode_step,
    naive_recurrent_gated_delta_rule,
)
from arena.mixers import register_mixer
from arena.mixers.common import GatedRMSNorm, decay_params
from arena.mixers.delta_rule import DeltaRuleMixer, QKVConv, delta_rule_kernels


@register_mixer("gdn")
class GatedDeltaNet(DeltaRuleMixer):
    KERNELS = delta_rule_kernels(chunk_gated_delta_rule, naive_recurrent_gated_delta_rule)
    DECODE_STEP = staticmethod(gated_delta_rule_decode_step)

    @dataclass
    class Config(DeltaRuleMixer.Config):
        impl: str = "auto"  # auto | torch | triton | naive, see delta_rule.DELTA_RULE_IMPLS
        num_heads: int = 2  # H
        head_dim: int | None = None  # K; None = d_model // num_heads
        expand_v: float = 2.0  # value head dim V = expand_v * K (fla's default)
        conv_size: int = 4  # kernel of the short causal convs on q, k, v
        allow_neg_eigval: bool = False  # beta in (0, 2), so I - beta k k^T has eigenvalues in (-1, 1]
        norm_eps: float = 1e-5  # output RMSNorm epsilon
        fused: str = "auto"  # Triton ops for conv/norm/gate glue: auto (on CUDA) | on | off, see kernels/fused
        init: str = "fla"  # A_log / dt_bias scheme: fla (the reference) | mamba | zero_dt, module docstring
        # False: no decay gate (g = 0, alpha = 1), the plain DeltaNet of Grazzi et al.'s parity runs; the layer then
        # has no a_proj, A_log, dt_bias (and `init` has nothing to set)
        decay: bool = True

    def __init__(self, d_model: int, cfg: Config):
        super().__init__(d_model, cfg)
        H, K, V = self.H, self.K, self.V
        self.qkv = QKVConv("gdn", d_model, H, K, V, cfg.conv_size)
        if cfg.decay:
            self.a_proj = nn.Linear(d_model, H, bias=False)  # decay gate, one per head
            self.A_log, self.dt_bias = decay_params("mixer gdn", cfg.init, H, H, (0.0, 16.0))  # [H], [H]; fla's range
        self.b_proj = nn.Linear(d_model, H, bias=False)
        self.g_proj = nn.Linear(d_model, H * V, bias=False)  # output gate, full rank
        self.o_norm = GatedRMSNorm(V, eps=cfg.norm_eps, activation="swish")
        self.o_proj = nn.Linear(H * V, d_model, bias=False)

    def decay(self, x: torch.Tensor) -> torch.Tensor:
        """Log-space decay g = -exp(A_log) * softplus(a_proj x + dt_bias) <= 0: [B, T, H], fp32 (fp64); 0 with
        decay=False."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        if not self.cfg.decay:
            return x.new_zeros(x.shape[:2] + (self.H,), dtype=dtype)
        raw = self.a_proj(x).to(dtype) + self.dt_bias.to(dtype)  # [B, T, H]
        return -self.A_log.to(dtype).exp() * F.softplus(raw)

    def fused_decay(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.decay:
            return self.decay(x)
        from arena.kernels.fused.gated_norm import decay_gate

        return decay_gate(self.a_proj(x), self.A_log, self.dt_bias, 1)  # [B, T, H] fp32

    def output_gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.g_proj(x)
