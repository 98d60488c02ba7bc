"""Training and held-out evaluation of one (model, task) pair: a plain loop that leaves a self-describing run dir.

Called by `python -m arena.run` (which composes the Hydra config); usable directly as
`train(config_dict, run_dir, mixer_specs, default_spec)`. The run directory receives:
    config.yaml     the resolved config          env.json      git sha, versions, device
    metrics.jsonl   one JSON line per evaluation summary.json  written atomically at the end
Status is `completed`, `diverged` (a NaN/inf loss; not an exception) or `failed` (an exception, re-raised).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from arena.config_utils import make_config
from arena.errors import ConfigError, choice_error
from arena.evaluate import EvalConfig, evaluate, evaluate_lengths, scored_logits
from arena.loggers import make_logger
from arena.model import LanguageModel, ModelConfig
from arena.provenance import environment, write_json_atomic
from arena.tasks import Task, build_task
from arena.tasks.base import split_seed


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is visible; use auto or cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise choice_error("train.device", name, ("auto", "cpu", "cuda"))
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in ("auto", "fp32", "bf16"):
        raise choice_error("train.precision", precision, ("auto", "fp32", "bf16"))
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.min_lr_ratio * cfg.lr at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: LanguageModel, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or getattr(p, "_no_weight_decay", False) or name.startswith("embed.")
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_max_allocated"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    return {"peak_memory_bytes": rss_kib * 1024, "peak_memory_kind": "cpu_process_max_rss"}


class Run:
    """Everything one training run builds before its first step; construction validates the whole config."""

    def __init__(self, config: dict, mixer_specs: dict[str, dict], default_spec: str):
        self.config = config
        task_cfg = dict(config["task"])
        self.task: Task = build_task(task_cfg.pop("name"), **task_cfg)
        self.train_cfg: TrainConfig = make_config(TrainConfig, "train", **config["train"])
        self.eval_cfg: EvalConfig = make_config(EvalConfig, "eval", **(config.get("eval") or {}))
        model_cfg = make_config(ModelConfig, "model", **config["model"], vocab_size=self.task.vocab_size)
        self.device = resolve_device(self.train_cfg.device)
        self.amp = autocast_dtype(self.train_cfg.precision, self.device)
        if self.device.type == "cpu" and self.train_cfg.cpu_threads > 0:
            torch.set_num_threads(self.train_cfg.cpu_threads)
        torch.manual_seed(self.train_cfg.seed)
        self.model = LanguageModel(model_cfg, mixer_specs, default_spec).to(self.device)


def train(run: Run, run_dir: Path, name: str, extra: dict | None = None) -> dict:
    """Train, evaluate and write summary.json (always, also on failure); `extra` adds fields such as config_hash."""
    task, model, device = run.task, run.model, run.device
    write_json_atomic(run_dir / "env.json", environment(device))
    logger = make_logger(dict(run.config.get("logger") or {}), run_dir, run.config, name)
    params = model.parameter_counts()
    summary = {
        "name": name, **(extra or {}), "status": "failed", "message": "", "steps": 0,
        "valid_accuracy": None, "test_accuracy": None, "test_sequence_accuracy": None, "test_scaled_accuracy": None,
        "train_accuracy": None, "best_accuracy": None, "best_step": None,
        "final_accuracy": None, "final_sequence_accuracy": None, "parameters": params,
        "state_size": model.state_size(task.seq_len), "flops_per_token": model.flops_per_token(task.seq_len),
        "layers": model.layer_names, "device": str(device), "seq_len": task.seq_len,
    }
    start = time.perf_counter()
    try:
        summary.update(_loop(run, run_dir, logger, summary, start))
    except BaseException as err:
        summary["message"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        summary["wall_time_s"] = round(time.perf_counter() - start, 3)
        summary.update(peak_memory(device))
        write_json_atomic(run_dir / "summary.json", summary)
        logger.summary(summary)
        logger.finish()
    return summary


def _loop(run: Run, run_dir: Path, logger, summary: dict, start: float) -> dict:
    cfg, task, model, device, amp = run.train_cfg, run.task, run.model, run.device, run.amp
    seed = cfg.seed
    chance = getattr(task, "chance_accuracy", 0.0)
    # Two held-out splits: validation steers early stopping and learning-rate choice; test is scored once, at the
    # end, and is the number to report (choosing on the test set would overstate it).
    valid = task.generate(task.cfg.num_test, split_seed(seed, "valid"), split="test")
    test = task.generate(task.cfg.num_test, split_seed(seed, "test"), split="test")
    fixed_train = task.generate(task.cfg.num_train, split_seed(seed, "train")) if task.cfg.num_train else None
    fresh = torch.Generator().manual_seed(seed)  # batch order (fixed set) or per-step seeds (fresh samples)
    optimizer = make_optimizer(model, cfg)
    metrics_path = run_dir / "metrics.jsonl"
    best, best_step, result = -1.0, None, {}
    tokens = 0
    train_time = 0.0
    loss_sum, loss_count, right, scored_total = 0.0, 0, 0, 0
    order = torch.randperm(len(fixed_train), generator=fresh) if fixed_train is not None else None
    cursor = 0
    bar = tqdm(range(cfg.steps), desc=summary["name"], dynamic_ncols=True, file=sys.stderr)
    for step in bar:
        t0 = time.perf_counter()
        if fixed_train is not None:
            if cursor + cfg.batch_size > len(order):  # new epoch: reshuffle
                order, cursor = torch.randperm(len(fixed_train), generator=fresh), 0
            batch = fixed_train[order[cursor: cursor + cfg.batch_size]]
            cursor += cfg.batch_size
        else:
            batch = task.generate(cfg.batch_size, [seed, 3, step])
        batch = batch.to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits, targets = scored_logits(model, batch)
        loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            bar.close()
            message = f"loss became {loss.item()} at step {step}; try a lower train.lr (now {cfg.lr:g})"
            print(f"arena: run diverged: {message}", file=sys.stderr)
            return {"status": "diverged", "message": message, "steps": step}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        tokens += batch.inputs.numel()
        loss_sum += loss.item()
        loss_count += 1
        right += (logits.argmax(-1) == targets).sum().item()
        scored_total += targets.numel()

        last = step + 1 == cfg.steps
        if (step + 1) % cfg.eval_every == 0 or last:
            result = evaluate(model, valid, cfg.eval_batch_size, amp, chance)
            train_accuracy = right / scored_total
            record = {
                "step": step + 1, "split": "valid", "loss": loss_sum / loss_count, "train_accuracy": train_accuracy,
                **result, "tokens_per_s": tokens / train_time, "lr": lr_at(step, cfg),
                "wall_time_s": round(time.perf_counter() - start, 3),
            }
            with open(metrics_path, "a") as f:  # append-only: one line per evaluation
                f.write(json.dumps(record) + "\n")
            logger.log(record, step + 1)
            if result["accuracy"] > best:
                best, best_step = result["accuracy"], step + 1
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{result['accuracy']:.3f}",
                            tok_s=f"{record['tokens_per_s']:.0f}")
            loss_sum, loss_count, right, scored_total = 0.0, 0, 0, 0
            if result["accuracy"] >= cfg.target_accuracy:
                break
    bar.close()
    steps = step + 1
    stopped_early = steps < cfg.steps
    final_test = evaluate(model, test, cfg.eval_batch_size, amp, chance)
    summary = {
        "status": "completed", "steps": steps, "valid_accuracy": best, "best_accuracy": best, "best_step": best_step,
        "test_accuracy": final_test["accuracy"], "test_sequence_accuracy": final_test["sequence_accuracy"],
        "test_scaled_accuracy": final_test["scaled_accuracy"], "train_accuracy": train_accuracy,
        "final_accuracy": result["accuracy"], "final_sequence_accuracy": result["sequence_accuracy"],
        "final_scaled_accuracy": result["scaled_accuracy"], "chance_accuracy": chance,
        "stopped_early": stopped_early,
        "message": "reached train.target_accuracy" if stopped_early else "ran all train.steps",
    }
    if run.eval_cfg.lengths:
        by_length = evaluate_lengths(model, task, run.eval_cfg, seed, amp)
        with open(metrics_path, "a") as f:
            for length, res in by_length.items():
                record = {"step": steps, "eval": "length", "split": "test", "length": length,
                          "train_seq_len": task.seq_len, **res}
                f.write(json.dumps(record) + "\n")
        summary["length_eval"] = {str(length): res for length, res in by_length.items()}
        print("arena: held-out accuracy by length: "
              + ", ".join(f"{L}: {r['accuracy']:.3f}" for L, r in by_length.items()), file=sys.stderr)
    return summary


__all__ = ["Run", "TrainConfig", "lr_at", "train"]
