"""The optimizer step of one training run (`Trainer`): AMP, CUDA-graph capture, DDP/FSDP, divergence flags and
the metrics window, all without a host sync; the learning-rate schedule and the optimizer it steps.

    from arena.train import Run, batch_stream     # arena/train.py builds the run and loops; this file steps it
    trainer = Trainer(run)
    for step, batch in zip(range(steps), batch_stream(run)):
        trainer.step(batch, step)
    loss, accuracy = trainer.read_window()      # one host sync

Tested through tests/test_train*.py (arena.train re-exports Trainer, lr_at, make_optimizer and graphs_wanted).
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from arena import checkpoint, parallel
from arena.batches import StepBatch
from arena.errors import ConfigError
from arena.model import LanguageModel

if TYPE_CHECKING:  # arena.train imports this module
    from arena.train import Run, TrainConfig

DIVERGENCE_PEEK = 25  # steps between non-blocking looks at the device's non-finite-loss flag
NO_BAD_STEP = 1 << 62  # Trainer.bad_step while every loss has been finite


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
    # one fused kernel for the whole update on CUDA (the per-tensor loop launches ~10 kernels per parameter)
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)



class _Body(nn.Module):
    """The model up to its final norm, tokens [B, T] -> hidden [B, T, D], as one module for CUDA-graph capture.
    Autocast sits inside, with its weight-cast cache off: a captured graph replays the casts it recorded, and a
    cached cast made during capture would be a stale copy of the weights after the first optimizer step."""

    def __init__(self, model: LanguageModel, amp: torch.dtype | None):
        super().__init__()
        self.model, self.amp = model, amp

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=self.amp, enabled=self.amp is not None, cache_enabled=False):
            return self.model.hidden_states(tokens)[0]


def graphs_wanted(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether `train.cuda_graphs` asks for capture on `device` (auto: on CUDA); `on` without CUDA is an error."""
    if cfg.cuda_graphs == "on" and device.type != "cuda":
        raise ConfigError(f"train.cuda_graphs=on needs a CUDA device (train.device resolves to {device.type}); "
                          "use auto or off")
    return cfg.cuda_graphs != "off" and device.type == "cuda"


class Trainer:
    """The optimizer step of one run, with no host sync: metrics accumulate on the device until `read_window`.

    With CUDA graphs (train.cuda_graphs), the model's forward and backward up to the final norm are captured on the
    first step (torch.cuda.make_graphed_callables: three eager warm-up passes on a side stream, which also run the
    Triton autotuning, then one capture each) and replayed on every batch of the same shape: one launch instead of
    the few hundred small kernels of the mixer layers, so a small model stops being bound by the host's launch
    rate. The head, the loss, clipping and the fused optimizer stay eager (a few launches; the number of scored
    positions varies per batch). Parameters are updated in place, so the graphs always read the current weights.
    """

    def __init__(self, run: Run):
        self.cfg, self.model, self.device, self.amp = run.train_cfg, run.model, run.device, run.amp
        self.world = getattr(run, "world", 1)
        # several processes: the step runs through DDP or FSDP (arena/parallel.py), never the graphs
        self.net = parallel.wrap(self.model, self.cfg.parallel, self.device) if self.world > 1 else None
        self.graphs = graphs_wanted(self.cfg, self.device) and self.net is None
        self._graphed, self._graph_shape = None, None  # the captured body and the input shape it was captured at
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        zero = torch.zeros((), device=self.device)
        self.loss_sum, self.right = zero.clone(), zero.clone()
        self.count = 0  # scored positions in the window: known on the host from the index shapes
        self.steps_in_window = 0
        # first step whose loss was not finite (a large sentinel while none was), kept on the device
        self.bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=self.device)
        self._peek = None  # (pinned host copy of bad_step, CUDA event) of the last non-blocking peek

    def step(self, batch: StepBatch, step: int) -> None:
        """One optimizer step on `batch` at the learning rate of `step`; queues work, never waits for it."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, self.cfg)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            if self.net is not None:  # several processes: through DDP's or FSDP's hooks
                logits = self.net(batch.inputs, batch.scored_index).float()
            else:
                hidden = self._hidden(batch.inputs)  # [B, T, D]
                logits = self.model.lm_head(hidden.flatten(0, 1).index_select(0, batch.scored_index)).float()
        # what the mean is over: this batch's scored elements, or under torchrun the global batch's (this rank's
        # loss is then its share of the global mean, and the ranks' shares add up to it)
        numel = batch.scored_targets.numel()
        reduction = "mean"
        if self.world > 1:
            numel, reduction = batch.global_scored * math.prod(batch.scored_targets.shape[1:]), "sum"
        if self.model.regression:  # logits are predicted vectors [S, O]: MSE over every component (per d_y)
            loss = F.mse_loss(logits, batch.scored_targets.float(), reduction=reduction)
        else:
            loss = F.cross_entropy(logits, batch.scored_targets, reduction=reduction)
        if self.world > 1:
            loss = loss / numel
        self.optimizer.zero_grad(set_to_none=True)
        # DDP and FSDP average the ranks' gradients; times world size makes it their sum: the global mean's
        (loss * self.world if self.world > 1 else loss).backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        self.optimizer.step()
        loss = self.last_loss = loss.detach()  # a device scalar: reading it is the caller's sync, if any
        self.loss_sum += loss
        if self.model.regression:  # the window's "accuracy" is -MSE (higher is better, as for tokens; evaluate.py)
            self.right -= loss * numel
        else:
            self.right += (logits.detach().argmax(-1) == batch.scored_targets).sum()
        self.count += batch.scored_targets.numel()
        self.steps_in_window += 1
        torch.minimum(self.bad_step, torch.where(torch.isfinite(loss), self.bad_step, step), out=self.bad_step)

    @property
    def replaying(self) -> bool:
        """Whether the steps replay captured CUDA graphs (False: eager by choice, on CPU, under DDP/FSDP, before the
        first step or after a refused capture); summary.json records it as `cuda_graphs_used`."""
        return self._graphed is not None  # set by a capture that worked, never by one that failed

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.graphs and self._graphed is None:
            self._capture(tokens)
        if self._graphed is not None and tokens.shape == self._graph_shape:
            return self._graphed(tokens)
        return self.model.hidden_states(tokens)[0]  # eager: no graphs, or a batch of another shape

    def _capture(self, tokens: torch.Tensor) -> None:
        torch.cuda.synchronize(self.device)
        try:
            # outside the step's autocast, whose weight-cast cache capture refuses; _Body turns its own on
            with torch.autocast(self.device.type, enabled=False):
                self._graphed = torch.cuda.make_graphed_callables(_Body(self.model, self.amp), (tokens,),
                                                                  num_warmup_iters=3, allow_unused_input=True)
            self._graph_shape = tokens.shape
        except Exception as err:
            if self.cfg.cuda_graphs == "on":
                raise RuntimeError(f"train.cuda_graphs=on: capturing the model failed ({type(err).__name__}: "
                                   f"{err}); use train.cuda_graphs=off") from err
            print(f"arena: warning: CUDA-graph capture failed ({type(err).__name__}: {err}); training eagerly "
                  "(train.cuda_graphs=off silences this)", file=sys.stderr)
            self.graphs = False
        torch.cuda.synchronize(self.device)

    def diverged_step(self, wait: bool = False) -> int | None:
        """The first step with a non-finite loss, or None. Without `wait` it answers from the last non-blocking
        peek that has landed (so it may lag by up to DIVERGENCE_PEEK steps) and starts a new peek: no stall."""
        if self.world > 1:  # ranks must agree (a rank that stopped alone would hang the others): only when waiting
            return _step_or_none(int(parallel.all_min_(self.bad_step.clone()))) if wait else None
        if wait or self.device.type != "cuda":
            return _step_or_none(int(self.bad_step))
        answer = None
        if self._peek is not None and self._peek[1].query():
            answer = _step_or_none(int(self._peek[0]))
            self._peek = None
        if self._peek is None:
            host = torch.empty((), dtype=torch.int64, pin_memory=True)
            host.copy_(self.bad_step, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._peek = (host, event)
        return answer

    def copy_weights(self) -> dict[str, torch.Tensor]:
        """The model's weights copied to the CPU (checkpoint.copy_weights); under FSDP gathered whole on every rank."""
        if self.net is not None and self.cfg.parallel == "fsdp":
            return parallel.gather_weights(self.net)
        return checkpoint.copy_weights(self.model)

    def restore_weights(self, weights: dict[str, torch.Tensor]) -> None:
        if self.net is not None and self.cfg.parallel == "fsdp":
            parallel.scatter_weights(self.net, weights)
        else:
            checkpoint.restore_weights(self.model, weights)

    def state_dict(self) -> dict:
        """What a resumed run needs to go on exactly: optimizer state and the open metrics window. Under torchrun
        every rank calls it: the window holds the sums over ranks, and under FSDP the optimizer state is gathered
        whole (keyed by parameter names) to rank 0."""
        if self.world == 1:
            return {"optimizer": self.optimizer.state_dict(), "loss_sum": self.loss_sum, "right": self.right,
                    "count": self.count, "steps_in_window": self.steps_in_window, "bad_step": self.bad_step}
        loss_sum, right, count = parallel.all_sum([self.loss_sum, self.right, self.count], self.device)
        optimizer = (parallel.full_optimizer_state(self.net, self.optimizer) if self.cfg.parallel == "fsdp"
                     else self.optimizer.state_dict())
        return {"optimizer": optimizer, "loss_sum": torch.tensor(loss_sum, dtype=torch.float32),
                "right": torch.tensor(right, dtype=torch.float32), "count": int(count),
                "steps_in_window": self.steps_in_window, "bad_step": parallel.all_min_(self.bad_step.clone()),
                "optimizer_format": self.cfg.parallel}

    def load_state_dict(self, state: dict) -> None:
        # FSDP keys the optimizer state by parameter names, the others by number: a checkpoint goes on in either
        # form (an FSDP run resumed on another number of processes, one among them)
        named = state.get("optimizer_format") == "fsdp"
        if self.net is not None and self.cfg.parallel == "fsdp":
            optimizer = state["optimizer"] if named else parallel.named_optimizer_state(
                state["optimizer"], self.optimizer, self.net)
            parallel.load_full_optimizer(self.net, self.optimizer, optimizer)
        else:
            self.optimizer.load_state_dict(parallel.numbered_optimizer_state(state["optimizer"]) if named
                                           else state["optimizer"])
        for key in ("loss_sum", "right", "bad_step"):
            getattr(self, key).copy_(state[key])
        self.count, self.steps_in_window = state["count"], state["steps_in_window"]
        if self.world > 1 and parallel.rank() != 0:  # the saved window holds the sums over ranks: counted once
            self.loss_sum.zero_()
            self.right.zero_()
            self.count = 0

    def read_window(self) -> tuple[float, float]:
        """(mean loss, token accuracy) over the steps since the last read; syncs once, then resets the window."""
        if self.world > 1:  # the window's sums over ranks (the ranks' loss shares add up to the global mean)
            loss_sum, right, count = parallel.all_sum([self.loss_sum, self.right, self.count], self.device)
            steps, count = max(1, self.steps_in_window), max(1, int(count))
            loss, right = loss_sum / steps, right / count
        else:
            steps, count = max(1, self.steps_in_window), max(1, self.count)
            loss, right = (self.loss_sum / steps).item(), self.right.item() / count
        self.loss_sum.zero_()
        self.right.zero_()
        self.count, self.steps_in_window = 0, 0
        return loss, right


def _step_or_none(bad_step: int) -> int | None:
    return None if bad_step == NO_BAD_STEP else bad_step
