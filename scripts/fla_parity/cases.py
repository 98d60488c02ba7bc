"""The cases of scripts/fla_layer_parity.py (a layer and a config each), the intended differences from fla's layers
(each probed on its closest case), the tolerances and the arena impls a case runs with.

Run through `python scripts/fla_layer_parity.py` (the checks, tolerances and CLI are in its docstring);
tests: tests/test_fla_parity_script.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOL_FP32 = {"out": 1e-5, "dx": 1e-5, "dW": 1e-4}  # dW: see scripts/fla_layer_parity.py's docstring
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
