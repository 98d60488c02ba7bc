"""The fused recurrent SSD decode kernel (arena.kernels.ssd.recurrent) against its fp32 twin `ssd_decode_step`.

    python -m pytest -q tests/kernels/test_ssd_recurrent.py                      # CPU: Triton's interpreter
    TRITON_INTERPRET=0 python -m pytest -q tests/kernels/test_ssd_recurrent.py   # a CUDA machine

Outputs are NaN-poisoned before launch (ARENA_TRITON_POISON=1), so an unwritten element fails; bf16 runs only on
CUDA (the interpreter's bf16 is wrong).
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from arena.kernels.ssd import naive_recurrent_ssd, ssd_decode_step
from arena.kernels.ssd.recurrent import fused_recurrent_ssd, fused_recurrent_ssd_decode_step
from arena.kernels.triton_delta import interpreting
from arena.testing import assert_close

ON_CUDA = not interpreting() and torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not (interpreting() or ON_CUDA),
                                reason="needs TRITON_INTERPRET=1 (tests/conftest.py sets it) or a CUDA device")
DEVICE = "cuda" if ON_CUDA else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("ARENA_TRITON_POISON", "1")


def make(B, T, H, K, V, dtype):
    q = torch.randn(B, T, H, K).to(dtype)
    k = (torch.randn(B, T, H, K) / K ** 0.5).to(dtype)
    v = torch.randn(B, T, H, V).to(dtype)
    g = -F.softplus(torch.randn(B, T, H))
    h0 = torch.randn(B, H, K, V)
    return [x.to(DEVICE) for x in (q, k, v, g, h0)]


def test_same_signature_as_the_torch_twin():
    assert inspect.signature(fused_recurrent_ssd_decode_step) == inspect.signature(ssd_decode_step).replace(
        return_annotation=inspect.Signature.empty, parameters=[
            p.replace(annotation=inspect.Parameter.empty)
            for p in inspect.signature(ssd_decode_step).parameters.values()])


CASES = [  # (id, B, H, K, V, dtype, with state)
    ("B3H2-K16V16", 3, 2, 16, 16, torch.float32, True),
    ("B1H3-K20V40-no-state", 1, 3, 20, 40, torch.float32, False),
    ("B2H1-K128V64-several-V-blocks", 2, 1, 128, 200, torch.float32, True),
    ("fp16-B2H2-K32V48", 2, 2, 32, 48, torch.float16, True),
    ("bf16-B4H4-K128V64", 4, 4, 128, 64, torch.bfloat16, True),
]


@pytest.mark.parametrize("B,H,K,V,dtype,with_state", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decode_step_matches_twin(B, H, K, V, dtype, with_state):
    if dtype == torch.bfloat16 and not ON_CUDA:
        pytest.skip("bf16 is wrong in the Triton interpreter")
    q, k, v, g, h0 = make(B, 1, H, K, V, dtype)
    q, k, v, g = q[:, 0], k[:, 0], v[:, 0], g[:, 0]  # one token: no T axis
    state = h0 if with_state else None
    before = None if state is None else state.clone()
    o_ref, S_ref = ssd_decode_step(q, k, v, g, state, scale=0.7)
    o, S = fused_recurrent_ssd_decode_step(q, k, v, g, state, scale=0.7)
    assert o.dtype == v.dtype and o.shape == (B, H, V) and S.dtype == torch.float32 and S.shape == (B, H, K, V)
    assert_close("o", o_ref.float(), o.float(), TOL[dtype])
    assert_close("state", S_ref, S, TOL[dtype])
    if state is not None:
        assert torch.equal(state, before), "the decode step changed its input state in place"


def test_many_tokens_match_the_token_loop():
    q, k, v, g, h0 = make(2, 9, 2, 16, 24, torch.float32)
    o_ref, S_ref = naive_recurrent_ssd(q, k, v, g, scale=0.5, initial_state=h0, output_final_state=True)
    o, S = fused_recurrent_ssd(q, k, v, g, scale=0.5, initial_state=h0)
    assert_close("o", o_ref, o, 1e-5)
    assert_close("state", S_ref, S, 1e-5)
    o2, none = fused_recurrent_ssd(q, k, v, g, scale=0.5, initial_state=h0, output_final_state=False)
    assert none is None and torch.equal(o, o2)


def test_bad_inputs_are_one_line_errors():
    q, k, v, g, h0 = make(1, 1, 1, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="g must be"):
        fused_recurrent_ssd_decode_step(q[:, 0], k[:, 0], v[:, 0], g, h0)  # g [B, 1, H] for a step
    with pytest.raises(ValueError, match="q must be \\[B, H, K\\]"):
        fused_recurrent_ssd_decode_step(q, k, v, g, h0)
    with pytest.raises(ValueError, match="no fp64 path"):
        fused_recurrent_ssd(q.double(), k.double(), v.double(), g, initial_state=h0)
    with pytest.raises(RuntimeError, match="inference only"):
        fused_recurrent_ssd(q.requires_grad_(), k, v, g, initial_state=h0)
