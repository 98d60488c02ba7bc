"""What a trained parity model's delta-rule gates do to a stored sign over a long sequence (issue 14 item 3).

    python scripts/parity_gates.py RUN_DIR [RUN_DIR ...] [--length 256] [--num 64] [--seed 0] [--weights last]
                                   [--open-gate reflecting | all | LAYER:HEAD,...] [--gate-scales 0]

For each run dir of a `task=parity` run with GDN or KDA layers (its checkpoint, arena.model.load), feeds `--num`
random bit strings of `--length` tokens and records, per layer and head, on bit-0 and bit-1 tokens:
    alpha = exp(g)        the decay (GDN: one per head; KDA: the mean over the K channels)
    alpha_k               the decay along the token's key k (unit length): sum_i k_i^2 alpha_i. A sign stored
                          along k (S ~ k s^T) is scaled by k^T diag(alpha) k per token, so for KDA's per-channel
                          gate this, not the channel mean, is what the stored sign sees (GDN: alpha_k = alpha)
    beta                  the delta-rule step, in (0, 2) with allow_neg_eigval
and the two numbers that decide whether a sign survives `--length` tokens:
    alpha^L               the product of alpha over L tokens (half of each bit): what the gate leaves of the state
    |1-beta|^L            the transition's eigenvalue along k is alpha (1 - beta): -1 flips a sign exactly, and a
                          |1 - beta| below 1 shrinks the component along k like a decay (a head that reflects on
                          every token, beta ~ 2 on both bits, pays it on every token)
    keep^L                the two together: the product of alpha |1 - beta| over the L tokens
    alpha_k^L, keep_k^L   the same with alpha_k
Why: a model trained on lengths up to 16 or 40 gets full marks with alpha and |1 - beta| far enough from 1 to
lose the sign by 256 (results/2026-12-06_parity_extrapolation/README.md). Prints one table per run, after the
accuracy at each of `--acc-lengths` (500 fresh sequences each, seed `--seed`). `--weights`: tested (the weights
summary.json's test scores are of), last (after the last step) or best (best validation), see arena.checkpoint.

`--open-gate` is the intervention that tests the gate as the cause: the named heads' log-decay g is multiplied by
each of `--gate-scales` (0: alpha = 1, the gate fully open; 0.5: alpha -> sqrt(alpha)) at every token and channel,
nothing else changes, and the accuracy at each length is scored again beside the trained model's. `reflecting`
picks, per run, the heads whose beta is above 1.9 on both bits (the heads that flip the sign). If the fading beyond
the training lengths is the decay's doing, opening the gate lifts the long lengths.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when run as a file from anywhere

from arena.errors import ConfigError  # noqa: E402
from arena.interventions import delta_rule_layers, parse_heads, scale_decay  # noqa: E402
from arena.model import load  # noqa: E402


def accuracy_at(model, length: int, num: int, seed: int) -> float:
    """Parity accuracy on `num` sequences of content length exactly `length` (length - 1 bits), the answer read at
    the last bit as arena scores it; the generator is arena's Parity task, so the format is the trained one."""
    from arena.tasks.parity import Parity

    cfg = Parity.Config(seq_len=length, train_min_len=length, train_max_len=length, test_min_len=length,
                        test_max_len=length)
    batch = Parity(cfg).sample(np.random.default_rng(seed), num, "test")
    with torch.no_grad():
        logits, _ = model(batch.inputs)  # [B, T, vocab]
    scored = batch.targets >= 0  # one position per row
    return (logits.argmax(-1)[scored] == batch.targets[scored]).double().mean().item()


def key_weighted_decay(alpha: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The decay along each token's key, [B, T, H]: sum_i k_i^2 alpha_i over the K channels for KDA's [B, T, H, K]
    alpha (k of unit length, as the layer's l2norm leaves it); GDN's [B, T, H] alpha is the same along every
    direction and comes back unchanged."""
    if alpha.dim() == 3:
        return alpha
    return (k.double() ** 2 * alpha.double()).sum(-1) / (k.double() ** 2).sum(-1).clamp_min(1e-30)


def heads_to_open(spec: str, rows: list[dict], model) -> list[tuple[int, int]]:
    """`reflecting` -> the heads of `rows` (gate_stats) with beta > 1.9 on both bits; else 'all' or 'LAYER:HEAD,...'
    (arena.interventions.parse_heads)."""
    if spec == "reflecting":
        return [(r["layer"], r["head"]) for r in rows if min(r["beta0"], r["beta1"]) > 1.9]
    return parse_heads(spec, model)


def gate_stats(model, length: int, num: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 3, (num, length), generator=gen)  # [B, T]: 1 = bit 0, 2 = bit 1, no PAD
    captured, keys = {}, {}

    def hook(index):
        def record(layer, args, _output):
            x = args[0]  # [B, T, D], the mixer's input
            alpha = layer.decay(x).exp()  # [B, T, H] or [B, T, H, K]
            alpha_k = key_weighted_decay(alpha, keys[index])  # [B, T, H]
            if alpha.dim() == 4:
                alpha = alpha.mean(-1)  # KDA: one number per head, the mean over the K channels
            beta = torch.sigmoid(layer.b_proj(x).float()) * (2.0 if layer.cfg.allow_neg_eigval else 1.0)
            captured[index] = (alpha.double(), alpha_k.double(), beta.double())  # [B, T, H] each
        return record

    def key_hook(index):
        def record(_module, _args, output):
            keys[index] = output[1]  # (q, k, v, conv state): k [B, T, H, K], unit length
        return record

    mixers = delta_rule_layers(model)
    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(mixers)]
    handles += [m.qkv.register_forward_hook(key_hook(i)) for i, m in enumerate(mixers)]  # runs before the mixer's
    with torch.no_grad():
        model(tokens)
    for h in handles:
        h.remove()
    rows = []
    for index, (alpha, alpha_k, beta) in captured.items():
        for head in range(alpha.shape[-1]):
            row = {"layer": index, "head": head}
            for bit, token in (("0", 1), ("1", 2)):
                on = tokens == token  # [B, T]
                a, ak, b = alpha[..., head][on], alpha_k[..., head][on], beta[..., head][on]
                row[f"alpha{bit}"] = a.mean().item()
                row[f"alpha_k{bit}"] = ak.mean().item()
                row[f"beta{bit}"] = b.mean().item()
                row[f"log_alpha{bit}"] = a.log().mean().item()  # geometric mean, what a product over tokens sees
                row[f"log_alpha_k{bit}"] = ak.clamp_min(1e-300).log().mean().item()
                row[f"log_eig{bit}"] = (1 - b).abs().clamp_min(1e-30).log().mean().item()
            # half the tokens are of each bit: the product over the sequence
            row["alpha^L"] = math.exp(length / 2 * (row["log_alpha0"] + row["log_alpha1"]))
            row["alpha_k^L"] = math.exp(length / 2 * (row["log_alpha_k0"] + row["log_alpha_k1"]))
            row["|1-beta|^L"] = math.exp(length / 2 * (row["log_eig0"] + row["log_eig1"]))
            row["keep^L"] = row["alpha^L"] * row["|1-beta|^L"]
            row["keep_k^L"] = row["alpha_k^L"] * row["|1-beta|^L"]
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--length", type=int, default=256, help="bit-string length L (default 256)")
    parser.add_argument("--num", type=int, default=64, help="random bit strings (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="last", help="tested | last (default) | best")
    parser.add_argument("--acc-lengths", default="64,128,256", help="comma-separated lengths to score accuracy at")
    parser.add_argument("--open-gate", default="", help="reflecting | all | LAYER:HEAD,...: score again with those "
                        "heads' log-decay scaled by each of --gate-scales")
    parser.add_argument("--gate-scales", default="0", help="comma-separated factors in [0, 1] (default 0: alpha = 1)")
    args = parser.parse_args()
    if args.length < 2 or args.num < 1:
        raise SystemExit(f"--length={args.length} must be >= 2 and --num={args.num} >= 1")
    acc_lengths = [int(L) for L in args.acc_lengths.split(",")]
    try:
        scales = [float(f) for f in args.gate_scales.split(",")]
    except ValueError:
        raise SystemExit(f"--gate-scales {args.gate_scales!r}: give comma-separated numbers in [0, 1]") from None
    if not all(0.0 <= f <= 1.0 for f in scales):
        raise SystemExit(f"--gate-scales {args.gate_scales!r}: each must be in [0, 1] (0 opens the gate)")
    try:
        for run_dir in args.run_dirs:
            report(run_dir, args, acc_lengths, scales)
    except ConfigError as err:
        raise SystemExit(f"parity_gates: {err}") from None


def report(run_dir: str, args, acc_lengths: list[int], scales: list[float]) -> None:
    """One run's accuracy, gate table and (with --open-gate) the intervention's accuracies, printed."""
    model = load(run_dir, weights=args.weights)
    accs = ", ".join(f"{L}: {accuracy_at(model, L, 500, args.seed):.3f}" for L in acc_lengths)
    print(f"== {run_dir} (weights {args.weights}) accuracy {accs}")
    print(f"layer head  alpha|0  alpha|1  beta|0  beta|1   alpha^L  |1-beta|^L  keep^L    alpha_k|0 alpha_k|1 "
          f"alpha_k^L keep_k^L  (L = {args.length})")
    rows = gate_stats(model, args.length, args.num, args.seed)
    for r in rows:
        print(f"{r['layer']:5d} {r['head']:4d}  {r['alpha0']:7.4f}  {r['alpha1']:7.4f}  {r['beta0']:6.3f}  "
              f"{r['beta1']:6.3f}  {r['alpha^L']:8.2e}  {r['|1-beta|^L']:8.2e}  {r['keep^L']:8.2e}  "
              f"{r['alpha_k0']:9.4f} {r['alpha_k1']:9.4f} {r['alpha_k^L']:9.2e} {r['keep_k^L']:8.2e}")
    if args.open_gate:
        heads = heads_to_open(args.open_gate, rows, model)
        if not heads:
            print(f"gate opened: none (no head matches {args.open_gate!r})")
            return
        names = " ".join(f"{layer}:{head}" for layer, head in heads)
        for scale in scales:
            with scale_decay(model, heads, scale):
                opened = ", ".join(f"{L}: {accuracy_at(model, L, 500, args.seed):.3f}" for L in acc_lengths)
            print(f"gate of layer:head {names} as alpha^{scale:g}: accuracy {opened}")


if __name__ == "__main__":
    main()
