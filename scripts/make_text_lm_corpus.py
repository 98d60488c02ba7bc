"""Build the text language-model study's corpus and its offline lm-eval tasks (issue 17; docs/text.md).

    python scripts/make_text_lm_corpus.py                       # Jane Austen's six novels -> data/text_lm/
    python scripts/make_text_lm_corpus.py --source tiny_stories --out data/text_lm_mini   # CI: the shipped corpus

Source `austen` (default): the six novels of Jane Austen (Emma, Mansfield Park, Northanger Abbey, Persuasion, Pride
and Prejudice, Sense and Sensibility; about 3.9 MB of English prose). The texts are public domain (Project
Gutenberg's, without its header); they are read from Debian's package r-cran-janeaustenr 1.0.0-1 (the R package
janeaustenr by Julia Silge, MIT licence), fetched with `apt-get download` into --cache unless --deb names the .deb.
Its data file (R's lazy-load database: zlib blocks of R-serialized character vectors, one element per printed
line) is parsed here, no R needed, and checked against a pinned SHA-256, so the output is the same on every machine.
Source `tiny_stories`: arena/data/tiny_stories.txt (synthetic, shipped), for the CPU mini and the tests.

Documents: one per chapter (austen; the lines of a paragraph joined, paragraphs one a line) or per story. A seeded
shuffle holds out `--heldout` of the documents for lm-eval only; the rest is the `text` task's corpus (which splits
it again into train, validation and test by document), so no lm-eval text was ever trained on. Written to --out:

    corpus.jsonl           {"text", "source", "doc"} per document: task.path for task=text (text_field "text")
    lm_eval/ppl.jsonl      held-out documents cut into passages of <= --passage bytes at paragraph ends
    lm_eval/cloze.jsonl    held-out passages ending just before a sentence's last word, 4 choices: that word and 3
                           distractors drawn from the other words of the passage (LAMBADA-like: the context decides)
    lm_eval/text_lm_ppl.yaml, lm_eval/text_lm_cloze.yaml   the lm-eval tasks (eval.lm_eval.include_path=<out>/lm_eval;
                           data_files relative to the repository root, so run from there)
    PROVENANCE.txt         source, licence, checksums, counts (also printed)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEB = "r-cran-janeaustenr=1.0.0-1"
RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
AUSTEN_RDB_SHA256 = "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21"  # of RDB in 1.0.0-1
BOOKS = ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"]
CHAPTER = re.compile(r"^chapter\s+([0-9IVXLC]+)\b", re.IGNORECASE)
WORD = re.compile(r"[^\W\d_]{3,}")  # words of 3+ letters (Unicode: "José" stays whole)


def r_strings(block: bytes) -> list[str | None]:
    """One R-serialized character vector (XDR format 2 or 3, as R's serialize writes it) -> its strings."""
    raw = zlib.decompress(block[4:])
    if struct.unpack(">I", block[:4])[0] != len(raw) or raw[:2] != b"X\n":
        raise ValueError("not a zlib block of an XDR-serialized R object")
    version, pos = struct.unpack(">i", raw[2:6])[0], 14
    if version == 3:  # format 3 names the native encoding after the header
        pos += 4 + struct.unpack(">i", raw[pos: pos + 4])[0]
    flags, count = struct.unpack(">ii", raw[pos: pos + 8])
    if flags & 0xFF != 16:  # STRSXP
        raise ValueError(f"expected a character vector (type 16), found type {flags & 0xFF}")
    pos, out = pos + 8, []
    for _ in range(count):
        flags, length = struct.unpack(">ii", raw[pos: pos + 8])
        pos += 8
        if length < 0:  # NA_character_
            out.append(None)
            continue
        # bit 15 of a CHARSXP's flags: UTF-8; otherwise latin-1 (R's other marks: ASCII, native)
        out.append(raw[pos: pos + length].decode("utf-8" if flags & (1 << 15) else "latin-1"))
        pos += length
    return out


def rdb_blocks(data: bytes) -> list[bytes]:
    """R's lazy-load database: blocks of (4-byte big-endian uncompressed length, zlib stream), back to back."""
    blocks, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj()
        d.decompress(data[pos + 4:])
        end = len(data) - len(d.unused_data)
        blocks.append(data[pos:end])
        pos = end
    return blocks


def fetch_rdb(deb: Path | None, cache: Path) -> bytes:
    if deb is None:
        cache.mkdir(parents=True, exist_ok=True)
        found = sorted(cache.glob("r-cran-janeaustenr_1.0.0-1_all.deb"))
        if not found:
            print(f"fetching {DEB} with apt-get download into {cache}")
            subprocess.run(["apt-get", "download", "-q", DEB], cwd=cache, check=True)
            found = sorted(cache.glob("r-cran-janeaustenr_1.0.0-1_all.deb"))
        deb = found[0]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        return (Path(tmp) / RDB).read_bytes()


def austen_documents(rdb: bytes) -> list[tuple[str, str]]:
    """(book:chapter, text) per chapter of the six novels, front matter dropped."""
    blocks = rdb_blocks(rdb)
    if len(blocks) != len(BOOKS):
        raise SystemExit(f"expected {len(BOOKS)} books in {RDB}, found {len(blocks)} blocks")
    docs = []
    for book, block in zip(BOOKS, blocks):  # the .rdx index lists the books in this (alphabetical) order
        lines = [line or "" for line in r_strings(block)]
        chapters, current, name = [], [], None
        for line in lines:
            mark = CHAPTER.match(line.strip())
            if mark:
                if name is not None:
                    chapters.append((f"{book}:{name}", current))
                name, current = mark.group(1), []
            elif name is not None:
                current.append(line.strip())
        if name is not None:  # the book's last chapter
            chapters.append((f"{book}:{name}", current))
        for doc_name, body in chapters:
            paragraphs, words = [], []
            for line in body + [""]:  # a blank line ends a paragraph; its printed lines join with a space
                if line:
                    words.append(line)
                elif words:
                    paragraphs.append(" ".join(words))
                    words = []
            # the volume headings and "THE END" that fall inside a chapter are print layout, not text
            text = "\n".join(p for p in paragraphs if not re.fullmatch(r"(VOLUME [IVX]+|THE END|FINIS)", p))
            if len(text) > 200:
                docs.append((doc_name, text))
    return docs


def story_documents() -> list[tuple[str, str]]:
    text = (ROOT / "arena" / "data" / "tiny_stories.txt").read_text(encoding="utf-8")
    return [(f"story:{i}", block.strip()) for i, block in enumerate(text.split("\n\n")) if block.strip()]


def passages(text: str, limit: int) -> list[str]:
    """A document cut at paragraph ends into passages of at most `limit` bytes (a longer paragraph stays whole
    up to `limit`: cut at a sentence end)."""
    out, current = [], ""
    for para in text.split("\n"):
        para = para[:limit]
        if current and len((current + "\n" + para).encode()) > limit:
            out.append(current)
            current = ""
        current = para if not current else current + "\n" + para
    return out + ([current] if current else [])


def cloze_items(texts: list[str], rng: random.Random, per_text: int) -> list[dict]:
    """Context up to a sentence's last word, the word, and 3 distractors from the passage's other words."""
    items = []
    for text in texts:
        ends = [m for m in re.finditer(r"([^\W\d_]{3,})([.!?])", text) if m.start() > 150]
        rng.shuffle(ends)
        for m in ends[:per_text]:
            context, answer = text[: m.start(1)], m.group(1)
            if not context.endswith(" "):
                continue
            pool = sorted({w for w in WORD.findall(context) if w.lower() != answer.lower()})
            if len(pool) < 3:
                continue
            choices = [answer, *rng.sample(pool, 3)]
            rng.shuffle(choices)
            items.append({"context": context.rstrip(" "), "choices": choices, "answer": choices.index(answer)})
    return items


TASK_YAML = {
    "text_lm_ppl": """# Held-out {source} text as rolling log-likelihood (word/byte perplexity, bits per byte);
# written by scripts/make_text_lm_corpus.py (documents never trained on). Run from the repository root.
task: text_lm_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/ppl.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
""",
    "text_lm_cloze": """# Held-out {source} passages: which of 4 words ends the last sentence (the true one, 3 others
# from the same passage; chance 0.25); written by scripts/make_text_lm_corpus.py. Run from the repository root.
task: text_lm_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/cloze.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""",
}


def write_text(path: Path, text: str) -> str:
    """Written whole or not at all (a temporary file renamed over it): test workers may build the same folder at
    once, and a reader never sees half a file. Returns the text's SHA-256."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return hashlib.sha256(text.encode()).hexdigest()


def write_jsonl(path: Path, rows: list[dict]) -> str:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["austen", "tiny_stories"], default="austen")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: data/text_lm (tiny_stories: data/text_lm_mini)")
    parser.add_argument("--deb", type=Path, default=None, help="a local r-cran-janeaustenr_1.0.0-1_all.deb")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "cache")
    parser.add_argument("--heldout", type=float, default=0.05, help="share of documents kept for lm-eval only")
    parser.add_argument("--passage", type=int, default=2000, help="bytes per perplexity / cloze passage at most")
    parser.add_argument("--cloze", type=int, default=500, help="cloze items at most")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.heldout < 0.5:
        raise SystemExit(f"--heldout={args.heldout} must be in (0, 0.5)")
    out = args.out or ROOT / "data" / ("text_lm" if args.source == "austen" else "text_lm_mini")
    out = out if out.is_absolute() else Path.cwd() / out
    if args.source == "austen":
        rdb = fetch_rdb(args.deb, args.cache)
        digest = hashlib.sha256(rdb).hexdigest()
        if digest != AUSTEN_RDB_SHA256:
            raise SystemExit(f"{RDB}: SHA-256 {digest} is not the pinned {AUSTEN_RDB_SHA256} (another version?)")
        docs, provenance = austen_documents(rdb), (
            f"source: Jane Austen's six novels, public domain (Project Gutenberg texts), from Debian's {DEB} "
            f"(R package janeaustenr by Julia Silge, MIT licence), file {RDB} sha256 {digest}")
    else:
        docs, provenance = story_documents(), "source: arena/data/tiny_stories.txt (synthetic, shipped with arena)"
    rng = random.Random(args.seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    held = max(2, round(args.heldout * len(docs)))
    heldout, kept = sorted(order[:held]), sorted(order[held:])
    (out / "lm_eval").mkdir(parents=True, exist_ok=True)
    sums = {"corpus.jsonl": write_jsonl(out / "corpus.jsonl", [{"text": docs[i][1], "source": docs[i][0],
                                                                "doc": i} for i in kept])}
    texts = [p for i in heldout for p in passages(docs[i][1], args.passage)]
    sums["lm_eval/ppl.jsonl"] = write_jsonl(out / "lm_eval" / "ppl.jsonl", [{"text": t} for t in texts])
    items = cloze_items(texts, rng, per_text=max(1, args.cloze // max(1, len(texts)) + 1))[: args.cloze]
    sums["lm_eval/cloze.jsonl"] = write_jsonl(out / "lm_eval" / "cloze.jsonl", items)
    try:
        data = (out / "lm_eval").relative_to(ROOT).as_posix()
    except ValueError:
        data = (out / "lm_eval").as_posix()  # outside the repository: an absolute path
    for name, template in TASK_YAML.items():
        write_text(out / "lm_eval" / f"{name}.yaml", template.format(source=args.source, data=data))
    nbytes = sum(len(docs[i][1].encode()) for i in kept)
    lines = [provenance,
             f"documents: {len(docs)} ({'chapters' if args.source == 'austen' else 'stories'}); seed {args.seed}",
             f"corpus.jsonl: {len(kept)} documents, {nbytes} bytes (task=text splits it into train/valid/test)",
             f"lm_eval (held out, never trained on): {held} documents -> {len(texts)} perplexity passages, "
             f"{len(items)} cloze items (tasks text_lm_ppl, text_lm_cloze; include_path {data})",
             *(f"sha256 {name} {digest}" for name, digest in sums.items())]
    write_text(out / "PROVENANCE.txt", "\n".join(lines) + "\n")
    print(f"wrote {out}\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
