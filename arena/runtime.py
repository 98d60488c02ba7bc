"""The process and device side of a training run (arena/train.py): the device and autocast dtype that
train.device and train.precision name, the host-device sync, the peak memory summary.json reports, and the
SIGTERM handler that stops the step loop at a step boundary with a checkpoint.

Used by arena/train.py, which re-exports resolve_device and autocast_dtype (arena/lm_eval_model.py imports them
from there); tested through `python -m pytest -q tests/test_interrupt.py tests/test_run.py`.

    device = resolve_device("auto")            # cuda when present, else cpu
    amp = autocast_dtype("auto", device)       # bf16 on cuda, None (fp32) on cpu
"""

from __future__ import annotations

import resource

import torch

from arena.errors import ConfigError, choice_error


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is visible; use auto or cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise choice_error("train.device", name, ("auto", "cpu", "cuda"))
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in ("auto", "fp32", "bf16"):
        raise choice_error("train.precision", precision, ("auto", "fp32", "bf16"))
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_max_allocated"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    return {"peak_memory_bytes": rss_kib * 1024, "peak_memory_kind": "cpu_process_max_rss"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stop:
    """SIGTERM (`kill`, a scheduler's preemption) handled like Ctrl-C, but cleanly: inside the step loop the handler
    only sets `requested`, and the loop writes a checkpoint at the next step boundary (a consistent state: the
    step in flight has finished) and then raises KeyboardInterrupt. Outside the loop, or on a second SIGTERM, it
    raises at once. Ctrl-C keeps raising at once wherever it lands (mid-step: no checkpoint is trusted then).
    Under torchrun a rank may set `requested` because another rank was signalled (the loop agrees on it): its own
    SIGTERM, arriving later, is still the first one and is deferred (`signalled`), not raised mid-checkpoint."""

    def __init__(self):
        self.requested, self.deferring, self.signalled = False, False, False

    def __call__(self, signum, frame) -> None:
        if self.deferring and not self.signalled:
            self.requested = self.signalled = True
            return
        raise KeyboardInterrupt
