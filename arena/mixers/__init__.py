"""Token mixers behind one registry.

    from arena.mixers import list_mixers, build_mixer
    list_mixers()                       # ['gdn', 'kda', 'mamba2', 'mla']
    mixer = build_mixer("kda", d_model=64, num_heads=2, impl="naive")

A mixer registers itself with `@register_mixer("name")` in its own module in this package; modules are
imported on the first lookup, so adding a mixer is one file here plus `conf/mixer/<name>.yaml`. The modules
that hold shared pieces rather than a mixer (base, common, delta_rule) are listed in the registry's `skip`.
"""

from __future__ import annotations

from arena.config_utils import make_config
from arena.mixers.base import Mixer, State
from arena.registry import Registry

MIXERS: Registry[Mixer] = Registry("mixer", __name__, skip=("base", "common", "delta_rule"))
register_mixer = MIXERS.register


def list_mixers() -> list[str]:
    """Names of all registered mixers, sorted."""
    return MIXERS.names()


def get_mixer(name: str) -> type[Mixer]:
    return MIXERS.get(name)


def build_mixer(name: str, d_model: int, **overrides) -> Mixer:
    """Build mixer `name` with its `Config` defaults, overridden by keyword; bad keys fail in one line."""
    cls = MIXERS.get(name)
    return cls(d_model, make_config(cls.Config, "mixer", **overrides))


__all__ = ["Mixer", "State", "build_mixer", "get_mixer", "list_mixers", "register_mixer"]
