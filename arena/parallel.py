"""Data parallelism for one run over several processes started by torchrun: DDP, or FSDP2 (`fully_shard`).

    torchrun --nproc_per_node 2 -m arena.run train.parallel=ddp       # 2 GPUs, or 2 CPU processes (gloo)
    torchrun --nproc_per_node 2 -m arena.run train.parallel=fsdp      # parameters, gradients, optimizer sharded

`train.parallel` (TrainConfig) picks the wrapping; the model itself (arena/model.py) never knows. What stays the
same at any world size W, so that a config means one experiment wherever it runs:
  - train.batch_size is the global batch: every rank draws the whole batch of a step from the deterministic
    stream (arena/batches.py, (seed, step)) and keeps its B / W rows, so the ranks' rows together are exactly the
    1-process batch;
  - the loss is the mean over the global batch's scored positions: each rank's loss is its summed cross-entropy
    over the global count, times W because DDP and FSDP average gradients over ranks (Trainer.step); the
    gradients, clipping and the learning rate are then those of one process;
  - metrics (train loss, accuracy, the divergence step) are reduced over ranks; evaluation runs on every rank
    (FSDP needs all of them to gather the weights) and rank 0's result is broadcast, so early stopping agrees;
  - only rank 0 writes: Hydra's run dir, metrics.jsonl, summary.json, checkpoints, the logger. The other ranks
    get a scratch Hydra dir outside results_dir, removed at exit (`hydra_overrides`).
The process group is gloo on CPU and gloo + NCCL on CUDA ("cpu:gloo,cuda:nccl": CPU tensors, such as the stop
flag and broadcast objects, travel over gloo without syncing the GPU). `train.parallel=ddp|fsdp` without
torchrun runs in one process (the same computation) with a warning; torchrun with several processes and
`train.parallel=none` is an error (each process would train the whole run alone).

Checkpoints: DDP's weights and optimizer state are the plain ones (every rank holds all of them); under FSDP
rank 0 gathers the full weights and optimizer state (torch.distributed.checkpoint.state_dict, full_state_dict)
and writes the same files, so a checkpoint resumes at another world size. Tests: tests/test_parallel.py.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import warnings

import torch
from torch import nn

from arena.errors import ConfigError

PARALLEL_CHOICES = ("none", "ddp", "fsdp")


def world_size() -> int:
    """Processes torchrun started for this run (its WORLD_SIZE); 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched() -> bool:
    """Under torchrun with more than one process."""
    return world_size() > 1


def is_main() -> bool:
    """The process that writes: rank 0, or the only one."""
    return rank() == 0


def active() -> bool:
    """A process group is up (arena.run's main started it under torchrun)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init() -> None:
    """Start the process group under torchrun (a no-op otherwise or when already up). On a machine with CUDA each
    process takes cuda:LOCAL_RANK as its current device before any CUDA work."""
    if not launched() or active():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(backend=backend)
    atexit.register(_shutdown)


def _shutdown() -> None:
    if active():
        torch.distributed.destroy_process_group()


def hydra_overrides(argv: list[str]) -> list[str]:
    """Extra Hydra overrides for this process under torchrun: ranks > 0 get a scratch run dir outside results_dir
    and no .hydra/ subfolder, so they create nothing there. A sweep (-m) under torchrun is refused: every rank
    would launch the whole grid."""
    if not launched():
        return []
    if any(arg in ("-m", "--multirun") for arg in argv):
        raise ConfigError("a sweep (-m/--multirun) cannot run under torchrun; run each point with torchrun, or "
                          "sweep without torchrun (hydra/launcher=slurm gives each point its own job)")
    if is_main():
        return []
    scratch = tempfile.mkdtemp(prefix=f"arena-rank{rank()}-")
    atexit.register(shutil.rmtree, scratch, True)
    return [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


def agree(value):
    """Rank 0's `value` on every rank (any picklable object); `value` itself without a process group."""
    if not active():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def check(mode: str, batch_size: int) -> tuple[int, int]:
    """(rank, world size) this run trains with, after checking `train.parallel` against how it was started."""
    if mode not in PARALLEL_CHOICES:
        raise ConfigError(f"train.parallel={mode!r} is not valid; choose one of: {', '.join(PARALLEL_CHOICES)}")
    world = world_size()
    if world == 1:
        if mode != "none" and not os.environ.get("WORLD_SIZE"):
            print(f"arena: warning: train.parallel={mode} without torchrun: training in this one process (the same "
                  f"computation); start several with `torchrun --nproc_per_node N -m arena.run ...`", file=sys.stderr)
        return 0, 1
    if mode == "none":
        raise ConfigError(f"train.parallel=none but torchrun started {world} processes; use train.parallel=ddp or "
                          "fsdp, or start one process")
    if batch_size % world:
        raise ConfigError(f"train.batch_size={batch_size} must divide by the {world} processes torchrun started "
                          f"(it is the global batch; each process takes batch_size / {world} rows)")
    return rank(), world


class StepNet(nn.Module):
    """The training step's forward as one module call, tokens [B, T] and flat scored positions [S] -> logits [S, V]:
    DDP and FSDP act in their module's forward hooks, which calling the model's methods one by one would skip."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, scored_index: torch.Tensor) -> torch.Tensor:
        hidden = self.model.hidden_states(tokens)[0]  # [B, T, D]
        return self.model.lm_head(hidden.flatten(0, 1).index_select(0, scored_index))


def wrap(model: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """The step's module for `mode` (run.model wrapped in StepNet): DDP over it, or FSDP2 over each block and then
    the root (embedding, final norm, head). FSDP replaces `model`'s parameters by sharded ones in place, so the
    optimizer must be built after this."""
    net = StepNet(model)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
    except ImportError as err:  # torch < 2.6 has it only under torch.distributed._composable.fsdp
        try:
            from torch.distributed._composable.fsdp import fully_shard
            from torch.distributed.device_mesh import init_device_mesh
        except ImportError:
            raise ConfigError(f"train.parallel=fsdp needs torch.distributed.fsdp.fully_shard (torch >= 2.4; this is "
                              f"torch {torch.__version__}: {err}); use train.parallel=ddp") from None
    # FSDP2 warns when a wrapped module returns a view: a block's returned mixer state can be one, and nothing
    # modifies it in place during training (only decoding carries states, and it never runs under FSDP)
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (world_size(),))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(net, mesh=mesh)
    return net


@contextlib.contextmanager
def full_weights(net: nn.Module | None):
    """Evaluation calls the model's methods directly: under FSDP the root's own parameters (embedding, final norm,
    head) are gathered for its duration; each block gathers its own in its forward hooks."""
    unshard = getattr(net, "unshard", None)  # an FSDP2 module only
    if unshard is None:
        yield
        return
    unshard()
    try:
        yield
    finally:
        net.reshard()


def all_sum(values: list[torch.Tensor | int | float], device: torch.device) -> list[float]:
    """The sums over ranks of a few numbers (float64, one collective)."""
    packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    if active():
        torch.distributed.all_reduce(packed)
    return packed.tolist()


def all_min_(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` replaced in place by its minimum over ranks (the first non-finite step: the earliest on any rank)."""
    if active():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MIN)
    return tensor


def any_rank(flag: bool) -> bool:
    """Whether `flag` holds on some rank; a CPU tensor, so gloo carries it without syncing a GPU."""
    if not active():
        return flag
    box = torch.tensor([int(flag)])
    torch.distributed.all_reduce(box, op=torch.distributed.ReduceOp.MAX)
    return bool(box.item())


def full_optimizer_state(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """FSDP: the whole optimizer state, keyed by parameter names, gathered to rank 0's CPU (the other ranks get an
    empty dict; rank 0 writes it); every rank must call it. `load_full_optimizer` takes it back."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(net, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gather_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """FSDP: the whole model's weights, named as in the plain LanguageModel (StepNet's `model.` prefix dropped),
    copied to the CPU on every rank (what checkpoint.copy_weights gives in one process); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(net, options=StateDictOptions(full_state_dict=True))
    return {name.removeprefix("model."): tensor.detach().to("cpu", copy=True) for name, tensor in full.items()}


def scatter_weights(net: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """FSDP: load whole weights (a `gather_weights` result, present on every rank) into the sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(net, {f"model.{name}": tensor for name, tensor in weights.items()},
                         options=StateDictOptions(full_state_dict=True))


def numbered_optimizer_state(state: dict) -> dict:
    """An optimizer state keyed by parameter names (`full_optimizer_state`) in torch's plain form, numbered in the
    groups' order: what optimizer.load_state_dict takes in one process (the same groups, built the same way)."""
    number: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        groups.append({**group, "params": [number.setdefault(name, len(number)) for name in group["params"]]})
    return {"state": {number[name]: value for name, value in state["state"].items()}, "param_groups": groups}


def named_optimizer_state(state: dict, optimizer: torch.optim.Optimizer, net: nn.Module) -> dict:
    """The reverse: a plain (numbered) optimizer state keyed by the names of `optimizer`'s parameters in `net`,
    matched group by group in order, for `load_full_optimizer`."""
    names = {id(param): name for name, param in net.named_parameters()}
    name_of = {}
    groups = []
    for saved, live in zip(state["param_groups"], optimizer.param_groups, strict=True):
        for number, param in zip(saved["params"], live["params"], strict=True):
            name_of[number] = names[id(param)]
        groups.append({**saved, "params": [name_of[n] for n in saved["params"]]})
    return {"state": {name_of[n]: value for n, value in state["state"].items()}, "param_groups": groups}


def load_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """FSDP: load a full optimizer state dict (as `full_state` gave it; every rank read it from the checkpoint)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


__all__ = ["PARALLEL_CHOICES", "StepNet", "agree", "all_min_", "all_sum", "any_rank", "check", "full_optimizer_state",
           "full_weights", "gather_weights", "hydra_overrides", "init", "is_main", "launched", "load_full_optimizer",
           "named_optimizer_state", "numbered_optimizer_state", "scatter_weights", "wrap"]
