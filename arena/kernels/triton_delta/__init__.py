"""Triton kernels for the delta rules (KDA and Gated DeltaNet): chunkwise forward and backward, recurrent decode.

Use them through the public ops, which pick this path for CUDA tensors:
    from arena.kernels.kda import chunk_kda
    o, S = chunk_kda(q, k, v, g, beta, backend="triton")      # or backend=None: triton on CUDA, torch on CPU

`triton_status()` says whether the path can run here and why not. Nothing in this package touches CUDA at import
time, and a missing Triton is not an import error: the ops fall back to torch with one warning.
On CPU the kernels run under the Triton interpreter (TRITON_INTERPRET=1), which the tests use, in fp32 and fp16
(the interpreter's bf16 `tl.dot` is wrong).
"""

from __future__ import annotations

import functools
import importlib.util
import os


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _triton_importable() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "the triton package is not installed"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # a broken install must not break `import arena`
        return False, f"importing triton failed ({type(exc).__name__}: {exc})"
    return True, "ok"


def triton_status(device=None) -> tuple[bool, str]:
    """(ok, reason): whether the Triton kernels can run on `device` (default: the current CUDA device, if any)."""
    ok, reason = _triton_importable()
    if not ok:
        return ok, reason
    if interpreting():
        return True, "Triton interpreter (TRITON_INTERPRET=1)"
    import torch

    if device is not None and torch.device(device).type != "cuda":
        where = torch.device(device).type
        return False, f"tensors are on {where}, and Triton kernels need CUDA (or TRITON_INTERPRET=1)"
    if not torch.cuda.is_available():
        return False, "no CUDA device is available"
    return True, "ok"


def poison_outputs() -> bool:
    """ARENA_TRITON_POISON=1 fills every kernel output with NaN before launch, so an unwritten element shows up."""
    return os.environ.get("ARENA_TRITON_POISON", "0") not in ("", "0")


def output_buffer(shape, dtype, device):
    """A kernel output: torch.empty, or NaN-filled under ARENA_TRITON_POISON=1 so an unwritten element fails."""
    import torch

    if poison_outputs():
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)
