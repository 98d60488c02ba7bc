"""Forward error of fla's chunk kernels and of arena's Triton kernels on cases of the GPU validation (issue 4).

    python scripts/fla_forward_error.py --match g_zero            # GPU with fla-core installed

For each matching bf16/fp16 case of scripts/validate_cases.py: the relative RMS error of o and of the final state
against the fp32 token loop, for fla (forward only: fla 0.6 refuses its gated backward on Hopper with Triton 3.6,
fla#640) and for arena's Triton kernels, side by side, as a fraction of fla's own tolerance (0.005). It says whether
a case arena fails is one the bf16 arithmetic of a chunked kernel fails too.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_cases import make_cases, make_inputs  # noqa: E402

from arena.kernels import gated_delta_rule as gdn_ops  # noqa: E402
from arena.kernels import kda as kda_ops  # noqa: E402
from arena.testing import rel_rms_error  # noqa: E402

TOL = 0.005


def fla_fn(op: str):
    if op == "kda":
        from fla.ops.kda import chunk_kda
        return chunk_kda
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    return chunk_gated_delta_rule


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--match", default="g_zero", help="only case ids containing this text")
    p.add_argument("--dtypes", nargs="+", default=["bf16"])
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; this script compares GPU kernels")
    print(f"{'case':64s} {'fla o':>7s} {'fla ht':>7s} {'arena o':>8s} {'arena ht':>8s}   (error / {TOL})")
    for op, ops in (("kda", kda_ops), ("gdn", gdn_ops)):
        chunk, naive = (ops.chunk_kda, ops.naive_recurrent_kda) if op == "kda" else (
            ops.chunk_gated_delta_rule, ops.naive_recurrent_gated_delta_rule)
        for case in make_cases(op, tuple(a.dtypes)):
            if a.match not in case.id or case.lengths:
                continue
            x = make_inputs(case, op == "kda", torch.device("cuda"))
            args = [x[n] for n in ("q", "k", "v", "g", "beta")]
            with torch.no_grad():
                ref_o, ref_S = naive(*[t.float() for t in args], initial_state=x["h0"], output_final_state=True,
                                     allow_neg_eigval=case.neg)
                o, S = chunk(*args, initial_state=x["h0"], output_final_state=True, allow_neg_eigval=case.neg,
                             backend="triton")
                beta = args[4] * 2 if case.neg else args[4]  # fla has no allow_neg_eigval: 2 beta directly
                fo, fS = fla_fn(op)(*args[:4], beta, initial_state=x["h0"], output_final_state=True)
            errs = [rel_rms_error(ref, out.float()) / TOL for ref, out in
                    ((ref_o, fo), (ref_S, fS), (ref_o, o), (ref_S, S))]
            print(f"{case.id:64s} " + " ".join(f"{e:7.3f}" for e in errs))


if __name__ == "__main__":
    main()
