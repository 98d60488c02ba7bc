"""The chunkwise Triton kernels (arena.kernels.triton_delta) against the fp32 token-loop oracle, on CPU.

    python -m pytest -q tests/kernels/test_triton_chunk.py

They run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported), in fp32
and fp16 only: the interpreter's bf16 `tl.dot` is wrong. Every output is NaN-poisoned before launch, and every
case checks the output, the final state and the gradients of q, k, v, g, beta and the initial state.
The GPU twin of this file is scripts/validate_triton_gpu.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from arena.kernels import gated_delta_rule as gdn_ops
from arena.kernels import kda as kda_ops
from arena.kernels.triton_delta import interpreting
from arena.testing import assert_close

pytestmark = pytest.mark.skipif(not interpreting(), reason="set TRITON_INTERPRET=1 (tests/conftest.py does)")

OPS = {"kda": (kda_ops.chunk_kda, kda_ops.naive_recurrent_kda),
       "gdn": (gdn_ops.chunk_gated_delta_rule, gdn_ops.naive_recurrent_gated_delta_rule)}
TOL = {torch.float32: 1e-4, torch.float16: 5e-3}


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("ARENA_TRITON_POISON", "1")


def make(op, B, T, H, K, V, dtype, gate_min=None, n_states=None, beta_scale=1.0, spikes=0.0):
    """q, k L2-normalized; gates logsigmoid(randn) or uniform in [gate_min, 0], a fraction `spikes` of them set
    to -1000 (a full reset); fp32 gates, beta and state."""
    q = F.normalize(torch.randn(B, T, H, K), dim=-1).to(dtype)
    k = F.normalize(torch.randn(B, T, H, K), dim=-1).to(dtype)
    v = torch.randn(B, T, H, V).to(dtype)
    g_shape = (B, T, H, K) if op == "kda" else (B, T, H)
    g = F.logsigmoid(torch.randn(g_shape)) if gate_min is None else torch.rand(g_shape) * gate_min
    g = torch.where(torch.rand(g_shape) < spikes, -1000.0, g)
    beta = torch.randn(B, T, H).sigmoid() * beta_scale
    h0 = torch.randn(n_states or B, H, K, V)
    return [x.requires_grad_() for x in (q, k, v, g, beta, h0)]


def grads(out, inputs, do, dS):
    o, S = out
    loss = (o.float() * do).sum() + ((S * dS).sum() if S is not None else 0)
    return torch.autograd.grad(loss, [x for x in inputs if x is not None], allow_unused=True)


def check(op, inputs, dtype, neg=False, with_h0=True, final=True, cu_seqlens=None, tol=None):
    chunk, naive = OPS[op]
    q, k, v, g, beta, h0 = inputs
    h0 = h0 if with_h0 else None
    tri = chunk(q, k, v, g, beta, initial_state=h0, output_final_state=final, allow_neg_eigval=neg,
                backend="triton", cu_seqlens=cu_seqlens)
    do = torch.randn(tri[0].shape)
    dS = torch.randn(tri[1].shape) if final else None
    # the oracle: the fp32 token loop, one sequence at a time for packed inputs
    up = [x.float() for x in (q, k, v, g, beta)]
    bounds = [0, q.shape[1]] if cu_seqlens is None else cu_seqlens.tolist()
    outs, states = [], []
    for n, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0_n = None if h0 is None else (h0 if cu_seqlens is None else h0[n:n + 1])
        o_n, S_n = naive(*(x[:, bos:eos] for x in up), initial_state=h0_n, output_final_state=True,
                         allow_neg_eigval=neg)
        outs.append(o_n)
        states.append(S_n)
    ref = (torch.cat(outs, 1), torch.cat(states, 0) if final else None)
    tol = tol or TOL[dtype]
    assert tri[0].dtype == v.dtype
    assert_close("o", ref[0], tri[0].float(), tol)
    if final:
        assert tri[1].dtype == torch.float32
        assert_close("final state", ref[1], tri[1], tol)
    names = ["dq", "dk", "dv", "dg", "dbeta", "dh0"][: 6 if h0 is not None else 5]
    ins = [q, k, v, g, beta] + ([h0] if h0 is not None else [])
    for name, want, got in zip(names, grads(ref, ins, do, dS), grads(tri, ins, do, dS)):
        assert_close(name, want, got.float(), tol if name != "dg" else 2 * tol)


CASES = [  # (id, op, B, T, H, K, V, dtype, options)
    ("kda-T70-K32V16", "kda", 1, 70, 1, 32, 16, torch.float32, {}),
    ("gdn-T129-K32V16", "gdn", 1, 129, 1, 32, 16, torch.float32, {}),
    ("kda-B2H2-T40-K48V24-no-h0", "kda", 2, 40, 2, 48, 24, torch.float32, {"with_h0": False}),
    ("kda-T65-neg-eig-gates-to-30", "kda", 1, 65, 1, 16, 32, torch.float32, {"neg": True, "gate_min": -30.0}),
    ("gdn-T64-K256V20-gates-of-1000", "gdn", 1, 64, 1, 256, 20, torch.float32, {"spikes": 0.1, "tol": 1e-3}),
    ("kda-T80-K20V40-gates-of-1000", "kda", 1, 80, 1, 20, 40, torch.float32, {"spikes": 0.1}),
    ("kda-fp16-T100-K32V32", "kda", 1, 100, 1, 32, 32, torch.float16, {"gate_min": -5.0}),
    ("gdn-fp16-T1-no-final", "gdn", 2, 1, 2, 32, 64, torch.float16, {"final": False}),
    ("kda-beta-near-0", "kda", 1, 33, 1, 16, 16, torch.float32, {"beta_scale": 1e-3}),
]


# Issue 15: V of 32 or less beside K of 48 or 64 crashed on an H200 (a Triton miscompile of narrow V tiles;
# _blocks now keeps every V tile 64 wide). Here the same shapes, fixed-length and packed, run the masked wide tiles.
SMALL_V_CASES = [
    ("kda-K64V32", "kda", 1, 70, 1, 64, 32, torch.float32, {}),
    ("gdn-fp16-K64V32-packed", "gdn", 1, 70, 1, 64, 32, torch.float16, {"cu_seqlens": (0, 30, 70)}),
    ("kda-fp16-K48V32-packed", "kda", 1, 70, 1, 48, 32, torch.float16, {"cu_seqlens": (0, 5, 70)}),
    ("gdn-K48V32", "gdn", 1, 70, 1, 48, 32, torch.float32, {}),
    ("kda-K64V16", "kda", 1, 70, 1, 64, 16, torch.float32, {}),
    ("gdn-fp16-K64V16", "gdn", 1, 70, 1, 64, 16, torch.float16, {}),
    ("gdn-K32V16-packed", "gdn", 1, 70, 1, 32, 16, torch.float32, {"cu_seqlens": (0, 64, 70)}),
]


@pytest.mark.parametrize("op,B,T,H,K,V,dtype,opts", [c[1:] for c in CASES + SMALL_V_CASES],
                         ids=[c[0] for c in CASES + SMALL_V_CASES])
def test_chunk_matches_oracle(op, B, T, H, K, V, dtype, opts):
    make_opts = {key: opts.pop(key) for key in ("gate_min", "beta_scale", "spikes") if key in opts}
    if "cu_seqlens" in opts:
        opts["cu_seqlens"] = torch.tensor(opts["cu_seqlens"])
        make_opts["n_states"] = len(opts["cu_seqlens"]) - 1
    check(op, make(op, B, T, H, K, V, dtype, **make_opts), dtype, **opts)


def test_every_v_tile_is_at_least_64_wide():
    """The issue-15 fix: no launch gets a V tile narrower than 64 (narrower ones crash Triton 3.6 on Hopper),
    and the K tile still covers K."""
    from arena.kernels.triton_delta import chunk as tri_chunk

    for K in (1, 16, 32, 48, 64, 80, 96, 128, 192, 256):
        for V in (1, 16, 32, 48, 64, 80, 96, 128, 192, 256):
            b = tri_chunk._blocks(K, V)
            assert min(b["BV_state"], b["BV_fwd"], b["BV_bwd"]) >= 64, (K, V, b)
            assert b["BV_fwd"] >= V and b["BK"] >= K, (K, V, b)


@pytest.mark.parametrize("K,V", [(320, 32), (64, 288)])
def test_head_dims_past_256_fall_back_before_any_launch(monkeypatch, K, V):
    """An unsupported (K, V) never reaches the kernels: the op runs torch with one warning, and the Triton entry
    point refuses it with a one-line ConfigError if called directly."""
    import arena.kernels._dispatch as dispatch
    from arena.errors import ConfigError
    from arena.kernels.triton_delta import chunk as tri_chunk

    direct = tri_chunk.chunk_delta_rule_triton
    q, k, v, g, beta, _ = make("kda", 1, 6, 1, K, V, torch.float32)
    with pytest.raises(ConfigError, match=rf"head dims from 1 to 256 are supported, got K={K}, V={V}"):
        direct(q, k, v, g, beta, scale=1.0)

    def no_launch(*args, **kwargs):
        raise AssertionError("the Triton path was called with an unsupported head dim")

    monkeypatch.setattr(tri_chunk, "chunk_delta_rule_triton", no_launch)
    monkeypatch.setattr(dispatch, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        o1, _ = kda_ops.chunk_kda(q, k, v, g, beta, backend="triton")
        kda_ops.chunk_kda(q, k, v, g, beta, backend="triton")
    fallbacks = [str(w.message) for w in caught if "falling back to the torch path" in str(w.message)]
    assert len(fallbacks) == 1 and f"K={K}, V={V}" in fallbacks[0]
    assert_close("fallback output", kda_ops.chunk_kda(q, k, v, g, beta, backend="torch")[0], o1, 1e-6)


@pytest.mark.parametrize("op", ["kda", "gdn"])
def test_packed_sequences_do_not_leak(op):
    """cu_seqlens with an empty sequence, one shorter than a chunk and one spanning chunks; zero gates, so any
    state leaking from one sequence into the next would be large."""
    cu = torch.tensor([0, 5, 5, 75, 100])
    inputs = make(op, 1, 100, 2, 16, 16, torch.float32, gate_min=-0.0, n_states=4)
    check(op, inputs, torch.float32, cu_seqlens=cu)


def block_spreads(g: torch.Tensor, slice_width: int = 64) -> torch.Tensor:
    """Per (chunk, 16-row block, head, K slice): how far the chunk-local cumulative gates fall from the block's first
    row to its last, the quantity the KDA block kernels compare with KDA_FAST_RANGE (g: [1, T, H, K])."""
    T = g.shape[1]
    spreads = []
    for t0 in range(0, T, 64):
        G = g[0, t0:t0 + 64].cumsum(0)
        for r0 in range(0, G.shape[0], 16):
            rows = G[r0:r0 + 16]
            for d0 in range(0, G.shape[-1], slice_width):
                spreads.append((rows[0, :, d0:d0 + slice_width] - rows[-1, :, d0:d0 + slice_width]).amax(-1))
    return torch.stack(spreads)


def test_kda_fast_and_exact_block_paths_in_one_call():
    """KDA blocks whose gates span at most KDA_FAST_RANGE take their own rows through tensor cores, the others the
    exact column loop. Two rows of full resets in the first K slice only (K = 80: slices of 64 and 16) put some
    (block, slice) pairs on each side of the threshold in one call; both must match the oracle."""
    from arena.kernels.triton_delta import chunk as tri_chunk

    torch.manual_seed(1)
    q, k, v, g, beta, h0 = make("kda", 1, 130, 2, 80, 16, torch.float32)
    with torch.no_grad():
        g[0, [20, 100], :, :64] = -1000.0
    spreads = block_spreads(g.detach())
    assert (spreads > tri_chunk.KDA_FAST_RANGE).any() and (spreads <= tri_chunk.KDA_FAST_RANGE).any()
    check("kda", [q, k, v, g, beta, h0], torch.float32)


@pytest.mark.parametrize("fast_range", [0.0, 80.0], ids=["all-blocks-exact-loop", "all-blocks-tensor-cores"])
def test_kda_block_paths_agree_when_forced(monkeypatch, fast_range):
    """Gates uniform in [-5, 0] (spans of about 20 to 70 per block) run correctly through either path alone; with
    no gate exactly 0, a range of 0 sends every block through the exact loop."""
    from arena.kernels.triton_delta import chunk as tri_chunk

    monkeypatch.setattr(tri_chunk, "KDA_FAST_RANGE", fast_range)
    torch.manual_seed(2)
    inputs = make("kda", 1, 100, 1, 32, 16, torch.float32, gate_min=-5.0)
    spreads = block_spreads(inputs[3].detach())
    assert (spreads > 0).all() if fast_range == 0 else (spreads <= fast_range).all()
    check("kda", inputs, torch.float32)


def test_triton_matches_torch_backend_for_the_kda_mixer():
    from arena.mixers import build_mixer

    torch.manual_seed(0)
    fast = build_mixer("kda", 32, impl="triton", num_heads=2)
    slow = build_mixer("kda", 32, impl="torch", num_heads=2)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 70, 32)
    assert_close("mixer output", slow(x)[0], fast(x)[0], 1e-4)


def test_missing_triton_path_falls_back_with_one_warning(monkeypatch):
    import arena.kernels._dispatch as dispatch

    monkeypatch.delenv("TRITON_INTERPRET")  # CPU tensors without the interpreter: Triton cannot run them
    monkeypatch.setattr(dispatch, "_warned", set())
    q, k, v, g, beta, _ = make("kda", 1, 8, 1, 16, 16, torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        o1, _ = kda_ops.chunk_kda(q, k, v, g, beta, backend="triton")
        kda_ops.chunk_kda(q, k, v, g, beta, backend="triton")
    assert len([w for w in caught if "falling back to the torch path" in str(w.message)]) == 1
    assert_close("fallback output", kda_ops.chunk_kda(q, k, v, g, beta, backend="torch")[0], o1, 1e-6)


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([0, 5, 4, 10]), "rise from 0"),
    (torch.tensor([1, 10]), "rise from 0"),
    (torch.tensor([0.0, 10.0]), "int32/int64"),
])
def test_bad_cu_seqlens_is_one_line_error(bad, match):
    q, k, v, g, beta, _ = make("kda", 1, 10, 1, 16, 16, torch.float32)
    with pytest.raises(ValueError, match=match):
        kda_ops.chunk_kda(q, k, v, g, beta, cu_seqlens=bad)


GUARD = 4096  # elements of sentinel on each side of every buffer
SENTINEL = -7777.0


class _GuardedTorch:
    """Stands in for `torch` inside arena.kernels.triton_delta.chunk: every float buffer it allocates (outputs and
    scratch) sits between two bands of SENTINEL, remembered in `buffers` for the check after the call."""

    def __init__(self, buffers: list):
        self.buffers = buffers

    def __getattr__(self, name):
        return getattr(torch, name)

    def guarded(self, shape, dtype, fill):
        n = int(torch.Size(shape).numel())
        flat = torch.full((n + 2 * GUARD,), SENTINEL, dtype=dtype)
        flat[GUARD:GUARD + n] = fill
        self.buffers.append((flat, n))
        return flat[GUARD:GUARD + n].view(shape)

    def empty(self, shape, dtype=None, device=None):
        return self.guarded(shape, dtype, 0.0)

    def full(self, shape, value, dtype=None, device=None):
        return self.guarded(shape, dtype, value)


@pytest.mark.parametrize("op,K,V,cu", [("kda", 64, 32, None), ("gdn", 48, 16, (0, 20, 70))])
def test_small_v_stores_stay_inside_their_buffers(monkeypatch, op, K, V, cu):
    """Issue 15's shapes: the 64-wide V tiles mask their unused columns, so no store of any launch lands outside
    its buffer (a guard band changed) and no load reads outside (a sentinel read would spoil the result)."""
    from arena.kernels.triton_delta import chunk as tri_chunk

    buffers: list = []
    fake = _GuardedTorch(buffers)
    monkeypatch.setattr(tri_chunk, "torch", fake)
    monkeypatch.setattr(tri_chunk, "output_buffer", lambda shape, dtype, device: fake.full(shape, float("nan"), dtype))
    inputs = make(op, 1, 70, 2, K, V, torch.float32, n_states=1 if cu is None else len(cu) - 1)
    guarded_inputs = []
    for x in inputs:  # the inputs too, so a read past one meets the sentinel
        g = fake.guarded(x.shape, x.dtype, 0.0)
        g.copy_(x.detach())
        guarded_inputs.append(g.requires_grad_())
    n_inputs = len(buffers)
    check(op, guarded_inputs, torch.float32, cu_seqlens=None if cu is None else torch.tensor(cu))
    assert len(buffers) > n_inputs + 8  # the kernels' buffers came through the guard
    for flat, n in buffers:
        assert (flat[:GUARD] == SENTINEL).all() and (flat[GUARD + n:] == SENTINEL).all()
