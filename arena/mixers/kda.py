"""Kimi Delta Attention (KDA): the delta rule with a per-channel decay gate (Kimi Linear, arXiv 2510.26692).

    from arena.mixers import build_mixer
    mixer = build_mixer("kda", d_model=64, num_heads=2)     # defaults: the Config below
    y, state = mixer(x)                                     # x: [B, T, D] -> y: [B, T, D]
    y_next, state = mixer(x_next, state)                    # continue; T = 1 takes the decode step

Per head (docs/mixers.md §1.2, Kimi's official layer; K = head_dim, V = expand_v * K):
    q, k = l2norm(SiLU(ShortConv(W_q x))), l2norm(SiLU(ShortConv(W_k x)))     [B, T, H, K]
    v    = SiLU(ShortConv(W_v x))                                              [B, T, H, V]
    g    = -exp(A_log[h]) * softplus(f_b(f_a(x)) + dt_bias)                    [B, T, H, K], g <= 0
    beta = sigmoid(b_proj x)                                                   [B, T, H]
    S_t  = (I - beta k k^T) Diag(exp g) S_{t-1} + beta k v^T,   o_t = S_t^T q_t / sqrt(K)
    y    = o_proj(RMSNorm(o) * sigmoid(g_b(g_a(x))))
The state dict holds the three conv caches and the recurrent state S: [B, H, K, V] (fp32). The layer around the
gates (q/k/v convs, kernels, output norm, FLOP count) is shared with Gated DeltaNet in delta_rule.py.

gate (the decay's form):
    softplus  (default) the formula above, unbounded below: what Kimi-Linear-48B was trained with and fla's default.
    bounded   fla's "safe" lower-bound gate: g = gate_lower_bound * sigmoid(exp(A_log[h]) * (f_b(f_a(x)) + dt_bias)),
              in (gate_lower_bound, 0); fla recommends -5 (the per-step decay factor exp(g) stays above 0.007),
              which lets its kernels run the diagonal blocks on tensor cores. Computed in PyTorch also in fused layers.
init (A_log [H], dt_bias [H*K] at construction; dt ~ exp U(log 1e-3, log 0.1) floored at 1e-4 is Mamba's dt init):
    fla       (default) fla 0.6.0's KimiDeltaAttention: A_log = log U(1, 16), dt_bias = softplus^-1(dt); with
              gate=bounded, A_log = 0 (fla's safe_gate). The reference, and for the softplus gate identical to
              `mamba`; it is the init arena's KDA always had, so earlier results stay comparable. fla's models also
              re-initialise dt_bias this way in _init_weights (0.4.0 and 0.6.0 alike).
    mamba     Mamba2's scheme: A_log = log U(1, 16), dt_bias = softplus^-1(dt), whatever the gate.
    zero_dt   A_log as fla, dt_bias = 0: fla 0.4.0's layer constructor on its own (its model overwrote it). Every
              channel then starts at softplus(0) = 0.69 times exp(A_log), a strong decay. On Palindrome (length
              1,024, model=kimi_2l, one H200, 2,000 steps) it reached validation accuracy 0.26 against the default's
              0.49 (docs/mixers.md §1.2), hence not the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arena.errors import ConfigError, choice_error
from arena.kernels.kda import chunk_kda, kda_decode_step, naive_recurrent_kda
from arena.mixers import register_mixer
from arena.mixers.common import GatedRMSNorm, decay_params
from arena.mixers.delta_rule import DeltaRuleMixer, QKVConv, delta_rule_kernels

GATES = ("softplus", "bounded")


@register_mixer("kda")
class KDA(DeltaRuleMixer):
    KERNELS = delta_rule_kernels(chunk_kda, naive_recurrent_kda)
    DECODE_STEP = staticmethod(kda_decode_step)

    @dataclass
    class Config(DeltaRuleMixer.Config):
        impl: str = "auto"  # auto | torch | triton | naive, see delta_rule.DELTA_RULE_IMPLS
        num_heads: int = 2  # H
        head_dim: int | None = None  # K; None = d_model // num_heads
        expand_v: float = 1.0  # value head dim V = expand_v * K (Kimi uses 1)
        conv_size: int = 4  # kernel of the short causal convs on q, k, v
        gate_rank: int | None = None  # bottleneck of the decay and output-gate projections; None = K (paper)
        allow_neg_eigval: bool = False  # beta in (0, 2), so I - beta k k^T has eigenvalues in (-1, 1]
        norm_eps: float = 1e-5  # output RMSNorm epsilon
        fused: str = "auto"  # Triton ops for conv/norm/gate glue: auto (on CUDA) | on | off, see kernels/fused
        gate: str = "softplus"  # decay form: softplus (Kimi Linear) | bounded (fla's safe gate), module docstring
        gate_lower_bound: float = -5.0  # floor of the bounded gate's per-step log decay (< 0); softplus ignores it
        init: str = "fla"  # A_log / dt_bias scheme: fla (the reference) | mamba | zero_dt, module docstring

    def __init__(self, d_model: int, cfg: Config):
        super().__init__(d_model, cfg)
        H, K, V = self.H, self.K, self.V
        rank = K if cfg.gate_rank is None else cfg.gate_rank
        if rank < 1:
            raise ConfigError(f"mixer kda: gate_rank={rank} must be >= 1 (or null for head_dim)")
        if cfg.gate not in GATES:
            raise choice_error("mixer kda: gate", cfg.gate, GATES)
        if cfg.gate == "bounded" and not cfg.gate_lower_bound < 0:
            raise ConfigError(f"mixer kda: gate_lower_bound={cfg.gate_lower_bound} must be < 0 with gate=bounded "
                              "(fla recommends -5)")
        self.qkv = QKVConv("kda", d_model, H, K, V, cfg.conv_size)
        self.f_a = nn.Linear(d_model, rank, bias=False)  # decay gate, low rank
        self.f_b = nn.Linear(rank, H * K, bias=False)
        # fla's safe gate starts at A_log = 0, i.e. log U(1, 1)
        fla_range = (1.0, 16.0) if cfg.gate == "softplus" else (1.0, 1.0)
        self.A_log, self.dt_bias = decay_params("mixer kda", cfg.init, H, H * K, fla_range)  # [H], [H*K]
        self.b_proj = nn.Linear(d_model, H, bias=False)
        self.g_a = nn.Linear(d_model, rank, bias=False)  # output gate, low rank; no bias as in Kimi
        self.g_b = nn.Linear(rank, H * V, bias=False)
        self.o_norm = GatedRMSNorm(V, eps=cfg.norm_eps, activation="sigmoid")
        self.o_proj = nn.Linear(H * V, d_model, bias=False)

    def decay(self, x: torch.Tensor) -> torch.Tensor:
        """Log-space decay g <= 0 of the configured gate (module docstring): [B, T, H, K], fp32 (fp64 for fp64 x)."""
        B, T, _ = x.shape
        dtype = torch.promote_types(x.dtype, torch.float32)
        raw = (self.f_b(self.f_a(x)).to(dtype) + self.dt_bias.to(dtype)).view(B, T, self.H, self.K)
        rate = self.A_log.to(dtype).exp()[:, None]  # [H, 1]
        if self.cfg.gate == "bounded":
            return self.cfg.gate_lower_bound * torch.sigmoid(rate * raw)
        return -rate * F.softplus(raw)

    def fused_decay(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.gate != "softplus":  # the fused op computes the softplus gate only
            return self.decay(x)
        from arena.kernels.fused.gated_norm import decay_gate

        return decay_gate(self.f_b(self.f_a(x)), self.A_log, self.dt_bias, self.K)  # [B, T, H, K] fp32

    def output_gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.g_b(self.g_a(x))
