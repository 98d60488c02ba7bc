"""Build a component's `@dataclass Config` from keyword overrides, with one-line errors for bad keys or types."""

from __future__ import annotations

import dataclasses

from arena.errors import ConfigError


def _check_type(where: str, key: str, default, value):
    """Coerce int -> float where the default is a float; reject values of an obviously wrong type."""
    if value is None or default is None or default is dataclasses.MISSING:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key}={value!r} must be true or false")
    elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif isinstance(default, (int, float)) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{where}: {key}={value!r} must be a number like {default!r}")
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where}: {key}={value!r} must be a string like {default!r}")
    return value


def make_config(config_cls, where: str, **overrides):
    """`config_cls(**overrides)`, but an unknown key or a mistyped value raises a one-line `ConfigError`."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    checked = {key: _check_type(where, key, fields[key].default, value) for key, value in overrides.items()}
    return config_cls(**checked)
