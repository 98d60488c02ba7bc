"""The text language-model study's corpus builder (scripts/make_text_lm_corpus.py) and driver (scripts/gpu_text_lm.sh).

    python -m pytest -q tests/test_text_lm.py

The R reader is checked on character vectors serialized here by hand (R's XDR format, as R's `serialize` writes
it), the builder on the shipped stories: deterministic, held-out documents disjoint from the training corpus,
cloze items whose answer is the word the text really continues with, passages within their byte limit, lm-eval
task YAMLs that point at the data. The preset end to end (training, lm-eval, report) is tests/test_experiments.py's
text_lm_mini.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from arena.testing import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_text_lm_corpus.py"


def corpus_script():
    return load_script("make_text_lm_corpus")


def r_block(strings: list[str | None], version: int = 3) -> bytes:
    """A zlib block of R's lazy-load database holding one serialized character vector."""
    body = b"X\n" + struct.pack(">iii", version, 0x040201, 0x030500)
    if version == 3:
        body += struct.pack(">i", 5) + b"UTF-8"
    body += struct.pack(">ii", 16, len(strings))  # STRSXP
    for s in strings:
        if s is None:
            body += struct.pack(">ii", 9, -1)  # NA_character_
        else:
            raw = s.encode("utf-8")
            body += struct.pack(">ii", 9 | (1 << 15), len(raw)) + raw  # CHARSXP, UTF-8 mark
    return struct.pack(">I", len(body)) + zlib.compress(body)


def test_r_reader_reads_serialized_character_vectors():
    m = corpus_script()
    first, second = ["EMMA", "", None, "Zoë said: “yes”."], ["a", "b"]
    blocks = m.rdb_blocks(r_block(first) + r_block(second, version=2))
    assert [m.r_strings(b) for b in blocks] == [first, second]
    with pytest.raises(ValueError, match="not a zlib block"):
        m.r_strings(struct.pack(">I", 3) + zlib.compress(b"abc"))


def test_austen_reader_cuts_chapters_and_joins_paragraph_lines():
    m = corpus_script()
    para = "It is a truth universally acknowledged, that a single man in possession"
    book = ["TITLE", "", "Chapter 1", "", para, "of a good fortune.", "", "Second paragraph " * 12, "",
            "CHAPTER II", "", "VOLUME II", "", "Another chapter " * 15, "", "THE END"]
    docs = m.austen_documents(b"".join(r_block(book) for _ in m.BOOKS))
    assert [name for name, _ in docs[:2]] == ["emma:1", "emma:II"] and len(docs) == 2 * len(m.BOOKS)
    assert docs[0][1].split("\n") == [para + " of a good fortune.", ("Second paragraph " * 12).strip()]
    assert docs[1][1] == ("Another chapter " * 15).strip(), "volume headings and THE END are not text"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    for name in ("a", "b"):
        subprocess.run([sys.executable, str(SCRIPT), "--source", "tiny_stories", "--out", str(out / name)],
                       check=True, capture_output=True, text=True)
    return out / "a", out / "b"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_corpus_is_deterministic_and_lm_eval_text_is_held_out(built):
    a, b = built
    for rel in ("corpus.jsonl", "lm_eval/ppl.jsonl", "lm_eval/cloze.jsonl"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "PROVENANCE.txt").read_text().replace(str(a), str(b)) == (b / "PROVENANCE.txt").read_text()
    corpus = rows(a / "corpus.jsonl")
    stories = [s.strip() for s in (REPO / "arena/data/tiny_stories.txt").read_text(encoding="utf-8").split("\n\n")]
    trained = {r["text"] for r in corpus}
    heldout = [s for s in stories if s and s not in trained]
    assert len(corpus) + len(heldout) == len([s for s in stories if s]) and len(heldout) == 40  # 5 % of 800
    passages = [r["text"] for r in rows(a / "lm_eval" / "ppl.jsonl")]
    assert passages and all(p in heldout for p in passages), "perplexity text comes from held-out stories only"
    assert all(len(p.encode()) <= 2000 for p in passages)
    assert "source: arena/data/tiny_stories.txt" in (a / "PROVENANCE.txt").read_text()


def test_cloze_answer_is_the_word_the_text_continues_with(built):
    a, _ = built
    passages = [r["text"] for r in rows(a / "lm_eval" / "ppl.jsonl")]
    items = rows(a / "lm_eval" / "cloze.jsonl")
    assert len(items) > 50
    for item in items:
        choices, answer = item["choices"], item["choices"][item["answer"]]
        assert len(choices) == 4 and len(set(choices)) == 4
        whole = item["context"] + " " + answer
        assert any(p.startswith(whole) and p[len(whole)] in ".!?" for p in passages), item
        assert all(c in item["context"] for c in choices if c != answer), "distractors come from the passage"
    assert 0.15 < sum(i["answer"] == 0 for i in items) / len(items) < 0.35, "the answer's position is shuffled"


def test_lm_eval_yamls_point_at_the_written_data(built):
    a, _ = built
    for name, data in (("text_lm_ppl", "ppl.jsonl"), ("text_lm_cloze", "cloze.jsonl")):
        task = yaml.safe_load((a / "lm_eval" / f"{name}.yaml").read_text())
        assert task["task"] == name
        assert Path(task["dataset_kwargs"]["data_files"]["test"]) == a / "lm_eval" / data


def test_bad_arguments_fail_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--source", "tiny_stories", "--heldout", "0.7",
                           "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == ["--heldout=0.7 must be in (0, 0.5)"]


def test_gpu_driver_is_valid_bash_and_refuses_an_unknown_experiment(tmp_path):
    driver = REPO / "scripts" / "gpu_text_lm.sh"
    assert subprocess.run(["bash", "-n", str(driver)]).returncode == 0
    proc = subprocess.run(["bash", str(driver)], cwd=REPO, env={"EXPERIMENT": "nope", "OUT": str(tmp_path),
                                                                "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "EXPERIMENT=nope must be text_lm or text_lm_mini" in proc.stderr
    assert not any(tmp_path.iterdir()), "nothing ran"
