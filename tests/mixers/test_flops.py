"""FLOP counts of the recurrent mixers: hand-computed totals, and the chunk length counted is the one that runs.

    python -m pytest -q tests/mixers/test_flops.py

`flops_per_token` = 2 per weight of every nn.Linear + `mixing_flops_per_token`: the state work at the chunk length
of the kernel the forward actually takes (torch 16 for the delta rule / Mamba2's chunk_size, Triton 64, the token
loop for impl=naive) plus 2 * conv_size * channels for each short convolution.
"""

from __future__ import annotations

import pytest
import torch

import arena.kernels._dispatch as dispatch
import arena.mixers.mamba2 as mamba2_module
from arena.kernels.triton_delta import interpreting
from arena.mixers import build_mixer

# KDA: d_model 8, H 2, K 4, V 4, conv 3, gate_rank 2. Linear weights: q, k, v 3 * 64, f_a, f_b, b_proj, g_a 16 each,
# g_b 16, o_proj 64 = 336 -> 672 FLOPs. Convs: 2 * 3 * (8 + 8 + 8) = 144.
KDA = dict(num_heads=2, conv_size=3, gate_rank=2)
# GDN: d_model 8, H 2, K 4, V 8, conv 3. Linear: q, k 64 each, v 128, a_proj 16, b_proj 16, g_proj 128, o_proj 128
# = 544 -> 1088. Convs: 2 * 3 * (8 + 8 + 16) = 192.
GDN = dict(num_heads=2, conv_size=3)
# Mamba2: d_model 8, d_inner 16, headdim 8 -> H 2, N 4, d_conv 3, conv_dim 16 + 2 * 4 = 24. Linear: in_proj
# 8 * (16 + 24 + 2) = 336, out_proj 128 = 464 -> 928. Conv: 2 * 3 * 24 = 144.
MAMBA2 = dict(headdim=8, d_state=4, d_conv=3, chunk_size=8)

# per head and token, chunk C: 6 K V + 6 C K + 4 C V + 2 C^2 / 3 (delta rule), 2 C (N + P) + 4 N P (SSD)
HAND = [
    # KDA at T = 10 (C = 10): 2 * (96 + 240 + 160 + 200 / 3) = 1125.33
    ("kda", KDA, "torch", 10, 672 + 144 + 2 * (96 + 240 + 160 + 200 / 3)),
    # T = 100, torch chunk 16: 2 * (96 + 384 + 256 + 512 / 3)
    ("kda", KDA, "auto", 100, 672 + 144 + 2 * (96 + 384 + 256 + 512 / 3)),
    # the token loop: 7 K V per head
    ("kda", KDA, "naive", 100, 672 + 144 + 2 * 7 * 16),
    # GDN at T = 10: 2 * (192 + 240 + 320 + 200 / 3)
    ("gdn", GDN, "torch", 10, 1088 + 192 + 2 * (192 + 240 + 320 + 200 / 3)),
    # Mamba2 at T = 20, chunk 8: 2 * (2 * 8 * 12 + 4 * 32); the token loop 2 * 5 * 32
    ("mamba2", MAMBA2, "torch", 20, 928 + 144 + 2 * (192 + 128)),
    ("mamba2", MAMBA2, "naive", 20, 928 + 144 + 2 * 160),
]
if interpreting():  # impl=triton runs the Triton kernels on CPU only under the interpreter: chunk 64
    HAND += [("kda", KDA, "triton", 100, 672 + 144 + 2 * (96 + 1536 + 1024 + 8192 / 3)),
             ("mamba2", MAMBA2, "triton", 20, 928 + 144 + 2 * (2 * 20 * 12 + 128))]


@pytest.mark.parametrize("name,cfg,impl,T,want", HAND, ids=[f"{n}-{i}-T{T}" for n, _, i, T, _ in HAND])
def test_flops_per_token_by_hand(name, cfg, impl, T, want):
    mixer = build_mixer(name, 8, impl=impl, **cfg)
    assert mixer.flops_per_token(T) == pytest.approx(want, rel=1e-12)


def _delta_rule_state_flops(H, K, V, C):
    return H * (6 * K * V + 6 * C * K + 4 * C * V + 2 * C * C / 3)


def _ssd_state_flops(H, N, P, C):
    return H * (2 * C * (N + P) + 4 * N * P)


CASES = [("kda", "auto", torch.float32), ("gdn", "torch", torch.float64), ("kda", "triton", torch.float64)]
if interpreting():
    CASES += [("gdn", "triton", torch.float32), ("mamba2", "triton", torch.float32)]
CASES += [("mamba2", "auto", torch.float32), ("mamba2", "torch", torch.float64)]


@pytest.mark.filterwarnings("ignore:.*falling back to the torch path:RuntimeWarning")
@pytest.mark.parametrize("name,impl,dtype", CASES, ids=[f"{n}-{i}-{str(d)[6:]}" for n, i, d in CASES])
def test_the_counted_chunk_is_the_one_the_forward_runs(name, impl, dtype, monkeypatch):
    """Spy on the chunked kernels a forward reaches (the torch chunked form's chunk_size, or the Triton kernels and
    their chunk constant) and check the count uses that chunk; fp64 with impl=triton falls back to torch (16)."""
    ran = []
    if name == "mamba2":
        from arena.kernels.ssd.triton_ssd import CHUNK as SSD_TRITON_CHUNK

        real = mamba2_module.chunk_ssd

        def spy(*args, **kwargs):
            ran.append(SSD_TRITON_CHUNK if kwargs.get("backend") == "triton" else kwargs["chunk_size"])
            return real(*args, **kwargs)

        monkeypatch.setattr(mamba2_module, "chunk_ssd", spy)
        mixer = build_mixer(name, 8, impl=impl, **MAMBA2, fused="off").to(dtype)
    else:
        real_torch = dispatch.chunk_delta_rule

        def spy_torch(*args, **kwargs):
            ran.append(kwargs["chunk_size"])
            return real_torch(*args, **kwargs)

        monkeypatch.setattr(dispatch, "chunk_delta_rule", spy_torch)
        if interpreting():
            import arena.kernels.triton_delta.chunk as triton_chunk
            from arena.kernels.triton_delta.chunk_fwd import CHUNK

            real_triton = triton_chunk.chunk_delta_rule_triton

            def spy_triton(*args, **kwargs):
                ran.append(CHUNK)  # the constant the Triton kernels are compiled with
                return real_triton(*args, **kwargs)

            monkeypatch.setattr(triton_chunk, "chunk_delta_rule_triton", spy_triton)
        mixer = build_mixer(name, 8, impl=impl, **(KDA if name == "kda" else GDN), fused="off").to(dtype)
    T = 100
    with torch.no_grad():
        mixer(torch.randn(1, T, 8, dtype=dtype))
    assert len(ran) == 1, ran
    C = min(ran[0], T)
    if name == "mamba2":
        state = _ssd_state_flops(mixer.nheads, mixer.cfg.d_state, mixer.cfg.headdim, C)
        conv = 2 * mixer.cfg.d_conv * mixer.conv_dim
    else:
        state = _delta_rule_state_flops(mixer.H, mixer.K, mixer.V, C)
        conv = 2 * mixer.cfg.conv_size * mixer.H * (2 * mixer.K + mixer.V)
    assert mixer.mixing_flops_per_token(T) == pytest.approx(state + conv, rel=1e-12)
