"""What the delta-rule mixers KDA (kda.py) and Gated DeltaNet (gdn.py) share: the base layer and its pieces.

Not a mixer (the registry skips this module, see arena/mixers/__init__.py). Each subclass builds its own gates
and, in this order, `qkv`, its decay projection, `A_log` / `dt_bias`, `b_proj`, its output gate, `o_norm` and
`o_proj`; `DeltaRuleMixer.forward` then runs, per head (K = head_dim, V = expand_v * K):

    q, k, v, conv caches = qkv(x)                          QKVConv: SiLU(ShortConv(W x)), q and k L2-normalised
    g    = decay(x)                                        [B, T, H, K] (KDA) or [B, T, H] (GDN), g <= 0, fp32
    beta = sigmoid(b_proj x)                               [B, T, H]
    o, S = the sequence kernel (KERNELS[impl]), or one decode step for T = 1 after a state
    y    = o_proj(o_norm(o, output_gate(x)))

The state dict holds the conv caches conv_q, conv_k, conv_v and the recurrent state S: [B, H, K, V] (fp32).
FLOPs are counted at the chunk length of the kernel that runs (`delta_rule_chunk_size`), plus the short convs.
Tests: tests/mixers/test_kda_gdn.py (and the shared contract in tests/mixers/test_contract.py).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from arena.errors import ConfigError
from arena.kernels._dispatch import chunk_size_used
from arena.kernels.fused import check_fused, use_fused
from arena.mixers.base import Mixer, State
from arena.mixers.common import ShortConv, check_decay_init, l2norm


def value_dim(mixer: str, head_dim: int, expand_v: float) -> int:
    """V = expand_v * head_dim, which must be a positive integer."""
    V = expand_v * head_dim
    if V < 1 or V != int(V):
        raise ConfigError(
            f"mixer {mixer}: expand_v={expand_v} gives value head dim {V} for head_dim={head_dim}; "
            "choose expand_v so that expand_v * head_dim is a positive integer"
        )
    return int(V)


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

    def flops_per_token(self) -> float:
        """The three short convs: 2 * conv_size * (2 H K + H V)."""
        return self.q_conv.flops_per_token() + self.k_conv.flops_per_token() + self.v_conv.flops_per_token()


DELTA_RULE_IMPLS = ("auto", "torch", "triton", "naive")  # auto: Triton kernels on CUDA, the torch chunked form on CPU
IMPL_BACKENDS = {"auto": None, "torch": "torch", "triton": "triton"}  # impl -> the chunked ops' `backend`


def delta_rule_kernels(chunk, naive) -> dict:
    """impl name -> sequence kernel; "triton" falls back to torch with one warning where Triton cannot run."""
    return {**{impl: partial(chunk, backend=backend) for impl, backend in IMPL_BACKENDS.items()}, "naive": naive}


def delta_rule_chunk_size(impl: str, device, dtype: torch.dtype, K: int, V: int) -> int | None:
    """The chunk length `impl`'s sequence kernel runs at for q, k, v of `dtype` on `device` (Triton's 64 where it
    runs, the torch path's 16 elsewhere, as the ops decide), or None for impl="naive", the token loop."""
    if impl == "naive":
        return None
    return chunk_size_used(IMPL_BACKENDS[impl], device, dtype, K, V)


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


def delta_rule_flops(H: int, K: int, V: int, seq_len: int, chunk_size: int | None) -> float:
    """Forward FLOPs per token of the delta rule's state work, 2 per multiply-add, summed over heads.

    Chunked (WY) form, within a chunk of C = min(chunk_size, seq_len) tokens, per token and head: k k^T and q k^T
    (2 * 2CK), the triangular inverse (~2C^2/3), w = M(beta k) and u = M(beta v) (2CK + 2CV) and the intra-chunk
    output A_qk v_new (2CV); through the state: w S, k^T v_new and q S (3 * 2KV).
    chunk_size None, the token loop: decay S (KV), S^T k (2KV), the rank-1 update (2KV) and S^T q (2KV).
    Element-wise work (gates, decays, norms; O(C K) per token for KDA's pairwise decays) is left out.
    """
    if chunk_size is None:
        return float(H * 7 * K * V)
    C = min(chunk_size, seq_len)
    return float(H * (6 * K * V + 6 * C * K + 4 * C * V + 2 * C * C / 3))


class DeltaRuleMixer(Mixer):
    """The layer KDA and Gated DeltaNet share (module docstring); subclasses set KERNELS and DECODE_STEP, build
    their parameters and define `decay`, `fused_decay` and `output_gate`."""

    KERNELS: ClassVar[dict[str, Any]]  # impl -> sequence kernel, from delta_rule_kernels (the bench patches it)
    DECODE_STEP: ClassVar[Any]  # the torch single-token step, a staticmethod
    impls = DELTA_RULE_IMPLS

    def __init__(self, d_model: int, cfg: Mixer.Config):
        super().__init__(d_model, cfg)
        name = self.registry_name
        check_fused(name, cfg.fused)
        check_decay_init(f"mixer {name}", cfg.init)
        H, K = self.heads_and_dim(cfg.num_heads, cfg.head_dim)
        self.H, self.K, self.V = H, K, value_dim(name, K, cfg.expand_v)

    def decay(self, x: torch.Tensor) -> torch.Tensor:
        """Log-space decay g <= 0 in plain PyTorch: [B, T, H, K] or [B, T, H], fp32 (fp64 for fp64 x)."""
        raise NotImplementedError

    def fused_decay(self, x: torch.Tensor) -> torch.Tensor:
        """The same as `decay`, through the fused Triton gate op where there is one (fused layers only)."""
        return self.decay(x)

    def output_gate(self, x: torch.Tensor) -> torch.Tensor:
        """The output gate's pre-activation, [B, T, H * V]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        fused = use_fused(self.cfg.fused, x)
        q, k, v, conv = self.qkv(x, state, fused)
        B, T = x.shape[:2]
        g = self.fused_decay(x) if fused else self.decay(x)
        beta = torch.sigmoid(self.b_proj(x).to(g.dtype))  # [B, T, H]
        kernel = self.KERNELS[self.cfg.impl]
        o, S = run_delta_rule(kernel, self.DECODE_STEP, q, k, v, g, beta, state, self.cfg.allow_neg_eigval,
                              self.cfg.impl)
        gate = self.output_gate(x).view(B, T, self.H, self.V)
        o = self.o_norm.fused(o, gate) if fused else self.o_norm(o, gate)  # [B, T, H, V]
        return self.o_proj(o.reshape(B, T, self.H * self.V)), {**conv, "recurrent": S}

    def state_size(self, seq_len: int) -> int:
        return self.H * self.K * self.V + self.qkv.cache_size()

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """The delta rule at the chunk length of the kernel that runs for these parameters' device and dtype
        (`delta_rule_chunk_size`, see `delta_rule_flops`), plus the three short convs."""
        p = self.o_proj.weight
        chunk = delta_rule_chunk_size(self.cfg.impl, p.device, p.dtype, self.K, self.V)
        return delta_rule_flops(self.H, self.K, self.V, seq_len, chunk) + self.qkv.flops_per_token()
