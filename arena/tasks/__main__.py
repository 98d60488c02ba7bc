"""Look at the probes from the command line.

    python -m arena.tasks list                                  # every probe, one line each
    python -m arena.tasks show task=mqar                        # 3 decoded training examples
    python -m arena.tasks show task=parity seq_len=64 --n 2 --split test

`show` starts from conf/task/<name>.yaml, applies `key=value` overrides (a `task.` prefix is optional) and
prints inputs and targets aligned, with the scored positions marked by their target ('.' = unscored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from arena.errors import ConfigError, choice_error
from arena.tasks import IGNORE, build_task, get_task, list_tasks

CONF = Path(__file__).resolve().parents[2] / "conf" / "task"
WRAP = 24  # tokens per printed row


def summary_line(name: str) -> str:
    doc = (sys.modules[get_task(name).__module__].__doc__ or "").strip()
    first = " ".join(doc.split("\n\n")[0].split())  # the first paragraph, unwrapped
    return first if len(first) <= 110 else first[:107] + "..."


def task_spec(name: str, overrides: list[str]) -> dict:
    if name not in list_tasks():
        raise choice_error("task", name, list_tasks())
    path = CONF / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text()) if path.exists() else {"name": name}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. seq_len=64)")
        spec[key.removeprefix("task.")] = yaml.safe_load(value)
    return spec


def render(inputs: list[int], targets: list[int]) -> str:
    width = max(len(str(x)) for x in inputs + [t for t in targets if t != IGNORE]) + 1
    rows = []
    for start in range(0, len(inputs), WRAP):
        stop = min(len(inputs), start + WRAP)
        rows.append("  pos    " + "".join(f"{t:>{width}}" for t in range(start, stop)))
        rows.append("  input  " + "".join(f"{x:>{width}}" for x in inputs[start:stop]))
        rows.append("  target " + "".join(f"{'.' if y == IGNORE else y:>{width}}" for y in targets[start:stop]))
    scored = [t for t, y in enumerate(targets) if y != IGNORE]
    shown = ", ".join(map(str, scored[:40])) + (", ..." if len(scored) > 40 else "")
    rows.append(f"  scored positions ({len(scored)}): {shown}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arena.tasks", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "show"])
    parser.add_argument("settings", nargs="*", help="task=<name> and key=value overrides (show only)")
    parser.add_argument("--n", type=int, default=3, help="examples to show")
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            names = list_tasks()
            width = max(map(len, names))
            for name in names:
                print(f"{name:<{width}}  {summary_line(name)}")
            return 0
        chosen = [s for s in args.settings if s.startswith("task=")]
        if len(chosen) != 1:
            raise ConfigError(f"show needs exactly one task=<name>; choose one of: {', '.join(list_tasks())}")
        spec = task_spec(chosen[0].partition("=")[2], [s for s in args.settings if s not in chosen])
        name = spec.pop("name")
        task = build_task(name, **spec)
        batch = task.generate(args.n, [args.seed, 0], split=args.split)
        print(f"{name}: {summary_line(name)}")
        print(f"  settings: {spec}  vocab_size={task.vocab_size}  split={args.split}")
        for i in range(len(batch)):
            print(f"example {i}:")
            print(render(batch.inputs[i].tolist(), batch.targets[i].tolist()))
        return 0
    except ConfigError as err:
        print(f"arena: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
