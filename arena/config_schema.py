"""Hydra structured-config schemas for conf/: the dataclasses are the one place where keys, types and defaults live.

    import arena.config_schema          # registers the schemas in Hydra's ConfigStore (idempotent, on import)
    schema_for("mixer", "kda")           # the schema dataclass of one group option's class: KDA.Config + `name`
    compose_option("mixer", "mla_nope")  # conf/mixer/mla_nope.yaml on its schema: {"name": "mla", ..., "rope": False}

Every option of a config group extends its schema through its defaults list and holds only what differs from
the dataclass defaults, e.g. conf/mixer/mla_nope.yaml:

    defaults:
      - /schema/mixer/mla@_here_        # every key of MLA.Config, with its default, plus name: mla
      - _self_
    rope: false                         # the one value that differs

so Hydra rejects a key the dataclass lacks (`train.lrr=1`) or a value of the wrong type (`train.steps=abc`) when it
composes the config. The schemas are derived here, never written out: one per registered mixer and task (the class's
`Config` plus `name`, which defaults to the registered name), `ModelConfig` without `vocab_size`, `input_dim` and
`output_dim` (the task sets them at run time), `TrainConfig`, `EvalConfig` and one per logger kind. A field added
to any of these dataclasses appears in the schema, and so in every composed config, at once. What the dataclasses
cannot say (value ranges, choices among strings such as `impl`) is still checked when the run is built
(`__post_init__`, the classes' constructors).

Registered under the ConfigStore group `schema/`, apart from the config groups, so `mixer=<choice>` lists only the
YAML options. Import this module (arena.run does) before composing conf/ with Hydra's compose API.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
SCHEMA = "schema"  # the ConfigStore group of the schemas: schema/mixer/<name>, schema/task/<name>, schema/model, ...


def derived(config_cls: type, title: str, name: str | None = None, drop: tuple[str, ...] = ()) -> type:
    """A dataclass with `config_cls`'s fields (types resolved, defaults kept) minus `drop`, led by `name: str = name`
    when `name` is given; a copy rather than a subclass, so the schema carries no `__post_init__` of its own."""
    hints = typing.get_type_hints(config_cls)  # the annotations are strings (`from __future__ import annotations`)
    fields: list[tuple] = [] if name is None else [("name", str, dataclasses.field(default=name))]
    for f in dataclasses.fields(config_cls):
        if f.name in drop:
            continue
        if f.default is not dataclasses.MISSING:
            default = dataclasses.field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = dataclasses.field(default_factory=f.default_factory)
        else:
            default = dataclasses.field()  # no default: the YAML must set it (OmegaConf's ??? until then)
        fields.append((f.name, hints[f.name], default))
    schema = dataclasses.make_dataclass(re.sub(r"\W", "_", title), fields)
    schema.__qualname__ = title  # what OmegaConf's messages and one_line() name as the object type
    schema.__module__ = config_cls.__module__  # and where the dataclass lives
    return schema


def schemas() -> dict[str, type]:
    """ConfigStore path under schema/ -> schema dataclass, derived from the registries and dataclasses now."""
    # deferred: the registries import every mixer and task module (torch), which `--help` never needs
    from arena.evaluate import EvalConfig
    from arena.loggers import LOGGERS
    from arena.mixers import MIXERS
    from arena.model import ModelConfig
    from arena.tasks import TASKS
    from arena.train import TrainConfig

    out: dict[str, type] = {}
    for group, registry in (("mixer", MIXERS), ("task", TASKS)):
        for name in registry.names():
            cls = registry.get(name)
            out[f"{group}/{name}"] = derived(cls.Config, f"{cls.__name__}.Config", name=name)
    # vocab_size, input_dim, output_dim: the task's, at run time
    out["model"] = derived(ModelConfig, "ModelConfig", drop=("vocab_size", "input_dim", "output_dim"))
    out["train"] = derived(TrainConfig, "TrainConfig")
    out["eval"] = derived(EvalConfig, "EvalConfig")
    for kind, cls in LOGGERS.items():
        out[f"logger/{kind}"] = derived(cls, cls.__name__)
    return out


_REGISTERED: dict[str, type] = {}


def register() -> dict[str, type]:
    """Store every schema in Hydra's ConfigStore as schema/<path> (again on every call: cheap, and a dataclass
    changed since the last call is picked up)."""
    store = ConfigStore.instance()
    found = schemas()
    for path, schema in found.items():
        group, _, name = f"{SCHEMA}/{path}".rpartition("/")
        store.store(group=group, name=name, node=schema)
    _REGISTERED.clear()
    _REGISTERED.update(found)
    return found


def schema_for(group: str, name: str | None = None) -> type:
    """The schema dataclass of `group` (model, train, eval) or of one class in it (mixer kda, task stack, logger
    none)."""
    return _REGISTERED[group if name is None else f"{group}/{name}"]


def compose_options(group: str, options: list[str] | None = None) -> dict[str, dict]:
    """Option -> conf/<group>/<option>.yaml composed as in a job (its YAML on its schema: every key, defaults
    included) and resolved, for `options` (default: every YAML of the group). Through Hydra's compose API, inside
    the running app's or an open `initialize_config_dir`'s context, else in one of its own."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if options is None:
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    if not GlobalHydra.instance().is_initialized():
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose_options(group, options)
    from hydra.core.hydra_config import HydraConfig

    out, outer = {}, HydraConfig.instance().cfg  # the running app's, if any: restored after
    try:
        for option in options:
            cfg = compose(config_name="config", overrides=[f"{group}={option}"], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.choices.mixer} (a hybrid's layout) reads it
            out[option] = OmegaConf.to_container(cfg[group], resolve=True)
    finally:
        HydraConfig.instance().cfg = outer
    return out


def compose_option(group: str, option: str) -> dict:
    """conf/<group>/<option>.yaml composed as in a job, resolved (see compose_options)."""
    return compose_options(group, [option])[option]


register()
