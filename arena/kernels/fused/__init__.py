"""Fused Triton ops for the work around the sequence kernels: each op has a plain fp32 PyTorch twin.

The mixer layers spend most of their time outside the chunked sequence kernels, in element-wise passes over
[B, T, H*K] tensors (short convolutions, activations, L2 norms, decay gates, gated RMSNorms). Each op here does
one such group in one pass forward and one backward, reading and writing the kernels' layout directly.

Modules (each documents its op, its twin and its launch):
    short_conv.py    causal depthwise conv1d + bias + SiLU (+ per-head L2 norm), forward and backward
    gated_norm.py    gated RMSNorm (norm before or after the gate), decay gates
Like arena.kernels.triton_delta, nothing here touches CUDA at import time; on CPU the kernels run under the
Triton interpreter (TRITON_INTERPRET=1, tests/conftest.py), in fp32 and fp16.
"""

from __future__ import annotations

FUSED_MODES = ("auto", "on", "off")


def check_fused(mixer: str, mode: str) -> None:
    """One-line ConfigError unless `mode` is one of FUSED_MODES (a mixer's `fused` setting)."""
    from arena.errors import choice_error

    if mode not in FUSED_MODES:
        raise choice_error(f"mixer {mixer}: fused", mode, FUSED_MODES)


def use_fused(mode: str, x) -> bool:
    """Whether a mixer with `fused=mode` takes the fused ops for input `x`.

    auto: on CUDA when Triton can run there (the plain PyTorch layer everywhere else, e.g. the CPU default job);
    on: wherever Triton can run, the CPU interpreter (TRITON_INTERPRET=1) included, which the tests use;
    off: never (the plain layer, the ops' twins in effect).
    fp64 inputs (the tests' exactness checks) always take the plain layer: the Triton ops compute in fp32.
    """
    import torch

    from arena.kernels.triton_delta import interpreting, triton_status

    if mode == "off" or x.dtype == torch.float64:
        return False
    if mode == "auto" and x.device.type != "cuda":
        return False
    if x.device.type != "cuda" and not interpreting():
        return False
    return triton_status(x.device)[0]
