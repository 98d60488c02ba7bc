"""The sequence-kernel calls of a mixer's forward, for `python -m arena.bench train`'s "kernels fwd+bwd" column.

    specs = kernel_specs(mixer, B, T, amp=torch.bfloat16)     # what mixer.forward passes its kernel, at [B, T]
    inputs = make_kernel_inputs(specs[0], device)             # random leaves of those shapes and dtypes
    o = specs[0].call(inputs)                                 # the kernel alone, as the mixer would call it

Shapes come from each mixer's head layout (`kernel_recipe`); dtypes and the other arguments are read off one real
forward (they differ between versions of the code). Like arena/bench/train.py, this file must also run inside a
checkout of an older arena (the benchmark's "before" table), so it imports only names both versions have, and
torch lazily. Tests: tests/bench/test_bench_train.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class KernelSpec:
    """One sequence-kernel call of a mixer's forward: the tensors it passes and its other arguments."""
    op: str  # the kernel's name
    tensors: dict[str, tuple[tuple[int, ...], Any]]  # name -> (shape, torch dtype), the positional tensors in order
    args: tuple  # positional arguments after the tensors (MLA's scale)
    kwargs: dict[str, Any]
    where: Any  # the dict or module the mixer looks its kernel up in, and the key / attribute name there:
    key: str  # looked up at each call, so the bench runs whatever the mixer would run

    def kernel(self):
        return self.where[self.key] if isinstance(self.where, dict) else getattr(self.where, self.key)

    def call(self, inputs: dict):
        out = self.kernel()(*(inputs[name] for name in self.tensors), *self.args, **self.kwargs)
        return out[0] if isinstance(out, tuple) else out  # (o, final state) -> o


def kernel_recipe(mixer, B: int, T: int) -> list[KernelSpec]:
    """The kernel calls of `mixer.forward` on [B, T, D] with no state, shapes from the mixer's head layout:
    KDA q, k, g [B, T, H, K], v [B, T, H, V], beta [B, T, H]; GDN the same with g [B, T, H]; Mamba2 q = C, k = B
    [B, T, H, N], v [B, T, H, P], g [B, T, H]; MLA q, k [B, T, H, Kn + Kr], v [B, T, H, V]. Dtypes and the other
    arguments are placeholders here: `kernel_specs` reads them off a real forward."""
    import torch

    from arena.mixers.gdn import GatedDeltaNet
    from arena.mixers.kda import KDA
    from arena.mixers.mamba2 import Mamba2
    from arena.mixers.mla import MLA

    f32 = torch.float32
    if isinstance(mixer, (KDA, GatedDeltaNet)):
        H, K, V = mixer.H, mixer.K, mixer.V
        kda = isinstance(mixer, KDA)
        shapes = {"q": (B, T, H, K), "k": (B, T, H, K), "v": (B, T, H, V), "g": (B, T, H, K) if kda else (B, T, H),
                  "beta": (B, T, H)}
        op = "chunk_kda" if kda else "chunk_gated_delta_rule"
        op = op if mixer.cfg.impl != "naive" else f"naive({op})"
        where, key = type(mixer).KERNELS, mixer.cfg.impl
    elif isinstance(mixer, Mamba2):
        import arena.mixers.mamba2 as where

        H, P, N = mixer.nheads, mixer.cfg.headdim, mixer.cfg.d_state
        shapes = {"q": (B, T, H, N), "k": (B, T, H, N), "v": (B, T, H, P), "g": (B, T, H)}
        op = key = "naive_recurrent_ssd" if mixer.cfg.impl == "naive" else "chunk_ssd"
    elif isinstance(mixer, MLA):
        import arena.mixers.mla as module

        Kq = mixer.Kn + mixer.Kr
        shapes = {"q": (B, T, mixer.H, Kq), "k": (B, T, mixer.H, Kq), "v": (B, T, mixer.H, mixer.V)}
        where, key = module.ATTENTION, mixer.cfg.impl
        op = "sdpa_attention" if key == "torch" else f"{key}_attention"
    else:
        raise ValueError(f"no kernel recipe for mixer {type(mixer).__name__}; known: KDA, GatedDeltaNet, Mamba2, MLA")
    return [KernelSpec(op, {name: (shape, f32) for name, shape in shapes.items()}, (), {}, where, key)]


class _Probed(Exception):
    """Raised by the recorder in place of the kernel: the rest of the forward is not needed."""


def kernel_specs(mixer, B: int, T: int, amp=None, x_dtype=None) -> list[KernelSpec]:
    """What `mixer.forward` on an x of [B, T, D] (dtype `x_dtype`, default the parameters') passes its sequence
    kernel under autocast `amp` (None = off), with no state.

    Shapes come from `kernel_recipe` (the mixer's H, K, V). Dtypes and non-tensor arguments follow the code that
    is checked out, which differs between versions (fused glue, bf16 attention under autocast, a Triton SSD
    that takes bf16 q/k/v): they are read off one forward at B = 1 whose kernel call is intercepted and cut
    short, and its shapes must match the recipe at B = 1 (else a one-line ValueError: the recipe is stale)."""
    import torch

    specs = kernel_recipe(mixer, B, T)
    params = next(mixer.parameters())
    device, x_dtype = params.device, x_dtype or params.dtype
    for spec, probe in zip(specs, kernel_recipe(mixer, 1, T)):
        seen = []

        def recorder(*args, seen=seen, **kwargs):
            seen.append((args, kwargs))
            raise _Probed

        real = spec.kernel()
        _put(spec, recorder)
        try:
            x = torch.randn(1, T, mixer.d_model, device=device, dtype=x_dtype, requires_grad=True)
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                mixer(x)
        except _Probed:
            pass
        finally:
            _put(spec, real)
        if not seen:
            raise ValueError(f"{type(mixer).__name__}.forward did not call {spec.op} ({spec.key}); the recipe is stale")
        args, kwargs = seen[0]
        tensors = [a for a in args if torch.is_tensor(a)]
        got = [tuple(t.shape) for t in tensors]
        want = [shape for shape, _ in probe.tensors.values()]
        if got != want or any(torch.is_tensor(v) for v in kwargs.values()):
            raise ValueError(f"{type(mixer).__name__}.forward passes {spec.op} tensors of shapes {got} at B=1, "
                             f"T={T}; the recipe says {want}")
        spec.tensors = {name: (shape, t.dtype) for (name, (shape, _)), t in zip(spec.tensors.items(), tensors)}
        spec.args = tuple(a for a in args[len(tensors):])
        spec.kwargs = dict(kwargs)
    return specs


def _put(spec: KernelSpec, fn) -> None:
    if isinstance(spec.where, dict):
        spec.where[spec.key] = fn
    else:
        setattr(spec.where, spec.key, fn)


def make_kernel_inputs(spec: KernelSpec, device, seed: int = 0) -> dict:
    """Leaf tensors that require grad: q, k L2-normalized per head, v ~ N(0, 1), g = logsigmoid(N(0, 1)) <= 0,
    beta = sigmoid(N(0, 1)) in (0, 1); each in the spec's shape and dtype."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for name, (shape, dtype) in spec.tensors.items():
        x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        x = {"q": F.normalize(x, dim=-1), "k": F.normalize(x, dim=-1), "g": F.logsigmoid(x),
             "beta": torch.sigmoid(x)}.get(name, x)
        out[name] = x.to(dtype).requires_grad_(True)
    return out
