"""Test helper, not a test: `python -m torch.distributed.run ... tests/_sigterm_at_step.py STEP RANK overrides...`
runs `python -m arena.run overrides...` in which the process of rank RANK sends itself SIGTERM during step STEP (the
other ranks get none), so tests/test_parallel.py stops a torchrun run at a known step, with no race against it."""

import os
import signal
import sys

import arena.train
from arena.run import main

step_at, rank = int(sys.argv[1]), int(sys.argv[2])
sys.argv = [sys.argv[0], *sys.argv[3:]]
real_step = arena.train.Trainer.step


def step(self, batch, step):
    real_step(self, batch, step)
    if step == step_at and int(os.environ.get("RANK", "0")) == rank:
        os.kill(os.getpid(), signal.SIGTERM)  # handled like a scheduler's: deferred to the next step boundary


arena.train.Trainer.step = step
main()
