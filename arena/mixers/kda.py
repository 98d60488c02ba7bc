"""Kimi Delta Attention (KDA): the delta rule with a per-channel decay gate (Kimi Linear, arXiv 2510.26692).

    from arena.mixers import build_mixer
    mixer = build_mixer("kda", d_model=64, num_heads=2)     # defaults: conf/mixer/kda.yaml
    y, state = mixer(x)                                     # x: [B, T, D] -> y: [B, T, D]
    y_next, state = mixer(x_next, state)                    # continue; T = 1 takes the decode step

Per head (docs/mixers.md §1.2, Kimi's official layer; K = head_dim, V = expand_v * K):
    q, k = l2norm(SiLU(ShortConv(W_q x))), l2norm(SiLU(ShortConv(W_k x)))     [B, T, H, K]
    v    = SiLU(ShortConv(W_v x))                                              [B, T, H, V]
    g    = -exp(A_log[h]) * softplus(f_b(f_a(x)) + dt_bias)                    [B, T, H, K], g <= 0
    beta = sigmoid(b_proj x)                                                   [B, T, H]
    S_t  = (I - beta k k^T) Diag(exp g) S_{t-1} + beta k v^T,   o_t = S_t^T q_t / sqrt(K)
    y    = o_proj(RMSNorm(o) * sigmoid(g_b(g_a(x))))
The state dict holds the three conv caches and the recurrent state S: [B, H, K, V] (fp32).
The pieces Gated DeltaNet (gdn.py) shares live here too: `QKVConv`, `value_dim`, `run_delta_rule`,
`delta_rule_flops`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from arena.errors import ConfigError
from arena.kernels.fused import check_fused, use_fused
from arena.kernels.kda import chunk_kda, kda_decode_step, naive_recurrent_kda
from arena.kernels.kda.chunk import DEFAULT_CHUNK_SIZE
from arena.mixers import register_mixer
from arena.mixers.base import Mixer, State
from arena.mixers.common import GatedRMSNorm, ShortConv, decay_rate_init, dt_bias_init, l2norm


def value_dim(mixer: str, head_dim: int, expand_v: float) -> int:
    """V = expand_v * head_dim, which must be a positive integer."""
    V = expand_v * head_dim
    if V < 1 or V != int(V):
        raise ConfigError(
            f"mixer {mixer}: expand_v={expand_v} gives value head dim {V} for head_dim={head_dim}; "
            "choose expand_v so that expand_v * head_dim is a positive integer"
        )
    return int(V)


def no_weight_decay(p: nn.Parameter) -> nn.Parameter:
    p._no_weight_decay = True  # the trainer skips decay for these (decay rates and their biases)
    return p


class QKVConv(nn.Module):
    """q, k, v = SiLU(ShortConv(W x)) for each, q and k L2-normalised per head; carries the three conv caches."""

    def __init__(self, mixer: str, d_model: int, H: int, K: int, V: int, conv_size: int):
        super().__init__()
        if conv_size < 1:
            raise ConfigError(f"mixer {mixer}: conv_size={conv_size} must be >= 1 (1 = no mixing over time)")
        self.d_model, self.H, self.K, self.V = d_model, H, K, V
        self.q_proj = nn.Linear(d_model, H * K, bias=False)
        self.k_proj = nn.Linear(d_model, H * K, bias=False)
        self.v_proj = nn.Linear(d_model, H * V, bias=False)
        self.q_conv = ShortConv(H * K, conv_size)
        self.k_conv = ShortConv(H * K, conv_size)
        self.v_conv = ShortConv(H * V, conv_size)

    def forward(self, x: torch.Tensor, state: State | None, fused: bool = False):
        """q, k [B, T, H, K], v [B, T, H, V] and the new conv caches; `fused`: one Triton pass per projection."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be [B, T, D] with D={self.d_model}, got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        cq, ck, cv = (None, None, None) if state is None else (state["conv_q"], state["conv_k"], state["conv_v"])
        if fused:  # conv, SiLU and the per-head L2 norm in one pass, written contiguous in the kernels' layout
            q, cq = self.q_conv.fused(self.q_proj(x), cq, norm_head_dim=self.K)
            k, ck = self.k_conv.fused(self.k_proj(x), ck, norm_head_dim=self.K)
            v, cv = self.v_conv.fused(self.v_proj(x), cv)
            return (q.view(B, T, self.H, self.K), k.view(B, T, self.H, self.K), v.view(B, T, self.H, self.V),
                    {"conv_q": cq, "conv_k": ck, "conv_v": cv})
        q, cq = self.q_conv(self.q_proj(x), cq)
        k, ck = self.k_conv(self.k_proj(x), ck)
        v, cv = self.v_conv(self.v_proj(x), cv)
        q = l2norm(q.view(B, T, self.H, self.K))  # [B, T, H, K]
        k = l2norm(k.view(B, T, self.H, self.K))  # [B, T, H, K]
        return q, k, v.view(B, T, self.H, self.V), {"conv_q": cq, "conv_k": ck, "conv_v": cv}

    def cache_size(self) -> int:
        return self.q_conv.cache_size() + self.k_conv.cache_size() + self.v_conv.cache_size()


DELTA_RULE_IMPLS = ("auto", "torch", "triton", "naive")  # auto: Triton kernels on CUDA, the torch chunked form on CPU


def delta_rule_kernels(chunk, naive) -> dict:
    """impl name -> sequence kernel; "triton" falls back to torch with one warning where Triton cannot run."""
    return {"auto": partial(chunk, backend=None), "torch": partial(chunk, backend="torch"),
            "triton": partial(chunk, backend="triton"), "naive": naive}


def _fast_decode(impl: str, q: torch.Tensor) -> bool:
    """Whether single-token decoding should use the fused recurrent Triton kernel (CUDA, impl auto or triton)."""
    if impl not in ("auto", "triton") or q.device.type != "cuda" or torch.is_grad_enabled():
        return False
    from arena.kernels.triton_delta import triton_status

    return triton_status(q.device)[0]


def run_delta_rule(kernel, decode_step, q, k, v, g, beta, state: State | None, allow_neg_eigval: bool,
                   impl: str = "torch"):
    """(o [B, T, H, V], S [B, H, K, V]): one decode step for T = 1 after a state, else the sequence `kernel`."""
    S0 = None if state is None else state["recurrent"]
    if q.dtype != v.dtype:  # e.g. an fp32 l2norm next to bf16 values under autocast: the kernels want one dtype
        q, k = q.to(v.dtype), k.to(v.dtype)
    if S0 is not None and q.shape[1] == 1:
        if _fast_decode(impl, q):
            from arena.kernels.triton_delta.recurrent import fused_recurrent_decode_step as decode_step
        o, S = decode_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0], S0, allow_neg_eigval=allow_neg_eigval)
        return o.unsqueeze(1), S
    return kernel(q, k, v, g, beta, initial_state=S0, output_final_state=True, allow_neg_eigval=allow_neg_eigval)


def delta_rule_flops(H: int, K: int, V: int, seq_len: int, chunk_size: int) -> float:
    """Forward FLOPs per token of the chunked (WY) delta rule, 2 per multiply-add, summed over heads.

    Within a chunk of C = min(chunk_size, seq_len) tokens, per token and head: k k^T and q k^T (2 * 2CK),
    the triangular inverse (~2C^2/3), w = M(beta k) and u = M(beta v) (2CK + 2CV) and the intra-chunk
    output A_qk v_new (2CV); through the state: w S, k^T v_new and q S (3 * 2KV). Element-wise work
    (gates, decays, norms; O(C K) per token for KDA's pairwise decays) is left out.
    """
    C = min(chunk_size, seq_len)
    return float(H * (6 * K * V + 6 * C * K + 4 * C * V + 2 * C * C / 3))


@register_mixer("kda")
class KDA(Mixer):
    KERNELS = delta_rule_kernels(chunk_kda, naive_recurrent_kda)
    impls = DELTA_RULE_IMPLS

    @dataclass
    class Config(Mixer.Config):
        impl: str = "auto"  # auto | torch | triton | naive, see DELTA_RULE_IMPLS
        num_heads: int = 2  # H
        head_dim: int | None = None  # K; None = d_model // num_heads
        expand_v: float = 1.0  # value head dim V = expand_v * K (Kimi uses 1)
        conv_size: int = 4  # kernel of the short causal convs on q, k, v
        gate_rank: int | None = None  # bottleneck of the decay and output-gate projections; None = K (paper)
        allow_neg_eigval: bool = False  # beta in (0, 2), so I - beta k k^T has eigenvalues in (-1, 1]
        norm_eps: float = 1e-5  # output RMSNorm epsilon
        fused: str = "auto"  # Triton ops for conv/norm/gate glue: auto (on CUDA) | on | off, see kernels/fused

    def __init__(self, d_model: int, cfg: Config):
        super().__init__(d_model, cfg)
        check_fused("kda", cfg.fused)
        H, K = self.heads_and_dim(cfg.num_heads, cfg.head_dim)
        V = value_dim("kda", K, cfg.expand_v)
        rank = K if cfg.gate_rank is None else cfg.gate_rank
        if rank < 1:
            raise ConfigError(f"mixer kda: gate_rank={rank} must be >= 1 (or null for head_dim)")
        self.H, self.K, self.V = H, K, V
        self.qkv = QKVConv("kda", d_model, H, K, V, cfg.conv_size)
        self.f_a = nn.Linear(d_model, rank, bias=False)  # decay gate, low rank
        self.f_b = nn.Linear(rank, H * K, bias=False)
        self.A_log = no_weight_decay(nn.Parameter(decay_rate_init(H, low=1.0, high=16.0)))  # [H]
        self.dt_bias = no_weight_decay(nn.Parameter(dt_bias_init(H * K)))  # [H*K]
        self.b_proj = nn.Linear(d_model, H, bias=False)
        self.g_a = nn.Linear(d_model, rank, bias=False)  # output gate, low rank; no bias as in Kimi
        self.g_b = nn.Linear(rank, H * V, bias=False)
        self.o_norm = GatedRMSNorm(V, eps=cfg.norm_eps, activation="sigmoid")
        self.o_proj = nn.Linear(H * V, d_model, bias=False)

    def decay(self, x: torch.Tensor) -> torch.Tensor:
        """Log-space decay g = -exp(A_log) * softplus(f_b(f_a(x)) + dt_bias) <= 0: [B, T, H, K], fp32 (fp64)."""
        B, T, _ = x.shape
        dtype = torch.promote_types(x.dtype, torch.float32)
        raw = self.f_b(self.f_a(x)).to(dtype) + self.dt_bias.to(dtype)  # [B, T, H*K]
        return -self.A_log.to(dtype).exp()[:, None] * F.softplus(raw.view(B, T, self.H, self.K))

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        fused = use_fused(self.cfg.fused, x)
        q, k, v, conv = self.qkv(x, state, fused)
        B, T = x.shape[:2]
        if fused:
            from arena.kernels.fused.gated_norm import decay_gate

            g = decay_gate(self.f_b(self.f_a(x)), self.A_log, self.dt_bias, self.K)  # [B, T, H, K] fp32
        else:
            g = self.decay(x)
        beta = torch.sigmoid(self.b_proj(x).to(g.dtype))  # [B, T, H]
        kernel = self.KERNELS[self.cfg.impl]
        o, S = run_delta_rule(kernel, kda_decode_step, q, k, v, g, beta, state, self.cfg.allow_neg_eigval,
                              self.cfg.impl)
        gate = self.g_b(self.g_a(x)).view(B, T, self.H, self.V)
        o = self.o_norm.fused(o, gate) if fused else self.o_norm(o, gate)  # [B, T, H, V]
        return self.o_proj(o.reshape(B, T, self.H * self.V)), {**conv, "recurrent": S}

    def state_size(self, seq_len: int) -> int:
        return self.H * self.K * self.V + self.qkv.cache_size()

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """Chunked delta rule at the kernel's chunk size, see `delta_rule_flops`."""
        return delta_rule_flops(self.H, self.K, self.V, seq_len, DEFAULT_CHUNK_SIZE)
