"""`python -m arena.tasks list | show`: probes listed, examples decoded with scored positions, bad input exits 2."""

from __future__ import annotations

from arena.tasks import list_tasks
from arena.tasks.__main__ import main


def test_list_names_every_probe(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list_tasks()
    assert all(len(line.split(maxsplit=1)) == 2 for line in out), "every probe needs a one-line description"


def test_show_decodes_examples_with_scored_positions(capsys):
    assert main(["show", "task=mqar", "task.seq_len=24", "num_kv_pairs=3", "--n", "2", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert out.count("example ") == 2 and out.count("scored positions (3)") == 2
    assert "'seq_len': 24" in out


def test_show_bad_input_exits_2(capsys):
    assert main(["show", "task=no_such_probe"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["show", "task=mqar", "seq_len"]) == 2
    assert main(["show", "task=mqar", "seq_len=4"]) == 2
