"""Equation-level references for the KDA, Gated DeltaNet and Mamba2 layers, written from the papers.

The agreement tests elsewhere compare two impls of one layer, so they share every bug outside the kernels. Here
each layer is checked against its published equations, computed token by token in plain float64 PyTorch from the
layer's parameters, read by their state_dict names: projections as matrix products, the short causal convolutions
as sums over past tokens, every activation and normalisation from its definition, the recurrence as a dense
per-head update. Nothing here imports arena's mixer or kernel code; the layer is reached only through
`build_mixer` and its call `layer(x, state) -> (y, state)`.

KDA (Kimi Linear, arXiv 2510.26692, Eq. 1 and §4), per token t and head h; K = head_dim, V = expand_v * K:
    q_t = l2norm(silu(conv(W_q x)_t)),  k_t = l2norm(silu(conv(W_k x)_t)),  v_t = silu(conv(W_v x)_t)
    g_t = -exp(A_log[h]) * softplus(W_fb W_fa x_t + dt_bias)              one decay per key channel, [K]
        (gate=bounded, fla's safe gate: g_t = gate_lower_bound * sigmoid(exp(A_log[h]) * (W_fb W_fa x_t + dt_bias)))
    beta_t = sigmoid(w_b x_t)                                           times 2 with allow_neg_eigval
    S_t = (I - beta_t k_t k_t^T) Diag(exp g_t) S_{t-1} + beta_t k_t v_t^T,     o_t = S_t^T q_t / sqrt(K)
    y_t = W_o concat_h [RMSNorm(o_t) * w * sigmoid(W_gb W_ga x_t)]
Gated DeltaNet (arXiv 2412.06464): the same q, k, v and beta, one scalar decay per head and an output gate silu:
    g_t = -exp(A_log[h]) * softplus(w_a x_t + dt_bias[h])                 one scalar per head (decay=False: 0)
    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T q_t / sqrt(K)
    y_t = W_o concat_h [RMSNorm(o_t) * w * silu(W_g x_t)]
Mamba2 (SSD, arXiv 2405.21060), head h in group h // (H / G); P = headdim, N = d_state:
    [z | xBC | dt] = W_in x + b_in,   [x | B | C] = silu(conv(xBC) + b_conv),   dt = softplus(dt + dt_bias[h])
    h_t = exp(-dt_t exp(A_log[h])) h_{t-1} + dt_t x_t B_t^T  [P, N],    y_t = h_t C_t + D[h] x_t
    out = W_out [RMSNorm_per_group(y * silu(z)) * w] + b_out                 (gate before the norm)
Conventions the layers share with fla and mamba_ssm: l2norm(x) = x / sqrt(sum x^2 + 1e-6); RMSNorm(x) =
x / sqrt(mean x^2 + eps); a conv weight is nn.Conv1d's [C, 1, k] over the left-padded input, so its last tap
multiplies the current token; the returned recurrent state is S_T ([B, H, K, V]) or h_T^T ([B, H, N, P]).

Checked, per layer and config variant (each variant changes the equations): every CPU impl in fp64 to 1e-10
relative, outputs and final state; decoding in pieces (one token at a time included) from the returned state;
gradients with respect to the input and every parameter; and the Triton paths (impl=triton, fused=on) under the
interpreter in fp32. Parameters are randomised away from their init first, so a swapped or sign-flipped parameter
cannot hide behind zeros or ones. scripts/mutate_mixers.py plants bugs in a copy of the layers and shows that
these tests catch each one.

Run: python -m pytest -q tests/mixers/test_layer_references.py
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import pytest
import torch

from arena.mixers import build_mixer, get_mixer
from arena.testing import assert_close

D_MODEL = 16
T = 21  # odd, past the torch delta-rule path's 16-token chunk, and not a multiple of Mamba2's chunk_size below
RATIO = 1e-10  # fp64 on both sides
INTERPRETER_RATIO = 1e-4  # fp32 Triton kernels (interpreter) against the fp64 reference


# --------------------------------------------------------------------------- the functions, from their definitions

def sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def silu(x):
    return x * sigmoid(x)


def softplus(x):
    return torch.log1p(torch.exp(x))


def l2norm(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def rms_norm(x, weight, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def causal_conv(u, weight, bias=None):
    """u [B, T, C], weight [C, 1, k]: y_t = b + sum_j w[k-1-j] u_{t-j} over the taps that reach back to token 0."""
    k = weight.shape[-1]
    w = weight[:, 0, :]
    out = []
    for t in range(u.shape[1]):
        acc = torch.zeros_like(u[:, 0]) if bias is None else bias.expand_as(u[:, 0])
        for j in range(min(k, t + 1)):
            acc = acc + w[:, k - 1 - j] * u[:, t - j]
        out.append(acc)
    return torch.stack(out, dim=1)


def params(layer, expected: set[str]) -> dict:
    """The layer's parameters by name; any parameter the reference does not know about fails here."""
    found = dict(layer.named_parameters())
    assert set(found) == expected, f"parameters changed: extra {set(found) - expected}, missing {expected - set(found)}"
    return found


# --------------------------------------------------------------------------- the references

def delta_rule_inputs(layer, x, P):
    """q, k [B, T, H, K] and v [B, T, H, V] of KDA and GDN: projection, short conv, SiLU, L2 norm of q and k."""
    cfg, (B, T, _) = layer.cfg, x.shape
    H = cfg.num_heads
    K = cfg.head_dim or layer.d_model // H
    V = round(cfg.expand_v * K)

    def branch(name, width, normalise):
        u = silu(causal_conv(x @ P[f"qkv.{name}_proj.weight"].T, P[f"qkv.{name}_conv.conv.weight"]))
        u = u.reshape(B, T, H, width)
        return l2norm(u) if normalise else u

    return branch("q", K, True), branch("k", K, True), branch("v", V, False), (B, T, H, K, V)


def kda_reference(layer, x):
    P = params(layer, {"qkv.q_proj.weight", "qkv.k_proj.weight", "qkv.v_proj.weight", "qkv.q_conv.conv.weight",
                       "qkv.k_conv.conv.weight", "qkv.v_conv.conv.weight", "f_a.weight", "f_b.weight", "A_log",
                       "dt_bias", "b_proj.weight", "g_a.weight", "g_b.weight", "o_norm.norm.weight", "o_proj.weight"})
    cfg = layer.cfg
    q, k, v, (B, T, H, K, V) = delta_rule_inputs(layer, x, P)
    raw = (x @ P["f_a.weight"].T @ P["f_b.weight"].T + P["dt_bias"]).reshape(B, T, H, K)
    rate = torch.exp(P["A_log"])[:, None]  # [H, 1]
    if cfg.gate == "bounded":  # fla's lower-bound ("safe") gate, in (gate_lower_bound, 0)
        g = cfg.gate_lower_bound * sigmoid(rate * raw)
    else:
        g = -rate * softplus(raw)  # [B, T, H, K]
    beta = sigmoid(x @ P["b_proj.weight"].T) * (2.0 if cfg.allow_neg_eigval else 1.0)  # [B, T, H]
    gate = sigmoid(x @ P["g_a.weight"].T @ P["g_b.weight"].T).reshape(B, T, H, V)
    eye = torch.eye(K, dtype=x.dtype)
    S = [x.new_zeros(B, K, V) for _ in range(H)]
    ys = []
    for t in range(T):
        heads = []
        for h in range(H):
            kt, bt = k[:, t, h, :, None], beta[:, t, h, None, None]  # [B, K, 1], [B, 1, 1]
            transition = (eye - bt * kt @ kt.transpose(1, 2)) @ torch.diag_embed(torch.exp(g[:, t, h]))
            S[h] = transition @ S[h] + bt * kt @ v[:, t, h, None, :]
            o = (S[h].transpose(1, 2) @ q[:, t, h, :, None])[..., 0] / K ** 0.5  # [B, V]
            heads.append(rms_norm(o, P["o_norm.norm.weight"], cfg.norm_eps) * gate[:, t, h])
        ys.append(torch.cat(heads, -1) @ P["o_proj.weight"].T)
    return torch.stack(ys, 1), torch.stack(S, 1)


def gdn_reference(layer, x):
    cfg = layer.cfg
    gate_params = {"a_proj.weight", "A_log", "dt_bias"} if cfg.decay else set()  # decay=False: DeltaNet, no gate
    P = params(layer, {"qkv.q_proj.weight", "qkv.k_proj.weight", "qkv.v_proj.weight", "qkv.q_conv.conv.weight",
                       "qkv.k_conv.conv.weight", "qkv.v_conv.conv.weight", "b_proj.weight", "g_proj.weight",
                       "o_norm.norm.weight", "o_proj.weight"} | gate_params)
    q, k, v, (B, T, H, K, V) = delta_rule_inputs(layer, x, P)
    if cfg.decay:
        alpha = torch.exp(-torch.exp(P["A_log"]) * softplus(x @ P["a_proj.weight"].T + P["dt_bias"]))  # [B, T, H]
    else:
        alpha = x.new_ones(B, T, H)
    beta = sigmoid(x @ P["b_proj.weight"].T) * (2.0 if cfg.allow_neg_eigval else 1.0)  # [B, T, H]
    gate = silu(x @ P["g_proj.weight"].T).reshape(B, T, H, V)
    eye = torch.eye(K, dtype=x.dtype)
    S = [x.new_zeros(B, K, V) for _ in range(H)]
    ys = []
    for t in range(T):
        heads = []
        for h in range(H):
            kt, bt, at = k[:, t, h, :, None], beta[:, t, h, None, None], alpha[:, t, h, None, None]
            S[h] = at * (eye - bt * kt @ kt.transpose(1, 2)) @ S[h] + bt * kt @ v[:, t, h, None, :]
            o = (S[h].transpose(1, 2) @ q[:, t, h, :, None])[..., 0] / K ** 0.5
            heads.append(rms_norm(o, P["o_norm.norm.weight"], cfg.norm_eps) * gate[:, t, h])
        ys.append(torch.cat(heads, -1) @ P["o_proj.weight"].T)
    return torch.stack(ys, 1), torch.stack(S, 1)


def mamba2_reference(layer, x):
    cfg = layer.cfg
    expected = {"in_proj.weight", "conv.conv.weight", "A_log", "dt_bias", "D", "norm_weight", "out_proj.weight"}
    expected |= {"in_proj.bias", "out_proj.bias"} if cfg.bias else set()
    expected |= {"conv.conv.bias"} if cfg.conv_bias else set()
    P = params(layer, expected)
    B, T, _ = x.shape
    d_inner, Pd, G, N = cfg.expand * layer.d_model, cfg.headdim, cfg.ngroups, cfg.d_state
    H = d_inner // Pd
    proj = x @ P["in_proj.weight"].T + (P["in_proj.bias"] if cfg.bias else 0.0)
    z, xBC, dt = proj[..., :d_inner], proj[..., d_inner:2 * d_inner + 2 * G * N], proj[..., 2 * d_inner + 2 * G * N:]
    assert dt.shape[-1] == H
    xBC = silu(causal_conv(xBC, P["conv.conv.weight"], P.get("conv.conv.bias")))
    xs = xBC[..., :d_inner].reshape(B, T, H, Pd)
    Bm = xBC[..., d_inner:d_inner + G * N].reshape(B, T, G, N)
    Cm = xBC[..., d_inner + G * N:].reshape(B, T, G, N)
    dt = softplus(dt + P["dt_bias"])  # [B, T, H]
    A = -torch.exp(P["A_log"])  # [H]
    states = [x.new_zeros(B, Pd, N) for _ in range(H)]
    ys = []
    for t in range(T):
        heads = []
        for h in range(H):
            grp = h // (H // G)
            d = dt[:, t, h, None, None]
            states[h] = torch.exp(d * A[h]) * states[h] + d * xs[:, t, h, :, None] @ Bm[:, t, grp, None, :]
            heads.append((states[h] @ Cm[:, t, grp, :, None])[..., 0] + P["D"][h] * xs[:, t, h])  # [B, P]
        y = torch.cat(heads, -1) * silu(z[:, t])  # [B, d_inner], gated before the norm
        y = torch.cat([rms_norm(part, w, cfg.norm_eps)
                       for part, w in zip(y.chunk(G, -1), P["norm_weight"].chunk(G))], -1)
        ys.append(y @ P["out_proj.weight"].T + (P["out_proj.bias"] if cfg.bias else 0.0))
    return torch.stack(ys, 1), torch.stack(states, 1).transpose(-1, -2)  # state as [B, H, N, P]


# --------------------------------------------------------------------------- layers and variants

REFERENCES = {"kda": kda_reference, "gdn": gdn_reference, "mamba2": mamba2_reference}
STATE_KEY = {"kda": "recurrent", "gdn": "recurrent", "mamba2": "ssm"}
# Config fields that do not change the equations: how they are computed, or only the initial values (which
# `randomise` replaces anyway). Every other field must be read by the reference and varied below.
NOT_EQUATIONS = {"impl", "fused", "chunk_size", "init", "A_init_range", "dt_min", "dt_max", "dt_init_floor",
                 "recompute"}  # Mamba2: what backward keeps, not what it computes (test_mamba2.py)
VARIANTS = {
    "kda": {
        "base": dict(num_heads=2),
        "neg-expand2": dict(num_heads=2, expand_v=2.0, allow_neg_eigval=True),
        "heads3-dim5": dict(num_heads=3, head_dim=5, expand_v=0.6, gate_rank=3, conv_size=2),
        "conv1-eps": dict(num_heads=4, conv_size=1, norm_eps=0.1, gate_rank=6),
        "bounded": dict(num_heads=2, gate="bounded", gate_lower_bound=-3.0),
    },
    "gdn": {
        "base": dict(num_heads=2),
        "neg-expand1": dict(num_heads=2, expand_v=1.0, allow_neg_eigval=True),
        "heads3-dim5": dict(num_heads=3, head_dim=5, expand_v=0.6, conv_size=2),
        "conv1-eps": dict(num_heads=4, conv_size=1, norm_eps=0.1),
        "deltanet-neg": dict(num_heads=2, decay=False, allow_neg_eigval=True),  # Grazzi et al.'s parity layer
    },
    "mamba2": {
        "base": dict(d_state=4, headdim=8, chunk_size=4),  # 4 heads, one group
        "groups2-bias": dict(d_state=4, headdim=8, ngroups=2, bias=True, conv_bias=False, chunk_size=8),
        "groups4-expand1": dict(d_state=3, headdim=4, ngroups=4, expand=1, d_conv=2, norm_eps=0.1, chunk_size=4),
        "headdim16-conv1": dict(d_state=8, headdim=16, d_conv=1, chunk_size=64),  # 2 heads, T inside one chunk
    },
}
CASES = [(name, variant) for name, variants in VARIANTS.items() for variant in variants]
CPU_CASES = [(name, variant, impl) for name, variant in CASES for impl in get_mixer(name).impls if impl != "triton"]


def randomise(layer):
    """Move every parameter away from its init (zeros, ones, symmetric ranges) by noise of its own scale."""
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in layer.parameters():
            std = 0.5 if p.dim() == 1 else 0.5 / p[0].numel() ** 0.5
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return layer


def make(name, variant, dtype=torch.float64, **overrides):
    layer = build_mixer(name, D_MODEL, **VARIANTS[name][variant], **overrides)
    return randomise(layer.to(dtype)).eval()


def inputs(dtype=torch.float64, batch=2):
    return torch.randn(batch, T, D_MODEL, generator=torch.Generator().manual_seed(7), dtype=dtype)


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_config_field_is_in_the_reference_and_varied(name):
    """A Config field that changes the equations must be read by the reference and set off its default by a
    variant; a new field fails here until it is (or is declared in NOT_EQUATIONS)."""
    fields = {f.name: f.default for f in dataclasses.fields(get_mixer(name).Config)}
    varied = {key for overrides in VARIANTS[name].values() for key, value in overrides.items() if value != fields[key]}
    assert set(fields) - NOT_EQUATIONS <= varied, f"{name}: never varied: {set(fields) - NOT_EQUATIONS - varied}"


@pytest.mark.parametrize("name,variant,impl", CPU_CASES, ids=[f"{n}-{v}-{i}" for n, v, i in CPU_CASES])
def test_layer_equals_reference(name, variant, impl):
    layer = make(name, variant, impl=impl, fused="off")
    x = inputs()
    with torch.no_grad():
        y, state = layer(x)
        y_ref, state_ref = REFERENCES[name](layer, x)
    assert_close(f"{name}-{variant}-{impl} y", y_ref, y, RATIO)
    assert_close(f"{name}-{variant}-{impl} final state", state_ref, state[STATE_KEY[name]], RATIO)


@pytest.mark.parametrize("name,variant,impl", CPU_CASES, ids=[f"{n}-{v}-{i}" for n, v, i in CPU_CASES])
def test_decoding_from_the_state_equals_reference(name, variant, impl):
    """Prefill 5 tokens, then 1, then 6 at once, then the rest one at a time (the decode step), each call
    continuing from the state the previous one returned: the pieces equal the reference over the whole sequence."""
    layer = make(name, variant, impl=impl, fused="off")
    x = inputs()
    cuts = [0, 5, 6, 12, *range(13, T + 1)]
    pieces, state = [], None
    with torch.no_grad():
        for a, b in zip(cuts, cuts[1:]):
            y, state = layer(x[:, a:b], state)
            pieces.append(y)
        y_ref, state_ref = REFERENCES[name](layer, x)
    assert_close(f"{name}-{variant}-{impl} decoded", y_ref, torch.cat(pieces, 1), RATIO)
    assert_close(f"{name}-{variant}-{impl} final state", state_ref, state[STATE_KEY[name]], RATIO)


GRAD_CASES = [(name, variant, impl) for name, variant, impl in CPU_CASES if impl != "auto"]  # auto is torch on CPU


@pytest.mark.parametrize("name,variant,impl", GRAD_CASES, ids=[f"{n}-{v}-{i}" for n, v, i in GRAD_CASES])
def test_gradients_equal_reference(name, variant, impl):
    """d(y . dy)/dx and /d(every parameter), through the layer's kernels and through the reference's loops."""
    layer = make(name, variant, impl=impl, fused="off")
    x = inputs().requires_grad_()
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(11), dtype=x.dtype)
    names, leaves = zip(*layer.named_parameters())
    got = torch.autograd.grad((layer(x)[0] * dy).sum(), [x, *leaves])
    want = torch.autograd.grad((REFERENCES[name](layer, x)[0] * dy).sum(), [x, *leaves])
    for label, w, g in zip(["x", *names], want, got):
        assert_close(f"{name}-{variant}-{impl} d{label}", w, g, RATIO)


def _triton_runs() -> bool:
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")  # tests/conftest.py sets it on CPU
    return importlib.util.find_spec("triton") is not None and (interpreting or torch.cuda.is_available())


TRITON_CASES = [("kda", "base"), ("kda", "heads3-dim5"), ("gdn", "neg-expand1"), ("mamba2", "groups2-bias")]


@pytest.mark.skipif(not _triton_runs(), reason="needs Triton with its interpreter (TRITON_INTERPRET=1) or CUDA")
@pytest.mark.parametrize("name,variant", TRITON_CASES, ids=[f"{n}-{v}" for n, v in TRITON_CASES])
def test_triton_paths_equal_reference(name, variant):
    """impl=triton and fused=on (the Triton sequence kernels and the fused conv / norm / gate ops), in fp32
    (interpreter on CPU), against the fp64 reference on the same weights: outputs, decoding and dx."""
    device = "cpu" if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else "cuda"
    layer = make(name, variant, dtype=torch.float32, impl="triton", fused="on").to(device)
    ref_layer = make(name, variant)  # the same randomised weights, in fp64
    ref_layer.load_state_dict(layer.state_dict())
    x64 = inputs().requires_grad_()
    dy = torch.randn(x64.shape, generator=torch.Generator().manual_seed(11), dtype=x64.dtype)
    y_ref = REFERENCES[name](ref_layer, x64)[0]
    (dx_ref,) = torch.autograd.grad((y_ref * dy).sum(), x64)
    x = x64.detach().float().to(device).requires_grad_()
    y, _ = layer(x)
    (dx,) = torch.autograd.grad((y * dy.float().to(device)).sum(), x)
    assert_close(f"{name}-{variant} triton y", y_ref, y.cpu(), INTERPRETER_RATIO)
    assert_close(f"{name}-{variant} triton dx", dx_ref, dx.cpu(), INTERPRETER_RATIO)
    with torch.no_grad():
        y1, state = layer(x[:, :12])
        y2, state = layer(x[:, 12:13], state)
        y3, _ = layer(x[:, 13:], state)
    assert_close(f"{name}-{variant} triton decoded", y_ref, torch.cat([y1, y2, y3], 1).cpu(), INTERPRETER_RATIO)
