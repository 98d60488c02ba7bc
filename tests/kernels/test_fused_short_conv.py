"""The fused short causal conv (arena.kernels.fused.short_conv) against its fp64 PyTorch twin.

    python -m pytest -q tests/kernels/test_fused_short_conv.py                      # CPU: Triton interpreter
    TRITON_INTERPRET=0 python -m pytest -q tests/kernels/test_fused_short_conv.py   # CUDA: compiled, adds bf16

On CPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1) in fp32 and fp16, on
tiny shapes with the launch tiles shrunk so every case spans several row and channel blocks. Every kernel output
is NaN-poisoned before launch (ARENA_TRITON_POISON=1), so an element no program writes fails. Each case checks y
and the gradients of x, weight and bias; the twin itself is pinned to an F.conv1d formulation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arena.kernels.fused import short_conv
from arena.kernels.fused.short_conv import causal_conv1d, causal_conv1d_reference
from arena.kernels.triton_delta import interpreting
from arena.testing import assert_close

DEVICE = "cuda" if not interpreting() and torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cpu" and not interpreting(),
                                reason="needs TRITON_INTERPRET=1 (tests/conftest.py sets it) or a CUDA device")
# the interpreter's bf16 is not the GPU's, and the op's point is bf16 on the GPU: bf16 only there
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("ARENA_TRITON_POISON", "1")


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles small enough that tiny tensors span several row blocks, backward chunks and channel blocks."""
    monkeypatch.setattr(short_conv, "FWD_ROWS", 8)
    monkeypatch.setattr(short_conv, "BWD_ROWS", 8)
    monkeypatch.setattr(short_conv, "BWD_BLOCKS", 2)
    monkeypatch.setattr(short_conv, "CHANNEL_BLOCK", 16)


def make(B, T, C, W, bias, cache, dtype, device):
    """x in `dtype`; weight, bias and cache in fp32 (the layer's parameters stay fp32 under autocast)."""
    x = torch.randn(B, T, C, device=device).to(dtype).requires_grad_()
    w = (torch.randn(C, W, device=device) / W ** 0.5).requires_grad_()
    b = torch.randn(C, device=device).requires_grad_() if bias else None
    c = torch.randn(B, W - 1, C, device=device) if cache else None
    return x, w, b, c


def run_both(x, w, b, c, act, K, dy=None):
    """(y, grads) of the op and of the fp64 twin on the same values, for the loss sum(y * dy)."""
    params = [p for p in (x, w, b) if p is not None]
    y = causal_conv1d(x, w, b, activation=act, norm_head_dim=K, initial_cache=c)
    dy = torch.randn(y.shape, device=y.device) if dy is None else dy
    grads = torch.autograd.grad((y.double() * dy).sum(), params)
    as64 = [None if t is None else t.detach().double().requires_grad_() for t in (x, w, b)]
    y_ref = causal_conv1d_reference(*as64, activation=act, norm_head_dim=K,
                                    initial_cache=None if c is None else c.double())
    grads_ref = torch.autograd.grad((y_ref * dy).sum(), [p for p in as64 if p is not None])
    return y, grads, y_ref, grads_ref


# B, T, C, W, K (norm_head_dim), bias, activation, initial_cache. With small_tiles: 8 forward rows; backward tiles of
# 8 rows (16 for W = 6), each owning all but its last W-1, 2 per program; 16 channels (or one head) per tile.
CASES = [
    (2, 13, 32, 4, 16, True, True, True),       # the layer's q/k path: T not a multiple of any row block
    (2, 17, 40, 4, None, True, True, False),    # C not a multiple of the channel block, several backward chunks
    (2, 13, 40, 2, None, False, False, True),   # plain conv, W = 2, with a cache
    (2, 9, 32, 1, 16, True, True, False),       # W = 1: no halo at all
    (3, 2, 32, 4, 8, False, True, True),        # T < W: the cache reaches past the block's first row
    (1, 3, 24, 4, 12, True, True, True),        # K = 12 not a power of two (masked head tile), T < W
    (2, 11, 32, 2, 16, False, False, False),    # norm without activation
    (2, 9, 16, 6, None, True, True, True),      # W = 6: taps past the 4 with deferred dweight sums
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}-T{}-C{}-W{}-K{}-bias{:d}-act{:d}-cache{:d}".format(*c))
def test_matches_reference(case, dtype, device, small_tiles):
    B, T, C, W, K, bias, act, cache = case
    x, w, b, c = make(B, T, C, W, bias, cache, dtype, device)
    y, grads, y_ref, grads_ref = run_both(x, w, b, c, act, K)
    assert y.dtype == dtype and y.shape == (B, T, C) and y.is_contiguous()
    tol = TOL[dtype]
    assert_close("y", y_ref, y, tol)
    for name, g, g_ref in zip(("dx", "dweight", "dbias"), grads, grads_ref):
        assert_close(name, g_ref, g, tol)
    assert grads[0].dtype == dtype and grads[1].dtype == torch.float32


@pytest.mark.parametrize("K", [None, 16])
def test_default_tiles(K, device):
    """The shipped launch shapes (short_conv.FWD_ROWS etc.): T spans several forward and backward tiles."""
    x, w, b, c = make(2, 70, 32, 4, True, True, torch.float32, device)
    y, grads, y_ref, grads_ref = run_both(x, w, b, c, True, K)
    assert_close("y", y_ref, y, TOL[torch.float32])
    for name, g, g_ref in zip(("dx", "dweight", "dbias"), grads, grads_ref):
        assert_close(name, g_ref, g, TOL[torch.float32])


@pytest.mark.filterwarnings("ignore:overflow encountered")  # the interpreter's exp of the huge sequence
@pytest.mark.parametrize("K", [None, 16])
def test_no_leak_across_sequences(K, device, small_tiles):
    """Sequence 1 is huge in x (forward) and dy (backward): sequences 0 and 2 must match the twin run on them
    alone. A forward halo reaching before t = 0 shows in y[2], a backward halo reaching past T-1 in dx[0]."""
    B, T, C, W = 3, 10, 32, 4
    x, w, b, _ = make(B, T, C, W, True, False, torch.float32, device)
    with torch.no_grad():
        x[1] *= 1e6
    dy = torch.randn(B, T, C, device=device, dtype=torch.float64)
    dy[1] *= 1e6
    y = causal_conv1d(x, w, b, activation=True, norm_head_dim=K)
    (dx,) = torch.autograd.grad((y.double() * dy).sum(), [x])
    for n in (0, 2):
        xn = x[n: n + 1].detach().double().requires_grad_()
        y_ref = causal_conv1d_reference(xn, w.double(), b.double(), activation=True, norm_head_dim=K)
        (dx_ref,) = torch.autograd.grad((y_ref * dy[n: n + 1]).sum(), [xn])
        assert_close(f"y[{n}]", y_ref[0], y[n], 1e-5)
        assert_close(f"dx[{n}]", dx_ref[0], dx[n], 1e-5)


def test_cache_with_grad_routes_to_twin(device, small_tiles):
    """A cache that requires grad (a graph carried across calls) gets its gradient from the twin."""
    x, w, b, c = make(2, 5, 32, 4, True, True, torch.float32, device)
    c.requires_grad_()
    y = causal_conv1d(x, w, b, norm_head_dim=16, initial_cache=c)
    dy = torch.randn(y.shape, device=device)
    dc, dx = torch.autograd.grad((y * dy).sum(), [c, x])
    c64, x64 = c.detach().double().requires_grad_(), x.detach().double().requires_grad_()
    y_ref = causal_conv1d_reference(x64, w.double(), b.double(), norm_head_dim=16, initial_cache=c64)
    dc_ref, dx_ref = torch.autograd.grad((y_ref * dy.double()).sum(), [c64, x64])
    assert_close("y", y_ref, y, 1e-5)
    assert_close("dcache", dc_ref, dc, 1e-5)
    assert_close("dx", dx_ref, dx, 1e-5)


def conv1d_formulation(x, w, b, act, K, eps, cache):
    """The twin's math through F.conv1d (a cross-correlation over time, groups = C), written independently."""
    B, T, C = x.shape
    W = w.shape[1]
    xt = x.transpose(1, 2)  # [B, C, T]
    xt = F.pad(xt, (W - 1, 0)) if cache is None else torch.cat([cache.transpose(1, 2), xt], dim=2)
    y = F.conv1d(xt, w.unsqueeze(1), b, groups=C).transpose(1, 2)  # [B, T, C]
    if act:
        y = y / (1 + torch.exp(-y))
    if K is not None:
        heads = y.reshape(B, T, C // K, K)
        y = (heads / torch.sqrt((heads * heads).sum(-1, keepdim=True) + eps)).reshape(B, T, C)
    return y


@pytest.mark.parametrize("W,K,bias,act,cache", [(4, 8, True, True, True), (4, None, False, True, False),
                                                (2, 16, True, False, False), (1, None, True, False, True),
                                                (3, 4, False, True, True)])
def test_reference_matches_conv1d(W, K, bias, act, cache):
    """Pins the twin (values and autograd gradients, including the cache's) in fp64 on CPU."""
    B, T, C, eps = 2, 7, 16, 1e-6
    x = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    w = torch.randn(C, W, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C, dtype=torch.float64, requires_grad=True) if bias else None
    c = torch.randn(B, W - 1, C, dtype=torch.float64, requires_grad=True) if cache else None
    inputs = [t for t in (x, w, b, c) if t is not None]
    y_ref = causal_conv1d_reference(x, w, b, activation=act, norm_head_dim=K, eps=eps, initial_cache=c)
    y_ind = conv1d_formulation(x, w, b, act, K, eps, c)
    torch.testing.assert_close(y_ref, y_ind, rtol=1e-12, atol=1e-12)
    dy = torch.randn(B, T, C, dtype=torch.float64)
    g_ref = torch.autograd.grad((y_ref * dy).sum(), inputs)
    g_ind = torch.autograd.grad((y_ind * dy).sum(), inputs)
    for a, e in zip(g_ref, g_ind):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=(2, 5)), "x must be"),
    (dict(weight=(32, 4, 1)), "weight must be"),
    (dict(weight=(16, 4)), "weight must be"),
    (dict(bias=(16,)), "bias must be"),
    (dict(norm_head_dim=12), "norm_head_dim must be"),
    (dict(norm_head_dim=0), "norm_head_dim must be"),
    (dict(initial_cache=(2, 4, 32)), "initial_cache must be"),
])
def test_bad_shapes(kwargs, match):
    shapes = dict(x=(2, 5, 32), weight=(32, 4), bias=None, initial_cache=None)
    shapes.update({k: v for k, v in kwargs.items() if k != "norm_head_dim"})
    t = {k: None if v is None else torch.randn(v) for k, v in shapes.items()}
    for fn in (causal_conv1d, causal_conv1d_reference):
        with pytest.raises(ValueError, match=match):
            fn(t["x"], t["weight"], t["bias"], norm_head_dim=kwargs.get("norm_head_dim"),
               initial_cache=t["initial_cache"])


def test_bad_dtype_and_head():
    with pytest.raises(ValueError, match="dtype"):
        causal_conv1d(torch.randn(1, 3, 8, dtype=torch.float64), torch.randn(8, 2))
    with pytest.raises(ValueError, match="exceeds"):
        causal_conv1d(torch.randn(1, 3, 512), torch.randn(512, 2), norm_head_dim=512)
