"""Training and held-out evaluation of one (model, task) pair: a loop that never waits, and a self-describing run dir.

Called by `python -m arena.run` (which composes the Hydra config); usable directly as
`train(Run(config_dict, mixer_specs, default_spec), run_dir, name)`. The run directory receives:
    config.yaml     the resolved config          env.json      git sha, versions, device
    metrics.jsonl   one JSON line per evaluation summary.json  written atomically at the end
    checkpoint/     weights + trainer state, at the end, every `train.checkpoint_every` steps and on SIGTERM
                    (arena/checkpoint.py); `train(..., resume=True)` goes on from it
Status is `completed`, `diverged` (a NaN/inf loss; not an exception), `interrupted` (KeyboardInterrupt or SIGTERM,
re-raised as KeyboardInterrupt) or `failed` (an exception, re-raised); the last two keep the steps done and the
validation accuracies so far. A length of `eval.lengths` that fails after training is recorded as
`length_eval_error`; the run stays completed.

The step (`Trainer.step`, arena/trainer.py) never reads the GPU from the host: loss and accuracy accumulate on the
device and are read at each evaluation; the divergence check peeks at a device flag every `DIVERGENCE_PEEK` steps
through a non-blocking copy, so it costs no stall; batches of fresh samples are generated ahead in a background
process (`batch_stream`, arena/batches.py), and the scored positions are gathered by index (a boolean mask would
sync). The reported tokens/s is the steady state: the first `STEADY_AFTER` steps (Triton compilation, allocator
warm-up) are left out. Under torchrun, `train.parallel=ddp|fsdp` spreads one run over the processes
(arena/parallel.py): the same global batch, loss and metrics as one process; only rank 0 writes. The held-out
protocol (validation set, best weights, test and length scoring, summary fields) is arena/protocol.py; device,
precision, peak memory and the SIGTERM handler are arena/runtime.py.

    trainer = Trainer(run)
    for step, batch in zip(range(steps), batch_stream(run)):
        trainer.step(batch, step)
    loss, accuracy = trainer.read_window()      # one host sync
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from arena import checkpoint, parallel
from arena.batches import StepBatch, batch_stream  # re-exported: the step's input and its source
from arena.config_utils import make_config
from arena.errors import ConfigError, choice_error
from arena.evaluate import EvalConfig, evaluate
from arena.loggers import check_logger_config, make_logger
from arena.model import LanguageModel, ModelConfig
from arena.protocol import (  # the held-out protocol
    PROGRESS,
    Best,
    best_fields,
    resumed_score,
    score_test,
    selection_score,
    validation_set,
    write_checkpoint,
)
from arena.provenance import environment, write_json_atomic
from arena.runtime import Stop, autocast_dtype, peak_memory, resolve_device, sync  # device and process
from arena.tasks import Batch, Task, build_task
from arena.tasks.base import split_seed
from arena.trainer import (  # the optimizer step, re-exported: arena.train is where callers find it
    DIVERGENCE_PEEK,
    Trainer,
    graphs_wanted,
    lr_at,
    make_optimizer,
)

STEADY_AFTER = 10  # steps left out of tokens/s: Triton compiles and the allocator warms up in the first ones


@dataclass
class TrainConfig:
    steps: int = 600  # optimizer steps at most
    batch_size: int = 64
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 0.1  # AdamW, on >= 2-D weights except embeddings and flagged decay params
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 50  # linear warmup, then cosine decay to min_lr_ratio * lr at `steps`
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_every: int = 50  # steps between held-out evaluations
    eval_batch_size: int = 500
    target_accuracy: float = 0.99  # stop early once held-out accuracy reaches this; > 1 never stops
    seed: int = 0
    device: str = "auto"  # auto = cuda when present, else cpu
    precision: str = "auto"  # auto = bf16 autocast on cuda, fp32 on cpu; or fp32 | bf16
    # torch intra-op threads on CPU; 0 = torch's default. Models this small are latency-bound: on the 2-core
    # CI machine 2 threads made elementwise ops 5-25x slower than 1 (thread sync costs more than it saves)
    cpu_threads: int = 1
    # background processes generating fresh-sample batches ahead of the step; -1 = 1 on CUDA, 0 (inline) on CPU
    data_workers: int = -1
    # replay the model's forward and backward as CUDA graphs (one launch each instead of hundreds): off | on (capture
    # must work) | auto (on CUDA, falling back to eager with a warning if capture fails; nothing changes on CPU or
    # under DDP/FSDP). auto by default since the replay passed on an H100 for every mixer
    # (tests/test_train_loop.py::test_cuda_graph_replay_equals_eager_steps, scripts/check_fast_loop.py) and made
    # the small probe models' steps 1.5-5x faster (results/2026-12-05_train_speed_h100). Not in the config's hash:
    # the same kernels replayed, so an eager run and a graphed one are the same point
    cuda_graphs: str = "auto"
    # steps between checkpoints (<run_dir>/checkpoint/, arena/checkpoint.py) that a killed run resumes from;
    # 0 = only at the end of the run (and when SIGTERM stops it). 0 by default: the default runs are minutes
    # long on a CPU, where a restart costs little; long GPU runs set it (a tiny model's checkpoint takes
    # milliseconds, so every few hundred steps costs nothing measurable)
    checkpoint_every: int = 0
    # which weights the test split (and eval.lengths) scores: best = those of the best validation evaluation, restored
    # before the test (the learning rate is chosen on that evaluation, so its test score is of the same model);
    # final = the weights after the last step
    test_on: str = "best"
    # data parallelism over the processes torchrun starts (arena/parallel.py): none | ddp | fsdp (FSDP2: weights,
    # gradients and optimizer state sharded). batch_size stays the global batch, so a run means the same at any
    # number of processes
    parallel: str = "none"

    def __post_init__(self):
        # checked when the config is built, before any run dir content or training: a value outside its range
        # would otherwise crash mid-run (steps=0, eval_every=0), fail inside torch (lr<0) or train silently to
        # chance (lr=0) and be recorded as a real result
        for key, (kind, ok, allowed) in TRAIN_RANGES.items():
            value = getattr(self, key)
            number = isinstance(value, kind) and not isinstance(value, bool)
            if not number or not ok(value):
                raise ConfigError(f"train.{key}={value!r} must be {allowed}")
        if self.cuda_graphs not in GRAPH_CHOICES:
            raise choice_error("train.cuda_graphs", self.cuda_graphs, GRAPH_CHOICES)
        if self.test_on not in TEST_ON_CHOICES:
            raise choice_error("train.test_on", self.test_on, TEST_ON_CHOICES)
        if self.parallel not in parallel.PARALLEL_CHOICES:
            raise choice_error("train.parallel", self.parallel, parallel.PARALLEL_CHOICES)


GRAPH_CHOICES = ("auto", "on", "off")
TEST_ON_CHOICES = ("best", "final")


# key -> (accepted types, test, what is allowed) for TrainConfig's numbers
TRAIN_RANGES = {
    "steps": (int, lambda v: v >= 1, "an integer >= 1"),
    "batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "lr": ((int, float), lambda v: 0 < v < math.inf, "a finite number > 0 (at lr=0 nothing is learned)"),
    "weight_decay": ((int, float), lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "beta1": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "beta2": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "warmup_steps": (int, lambda v: v >= 0, "an integer >= 0 (0 = no warmup)"),
    "min_lr_ratio": ((int, float), lambda v: 0 <= v <= 1, "a number in [0, 1] (the final lr over train.lr)"),
    "grad_clip": ((int, float), lambda v: 0 <= v < math.inf, "a finite number >= 0 (0 disables clipping)"),
    "eval_every": (int, lambda v: v >= 1, "an integer >= 1 (steps between validations)"),
    "eval_batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "target_accuracy": ((int, float), lambda v: v > 0, "a number > 0 (> 1 never stops early)"),
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "cpu_threads": (int, lambda v: v >= 0, "an integer >= 0 (0 = torch's default)"),
    "data_workers": (int, lambda v: v >= -1, "an integer >= 0, or -1 for auto"),
    "checkpoint_every": (int, lambda v: v >= 0, "an integer >= 0 (0 = a checkpoint only at the end)"),
}


class Run:
    """Everything one training run builds before its first step; construction validates the whole config."""

    def __init__(self, config: dict, mixer_specs: dict[str, dict], default_spec: str):
        self.config = config
        check_logger_config(dict(config.get("logger") or {}))
        task_cfg = dict(config["task"])
        self.task: Task = build_task(task_cfg.pop("name"), **task_cfg)
        self.train_cfg: TrainConfig = make_config(TrainConfig, "train", **config["train"])
        self.eval_cfg: EvalConfig = make_config(EvalConfig, "eval", **(config.get("eval") or {}))
        for length in self.eval_cfg.lengths:  # each length is built now, so a bad one fails before training
            try:
                self.task.at_length(length)
            except ConfigError as err:
                raise ConfigError(f"eval.lengths={list(self.eval_cfg.lengths)}: length {length} is not possible "
                                  f"for task {config['task']['name']} ({err})") from None
        # a regression task (Task.kind) sets the model's read-in / read-out widths, as a token task sets vocab_size
        io_dims = ({"input_dim": self.task.input_dim, "output_dim": self.task.output_dim}
                   if self.task.kind == "regression" else {})
        if io_dims and self.eval_cfg.lengths:
            raise ConfigError(f"eval.lengths={list(self.eval_cfg.lengths)} is for token tasks; task "
                              f"{config['task']['name']} is a regression task: use eval.lengths=[] and vary its "
                              "n_points instead")
        model_cfg = make_config(ModelConfig, "model", **config["model"], vocab_size=self.task.vocab_size, **io_dims)
        self.device = resolve_device(self.train_cfg.device)
        # this process's part of a torchrun run (0, 1 otherwise); bad combinations fail here, before a run dir
        self.rank, self.world = parallel.check(self.train_cfg.parallel, self.train_cfg.batch_size)
        if self.world > 1:
            parallel.init()  # arena.run's main started it already; a Run built directly under torchrun needs it too
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())  # cuda:LOCAL_RANK (parallel.init)
        if self.world > 1 and self.train_cfg.cuda_graphs == "on":
            raise ConfigError(f"train.cuda_graphs=on is not supported with train.parallel={self.train_cfg.parallel} "
                              "(the captured step would skip DDP/FSDP's hooks); use off")
        self.amp = autocast_dtype(self.train_cfg.precision, self.device)
        if self.eval_cfg.lm_eval.tasks:  # lm-eval after training: task=text, lm-eval installed, known task names
            from arena.lm_eval import check_config
            check_config(self.eval_cfg.lm_eval, self.task, self.world)
        graphs_wanted(self.train_cfg, self.device)  # train.cuda_graphs=on without CUDA fails here, before a run dir
        if self.device.type == "cpu" and self.train_cfg.cpu_threads > 0:
            torch.set_num_threads(self.train_cfg.cpu_threads)
        torch.manual_seed(self.train_cfg.seed)
        self.mixer_specs, self.default_spec = mixer_specs, default_spec  # recorded in checkpoints, for load()
        self.model = LanguageModel(model_cfg, mixer_specs, default_spec).to(self.device)


def train(run: Run, run_dir: Path, name: str, extra: dict | None = None, resume: bool = False) -> dict:
    """Train, evaluate and write summary.json (always, also on failure); `extra` adds fields such as config_hash.

    With `resume`, the run goes on from `<run_dir>/checkpoint/` (arena/checkpoint.py): weights, optimizer, the
    window accumulators, best accuracy and RNG states are restored, metrics.jsonl rows after the checkpoint's
    step are dropped, and the batches continue at that step; on a CPU the result equals, bitwise, a run that
    was never stopped."""
    task, model, device = run.task, run.model, run.device
    resume_state = None
    if resume:
        resume_state = checkpoint.load_into(run_dir, run)  # every rank reads rank 0's run dir
        if parallel.is_main():
            checkpoint.truncate_metrics(run_dir / "metrics.jsonl", resume_state["step"])
    writes = parallel.is_main()  # under torchrun only rank 0 writes files (arena/parallel.py)
    if writes:
        write_json_atomic(run_dir / "env.json", environment(device))
    logger = make_logger(dict(run.config.get("logger") or {}) if writes else {}, run_dir, run.config, name)
    params = model.parameter_counts()
    summary = {
        "name": name, **(extra or {}), "status": "failed", "message": "", "steps": 0,
        "valid_accuracy": None, "test_accuracy": None, "test_sequence_accuracy": None, "test_scaled_accuracy": None,
        "train_accuracy": None, "best_accuracy": None, "best_step": None, "selected_by": task.selection,
        "selection_score": None,
        "final_accuracy": None, "final_sequence_accuracy": None, "parameters": params,
        "state_size": model.state_size(task.seq_len), "flops_per_token": model.flops_per_token(task.seq_len),
        "layers": model.layer_names, "device": str(device), "seq_len": task.seq_len,
    }
    if resume_state is not None:
        summary.update(resume_state["progress"], steps=resume_state["step"], resumed_from_step=resume_state["step"])
    start = time.perf_counter()
    stop = Stop()
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    old_handler = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        # the loop keeps summary's steps and validation accuracies current, so an interrupted or failed run
        # still records how far it got
        summary.update(_loop(run, run_dir, logger, summary, start, stop, resume_state, (extra or {}).get(
            "config_hash")))
    except KeyboardInterrupt:
        summary["status"] = "interrupted"  # not FINISHED (arena/run.py): rerunning the command resumes it
        summary["message"] = (f"interrupted after {summary['steps']} step{'' if summary['steps'] == 1 else 's'}"
                              + (" (SIGTERM)" if stop.requested else ""))
        raise
    except BaseException as err:
        summary["message"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_handler)
        summary["wall_time_s"] = round(time.perf_counter() - start, 3)
        summary.update(peak_memory(device))
        if writes:
            write_json_atomic(run_dir / "summary.json", summary)
        logger.summary(summary)
        logger.finish()
    return summary


def _loop(run: Run, run_dir: Path, logger, summary: dict, start: float, stop: Stop | None = None,
          resume_state: dict | None = None, digest: str | None = None) -> dict:
    task, seed = run.task, run.train_cfg.seed
    # Two held-out splits: validation steers early stopping, the tested weights (train.test_on) and the learning-rate
    # choice; test is scored once, at the end, and is the number to report (choosing on the test set would
    # overstate it). Validation is held-out data of the TRAINING distribution (split="valid": a length probe's
    # training lengths, text's validation documents), so nothing is chosen on the test distribution (longer
    # lengths, another flip-flop density): that is the test's to measure.
    valid = validation_set(task, seed)
    test = task.generate(task.cfg.num_test, split_seed(seed, "test"), split="test")
    trainer = Trainer(run)
    first = 0
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer"])
        first = resume_state["step"]
    batches = batch_stream(run, first)  # replays the shuffles of a fixed training set up to `first`
    bar = tqdm(range(first, run.train_cfg.steps), initial=first, total=run.train_cfg.steps, desc=summary["name"],
               dynamic_ncols=True, file=sys.stderr, disable=not parallel.is_main())
    stop = stop or Stop()
    stop.deferring = True
    try:
        return _steps(run, run_dir, logger, summary, start, trainer, batches, valid, test, bar, stop, first, digest,
                      Best(resume_state))
    finally:
        stop.deferring = False
        summary["cuda_graphs_used"] = trainer.replaying  # train.cuda_graphs=auto: whether capture happened
        bar.close()  # also on Ctrl-C: what is printed next starts on a line of its own
        batches.close()  # stops the background workers, also after an early stop or an exception


def _steps(run: Run, run_dir: Path, logger, progress: dict, start: float, trainer: Trainer, batches, valid: Batch,
           test: Batch, bar, stop: Stop, first: int, digest: str | None, kept: Best | None = None) -> dict:
    """The steps from `first` (0, or a resumed checkpoint's step), evaluations and final scoring; `progress`
    (train's summary) keeps the steps done and the validation accuracies so far, for a run that is interrupted or
    fails. Checkpoints are written at step boundaries: every train.checkpoint_every steps, on SIGTERM, and at
    the end. The test split and eval.lengths score the weights train.test_on names: by default the best
    validation's (`kept`), restored into the model first; summary.json says which (`test_model`, `tested_step`)."""
    cfg, task, model, device, amp = run.train_cfg, run.task, run.model, run.device, run.amp
    chance = getattr(task, "chance_accuracy", 0.0)
    metrics_path = run_dir / "metrics.jsonl"
    # best: the best validation evaluation's selection score (protocol.selection_score: accuracy, or minus the loss
    # for a task selected by loss); -inf: a regression task's accuracy is -MSE, below -1 at times
    best, best_step, result = -math.inf, None, {}
    kept = kept or Best()
    if progress.get("best_accuracy") is not None:  # a resumed run: the best so far counts
        best, best_step = resumed_score(task, progress, kept), progress["best_step"]
    # steady-state throughput: tokens and training time after the first STEADY_AFTER steps (evaluations excluded)
    steady_tokens, steady_time, clock = 0, 0.0, None
    all_tokens, all_time, t_window = 0, 0.0, time.perf_counter()

    def diverged(step_bad: int) -> dict:
        bar.close()
        message = f"loss became non-finite at step {step_bad}; try a lower train.lr (now {cfg.lr:g})"
        print(f"arena: run diverged: {message}", file=sys.stderr)
        return {"status": "diverged", "message": message, "steps": step_bad}

    for step in bar:
        if trainer.world > 1:  # SIGTERM reaches the ranks at different steps: all stop at the first that saw it
            stop.requested = parallel.any_rank(stop.requested)
        # at the top of a step, `step` steps are done: the state a checkpoint holds and a resume starts from
        if step > first and (stop.requested or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)):
            write_checkpoint(run, run_dir, trainer, step, progress, digest, kept)
        if stop.requested:
            raise KeyboardInterrupt
        batch = next(batches)
        trainer.step(batch, step)
        progress["steps"] = step + 1
        tokens = batch.inputs.numel() * trainer.world  # the global batch's: tokens/s means the same at any world size
        all_tokens += tokens
        if step + 1 == first + STEADY_AFTER:  # a resumed run warms up (compiles) again
            sync(device)
            clock = time.perf_counter()
        elif clock is not None:
            steady_tokens += tokens
        if (step + 1) % DIVERGENCE_PEEK == 0 and (bad := trainer.diverged_step()) is not None:
            return diverged(bad)

        last = step + 1 == cfg.steps
        if (step + 1) % cfg.eval_every == 0 or last:
            sync(device)
            now = time.perf_counter()
            all_time += now - t_window
            if clock is not None:
                steady_time += now - clock
            if (bad := trainer.diverged_step(wait=True)) is not None:
                return diverged(bad)
            train_loss, train_accuracy = trainer.read_window()
            with parallel.full_weights(trainer.net):  # every rank evaluates (FSDP gathers); rank 0's result rules
                result = parallel.agree(evaluate(model, valid, cfg.eval_batch_size, amp, chance))
            if (score := selection_score(task, result)) > best:
                best, best_step, kept.result = score, step + 1, result
                if cfg.test_on == "best":  # the evaluation just synced: a copy to the host costs no stall
                    kept.weights = trainer.copy_weights()
            progress.update(**best_fields(task, best, best_step, kept), final_accuracy=result["accuracy"],
                            final_sequence_accuracy=result["sequence_accuracy"], train_accuracy=train_accuracy)
            steady = steady_tokens > 0 and steady_time > 0  # else too few steps yet: count them all
            record = {
                # every loss and accuracy named by its split: evaluate() calls its loss test_loss whatever data
                # it scored, and these rows score the validation split
                "step": step + 1, "split": "valid", "train_loss": train_loss, "train_accuracy": train_accuracy,
                **{("valid_loss" if key == "test_loss" else f"valid_{key}" if key.startswith("mse") else key): value
                   for key, value in result.items()},
                "tokens_per_s": steady_tokens / steady_time if steady else all_tokens / max(all_time, 1e-9),
                "tokens_per_s_kind": "steady" if steady else "all_steps",
                "lr": lr_at(step, cfg), "wall_time_s": round(time.perf_counter() - start, 3),
            }
            if parallel.is_main():
                with open(metrics_path, "a") as f:  # append-only: one line per evaluation
                    f.write(json.dumps(record) + "\n")
            logger.log(record, step + 1)
            bar.set_postfix(train_loss=f"{train_loss:.3f}", valid_acc=f"{result['accuracy']:.3f}",
                            tok_s=f"{record['tokens_per_s']:.0f}")
            if result["accuracy"] >= cfg.target_accuracy:  # accuracy, whatever the selection (text sets 2.0: never)
                break
            t_window = time.perf_counter()
            if clock is not None:
                clock = t_window
    bar.close()
    steps = step + 1
    summary, final_weights = score_test(run, run_dir, trainer, test, kept, steps, best, best_step, result,
                                        train_accuracy, record["tokens_per_s"])
    if trainer.world > 1:  # a SIGTERM to any rank since the last step stops them all (the checkpoint below is joint)
        stop.requested = parallel.any_rank(stop.requested)
    if stop.requested:  # SIGTERM during the last step: the run stops unfinished (its last checkpoint stands)
        raise KeyboardInterrupt
    progress.update({k: summary[k] for k in PROGRESS})
    write_checkpoint(run, run_dir, trainer, steps, progress, digest, kept, final=True, weights=final_weights,
                     tested={"test_model": summary["test_model"], "tested_step": summary["tested_step"]})
    return summary


__all__ = ["Run", "StepBatch", "TrainConfig", "Trainer", "batch_stream", "graphs_wanted", "lr_at", "make_optimizer",
           "train", "validation_set"]
