"""Synthetic probes behind one registry.

    from arena.tasks import list_tasks, build_task
    task = build_task("mqar", seq_len=64, num_kv_pairs=4)
    batch = task.generate(num_examples=8, seed=0)   # Batch(inputs [8, 64], targets [8, 64], -100 = unscored)

A task registers itself with `@register_task("name")` in its own module in this package (imported on first
lookup), so adding a probe is one file here plus `conf/task/<name>.yaml`. See arena/tasks/base.py.
"""

from __future__ import annotations

from arena.config_utils import make_config
from arena.registry import Registry
from arena.tasks.base import IGNORE, PAD, Batch, Task

TASKS: Registry[Task] = Registry("task", __name__, skip=("base",))
register_task = TASKS.register


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    return TASKS.names()


def get_task(name: str) -> type[Task]:
    return TASKS.get(name)


def build_task(name: str, **overrides) -> Task:
    """Build task `name` with its `Config` defaults, overridden by keyword; bad keys fail in one line."""
    cls = TASKS.get(name)
    return cls(make_config(cls.Config, "task", **overrides))


__all__ = ["IGNORE", "PAD", "Batch", "Task", "build_task", "get_task", "list_tasks", "register_task"]
