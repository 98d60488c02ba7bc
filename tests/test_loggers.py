"""Loggers: none by default, wandb optional (a missing wandb degrades to local files), bad choices fail in one line."""

from __future__ import annotations

import builtins

import pytest

from arena.errors import ConfigError
from arena.loggers import NullLogger, make_logger


def test_default_is_a_null_logger(tmp_path):
    logger = make_logger({"kind": "none"}, tmp_path, {}, "run")
    assert type(logger) is NullLogger
    logger.log({"loss": 1.0}, 1)
    logger.summary({"status": "completed"})
    logger.finish()


@pytest.mark.parametrize("bad", [{"kind": "tensorboard"}, {"kind": "wandb", "mode": "sometimes"}], ids=["kind", "mode"])
def test_bad_choice_fails_in_one_line(tmp_path, bad):
    with pytest.raises(ConfigError, match="choose one of"):
        make_logger(bad, tmp_path, {}, "run")


def test_missing_wandb_warns_and_logs_locally(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.warns(UserWarning, match="wandb is not installed"):
        logger = make_logger({"kind": "wandb", "mode": "offline"}, tmp_path, {}, "run")
    assert type(logger) is NullLogger
