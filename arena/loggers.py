"""Optional experiment trackers. Local files (metrics.jsonl, summary.json) are always written by the trainer;
a logger only mirrors them elsewhere. `logger=none` (default) does nothing; `logger=wandb` mirrors to
Weights & Biases in `mode` offline | online | disabled, imported lazily so wandb is never needed to run or test.
Each kind's settings and their defaults are a dataclass in `LOGGERS` (the schema of conf/logger/<kind>.yaml).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from arena.config_utils import make_config
from arena.errors import choice_error

WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class NoLoggerConfig:
    kind: str = "none"  # none | wandb


@dataclass
class WandbConfig:
    kind: str = "wandb"
    mode: str = "offline"  # offline | online | disabled (an explicit mode wins over WANDB_MODE)
    project: str = "arena"
    entity: str | None = None  # the W&B team or user; None: the account's default


LOGGERS = {"none": NoLoggerConfig, "wandb": WandbConfig}  # logger.kind -> its settings


class NullLogger:
    def log(self, metrics: dict, step: int) -> None:
        pass

    def summary(self, summary: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    def __init__(self, run, wandb_module):
        self.run, self.wandb = run, wandb_module

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, summary: dict) -> None:
        for key, value in summary.items():
            if isinstance(value, (int, float, str, bool)):
                self.run.summary[key] = value

    def finish(self) -> None:
        self.run.finish()


def check_logger_config(cfg: dict) -> None:
    """ConfigError on a bad logger.kind or logger.mode; `Run` calls it, so bad input fails before any run dir."""
    kind = cfg.get("kind", "none")
    if kind not in ("none", "wandb"):
        raise choice_error("logger.kind", kind, ("none", "wandb"))
    if kind == "wandb" and cfg.get("mode", "offline") not in WANDB_MODES:
        raise choice_error("logger.mode", cfg.get("mode"), WANDB_MODES)


def make_logger(cfg: dict, run_dir: Path, config: dict, name: str) -> NullLogger:
    check_logger_config(cfg)
    if cfg.get("kind", "none") == "none":
        return NullLogger()
    settings = make_config(WandbConfig, "logger", **cfg)  # keys the caller left out keep WandbConfig's defaults
    try:
        import wandb
    except ImportError:
        warnings.warn("logger=wandb but wandb is not installed (pip install 'arena[wandb]'); logging locally only",
                      stacklevel=2)
        return NullLogger()
    try:
        # the mode is passed explicitly: an argument overrides WANDB_MODE, so the config decides
        run = wandb.init(project=settings.project, entity=settings.entity, name=name, dir=str(run_dir), config=config,
                         mode=settings.mode)
    except Exception as err:  # offline init can still time out on locked-down machines
        warnings.warn(f"wandb.init failed ({err}); logging locally only", stacklevel=2)
        return NullLogger()
    return WandbLogger(run, wandb)
