"""GDN with and without its decay gate from the same initial weights: the paired test of the plateau diagnosis.

`mixer.decay=false` (DeltaNet) builds no a_proj, A_log, dt_bias, so `python -m arena.run ... mixer.decay=false` draws
every later weight differently from the default GDN of the same seed: that comparison is unpaired. This script pairs
it. Per seed, with the config `python -m arena.run` composes for the overrides below:
    a  default GDN, built and trained exactly as arena.run builds and trains it
    b  decay=false, every parameter copied from a's initial weights (load_state_dict(strict=False); the keys left
       over must be exactly the gate's: a_proj.weight, A_log, dt_bias of each layer)
    c  a's initial weights with the gate frozen (requires_grad False on those keys): the gate exists but never learns
Each arm runs arena.train.train (arena's optimizer, schedule, data stream, evaluation); the script checks that the
arms start from equal shared weights and that every training batch and the validation set hash the same.

    PYTHONPATH=. python scripts/gdn_gate_paired.py --seeds 0 1 2 --arms a b c --out /tmp/gdn_paired
    PYTHONPATH=. python scripts/gdn_gate_paired.py --seeds 0 task.seq_len=256   # extra Hydra overrides
    PYTHONPATH=. python scripts/gdn_gate_paired.py --seeds 0 --arms a & ... --seeds 0 --arms b   # arms at once
    PYTHONPATH=. python scripts/gdn_gate_paired.py --seeds 4 --weights-seed 0 --arms a   # weights of 0, data of 4

A call stopped by SIGTERM (a device call's time limit) checkpoints the running arm and exits 124; the same command
again resumes it from its checkpoint and skips finished arms (set train.checkpoint_every for long runs).

Prints one row per (seed, arm): the step at which validation accuracy first exceeds LEFT (10x chance) and the
validation accuracy at the last step; each arm's run dir (metrics.jsonl, summary.json) is under --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import arena.train as arena_train  # noqa: E402
from arena.protocol import validation_set  # noqa: E402
from arena.report.sweeps import compose_point  # noqa: E402
from arena.run import mixer_specs  # noqa: E402
from arena.train import Run, train  # noqa: E402

# the small-scale plateau of results/2026-12-06_kimi_synthetic_full/README.md (chance 1/255 = 0.004)
OVERRIDES = ["+experiment=kimi_synthetic", "task=mqar_kimi", "task.seq_len=128", "task.vocab_size=512",
             "model.d_model=64", "train.batch_size=32", "train.warmup_steps=100", "train.eval_every=100",
             "train.steps=1200", "train.lr=3e-3", "train.device=cpu", "task.num_test=200", "eval.lengths=[]",
             "mixer=gdn"]
GATE = ("a_proj.weight", "A_log", "dt_bias")  # GatedDeltaNet's parameters that exist only with decay=True
LEFT = 0.039


def build(overrides: list[str]) -> Run:
    """The Run arena.run's hydra_main builds for these overrides (config resolved with Hydra's runtime choices,
    composed as the report composes a sweep's points)."""
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config, choices = compose_point(overrides)
        chosen = choices["mixer"]
        return Run(config, mixer_specs(OmegaConf.create(config), chosen), chosen)


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class HashedStream:
    """arena.train's batch stream, recording a hash of every batch it hands to the step."""

    def __init__(self, stream, hashes: list[str]):
        self.stream, self.hashes = stream, hashes

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.stream)
        self.hashes.append(digest(batch.inputs, batch.scored_index, batch.scored_targets))
        return batch

    def close(self):
        self.stream.close()


def run_arm(run: Run, rng: torch.Tensor, run_dir: Path, name: str) -> tuple[dict, list[str], list[dict]]:
    """Train one arm, or go on from the checkpoint a stopped call left (the checkpoint holds the paired run's own
    weights, so resuming keeps the pairing); a finished arm is read back, not trained again. The batch hashes
    of every call are kept in batch_hashes.txt, each at its step."""
    hashes_file = run_dir / "batch_hashes.txt"
    summary_file = run_dir / "summary.json"
    done = summary_file.is_file() and json.loads(summary_file.read_text()).get("status") in ("completed", "diverged")
    resume = not done and (run_dir / "checkpoint").is_dir()
    if not done:
        first_step, hashes = [0], []
        real = arena_train.batch_stream

        def hashed(r, first=0):
            first_step[0] = first
            return HashedStream(real(r, first), hashes)

        arena_train.batch_stream = hashed
        torch.set_rng_state(rng)  # the global RNG as right after a's build (training draws none; kept equal anyway)
        stopped = False
        try:
            if not resume:
                (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            train(run, run_dir, name, resume=resume)
        except KeyboardInterrupt:  # SIGTERM: train() wrote the checkpoint and summary (status interrupted)
            stopped = True
        finally:
            arena_train.batch_stream = real
        earlier = hashes_file.read_text().split()[:first_step[0]] if resume and hashes_file.is_file() else []
        hashes_file.write_text("\n".join(earlier + hashes) + "\n")
        if stopped:
            print(f"gdn_gate_paired: {name} interrupted; run the same command again to resume", flush=True)
            sys.exit(124)
    summary = json.loads(summary_file.read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, hashes_file.read_text().split(), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["a", "b"], choices=["a", "b", "c"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/gdn_paired"))
    parser.add_argument("--weights-seed", type=int, default=None,
                        help="start every arm from this seed's initial weights, with --seeds' data and validation "
                             "(separates the starting weights from the data order; run dirs seed{S}_weights{W})")
    args, extra = parser.parse_known_args()
    for seed in args.seeds:
        overrides = [*OVERRIDES, f"train.seed={seed}", f"results_dir={args.out}", *extra]
        runs = {"a": build(overrides)}  # torch.manual_seed(seed) and the model, as arena.run
        rng = torch.get_rng_state()
        crossed = args.weights_seed is not None and args.weights_seed != seed
        if crossed:  # the weights arena.run draws for weights_seed, the batches and validation set of seed
            donor = build([*overrides, f"train.seed={args.weights_seed}"])  # the later train.seed wins
            runs["a"].model.load_state_dict(donor.model.state_dict())
            del donor
        initial = {k: v.clone() for k, v in runs["a"].model.state_dict().items()}
        gate = {k for k in initial if k.endswith(tuple("." + g for g in GATE))}
        assert gate, "no gate parameters: is the mixer gdn with decay on?"
        if "b" in args.arms:
            runs["b"] = build([*overrides, "mixer.decay=false"])
            missing, unexpected = runs["b"].model.load_state_dict(initial, strict=False)
            assert not missing and set(unexpected) == gate, (missing, unexpected)
        if "c" in args.arms:
            runs["c"] = build(overrides)
            runs["c"].model.load_state_dict(initial)
            for k, p in runs["c"].model.named_parameters():
                p.requires_grad_(k not in gate)
        for arm, run in runs.items():  # pairing: every shared weight equal at the start, the same validation set
            state = run.model.state_dict()
            assert all(torch.equal(state[k], initial[k]) for k in state), arm
            assert set(initial) - set(state) == (gate if arm == "b" else set()), arm
        shared = digest(*(initial[k] for k in sorted(initial) if k not in gate))  # the weights every arm starts from
        valid = {arm: digest(validation_set(r.task, seed).inputs) for arm, r in runs.items()}
        assert len(set(valid.values())) == 1, valid
        seed_dir = args.out / (f"seed{seed}_weights{args.weights_seed}" if crossed else f"seed{seed}")
        results = {}
        for arm in [a for a in ("a", "b", "c") if a in args.arms]:
            (seed_dir / arm).mkdir(parents=True, exist_ok=True)
            results[arm] = run_arm(runs[arm], rng, seed_dir / arm, f"gdn-{arm}-seed{seed}")
        saved = seed_dir / "a" / "batch_hashes.txt"  # arm a's batches, also from an earlier call
        # arms may train in separate processes at once (--arms a, --arms b): one whose arm a has not written its
        # hashes yet is checked when the command runs again after a has (finished arms are only read back)
        first = results["a"][1] if "a" in results else saved.read_text().split() if saved.is_file() else None
        for arm, (summary, hashes, rows) in results.items():
            if first is None:
                print(f"gdn_gate_paired: seed {seed} arm {arm}: arm a's batches not written yet; run again after "
                      "it to check the pairing", flush=True)
            else:
                n = min(len(hashes), len(first))
                assert hashes[:n] == first[:n], f"seed {seed} arm {arm}: batches differ from arm a's"
            left = next((r["step"] for r in rows if r["accuracy"] > LEFT), None)
            print(json.dumps({"seed": seed, "weights_seed": args.weights_seed if crossed else seed, "arm": arm,
                              "left_at": left, "last_step": rows[-1]["step"],
                              "valid_accuracy_last": rows[-1]["accuracy"], "test_accuracy": summary["test_accuracy"],
                              "batches": len(hashes), "first_batch": hashes[0], "valid_set": valid[arm],
                              "initial_weights": shared,
                              "trainable": sum(p.numel() for p in runs[arm].model.parameters() if p.requires_grad)}),
                  flush=True)


if __name__ == "__main__":
    main()
