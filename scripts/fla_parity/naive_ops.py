"""CPU runs of scripts/fla_layer_parity.py (--cpu-smoke): the Triton interpreter takes each autotuned kernel's first
config, and fla's KDA / GDN layers call naive stand-ins (`naive_chunk_kda`, `naive_chunk_gdn`: the chunk kernels'
in-kernel steps in torch, then fla's own token loops) instead of their chunk kernels, which cannot run there;
`check_naive_ops` checks the stand-ins against fla's fused-recurrent Triton kernels.

Run through `python scripts/fla_layer_parity.py` (the checks, tolerances and CLI are in its docstring);
tests: tests/test_fla_parity_script.py.
"""

from __future__ import annotations

import contextlib

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
