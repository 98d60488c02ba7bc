"""Every config composes, and every mixer x model option builds a model (hybrids included)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from arena.run import CONF, group_options, mixer_specs
from arena.train import Run


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # model/hybrid_3to1_mixer.yaml reads ${hydra:runtime.choices.mixer}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.mark.parametrize("group", ["mixer", "task", "model", "train", "logger"])
def test_every_group_option_composes(group):
    options = group_options(group)
    assert options, f"conf/{group}/ has no options"
    for option in options:
        cfg = composed(f"{group}={option}")
        assert cfg[group] is not None


@pytest.mark.parametrize("model", group_options("model"))
@pytest.mark.parametrize("mixer", group_options("mixer"))
def test_every_mixer_and_model_builds(mixer, model):
    cfg = composed(f"mixer={mixer}", f"model={model}", "train.device=cpu")
    run = Run(OmegaConf.to_container(cfg, resolve=True), mixer_specs(cfg, mixer), mixer)
    assert len(run.model.blocks) == cfg.model.n_layers
    if cfg.model.layout:
        assert run.model.layer_names == [cfg.model.layout[i % len(cfg.model.layout)] for i in range(cfg.model.n_layers)]


def test_hybrid_preset_is_kimi_3_to_1():
    cfg = composed("model=hybrid_3to1")
    run = Run(OmegaConf.to_container(cfg, resolve=True), mixer_specs(cfg, "kda"), "kda")
    kinds = [(type(b.mixer).registry_name, getattr(b.mixer.cfg, "rope", None)) for b in run.model.blocks]
    assert kinds == [("kda", None)] * 3 + [("mla", False)]


def test_conf_dir_is_the_repo_conf():
    assert CONF == Path(__file__).resolve().parents[1] / "conf"
