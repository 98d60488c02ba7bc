"""Look at the probes from the command line.

    python -m arena.tasks list                                   # every task config (conf/task/*.yaml), one line each
    python -m arena.tasks show task=stack                        # 3 training examples in the task's symbols
    python -m arena.tasks show task=stack_kimi --n 1             # a config that reuses another task's class
    python -m arena.tasks show task=parity seq_len=64 --n 2 --split test --raw   # token ids instead of symbols
    python -m arena.tasks show task=stack_kimi --n 1 --shortcuts   # plus the shortcut baselines (docs/probes.md)

`list` and `show` compose conf/config.yaml with `task=<name>` through Hydra's compose API on the schemas
(arena/config_schema.py), as `python -m arena.run` does, so a task config's values are its YAML over its task
class's Config defaults. `show` adds the `key=value` overrides (a `task.` prefix is optional; Hydra parses and
type-checks them), builds the task and prints inputs and targets column by column in the task's symbols (a one-line
legend above them; `.` in a target row = unscored, in an input row the task's PAD), with settings whose 0 means
"derive it" shown as `auto (value in use)`. Bad input exits 2 in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import textwrap

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from arena.config_schema import CONF
from arena.config_utils import CONFIG_ERRORS, one_line
from arena.errors import ConfigError
from arena.tasks import IGNORE, build_task, get_task, list_tasks
from arena.tasks.base import split_seed

TASK_CONF = CONF / "task"
LINE = 112  # characters per printed row of tokens, label included
LABEL = "  target "  # the widest row label; every row label is padded to it
SHORTCUT_EXAMPLES = 1000  # test sequences `show --shortcuts` scores the shortcut baselines on
ALIGN_VOCAB = 512  # up to this many ids, every symbol of the vocabulary sets the column width (same grid each run)


def config_names() -> list[str]:
    """Every task config, conf/task/<name>.yaml: the registered tasks plus configs that reuse a task's class."""
    return sorted(p.stem for p in TASK_CONF.glob("*.yaml"))


def description(cls) -> str:
    """The task class's docstring first line, in full; else its module docstring's first paragraph, unwrapped."""
    if cls.__doc__:
        return cls.__doc__.strip().splitlines()[0]
    doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def list_line(name: str, width: int) -> str:
    """`name  description`; a config that reuses another task's class says which, and what it changes."""
    spec = compose_task(name, [])
    task = spec.pop("name", name)
    if task not in list_tasks():
        return f"{name:<{width}}  (conf/task/{name}.yaml names no registered task: name={task!r})"
    cls = get_task(task)
    line = f"{name:<{width}}  {description(cls)}"
    if task != name:
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        changed = ", ".join(f"{k}={v}" for k, v in spec.items() if defaults.get(k, dataclasses.MISSING) != v)
        line += f" [task {task}" + (f" with {changed}]" if changed else "]")
    return line


def hydra_override(item: str) -> str:
    """`seq_len=64` -> `task.seq_len=64` (also after Hydra's +, ++ and ~ prefixes); Hydra parses the rest."""
    prefix = next((p for p in ("++", "+", "~") if item.startswith(p)), "")
    return f"{prefix}task.{item[len(prefix):].removeprefix('task.')}"


@contextlib.contextmanager
def hydra_conf():
    """Hydra's compose API on conf/ (the schemas are registered: arena.config_schema), for one or many compositions
    (each initialisation costs ~0.1 s, so `list` opens one for all its configs)."""
    if GlobalHydra.instance().is_initialized():  # e.g. left behind by a Hydra app run earlier in this process
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="arena.tasks"):
        yield


def compose_task(name: str, overrides: list[str]) -> dict:
    """The `task` node of conf/config.yaml composed by Hydra with `task=<name>` and `overrides` (task.* keys)."""
    if not GlobalHydra.instance().is_initialized():
        with hydra_conf():
            return compose_task(name, overrides)
    try:
        cfg = compose(config_name="config", overrides=[f"task={name}", *overrides])
        return OmegaConf.to_container(cfg.task, resolve=True)
    except CONFIG_ERRORS as err:  # Hydra's messages span several lines: keep the substance, in one
        raise ConfigError(one_line(err, overrides=overrides)) from None


def settings_text(task) -> str:
    """The task's config as override syntax (`key=value`, true/false/null), wrapped to LINE; a knob left to derive
    itself reads `key=auto (value in use)`."""
    def literal(value) -> str:
        return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    auto = task.auto_settings()
    shown = []
    for key, value in dataclasses.asdict(task.cfg).items():
        derived = key in auto and (value is None or value == 0)
        shown.append(f"{key}=auto ({literal(auto[key])})" if derived else f"{key}={literal(value)}")
    text = ", ".join(item.replace(" ", "\0") for item in shown)  # wrap between settings, never inside one
    return textwrap.fill(text, LINE, initial_indent="  settings: ", subsequent_indent=" " * 12,
                         break_long_words=False, break_on_hyphens=False).replace("\0", " ")


def render(names: list[str], inputs: list[int], targets: list[int], width: int) -> str:
    """Position, input and target rows in columns `width` wide, wrapped to LINE characters; then the scored list."""
    def name(i: int) -> str:
        return names[i] if 0 <= i < len(names) else str(i)

    per_row = max(1, (LINE - len(LABEL)) // width)
    rows = []
    for start in range(0, len(inputs), per_row):
        stop = min(len(inputs), start + per_row)
        rows.append("  pos    " + "".join(f"{t:>{width}}" for t in range(start, stop)))
        rows.append("  input  " + "".join(f"{name(x):>{width}}" for x in inputs[start:stop]))
        rows.append(LABEL + "".join(f"{'.' if y == IGNORE else name(y):>{width}}" for y in targets[start:stop]))
    scored = [t for t, y in enumerate(targets) if y != IGNORE]
    shown = ", ".join(map(str, scored[:40])) + (", ..." if len(scored) > 40 else "")
    rows.append(f"  scored positions ({len(scored)}): {shown}")
    return "\n".join(rows)


def show(args: argparse.Namespace) -> None:
    chosen = [s for s in args.settings if s.startswith("task=")]
    if len(chosen) != 1:
        raise ConfigError(f"show needs exactly one task=<name>; choose one of: {', '.join(config_names())}")
    if args.n < 1:
        raise ConfigError(f"--n={args.n} must be >= 1 (examples to show)")
    name = chosen[0].partition("=")[2]
    spec = compose_task(name, [hydra_override(s) for s in args.settings if s not in chosen])
    task_name = spec.pop("name", name)
    task = build_task(task_name, **spec)
    batch = task.generate(args.n, [args.seed, 0], split=args.split)
    if task.kind == "regression":  # real vectors, not tokens: no symbol table to print
        show_pairs(task, batch, name if task_name == name else f"{name} (task {task_name})", args)
        return
    inputs, targets = batch.inputs.tolist(), batch.targets.tolist()

    names = [str(i) for i in range(task.vocab_size)] if args.raw else task.token_names()
    used = {i for row in inputs for i in row} | {i for row in targets for i in row if i != IGNORE}
    # a small vocabulary aligns on its widest symbol, so every example (and every seed) shares one grid
    widest = names if len(names) <= ALIGN_VOCAB else [names[i] if 0 <= i < len(names) else str(i) for i in used]
    width = 1 + max(len(str(task.seq_len - 1)), *map(len, widest))

    title = name if task_name == name else f"{name} (task {task_name})"
    print(f"{title}: {description(type(task))}")
    print(settings_text(task))
    print(f"  split={args.split}, seed={args.seed}, model vocabulary: {task.vocab_size} ids")
    legend = f"tokens print as their ids (0-{task.vocab_size - 1})" if args.raw else task.legend()
    print(f"  legend: {legend}; target . = unscored")
    for i in range(len(batch)):
        print(f"example {i}:")
        print(render(names, inputs[i], targets[i], width))
    if args.shortcuts:  # the trainer's test seed: the numbers a run of this setting records in summary.json
        accuracies = task.shortcut_baselines(task.generate(SHORTCUT_EXAMPLES, split_seed(0, "test"), split="test"))
        print(f"shortcut baselines (test split, {SHORTCUT_EXAMPLES} sequences, accuracy at the scored positions): "
              + (", ".join(f"{k} {v:.3f}" for k, v in accuracies.items()) or "none (targets are not tokens)"))


PAIRS_SHOWN = 6  # pairs printed per example of a regression task


def show_pairs(task, batch, title: str, args: argparse.Namespace) -> None:
    """A regression task's examples (icl_regression): the first pairs, x_i and the y_i scored at its position."""
    print(f"{title}: {description(type(task))}")
    print(settings_text(task))
    print(f"  split={args.split}, seed={args.seed}; real vectors in ({task.input_dim}) and out ({task.output_dim})")
    d_x = task.input_dim - task.output_dim

    def vec(values) -> str:
        return "[" + " ".join(f"{v:+.2f}" for v in values) + "]"

    for i in range(len(batch)):
        print(f"example {i}:")
        positions = batch.scored[i].nonzero().squeeze(1).tolist()
        for k, t in enumerate(positions[:PAIRS_SHOWN]):
            print(f"  pos {t:>3}  x = {vec(batch.inputs[i, t, :d_x].tolist())}  target y = "
                  f"{vec(batch.targets[i, t].tolist())}  ({k} pairs before it)")
        if len(positions) > PAIRS_SHOWN:
            print(f"  ... {len(positions)} scored positions in all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arena.tasks", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "show"])
    parser.add_argument("settings", nargs="*", help="task=<name> and key=value overrides (show only)")
    parser.add_argument("--n", type=int, default=3, help="examples to show")
    parser.add_argument("--split", default="train", choices=["train", "valid", "test"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true", help="print token ids instead of the task's symbols")
    parser.add_argument("--shortcuts", action="store_true",
                        help="also print the shortcut baselines on 1000 test sequences (arena/tasks/shortcuts.py)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            names = config_names()
            width = max(map(len, names))
            with hydra_conf():
                lines = [list_line(name, width) for name in names]
            print("\n".join(lines))
            return 0
        show(args)
        return 0
    except ConfigError as err:
        print(f"arena: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `show ... | head`: the reader left; stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
