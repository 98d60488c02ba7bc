"""Defaults live once: the config schemas (arena/config_schema.py) are the dataclasses, every conf/ option holds only
what differs from them, and composing conf/ still gives the values and config hashes that runs used before.

    python -m pytest -q tests/test_config_schema.py
    python tests/test_config_schema.py --write tests/data/composed_configs.json   # re-record (see below)

tests/data/composed_configs.json was recorded with this file's `snapshot()` on the commit before the schemas
(b08d6ed, where every YAML wrote out every value): each conf/<group>/<option>.yaml composed into a job, and whole
jobs (the default, hybrids, points of every preset in conf/experiment/) with their resolved config, `config_hash`
(what resume matches finished runs by) and mixer specs. The tests compose the same things now and compare them
type for type (1 is not 1.0: the hash would differ). A key the record lacks is accepted only as a field added to a
dataclass since, at its default; with it left out the job must hash as recorded. Re-record only for a deliberate
change of what runs compute (the five mini presets' jobs were re-recorded when they went from 40 to 20 steps,
and again when their batch went from 32 to 16 and their validation / test sets from 100 to 50 sequences, to keep
CI's suite inside its time).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from arena.run import CONF, HASH_IGNORED, config_hash, group_options, mixer_specs

RECORD = Path(__file__).resolve().parent / "data" / "composed_configs.json"
GROUPS = ("mixer", "task", "model", "train", "logger")
JOBS = {  # label -> overrides: the default job, hybrids, and for every preset its default point or a grid point
    "default": [],
    "mixer=gdn": ["mixer=gdn"],
    "hybrid": ["model=hybrid_3to1"],
    "hybrid_mixer_mla": ["model=hybrid_3to1_mixer", "mixer=mla"],
    "kimi_synthetic": ["+experiment=kimi_synthetic"],
    "kimi_synthetic@stack_kimi,2048,gdn,1e-3": ["+experiment=kimi_synthetic", "task=stack_kimi", "task.seq_len=2048",
                                                "mixer=gdn", "train.lr=1e-3"],
    "kimi_synthetic_mini@mqar_kimi,64,mamba2": ["+experiment=kimi_synthetic_mini", "task=mqar_kimi",
                                                "task.seq_len=64", "mixer=mamba2", "train.lr=3e-3"],
    "state_tracking@s5,gdn,neg": ["+experiment=state_tracking", "task=s5", "mixer=gdn", "mixer.allow_neg_eigval=true",
                                  "train.lr=1e-2", "train.seed=2"],
    "state_tracking_mini": ["+experiment=state_tracking_mini"],
    "zoology_mqar@L512,d512,mla_nope": ["+experiment=zoology_mqar", "mqar_setting=L512", "model.d_model=512",
                                        "mixer=mla_nope", "train.lr=1e-2"],
    "zoology_mqar_mini": ["+experiment=zoology_mqar_mini"],
    "nope_vs_rope@flip_flop,hybrid,mla_nope": ["+experiment=nope_vs_rope", "task=flip_flop",
                                               "model=hybrid_3to1_mixer", "mixer=mla_nope", "train.lr=3e-3",
                                               "train.seed=1"],
    "nope_vs_rope_mini": ["+experiment=nope_vs_rope_mini"],
    "reasoning@fuzzy_recall,hybrid,mamba2": ["+experiment=reasoning", "task=fuzzy_recall", "model=hybrid_3to1_mixer",
                                             "mixer=mamba2"],
    "reasoning_mini": ["+experiment=reasoning_mini"],
}


def _compose(overrides: list[str]):
    """(config node, resolved dict, group choices) of one job, composed as `python -m arena.run` does."""
    cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.choices.*} (hybrid layouts, presets) read it
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, OmegaConf.to_container(cfg, resolve=True), choices


def snapshot() -> dict:
    """Every group option composed into a job, and every job of JOBS with its hash and mixer specs, as JSON data.
    Uses only what arena.run offered before the schemas too, so the same code recorded the file."""
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    out = {"options": {}, "jobs": {}}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        try:
            for group in GROUPS:
                for option in group_options(group):
                    out["options"][f"{group}/{option}"] = _compose([f"{group}={option}"])[1][group]
            for label, overrides in JOBS.items():
                cfg, config, choices = _compose(overrides)
                out["jobs"][label] = {"overrides": overrides, "config": config, "hash": config_hash(config),
                                      "specs": mixer_specs(cfg, choices["mixer"])}
        finally:
            HydraConfig.instance().cfg = None
    return json.loads(json.dumps(out))  # tuples -> lists, as in the file


def typed(value) -> str:
    """A value as canonical JSON, so 1 and 1.0 (or true and 1) differ as they do in the config hash."""
    return json.dumps(value, sort_keys=True)


def new_defaults(recorded, now, path: str = "") -> dict[str, object]:
    """Keys of `now` missing from `recorded` (nested dicts included) -> their value: fields added since."""
    if not isinstance(recorded, dict) or not isinstance(now, dict):
        return {}
    found = {}
    for key, value in now.items():
        where = f"{path}{key}"
        if key not in recorded:
            found[where] = value
        else:
            found.update(new_defaults(recorded[key], value, f"{where}."))
    return found


def without(node, dotted: list[str]):
    """`node` with the dotted keys removed (a copy)."""
    node = json.loads(json.dumps(node))
    for key in dotted:
        *parents, last = key.split(".")
        target = node
        for part in parents:
            target = target[part]
        del target[last]
    return node


def free(config: dict, group: str | None = None) -> dict:
    """`config` (a whole job's, or the node of `group`) less the HASH_IGNORED keys, which may take any value: how a
    run computes (train.cuda_graphs: its default moved from off to auto), not what."""
    config = json.loads(json.dumps(config))
    for name, keys in HASH_IGNORED.items():
        node = config if group == name else config.get(name) if group is None else None
        for key in keys if isinstance(node, dict) else ():
            node.pop(key, None)
    return config


def schema_default(group_path: str, key: str):
    """The default of `key` in the schema at schema/<group_path> (a dataclass field)."""
    from arena.config_schema import schema_for

    head, *inner = key.split(".")  # a dotted key: a field of a nested node (eval.lm_eval.bootstrap_iters)
    (field,) = [f for f in dataclasses.fields(schema_for(group_path)) if f.name == head]
    value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # eval.lm_eval: a node
    for part in inner:
        value = value[part]
    return value


def schema_path(group: str, node: dict) -> str:
    """Which schema a composed option extends: schema/mixer/<name>, schema/task/<name>, schema/logger/<kind>, ..."""
    if group in ("mixer", "task"):
        return f"{group}/{node['name']}"
    return f"logger/{node['kind']}" if group == "logger" else group


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


@pytest.fixture(scope="module")
def now() -> dict:
    return snapshot()


def test_every_option_composes_to_the_values_runs_used(record, now):
    """Each conf/<group>/<option>.yaml, now only the values that differ from its schema, composes to exactly what
    the YAML wrote out before (types included); a key added since is a new dataclass field at its default."""
    assert set(record["options"]) <= set(now["options"]), "an option recorded is gone (re-record if deliberate)"
    for option, recorded in record["options"].items():
        composed = now["options"][option]
        added = new_defaults(recorded, composed)
        group = option.split("/")[0]
        for key, value in added.items():
            assert typed(value) == typed(schema_default(schema_path(group, composed), key)), (option, key)
        assert typed(free(without(composed, list(added)), group)) == typed(free(recorded, group)), option


def test_jobs_compose_and_hash_as_before(record, now):
    """The default job, hybrids and preset points: the same resolved config, mixer specs and config hash, so resume
    still recognises runs made before the schemas (a key added since, at its default, set aside)."""
    for label, recorded in record["jobs"].items():
        job = now["jobs"][label]
        added = new_defaults(recorded["config"], job["config"])
        for key, value in added.items():
            group, _, field = key.partition(".")
            assert field, (label, key)  # a field of a group node (or of a node in it), not a new node
            assert typed(value) == typed(schema_default(schema_path(group, job["config"][group]), field)), (label, key)
        config = without(job["config"], list(added))
        assert typed(free(config)) == typed(free(recorded["config"])), label
        assert config_hash(config) == config_hash(recorded["config"]) == recorded["hash"], label
        assert job["hash"] == recorded["hash"], (
            f"{label}: keys added since {sorted(added)} change the config hash; if their defaults do what runs did "
            "before, list them in arena.run.HASH_NEUTRAL, else re-record (every earlier run will run again)")
        for name, spec in job["specs"].items():
            spec_added = new_defaults(recorded["specs"][name], spec)
            assert all(typed(v) == typed(schema_default(f"mixer/{spec['name']}", k)) for k, v in spec_added.items())
            assert typed(without(spec, list(spec_added))) == typed(recorded["specs"][name]), (label, name)


def test_hash_ignored_keys_leave_the_hash_alone_at_any_value(record):
    """A run recorded with train.cuda_graphs=off (the old default) has the hash of the same run at auto (the default
    now), at on, and without the key: finished runs stay found whichever way the step was run."""
    recorded = record["jobs"]["default"]
    assert recorded["config"]["train"]["cuda_graphs"] == "off"  # what the record holds
    for value in ("auto", "on"):
        changed = {**recorded["config"], "train": {**recorded["config"]["train"], "cuda_graphs": value}}
        assert config_hash(changed) == recorded["hash"], value
    assert config_hash(free(recorded["config"])) == recorded["hash"]
    lr = {**recorded["config"], "train": {**recorded["config"]["train"], "lr": 0.5}}
    assert config_hash(lr) != recorded["hash"]  # a train key that is not ignored still counts


def test_added_fields_at_their_defaults_leave_the_hash_alone():
    """HASH_NEUTRAL keys drop out of the hash at their schema default only: another value is another run."""
    from arena.run import HASH_NEUTRAL, _neutral_defaults

    base = {"mixer": {"name": "kda", "num_heads": 2}, "train": {"lr": 0.001}, "task": {"name": "mqar"},
            "eval": {"lengths": []}}
    for group, keys in HASH_NEUTRAL.items():
        node = base[group]
        defaults = _neutral_defaults(group, node)
        assert defaults and set(defaults) <= set(keys), group  # the schema has them: the table is not stale
        for key, default in defaults.items():
            if "." in key:  # a key of a nested node (eval.lm_eval.bootstrap_iters): that node at its default ...
                head, _, inner = key.partition(".")
                parent = {k: v for k, v in defaults[head].items() if k != inner}  # ... as recorded before the key
                at_default = {**base, group: {**node, head: {**parent, inner: default}}}
                assert config_hash(at_default) == config_hash({**base, group: {**node, head: parent}}) == \
                    config_hash(base), (group, key)
                # and beside other values (an lm-eval run recorded before the key keeps its hash)
                other = {**parent, next(iter(parent)): ["changed"]}
                assert config_hash({**base, group: {**node, head: {**other, inner: default}}}) == \
                    config_hash({**base, group: {**node, head: other}}) != config_hash(base), (group, key)
                changed = default * 2 or 1
                assert config_hash({**base, group: {**node, head: {**parent, inner: changed}}}) != \
                    config_hash(base), (group, key)
                continue
            at_default = {**base, group: {**node, key: default}}
            assert config_hash(at_default) == config_hash(base), (group, key)
            if isinstance(default, dict):  # a nested node (eval.lm_eval): one of its keys changed
                changed = {**default, next(iter(default)): ["changed"]}
            else:
                changed = "zero_dt" if isinstance(default, str) else (not default if isinstance(default, bool)
                                                                      else default * 2 or 1)  # 0 (checkpoint_every)
            assert config_hash({**base, group: {**node, key: changed}}) != config_hash(base), (group, key)
    assert config_hash({**base, "task": {"name": "mqar", "init": "fla"}}) != config_hash(base)  # mixer/train only


OPTION_FILES = sorted(p for group in GROUPS for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("path", OPTION_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_option_repeats_a_dataclass_default(path, now):
    """A conf/<group>/<option>.yaml extends its schema first and then sets only keys of it whose values differ from
    the dataclass default: a default written into a YAML would be a second copy that silently stops following
    the dataclass. (conf/experiment/ presets are exempt: they state a published setup in full, on purpose.)"""
    from arena.config_schema import schema_for

    text = yaml.safe_load(path.read_text()) or {}
    group = path.parent.name
    composed = now["options"][f"{group}/{path.stem}"]
    target = schema_path(group, composed)
    assert text.pop("defaults", None) == [f"/schema/{target}@_here_", "_self_"], \
        f"{path.name}: the defaults list must be [/schema/{target}@_here_, _self_]"
    fields = {f.name for f in dataclasses.fields(schema_for(target))}
    for key in text:
        assert key in fields, f"{path.name}: {key} is not a key of its schema"
        # the composed value: the YAML's, converted to the field's type (mlp_ratio: 0 is 0.0, a repeat too)
        assert typed(composed[key]) != typed(schema_default(target, key)), \
            f"conf/{group}/{path.name}: {key}: {text[key]!r} repeats the default of {schema_for(target).__qualname__}"


def test_config_yaml_leaves_group_nodes_to_their_schemas():
    """conf/config.yaml sets no values inside a node that has a schema (eval included: EvalConfig's defaults)."""
    root = yaml.safe_load((CONF / "config.yaml").read_text())
    assert not set(root) & {*GROUPS, "eval"}, sorted(set(root) & {*GROUPS, "eval"})
    assert "/schema/eval@eval" in root["defaults"]



def test_schemas_are_the_registered_dataclasses():
    """One schema per registered mixer and task: its class's Config fields, in order, after `name`; the model's
    without vocab_size, input_dim and output_dim (the task's, set at run time)."""
    from arena.config_schema import schema_for
    from arena.mixers import get_mixer, list_mixers
    from arena.model import ModelConfig
    from arena.tasks import get_task, list_tasks
    from arena.train import TrainConfig

    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    for group, listed, get in (("mixer", list_mixers(), get_mixer), ("task", list_tasks(), get_task)):
        for name in listed:
            assert names(schema_for(group, name)) == ["name", *names(get(name).Config)], name
            assert schema_default(f"{group}/{name}", "name") == name
    assert names(schema_for("model")) == [n for n in names(ModelConfig)
                                          if n not in ("vocab_size", "input_dim", "output_dim")]
    assert names(schema_for("train")) == names(TrainConfig)


def test_a_field_added_to_a_dataclass_reaches_every_composed_config(monkeypatch):
    """The schemas are derived, not copied out: a field added to a mixer's Config (as `init` may be) is a key of
    conf/mixer/kda.yaml's composed config at its default, and Hydra type-checks it."""
    from arena import config_schema
    from arena.config_utils import CONFIG_ERRORS, one_line
    from arena.mixers import get_mixer

    kda = get_mixer("kda")
    knob = ("probe_knob", int, dataclasses.field(default=7))
    grown = dataclasses.make_dataclass("Config", [knob], bases=(kda.Config,))
    monkeypatch.setattr(kda, "Config", grown)
    try:
        config_schema.register()
        assert config_schema.compose_option("mixer", "kda")["probe_knob"] == 7
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            assert compose(config_name="config", overrides=["mixer.probe_knob=3"]).mixer.probe_knob == 3
            with pytest.raises(CONFIG_ERRORS) as err:
                compose(config_name="config", overrides=["mixer.probe_knob=seven"])
        assert one_line(err.value) == "mixer.probe_knob='seven' must be an integer (KDA.Config.probe_knob: int)"
    finally:
        monkeypatch.undo()
        config_schema.register()
    assert "probe_knob" not in config_schema.compose_option("mixer", "kda")


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.lrr=1"], "train.lrr is not a key of TrainConfig (arena/train.py); valid keys: steps, batch_size, lr,"),
    (["mixer=foo"], "mixer='foo' is not valid; choose one of: gdn, kda, mamba2, mla, mla_conv, mla_nope"),
    (["train.steps=abc"], "train.steps='abc' must be an integer (TrainConfig.steps: int)"),
    (["mixer.num_heads=two"], "mixer.num_heads='two' must be an integer (KDA.Config.num_heads: int)"),
    (["mixer=mla", "mixer.rope=maybe"], "mixer.rope='maybe' must be true or false (MLA.Config.rope: bool)"),
    (["model.vocab_size=5"], "model.vocab_size is not a key of ModelConfig (arena/model.py); valid keys: d_model,"),
    (["eval.lengths=[64,x]"], "eval.lengths[1]='x' must be an integer (eval.lengths: list[int])"),
    (["mixer.num_heads=null"], "mixer.num_heads=null is not allowed (KDA.Config.num_heads: int)"),
    (["logger.mode=online"], "logger.mode is not a key of NoLoggerConfig (arena/loggers.py); valid keys: kind"),
    (["+experiment=nope"],
     "experiment='nope' is not valid; choose one of: icl_regression, icl_regression_mini, kda_vs_gdn, "),
    (["nope=1"], "nope is not a key of the config (conf/config.yaml and the chosen options); valid keys: mixer, "),
    (["task.seq_len=1,2"], "override 'task.seq_len=1,2' is not valid: Ambiguous value for argument"),
])
def test_hydra_rejects_bad_keys_and_types_in_one_line(overrides, message):
    """Hydra composes against the schemas and rejects what they lack or mistype; one_line says it in one line (the
    command-line twins, exit code 2 and no run directory, are in tests/test_run.py's BAD table)."""
    from arena.config_utils import CONFIG_ERRORS, one_line

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(CONFIG_ERRORS) as err:
            compose(config_name="config", overrides=overrides)
    line = one_line(err.value, overrides=overrides)
    assert line.startswith(message) and "\n" not in line, line


@pytest.mark.parametrize(("sweep", "hinted"), [("task=parity,modular_arithmetic", True), ("task=parity", False),
                                               ("mixer=kda,gdn", False)])
def test_a_key_of_swept_options_only_names_the_plus_plus_form(sweep, hinted):
    """A multirun composes its config once without its sweep values, i.e. with the group's default option: a key
    that only the swept options have fails there (`task=parity,... task.train_min_len=3`, the default task being
    MQAR). The line says to write `++task.train_min_len=3`, only when the command sweeps that group."""
    from arena.config_utils import CONFIG_ERRORS, one_line

    key = "task.train_min_len=3"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(CONFIG_ERRORS) as err:  # what the sweep's first composition sees: the default task
            compose(config_name="config", overrides=[key])
        line = one_line(err.value, overrides=[sweep, key])
        assert line.startswith("task.train_min_len is not a key of MQAR.Config") and "\n" not in line
        assert ("write ++task.train_min_len=3 and each point" in line) is hinted, line
        both = compose(config_name="config", overrides=["task=parity", "++" + key])  # the advice composes
        assert both.task.train_min_len == 3


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_config_schema.py --write <file.json>")
    Path(sys.argv[2]).write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
