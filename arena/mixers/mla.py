"""Multi-head Latent Attention (DeepSeek-V2), in Kimi Linear's layout, with decoupled RoPE on or off.

    mixer = build_mixer("mla", d_model=64)                 # rope=True: DeepSeek-style decoupled RoPE
    mixer = build_mixer("mla", d_model=64, rope=False)     # Kimi Linear's NoPE MLA (conf/mixer/mla_nope.yaml)
    y, state = mixer(x)                                    # x: [B, T, D]; state = the latent KV cache

Per token, with H heads, Kn = qk_nope_head_dim, Kr = qk_rope_head_dim, V = v_head_dim, R = kv_lora_rank:
    q       = q_proj(x)  or  q_b_proj(RMSNorm(q_a_proj(x)))                    [H, Kn + Kr]
    c, kr   = kv_a_proj(x);  c_kv = RMSNorm(c)                                  [R], [Kr] (ONE key head)
    k_nope, v = kv_b_proj(c_kv)                                                 [H, Kn], [H, V]
    k_i     = [k_nope_i ; rope(kr)],   q_i = [q_nope_i ; rope(q_rot_i)],   scale = (Kn + Kr) ** -0.5
    y       = o_proj(softmax(q_i k_i^T * scale, causal) v_i)
With rope=False (NoPE, as Kimi Linear ships) the Kr dims stay and are used raw: an extra shared-key subspace,
and attention is position-free. With conv_size > 0 (not MLA: a reference), a depthwise causal convolution of the
layer input x [B, T, D] feeds every projection, and the state also carries its last conv_size - 1 inputs ("conv").
The cache is the latent, as MLA intends: {"c_kv": [B, T, R] after the norm,
"k_rope": [B, T, Kr] after rotation}. A multi-token continuation recomputes k_nope and v from c_kv with kv_b_proj.

Decoding (arena.model.LanguageModel.generate):
    state = mixer.empty_state(B, capacity=T0 + new, device=x.device)   # preallocated latent cache, length 0
    y, state = mixer(prompt, state)                                     # prefill writes slots 0 .. T0-1 in place
    y1, state = mixer(x_next, state)                                    # T = 1: absorbed step, slot written in place
With an `empty_state`, the state also carries "c_kv_buffer" [B, capacity, R] and "k_rope_buffer" [B, capacity, Kr]
(fp32) and "c_kv"/"k_rope" are views of their first S slots; each call writes its tokens in place (the buffer grows
geometrically, by doubling, past the capacity), so a token costs no copy of the cache. Such a state is consumed by
continuing from it: clone it to branch. Without buffers (state None at the first call) continuing concatenates, as
before. A T = 1 step with a state takes the absorbed path of DeepSeek-V2 §2.1 (scores against c_kv through
q_nope W_UK, output (attn c_kv) W_UV), never up-projecting the cache; `absorb_decode = False` takes the plain path.
See docs/mixers.md §3; tests in tests/mixers/test_mla.py and tests/test_generate.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from arena.errors import ConfigError
from arena.kernels.attention import naive_attention, rotary, sdpa_attention
from arena.kernels.norm import rms_norm
from arena.mixers import register_mixer
from arena.mixers.base import Mixer, State
from arena.mixers.common import ShortConv

ATTENTION = {"torch": sdpa_attention, "naive": naive_attention}


@register_mixer("mla")
class MLA(Mixer):
    # T = 1 steps with a state take the absorbed path; False: up-project the cache as a prefill does (for tests)
    absorb_decode: bool = True

    @dataclass
    class Config(Mixer.Config):
        num_heads: int = 2
        qk_nope_head_dim: int | None = None  # the head dim; None: d_model // num_heads (DeepSeek: 128)
        qk_rope_head_dim: int | None = None  # None: half the head dim (DeepSeek: 64)
        v_head_dim: int | None = None  # None: the head dim (DeepSeek: 128)
        kv_lora_rank: int | None = None  # latent width; None: 4 x the head dim (DeepSeek: 512 = 4 * 128)
        q_lora_rank: int | None = None  # None: q_proj straight from x (Kimi Linear); DeepSeek-V2 uses 1536
        rope: bool = True  # False: Kimi Linear's NoPE, rope dims kept but never rotated
        rope_theta: float = 10000.0  # RoPE base; unused when rope=False
        norm_eps: float = 1e-5  # eps of the RMSNorms on the latents
        # a depthwise causal convolution of this many taps on the layer's input, before every projection (no
        # activation); 0 = none, as MLA and Kimi Linear have it. Not part of MLA: a reference that gives attention
        # the previous-token shift the delta-rule layers get from their short convs (MQAR needs it; issue 14)
        conv_size: int = 0
        # impl: "torch" (SDPA) or "naive" (explicit fp32 softmax, the oracle)

    def __init__(self, d_model: int, cfg: Config):
        super().__init__(d_model, cfg)
        H, Kn = self.heads_and_dim(cfg.num_heads, cfg.qk_nope_head_dim)
        Kr = Kn // 2 if cfg.qk_rope_head_dim is None else cfg.qk_rope_head_dim
        V = Kn if cfg.v_head_dim is None else cfg.v_head_dim
        R = 4 * Kn if cfg.kv_lora_rank is None else cfg.kv_lora_rank
        for key, value in [("qk_nope_head_dim", Kn), ("qk_rope_head_dim", Kr), ("v_head_dim", V),
                           ("kv_lora_rank", R), ("q_lora_rank", 1 if cfg.q_lora_rank is None else cfg.q_lora_rank)]:
            if value < 1:
                raise ConfigError(f"mixer mla: {key}={value} must be >= 1 (d_model={d_model}, num_heads={H})")
        if cfg.conv_size < 0:
            raise ConfigError(f"mixer mla: conv_size={cfg.conv_size} must be >= 0 (0 = no input convolution)")
        if cfg.rope and Kr % 2:
            raise ConfigError(f"mixer mla: qk_rope_head_dim={Kr} must be even when rope=true (RoPE rotates pairs)")
        self.H, self.Kn, self.Kr, self.V, self.R = H, Kn, Kr, V, R
        self.scale = (Kn + Kr) ** -0.5
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(d_model, H * (Kn + Kr), bias=False)
        else:
            self.q_a_proj = nn.Linear(d_model, cfg.q_lora_rank, bias=False)
            self.q_norm = nn.RMSNorm(cfg.q_lora_rank, eps=cfg.norm_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, H * (Kn + Kr), bias=False)
        self.kv_a_proj = nn.Linear(d_model, R + Kr, bias=False)  # DeepSeek's kv_a_proj_with_mqa
        self.kv_norm = nn.RMSNorm(R, eps=cfg.norm_eps)
        self.kv_b_proj = nn.Linear(R, H * (Kn + V), bias=False)
        self.o_proj = nn.Linear(H * V, d_model, bias=False)
        self.conv = ShortConv(d_model, cfg.conv_size, activation=False) if cfg.conv_size else None

    def _norm(self, x: torch.Tensor, norm: nn.RMSNorm, dtype: torch.dtype) -> torch.Tensor:
        # in the compute dtype: a bf16 RMSNorm loses the latent's small entries
        return rms_norm(x, norm.weight, norm.eps, dtype=dtype)

    def _cache_length(self, x: torch.Tensor, state: State | None) -> int:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"mla: expected x of shape [B, T, {self.d_model}], got {tuple(x.shape)}")
        if state is None:
            return 0
        B, P = x.shape[0], state["c_kv"].shape[1]
        if state["c_kv"].shape != (B, P, self.R) or state["k_rope"].shape != (B, P, self.Kr):
            raise ValueError(f"mla: state must hold c_kv [{B}, P, {self.R}] and k_rope [{B}, P, {self.Kr}], got "
                             f"{tuple(state['c_kv'].shape)} and {tuple(state['k_rope'].shape)}")
        if "c_kv_buffer" in state:
            cb, kb = state["c_kv_buffer"], state["k_rope_buffer"]
            if cb.shape[::2] != (B, self.R) or kb.shape != (B, cb.shape[1], self.Kr) or cb.shape[1] < P:
                raise ValueError(f"mla: state buffers must be c_kv_buffer [{B}, N, {self.R}] and k_rope_buffer "
                                 f"[{B}, N, {self.Kr}] with N >= {P}, got {tuple(cb.shape)} and {tuple(kb.shape)}")
        return P

    def empty_state(self, batch_size: int, capacity: int, device=None) -> State:
        """A length-0 latent cache with room for `capacity` tokens, for decoding: calls write into it in place."""
        dtype = torch.promote_types(self.kv_a_proj.weight.dtype, torch.float32)
        c_buf = torch.zeros(batch_size, max(capacity, 1), self.R, dtype=dtype, device=device)
        k_buf = torch.zeros(batch_size, max(capacity, 1), self.Kr, dtype=dtype, device=device)
        state = {"c_kv": c_buf[:, :0], "k_rope": k_buf[:, :0], "c_kv_buffer": c_buf, "k_rope_buffer": k_buf}
        if self.conv is not None:
            state["conv"] = torch.zeros(batch_size, self.cfg.conv_size - 1, self.d_model, dtype=dtype, device=device)
        return state

    def _extend_cache(self, state: State | None, c_kv: torch.Tensor, k_rope: torch.Tensor, P: int):
        """(c_kv [B, S, R], k_rope [B, S, Kr], new state): the cache with this call's T tokens appended."""
        if state is None:
            return c_kv, k_rope, {"c_kv": c_kv, "k_rope": k_rope}
        if "c_kv_buffer" not in state:  # a plain cache (a state from a stateless prefill): concatenate
            c_kv = torch.cat([state["c_kv"].to(c_kv.dtype), c_kv], dim=1)  # [B, S, R], S = P + T
            k_rope = torch.cat([state["k_rope"].to(k_rope.dtype), k_rope], dim=1)  # [B, S, Kr]
            return c_kv, k_rope, {"c_kv": c_kv, "k_rope": k_rope}
        c_buf, k_buf = state["c_kv_buffer"], state["k_rope_buffer"]
        S = P + c_kv.shape[1]
        if S > c_buf.shape[1]:
            # past the capacity: double (at least), so the copies stay O(1) amortised per token
            grown = max(2 * c_buf.shape[1], S)
            B = c_buf.shape[0]
            c_new, k_new = c_buf.new_zeros(B, grown, self.R), k_buf.new_zeros(B, grown, self.Kr)
            c_new[:, :P], k_new[:, :P] = c_buf[:, :P], k_buf[:, :P]
            c_buf, k_buf = c_new, k_new
        c_buf[:, P:S] = c_kv  # in place: slots P .. S-1 are this call's tokens
        k_buf[:, P:S] = k_rope
        new_state = {"c_kv": c_buf[:, :S], "k_rope": k_buf[:, :S], "c_kv_buffer": c_buf, "k_rope_buffer": k_buf}
        return c_buf[:, :S].to(c_kv.dtype), k_buf[:, :S].to(k_rope.dtype), new_state

    def _absorbed_step(self, q_nope: torch.Tensor, q_rot: torch.Tensor, c_kv: torch.Tensor,
                       k_rope: torch.Tensor) -> torch.Tensor:
        """One query per sequence (T = 1) over the whole latent cache, without up-projecting it (DeepSeek-V2 §2.1).

        q_nope [B, 1, H, Kn], q_rot [B, 1, H, Kr], c_kv [B, S, R], k_rope [B, S, Kr] -> o [B, 1, H*V], in >= fp32.
        q_nope . (W_UK c) = (W_UK^T q_nope) . c, and sum_s p_s (W_UV c_s) = W_UV (sum_s p_s c_s): the per-head
        up-projections move onto the query and the output, so a step costs O(S * R) per head, not O(S * R * (Kn+V)).
        """
        ct = torch.promote_types(c_kv.dtype, torch.float32)
        w = self.kv_b_proj.weight.to(ct).view(self.H, self.Kn + self.V, self.R)
        w_uk, w_uv = w.split([self.Kn, self.V], dim=1)  # [H, Kn, R], [H, V, R]
        q_lat = torch.einsum("bhk,hkr->bhr", q_nope[:, 0].to(ct), w_uk)  # [B, H, R]
        scores = (torch.einsum("bhr,bsr->bhs", q_lat, c_kv.to(ct))
                  + torch.einsum("bhk,bsk->bhs", q_rot[:, 0].to(ct), k_rope.to(ct))) * self.scale  # [B, H, S]
        o_lat = torch.einsum("bhs,bsr->bhr", scores.softmax(dim=-1), c_kv.to(ct))  # [B, H, R]
        o = torch.einsum("bhr,hvr->bhv", o_lat, w_uv)  # [B, H, V]
        return o.reshape(o.shape[0], 1, self.H * self.V)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        P = self._cache_length(x, state)
        conv_cache = None
        if self.conv is not None:  # the state's "conv" holds the last conv_size - 1 inputs (zeros before the start)
            x, conv_cache = self.conv(x, None if state is None else state["conv"].to(x.dtype))
        (B, T, _), H, Kn, Kr = x.shape, self.H, self.Kn, self.Kr
        ct = torch.promote_types(x.dtype, torch.float32)  # the norms and RoPE compute in this
        # Under autocast the projections return the autocast dtype and SDPA runs in it (it is on autocast's
        # lower-precision list), so the [B, T, H, *] glue stays in that dtype instead of a round trip through
        # fp32 for every tensor; without autocast it is `ct`, as the reference wants.
        autocast = torch.is_autocast_enabled(x.device.type)
        wt = torch.get_autocast_dtype(x.device.type) if autocast else ct
        if self.cfg.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self._norm(self.q_a_proj(x), self.q_norm, ct).to(self.q_b_proj.weight.dtype))
        q_nope, q_rot = q.view(B, T, H, Kn + Kr).to(wt).split([Kn, Kr], dim=-1)
        c_kv, k_rope = self.kv_a_proj(x).split([self.R, Kr], dim=-1)  # [B, T, R], [B, T, Kr]
        c_kv = self._norm(c_kv, self.kv_norm, ct).to(wt)
        k_rope = k_rope.to(wt)
        if self.cfg.rope:
            # absolute positions, so keys cached at earlier calls keep their rotation
            pos = torch.arange(P, P + T, device=x.device)
            q_rot = rotary(q_rot.to(ct), pos, self.cfg.rope_theta).to(wt)
            k_rope = rotary(k_rope[:, :, None].to(ct), pos, self.cfg.rope_theta)[:, :, 0].to(wt)
        c_kv, k_rope, new_state = self._extend_cache(state, c_kv, k_rope, P)  # [B, S, R], [B, S, Kr]
        S = P + T
        if T == 1 and state is not None and self.absorb_decode:
            o = self._absorbed_step(q_nope, q_rot, c_kv, k_rope).to(wt)  # [B, 1, H*V]
        else:
            kv = self.kv_b_proj(c_kv if autocast else c_kv.to(self.kv_b_proj.weight.dtype))
            k_nope, v = kv.view(B, S, H, Kn + self.V).to(wt).split([Kn, self.V], dim=-1)
            q = torch.cat([q_nope, q_rot], dim=-1)  # [B, T, H, Kn + Kr]
            k = torch.cat([k_nope, k_rope[:, :, None].expand(B, S, H, Kr)], dim=-1)  # one rope key, shared by all heads
            o = ATTENTION[self.cfg.impl](q, k, v, self.scale).reshape(B, T, H * self.V)  # [B, T, H*V]
        y = self.o_proj(o if autocast else o.to(self.o_proj.weight.dtype))
        if conv_cache is not None:
            new_state["conv"] = conv_cache
        return y.to(x.dtype), new_state

    def state_size(self, seq_len: int) -> int:
        """Latent cache elements per sequence: seq_len * (kv_lora_rank + qk_rope_head_dim) (+ the conv's inputs)."""
        return seq_len * (self.R + self.Kr) + (0 if self.conv is None else self.conv.cache_size())

    def mixing_flops_per_token(self, seq_len: int) -> float:
        """Scores plus weighted sum for a query that sees `seq_len` keys: 2 * H * seq_len * (Kn + Kr + V).

        No causal halving: this is the cost of the token at position seq_len (the decode cost), an upper
        bound on the average over a causal prefill, which is about half. A T = 1 step takes the absorbed path,
        whose cost per key is 2 * H * (2R + Kr) instead; this count does not switch to it.
        """
        conv = 0.0 if self.conv is None else self.conv.flops_per_token()
        return 2.0 * self.H * seq_len * (self.Kn + self.Kr + self.V) + conv
