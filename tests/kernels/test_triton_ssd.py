"""The Triton SSD kernels (arena.kernels.ssd.triton_ssd) against the fp64 token-loop oracle.

    python -m pytest -q tests/kernels/test_triton_ssd.py                      # CPU: Triton's interpreter
    TRITON_INTERPRET=0 python -m pytest -q tests/kernels/test_triton_ssd.py   # a CUDA machine: compiled kernels

On CPU (tests/conftest.py sets TRITON_INTERPRET=1) the cases run in fp32 and fp16: the interpreter's bf16 `tl.dot`
is wrong, so bf16 runs only on CUDA. Every kernel output is NaN-poisoned before launch, and every case checks o,
the final state and dq, dk, dv, dg, dh0 (a loss on o and, when returned, on the final state).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arena.kernels.ssd import naive_recurrent_ssd
from arena.kernels.ssd.triton_ssd import chunk_ssd_triton
from arena.kernels.triton_delta import interpreting
from arena.testing import assert_close

ON_CUDA = not interpreting() and torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not (interpreting() or ON_CUDA),
                                reason="needs TRITON_INTERPRET=1 (tests/conftest.py sets it) or a CUDA device")
TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1e-2}


@pytest.fixture
def device():
    return "cuda" if ON_CUDA else "cpu"


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("ARENA_TRITON_POISON", "1")


def make(B, T, H, K, V, dtype, device, strong=0.0, strong_value=-30.0):
    """q, v ~ randn, k ~ randn / sqrt(K); gates -softplus(randn), a fraction `strong` of them set to strong_value;
    fp32 gates and initial state."""
    q = torch.randn(B, T, H, K).to(dtype)
    k = (torch.randn(B, T, H, K) / K ** 0.5).to(dtype)
    v = torch.randn(B, T, H, V).to(dtype)
    g = -F.softplus(torch.randn(B, T, H))
    g = torch.where(torch.rand(B, T, H) < strong, strong_value, g)
    h0 = torch.randn(B, H, K, V)
    return [x.to(device).requires_grad_() for x in (q, k, v, g, h0)]


def run_and_grads(fn, inputs, scale, with_h0, final, do, dS):
    q, k, v, g, h0 = inputs
    o, S = fn(q, k, v, g, scale=scale, initial_state=h0 if with_h0 else None, output_final_state=final)
    loss = (o.double() * do).sum() + ((S.double() * dS).sum() if final else 0)
    leaves = [q, k, v, g] + ([h0] if with_h0 else [])
    return o, S, torch.autograd.grad(loss, leaves)


def check(inputs, dtype, scale=1.0, with_h0=True, final=True, tol=None):
    tol = tol or TOL[dtype]
    B, T, H, _ = inputs[0].shape
    do = torch.randn(inputs[2].shape, dtype=torch.float64, device=inputs[0].device)
    dS = torch.randn(inputs[4].shape, dtype=torch.float64, device=inputs[0].device)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    o_ref, S_ref, g_ref = run_and_grads(naive_recurrent_ssd, ref_inputs, scale, with_h0, final, do, dS)
    o, S, g_tri = run_and_grads(chunk_ssd_triton, inputs, scale, with_h0, final, do, dS)
    assert o.dtype == inputs[2].dtype and o.shape == o_ref.shape
    assert_close("o", o_ref, o.float(), tol)
    if final:
        assert S.dtype == torch.float32
        assert_close("final state", S_ref, S, tol)
    else:
        assert S is None
    # dg is exactly 0 where no state reaches a gate (T = 1 without h0): the kernel's sum of products of rounded
    # terms leaves ~1e-7 there, so a zero reference gets a floor of 1e-5 x the largest of dq, dk, dv
    floor = 1e-5 * max(x.abs().max().item() for x in g_ref[:3])
    for name, want, got in zip(["dq", "dk", "dv", "dg", "dh0"], g_ref, g_tri):
        assert got.dtype == {"dg": torch.float32, "dh0": torch.float32}.get(name, dtype), name
        assert_close(name, want, got.float(), 2 * tol if name == "dg" else tol, atol=floor if name == "dg" else 0.0)


CASES = [  # (id, B, T, H, K, V, dtype, options)
    ("T1-B2H3-K16V16", 2, 1, 3, 16, 16, torch.float32, {"scale": 0.5}),
    ("T63-K32V16-no-h0", 1, 63, 1, 32, 16, torch.float32, {"with_h0": False}),
    ("T64-B2-K16V32-no-final", 2, 64, 1, 16, 32, torch.float32, {"final": False, "scale": 2.0}),
    ("T130-B2H3-K24V40-strong", 2, 130, 3, 24, 40, torch.float32, {"scale": 0.3, "strong": 0.1}),
    ("T130-H3-K32V32-no-h0-no-final", 1, 130, 3, 32, 32, torch.float32,
     {"with_h0": False, "final": False, "strong": 0.05}),
    ("T130-K16V16-gates-of-1000", 1, 130, 1, 16, 16, torch.float32, {"strong": 0.05, "strong_value": -1000.0}),
    ("T70-K20V80-two-V-blocks", 1, 70, 2, 20, 80, torch.float32, {"scale": 0.5}),
    ("fp16-T63-B2-K16V32", 2, 63, 1, 16, 32, torch.float16, {"scale": 0.5}),
    ("fp16-T130-H3-K24V40-strong", 1, 130, 3, 24, 40, torch.float16, {"strong": 0.1}),
    ("fp16-T1-no-h0-no-final", 2, 1, 1, 32, 16, torch.float16, {"with_h0": False, "final": False}),
    ("bf16-T130-B2H3-K24V40", 2, 130, 3, 24, 40, torch.bfloat16, {"scale": 0.5, "strong": 0.05}),
    ("bf16-T64-K128V64", 1, 64, 2, 128, 64, torch.bfloat16, {}),
    ("fp32-T200-K128V64", 1, 200, 2, 128, 64, torch.float32, {"cuda_only": True}),
    ("bf16-T100-K256V256", 1, 100, 1, 256, 256, torch.bfloat16, {}),
    # K blocks of 64 in the state passes and the output pass, beside V blocks of 64: both split, last ones partial
    # (fp16: fp32 with K > 128 is forward-only, test_fp32_with_wide_k_is_forward_only)
    ("fp16-T100-B2-K130V96-K-and-V-blocks", 2, 100, 1, 130, 96, torch.float16, {"scale": 0.5, "strong": 0.05}),
    ("fp16-T40-K160V200-no-h0", 1, 40, 1, 160, 200, torch.float16, {"with_h0": False}),
    ("fp16-T90-K96V72-K-and-V-blocks", 1, 90, 2, 96, 72, torch.float16, {"scale": 0.5}),
]


@pytest.mark.parametrize("B,T,H,K,V,dtype,opts", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_chunk_ssd_triton_matches_oracle(device, B, T, H, K, V, dtype, opts):
    opts = dict(opts)
    if (dtype == torch.bfloat16 or opts.pop("cuda_only", False)) and device == "cpu":
        pytest.skip("bf16 tl.dot is wrong in the Triton interpreter; large heads are too slow there")
    make_opts = {key: opts.pop(key) for key in ("strong", "strong_value") if key in opts}
    check(make(B, T, H, K, V, dtype, device, **make_opts), dtype, **opts)


def test_loss_on_the_final_state_only(device):
    """o unused: the backward receives no dO and must still give every gradient through the state."""
    q, k, v, g, h0 = make(1, 70, 2, 16, 16, torch.float32, device)
    dS = torch.randn(1, 2, 16, 16, device=device)
    leaves = [q, k, v, g, h0]
    args = dict(scale=0.5, initial_state=h0, output_final_state=True)
    want = torch.autograd.grad((naive_recurrent_ssd(q, k, v, g, **args)[1] * dS).sum(), leaves,
                               allow_unused=True, materialize_grads=True)  # q does not reach the state
    got = torch.autograd.grad((chunk_ssd_triton(q, k, v, g, **args)[1] * dS).sum(), leaves)
    assert not got[0].any()
    for name, a, b in zip(["dk", "dv", "dg", "dh0"], want[1:], got[1:]):
        assert_close(name, a, b, 1e-4)


def test_no_grad_forward_matches(device):
    q, k, v, g, h0 = (x.detach() for x in make(2, 70, 1, 16, 24, torch.float32, device))
    with torch.no_grad():
        o, S = chunk_ssd_triton(q, k, v, g, initial_state=h0, output_final_state=True)
    o_ref, S_ref = naive_recurrent_ssd(q, k, v, g, initial_state=h0, output_final_state=True)
    assert_close("o", o_ref, o, 1e-4)
    assert_close("final state", S_ref, S, 1e-4)


@pytest.mark.parametrize("cu_seqlens", [None, (0, 20, 150)], ids=["fixed-length", "packed"])
def test_forward_with_and_without_grad_agree(device, cu_seqlens):
    """The forward runs the same launches whether or not a backward follows: o and the final state are equal bit
    for bit (several K and V blocks, a partial last chunk, a sequence shorter than a chunk)."""
    B = 2 if cu_seqlens is None else 1
    T = 75 if cu_seqlens is None else 150
    q, k, v, g, _ = make(B, T, 1, 96, 72, torch.float32, device, strong=0.05)
    h0 = torch.randn(2, 1, 96, 72, device=device).requires_grad_()  # two sequences either way
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, device=device)
    args = dict(scale=0.5, initial_state=h0, output_final_state=True, cu_seqlens=cu)
    with torch.no_grad():
        o0, S0 = chunk_ssd_triton(q, k, v, g, **args)
    o1, S1 = chunk_ssd_triton(q, k, v, g, **args)
    assert o1.requires_grad and not o0.requires_grad
    assert torch.equal(o0, o1.detach()) and torch.equal(S0, S1.detach())


def test_empty_sequence(device):
    q, k, v, g, h0 = (x.detach() for x in make(2, 0, 1, 16, 16, torch.float32, device))
    o, S = chunk_ssd_triton(q, k, v, g, initial_state=h0, output_final_state=True)
    assert o.shape == v.shape and torch.equal(S, h0)


@pytest.mark.parametrize("change,match", [
    ({"v": torch.float16}, "one dtype"),
    ({"q": torch.float64, "k": torch.float64, "v": torch.float64}, "one dtype"),
    ({"K": 264}, "head dims up to 256"),
    ({"g_shape": (1, 4, 2)}, "g must be"),
])
def test_bad_inputs_are_one_line_errors(device, change, match):
    K = change.get("K", 16)
    q = torch.randn(1, 4, 1, K, dtype=change.get("q", torch.float32), device=device)
    k = torch.randn(1, 4, 1, K, dtype=change.get("k", torch.float32), device=device)
    v = torch.randn(1, 4, 1, 16, dtype=change.get("v", torch.float32), device=device)
    g = -torch.rand(change.get("g_shape", (1, 4, 1)), device=device)
    with pytest.raises(ValueError, match=match):
        chunk_ssd_triton(q, k, v, g)


def test_fp32_with_wide_k_is_forward_only(device, monkeypatch):
    """fp32 with K > 128: the backward's one-tile-of-K kernel would overflow shared memory on a GPU (368 KiB of an
    H100's 227), so chunk_ssd_triton refuses it in one line before any launch when a backward follows, runs the
    forward alone, and chunk_ssd(backend="triton") takes the torch path with one warning instead."""
    from arena.kernels import _dispatch
    from arena.kernels.ssd import chunk_ssd

    q, k, v, g, h0 = make(1, 70, 1, 130, 16, torch.float32, device)
    with pytest.raises(ValueError, match=r"^chunk_ssd_triton: fp32 inputs with K=130 > 128 overflow shared memory"):
        chunk_ssd_triton(q, k, v, g, initial_state=h0)
    with torch.no_grad():
        o, S = chunk_ssd_triton(q, k, v, g, initial_state=h0, output_final_state=True)
        o_ref, S_ref = naive_recurrent_ssd(*(x.double() for x in (q, k, v, g)), initial_state=h0.double(),
                                           output_final_state=True)
    assert_close("o", o_ref, o, TOL[torch.float32])
    assert_close("final state", S_ref, S, TOL[torch.float32])

    monkeypatch.setattr(_dispatch, "_warned", set())
    with pytest.warns(RuntimeWarning, match="chunk_ssd: the Triton kernels cannot run .*K=130.*torch path"):
        o, _ = chunk_ssd(q, k, v, g, initial_state=h0, backend="triton")
    o_torch, _ = chunk_ssd(q, k, v, g, initial_state=h0, backend="torch")
    assert torch.equal(o, o_torch)
    assert o.requires_grad


# ---------------------------------------------------------------------------------------------- packed sequences

def per_sequence_reference(inputs, lengths, scale, with_h0):
    """fp64 token loop run on each sequence on its own (not through cu_seqlens): o [1, T, H, V], states [N, ...]."""
    q, k, v, g, h0 = inputs
    outs, states, t0 = [], [], 0
    for n, L in enumerate(lengths):
        part = [x[:, t0:t0 + L] for x in (q, k, v, g)]
        o, S = naive_recurrent_ssd(*part, scale=scale, initial_state=h0[n:n + 1] if with_h0 else None,
                                   output_final_state=True)
        outs.append(o)
        states.append(S)
        t0 += L
    return torch.cat(outs, dim=1), torch.cat(states, dim=0)


def check_packed(lengths, H, K, V, dtype, device, scale=1.0, with_h0=True, final=True, tol=None, **make_opts):
    tol = tol or TOL[dtype]
    T, N = sum(lengths), len(lengths)
    q, k, v, g, _ = make(1, T, H, K, V, dtype, device, **make_opts)
    h0 = torch.randn(N, H, K, V, device=device).requires_grad_()
    inputs = [q, k, v, g, h0]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    do = torch.randn(v.shape, dtype=torch.float64, device=device)
    dS = torch.randn(h0.shape, dtype=torch.float64, device=device)
    leaves = [q, k, v, g] + ([h0] if with_h0 else [])

    ref = [x.detach().double().requires_grad_() for x in inputs]
    o_ref, S_ref = per_sequence_reference(ref, lengths, scale, with_h0)
    loss = (o_ref * do).sum() + ((S_ref * dS).sum() if final else 0)
    grads_ref = torch.autograd.grad(loss, ref[:4] + ([ref[4]] if with_h0 else []))

    o, S = chunk_ssd_triton(q, k, v, g, scale=scale, initial_state=h0 if with_h0 else None,
                            output_final_state=final, cu_seqlens=cu)
    loss = (o.double() * do).sum() + ((S.double() * dS).sum() if final else 0)
    grads = torch.autograd.grad(loss, leaves)
    assert_close("o", o_ref, o.float(), tol)
    if final:
        assert S.shape == (N, H, K, V) and S.dtype == torch.float32
        assert_close("final states", S_ref, S, tol)
    else:
        assert S is None
    for name, want, got in zip(["dq", "dk", "dv", "dg", "dh0"], grads_ref, grads):
        assert_close(name, want, got.float(), 2 * tol if name == "dg" else tol)


PACKED = [  # (id, lengths, H, K, V, dtype, options)
    ("ragged-1-63-64-65-200", (1, 63, 64, 65, 200), 2, 16, 16, torch.float32, {"scale": 0.5, "strong": 0.05}),
    ("empty-and-boundary-no-h0", (64, 0, 65, 3), 1, 32, 24, torch.float32, {"with_h0": False}),
    ("no-final-two-V-blocks", (70, 1, 60), 2, 20, 80, torch.float32, {"final": False}),
    ("fp16-ragged", (1, 63, 65, 130), 1, 24, 40, torch.float16, {"strong": 0.05}),
    ("bf16-ragged-K128", (1, 63, 64, 65, 200), 2, 128, 64, torch.bfloat16, {}),
    ("fp16-K-and-V-blocks-short-sequence", (20, 100, 1), 1, 130, 96, torch.float16, {"scale": 0.5, "strong": 0.05}),
]


@pytest.mark.parametrize("lengths,H,K,V,dtype,opts", [c[1:] for c in PACKED], ids=[c[0] for c in PACKED])
def test_packed_sequences_match_each_sequence_alone(device, lengths, H, K, V, dtype, opts):
    """cu_seqlens: o, the N final states and every gradient (dh0 per sequence) equal running each sequence alone,
    with chunks that start at every sequence's start (lengths 63 / 64 / 65 put boundaries inside a 64-chunk)."""
    if dtype == torch.bfloat16 and device == "cpu":
        pytest.skip("bf16 tl.dot is wrong in the Triton interpreter")
    check_packed(lengths, H, K, V, dtype, device, **opts)


def test_packed_and_fixed_length_batches_agree(device):
    """B sequences of length T in a batch, or packed with cu_seqlens: the same o and states."""
    q, k, v, g, h0 = (x.detach() for x in make(3, 70, 2, 16, 16, torch.float32, device))
    o, S = chunk_ssd_triton(q, k, v, g, initial_state=h0, output_final_state=True)
    cu = torch.arange(4, device=device) * 70
    flat = [x.reshape(1, 210, *x.shape[2:]) for x in (q, k, v, g)]
    o_p, S_p = chunk_ssd_triton(*flat, initial_state=h0, output_final_state=True, cu_seqlens=cu)
    assert_close("o", o.reshape(1, 210, 2, 16), o_p, 1e-6)
    assert_close("states", S, S_p, 1e-6)


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([0, 5, 4, 10]), "rise from 0"),
    (torch.tensor([1, 10]), "rise from 0"),
    (torch.tensor([0, 5, 9]), "rise from 0"),  # last != T
    (torch.tensor([0.0, 10.0]), "int32/int64"),
    ([0, 10], "int32/int64"),
    ("B2", "packed into B=1"),
    ("h0-of-B", "state must be \\[N, H, K, V\\] with N=2"),
])
def test_bad_cu_seqlens_is_one_line_error(device, bad, match):
    """The delta-rule ops' checks and messages, from every SSD entry point."""
    from arena.kernels.ssd import chunk_ssd

    B = 2 if bad == "B2" else 1
    q, k, v, g, _ = (x.detach() for x in make(B, 10, 1, 16, 16, torch.float32, device))
    h0 = torch.zeros(1, 1, 16, 16, device=device) if bad == "h0-of-B" else None
    cu = torch.tensor([0, 4, 10]) if isinstance(bad, str) else bad
    for fn in (chunk_ssd_triton, naive_recurrent_ssd, chunk_ssd):
        with pytest.raises(ValueError, match=match) as info:
            fn(q, k, v, g, initial_state=h0, cu_seqlens=cu)
        assert "\n" not in str(info.value)
