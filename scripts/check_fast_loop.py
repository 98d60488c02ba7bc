"""GPU check: the fast training path (Trainer, fused Triton ops, Triton SSD) against the plain one, per mixer.

    python scripts/check_fast_loop.py [--steps 200] [--seq-len 256] [--mixers kda,gdn,...] [--out DIR]

For every mixer, two runs from the same seed and config (Kimi's 2-layer model, palindrome, B = 64, bf16):
  plain: arena.testing.reference_losses (inline generation, mask scoring, per-tensor AdamW, a host read per
         step) with the plain layers (fused=off; Mamba2's SSD in torch), i.e. the code path before the fast loop;
  fast:  arena.testing.trainer_losses with the defaults (fused ops, Triton SSD, fused AdamW, worker process,
         forward and backward replayed as CUDA graphs), and the same with train.cuda_graphs=off (eager).
It prints max |d loss| over the steps for both (the goal: <= 0.02, bf16 noise) and then runs 5 more Trainer steps under
torch.cuda.set_sync_debug_mode("error"), which raises on any host sync inside the step. Exit 1 on a failure.
Over the goal, a control run tells a bug from chaos: the plain run again with only the optimizer's summation order
changed. Where that control itself leaves the goal at step h (a run so sensitive that rounding alone moves its
curve, as the 3:1 hybrid's at lr 1e-3), the fast paths pass if they stay within the goal for the steps before h and
h >= MIN_HORIZON; the result names h (`verdict`).
The CPU twin is tests/test_train_loop.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arena.run import mixer_specs  # noqa: E402
from arena.testing import reference_losses, trainer_losses  # noqa: E402
from arena.train import Run, Trainer, batch_stream  # noqa: E402

GOAL = 0.02
MIN_HORIZON = 30  # fewer steps of agreement than this is no evidence, whatever the control does
PLAIN = {"kda": {"fused": "off"}, "gdn": {"fused": "off"}, "mamba2": {"fused": "off", "impl": "torch"}}


def build(mixer: str, seq_len: int, steps: int, plain: bool, graphs: str = "auto") -> Run:
    from hydra import compose, initialize_config_dir

    model = "hybrid_3to1" if mixer == "hybrid_3to1" else "kimi_2l"
    chosen = "kda" if mixer == "hybrid_3to1" else mixer
    overrides = [f"mixer={chosen}", f"model={model}", "task=palindrome", f"task.seq_len={seq_len}",
                 "task.num_train=0", "task.num_test=64", f"train.steps={steps}", "train.batch_size=64",
                 "train.lr=1e-3", "train.warmup_steps=20", f"train.cuda_graphs={graphs}"]
    if mixer == "hybrid_3to1":  # Kimi's layer width, so its KDA and MLA layers have the kimi_2l heads
        overrides.append("model.d_model=256")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    specs = mixer_specs(cfg, chosen)
    if plain:
        specs = {name: {**spec, **PLAIN.get(spec["name"], {})} for name, spec in specs.items()}
    torch.manual_seed(0)
    return Run(config, specs, chosen)


def _captures(run: Run) -> bool:
    """Whether one Trainer step on `run` captures its CUDA graphs (False: capture failed and it fell back)."""
    trainer, batches = Trainer(run), batch_stream(run)
    try:
        trainer.step(next(batches), 0)
    finally:
        batches.close()
    return trainer._graphed is not None


def max_gap(a: list[float], b: list[float], steps: int | None = None) -> float:
    """max |a - b| over the first `steps` steps (all when None); 0.0 over no steps."""
    return max((abs(x - y) for x, y in list(zip(a, b))[:steps]), default=0.0)


def horizon(plain: list[float], control: list[float]) -> int:
    """The first step at which the rounding control leaves the goal (len(plain) if it never does)."""
    return next((i for i, (x, y) in enumerate(zip(plain, control)) if abs(x - y) > GOAL), len(plain))


def verdict(plain: list[float], fast: list[float], eager: list[float], control: list[float] | None,
            sync_free: str) -> tuple[bool, str]:
    """(passed, result) of one mixer: both fast paths within GOAL of the plain curve over every step, or, where the
    rounding control itself leaves GOAL at step h >= MIN_HORIZON, over the h steps before it; sync-free in any case."""
    if sync_free != "yes":
        return False, "FAIL (syncs)"
    worst = max(max_gap(plain, fast), max_gap(plain, eager))
    if worst <= GOAL:
        return True, "pass"
    if control is None:
        return False, "FAIL"
    h = horizon(plain, control)
    noise = max_gap(plain, control)
    if h >= MIN_HORIZON and h < len(plain) and max(max_gap(plain, fast, h), max_gap(plain, eager, h)) <= GOAL:
        return True, f"pass within the rounding horizon ({h} steps; rounding control {noise:.4f} over all)"
    return False, f"FAIL (rounding control {noise:.4f}, within the goal for {h} steps)"


def _rounding_control(mixer: str, args) -> list[float]:
    """The plain run with only the optimizer's summation order changed (per-tensor -> foreach AdamW): its distance
    from the plain curve is the curve's sensitivity to rounding, the yardstick for a difference."""
    import arena.testing as testing

    real_adamw = torch.optim.AdamW

    def foreach_adamw(*a, **kw):
        kw.update(foreach=True, fused=False)
        return real_adamw(*a, **kw)

    testing.torch.optim.AdamW = foreach_adamw
    try:
        control = reference_losses(build(mixer, args.seq_len, args.steps, plain=True), args.steps)
    finally:
        testing.torch.optim.AdamW = real_adamw
    return control


def variants(args) -> int:
    """max |d loss| against the plain loop with plain layers, for each way of mixing the two paths."""

    print("| mixer | plain loop, fused layers | fast loop, plain layers | fast loop, fused layers | "
          "control: plain with foreach AdamW |")
    print("| --- | --- | --- | --- | --- |")
    for mixer in args.mixers.split(","):
        base = reference_losses(build(mixer, args.seq_len, args.steps, plain=True), args.steps)
        cells = []
        for loop, plain in ((reference_losses, False), (trainer_losses, True), (trainer_losses, False)):
            other = loop(build(mixer, args.seq_len, args.steps, plain=plain), args.steps)
            cells.append(max_gap(base, other))
        cells.append(max_gap(base, _rounding_control(mixer, args)))
        print(f"| {mixer} | " + " | ".join(f"{c:.4f}" for c in cells) + " |", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--mixers", default="kda,gdn,mamba2,mla,mla_nope,hybrid_3to1")
    parser.add_argument("--out", default=None, help="folder for losses.json")
    parser.add_argument("--variants", action="store_true",
                        help="per mixer, separate the loop from the layers: plain loop + fused layers, fast loop + "
                             "plain layers, and a control with rounding-level noise (per-tensor AdamW -> foreach)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("check_fast_loop: needs a CUDA device", file=sys.stderr)
        return 2
    if args.variants:
        return variants(args)
    rows, record, ok = [], {}, True
    for mixer in args.mixers.split(","):
        plain = reference_losses(build(mixer, args.seq_len, args.steps, plain=True), args.steps)
        fast_run = build(mixer, args.seq_len, args.steps, plain=False)
        fast = trainer_losses(fast_run, args.steps)
        eager = trainer_losses(build(mixer, args.seq_len, args.steps, plain=False, graphs="off"), args.steps)
        worst_eager, worst, first30 = max_gap(plain, eager), max_gap(plain, fast), max_gap(plain, fast, 30)
        # no host sync inside a step: any synchronizing call raises under this mode
        trainer, batches = Trainer(fast_run), batch_stream(fast_run, start_step=args.steps)
        sync_free = "yes"
        try:
            for step in range(3):  # warm: the first steps build cached layouts
                trainer.step(next(batches), args.steps + step)
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            for step in range(5):
                trainer.step(next(batches), args.steps + 3 + step)
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
        except RuntimeError as err:
            torch.cuda.set_sync_debug_mode("default")
            sync_free = f"NO ({str(err).splitlines()[0][:80]})"
        finally:
            batches.close()
        graphed = "yes" if _captures(fast_run) else "NO"
        # over the goal: how far the plain run moves from itself when only rounding changes (foreach AdamW)
        control = _rounding_control(mixer, args) if max(worst, worst_eager) > GOAL else None
        passed, result = verdict(plain, fast, eager, control, sync_free)
        ok &= passed
        rows.append((mixer, plain[0], plain[-1], fast[-1], first30, worst, worst_eager, graphed, sync_free, result))
        record[mixer] = {"plain": plain, "fast": fast, "fast_eager": eager, **({"control": control} if control else {})}
        print(f"{mixer}: max |d loss| {worst:.4f} (first 30: {first30:.4f}; graphs off: {worst_eager:.4f}), "
              f"graphs captured: {graphed}, sync-free: {sync_free}", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "losses.json").write_text(json.dumps(record))
    print(f"\n{args.steps} steps, T={args.seq_len}, B=64, bf16, {torch.cuda.get_device_name()}")
    print("| mixer | loss@0 | plain loss@end | fast loss@end | max d (30) | max d (all) | max d, graphs off | "
          "graphs captured | sync-free | result |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m, l0, lp, lf, d30, d, de, g, sf, res in rows:
        print(f"| {m} | {l0:.3f} | {lp:.3f} | {lf:.3f} | {d30:.4f} | {d:.4f} | {de:.4f} | {g} | {sf} | {res} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
