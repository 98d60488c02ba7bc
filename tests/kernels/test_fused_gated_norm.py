"""The fused gated RMSNorm and decay gate (arena.kernels.fused.gated_norm) against their fp64 twins.

    python -m pytest -q tests/kernels/test_fused_gated_norm.py                      # CPU, Triton's interpreter
    TRITON_INTERPRET=0 python -m pytest -q tests/kernels/test_fused_gated_norm.py   # CUDA, compiled, adds bf16

Every kernel output (and every per-program partial) is NaN-poisoned before launch. Each case checks the output and
the gradients of every input against the twin evaluated in fp64 on the same values; the twins themselves are pinned
to independent formulations (nn.RMSNorm, F.rms_norm, the KDA / GDN / Mamba2 layers' own code, logaddexp softplus).
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from arena.kernels.fused.gated_norm import (
    decay_gate,
    decay_gate_reference,
    gated_rmsnorm,
    gated_rmsnorm_reference,
)
from arena.kernels.triton_delta import interpreting
from arena.testing import assert_close

ON_CUDA = not interpreting() and torch.cuda.is_available()
pytestmark = [
    pytest.mark.skipif(not (interpreting() or ON_CUDA),
                       reason="needs TRITON_INTERPRET=1 (tests/conftest.py sets it) or a CUDA GPU"),
    # the interpreter's numpy exp overflows to inf on saturated gates, as intended (the sigmoid becomes 0)
    pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning"),
]

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16,
          pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not ON_CUDA, reason="bf16 runs on CUDA only"))]


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if ON_CUDA else "cpu")


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("ARENA_TRITON_POISON", "1")


def leaf(x: torch.Tensor, dtype, device) -> torch.Tensor:
    return x.to(device=device, dtype=dtype).requires_grad_()


def wide_gates(shape) -> torch.Tensor:
    """randn * 3, with a tenth of the entries at +-30..100, where sigmoid and swish saturate."""
    g = torch.randn(shape) * 3
    far = torch.empty(shape).uniform_(30, 100) * torch.randn(shape).sign()
    return torch.where(torch.rand(shape) < 0.1, far, g)


def grads_of(out: torch.Tensor, inputs, dy: torch.Tensor, retain: bool = False):
    return torch.autograd.grad(out, inputs, dy.to(out.dtype), retain_graph=retain)


# ----------------------------------------------------------------------------------------------- gated RMSNorm


def check_norm(o, gate, weight, activation, norm_before_gate, tol, out_dtype=None, eps=1e-5):
    y = gated_rmsnorm(o, gate, weight, eps=eps, activation=activation, norm_before_gate=norm_before_gate,
                      out_dtype=out_dtype)
    ins64 = [x.detach().double().requires_grad_() for x in (o, gate, weight)]
    ref = gated_rmsnorm_reference(*ins64, eps=eps, activation=activation, norm_before_gate=norm_before_gate)
    assert y.dtype == (out_dtype or o.dtype) and y.shape == o.shape
    assert_close("y", ref, y, tol)
    dy = torch.randn(y.shape, device=y.device).to(y.dtype)
    got = grads_of(y, (o, gate, weight), dy)
    want = grads_of(ref, ins64, dy.double())
    for name, x, w, g in zip(("do", "dgate", "dweight"), (o, gate, weight), want, got):
        assert g.dtype == x.dtype, f"{name} dtype {g.dtype} != input dtype {x.dtype}"
        assert_close(name, w, g, tol)


def norm_inputs(shape, dtype, device, weight_shape=None, zero_row=False):
    """o ~ 2 randn (with zero_row, row 1 all zeros), wide gates (a strided view), weight ~ 1 + randn / 2."""
    D = shape[-1]
    o = torch.randn(shape) * 2
    gate = wide_gates(shape[:-1] + (D + 5,))  # sliced below, as after a split of a projection
    if zero_row:  # rstd = eps^-1/2 there; moderate gates keep its fp16 gradients finite
        o.view(-1, D)[1] = 0.0
        gate.view(-1, D + 5)[1].clamp_(-3, 3)
    gate = gate[..., :D]
    weight = 1 + torch.randn(weight_shape or (D,)) / 2
    return leaf(o, dtype, device), gate.to(device=device, dtype=dtype).requires_grad_(), leaf(weight, torch.float32,
                                                                                               device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_before_gate", [True, False], ids=["norm-gate", "gate-norm"])
@pytest.mark.parametrize("activation", ["sigmoid", "swish"])
def test_gated_rmsnorm_heads(activation, norm_before_gate, dtype, device):
    """[B, T, H, V] with V = 48 (padded to 64), 148 rows: forward 3 blocks of 64, backward 5 of 32 over 3 programs
    (the last ragged)."""
    o, gate, weight = norm_inputs((2, 37, 2, 48), dtype, device)
    check_norm(o, gate, weight, activation, norm_before_gate, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,D,activation,norm_before_gate", [
    (517, 24, "swish", False),  # backward: 9 blocks of 64 rows over 3 programs, each looping 3 times
    (300, 100, "sigmoid", True),  # forward 10 blocks of 32 rows, backward 19 of 16
    (5, 768, "swish", True),  # a width of 8 warps, one partial block
])
def test_gated_rmsnorm_rows(N, D, activation, norm_before_gate, dtype, device):
    o, gate, weight = norm_inputs((N, D), dtype, device)
    check_norm(o, gate, weight, activation, norm_before_gate, TOL[dtype], eps=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_before_gate", [True, False], ids=["norm-gate", "gate-norm"])
def test_gated_rmsnorm_zero_row(norm_before_gate, dtype, device):
    """A row of zeros normalizes by eps^-1/2 without NaN (its large gradients dominate this case's RMS, so the
    other cases keep every row ordinary)."""
    o, gate, weight = norm_inputs((40, 32), dtype, device, zero_row=True)
    check_norm(o, gate, weight, "swish", norm_before_gate, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_rmsnorm_mamba2_groups(dtype, device):
    """Mamba2 with ngroups = 2: gate before the norm, swish, a weight per group ([G, D] = the [d_inner] weight)."""
    o, gate, weight = norm_inputs((2, 33, 2, 96), dtype, device, weight_shape=(2, 96))
    check_norm(o, gate, weight, "swish", False, TOL[dtype])


@pytest.mark.parametrize("out_dtype", [torch.float16, pytest.param(
    torch.bfloat16, marks=pytest.mark.skipif(not ON_CUDA, reason="bf16 runs on CUDA only"))])
def test_gated_rmsnorm_out_dtype(out_dtype, device):
    """fp32 inputs, a low-precision result for the next Linear; the gradients stay fp32."""
    o, gate, weight = norm_inputs((3, 20, 64), torch.float32, device)
    check_norm(o, gate, weight, "sigmoid", True, TOL[out_dtype], out_dtype=out_dtype)


def test_gated_rmsnorm_empty(device):
    o, gate, weight = norm_inputs((0, 4, 32), torch.float32, device, zero_row=False)
    y = gated_rmsnorm(o, gate, weight)
    assert y.shape == (0, 4, 32)
    do, dgate, dweight = torch.autograd.grad(y.sum(), (o, gate, weight))
    assert do.shape == o.shape and dgate.shape == gate.shape and torch.equal(dweight, torch.zeros_like(weight))


def same_with_grads(name, want, got, inputs, tol=1e-12):
    """Two fp64 formulations agree in value and in the gradients of every input."""
    assert_close(name, want, got, tol)
    dy = torch.randn(want.shape, dtype=want.dtype)
    for i, (w, g) in enumerate(zip(grads_of(want, inputs, dy, True), grads_of(got, inputs, dy, True))):
        assert_close(f"{name} grad {i}", w, g, tol)


@pytest.mark.parametrize("norm_before_gate", [True, False])
@pytest.mark.parametrize("activation", ["sigmoid", "swish"])
def test_norm_twin_matches_independent_forms(activation, norm_before_gate):
    """The twin (fp64) against F.rms_norm, and against the layers' code: GatedRMSNorm (nn.RMSNorm, KDA / GDN) for
    norm-then-gate, Mamba2._gated_norm (G = 2 groups of a [d_inner] weight) for gate-then-norm with swish."""
    from arena.mixers.common import GatedRMSNorm
    from arena.mixers.mamba2 import Mamba2

    G, D, eps = 2, 40, 1e-5
    o = (torch.randn(3, 7, G, D) * 2).double().requires_grad_()
    gate = wide_gates((3, 7, G, D)).double().requires_grad_()
    weight = (1 + torch.randn(G, D) / 2).double().requires_grad_()
    act = torch.sigmoid if activation == "sigmoid" else F.silu
    twin = gated_rmsnorm_reference(o, gate, weight, eps=eps, activation=activation, norm_before_gate=norm_before_gate)
    form = (F.rms_norm(o, (D,), eps=eps) * weight * act(gate) if norm_before_gate else
            F.rms_norm(o * act(gate), (D,), eps=eps) * weight)
    same_with_grads("F.rms_norm", form, twin, (o, gate, weight))
    if norm_before_gate:  # the layers' module: one [D] weight shared by the heads
        layer = GatedRMSNorm(D, eps=eps, activation=activation).double()
        w_shared = layer.norm.weight
        with torch.no_grad():
            w_shared.copy_(weight[0])
        twin_shared = gated_rmsnorm_reference(o, gate, w_shared, eps=eps, activation=activation)
        same_with_grads("GatedRMSNorm", layer(o, gate), twin_shared, (o, gate, w_shared))
    elif activation == "swish":
        mamba = SimpleNamespace(cfg=SimpleNamespace(ngroups=G, norm_eps=eps), norm_weight=weight.flatten())
        layer_y = Mamba2._gated_norm(mamba, o.flatten(-2), gate.flatten(-2)).unflatten(-1, (G, D))
        same_with_grads("Mamba2._gated_norm", layer_y, twin, (o, gate, weight))


# ------------------------------------------------------------------------------------------------- decay gate


def gate_inputs(lead, H, K, dtype, device):
    """raw ~ 3 randn, with a fifth of x = raw + dt_bias placed on both sides of softplus' threshold (20) and a
    tenth far below zero (to -200); dt_bias as the layers initialize it, plus noise; A_log = log U(1, 16)."""
    C = H * K
    dt_bias = torch.rand(C).mul(math.log(0.1 / 1e-3)).add(math.log(1e-3)).exp()
    dt_bias = dt_bias + torch.log(-torch.expm1(-dt_bias)) + torch.randn(C) / 2
    x = torch.randn(lead + (C,)) * 3
    near = torch.tensor([19.0, 19.9, 19.999, 20.0, 20.001, 20.1, 21.0, 25.0, 60.0])
    near = near[torch.randint(len(near), x.shape)]
    low = -torch.empty(x.shape).uniform_(20, 200)
    u = torch.rand(x.shape)
    x = torch.where(u < 0.2, near, torch.where(u > 0.9, low, x))
    A_log = torch.empty(H).uniform_(1, 16).log()
    return leaf(x - dt_bias, dtype, device), leaf(A_log, torch.float32, device), leaf(dt_bias, torch.float32, device)


def check_gate(raw, A_log, dt_bias, K, tol):
    g = decay_gate(raw, A_log, dt_bias, K)
    ins64 = [x.detach().double().requires_grad_() for x in (raw, A_log, dt_bias)]
    ref = decay_gate_reference(*ins64, K)
    want_shape = raw.shape if K == 1 else raw.shape[:-1] + (A_log.shape[0], K)
    assert g.dtype == torch.float32 and g.shape == want_shape == ref.shape
    assert_close("g", ref, g, tol)
    dg = torch.randn(g.shape, device=g.device)
    got = grads_of(g, (raw, A_log, dt_bias), dg)
    want = grads_of(ref, ins64, dg.double())
    for name, x, w, gr in zip(("draw", "dA_log", "ddt_bias"), (raw, A_log, dt_bias), want, got):
        assert gr.dtype == x.dtype, f"{name} dtype {gr.dtype} != input dtype {x.dtype}"
        assert_close(name, w, gr, tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,H,K", [
    ((2, 37), 3, 24),  # KDA [B, T, H*K], K not a power of two: 74 rows, 3 blocks of 32 (backward 5 of 16)
    ((3, 1000), 2, 1),  # GDN [B, T, H]: 3000 rows, 2 blocks of 2048 (backward 3 of 1024), the last ragged
    ((5000,), 2, 2),  # [N, C]: backward 10 blocks of 512 over 3 programs
    ((13,), 11, 100),  # C = 1100: two column blocks of 1024, 4 row blocks of 4 (backward 7 of 2)
], ids=["kda", "gdn", "rows", "wide"])
def test_decay_gate(lead, H, K, dtype, device):
    check_gate(*gate_inputs(lead, H, K, dtype, device), K, TOL[dtype])


def test_decay_gate_softplus_precision(device):
    """Element-wise (not just RMS): -g = softplus(x) to 1e-6 relative (1e-5 on a GPU, whose exp and log are
    approximations of a few ulp) from -80 to 30, where log(1 + exp(x)) in fp32 would lose every digit below
    about -16; and g = 0 (not NaN) deep in the underflow."""
    x = torch.cat([torch.linspace(-80, 30, 4001), torch.tensor([-20.0, 19.999, 20.0, 20.001])])
    g = decay_gate(x[:, None].to(device), torch.zeros(1, device=device), torch.zeros(1, device=device), 1)
    g = g[:, 0].cpu().double()
    want = torch.where(x.double() > 20, x.double(), torch.log1p(torch.exp(x.double())))
    rel = ((-g - want).abs() / want).max().item()
    assert rel < (1e-5 if str(device).startswith("cuda") else 1e-6), f"softplus max relative error {rel:.3g}"
    deep = decay_gate(torch.tensor([[-150.0], [-1e4]], device=device), torch.zeros(1, device=device),
                      torch.zeros(1, device=device), 1)
    assert torch.isfinite(deep).all() and deep.abs().max().item() < 1e-40


def test_decay_gate_empty(device):
    raw, A_log, dt_bias = gate_inputs((0, 3), 2, 4, torch.float32, device)
    g = decay_gate(raw, A_log, dt_bias, 4)
    assert g.shape == (0, 3, 2, 4)
    draw, dA, db = torch.autograd.grad(g.sum(), (raw, A_log, dt_bias))
    assert draw.shape == raw.shape and not dA.any() and not db.any()


@pytest.mark.parametrize("mixer,K", [("kda", 8), ("gdn", 1)])
def test_decay_twin_matches_layers(mixer, K):
    """The twin (fp64) against the layers' own decay(), and against softplus written as logaddexp(x, 0) (linear
    above 20) with the gradients, on projections scaled so that some values pass the threshold."""
    from arena.mixers import build_mixer

    layer = build_mixer(mixer, d_model=16, num_heads=2, head_dim=8).double()
    x = torch.randn(2, 9, 16).double()
    raw = layer.f_b(layer.f_a(x)) if mixer == "kda" else layer.a_proj(x)
    assert_close("layer decay()", layer.decay(x), decay_gate_reference(raw, layer.A_log, layer.dt_bias, K), 1e-12)

    raw = (raw.detach() * 30).requires_grad_()
    z = (raw + layer.dt_bias).unflatten(-1, (2, K))
    assert bool((z > 20).any()) and bool((z < 0).any()), "the values should straddle softplus' threshold"
    form = -layer.A_log.exp()[:, None] * torch.where(z > 20, z, torch.logaddexp(z, torch.zeros_like(z)))
    twin = decay_gate_reference(raw, layer.A_log, layer.dt_bias, K)
    same_with_grads("logaddexp softplus", form.squeeze(-1) if K == 1 else form, twin,
                    (raw, layer.A_log, layer.dt_bias))


# ---------------------------------------------------------------------------------------------------- errors


def test_bad_arguments_raise_one_line_errors(device):
    o = torch.randn(4, 8, device=device)
    w = torch.ones(8, device=device)
    cases = [
        (lambda: gated_rmsnorm(o, o, w, activation="relu"), "activation"),
        (lambda: gated_rmsnorm(o, o[:, :4], w), "share one shape"),
        (lambda: gated_rmsnorm(o, o, torch.ones(4, device=device)), "weight must be"),
        (lambda: gated_rmsnorm(o.double(), o.double(), w), "fp32, fp16 or bf16"),
        (lambda: gated_rmsnorm_reference(o, o, w, eps=0.0), "eps"),
        (lambda: decay_gate(o, torch.zeros(3, device=device), torch.zeros(8, device=device), 2), "H * head_dim"),
        (lambda: decay_gate(o, torch.zeros(4, device=device), torch.zeros(4, device=device), 2), "dt_bias"),
        (lambda: decay_gate_reference(o, torch.zeros(4, device=device), torch.zeros(8, device=device), 0),
         "head_dim"),
    ]
    for call, words in cases:
        with pytest.raises(ValueError, match=re.escape(words)) as info:
            call()
        assert "\n" not in str(info.value)
