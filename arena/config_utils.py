"""One-line messages for bad config input, over Hydra's and OmegaConf's checks.

Hydra checks keys and types against the schemas (arena/config_schema.py) when it composes a job, and
`make_config` checks keyword overrides of a `@dataclass Config` the same way, through OmegaConf; both raise
multi-line errors. `one_line` turns such an error into one `ConfigError` line that names the key and what is
allowed; the range checks a type cannot express stay in the dataclasses' `__post_init__` and the constructors.

    make_config(TrainConfig, "train", steps=10)          # TrainConfig(steps=10, ...), or a one-line ConfigError
    except CONFIG_ERRORS as err:                         # a Hydra or OmegaConf error ...
        raise ConfigError(one_line(err)) from None       # ... in one line

`SweepDirNote`, a Hydra callback, lets `python -m arena.run -m` remove the sweep folder Hydra made when the sweep's
grid turns out to be bad input.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from arena.errors import ConfigError, choice_error

KINDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}
NOISE = ("hydra.cc", "HYDRA_FULL_ERROR", "provider=")  # lines of Hydra's messages that say nothing about the input
CONFIG_ERRORS = (HydraException, OmegaConfBaseException)  # what Hydra and OmegaConf raise for bad config input


def make_config(config_cls, where: str, **overrides):
    """`config_cls(**overrides)`, keys and types checked by OmegaConf against the dataclass (ints become floats
    where the field is a float); an unknown key or a mistyped value raises a one-line `ConfigError` naming
    `<where>.<key>`. The dataclass's `__post_init__` (ranges) runs as usual."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config_cls), overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(one_line(err, prefix=where)) from None


def _type_name(tp) -> str:
    """`int`, `float | None`, `list[int]`: a field's type as a user reads it."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    text = re.sub(r"\btyping\.|\bbuiltins\.", "", str(tp)).replace("NoneType", "None")
    return re.sub(r"\b(List|Dict|Tuple)\[", lambda m: m.group(1).lower() + "[", text)


def _where(err: OmegaConfBaseException) -> tuple[str, str | None, list[str], bool]:
    """(what the failing node is, the failing field's type, the node's valid keys, whether it is a dataclass's: a
    schema, which takes no new keys) from an OmegaConf error."""
    obj, key = getattr(err, "object_type", None), getattr(err, "key", None)
    parent = getattr(err, "parent_node", None)
    keys = [str(k) for k in parent.keys() if k != "hydra"] if isinstance(parent, DictConfig) else []
    if isinstance(obj, type) and hasattr(obj, "__dataclass_fields__"):
        module = getattr(obj, "__module__", "")
        title = obj.__qualname__ + (f" ({module.replace('.', '/')}.py)" if module.startswith("arena.") else "")
        hint = typing.get_type_hints(obj).get(key) if isinstance(key, str) else None
        typed = None if hint is None else f"{obj.__qualname__}.{key}: {_type_name(hint)}"
        return title, typed, list(obj.__dataclass_fields__), True
    ref = getattr(err, "ref_type", None)  # an element of a typed list: the list's type
    listed = re.sub(r"\[\d+\]$", "", str(getattr(err, "full_key", "")))  # eval.lengths[0] -> eval.lengths
    element = None if ref in (None, typing.Any) else f"{listed}: {_type_name(ref)}"
    return "the config (conf/config.yaml and the chosen options)", element, keys, False


def _omegaconf_line(err: OmegaConfBaseException, prefix: str) -> str:
    key = str(getattr(err, "full_key", None) or getattr(err, "key", None) or "?")
    key = f"{prefix}.{key}" if prefix else key
    msg = str(getattr(err, "msg", None) or err).splitlines()[0]
    title, typed, keys, schema = _where(err)
    typed = f" ({typed})" if typed else ""
    if isinstance(err, InterpolationResolutionError):  # `${...}` that does not resolve: the message says why
        return f"{key}: {msg}"
    if "not in" in msg and ("Key '" in msg or "is not in struct" in msg):  # a key the node does not have
        hint = "" if schema else f" (add a new key with +{key}=...)"
        return f"{key} is not a key of {title}; valid keys: {', '.join(keys)}{hint}"
    found = re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", msg)
    if found:
        value, given, wanted = found.groups()
        shown = repr(value) if given == "str" else value
        return f"{key}={shown} must be {KINDS.get(wanted, wanted)}{typed}"
    found = re.match(r"Value '(.*)' is not a valid (\w+)", msg)  # OmegaConf's wording for a bool
    if found:
        value, wanted = found.groups()
        return f"{key}={value!r} must be {'true or false' if wanted == 'bool' else wanted}{typed}"
    if "is not Optional" in msg or "Incompatible value 'None'" in msg:
        return f"{key}=null is not allowed{typed}"
    if "is not a ListConfig, list or tuple" in msg:
        return f"{key} must be a list, e.g. [a,b]{typed}"
    return f"{key}: {msg}"


def one_line(err: BaseException, prefix: str = "", overrides: typing.Sequence[str] = ()) -> str:
    """The one-line message for a Hydra composition error or an OmegaConf error. `prefix` is the path of the node
    an OmegaConf error's keys are relative to (`make_config`); `overrides`, the command line's, lets a message
    that quotes one of them name it."""
    if isinstance(err, MissingConfigException) and err.options and "/" in (err.missing_cfg_file or ""):
        group, _, choice = err.missing_cfg_file.rpartition("/")  # `mixer=foo`: name the group's options
        return str(choice_error(group, choice, err.options))
    text = "; ".join(line.strip() for line in str(err).splitlines()
                     if line.strip() and not any(noise in line for noise in NOISE) and "search path" not in line)
    if isinstance(err, OverrideParseException):
        return f"override {err.override!r} is not valid: {text}"
    if isinstance(err.__cause__, OmegaConfBaseException):  # Hydra's "Could not override ..." wraps OmegaConf's
        return _swept_group_hint(_omegaconf_line(err.__cause__, prefix), overrides)
    if isinstance(err, OmegaConfBaseException):
        return _swept_group_hint(_omegaconf_line(err, prefix), overrides)
    culprit = next((o for o in overrides if o in str(err)), None)
    return f"override {culprit!r} is not valid: {text}" if culprit else text


def _swept_group_hint(line: str, overrides: typing.Sequence[str]) -> str:
    """`line` plus a hint where the key belongs to a group the command sweeps (`task=parity,modular_arithmetic
    task.train_min_len=3`): Hydra composes a multirun's config once without its sweep values, i.e. with the
    group's default option, before any point, so a key only the swept options have fails there; `++` adds it."""
    found = re.match(r"(\w+)\.(\S+) is not a key of ", line)
    if not found:
        return line
    group, key = found.groups()
    swept = any(re.fullmatch(rf"{group}=[^=]*(,|\(|\*)[^=]*", o) for o in overrides)
    given = next((o for o in overrides if o.startswith(f"{group}.{key}=")), None)
    if not swept or given is None:
        return line
    return (f"{line} (in a sweep over {group}=, Hydra first composes the default {group}, which lacks this key: "
            f"write ++{given} and each point whose {group} has the key takes it)")


class SweepDirNote(Callback):
    """Hydra callback (conf/config.yaml, hydra.callbacks) that notes a sweep's folder when the sweep starts. Hydra
    makes the folder before it composes the grid's configs, so when a grid point is bad input `arena.run.main`
    removes the folder again (if no job has written to it): bad input leaves no results, in sweeps too."""

    sweep_dir: Path | None = None  # class attributes: `python -m arena.run` runs as __main__, Hydra imports this
    results_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # the same config object the sweeper reads, so ${now:...} resolves to the same (cached) time
        SweepDirNote.sweep_dir = Path(config.hydra.sweep.dir)
        SweepDirNote.results_dir = Path(config.results_dir)
