"""The held-out protocol of a training run (arena/train.py): what validation scores, which weights the test
scores, and what summary.json says about them.

Used by arena/train.py's step loop; tested by `python -m pytest -q tests/test_validation_protocol.py`.

    valid = validation_set(task, seed)   # the training distribution, without the fixed training set's sequences
    kept = Best(resume_state)            # the best validation's result and (train.test_on=best) its weights
    ...                                  # the steps: kept updated at each better validation; write_checkpoint
    summary, final_weights = score_test(run, run_dir, trainer, test, kept, steps, best, best_step, result, ...)

Validation steers early stopping, the tested weights and the learning-rate choice; the test split is scored once,
at the end, on the weights train.test_on names (by default the best validation's, restored first), and so is each
of eval.lengths (`length_eval`: a length that fails is recorded in `length_eval_error`, the run stays completed).
`Best` and the summary fields of PROGRESS are saved with every checkpoint (`write_checkpoint`), so a resumed run
tests the same weights and reports the same best as one never stopped.

"Best" is by the task's `selection` (arena/tasks/base.py; `selection_score`): the highest validation accuracy
(-MSE for regression), or for a task selected by loss (text) the lowest validation loss. summary.json names it
(`selected_by`, `selection_score`); its valid_accuracy and best_accuracy are the accuracy of that evaluation.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from arena import checkpoint, parallel
from arena.batches import training_set
from arena.errors import ConfigError
from arena.evaluate import evaluate, evaluate_length
from arena.tasks import Batch, Task
from arena.tasks.base import split_seed
from arena.tasks.shortcuts import summary_fields as shortcut_fields

if TYPE_CHECKING:  # arena.train imports this module
    from arena.train import Run, Trainer


VALID_DRAWS = 64  # draws of validation examples at most, to replace those found in the fixed training set


def validation_set(task: Task, seed: int) -> Batch:
    """task.cfg.num_test examples of split "valid" (the training distribution, its own seed stream), none of them a
    sequence of the fixed training set (num_train > 0): held out from training as the test is. A short parity
    string or expression is often in a 20k training set (at the parity defaults 72% of the first draw is), so those
    are replaced by further draws; validation then scores sequences training never showed. Runs on fresh samples
    (num_train=0) and batches of another kind (text: held-out documents; regression) keep the first draw."""
    n, stream = task.cfg.num_test, split_seed(seed, "valid")
    first = task.generate(n, stream, split="valid")
    if task.cfg.num_train == 0 or type(first) is not Batch:
        return first
    # the training set batch_stream shuffles (drawn once); rows compared by a 64-bit hash of their bytes (a collision
    # would only drop one validation sequence)
    seen = {hash(row.tobytes()) for row in training_set(task, seed).inputs.numpy()}
    parts, have = [], 0
    for draw in range(VALID_DRAWS):
        batch = first if draw == 0 else task.generate(n, stream + [draw], split="valid")
        unseen = torch.tensor([hash(row.tobytes()) not in seen for row in batch.inputs.numpy()], dtype=torch.bool)
        parts.append(batch[unseen][: n - have])
        have += len(parts[-1])
        if have == n:
            break
    else:
        raise ConfigError(f"task {task.registry_name}: the training set (num_train={task.cfg.num_train}) holds nearly "
                          f"every sequence of the training distribution: {VALID_DRAWS} draws found {have} of "
                          f"num_test={n} validation sequences it does not hold; lower task.num_train or widen the "
                          "training distribution (e.g. train_max_len)")
    if len(parts) == 1:
        return parts[0]
    return Batch(torch.cat([p.inputs for p in parts]), torch.cat([p.targets for p in parts]))


# summary fields the loop keeps current; saved in checkpoints so a resumed run reports the same best and last
PROGRESS = ("valid_accuracy", "best_accuracy", "best_step", "final_accuracy", "final_sequence_accuracy",
            "train_accuracy", "selected_by", "selection_score")
SELECTIONS = ("accuracy", "loss")  # Task.selection: what a run's best validation evaluation is best in


def selection_score(task: Task, result: dict) -> float:
    """What the best validation evaluation maximizes (higher is better): the accuracy (-MSE for regression), or
    for a task selected by loss (`task.selection == "loss"`: text) minus the validation loss, so the best
    evaluation is the lowest-loss one (for text, the lowest bits per byte)."""
    if task.selection == "loss":
        return -result["test_loss"]  # evaluate() calls the loss of the split it scored test_loss
    return result["accuracy"]


def resumed_score(task: Task, progress: dict, kept: Best) -> float:
    """The best selection score a resumed run compares later evaluations with: the checkpoint's; from a checkpoint
    written before selection_score was saved, the best accuracy (a task selected by accuracy) or the saved best
    result's score (like is compared with like)."""
    if progress.get("selection_score") is not None:
        return progress["selection_score"]
    if task.selection == "accuracy":
        return progress["best_accuracy"]
    return selection_score(task, kept.result) if kept.result else -math.inf


def best_fields(task: Task, best: float, best_step: int | None, kept: Best) -> dict:
    """summary.json's fields of the best validation evaluation: its accuracy (valid_accuracy, and best_accuracy as
    older summaries named it; for a task selected by accuracy that is `best` itself), its step, and what selected
    it: `selected_by` (the task's selection) and `selection_score` (accuracy, or minus the validation loss)."""
    accuracy = best if task.selection == "accuracy" else kept.result.get("accuracy")
    return {"valid_accuracy": accuracy, "best_accuracy": accuracy, "best_step": best_step,
            "selected_by": task.selection, "selection_score": best}


class Best:
    """The best validation evaluation so far: its result and (train.test_on=best) a CPU copy of its weights, taken
    when validation improves and restored before the test. Saved with every checkpoint (best.safetensors), so a
    resumed run tests the same weights as one never stopped."""

    def __init__(self, resume_state: dict | None = None):
        resume_state = resume_state or {}
        self.weights: dict | None = resume_state.get("best_weights")
        self.result: dict = resume_state.get("best_result") or {}


def write_checkpoint(run: Run, run_dir: Path, trainer: Trainer, step: int, progress: dict, digest: str | None,
                     best: Best, final: bool = False, weights: dict | None = None, tested: dict | None = None) -> None:
    """Write the checkpoint of the state after `step` steps (arena/checkpoint.py); `final` marks a finished run,
    which a rerun never resumes. `weights` replaces the model's own (the final weights, when the model holds the
    restored best ones); `tested` adds which weights the test scored to meta.json (arena.model.load reads it)."""
    state = {"step": step, "trainer": trainer.state_dict(), "progress": {k: progress.get(k) for k in PROGRESS},
             "best_result": best.result}
    meta = {"step": step, "config_hash": digest, "final": final, "best_step": progress.get("best_step"),
            **(tested or {})}
    if weights is None and trainer.net is not None and run.train_cfg.parallel == "fsdp":
        weights = trainer.copy_weights()  # sharded: gathered whole (every rank takes part)
    if parallel.is_main():
        checkpoint.save(run_dir, run, state, meta, weights=weights, best=best.weights)


def score_test(run: Run, run_dir: Path, trainer: Trainer, test: Batch, kept: Best, steps: int, best: float,
               best_step: int | None, result: dict, train_accuracy: float,
               tokens_per_s: float) -> tuple[dict, dict | None]:
    """After the last step (`steps` done): the test split scored on the weights train.test_on names (the best
    validation's, `kept`, restored into the model first; or the final ones), then the fields summary.json adds
    about them: regression MSEs and closed-form baselines, text's perplexity and bits per byte, the shortcut
    rules' scores, eval.lengths and lm-eval. `best` (its selection score), `best_step` and `result` are of the best
    and the last validation evaluations. Returns (the completed run's summary, the final weights when the model now
    holds the best ones, else None: the final checkpoint saves them)."""
    cfg, task, model, amp = run.train_cfg, run.task, run.model, run.amp
    chance = getattr(task, "chance_accuracy", 0.0)
    metrics_path = run_dir / "metrics.jsonl"
    stopped_early = steps < cfg.steps
    # the weights to test: the best validation's (restored in place; the final ones go to the checkpoint) or, with
    # train.test_on=final or no copy of the best (a run resumed from a checkpoint that kept none), the final ones
    final_weights, tested_step, valid_result = None, steps, result
    if cfg.test_on == "best" and best_step != steps and kept.weights is not None:
        final_weights = trainer.copy_weights()
        trainer.restore_weights(kept.weights)
        tested_step, valid_result = best_step, kept.result
    test_model = "best" if cfg.test_on == "best" and tested_step == best_step else "final"
    with parallel.full_weights(trainer.net):
        final_test = parallel.agree(evaluate(model, test, cfg.eval_batch_size, amp, chance))
    summary = {
        "status": "completed", "steps": steps, **best_fields(task, best, best_step, kept),
        "test_accuracy": final_test["accuracy"], "test_sequence_accuracy": final_test["sequence_accuracy"],
        "test_scaled_accuracy": final_test["scaled_accuracy"], "train_accuracy": train_accuracy,
        "final_accuracy": result["accuracy"], "final_sequence_accuracy": result["sequence_accuracy"],
        "final_scaled_accuracy": result["scaled_accuracy"], "chance_accuracy": chance,
        "stopped_early": stopped_early, "tokens_per_s": tokens_per_s,
        "test_model": test_model, "tested_step": tested_step,
        "message": "reached train.target_accuracy" if stopped_early else "ran all train.steps",
    }
    if "mse" in final_test:  # a regression task: MSEs (lower is better), and closed-form predictors on the same test
        summary.update(primary_metric="neg_mse", valid_mse=-best, test_mse=final_test["mse"],
                       test_mse_curve=final_test["mse_curve"], final_mse=result["mse"])
        baselines = getattr(task, "closed_form_baselines", None)
        if baselines is not None:
            summary["baselines"] = baselines(test, run.train_cfg.seed)
    if "bits_per_byte" in final_test:  # language modelling (task text): the tested weights' validation and test
        for split, res in (("valid", valid_result), ("test", final_test)):
            summary.update({f"{split}_loss": res["test_loss"], f"{split}_perplexity": res["perplexity"],
                            f"{split}_bits_per_byte": res["bits_per_byte"]})
    try:  # the rules a result must beat, on the same test split (arena/tasks/shortcuts.py)
        summary.update(shortcut_fields(task, test))
    except Exception as err:  # a baseline must never cost the trained result
        summary["shortcuts_error"] = f"{type(err).__name__}: {err}"
    if run.eval_cfg.lengths:
        with parallel.full_weights(trainer.net):
            summary.update(parallel.agree(length_eval(run, metrics_path, steps)))
    if run.eval_cfg.lm_eval.tasks:  # lm-eval on the tested weights (arena/lm_eval.py); a failure is recorded
        from arena.lm_eval import evaluate_run
        summary.update(evaluate_run(run, run_dir))
    return summary, final_weights


def length_eval(run: Run, metrics_path: Path, steps: int) -> dict:
    """Accuracy at each of eval.lengths, one length at a time: a length that fails (out of memory, say) is
    recorded in `length_eval_error` beside the others, and never costs the trained result."""
    by_length, errors = {}, {}
    for length in sorted(set(run.eval_cfg.lengths)):
        try:
            by_length[length] = evaluate_length(run.model, run.task, length, run.eval_cfg, run.train_cfg.seed,
                                                run.amp)
        except Exception as err:
            errors[str(length)] = f"{type(err).__name__}: {err}"
            print(f"arena: warning: eval.lengths: length {length} failed ({errors[str(length)]}); the trained "
                  f"result is kept", file=sys.stderr)
    if not parallel.is_main():  # every rank evaluates (FSDP needs them all); rank 0 writes and tells
        return {}
    with open(metrics_path, "a") as f:
        for length, res in by_length.items():
            record = {"step": steps, "eval": "length", "split": "test", "length": length,
                      "train_seq_len": run.task.seq_len, **res}
            f.write(json.dumps(record) + "\n")
    if by_length:
        print("arena: held-out accuracy by length: "
              + ", ".join(f"{L}: {r['accuracy']:.3f}" for L, r in by_length.items()), file=sys.stderr)
    out = {"length_eval": {str(length): res for length, res in by_length.items()}}
    return {**out, "length_eval_error": errors} if errors else out
