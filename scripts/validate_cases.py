"""The case list of scripts/validate_triton_gpu.py (issue 4's GPU validation of the Triton delta-rule kernels).

    from validate_cases import make_cases, make_inputs      # with scripts/ on sys.path, as the script arranges
    cases = make_cases("kda", ("bf16", "fp16"))             # SPECS x dtypes; quick=True a subset, tiny=True for CPU

Each `Case` is one kernel check; `make_inputs` draws its tensors on CPU from the case's seed (the same numbers on
any device), and `shard_cases` splits a list into disjoint (K, V) groups so parallel processes compile disjoint
kernel configurations. Pure functions of torch only: tests/test_validate_script.py checks them on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Case:
    """One kernel check. lengths: sequence lengths packed along T with cu_seqlens (then B = 1, T = sum)."""

    op: str  # kda | gdn | ssd
    dtype: str  # bf16 | fp16 | fp32: q, k, v (and o, dO); g, beta, states are fp32
    T: int
    B: int = 1
    H: int = 2
    K: int = 64
    V: int = 64
    h0: bool = True  # pass an initial state (and check its gradient)
    gate: str = "logsig"  # logsig | zero | masked | wide | floor, see make_inputs
    beta: str = "sigmoid"  # sigmoid | small | one
    neg: bool = False  # allow_neg_eigval
    lengths: tuple[int, ...] | None = None
    final: bool = True  # output_final_state (and a final-state cotangent)
    seed: int = 0

    @property
    def id(self) -> str:
        shape = f"cu{'+'.join(map(str, self.lengths))}" if self.lengths else f"T{self.T}B{self.B}"
        flags = "".join(f"-{f}" for f, on in (("h0", self.h0), ("neg", self.neg), ("nofinal", not self.final)) if on)
        return f"{self.op}-{self.dtype}-{shape}H{self.H}K{self.K}V{self.V}-g_{self.gate}-b_{self.beta}{flags}"


def _spec(T=0, B=1, H=2, K=64, V=64, quick=False, **kw) -> dict:
    return dict(T=T, B=B, H=H, K=K, V=V, quick=quick, **kw)


CU_MAIN = (1, 63, 64, 200, 1000)  # the packed batch: 1 token, around a chunk, long
# Few distinct (K, V) pairs on purpose: each one (x dtype x flags) is a fresh Triton compile on a cold machine.
SPECS = [
    # shapes: T around the chunk (63/64/65), long T at small B*H, every K and V, odd 100
    _spec(1, B=2, H=4, quick=True),
    _spec(1, K=128, V=128, h0=False),
    _spec(63, B=2, H=4),
    _spec(64, B=2, H=4, h0=False),
    _spec(65, B=2, H=4, quick=True),
    _spec(63, K=128, V=128, h0=False),
    _spec(64, K=128, V=128),
    _spec(65, K=128, V=128, neg=True),
    _spec(65, K=32, V=32),
    _spec(65, K=256, V=256, H=1, quick=True),
    _spec(65, K=100, V=100, quick=True, beta="one"),
    _spec(130, K=100, V=100, h0=False),
    _spec(500, K=32, V=32, B=2),
    _spec(500, K=100, V=100, B=2),
    _spec(500, K=64, V=64, H=8),
    _spec(500, K=128, V=128, quick=True),
    _spec(500, K=128, V=64),
    _spec(300, K=128, V=32),  # BV = 32 beside BK = 128 once broke the state kernels: _blocks keeps BV = 64 there
    _spec(300, K=64, V=128),
    _spec(200, K=32, V=256),
    _spec(200, K=256, V=32),
    _spec(200, K=256, V=32, H=1),  # H = 1 is compiled as a constant: a different binary from H = 2
    _spec(200, K=256, V=128),  # K = 256 at H = 2 with a wider V (the long K = 256 cases run H = 1)
    _spec(1024, K=128, V=128, H=4),
    _spec(1024, K=256, V=256, H=1),
    _spec(1024, K=64, V=64, h0=False),
    _spec(2048, K=128, V=128, H=2),
    _spec(2048, K=64, V=64, B=2, H=1, h0=False),
    _spec(2048, K=256, V=128, H=1),
    # gates: exactly 0, -1000 at random positions (fla's varlen masking), log-uniform down to -1000, all -1000
    _spec(130, gate="zero"),
    _spec(500, K=128, V=128, gate="zero", neg=True),
    _spec(500, gate="masked"),
    _spec(1024, K=128, V=128, gate="masked"),
    _spec(200, K=100, V=100, gate="masked", neg=True, quick=True),
    _spec(300, gate="wide"),
    _spec(130, K=128, V=128, gate="wide", neg=True),
    _spec(100, gate="floor"),
    # beta near 0 and near 1 (with allow_neg_eigval, 2 beta ~ 2: eigenvalue ~ -1)
    _spec(300, beta="small"),
    _spec(65, K=128, V=128, beta="small", neg=True),
    _spec(300, beta="one"),
    _spec(300, K=128, V=128, beta="one", neg=True),
    _spec(500, gate="zero", beta="one"),  # no decay, near-projections: the worst-conditioned recurrence
    # allow_neg_eigval with normal gates; H = 8
    _spec(500, neg=True),
    _spec(1024, K=128, V=128, neg=True),
    _spec(256, B=2, H=8),
    _spec(64, K=128, V=128, H=8, neg=True),
    # cu_seqlens (B = 1, one initial state per sequence)
    _spec(lengths=CU_MAIN, quick=True),
    _spec(lengths=CU_MAIN, K=128, V=128, h0=False),
    _spec(lengths=(65, 1, 130, 7, 500), K=100, V=100, neg=True),
    _spec(lengths=CU_MAIN, K=128, V=128, H=4, gate="masked"),
    _spec(lengths=(64, 64, 64, 64), K=32, V=32, gate="zero"),  # undecayed state: any leak is large
    _spec(lengths=(1000, 1), K=256, V=256, H=1, beta="one"),
    _spec(lengths=(300, 200), gate="wide", beta="small"),
    # no final state requested
    _spec(130, final=False),
    _spec(lengths=(63, 65), final=False),
]


def shrink(spec: dict) -> dict:
    """Tiny shapes for the CPU interpreter: K, V <= 32 (100 -> 20 keeps a non power of 2), T <= 100, B*H <= 2."""
    kv = {32: 16, 64: 16, 100: 20, 128: 32, 256: 32}
    out = dict(spec, K=kv[spec["K"]], V=kv[spec["V"]], B=1, H=min(spec["H"], 2))
    if spec.get("lengths"):
        out["lengths"] = tuple(min(n, 70) for n in spec["lengths"])
    elif spec["T"] > 65:
        out["T"] = 100
    return out


def make_cases(op: str, dtypes: tuple[str, ...], quick: bool = False, tiny: bool = False) -> list[Case]:
    """The case list for one op: SPECS (or the quick subset) x dtypes; tiny=True shrinks shapes (CPU)."""
    cases = []
    for i, spec in enumerate(SPECS):
        if quick and not spec["quick"]:
            continue
        if op == "ssd" and (spec.get("neg") or spec.get("beta", "sigmoid") != "sigmoid"):
            continue  # the SSD has no beta and no allow_neg_eigval: these cases would repeat others
        spec = shrink(spec) if tiny else dict(spec)
        spec.pop("quick")
        if spec.get("lengths"):
            spec["T"], spec["B"] = sum(spec["lengths"]), 1
        for dtype in dtypes:
            cases.append(Case(op=op, dtype=dtype, seed=1000 * i + 7, **spec))
    return cases


def shard_cases(cases: list[Case], index: int, count: int) -> list[Case]:
    """Shard `index` of `count`: whole (K, V) groups (each its own set of Triton compiles), balanced by case count,
    so parallel processes on a cold machine compile disjoint kernel configurations."""
    groups: dict[tuple[int, int], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.K, case.V), []).append(case)
    loads, owner = [0] * count, {}
    for key in sorted(groups, key=lambda k: -len(groups[k])):  # largest group first onto the lightest shard
        target = loads.index(min(loads))
        owner[key] = target
        loads[target] += len(groups[key])
    return [case for case in cases if owner[(case.K, case.V)] == index]


def cu_seqlens_of(lengths) -> torch.Tensor:
    """int64 offsets [N + 1] of sequences packed along T."""
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)


def make_inputs(case: Case, per_channel: bool, device) -> dict:
    """Inputs of one case, drawn on CPU from the case's seed (the same numbers on any device).

    q, k: L2-normalized over K, then cast to the case dtype; v, dO in the case dtype; g, beta, h0, dht fp32.
    Gates (log-decay per step): logsig = logsigmoid(randn); zero = 0 exactly; masked = logsig with 10% of the
    entries at -1000; wide = -10^U(-3, 3) (1e-3 to 1000) with a quarter exact zeros; floor = -1000 everywhere.
    Beta: sigmoid = sigmoid(randn); small = sigmoid(randn) * 0.01; one = 1 - 1e-3 * U(0, 1).
    """
    gen = torch.Generator().manual_seed(case.seed)
    B, T, H, K, V = case.B, case.T, case.H, case.K, case.V
    dtype = DTYPES[case.dtype]
    N = len(case.lengths) if case.lengths else B

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    q = F.normalize(randn(B, T, H, K), dim=-1)
    k = F.normalize(randn(B, T, H, K), dim=-1)
    v = randn(B, T, H, V)
    g_shape = (B, T, H, K) if per_channel else (B, T, H)
    if case.gate == "logsig":
        g = F.logsigmoid(randn(*g_shape))
    elif case.gate == "zero":
        g = torch.zeros(g_shape)
    elif case.gate == "masked":
        g = F.logsigmoid(randn(*g_shape)).masked_fill(rand(*g_shape) < 0.1, -1000.0)
    elif case.gate == "wide":
        g = -(10.0 ** (6 * rand(*g_shape) - 3)) * (rand(*g_shape) >= 0.25)
    elif case.gate == "floor":
        g = torch.full(g_shape, -1000.0)
    else:
        raise ValueError(f"unknown gate kind {case.gate!r}")
    if case.beta == "sigmoid":
        beta = randn(B, T, H).sigmoid()
    elif case.beta == "small":
        beta = randn(B, T, H).sigmoid() * 0.01
    elif case.beta == "one":
        beta = 1 - 1e-3 * rand(B, T, H)
    else:
        raise ValueError(f"unknown beta kind {case.beta!r}")
    h0 = randn(N, H, K, V) if case.h0 else None
    do = randn(B, T, H, V)
    dht = randn(N, H, K, V) if case.final else None
    cu = cu_seqlens_of(case.lengths) if case.lengths else None

    def put(x, dt=torch.float32):
        return None if x is None else x.to(device=device, dtype=dt).contiguous()

    return {"q": put(q, dtype), "k": put(k, dtype), "v": put(v, dtype), "g": put(g), "beta": put(beta),
            "h0": put(h0), "do": put(do, dtype), "dht": put(dht), "cu_seqlens": put(cu, torch.int64)}
