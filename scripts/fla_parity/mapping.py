"""The reference layer's constructor arguments for arena's resolved config (`fla_kwargs`, `mamba_ssm_kwargs`), the
parameter mappings fla name -> arena name (`kda_mapping`, `gdn_mapping`, `mamba2_mapping`; a comment per line names
the term) and `load_mapped`, which copies arena's parameters into the NaN-filled reference and names what does not
fit (MappingError).

Run through `python scripts/fla_layer_parity.py` (the checks, tolerances and CLI are in its docstring);
tests: tests/test_fla_parity_script.py.
"""

from __future__ import annotations

ZERO = "zero"  # mapping value: a reference parameter arena does not have, set to 0 (its term vanishes)


class MappingError(RuntimeError):
    """arena's parameters do not fit the reference layer: names and shapes in the message."""


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
