"""Gated DeltaNet (GDN): the delta rule with one scalar decay gate per head (arXiv 2412.06464, fla's layer).

    from arena.mixers import build_mixer
    mixer = build_mixer("gdn", d_model=64, num_heads=2)     # defaults: conf/mixer/gdn.yaml
    y, state = mixer(x)                                     # x: [B, T, D] -> y: [B, T, D]
    y_next, state = mixer(x_next, state)                    # continue; T = 1 takes the decode step

Per head (docs/mixers.md §1.3; K = head_dim, V = expand_v * K):
    q, k = l2norm(SiLU(ShortConv(W_q x))), l2norm(SiLU(ShortConv(W_k x)))     [B, T, H, K]
    v    = SiLU(ShortConv(W_v x))                                              [B, T, H, V]
    g    = -exp(A_log[h]) * softplus(a_proj x + dt_bias)                       [B, T, H], g <= 0
    beta = sigmoid(b_proj x)                                                   [B, T, H]
    S_t  = exp(g) (I - beta k k^T) S_{t-1} + beta k v^T,   o_t = S_t^T q_t / sqrt(K)
    y    = o_proj(RMSNorm(o) * silu(g_proj x))
It is KDA (kda.py) with the gate shared by the K channels, and reuses KDA's q/k/v conv block. The state
dict holds the three conv caches and the recurrent state S: [B, H, K, V] (fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arena.kernels.fused import check_fused, use_fused
from arena.kernels.gated_delta_rule import (
    chunk_gated_delta_rule,
    gated_delta_rule_decode_step,
    naive_recurrent_gated_delta_rule,
)
from arena.kernels.gated_delta_rule.chunk import DEFAULT_CHUNK_SIZE
from arena.mixers import register_mixer
from arena.mixers.base import Mixer, State
from arena.mixers.common import GatedRMSNorm, decay_rate_init, dt_bias_init
from arena.mixers.kda import (
    DELTA_RULE_IMPLS,
    QKVConv,
    delta_rule_flops,
    delta_rule_kernels,
    no_weight_decay,
    run_delta_rule,
    value_dim,
)


@register_mixer("gdn")
class GatedDeltaNet(Mixer):
    KERNELS = delta_rule_kernels(chunk_gated_delta_rule, naive_recurrent_gated_delta_rule)
    impls = DELTA_RULE_IMPLS

    @dataclass
    class Config(Mixer.Config):
        impl: str = "auto"  # auto | torch | triton | naive, see kda.DELTA_RULE_IMPLS
        num_heads: int = 2  # H
        head_dim: int | None = None  # K; None = d_model // num_heads
        expand_v: float = 2.0  # value head dim V = expand_v * K (fla's default)
        conv_size: int = 4  # kernel of the short causal convs on q, k, v
        allow_neg_eigval: bool = False  # beta in (0, 2), so I - beta k k^T has eigenvalues in (-1, 1]
        norm_eps: float = 1e-5  # output RMSNorm epsilon
        fused: str = "auto"  # Triton ops for conv/norm/gate glue: auto (on CUDA) | on | off, see kernels/fused

    def __init__(self, d_model: int, cfg: Config):
        super().__init__(d_model, cfg)
        check_fused("gdn", cfg.fused)
        H, K = self.heads_and_dim(cfg.num_heads, cfg.head_dim)
        V = value_dim("gdn", K, cfg.expand_v)
        self.H, self.K, self.V = H, K, V
        self.qkv = QKVConv("gdn", d_model, H, K, V, cfg.conv_size)
        self.a_proj = nn.Linear(d_model, H, bias=False)  # decay gate, one per head
        self.A_log = no_weight_decay(nn.Parameter(decay_rate_init(H, low=0.0, high=16.0)))  # [H], fla's range
        self.dt_bias = no_weight_decay(nn.Parameter(dt_bias_init(H)))  # [H]
        self.b_proj = nn.Linear(d_model, H, bias=False)
        self.g_proj = nn.Linear(d_model, H * V, bias=False)  # output gate, full rank
        self.o_norm = GatedRMSNorm(V, eps=cfg.norm_eps, activation="swish")
        self.o_proj = nn.Linear(H * V, d_model, bias=False)

    def decay(self, x: torch.Tensor) -> torch.Tensor:
        """Log-space decay g = -exp(A_log) * softplus(a_proj x + dt_bias) <= 0: [B, T, H], fp32 (fp64)."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        raw = self.a_proj(x).to(dtype) + self.dt_bias.to(dtype)  # [B, T, H]
        return -self.A_log.to(dtype).exp() * F.softplus(raw)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        fused = use_fused(self.cfg.fused, x)
        q, k, v, conv = self.qkv(x, state, fused)
        B, T = x.shape[:2]
        if fused:
            from arena.kernels.fused.gated_norm import decay_gate

            g = decay_gate(self.a_proj(x), self.A_log, self.dt_bias, 1)  # [B, T, H] fp32
        else:
            g = self.decay(x)
        beta = torch.sigmoid(self.b_proj(x).to(g.dtype))  # [B, T, H]
        kernel = self.KERNELS[self.cfg.impl]
        o, S = run_delta_rule(
            kernel, gated_delta_rule_decode_step, q, k, v, g, beta, state, self.cfg.allow_neg_eigval, self.cfg.impl
        )
        gate = self.g_proj(x).view(B, T, self.H, self.V)
        o = self.o_norm.fused(o, gate) if fused else self.o_norm(o, gate)  # [B, T, H, V]
        return self.o_proj(o.reshape(B, T, self.H * self.V)), {**conv, "recurrent": S}

    def state_size(self, seq_len: int) -> int:
        return self.H * self.K * self.V + self.qkv.cache_size()

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """Chunked delta rule at the kernel's chunk size, see `kda.delta_rule_flops`."""
        return delta_rule_flops(self.H, self.K, self.V, seq_len, DEFAULT_CHUNK_SIZE)
