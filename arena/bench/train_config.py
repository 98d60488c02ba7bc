"""The command line and run configs of `python -m arena.bench train` (arena/bench/train.py).

    bench, passthrough = parse_items(["mixers=[kda]", "train.compile=true"])   # bench keys | run-config overrides
    s = settings_from(items, cuda_available)     # checked Settings; the defaults depend on CUDA
    rows = compose_rows(s); check_rows(rows, s.cuda)     # every (mixer, T) row's run config, built once on the CPU

Bad keys or values are one-line ValueErrors, raised before anything is measured. Like arena/bench/train.py, this
file must also run inside a checkout of an older arena (the benchmark's "before" table). Run through
`python -m arena.bench train`; tests: tests/bench/test_bench_train.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MIXERS = ("kda", "gdn", "mamba2", "mla", "mla_nope", "hybrid_3to1")
# rows that are a model layout rather than one mixer: name -> (conf/model choice, the `mixer=` choice)
LAYOUT_ROWS = {"hybrid_3to1": ("hybrid_3to1", "kda")}
ROW_MODEL = "kimi_2l"  # the model of every single-mixer row
PASSTHROUGH = ("model", "mixer", "train", "task")  # `<group>.<key>=value` goes to the run config
LOOPS = ("auto", "trainer", "plain")
BENCH_KEYS = ("mixers", "seq_lens", "batch_size", "task", "steps", "warmup", "loop", "out")
CUDA_DEFAULTS = {"seq_lens": [256, 1024, 2048], "batch_size": 64, "steps": 30, "warmup": 10}
CPU_DEFAULTS = {"seq_lens": [64], "batch_size": 4, "steps": 10, "warmup": 3}  # the whole command in seconds
CPU_D_MODEL = 64


@dataclass
class Settings:
    mixers: list[str]
    seq_lens: list[int]
    batch_size: int
    task: str
    steps: int
    warmup: int
    loop: str
    out: Path
    cuda: bool  # whether the runs go to a CUDA device (decides the defaults)
    overrides: list[str] = field(default_factory=list)  # passed through to the run config, in order



def parse_items(items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Split key=value items into bench settings (values parsed as YAML) and run-config overrides.

    Raises a one-line ValueError for an item without `=`, an unknown key or a value of the wrong kind.
    """
    from omegaconf import OmegaConf

    bench, passthrough = {}, []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value")
        group, dot, _ = key.lstrip("+~").partition(".")
        if dot and group in PASSTHROUGH:
            passthrough.append(item)
            continue
        if key not in BENCH_KEYS:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(BENCH_KEYS)}, or "
                             f"{', '.join(p + '.<key>' for p in PASSTHROUGH)} for the run config")
        try:
            bench[key] = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={value}"]))["value"]
        except Exception:
            raise ValueError(f"{key}={value!r} cannot be parsed; write lists as [a,b]") from None
    for key in ("mixers", "seq_lens"):
        if key in bench and not isinstance(bench[key], list):
            bench[key] = [bench[key]]
    if "mixers" in bench:
        bench["mixers"] = [str(m) for m in bench["mixers"]]
        if not bench["mixers"]:
            raise ValueError("mixers=[] is empty; name at least one mixer")
    if "seq_lens" in bench:
        bench["seq_lens"] = [_positive("seq_lens", v) for v in bench["seq_lens"]] or _empty("seq_lens")
    for key in ("batch_size", "steps"):
        if key in bench:
            bench[key] = _positive(key, bench[key])
    if "warmup" in bench and (not _is_int(bench["warmup"]) or bench["warmup"] < 0):
        raise ValueError(f"warmup={bench['warmup']!r} must be an integer >= 0")
    if "loop" in bench and bench["loop"] not in LOOPS:
        raise ValueError(f"loop={bench['loop']!r} is not valid; choose one of: {', '.join(LOOPS)}")
    for key in ("task", "out"):
        if key in bench:
            bench[key] = str(bench[key])
    return bench, passthrough


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(key: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{key}: {value!r} must be a positive integer")
    return value


def _empty(key: str):
    raise ValueError(f"{key}=[] is empty; give at least one value")


def _override_value(overrides: list[str], key: str) -> str | None:
    """The last value given to `key` among the pass-through overrides, or None."""
    values = [item.partition("=")[2] for item in overrides if item.partition("=")[0] == key]
    return values[-1] if values else None


def settings_from(items: list[str], cuda_available: bool) -> Settings:
    """Parse and check the command line; the defaults depend on whether the runs go to CUDA."""
    bench, passthrough = parse_items(items)
    device = _override_value(passthrough, "train.device") or "auto"
    cuda = cuda_available if device == "auto" else device.startswith("cuda")
    defaults = CUDA_DEFAULTS if cuda else CPU_DEFAULTS
    s = Settings(mixers=bench.get("mixers", list(DEFAULT_MIXERS)), seq_lens=bench.get("seq_lens", defaults["seq_lens"]),
                 batch_size=bench.get("batch_size", defaults["batch_size"]), task=bench.get("task", "palindrome"),
                 steps=bench.get("steps", defaults["steps"]), warmup=bench.get("warmup", defaults["warmup"]),
                 loop=bench.get("loop", "auto"), out=Path(bench.get("out", "results/bench")), cuda=cuda,
                 overrides=passthrough)
    from arena.run import group_options

    allowed = group_options("mixer") + list(LAYOUT_ROWS)
    for name in s.mixers:
        if name not in allowed:
            raise ValueError(f"mixers: {name!r} is not valid; choose from {', '.join(allowed)}")
    if s.task not in group_options("task"):
        raise ValueError(f"task={s.task!r} is not valid; choose one of: {', '.join(group_options('task'))}")
    return s


# ------------------------------------------------------------------------------------------------ run configs

def row_overrides(s: Settings, mixer: str, T: int) -> tuple[str, str, list[str]]:
    """(model choice, mixer choice, Hydra overrides) of one row; the user's overrides come last and win."""
    model, chosen = LAYOUT_ROWS.get(mixer, (ROW_MODEL, mixer))
    values = {"task.seq_len": T, "task.num_train": 0, "train.batch_size": s.batch_size}
    if s.task == "palindrome":
        values["task.vocab_size"] = 16
    if not s.cuda:
        values["model.d_model"] = CPU_D_MODEL
    elif mixer in LAYOUT_ROWS:  # the layout at kimi_2l's width, so its layers are the single-mixer rows' layers
        values["model.d_model"] = 256
    given = {item.partition("=")[0] for item in s.overrides}
    fixed = [f"{k}={v}" for k, v in values.items() if k not in given]
    return model, chosen, [f"model={model}", f"mixer={chosen}", f"task={s.task}", *fixed, *s.overrides]


def compose_rows(s: Settings) -> list[dict]:
    """Compose and validate the run config of every row before anything is measured.

    Each row: mixer, T, config (resolved dict), specs (mixer specs per layout name), chosen. Builds every Run once
    on the CPU, so bad values (impossible shapes, unknown names) fail here in one line, not after an hour.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from arena.config_utils import one_line
    from arena.run import CONF, mixer_specs  # arena.run registers the config schemas (arena.config_schema)

    rows = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="bench_train"):
        for mixer in s.mixers:
            for T in s.seq_lens:
                model, chosen, overrides = row_overrides(s, mixer, T)
                try:  # Hydra checks group choices, keys and types against the schemas
                    cfg = compose(config_name="config", overrides=overrides)
                except Exception as exc:  # its messages span lines: one_line keeps the substance in one
                    raise ValueError(one_line(exc, overrides=overrides)) from None
                config = OmegaConf.to_container(cfg, resolve=True)
                rows.append({"mixer": mixer, "T": T, "model": model, "config": config,
                             "specs": mixer_specs(cfg, chosen), "chosen": chosen})
    return rows


def check_rows(rows: list[dict], cuda: bool) -> None:
    """Build each row's Run on the CPU (a small model: milliseconds) so its ConfigErrors surface up front; its
    train.cuda_graphs, which the CPU build cannot take as `on`, is checked against the device the rows run on."""
    import dataclasses

    import torch

    from arena.train import Run

    device = torch.device("cuda" if cuda else "cpu")  # where the rows run
    for row in rows:
        train = row["config"]["train"]
        graphs = train.get("cuda_graphs")  # absent in an older arena (the benchmark's "before" table)
        run = Run({**row["config"], "train": {**train, "device": "cpu", **({"cuda_graphs": "off"} if graphs else {})}},
                  row["specs"], row["chosen"])
        if graphs:
            from arena.train import graphs_wanted

            graphs_wanted(dataclasses.replace(run.train_cfg, cuda_graphs=graphs), device)
