"""RMSNorm in plain PyTorch: the one torch path every RMSNorm in arena takes.

    from arena.kernels.norm import rms_norm
    y = rms_norm(x, weight, eps=1e-5)                  # x: [..., D], weight: [D] (or None) -> y: [..., D]
    y = rms_norm(x, weight, eps=1e-5, dtype=ct)        # cast x and weight to ct first (a layer's compute dtype)

    y = x / sqrt(mean(x^2 over the last dim) + eps) * weight          eps inside the square root

It is `torch.nn.functional.rms_norm`, the op behind `nn.RMSNorm` (the model's pre-norms and final norm), so those
modules and the layers calling this function (KDA's and GDN's gated output norm, Mamba2's grouped gated norm, MLA's
latent norms, the fp32 twin of the fused gated_rmsnorm) compute alike: fp16 / bf16 inputs are normalised in fp32,
multiplied by the weight in fp32 and returned in the input dtype; fp32 and fp64 stay in their own dtype. On CUDA
the fused Triton op (arena.kernels.fused.gated_norm) is the gated layers' fast path; this is its CPU path and twin.
Tests: tests/mixers/test_norms.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-5,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """RMSNorm of x over its last dim, times `weight` ([D], or None for none); see the module docstring.

    dtype: cast x and weight to it first (and return it), as layers that normalise in their compute dtype do.
    """
    if dtype is not None:
        x = x.to(dtype)
        weight = None if weight is None else weight.to(dtype)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)
