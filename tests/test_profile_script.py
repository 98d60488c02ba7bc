"""scripts/profile_triton_delta.py's launch-configuration overrides (--config), on CPU: the GPU profiling itself
needs CUDA. A configuration must parse, refuse unknown keys in one line, and change the launches it names while
the kernels (under the interpreter) still match the torch path.
Run: PYTHONPATH=. pytest tests/test_profile_script.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arena.kernels.kda import chunk_kda
from arena.kernels.triton_delta import chunk as tri_chunk
from arena.kernels.triton_delta import interpreting
from arena.testing import assert_close, load_script

REPO = Path(__file__).resolve().parents[1]
prof = load_script("profile_triton_delta")


def test_parse_config():
    assert prof.parse_config("BKS_kda=16,warps_kda=2") == {"BKS_kda": 16, "warps_kda": 2}
    assert prof.parse_config("maxnreg_kda=none") == {"maxnreg_kda": None}
    assert prof.parse_config("") == {}
    with pytest.raises(SystemExit, match=r"--config 'warps_kda': expected KEY=INTEGER or KEY=none"):
        prof.parse_config("warps_kda")


def test_unknown_config_key_is_one_line_error(monkeypatch):
    monkeypatch.setattr(tri_chunk, "_blocks", tri_chunk._blocks)  # restored after the test
    prof.with_overrides({"warps_nonsense": 4})
    with pytest.raises(SystemExit, match=r"unknown --config keys \['warps_nonsense'\]; allowed: .*warps_kda"):
        tri_chunk._blocks(64, 64)


@pytest.mark.skipif(not interpreting(), reason="set TRITON_INTERPRET=1 (tests/conftest.py does)")
def test_overrides_reach_the_launches_and_keep_results(monkeypatch):
    monkeypatch.setattr(tri_chunk, "_blocks", tri_chunk._blocks)
    prof.with_overrides({"BKS_kda": 16, "BKH": 32})
    assert tri_chunk._blocks(64, 32)["BKS_kda"] == 16 and tri_chunk._blocks(64, 32)["BKH"] == 32
    torch.manual_seed(0)
    q, k = (F.normalize(torch.randn(1, 70, 2, 64), dim=-1) for _ in range(2))
    v = torch.randn(1, 70, 2, 32)
    g = F.logsigmoid(torch.randn(1, 70, 2, 64))
    beta = torch.rand(1, 70, 2)
    do = torch.randn(1, 70, 2, 32)
    results = {}
    for backend in ("torch", "triton"):  # BKS_kda and BKH are backward tiles: compare the gradients
        leaves = [x.clone().requires_grad_() for x in (q, k, v, g, beta)]
        o, _ = chunk_kda(*leaves, backend=backend)
        results[backend] = [o.detach(), *torch.autograd.grad((o * do).sum(), leaves)]
    for name, want, got in zip(("o", "dq", "dk", "dv", "dg", "dbeta"), results["torch"], results["triton"]):
        assert_close(f"{name} with BKS_kda=16, BKH=32", want, got, 1e-4)
