"""A task=text checkpoint records its tokenizer (arena/checkpoint.py, TextTokenizer in arena/tasks/text.py): `byte`
by name, a `tokenizers` JSON file as a copy inside checkpoint/, so `load_tokenizer(run_dir)` reads text as the run
did even after the original file is gone; a run dir without a record falls back to config.yaml's `byte`.

    python -m pytest -q tests/test_text_tokenizer.py
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from arena import checkpoint
from arena.errors import ConfigError
from arena.model import LanguageModel, ModelConfig
from arena.tasks import build_task
from arena.tasks.text import TextTokenizer


def save_run(run_dir, task):
    specs = {"gdn": {"name": "gdn", "num_heads": 2}}
    model = LanguageModel(ModelConfig(vocab_size=task.vocab_size, d_model=16, n_layers=1), specs, "gdn")
    run = SimpleNamespace(model=model, mixer_specs=specs, default_spec="gdn", task=task)
    checkpoint.save(run_dir, run, {}, {"step": 0})


def test_byte_tokenizer_round_trips_and_is_recorded_by_name(tmp_path):
    tok = TextTokenizer.from_name("byte")
    text = "Zoë ran.\n"
    assert tok.encode(text) == list(text.encode()) and tok.decode(tok.encode(text) + [tok.eod]) == text
    assert tok.decode(list("ë".encode())[:1]) == "\ufffd"  # a cut UTF-8 character decodes, replaced
    save_run(tmp_path, build_task("text", seq_len=16))
    meta = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())
    assert meta["tokenizer"] == {"name": "byte", "eod": 256} and meta["seq_len"] == 16
    assert not (tmp_path / "checkpoint" / TextTokenizer.FILE).exists()
    assert checkpoint.load_tokenizer(tmp_path).encode(text) == list(text.encode())


def test_tokenizers_file_is_copied_into_the_checkpoint(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    words = ["Once", "upon", "a", "time", "there", "was", "little", "girl", "named", "Lily.", "She", "liked"]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    original = tmp_path / "tok.json"
    hf.save(str(original))
    task = build_task("text", seq_len=16, tokenizer=str(original))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_run(run_dir, task)
    text = " ".join(words[:5] + ["notaword"])
    expected = hf.encode(text, add_special_tokens=False).ids
    original.unlink()  # the run dir alone must suffice
    loaded = checkpoint.load_tokenizer(run_dir)
    assert loaded.encode(text) == expected and expected[-1] == 0
    assert loaded.eod == len(vocab) == task.eod  # <eod> right after the vocabulary, as in training
    meta = json.loads((run_dir / "checkpoint" / "meta.json").read_text())
    assert meta["tokenizer"]["file"] == TextTokenizer.FILE and meta["tokenizer"]["eod"] == len(vocab)


def test_a_run_dir_without_a_record(tmp_path):
    save_run(tmp_path, SimpleNamespace(vocab_size=8))  # a probe's task: no tokenizer recorded
    meta = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())
    assert "tokenizer" not in meta
    with pytest.raises(ConfigError, match="records no text tokenizer: lm-eval needs a task=text run"):
        checkpoint.load_tokenizer(tmp_path)
    (tmp_path / "config.yaml").write_text("task:\n  name: text\n  tokenizer: byte\n  seq_len: 16\n")
    assert checkpoint.load_tokenizer(tmp_path).name == "byte"  # an older text run: config.yaml says byte
