"""The `text` task (arena/tasks/text.py): packing, splits by document, determinism, the byte tokenizer, bits per byte,
bad sources in one line, JSONL, and one `python -m arena.run task=text` end to end.

    python -m pytest -q tests/tasks/test_text.py

Corpora are tiny files written into tmp_path (each document distinct, so a split can be read back from the stream).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from arena.errors import ConfigError
from arena.evaluate import evaluate
from arena.tasks import IGNORE, build_task
from arena.tasks.text import TextBatch

REPO = Path(__file__).resolve().parents[2]
EOD = 256


def corpus(tmp_path: Path, docs: list[str], name: str = "c.txt") -> str:
    path = tmp_path / name
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return str(path)


DOCS = [f"document {i}: " + "abcdefghij"[i % 10] * (5 + i % 7) + " Zoë" for i in range(40)]


def split_documents(task, split: str) -> list[str]:
    """The split's stream read back as documents: the bytes between <eod> tokens."""
    tokens = task.streams[split][0].tolist()
    assert tokens[-1] == EOD, "the stream ends with the last document's <eod>"
    docs, current = [], []
    for t in tokens:
        if t == EOD:
            docs.append(bytes(current).decode("utf-8"))
            current = []
        else:
            current.append(t)
    return docs


def test_windows_are_the_stream_shifted_by_one_and_all_scored(tmp_path):
    task = build_task("text", path=corpus(tmp_path, DOCS), seq_len=16)
    batch = task.generate(32, [0, 3, 0])
    assert isinstance(batch, TextBatch) and batch.inputs.shape == batch.targets.shape == (32, 16)
    assert torch.equal(batch.targets[:, :-1], batch.inputs[:, 1:]), "targets are the inputs shifted by one"
    assert (batch.targets != IGNORE).all(), "every position is scored"
    stream = task.streams["train"][0]
    for row in range(32):  # each row is a stretch of the training stream: inputs then its one-token continuation
        window = torch.cat([batch.inputs[row], batch.targets[row, -1:]]).numpy()
        starts = [s for s in range(0, len(stream) - 16, 16) if np.array_equal(stream[s: s + 17], window)]
        assert starts, f"row {row} is not a window of the stream at stride seq_len"


def test_documents_are_joined_by_eod_and_no_document_is_in_two_splits(tmp_path):
    task = build_task("text", path=corpus(tmp_path, DOCS), seq_len=16, valid_fraction=0.2)
    by_split = {split: split_documents(task, split) for split in ("train", "valid", "test")}
    assert len(by_split["valid"]) == len(by_split["test"]) == 8 and len(by_split["train"]) == 24
    assert sorted(sum(by_split.values(), [])) == sorted(DOCS), "every document exactly once, whole"
    assert not set(by_split["train"]) & set(by_split["valid"])
    assert not set(by_split["train"]) & set(by_split["test"]) and not set(by_split["valid"]) & set(by_split["test"])
    held_out = build_task("text", path=corpus(tmp_path, DOCS), seq_len=16, valid_fraction=0.2)
    batch = held_out.generate(8, [0, 2], split="valid")  # validation windows come from validation documents only
    valid_stream = held_out.streams["valid"][0]
    for row in batch.inputs.numpy():
        assert any(np.array_equal(valid_stream[s: s + 16], row) for s in range(len(valid_stream) - 15))


def test_batches_are_deterministic_in_seed_and_step(tmp_path):
    path = corpus(tmp_path, DOCS)
    a = build_task("text", path=path, seq_len=16).generate(16, [0, 3, 7])
    b = build_task("text", path=path, seq_len=16).generate(16, [0, 3, 7])  # a fresh task, as a resumed run builds
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.target_bytes, b.target_bytes)
    c = build_task("text", path=path, seq_len=16).generate(16, [0, 3, 8])
    assert not torch.equal(a.inputs, c.inputs), "another step draws other windows"
    other = build_task("text", path=path, seq_len=16, seed=1)
    assert split_documents(other, "test") != split_documents(build_task("text", path=path, seq_len=16), "test")


def test_byte_tokenizer_round_trips_non_ascii(tmp_path):
    docs = ["Zoë und Łucja grüßen José.", "日本語のテキスト 🙂 ok", "plain ascii line"]
    task = build_task("text", path=corpus(tmp_path, docs), seq_len=4, valid_fraction=0.34)
    assert task.vocab_size == 257
    read_back = sorted(sum((split_documents(task, s) for s in ("train", "valid", "test")), []))
    assert read_back == sorted(docs)
    tokens, nbytes = task.streams["train"]
    assert (nbytes == 1).all(), "a byte token covers one byte; <eod> counts one"


class Uniform(nn.Module):
    """A model that predicts the uniform distribution: zero logits everywhere."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.dummy = vocab, nn.Parameter(torch.zeros(1))

    def hidden_states(self, inputs, states=None):
        return torch.zeros(*inputs.shape, 1), None

    def lm_head(self, hidden):
        return torch.zeros(hidden.shape[0], self.vocab)


def test_bits_per_byte_of_a_uniform_model(tmp_path):
    task = build_task("text", path=corpus(tmp_path, DOCS), seq_len=16)
    data = task.generate(12, [0, 2], split="valid")
    res = evaluate(Uniform(task.vocab_size), data, batch_size=5, amp=None)
    assert res["test_loss"] == pytest.approx(math.log(257))
    assert res["perplexity"] == pytest.approx(257)
    assert res["bits_per_byte"] == pytest.approx(math.log2(257)), "byte tokenizer: bits per byte = bits per token"
    # tokens that cover several bytes each: the same nats spread over more bytes (independent sum over the batch)
    wide = TextBatch(data.inputs, data.targets, torch.randint(1, 4, data.targets.shape, generator=torch.Generator()
                                                              .manual_seed(0)))
    res = evaluate(Uniform(257), wide, batch_size=5, amp=None)
    expected = data.targets.numel() * math.log2(257) / wide.target_bytes.sum().item()
    assert res["bits_per_byte"] == pytest.approx(expected)


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"path": "no/such/corpus.txt"}, "path='no/such/corpus.txt' does not exist"),
    ({"path": "EMPTY"}, "0 non-empty document(s)"),
    ({"seq_len": 4096}, "seq_len=4096 is longer than the"),
    ({"valid_fraction": 0.5}, "valid_fraction=0.5 must be in (0, 0.5)"),
    ({"tokenizer": "missing.json"}, "tokenizer='missing.json' is neither 'byte' nor"),
    ({"path": "DIR"}, "is a directory with no .txt files"),
    ({"vocab_size": 100}, "vocab_size=100 is smaller than the tokenizer's 257"),
])
def test_bad_sources_fail_in_one_line(tmp_path, overrides, expected):
    (tmp_path / "empty.txt").write_text("\n\n   \n\n")
    (tmp_path / "dir").mkdir()
    base = {"path": corpus(tmp_path, DOCS), "seq_len": 16}
    swap = {"EMPTY": str(tmp_path / "empty.txt"), "DIR": str(tmp_path / "dir")}
    overrides = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()}
    with pytest.raises(ConfigError) as err:
        build_task("text", **{**base, **overrides})
    message = str(err.value)
    assert expected in message and "\n" not in message and message.startswith("task text: ")


def test_missing_optional_packages_fail_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "tok.json").write_text("{}")
    for overrides, package in (({"tokenizer": str(tmp_path / "tok.json")}, "tokenizers"),
                               ({"hf_dataset": "some/dataset"}, "datasets")):
        monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError, as if absent
        with pytest.raises(ConfigError, match=f"needs the `{package}` package") as err:
            build_task("text", path=corpus(tmp_path, DOCS), **overrides)
        assert "\n" not in str(err.value)


def test_jsonl_documents_under_the_text_field(tmp_path):
    rows = [{"id": i, "body": doc} for i, doc in enumerate(DOCS)]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    task = build_task("text", path=str(path), text_field="body", seq_len=16)
    assert sorted(sum((split_documents(task, s) for s in ("train", "valid", "test")), [])) == sorted(DOCS)
    with pytest.raises(ConfigError, match="has no string field text_field='text'"):
        build_task("text", path=str(path), seq_len=16)


def test_directory_of_txt_files(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for i, doc in enumerate(DOCS):
        (tmp_path / "d" / ("sub" if i % 2 else "") / f"{i:02d}.txt").write_text(doc)
    task = build_task("text", path=str(tmp_path / "d"), seq_len=16)
    assert sorted(sum((split_documents(task, s) for s in ("train", "valid", "test")), [])) == sorted(DOCS)


def test_run_end_to_end_writes_language_model_metrics(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "arena.run", f"results_dir={tmp_path}", "task=text", "task.seq_len=32",
           "task.num_test=16", "train.steps=4", "train.eval_every=2", "train.batch_size=8", "model.d_model=32",
           "model.n_layers=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (summary_path,) = tmp_path.rglob("summary.json")
    records = [json.loads(line) for line in (summary_path.parent / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["split"] == "valid" for r in records)
    for r in records:
        assert r["perplexity"] == pytest.approx(math.exp(r["valid_loss"]))
        assert r["bits_per_byte"] == pytest.approx(r["valid_loss"] / math.log(2))
    summary = json.loads(summary_path.read_text())
    assert summary["test_bits_per_byte"] == pytest.approx(summary["test_loss"] / math.log(2))
    assert summary["test_perplexity"] == pytest.approx(math.exp(summary["test_loss"]))
    assert summary["valid_loss"] == pytest.approx(records[-1]["valid_loss"])


def test_trainer_validates_on_validation_documents_and_tests_on_test_documents(tmp_path, monkeypatch):
    from arena.tasks.text import Text
    from arena.train import Run, train

    asked = []
    sample = Text.sample
    monkeypatch.setattr(Text, "sample", lambda self, rng, n, split: asked.append((split, n)) or sample(self, rng, n,
                                                                                                      split))
    config = {"task": {"name": "text", "path": corpus(tmp_path, DOCS), "seq_len": 16, "num_test": 5},
              "model": {"d_model": 16, "n_layers": 1, "mlp_ratio": 1.0},
              "train": {"steps": 2, "eval_every": 2, "batch_size": 4, "warmup_steps": 1, "device": "cpu"},
              "logger": {"kind": "none"}, "eval": {"lengths": []}}
    summary = train(Run(config, {"kda": {"name": "kda"}}, "kda"), tmp_path, "text-kda")
    assert summary["status"] == "completed"
    # after the two held-out splits only training documents are read: the batches, and the one training sample
    # behind the `majority` shortcut baseline (arena/tasks/shortcuts.py)
    assert asked[:2] == [("valid", 5), ("test", 5)] and {split for split, _ in asked[2:]} == {"train"}, asked
    assert ("train", 4) in asked[2:], asked


def test_tokenizers_file_counts_the_bytes_each_token_covers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(DOCS, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tok.json"))
    task = build_task("text", path=corpus(tmp_path, DOCS), tokenizer=str(tmp_path / "tok.json"), seq_len=8)
    assert task.eod == tok.get_vocab_size() and task.vocab_size == task.eod + 1
    tokens, nbytes = task.streams["train"]
    ends = np.flatnonzero(tokens == task.eod)
    for start, end in zip(np.concatenate([[-1], ends[:-1]]), ends):
        text = tok.decode(tokens[start + 1: end].tolist())  # the Whitespace pre-tokenizer drops spaces
        doc = next(d for d in DOCS if d.replace(" ", "") == text.replace(" ", ""))
        assert nbytes[start + 1: end].sum() == len(doc.encode("utf-8")), "a document's tokens cover all its bytes"
        assert nbytes[end] == 1
    assert nbytes[tokens != task.eod].max() > 1, "multi-byte tokens are counted in bytes, not as one"
