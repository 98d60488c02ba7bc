"""Importing fla's KDA, GDN and Mamba2 layer modules for scripts/fla_layer_parity.py without transformers
(fla.layers' __init__ imports it; fla's Mamba2 module gets a stand-in logger), and mamba_ssm's Mamba2 where it
imports; which code fla's Mamba2 runs here, and whether mamba_ssm can be a second reference.

Run through `python scripts/fla_layer_parity.py` (the checks, tolerances and CLI are in its docstring);
tests: tests/test_fla_parity_script.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import types
from pathlib import Path

# ------------------------------------------------------------------------------------------------------------------
# importing fla without transformers


def _stand_in_logger(name: str):
    """What fla's Mamba2 module uses of transformers' logging: a logger with warning_once."""
    logger = logging.getLogger(name)
    seen = set()

    def warning_once(msg, *a, **k):
        if msg not in seen:
            seen.add(msg)
            logger.warning(msg, *a, **k)

    logger.warning_once = warning_once
    return logger


@contextlib.contextmanager
def _transformers_logging():
    """Without transformers, a stand-in `transformers.utils.logging` for the import of fla.layers.mamba2 only."""
    if importlib.util.find_spec("transformers") is not None:
        yield
        return
    names = ("transformers", "transformers.utils", "transformers.utils.logging")
    mods = {n: types.ModuleType(n) for n in names}
    mods["transformers.utils.logging"].get_logger = _stand_in_logger
    mods["transformers.utils"].logging = mods["transformers.utils.logging"]
    mods["transformers"].utils = mods["transformers.utils"]
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n in names:
            sys.modules.pop(n, None)


def import_fla() -> dict:
    """fla's three layer modules (and mamba_ssm's Mamba2 where it imports): {"kda", "gdn", "mamba2", "mamba_ssm"}."""
    import fla

    if "fla.layers" not in sys.modules:
        # fla/__init__ imports fla.layers only if it can; its __init__ needs transformers (attention layer). An empty
        # package object lets the three layer modules import on their own.
        pkg = types.ModuleType("fla.layers")
        pkg.__path__ = [str(Path(fla.__file__).parent / "layers")]
        sys.modules["fla.layers"] = pkg
    import fla.layers.gated_deltanet as gdn
    import fla.layers.kda as kda

    with _transformers_logging():
        import fla.layers.mamba2 as mamba2
    out = {"kda": kda, "gdn": gdn, "mamba2": mamba2, "mamba_ssm": None, "mamba_ssm_why": "",
           "causal_conv1d": mamba2.causal_conv1d_fn is not None}
    try:
        from mamba_ssm.modules.mamba2 import Mamba2 as MambaSSM

        out["mamba_ssm"] = MambaSSM
    except Exception as exc:  # ImportError, or a CUDA extension that does not load
        out["mamba_ssm_why"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
    return out


def fla_mamba2_path(mods, device) -> str:
    """Which code fla's Mamba2 runs for a training-style forward here."""
    if not (mods["mamba2"].is_fast_path_available and device.type == "cuda"):
        return "torch_forward"
    if mods["causal_conv1d"]:
        return "mamba_ssm split_conv1d_scan"  # training mode: conv, SSD, norm and out_proj fused
    # the fused training path needs causal_conv1d's CUDA op: eval mode takes mamba_chunk_scan + fla's Triton conv
    return "mamba_ssm chunk_scan (eval mode)"


def mamba_ssm_usable(mods, device) -> str:
    """"" when mamba_ssm's Mamba2 can be a reference here, else why not."""
    if mods["mamba_ssm"] is None:
        return mods["mamba_ssm_why"] or "not importable"
    if device.type != "cuda":
        return "needs CUDA"
    if not mods["causal_conv1d"]:
        return "its forward needs causal_conv1d, which does not import"
    return ""
