"""Accuracy of trained state-tracking runs at each length: where, inside and beyond the training lengths, a model
stops being right (parity, modular_arithmetic(_brackets), s3 / s5 / a5).

    python scripts/accuracy_by_length.py RUN_DIR [RUN_DIR ...] [--lengths 5,9,17,39,64,128,256] [--num 500]
                                         [--open-gate each | all | LAYER:HEAD,... --gate-scale 0.25]

For each run dir (its checkpoint, arena.model.load, the weights its test scored) the task is rebuilt from the run's
config.yaml and scored on `--num` fresh test sequences of each length L (`task.at_length(L)`, the generator the
run trained on). One-answer tasks (parity, modular arithmetic) score the answer of sequences exactly L long (odd
lengths for modular_arithmetic: an even L is scored at L - 1, xLSTM's rule); word problems score every position,
so their column L is the accuracy at the L-th token (the prefix product of L elements) of sequences as long as the
longest L. Prints one row per run: the chance level, then the accuracy at each L; for s3 / s5 a second row
`<task>:sign`, the share of predictions that are a permutation of the right sign (even / odd; chance 0.5), which
tells a model that tracks only the Z2 quotient of the group (accuracy 2 / order) from one at chance. Runs on CPU in
seconds.

`--open-gate` adds the intervention of arena.interventions (GDN / KDA models): the rows again with the named heads'
log-decay times `--gate-scale` (alpha -> alpha^scale), named `<run>[decay^S LAYER:HEAD]`; `each` gives one such row
per head (each head alone: which head's gate, if any, limits the long lengths), `all` one row with every head.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when run as a file from anywhere

from arena.errors import ConfigError  # noqa: E402
from arena.interventions import parse_heads, scale_decay  # noqa: E402
from arena.model import load  # noqa: E402
from arena.tasks import IGNORE, build_task  # noqa: E402

WORD_PROBLEMS = ("s3", "s5", "a5")


def task_of(run_dir: Path):
    """The run's task, rebuilt from config.yaml with every recorded key."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())["task"]
    name = cfg.pop("name")
    return name, build_task(name, **cfg)


def fits(task, length: int) -> bool:
    """The task can build sequences `length` long (brackets need >= 5 tokens, parity and arithmetic >= 2 or 3)."""
    try:
        task.at_length(length)
    except ConfigError:
        return False
    return True


def odd_tokens(task) -> torch.Tensor:
    """[vocab] bool: the token is an odd permutation (PAD counts as even; A5 has none)."""
    perms = torch.as_tensor(task.perms)  # [order, degree]
    inversions = (perms[:, :, None] > perms[:, None, :]).triu(1).sum((1, 2))
    return torch.cat([torch.zeros(1, dtype=torch.bool), inversions % 2 == 1])


@torch.no_grad()
def hits(model, batch, sign_of: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] bool: the argmax is right (with `sign_of`, a [vocab] bool table: has the right sign), and [B, T]
    bool: the position is scored."""
    logits, _ = model(batch.inputs)  # [B, T, vocab]
    scored = batch.targets != IGNORE
    guess, target = logits.argmax(-1), batch.targets.clamp(min=0)
    if sign_of is not None:
        guess, target = sign_of[guess], sign_of[target]
    return (guess == target) & scored, scored


def accuracies(model, name: str, task, lengths: list[int], num: int, seed: int, sign: bool = False) -> list[float]:
    """Accuracy at each length; `sign` (word problems): the share of predicted elements of the right sign (even or
    odd permutation), the Z2 part of the state a [-1, 1] eigenvalue can flip (chance 0.5)."""
    if name in WORD_PROBLEMS:  # one batch as long as the longest L; column L = the L-th token's accuracy
        batch = task.at_length(max(lengths)).generate(num, seed, "test")
        right, _ = hits(model, batch, odd_tokens(task) if sign else None)
        return [right[:, L - 1].double().mean().item() for L in lengths]
    out = []
    for L in lengths:
        right, scored = hits(model, task.at_length(L).generate(num, [seed, L], "test"))
        out.append((right.sum() / scored.sum()).item())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--lengths", default="3,5,7,9,13,17,25,39,64,128,256", help="comma-separated lengths L")
    parser.add_argument("--num", type=int, default=500, help="test sequences per length (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--open-gate", default="", help="each | all | LAYER:HEAD,...: rows again with those heads' "
                        "log-decay scaled by --gate-scale (GDN / KDA)")
    parser.add_argument("--gate-scale", type=float, default=0.25, help="in [0, 1]; 0 opens the gate (default 0.25)")
    args = parser.parse_args()
    try:
        lengths = sorted({int(x) for x in args.lengths.split(",")})
    except ValueError:
        sys.exit(f"--lengths={args.lengths!r} must be comma-separated integers, e.g. 5,9,17,39,64")
    if lengths[0] < 1 or args.num < 1:
        sys.exit(f"--lengths must be >= 1 (got {lengths[0]}) and --num >= 1 (got {args.num})")
    if not 0.0 <= args.gate_scale <= 1.0:
        sys.exit(f"--gate-scale={args.gate_scale} must be in [0, 1] (0 opens the gate, 1 leaves it as trained)")
    torch.set_num_threads(1)  # small models: one thread is the fastest on a shared CPU
    print("run\ttask\tchance\t" + "\t".join(f"L={L}" for L in lengths))
    for run_dir in args.run_dirs:
        name, task = task_of(run_dir)
        # a length the task cannot build is a "-" column (word problems: one batch of the longest, every L fits)
        usable = [L for L in lengths if name in WORD_PROBLEMS or fits(task, L)]
        model = load(run_dir)
        try:  # before this run's rows: a head the model lacks stops the script, not a half-printed run
            interventions = head_sets(args.open_gate, model) if args.open_gate else []
        except ConfigError as err:
            sys.exit(f"accuracy_by_length: {run_dir}: {err}")
        print_rows(run_dir.name, model, name, task, lengths, usable, args)
        for heads in interventions:
            label = " ".join(f"{layer}:{head}" for layer, head in heads)
            with scale_decay(model, heads, args.gate_scale):
                print_rows(f"{run_dir.name}[decay^{args.gate_scale:g} {label}]", model, name, task, lengths, usable,
                           args)


def head_sets(spec: str, model) -> list[list[tuple[int, int]]]:
    """--open-gate's head sets: `each` -> one set per head; else one set (`all` or LAYER:HEAD,...)."""
    if spec == "each":
        return [[head] for head in parse_heads("all", model)]
    return [parse_heads(spec, model)]


def print_rows(label: str, model, name: str, task, lengths: list[int], usable: list[int], args) -> None:
    """One run's row (and its sign row for S3 / S5), tab-separated."""
    accs = dict(zip(usable, accuracies(model, name, task, usable, args.num, args.seed)))
    cells = "\t".join(f"{accs[L]:.3f}" if L in accs else "-" for L in lengths)
    print(f"{label}\t{name}\t{task.chance_accuracy:.3f}\t{cells}")
    if name in ("s3", "s5"):  # groups with odd elements: is the sign (the Z2 quotient) tracked?
        signs = accuracies(model, name, task, usable, args.num, args.seed, sign=True)
        print(f"{label}\t{name}:sign\t0.500\t" + "\t".join(f"{a:.3f}" for a in signs))


if __name__ == "__main__":
    main()
