"""Parity of arena's KDA, GDN and Mamba2 layers with flash-linear-attention's layers (issue 13, item 3).

    PYTHONPATH=/tmp/fla python scripts/fla_layer_parity.py                # GPU: every case, fp32 and bf16
    PYTHONPATH=/tmp/fla python scripts/fla_layer_parity.py --cpu-smoke    # CPU: the smoke cases, fp32, ~1 min
    ... --layers kda gdn --dtypes fp32 --arena-impls auto torch --seq-len 200 --batch 2 --bf16 cast --all-cases

What it checks, the intended differences and the GPU results: docs/parity.md.

fla is not a dependency of arena (the CI never imports it): put fla-core and flash-linear-attention 0.6.0 and
einops in a folder of their own and name it on PYTHONPATH, e.g.
    pip download --no-deps flash-linear-attention==0.6.0 fla-core==0.6.0 einops -d /tmp/fla_whl
    pip install --no-deps --target /tmp/fla /tmp/fla_whl/*.whl
transformers is not needed: fla.layers' __init__ imports it (through its attention layer), so without it the
script imports the three layer modules directly and gives fla's Mamba2 module a stand-in for the one thing it
takes from transformers (`transformers.utils.logging.get_logger`). Where mamba_ssm imports, fla's Mamba2 runs
its kernels, and (with causal_conv1d, which its forward needs) mamba_ssm's own Mamba2 is a second reference.

Each case is a layer and a config. The script builds arena's layer with `build_mixer` and the reference layer with
the matching constructor arguments (`fla_kwargs`, derived from arena's resolved config), fills every reference
parameter with NaN and copies arena's parameters in through one mapping per layer (`kda_mapping`, `gdn_mapping`,
`mamba2_mapping`; a comment per line names the term). A reference parameter left unset, an arena parameter left
unused or a shape that differs stops the case with the names. Both layers then run on the same x [B, T, D]
(T = 200 by default, not a multiple of the chunk size 64) and upstream gradient dy, and the script compares the
output, dL/dx and every parameter gradient (through the same mapping) with arena.testing.rel_rms_error (relative
RMS error, fla's metric).

The reference is always the fla (or mamba_ssm) layer in fp32, with TF32 off in torch and Triton's fp32 dots in
IEEE precision (TRITON_F32_DEFAULT=ieee, set before Triton is imported; --allow-tf32 leaves both alone).
Tolerances:
    fp32:  out and dx within 1e-5; parameter gradients within 1e-4 (the bar of arena's own fp32 kernel tests):
           A_log and dt_bias are a few numbers per head, each a sum over all B*T tokens, and the order of the
           fp32 additions alone moves them by several 1e-6
    bf16:  arena in bf16 against the fp32 reference: out 5e-3, dx 8e-3, parameter gradients 2e-2 (fla's own
           kernel-test bars: o 0.005; dq, dk, dv 0.008; dg, dbeta 0.02), or twice the error of the reference layer
           itself in bf16, whichever is larger (a layer adds bf16 roundings of its projections, conv and norm to
           the kernel's; the notes column gives the reference's own error). --bf16 autocast (default): fp32
           weights under bf16 autocast, how arena trains; --bf16 cast: both layers cast to bf16, as fla's tests do
arena runs with each of --arena-impls: auto (Triton kernels and fused glue on CUDA; torch on CPU), torch
(chunked PyTorch, fused glue off), naive (token loop, fused glue off), triton (Triton kernels and glue; also runs
under the CPU interpreter).

Known problems of the references, handled here:
- fla 0.6 refuses GDN's gated backward on Hopper with Triton < 3.7.1 (fla#640) unless tilelang is installed: the
  reference's gradients then come from the same layer with fla's naive ops (below), and the notes say so.
- fla 0.6's Mamba2.torch_forward (its path without mamba_ssm) gives head h the B/C group h % G; mamba_ssm's
  kernels and arena give it group h // (H / G). With ngroups > 1 those rows are shown and marked as a
  reference bug, not counted (`known_reference_bug`).

--cpu-smoke: fla's chunk kernels cannot run on CPU, and in Triton's interpreter they fail (a loop index is a
Python int there). The script sets TRITON_INTERPRET=1, so fla's short-conv, L2-norm and gated-norm kernels run
interpreted (each autotuned kernel takes its first config: the interpreter cannot time them), and swaps the chunk
op each fla layer calls for `naive_chunk_kda` / `naive_chunk_gdn`: the in-kernel steps chunk_kda and
chunk_gated_delta_rule document (L2 norm of q and k, the gate from A_log and dt_bias, sigmoid of beta, times 2
with allow_neg_eigval) followed by fla's own token-loop references (fla.ops.kda.naive,
fla.ops.gated_delta_rule.naive). Before the cases, the stand-ins are checked against fla's fused-recurrent Triton
kernels (forward; these do run under the interpreter), so the smoke tests the mapping against fla's code.

Prints: versions and settings, the check of the naive stand-ins, the intended differences (each probed where it
can be: an fla option arena cannot take fails to map, or maps and changes the output), then one markdown table:
layer, reference, config, dtype, arena impl, out / dx / worst parameter-gradient relative RMS error, tolerance,
pass, notes. Exits 1 when a case is over its tolerance or could not run, 2 on bad arguments or a missing fla.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import logging
import os
import sys
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

TOL_FP32 = {"out": 1e-5, "dx": 1e-5, "dW": 1e-4}  # dW: see the docstring
TOL_BF16 = {"out": 5e-3, "dx": 8e-3, "dW": 2e-2}  # fla's test_chunk bars: o; dq/dk/dv; dg/dbeta
REF_FACTOR = 2.0  # bf16: arena may be up to this many times as far from the fp32 reference as the reference's own bf16
LAYERS = ("kda", "gdn", "mamba2")
DTYPES = ("fp32", "bf16")
ARENA_IMPLS = {  # name -> build_mixer overrides
    "auto": {},
    "torch": {"impl": "torch", "fused": "off"},
    "naive": {"impl": "naive", "fused": "off"},
    "triton": {"impl": "triton", "fused": "on"},
}
ZERO = "zero"  # mapping value: a reference parameter arena does not have, set to 0 (its term vanishes)


class MappingError(RuntimeError):
    """arena's parameters do not fit the reference layer: names and shapes in the message."""


# ------------------------------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    layer: str
    config: str  # label for the table
    d_model: int
    arena: dict  # build_mixer overrides
    smoke: bool = False  # in the --cpu-smoke set


CASES = [
    # KDA: expand_v 1 is Kimi's; fla's gate bottleneck is V wide, so expand_v 2 needs gate_rank = V (see DIFFERENCES)
    Case("kda", "H2 K32 V32", 64, dict(num_heads=2), smoke=True),
    Case("kda", "H4 K16 V16", 64, dict(num_heads=4)),
    Case("kda", "H2 K32 V32 neg-eig", 64, dict(num_heads=2, allow_neg_eigval=True)),
    Case("kda", "H2 K32 V64 rank64", 64, dict(num_heads=2, expand_v=2.0, gate_rank=64), smoke=True),
    Case("kda", "H2 K48 V48 (HK != D)", 64, dict(num_heads=2, head_dim=48)),
    # GDN: expand_v 2 is fla's default
    Case("gdn", "H2 K32 V64", 64, dict(num_heads=2, expand_v=2.0), smoke=True),
    Case("gdn", "H4 K16 V16", 64, dict(num_heads=4, expand_v=1.0)),
    Case("gdn", "H2 K32 V64 neg-eig", 64, dict(num_heads=2, expand_v=2.0, allow_neg_eigval=True), smoke=True),
    Case("gdn", "H2 K48 V96 (HK != D)", 64, dict(num_heads=2, head_dim=48, expand_v=2.0)),
    # Mamba2: H = expand * D / P heads of P channels, N-wide B and C shared by the H / G heads of a group
    Case("mamba2", "N16 P16 H8 G1", 64, dict(d_state=16, headdim=16), smoke=True),
    Case("mamba2", "N16 P16 H8 G2", 64, dict(d_state=16, headdim=16, ngroups=2)),
    Case("mamba2", "N32 P32 H4 bias, no conv bias", 64, dict(d_state=32, headdim=32, bias=True, conv_bias=False),
         smoke=True),
    Case("mamba2", "N128 P64 H2 (defaults)", 64, dict()),
]


@dataclass(frozen=True)
class Difference:
    """An fla option arena's layer cannot take (or an arena setting fla's cannot), probed on a mappable case.

    kind "unmappable": the reference built with `fla_extra` (and arena with `arena_extra`) must fail to map;
    kind "differs": it maps (a reference parameter may be set by `perturb`), and the output must change;
    kind "note": listed only (nothing to probe here)."""
    layer: str
    feature: str
    kind: str
    reason: str
    closest: str = ""  # the case that runs the closest mappable config
    fla_extra: dict = field(default_factory=dict)
    arena_extra: dict = field(default_factory=dict)
    perturb: str = ""  # name of a reference parameter to set to random values after mapping


DIFFERENCES = [
    Difference("kda", "gate rank", "unmappable",
               "fla's decay and output-gate bottlenecks (f_proj, g_proj) are head_v_dim = V wide; arena's gate_rank "
               "defaults to K, as Kimi's layer (rank = head_dim). Equal for expand_v = 1 (Kimi's); otherwise arena "
               "maps with gate_rank = V.", "H2 K32 V64 rank64", arena_extra=dict(gate_rank=None)),
    Difference("kda", "output-gate bias", "differs",
               "fla's g_proj ends in a Linear with bias=True; Kimi's released layer has none (fla#718) and neither "
               "has arena's g_b. Mapped with fla's bias at 0, where the layers agree; a nonzero bias changes the "
               "gate, and fla would train it.", "H2 K32 V32", perturb="g_proj.1.bias"),
    Difference("kda", "conv_bias=True", "unmappable",
               "arena's q/k/v short convolutions have no bias (Kimi's and fla's default); fla's conv_bias adds one "
               "per channel.", "H2 K32 V32", fla_extra=dict(conv_bias=True)),
    Difference("kda", "num_v_heads > num_heads (GVA)", "unmappable",
               "fla can share q/k heads among more value heads; arena has one value head per q/k head.",
               "H2 K32 V32", fla_extra=dict(num_v_heads=4)),
    Difference("kda", "safe_gate / lower_bound gate", "differs",
               "fla's alternative gate lower_bound * sigmoid(exp(A_log) (f + dt_bias)), bounded below for its fast "
               "kernel path; arena implements only Kimi's softplus gate -exp(A_log) softplus(f + dt_bias).",
               "H2 K32 V32", fla_extra=dict(safe_gate=True, lower_bound=-5.0)),
    Difference("kda", "use_short_conv=False", "unmappable",
               "arena always has the short convolutions (conv_size=1 still keeps a trained per-channel scale).",
               "H2 K32 V32", fla_extra=dict(use_short_conv=False)),
    Difference("gdn", "use_gate=False", "unmappable",
               "arena's GDN always has the output gate (fla's and the paper's default); without it fla uses a plain "
               "RMSNorm and has no g_proj.", "H2 K32 V64", fla_extra=dict(use_gate=False)),
    Difference("gdn", "output_gate_activation='sigmoid'", "differs",
               "arena's GDN gates with SiLU (fla's default 'swish'); the sigmoid gate is KDA's.", "H2 K32 V64",
               fla_extra=dict(output_gate_activation="sigmoid")),
    Difference("gdn", "conv_bias=True", "unmappable", "arena's short convolutions have no bias (fla's default).",
               "H2 K32 V64", fla_extra=dict(conv_bias=True)),
    Difference("gdn", "num_v_heads > num_heads (GVA)", "unmappable",
               "fla can share q/k heads among more value heads; arena has one value head per q/k head.",
               "H2 K32 V64", fla_extra=dict(num_v_heads=4)),
    Difference("mamba2", "D_has_hdim=True", "unmappable",
               "arena's skip D is one scalar per head (mamba's default); D_has_hdim makes it one per channel.",
               "N16 P16 H8 G1", fla_extra=dict(D_has_hdim=True)),
    Difference("mamba2", "rmsnorm=False", "unmappable",
               "arena always applies the gated RMSNorm (mamba's default); without it the gate is y * silu(z) and "
               "there is no norm weight.", "N16 P16 H8 G1", fla_extra=dict(rmsnorm=False)),
    Difference("mamba2", "norm_before_gate=True", "differs",
               "arena gates before the norm, RMSNorm(y * silu(z)) (mamba's default, norm_before_gate=False).",
               "N16 P16 H8 G1", fla_extra=dict(norm_before_gate=True)),
    Difference("mamba2", "dt_limit", "differs",
               "arena does not clamp dt = softplus(dt_raw + dt_bias); mamba's default limit (0, inf) is no clamp.",
               "N16 P16 H8 G1", fla_extra=dict(dt_limit=(0.01, 0.05))),
    Difference("mamba2", "chunk_size", "note",
               "arena's torch SSD defaults to chunks of 64 (short CPU runs), mamba's to 256; the function is the "
               "same (every case here runs fla at 256 and arena at 64)."),
    Difference("mamba2", "d_ssm < d_inner (mamba_ssm)", "note",
               "mamba_ssm can run the SSM on part of the channels and a gated MLP on the rest; arena has no MLP part."),
    Difference("mamba2", "hidden_act other than silu", "note",
               "fla's Mamba2 takes another activation after the conv; arena (and mamba_ssm) use SiLU only."),
]


def check_args(args) -> None:
    """One-line ConfigError for settings the script cannot run."""
    from arena.errors import ConfigError, choice_error

    for key, values, allowed in (("--layers", args.layers, LAYERS), ("--dtypes", args.dtypes, DTYPES),
                                 ("--arena-impls", args.arena_impls, tuple(ARENA_IMPLS))):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise choice_error(key, " ".join(bad) or "(empty)", allowed)
    for key in ("seq_len", "batch"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")


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


# ------------------------------------------------------------------------------------------------------------------
# CPU: the interpreter and fla's naive ops


def interpreter_first_config() -> None:
    """Under TRITON_INTERPRET=1 an autotuner cannot time its configs (no GPU driver): take the first one."""
    from triton.runtime.autotuner import Autotuner

    prune = Autotuner.prune_configs
    Autotuner.prune_configs = lambda self, kwargs: prune(self, kwargs)[:1]


def _check_unused(op: str, unused: dict) -> None:
    live = {k: v for k, v in unused.items() if v not in (None, False)}
    if live:
        raise NotImplementedError(f"naive stand-in for {op} cannot take {sorted(live)}")


def naive_chunk_kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                    use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, use_beta_sigmoid_in_kernel=False,
                    allow_neg_eigval=False, lower_bound=None, state_v_first=False, A_log=None, dt_bias=None,
                    safe_gate=False, **unused):
    """fla's chunk_kda with its in-kernel steps in torch and fla's token loop for the recurrence."""
    from fla.modules.l2norm import l2norm
    from fla.ops.kda.gate import naive_kda_gate, naive_kda_lowerbound_gate
    from fla.ops.kda.naive import naive_recurrent_kda

    _check_unused("chunk_kda", unused)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)  # fla's own L2 norm op (the one chunk_kda calls), [B, T, H, K]
    if use_gate_in_kernel:  # the gate the kernel builds from the raw f_proj output: softplus form, or lower-bound form
        g = naive_kda_gate(g, A_log, dt_bias) if lower_bound is None else \
            naive_kda_lowerbound_gate(g, A_log, dt_bias, lower_bound)
    if use_beta_sigmoid_in_kernel:
        beta = beta.float().sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    o, S = naive_recurrent_kda(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                               output_final_state=output_final_state)
    if S is not None and state_v_first:
        S = S.transpose(-1, -2)  # fla's layer keeps the state [B, H, V, K]
    return o, S


def naive_chunk_gdn(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                    use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, use_beta_sigmoid_in_kernel=False,
                    allow_neg_eigval=False, state_v_first=False, A_log=None, dt_bias=None, **unused):
    """fla's chunk_gated_delta_rule with its in-kernel steps in torch and fla's token loop for the recurrence."""
    from fla.modules.l2norm import l2norm
    from fla.ops.gated_delta_rule.gate import naive_gdn_gate
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    _check_unused("chunk_gated_delta_rule", unused)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    if use_gate_in_kernel:
        g = naive_gdn_gate(g, A_log, dt_bias)  # [B, T, H]
    if use_beta_sigmoid_in_kernel:
        beta = beta.float().sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    o, S = naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=scale, initial_state=initial_state,
                                            output_final_state=output_final_state)  # note: beta before g here
    if S is not None and state_v_first:
        S = S.transpose(-1, -2)
    return o.to(v.dtype), S


@contextlib.contextmanager
def naive_chunk_ops(mods: dict):
    """Inside: fla's KDA and GDN layers call the naive stand-ins instead of their chunk kernels."""
    saved = (mods["kda"].chunk_kda, mods["gdn"].chunk_gated_delta_rule)
    mods["kda"].chunk_kda, mods["gdn"].chunk_gated_delta_rule = naive_chunk_kda, naive_chunk_gdn
    try:
        yield
    finally:
        mods["kda"].chunk_kda, mods["gdn"].chunk_gated_delta_rule = saved


def check_naive_ops(device) -> list[tuple[str, float]]:
    """The stand-ins against fla's fused-recurrent kernels (the same in-kernel steps, forward), relative RMS error."""
    import torch
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule
    from fla.ops.kda import fused_recurrent_kda

    from arena.testing import rel_rms_error

    gen = torch.Generator().manual_seed(1)
    B, T, H, K, V = 2, 37, 2, 16, 32
    out = []
    for op, neg in (("kda", False), ("kda", True), ("gdn", False), ("gdn", True)):
        gk = (B, T, H, K) if op == "kda" else (B, T, H)
        q, k = (torch.randn(B, T, H, K, generator=gen) for _ in range(2))
        v, g, beta = torch.randn(B, T, H, V, generator=gen), torch.randn(gk, generator=gen), \
            torch.randn(B, T, H, generator=gen)
        A_log = torch.rand(H, generator=gen) * 2
        dt_bias = torch.randn(H * K if op == "kda" else H, generator=gen)
        kw = dict(q=q, k=k, v=v, g=g, beta=beta, A_log=A_log, dt_bias=dt_bias)  # by name: the orders differ
        kw = {n: t.to(device) for n, t in kw.items()}
        kw.update(use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True,
                  allow_neg_eigval=neg)
        with torch.no_grad():
            if op == "kda":
                ref, _ = fused_recurrent_kda(**kw)
                got, _ = naive_chunk_kda(**kw)
            else:
                ref, _ = fused_recurrent_gated_delta_rule(**kw)
                got, _ = naive_chunk_gdn(**kw)
        out.append((f"{op}{' neg-eig' if neg else ''}", rel_rms_error(ref.float(), got.float())))
    return out


# ------------------------------------------------------------------------------------------------------------------
# constructor arguments and parameter mappings


def fla_kwargs(layer: str, arena) -> dict:
    """The reference constructor arguments that match arena's resolved config."""
    cfg = arena.cfg
    if layer in ("kda", "gdn"):
        kw = dict(hidden_size=arena.d_model, num_heads=arena.H, head_dim=arena.K, expand_v=arena.V / arena.K,
                  conv_size=cfg.conv_size, conv_bias=False, allow_neg_eigval=cfg.allow_neg_eigval,
                  norm_eps=cfg.norm_eps, mode="chunk")
        if layer == "gdn":
            kw.update(use_gate=True, output_gate_activation="swish")
        return kw
    return dict(hidden_size=arena.d_model, num_heads=arena.nheads, head_dim=cfg.headdim, state_size=cfg.d_state,
                expand=cfg.expand, n_groups=cfg.ngroups, conv_kernel=cfg.d_conv, use_conv_bias=cfg.conv_bias,
                use_bias=cfg.bias, norm_eps=cfg.norm_eps, hidden_act="silu", rmsnorm=True, norm_before_gate=False)


def mamba_ssm_kwargs(arena) -> dict:
    """mamba_ssm.modules.mamba2.Mamba2's arguments for arena's Mamba2 (its RMSNorm eps is fixed at 1e-5)."""
    cfg = arena.cfg
    if cfg.norm_eps != 1e-5:
        raise MappingError(f"mamba_ssm's Mamba2 fixes the norm eps at 1e-5; arena has norm_eps={cfg.norm_eps}")
    return dict(d_model=arena.d_model, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                headdim=cfg.headdim, ngroups=cfg.ngroups, conv_bias=cfg.conv_bias, bias=cfg.bias, rmsnorm=True,
                norm_before_gate=False)


def qkv_mapping() -> dict:
    """The q/k/v block KDA and GDN share: q, k = l2norm(SiLU(conv(W x))), v = SiLU(conv(W_v x)).
    Conv weights are [C, 1, kernel] (nn.Conv1d's depthwise layout) on both sides, oldest tap first."""
    return {
        "q_proj.weight": "qkv.q_proj.weight",  # W_q [H*K, D]
        "k_proj.weight": "qkv.k_proj.weight",  # W_k [H*K, D]
        "v_proj.weight": "qkv.v_proj.weight",  # W_v [H*V, D]
        "q_conv1d.weight": "qkv.q_conv.conv.weight",  # short conv on W_q x, [H*K, 1, conv_size]
        "k_conv1d.weight": "qkv.k_conv.conv.weight",  # short conv on W_k x
        "v_conv1d.weight": "qkv.v_conv.conv.weight",  # short conv on W_v x, [H*V, 1, conv_size]
    }


def kda_mapping() -> dict:
    """fla KimiDeltaAttention name -> arena KDA name (or ZERO). Same layouts: no transposes or reshapes."""
    return {
        **qkv_mapping(),
        "f_proj.0.weight": "f_a.weight",  # g = -exp(A_log) softplus(f_b f_a x + dt_bias): f_a, [rank, D]
        "f_proj.1.weight": "f_b.weight",  # ... f_b, [H*K, rank]
        "A_log": "A_log",  # ... per-head rate A_log [H]
        "dt_bias": "dt_bias",  # ... dt_bias [H*K], head-major (h, k) on both sides
        "b_proj.weight": "b_proj.weight",  # beta = sigmoid(b_proj x) (x2 with allow_neg_eigval), [H, D]
        "g_proj.0.weight": "g_a.weight",  # output gate sigmoid(g_b g_a x): g_a, [rank, D]
        "g_proj.1.weight": "g_b.weight",  # ... g_b, [H*V, rank]
        "g_proj.1.bias": ZERO,  # ... fla's output-gate bias; arena has none (Kimi's layer neither, fla#718)
        "o_norm.weight": "o_norm.norm.weight",  # RMSNorm(o) * w, w [V] shared by the heads
        "o_proj.weight": "o_proj.weight",  # y = o_proj(...), [D, H*V]
    }


def gdn_mapping() -> dict:
    """fla GatedDeltaNet name -> arena GDN name. Same layouts."""
    return {
        **qkv_mapping(),
        "a_proj.weight": "a_proj.weight",  # g = -exp(A_log) softplus(a_proj x + dt_bias): a_proj, [H, D]
        "A_log": "A_log",  # ... A_log [H]
        "dt_bias": "dt_bias",  # ... dt_bias [H]
        "b_proj.weight": "b_proj.weight",  # beta = sigmoid(b_proj x), [H, D]
        "g_proj.weight": "g_proj.weight",  # output gate silu(g_proj x), full rank, [H*V, D]
        "o_norm.weight": "o_norm.norm.weight",  # RMSNorm(o) * w, w [V]
        "o_proj.weight": "o_proj.weight",  # [D, H*V]
    }


def mamba2_mapping(arena) -> dict:
    """fla Mamba2 (and mamba_ssm Mamba2, same names) -> arena Mamba2. Same layouts: in_proj rows are
    [z | x B C | dt] on both sides (no gated-MLP rows: d_mlp = 0)."""
    m = {
        "in_proj.weight": "in_proj.weight",  # [z | xBC | dt] = in_proj x, [2 d_inner + 2 G N + H, D]
        "conv1d.weight": "conv.conv.weight",  # SiLU(conv(xBC) + b), [d_inner + 2 G N, 1, d_conv]
        "A_log": "A_log",  # A = -exp(A_log) [H]
        "dt_bias": "dt_bias",  # dt = softplus(dt_raw + dt_bias) [H]
        "D": "D",  # y = SSD(...) + D x, D [H]
        "norm.weight": "norm_weight",  # RMSNorm(y * silu(z)) * w per group, w [d_inner]
        "out_proj.weight": "out_proj.weight",  # [D, d_inner]
    }
    if arena.cfg.conv_bias:
        m["conv1d.bias"] = "conv.conv.bias"  # the conv's b
    if arena.cfg.bias:
        m["in_proj.bias"] = "in_proj.bias"
        m["out_proj.bias"] = "out_proj.bias"
    return m


def mapping_for(layer: str, arena) -> dict:
    return {"kda": kda_mapping, "gdn": gdn_mapping}[layer]() if layer != "mamba2" else mamba2_mapping(arena)


def load_mapped(ref, arena, mapping: dict) -> None:
    """Copy arena's parameters into `ref` by `mapping` (ref name -> arena name or ZERO), after filling every ref
    parameter with NaN; MappingError names any ref parameter left unset, arena parameter unused, or shape that
    differs."""
    import torch

    ref_params, arena_params = dict(ref.named_parameters()), dict(arena.named_parameters())
    problems = []
    unset = sorted(set(ref_params) - set(mapping))
    if unset:
        problems.append(f"reference parameters with no arena counterpart: {', '.join(unset)}")
    missing = sorted(n for n in mapping if n not in ref_params)
    if missing:
        problems.append(f"mapped names the reference does not have: {', '.join(missing)}")
    unused = sorted(set(arena_params) - {a for a in mapping.values() if a != ZERO})
    if unused:
        problems.append(f"arena parameters not used: {', '.join(unused)}")
    with torch.no_grad():
        for p in ref_params.values():
            p.fill_(float("nan"))  # a name the mapping misses stays NaN and shows in every output
        for name, src in mapping.items():
            if name not in ref_params:
                continue
            dst = ref_params[name]
            if src == ZERO:
                dst.zero_()
                continue
            if src not in arena_params:
                problems.append(f"{name}: arena has no parameter {src}")
                continue
            value = arena_params[src]
            if tuple(value.shape) != tuple(dst.shape):
                problems.append(f"{name} {tuple(dst.shape)} != arena {src} {tuple(value.shape)}")
                continue
            dst.copy_(value)
    if not problems:
        left = [n for n, p in ref_params.items() if not torch.isfinite(p).all()]
        if left:
            problems.append(f"reference parameters still NaN after mapping: {', '.join(left)}")
    if problems:
        raise MappingError("; ".join(problems))


# ------------------------------------------------------------------------------------------------------------------
# running a case


@dataclass
class Result:
    y: object
    dx: object = None
    grads: dict = None  # parameter name -> gradient
    note: str = ""


def forward_backward(call, params: dict, x, dy, amp) -> Result:
    """y = call(x) (under bf16 autocast when amp; x in the layer's dtype), then the backward of sum(y * dy);
    everything returned in fp32."""
    import torch

    dtype = next(iter(params.values())).dtype
    x = x.detach().to(dtype).requires_grad_(True)
    for p in params.values():
        p.grad = None
    with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        y = call(x)
    (y.float() * dy).sum().backward()
    grads = {n: p.grad.detach().float().clone() for n, p in params.items() if p.grad is not None}
    return Result(y.detach().float(), x.grad.detach().float(), grads)


def run_reference(ref, call, x, dy, amp, mods, naive: bool) -> Result:
    """The reference's output and gradients; where fla refuses its backward (fla#640), gradients from its naive ops."""
    import torch

    params = dict(ref.named_parameters())
    x = x.to(next(iter(params.values())).dtype)  # --bf16 cast: the layer's dtype

    ctx = naive_chunk_ops(mods) if naive else contextlib.nullcontext()
    try:
        with ctx:
            return forward_backward(call, params, x, dy, amp)
    except RuntimeError as exc:
        if "#640" not in str(exc):
            raise
    with torch.no_grad(), torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        y = call(x).float()  # the kernels' own forward
    # the same layer (projections, conv and norm kernels, under the same autocast) around fla's fp32 token loop
    with naive_chunk_ops(mods):
        grads = forward_backward(call, params, x, dy, amp)
    return Result(y, grads.dx, grads.grads, note="ref grads via fla naive ops (fla#640)")


@dataclass
class Row:
    layer: str
    reference: str
    config: str
    dtype: str
    impl: str
    out: float = float("nan")
    dx: float = float("nan")
    dW: float = float("nan")
    dW_name: str = ""
    tol: dict = None
    passed: bool = False
    notes: str = ""
    known: str = ""  # a known bug of the reference that explains a failure: shown, not counted


def compare(row: Row, ref: Result, got: Result, mapping: dict, tol: dict) -> Row:
    from arena.testing import rel_rms_error

    row.out = rel_rms_error(ref.y, got.y)
    row.tol = tol
    grads = ref.dx is not None and got.dx is not None  # None: a backward fla refused (fla#640) in bf16
    if grads:
        row.dx = rel_rms_error(ref.dx, got.dx)
        worst = max(((rel_rms_error(ref.grads[n], got.grads[a]), n) for n, a in mapping.items()
                     if a != ZERO and n in ref.grads and a in got.grads), default=(float("nan"), ""))
        row.dW, row.dW_name = worst
    ok = [row.out <= tol["out"]]
    if grads:
        ok += [row.dx <= tol["dx"], row.dW <= tol["dW"]]
    row.passed = all(ok)
    return row


def reference_call(kind: str, m):
    """x -> y for a reference module: fla's layers return (o, attentions, cache), mamba_ssm's the output."""
    return (lambda x: m(x)) if kind == "mamba_ssm" else (lambda x: m(x)[0])


def build_reference(kind: str, case: Case, arena, mods, device, extra: dict | None = None):
    """The reference module of `kind` ("fla" or "mamba_ssm") matching arena's layer, in fp32."""
    extra = extra or {}
    if kind == "mamba_ssm":
        return mods["mamba_ssm"](**mamba_ssm_kwargs(arena), **extra).to(device)
    cls = {"kda": mods["kda"].KimiDeltaAttention, "gdn": mods["gdn"].GatedDeltaNet,
           "mamba2": mods["mamba2"].Mamba2}[case.layer]
    m = cls(**{**fla_kwargs(case.layer, arena), **extra}).to(device)
    if case.layer == "mamba2" and fla_mamba2_path(mods, device).endswith("(eval mode)"):
        m.eval()  # only changes which mamba_ssm path fla takes (no dropout or other train-time behaviour here)
    return m


def arena_layer(case: Case, impl: str, device, extra: dict | None = None, state=None):
    import torch

    from arena.mixers import build_mixer

    overrides = {**case.arena, **ARENA_IMPLS[impl], **(extra or {})}
    layer = build_mixer(case.layer, d_model=case.d_model, **overrides)
    if state is not None:
        layer.load_state_dict(state)
    return layer.to(device=device, dtype=torch.float32)


def make_inputs(case: Case, args, device):
    import torch

    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, args.seq_len, case.d_model, generator=gen)
    dy = torch.randn(args.batch, args.seq_len, case.d_model, generator=gen)
    return x.to(device), dy.to(device)


def short_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def known_reference_bug(case: Case, path: str, arena) -> str:
    """Why the reference itself is wrong for this case, or ""."""
    if case.layer == "mamba2" and path == "torch_forward" and arena.cfg.ngroups > 1:
        # fla 0.6 Mamba2.torch_forward: B.repeat(1, 1, H // G, 1) gives head h group h % G; mamba_ssm's kernels,
        # fla's own decode step and arena give head h group h // (H / G), the groups' contiguous blocks of heads
        return "fla torch_forward gives head h B/C group h % G (B.repeat), mamba_ssm h // (H/G)"
    return ""


def run_case(case: Case, reference: str, args, mods, device) -> list[Row]:
    """Every (dtype, arena impl) row of one case against one reference."""
    import torch

    torch.manual_seed(args.seed)
    base = arena_layer(case, args.arena_impls[0], device)
    state = base.state_dict()
    mapping = mapping_for(case.layer, base)
    ref = build_reference(reference, case, base, mods, device)
    load_mapped(ref, base, mapping)
    call = reference_call(reference, ref)
    x, dy = make_inputs(case, args, device)
    naive = args.cpu_smoke
    path = "naive ops" if naive and case.layer != "mamba2" else "kernels"
    if case.layer == "mamba2" and reference == "fla":
        path = fla_mamba2_path(mods, device)
    ref32 = run_reference(ref, call, x, dy, None, mods, naive)
    bug = known_reference_bug(case, path, base) if reference == "fla" else ""
    rows = []
    for dtype in args.dtypes:
        bf16 = dtype == "bf16"
        amp = torch.bfloat16 if bf16 and args.bf16 == "autocast" else None
        cast = torch.bfloat16 if bf16 and args.bf16 == "cast" else torch.float32
        tol = dict(TOL_FP32)
        own = ""
        if bf16:  # the reference's own bf16 error sets how much bf16 noise a layer has
            try:
                ref16 = copy.deepcopy(ref).to(cast)
                ref16_out = run_reference(ref16, reference_call(reference, ref16), x, dy, amp, mods, naive)
            except Exception as exc:  # the fixed bars still apply; the row says why they are not widened
                tol = dict(TOL_BF16)
                own = f"ref bf16 ({args.bf16}) failed: {short_error(exc)}"
            else:
                own_row = compare(Row("", "", "", "", ""), ref32, ref16_out, mapping, TOL_BF16)
                tol = {key: max(TOL_BF16[key], REF_FACTOR * err) if err == err else TOL_BF16[key]  # NaN: unmeasured
                       for key, err in (("out", own_row.out), ("dx", own_row.dx), ("dW", own_row.dW))}
                own = f"ref bf16 ({args.bf16}): out {own_row.out:.1e} dx {own_row.dx:.1e} dW {own_row.dW:.1e}"
                if ref16_out.note and ref16_out.note != ref32.note:
                    own += f", {ref16_out.note}"
        for impl in args.arena_impls:
            row = Row(case.layer, reference, case.config, dtype, impl)
            notes = [f"ref: {path}", ref32.note, own, bug]
            try:
                layer = arena_layer(case, impl, device, state=state).to(cast)
                got = forward_backward(lambda t, m=layer: m(t)[0], dict(layer.named_parameters()), x, dy, amp)
            except Exception as exc:  # this arena impl cannot run here: a failing row, the others still run
                notes.insert(0, f"ERROR {short_error(exc)}")
            else:
                row = compare(row, ref32, got, mapping, tol)
                row.known = "" if row.passed else bug
            row.notes = "; ".join(s for s in notes if s)
            rows.append(row)
    return rows


def probe_difference(diff: Difference, case: Case, args, mods, device) -> str:
    """One line: the difference shown (unmappable, or a changed output) or a warning that it was not."""
    import torch

    from arena.testing import rel_rms_error

    torch.manual_seed(args.seed)
    arena = arena_layer(case, "torch", device, extra=diff.arena_extra)
    try:
        ref = build_reference("fla", case, arena, mods, device, extra=diff.fla_extra)
        load_mapped(ref, arena, mapping_for(case.layer, arena))
        call = reference_call("fla", ref)
    except (MappingError, ValueError) as exc:
        status = "cannot map" if diff.kind == "unmappable" else "UNEXPECTED: cannot map"
        return f"{status}: {exc}"
    if diff.perturb:
        with torch.no_grad():
            dict(ref.named_parameters())[diff.perturb].normal_(0.0, 1.0)
    x, _ = make_inputs(case, args, device)
    ctx = naive_chunk_ops(mods) if args.cpu_smoke else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        err = rel_rms_error(call(x).float(), arena(x)[0].float())
    if err > TOL_FP32["out"]:
        return f"{'maps, output differs' if diff.kind == 'differs' else 'UNEXPECTED: maps'}: out rel err {err:.2g}"
    return f"WARNING: maps and the output agrees (rel err {err:.2g}); the difference was not exercised"


# ------------------------------------------------------------------------------------------------------------------
# report


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:.2e}"


def verdict(r: Row) -> str:
    return "yes" if r.passed else ("no: reference bug, not counted" if r.known else "**NO**")


def table(rows: list[Row]) -> str:
    head = ["layer", "reference", "config", "dtype", "arena impl", "out rel err", "dx rel err",
            "param grad rel err (worst)", "tolerance (out / dx / param)", "pass", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        tol = "-" if r.tol is None else " / ".join(f"{r.tol[k]:.0e}" for k in ("out", "dx", "dW"))
        dW = fmt(r.dW) + (f" ({r.dW_name})" if r.dW_name else "")
        lines.append("| " + " | ".join([r.layer, r.reference, r.config, r.dtype, r.impl, fmt(r.out), fmt(r.dx), dW,
                                        tol, verdict(r), r.notes]) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", nargs="+", default=list(LAYERS), help=f"of {', '.join(LAYERS)}")
    p.add_argument("--dtypes", nargs="+", default=None, help="fp32 and/or bf16 (default: both on CUDA, fp32 on CPU)")
    p.add_argument("--arena-impls", nargs="+", default=None,
                   help=f"of {', '.join(ARENA_IMPLS)} (default: auto torch naive on CUDA, torch naive on CPU)")
    p.add_argument("--seq-len", type=int, default=None, help="T (default 200; 70 with --cpu-smoke)")
    p.add_argument("--batch", type=int, default=2, help="B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-smoke", action="store_true",
                   help="CPU: Triton interpreter for fla's small kernels, fla's naive ops for its chunk kernels; "
                        "the smoke cases only unless --all-cases")
    p.add_argument("--all-cases", action="store_true", help="with --cpu-smoke: every case, not just the smoke set")
    p.add_argument("--no-probes", action="store_true", help="skip probing the listed differences")
    p.add_argument("--bf16", default="autocast", choices=("autocast", "cast"),
                   help="bf16 rows: fp32 weights under bf16 autocast (how arena trains), or both layers cast to bf16 "
                        "(fla's tests' style)")
    p.add_argument("--allow-tf32", action="store_true", help="leave TF32 on (torch) and Triton's fp32 dot default")
    args = p.parse_args(argv)
    args.seq_len = args.seq_len or (70 if args.cpu_smoke else 200)
    args.dtypes = args.dtypes or (["fp32"] if args.cpu_smoke else list(DTYPES))
    args.arena_impls = args.arena_impls or (["torch", "naive"] if args.cpu_smoke else ["auto", "torch", "naive"])
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from arena.errors import ConfigError

    try:
        check_args(args)
        if args.cpu_smoke and "bf16" in args.dtypes:
            raise ConfigError("--dtypes bf16 is not valid with --cpu-smoke (the Triton interpreter's bf16 dots are "
                              "wrong); choose fp32")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # before anything imports Triton: the interpreter reads its switch once, fp32 dot precision at each compile
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    if not args.allow_tf32:
        os.environ["TRITON_F32_DEFAULT"] = "ieee"
    import torch

    if args.cpu_smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("error: no CUDA device; fla's kernels need one (use --cpu-smoke on CPU)", file=sys.stderr)
        return 2
    if not args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.cpu_smoke:  # the interpreter's numpy overflows in masked lanes, and fla's "no GPU" notice: noise here
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"triton\.")
        warnings.filterwarnings("ignore", message=".*Triton is not supported on current platform.*")
    try:
        mods = import_fla()
    except ImportError as exc:
        print(f"error: cannot import fla ({exc}); install fla-core and flash-linear-attention 0.6.0 and einops "
              "beside arena and put them on PYTHONPATH (see this script's docstring)", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        interpreter_first_config()
    logging.getLogger("fla.layers.mamba2").setLevel(logging.ERROR)  # backend notices on every build; path printed

    import fla
    import triton

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    print(f"device: {card}; torch {torch.__version__}, triton {triton.__version__}, fla {fla.__version__}; "
          f"TF32 {'on' if args.allow_tf32 else 'off'}, TRITON_F32_DEFAULT={os.environ.get('TRITON_F32_DEFAULT', '')}")
    why = mamba_ssm_usable(mods, device)
    print(f"mamba_ssm reference: {'yes' if not why else f'no ({why})'}; causal_conv1d: "
          f"{'yes' if mods['causal_conv1d'] else 'no'}; fla Mamba2 path: {fla_mamba2_path(mods, device)}")
    print(f"B={args.batch} T={args.seq_len} seed={args.seed}; fla chunk ops: "
          f"{'naive stand-ins' if args.cpu_smoke else 'kernels'}; arena impls: {' '.join(args.arena_impls)}\n")

    failed = False
    checks = check_naive_ops(device)
    bad = [(n, e) for n, e in checks if not e <= TOL_FP32["out"]]
    print("naive stand-ins vs fla's fused-recurrent kernels (forward, rel RMS): "
          + ", ".join(f"{n} {e:.1e}" for n, e in checks) + (" -- OVER 1e-5" if bad else ""))
    failed |= bool(bad)

    by_name = {(c.layer, c.config): c for c in CASES}
    if not args.no_probes:
        print("\nIntended differences (probed on the closest case):")
        for d in DIFFERENCES:
            if d.layer not in args.layers:
                continue
            line = f"- {d.layer}: {d.feature}: {d.reason}"
            if d.kind != "note":
                try:
                    result = probe_difference(d, by_name[(d.layer, d.closest)], args, mods, device)
                except Exception as exc:  # e.g. a kernel variant fla cannot run here: the probe only informs
                    result = f"could not run ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
                line += f" Probe: {result}. Closest case: {d.closest}."
            print(line)

    rows, errors = [], []
    for case in CASES:
        if case.layer not in args.layers or (args.cpu_smoke and not args.all_cases and not case.smoke):
            continue
        refs = ["fla"] + (["mamba_ssm"] if case.layer == "mamba2" and not mamba_ssm_usable(mods, device) else [])
        for reference in refs:
            try:
                rows += run_case(case, reference, args, mods, device)
            except Exception as exc:  # a mapping or reference failure fails this case; the others still run
                errors.append(f"{case.layer} {case.config} vs {reference}: {type(exc).__name__}: {exc}")
                rows.append(Row(case.layer, reference, case.config, "-", "-", notes=f"ERROR {short_error(exc)}"))
    print("\n" + table(rows))
    for e in errors:
        print(f"\nERROR {e}")
    failed |= any(not r.passed and not r.known for r in rows)
    print(f"\n{sum(r.passed for r in rows)}/{len(rows)} rows pass" + ("" if not failed else "; FAILED"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
