"""Mamba2 token mixer (state-space duality), following `mamba_ssm/modules/mamba2.py` in plain PyTorch.

    x -> in_proj -> [z | xBC | dt]
    xBC -> depthwise causal conv (kernel d_conv, bias, SiLU) -> split x [H, P], B [G, N], C [G, N]
    dt = softplus(dt + dt_bias), A = -exp(A_log)          per head, fp32
    y  = SSD(q=C, k=B, v=dt*x, g=dt*A) + D * x           B, C shared by the H/G heads of a group
    y  = RMSNorm(y * silu(z)) * w                         gate BEFORE the norm, grouped by ngroups
    -> out_proj

    from arena.mixers import build_mixer
    mixer = build_mixer("mamba2", d_model=64)            # impl="torch" (chunked) or "naive" (token loop)
    y, state = mixer(x)                                   # x: [B, T, D]; state: {"conv", "ssm"}
    y1, state = mixer(x_next, state)                      # T == 1 decodes with ssd_decode_step (no grad and
                                                          # the Triton SSD in use: arena/kernels/ssd/recurrent.py)

Defaults are the published layer's, except chunk_size (64, not 256). The SSD kernels are in arena/kernels/ssd.

Training memory (recompute, on by default): everything between in_proj and out_proj (`_mix`: conv, SSD, D skip,
gated norm) runs under torch.utils.checkpoint, so backward keeps per token only the layer input, in_proj's output
and out_proj's input, and runs `_mix` again (the same forward, bit for bit) instead of keeping B / C expanded to
all H heads, v = dt x, the SSD's chunk states and intermediates, the conv's and the norm's tensors. At d_model 1024
(scripts/saved_activation_bytes.py) that is 29.8 KB a token instead of 218 KB (fp32, torch SSD) or 105 KB (fp32,
Triton SSD and fused ops), and 19 KB instead of 64 KB under bf16 autocast, for one more forward of `_mix` in
backward; recompute=false keeps them all (issue 16: the layer ran out of memory where KDA, GDN and MLA fit).

init (A_log [H], dt_bias [H] at construction; dt ~ exp U(log dt_min, log dt_max) floored at dt_init_floor):
    mamba     (default) mamba_ssm's: A_log = log U(A_init_range), dt_bias = softplus^-1(dt). The layer this one
              follows, and the init it always had.
    fla       fla 0.6.0's Mamba2 layer: the same as mamba (fla copies mamba_ssm's init).
    zero_dt   A_log as mamba, dt_bias = 0 (softplus(0) = log 2: every head starts with dt ~ 0.69), for comparison
              with the delta-rule layers' zero_dt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from arena.errors import ConfigError
from arena.kernels.fused import check_fused, use_fused
from arena.kernels.norm import rms_norm
from arena.kernels.ssd import chunk_ssd, naive_recurrent_ssd, ssd_decode_step
from arena.kernels.ssd.chunk import TRITON_CHUNK_SIZE
from arena.mixers import Mixer, State, register_mixer
from arena.mixers.common import ShortConv, check_decay_init, decay_params, no_weight_decay


@register_mixer("mamba2")
class Mamba2(Mixer):
    impls = ("auto", "torch", "triton", "naive")  # auto: the Triton SSD on CUDA, the torch chunked form elsewhere

    @dataclass
    class Config(Mixer.Config):
        impl: str = "auto"
        d_state: int = 128  # N: width of B and C, i.e. the state is [N, headdim] per head
        d_conv: int = 4  # kernel size of the causal depthwise conv over [x | B | C]
        expand: int = 2  # d_inner = expand * d_model
        headdim: int = 64  # P: channels per head; nheads = d_inner / headdim
        ngroups: int = 1  # G: B and C are shared by the nheads / G heads of a group
        A_init_range: tuple[float, float] = (1.0, 16.0)  # A = -U(lo, hi) per head
        dt_min: float = 1e-3  # dt at init ~ logUniform(dt_min, dt_max)
        dt_max: float = 1e-1
        dt_init_floor: float = 1e-4  # smallest dt at init
        conv_bias: bool = True
        bias: bool = False  # bias of in_proj and out_proj
        norm_eps: float = 1e-5  # eps of the gated RMSNorm
        chunk_size: int = 64  # chunk length of chunk_ssd (mamba uses 256 on GPU; 64 suits short CPU runs)
        fused: str = "auto"  # Triton ops for the conv and the gated norm: auto (on CUDA) | on | off, kernels/fused
        init: str = "mamba"  # A_log / dt_bias scheme: mamba (mamba_ssm) | fla (the same) | zero_dt, module docstring
        recompute: bool = True  # training: keep in_proj's output only, rerun conv..norm in backward (docstring)

    def __init__(self, d_model: int, cfg: Config):
        super().__init__(d_model, cfg)
        where = f"mixer {self.registry_name}"
        self.d_inner = cfg.expand * d_model
        if cfg.headdim < 1 or self.d_inner % cfg.headdim:
            raise ConfigError(f"{where}: headdim={cfg.headdim} must divide d_inner = expand * d_model = {self.d_inner}")
        self.nheads = self.d_inner // cfg.headdim
        if cfg.ngroups < 1 or self.nheads % cfg.ngroups:
            raise ConfigError(f"{where}: ngroups={cfg.ngroups} must divide nheads = d_inner / headdim = {self.nheads}")
        lo, hi = cfg.A_init_range
        if not 0 < lo <= hi:
            raise ConfigError(f"{where}: A_init_range={tuple(cfg.A_init_range)} must satisfy 0 < lo <= hi")
        check_fused(self.registry_name, cfg.fused)
        check_decay_init(where, cfg.init)
        if cfg.chunk_size < 1 or cfg.d_conv < 1:
            raise ConfigError(f"{where}: chunk_size={cfg.chunk_size} and d_conv={cfg.d_conv} must be >= 1")

        H, G, N = self.nheads, cfg.ngroups, cfg.d_state
        self.conv_dim = self.d_inner + 2 * G * N
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + H, bias=cfg.bias)
        self.conv = ShortConv(self.conv_dim, cfg.d_conv, bias=cfg.conv_bias, activation=True)
        # as in mamba, decay rates, step sizes and the skip D are not weight-decayed
        self.A_log, self.dt_bias = decay_params(where, cfg.init, H, H, (lo, hi), mamba_A_range=(lo, hi),
                                                dt_min=cfg.dt_min, dt_max=cfg.dt_max, dt_floor=cfg.dt_init_floor)
        self.D = no_weight_decay(nn.Parameter(torch.ones(H)))
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=cfg.bias)

    def _gated_norm(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """RMSNorm(y * silu(z)) * w over groups of d_inner / G channels (norm_before_gate=False in mamba)."""
        y = y * F.silu(z)
        y = rms_norm(y.unflatten(-1, (self.cfg.ngroups, -1)), eps=self.cfg.norm_eps)  # [B, T, G, d_inner / G]
        return y.flatten(-2) * self.norm_weight.to(y.dtype)  # the weight spans all groups, so it comes after

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        zxbcdt = self.in_proj(x)  # [B, T, d_inner + conv_dim + H]
        cache, h0 = (None, None) if state is None else (state["conv"], state["ssm"])
        if self.cfg.recompute and torch.is_grad_enabled():
            # backward keeps x and zxbcdt only: _mix runs again there, the same forward bit for bit (no randomness)
            y, conv_cache, ssm = checkpoint(self._mix, x, zxbcdt, cache, h0, use_reentrant=False,
                                            preserve_rng_state=False)
        else:
            y, conv_cache, ssm = self._mix(x, zxbcdt, cache, h0)
        return self.out_proj(y.to(x.dtype)), {"conv": conv_cache, "ssm": ssm}

    def _mix(self, x: torch.Tensor, zxbcdt: torch.Tensor, cache: torch.Tensor | None,
             h0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything between in_proj and out_proj: conv, SSD (or one decode step), the D skip and the gated norm.

        x: the layer input [B, T, D], read only to pick kernels (device, dtype); zxbcdt: in_proj's output.
        Returns y [B, T, d_inner] (out_proj's input), the conv cache and the SSM state.
        """
        Bsz, T, _ = x.shape
        H, P, G, N = self.nheads, self.cfg.headdim, self.cfg.ngroups, self.cfg.d_state
        fused = use_fused(self.cfg.fused, x)
        z, xBC, dt = zxbcdt.split([self.d_inner, self.conv_dim, H], dim=-1)
        xBC, conv_cache = (self.conv.fused if fused else self.conv)(xBC, cache)
        xs, Bm, Cm = xBC.split([self.d_inner, G * N, G * N], dim=-1)

        ct = torch.promote_types(x.dtype, torch.float32)  # A = -exp(A_log) can overflow in low precision
        dt = F.softplus(dt.to(ct) + self.dt_bias.to(ct))  # [B, T, H]
        A = -torch.exp(self.A_log.to(ct))  # [H]
        xs = xs.to(ct).unflatten(-1, (H, P))  # [B, T, H, P]
        k, q = (m.to(ct).unflatten(-1, (G, 1, N)).expand(Bsz, T, G, H // G, N).reshape(Bsz, T, H, N) for m in (Bm, Cm))
        v, g = xs * dt[..., None], dt * A  # [B, T, H, P], [B, T, H]

        if T == 1 and h0 is not None:
            step = ssd_decode_step
            if self._triton_decode(x):  # one launch that reads and writes the state once
                from arena.kernels.ssd.recurrent import fused_recurrent_ssd_decode_step as step
            o, ssm = step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], h0)
            o = o[:, None]  # [B, 1, H, P]
        elif self.cfg.impl == "naive":
            o, ssm = naive_recurrent_ssd(q, k, v, g, initial_state=h0, output_final_state=True)
        elif self._triton_ssd(x):
            # the kernel takes one dtype for q, k, v: the linear layers' (bf16 under autocast), gates in fp32
            lt = z.dtype
            o, ssm = chunk_ssd(q.to(lt), k.to(lt), v.to(lt), g, initial_state=h0, output_final_state=True,
                               backend="triton")
            o = o.to(ct)
        else:
            o, ssm = chunk_ssd(q, k, v, g, initial_state=h0, output_final_state=True, chunk_size=self.cfg.chunk_size)

        y = (o + self.D.to(ct)[:, None] * xs).flatten(-2)  # [B, T, d_inner]
        if fused:  # one pass, per group; its output goes to out_proj in the linear layers' dtype (z's)
            from arena.kernels.fused.gated_norm import gated_rmsnorm

            y = gated_rmsnorm(y.unflatten(-1, (G, -1)), z.unflatten(-1, (G, -1)), self.norm_weight.view(G, -1),
                              eps=self.cfg.norm_eps, activation="swish", norm_before_gate=False,
                              out_dtype=z.dtype).flatten(-2)
        else:
            y = self._gated_norm(y, z.to(ct))
        return y, conv_cache, ssm

    def _triton_ssd(self, x: torch.Tensor) -> bool:
        """impl triton: wherever Triton runs (the CPU interpreter included); auto: on CUDA only; never for fp64.
        The same rule as the fused ops' `fused=on|auto` (use_fused)."""
        return self.cfg.impl != "torch" and use_fused("on" if self.cfg.impl == "triton" else "auto", x)

    def _triton_decode(self, x: torch.Tensor) -> bool:
        """The fused recurrent decode kernel (inference only, no backward) where the Triton SSD runs, else the torch
        step `ssd_decode_step`, its fp32 twin."""
        return not torch.is_grad_enabled() and self._triton_ssd(x)

    def state_size(self, seq_len: int) -> int:
        """SSM state [H, N, P] plus the conv cache [d_conv - 1, conv_dim]; constant in seq_len."""
        return self.nheads * self.cfg.d_state * self.cfg.headdim + self.conv.cache_size()

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token of the SSD that runs, 2 per multiply-add, summed over heads, plus the conv.

        Chunked (impl auto / torch / triton), at the chunk length of the backend that runs for these parameters
        (Triton SSD: 64, torch: chunk_size), C = min(that, seq_len), per head: the diagonal block's scores q k^T and
        weighted sum (2 C N + 2 C P), the chunk state k v^T (2 N P) and the read of the entering state q S (2 N P).
        impl naive, the token loop, per head: decay (N P) + outer product and add (2 N P) + readout (2 N P).
        Element-wise work and the passing of states between chunks are left out.
        """
        N, P = self.cfg.d_state, self.cfg.headdim
        if self.cfg.impl == "naive":
            per_head = 5 * N * P
        else:
            p = self.out_proj.weight
            C = min(TRITON_CHUNK_SIZE if self._triton_ssd(p) else self.cfg.chunk_size, seq_len)
            per_head = 2 * C * (N + P) + 4 * N * P
        return float(self.nheads * per_head) + self.conv.flops_per_token()
