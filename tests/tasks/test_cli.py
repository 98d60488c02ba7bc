"""`python -m arena.tasks list | show`: every task config listed with its full description, examples decoded into
each task's symbols with a legend and aligned columns, configs composed by Hydra, "auto" knobs named, bad input
exits 2 in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from arena.tasks import build_task, get_task
from arena.tasks.__main__ import main

CONF = Path(__file__).resolve().parents[2] / "conf" / "task"
CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml"))


def task_class(option: str) -> str:
    """The task class a conf/task option builds: its schema, `/schema/task/<class>@_here_` (stack_deep: stack)."""
    return re.fullmatch(r"/schema/task/(\w+)@_here_", yaml.safe_load((CONF / f"{option}.yaml").read_text())
                        ["defaults"][0]).group(1)


def show(capsys, *argv: str) -> str:
    assert main(["show", *argv]) == 0
    return capsys.readouterr().out


def blocks(out: str) -> list[list[str]]:
    """The (pos, input, target) row triples of every printed example."""
    lines = [line for line in out.splitlines() if line.startswith(("  pos ", "  input ", "  target "))]
    return [lines[i: i + 3] for i in range(0, len(lines), 3)]


def cells(row: str, width: int) -> list[str]:
    body = row[len("  target "):]
    assert len(body) % width == 0, f"row {row!r} is not a whole number of {width}-wide columns"
    return [body[i: i + width].strip() for i in range(0, len(body), width)]  # cells are right-aligned


def test_list_names_every_task_config_with_its_full_description(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == CONFIGS  # stack_kimi and mqar-style reuses of a class included
    for line in out:
        name, description = line.split(maxsplit=1)
        cls = get_task(task_class(name))
        assert description.startswith(cls.__doc__.splitlines()[0]), f"{name}: {description!r}"
        assert not description.endswith("...")
    kimi = next(line for line in out if line.startswith("stack_kimi "))
    assert "stack" in kimi.split(maxsplit=1)[1] and "num_stacks=64" in kimi


def test_show_decodes_tokens_with_a_legend_and_aligned_columns(capsys):
    out = show(capsys, "task=stack", "--n", "3")
    task = build_task("stack")
    names = set(task.token_names())
    legend = [line for line in out.splitlines() if "legend:" in line]
    assert len(legend) == 1 and "PUSH (1) push" in legend[0] and "s0 s1 s2 s3 (3-6) stack ids" in legend[0]
    triples = blocks(out)
    assert len(triples) >= 3
    width = 1 + max(map(len, names))  # a small vocabulary: one grid, as wide as its widest symbol ("PUSH")
    for pos, inp, tgt in triples:
        assert len(pos) == len(inp) == len(tgt), "pos, input and target rows must line up"
        positions, inputs, targets = cells(pos, width), cells(inp, width), cells(tgt, width)
        assert all(c for c in positions + inputs + targets), "every cell holds a token, right-aligned"
        assert positions == [str(int(p)) for p in positions]
        assert set(inputs) <= names and set(targets) <= names | {"."}
    inner = [pos for pos, _, _ in triples if not pos.endswith(f" {task.seq_len - 1}")]  # not an example's last row
    assert len({len(pos) for pos in inner}) == 1, "every example wraps on the same columns"
    assert {"PUSH", "POP"} <= {c for _, inp, _ in triples for c in inp.split()}
    assert not any(re.fullmatch(r"\d+", c) for _, inp, _ in triples for c in inp.split()[1:]), "raw ids printed"


def test_show_raw_prints_ids(capsys):
    out = show(capsys, "task=stack", "--n", "1", "--raw")
    _, inp, _ = blocks(out)[0]
    assert all(re.fullmatch(r"\d+", c) for c in inp.split()[1:])


def test_show_composes_task_configs_that_reuse_another_class(capsys):
    out = show(capsys, "task=stack_kimi", "--n", "1")
    assert out.startswith("stack_kimi (task stack): ")
    assert "num_stacks=64" in out and "num_ops=auto (85)" in out and "seq_len=256" in out
    assert "s63 (66) stack ids" not in out and "s0..s63 (3-66) stack ids" in out


def test_show_goes_through_hydra_compose(capsys):
    # an interpolation only Hydra resolves; the task. prefix is optional
    out = show(capsys, "task=mqar", "task.seq_len=${task.vocab_size}", "num_kv_pairs=3", "--n", "2", "--split", "test")
    assert "seq_len=64," in out and "num_kv_pairs=3," in out
    assert out.count("example ") == 2 and out.count("scored positions (3)") == 2


def test_show_names_auto_settings(capsys):
    out = show(capsys, "task=stack", "--n", "1")
    assert "num_ops=auto (16)" in out
    assert "copy_len=auto (15)" in show(capsys, "task=palindrome", "--n", "1")
    assert main(["show", "task=stack", "seq_len=4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("arena: error: ") and err.count("\n") == 1 and "num_ops=auto (1)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["task=no_such_probe"], "task='no_such_probe' is not valid; choose one of: a5, "),
        (["task=stack", "seq_lenn=3"], "task.seq_lenn is not a key of Stack.Config (arena/tasks/stack.py); valid keys"),
        (["task=stack", "seq_len"], "override 'task.seq_len' is not valid: "),  # Hydra's parser says why
        (["task=stack", "seq_len=["], "override 'task.seq_len=[' is not valid: "),
        (["task=stack", "seq_len=1,2"], "override 'task.seq_len=1,2' is not valid: "),
        (["task=mqar", "seq_len=4"], "task mqar: seq_len=4 cannot fit"),
        (["task=stack", "seq_len=abc"], "'abc'"),  # a one-line type error, from Hydra's schema or the task's Config
        (["seq_len=4"], "show needs exactly one task=<name>; choose one of: "),
        (["task=stack", "--n", "0"], "--n=0 must be >= 1"),
    ],
)
def test_show_bad_input_exits_2_in_one_line(capsys, argv, message):
    assert main(["show", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("arena: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err
    if "choose one of" in message:
        assert "stack_kimi" in captured.err
