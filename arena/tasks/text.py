"""Text: language modelling on a corpus, packed into fixed-length windows (issue 17; docs/text.md).

    python -m arena.run task=text train.steps=50                       # the shipped corpus, byte tokenizer, CPU
    python -m arena.run task=text task.path=my_docs/ task.seq_len=256  # a directory of .txt files
    python -m arena.run task=text task.path=data.jsonl task.text_field=body task.tokenizer=tokenizer.json

Sources (`path`): a .txt file (documents separated by blank lines), a directory of .txt files (searched
recursively, in sorted order, each split the same way) or a .jsonl file (one document per line, its text under
`text_field`); or `hf_dataset` (a Hugging Face `datasets` name, split `hf_split`, read lazily; `path` is then
unused). A relative `path` is looked up from the working directory, then from the repository root, so the default
(arena/data/tiny_stories.txt, written by scripts/make_text_corpus.py) works from anywhere.

Tokenizer: `byte` (default; nothing to download): ids 0-255 are the UTF-8 bytes, 256 is <eod>, so the vocabulary is
257 (`vocab_size` 0 follows the tokenizer; a larger value pads it). Or the path of a Hugging Face `tokenizers`
JSON file: its ids, plus <eod> appended after its vocabulary.

Split, by document: the documents are shuffled with `seed` (the task's, not train.seed: every training seed sees
the same split); the first `valid_fraction` of them are validation, the next `valid_fraction` test, the rest
train, so no document is in two splits. Each split's documents are tokenized, each followed by <eod>, joined into
one stream and cut into windows of seq_len + 1 tokens with stride seq_len (consecutive windows share one token, so
every token of the stream but the first is a target exactly once): inputs = window[:-1], targets = window[1:],
every position scored. A batch picks windows with its rng: training draws them with replacement (deterministic in
(train.seed, step), so a resumed run sees the same batches); validation and test take a seeded permutation of their
windows (distinct windows while the split has enough). The trainer asks for validation with split="valid"
(as for every task) and for test with split="test".

Example (byte tokenizer, seq_len=8), decoded; the window crosses a document boundary:

    inputs  :  o   m   e   ·   <eod> S   t   o
    targets :  m   e   ·   <eod> S   t   o   r      (every position scored; "·" is the full stop)

Batches are `TextBatch`es: besides inputs and targets they carry `target_bytes`, the UTF-8 bytes each target token
covers (1 per byte token; <eod> counts 1, the separator it stands for), from which arena/evaluate.py reports bits
per byte = total nats / (ln 2 * bytes), beside loss (nats per token) and perplexity. The tokenized corpus is cached
in memory, keyed by the source (path, size and modification time, or dataset name and split) and the tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import Batch, Symbols, Task

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = "arena/data/tiny_stories.txt"
_CACHE: dict[tuple, tuple] = {}  # (source key, tokenizer key) -> (documents' tokens, their byte counts, eod id)


@dataclass
class TextBatch(Batch):
    """A Batch that also carries how many UTF-8 bytes each target token covers (for bits per byte)."""

    target_bytes: torch.Tensor = None  # [N, T] int64

    def __getitem__(self, index) -> TextBatch:
        return TextBatch(self.inputs[index], self.targets[index], self.target_bytes[index])

    def to(self, device) -> TextBatch:
        return TextBatch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                         self.target_bytes.to(device, non_blocking=True))


def _byte_names() -> tuple[str, ...]:
    # printable ASCII as itself, everything else as its hex value, so `python -m arena.tasks show` stays readable;
    # "." is the unscored marker of `show`, so the full stop prints as "·"
    special = {32: "␣", 10: "\\n", 46: "·"}
    return tuple(special.get(b, chr(b) if 33 <= b < 127 else f"x{b:02x}") for b in range(256))


@register_task("text")
class Text(Task):
    """Language modelling on a text corpus: next-token prediction over packed windows, every position scored."""

    selection = "loss"  # a language model is chosen on validation loss (bits per byte), not next-token accuracy

    @dataclass
    class Config(Task.Config):
        seq_len: int = 128  # T, tokens per training window (the window read is seq_len + 1: inputs and targets)
        vocab_size: int = 0  # 0 = the tokenizer's (257 for byte); a larger value pads the embedding table
        num_train: int = 0  # 0 = fresh windows every step; > 0 = a fixed set of that many training windows
        num_test: int = 200  # windows per evaluation, for validation and for the final test
        path: str = DEFAULT_CORPUS  # .txt file, directory of .txt files, or .jsonl file
        text_field: str = "text"  # the key of a .jsonl line (or a dataset row) that holds the document
        hf_dataset: str = ""  # a Hugging Face datasets name; when set, `path` is unused
        hf_split: str = "train"  # the dataset split read (arena splits it again by document)
        tokenizer: str = "byte"  # byte | path of a Hugging Face tokenizers JSON file
        valid_fraction: float = 0.1  # share of documents for validation, and the same share for test
        seed: int = 0  # which documents go to which split (fixed across training seeds)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        if not 0 < cfg.valid_fraction < 0.5:
            raise ConfigError(f"task text: valid_fraction={cfg.valid_fraction} must be in (0, 0.5) (the same share "
                              f"goes to test; the rest trains)")
        docs, doc_bytes, self.eod = load_corpus(cfg)
        if cfg.vocab_size and cfg.vocab_size < self.eod + 1:
            raise ConfigError(f"task text: vocab_size={cfg.vocab_size} is smaller than the tokenizer's "
                              f"{self.eod + 1}; use 0 to follow the tokenizer")
        if len(docs) < 3:
            raise ConfigError(f"task text: the corpus has {len(docs)} non-empty document(s) ({source_name(cfg)}); "
                              f"needs >= 3 (train, validation and test get whole documents)")
        order = np.random.default_rng(cfg.seed).permutation(len(docs))
        held = max(1, round(cfg.valid_fraction * len(docs)))
        parts = {"valid": order[:held], "test": order[held: 2 * held], "train": order[2 * held:]}
        self.documents = {split: [int(i) for i in ids] for split, ids in parts.items()}  # document indices
        self.streams = {}  # split -> (tokens [N] int64, bytes per token [N] int64)
        for split, ids in parts.items():
            tokens = np.concatenate([np.append(docs[i], self.eod) for i in ids])
            nbytes = np.concatenate([np.append(doc_bytes[i], 1) for i in ids])
            if len(tokens) < cfg.seq_len + 1:
                raise ConfigError(f"task text: seq_len={cfg.seq_len} is longer than the {split} split "
                                  f"({len(tokens)} tokens, {len(ids)} documents); lower seq_len or add text")
            self.streams[split] = (tokens.astype(np.int64), nbytes.astype(np.int64))

    @property
    def vocab_size(self) -> int:
        return max(self.cfg.vocab_size, self.eod + 1)

    def num_windows(self, split: str) -> int:
        """Windows of seq_len + 1 tokens at stride seq_len that fit in the split's stream."""
        return (len(self.streams[split][0]) - 1) // self.cfg.seq_len

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> TextBatch:
        tokens, nbytes = self.streams[split]
        count, L = self.num_windows(split), self.cfg.seq_len
        if split == "train":
            picks = rng.integers(0, count, size=num_examples)
        else:  # held out: distinct windows first, cycling only when asked for more than the split has
            picks = np.resize(rng.permutation(count), num_examples)
        index = picks[:, None] * L + np.arange(L + 1)[None, :]  # [E, L + 1] positions in the stream
        window = torch.from_numpy(tokens[index])
        return TextBatch(window[:, :-1].contiguous(), window[:, 1:].contiguous(),
                         torch.from_numpy(nbytes[index[:, 1:]]))

    def at_length(self, seq_len: int) -> Text:
        return Text(dataclasses.replace(self.cfg, seq_len=seq_len))

    def symbols(self) -> list[Symbols]:
        if self.cfg.tokenizer == "byte":
            return [Symbols(0, _byte_names(), "UTF-8 bytes"), Symbols(self.eod, "<eod>", "end of document")]
        return [Symbols(self.eod, "<eod>", "end of document")]

    def auto_settings(self) -> dict[str, object]:
        return {"vocab_size": self.vocab_size}

    def tokenizer(self) -> TextTokenizer:
        """The task's tokenizer as text in, ids out and back (what lm-eval and checkpoints need)."""
        return TextTokenizer.from_name(self.cfg.tokenizer)


def source_name(cfg: Text.Config) -> str:
    return f"hf_dataset={cfg.hf_dataset!r}" if cfg.hf_dataset else f"path={cfg.path!r}"


def resolve_path(path: str) -> Path:
    """`path` as given (absolute, or from the working directory), else from the repository root."""
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute():
        return given
    return ROOT / given if (ROOT / given).exists() else given


def load_corpus(cfg: Text.Config) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Every non-empty document's token ids and UTF-8 bytes per token, and the <eod> id; cached in memory."""
    if cfg.hf_dataset:
        source_key = ("hf", cfg.hf_dataset, cfg.hf_split, cfg.text_field)
    else:
        path = resolve_path(cfg.path)
        if not path.exists():
            raise ConfigError(f"task text: path={cfg.path!r} does not exist; give a .txt file, a directory of .txt "
                              f"files or a .jsonl file")
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in _files(path, cfg)]
        source_key = ("files", str(path.resolve()), cfg.text_field, tuple(stats))
    tokenizer_key = cfg.tokenizer if cfg.tokenizer == "byte" else (cfg.tokenizer, _stat(cfg.tokenizer))
    key = (source_key, tokenizer_key)
    if key not in _CACHE:
        texts = _read_hf(cfg) if cfg.hf_dataset else _read_files(_files(path, cfg), cfg)
        texts = [t for t in texts if t.strip()]
        encode, eod = _tokenizer(cfg)
        pairs = [encode(t) for t in texts]
        _CACHE[key] = ([p[0] for p in pairs], [p[1] for p in pairs], eod)
    return _CACHE[key]


def _stat(path: str) -> tuple:
    p = resolve_path(path)
    return (str(p), p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else (str(p),)


def _files(path: Path, cfg: Text.Config) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ConfigError(f"task text: path={cfg.path!r} is a directory with no .txt files")
        return files
    if path.suffix not in (".txt", ".jsonl"):
        raise ConfigError(f"task text: path={cfg.path!r} must be a .txt or .jsonl file, or a directory of .txt")
    return [path]


def _read_files(files: list[Path], cfg: Text.Config) -> list[str]:
    texts = []
    for file in files:
        raw = file.read_text(encoding="utf-8", errors="replace")
        if file.suffix == ".jsonl":
            for number, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(f"task text: {file} line {number} is not JSON ({err.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get(cfg.text_field), str):
                    raise ConfigError(f"task text: {file} line {number} has no string field "
                                      f"text_field={cfg.text_field!r}")
                texts.append(row[cfg.text_field])
        else:
            # a document per blank-line-separated block: a single .txt file can still be split by document
            texts.extend(block.strip("\n") for block in raw.replace("\r\n", "\n").split("\n\n"))
    return texts


def _read_hf(cfg: Text.Config) -> list[str]:
    try:
        import datasets  # optional: only a run that names hf_dataset needs it
    except ImportError:
        raise ConfigError(f"task text: hf_dataset={cfg.hf_dataset!r} needs the `datasets` package "
                          f"(pip install datasets), or use task.path with local files") from None
    try:
        rows = datasets.load_dataset(cfg.hf_dataset, split=cfg.hf_split)
    except Exception as err:  # network, unknown name or split: one line naming the key
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"task text: hf_dataset={cfg.hf_dataset!r} hf_split={cfg.hf_split!r} could not be "
                          f"loaded ({type(err).__name__}: {first}); offline, use task.path with local files") from None
    if cfg.text_field not in rows.column_names:
        raise ConfigError(f"task text: text_field={cfg.text_field!r} is not a column of {cfg.hf_dataset!r}; "
                          f"choose one of: {', '.join(rows.column_names)}")
    return [t for t in rows[cfg.text_field] if isinstance(t, str)]


def _tokenizer(cfg: Text.Config):
    """(encode: text -> (ids [n] int64, UTF-8 bytes per id [n] int64), eod id)."""
    if cfg.tokenizer == "byte":
        def encode_bytes(text: str):
            ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
            return ids, np.ones_like(ids)
        return encode_bytes, 256
    path = resolve_path(cfg.tokenizer)
    if not path.is_file():
        raise ConfigError(f"task text: tokenizer={cfg.tokenizer!r} is neither 'byte' nor an existing Hugging Face "
                          f"tokenizers JSON file")
    try:
        from tokenizers import Tokenizer  # optional: only a run that names a tokenizer file needs it
    except ImportError:
        raise ConfigError(f"task text: tokenizer={cfg.tokenizer!r} needs the `tokenizers` package "
                          f"(pip install tokenizers), or use tokenizer=byte") from None
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:
        raise ConfigError(f"task text: tokenizer={cfg.tokenizer!r} is not a tokenizers JSON file "
                          f"({type(err).__name__})") from None

    def encode_hf(text: str):
        enc = tok.encode(text, add_special_tokens=False)
        ids = np.asarray(enc.ids, dtype=np.int64)
        # bytes per token from the character offsets: each token covers the characters from the end of the text
        # covered so far to its own end, so every byte is counted once (also where offsets overlap) and
        # sum(nbytes) == len(text.encode())
        utf8 = np.cumsum([0] + [len(c.encode("utf-8")) for c in text])  # bytes before each character
        ends = np.maximum.accumulate(np.asarray([end for _, end in enc.offsets] or [0], dtype=np.int64))[: len(ids)]
        covered = utf8[ends]
        nbytes = np.diff(np.concatenate([[0], covered]))
        if len(ids):
            nbytes[-1] += len(text.encode("utf-8")) - covered[-1]  # trailing text no token claimed
        return ids, nbytes.astype(np.int64)

    return encode_hf, tok.get_vocab_size(with_added_tokens=True)


class TextTokenizer:
    """Text <-> ids for a trained model: `byte` (UTF-8 bytes, <eod> = 256) or a `tokenizers` JSON file (its ids,
    <eod> = its vocabulary size). A checkpoint records it (arena/checkpoint.py: `byte` by name, a file as a copy),
    so `TextTokenizer.load(checkpoint_dir, meta)` rebuilds it without the original file."""

    FILE = "tokenizer.json"  # the copy of a tokenizers file inside a checkpoint

    def __init__(self, name: str, path: Path | None = None):
        self.name, self.path, self._tok = name, path, None
        if name == "byte":
            self.eod = 256
            return
        try:
            from tokenizers import Tokenizer  # optional: only a run with a tokenizer file needs it
        except ImportError:
            raise ConfigError(f"tokenizer {name!r} needs the `tokenizers` package (pip install tokenizers)") from None
        self._tok = Tokenizer.from_file(str(path))
        self.eod = self._tok.get_vocab_size(with_added_tokens=True)  # as _tokenizer(): <eod> after the vocabulary

    @classmethod
    def from_name(cls, name: str) -> TextTokenizer:
        """`byte` or the path of a tokenizers JSON file (looked up as task.tokenizer is)."""
        if name == "byte":
            return cls("byte")
        path = resolve_path(name)
        if not path.is_file():
            raise ConfigError(f"tokenizer={name!r} is neither 'byte' nor an existing tokenizers JSON file")
        return cls(name, path)

    def encode(self, text: str) -> list[int]:
        if self._tok is None:
            return list(text.encode("utf-8"))
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids) -> str:
        """Ids -> text; <eod> and ids past the tokenizer (a padded vocabulary) are dropped, and a byte sequence cut
        inside a UTF-8 character decodes with U+FFFD."""
        if self._tok is None and isinstance(ids, list):
            try:  # fast path (lm-eval decodes every row at every generation step): bytes() refuses ids past 255
                return bytes(ids).decode("utf-8", errors="replace")
            except (TypeError, ValueError):
                pass
        ids = [int(i) for i in ids if 0 <= int(i) < self.eod]
        if self._tok is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return self._tok.decode(ids, skip_special_tokens=False)

    def save(self, folder: Path) -> dict:
        """Write what `load` needs into `folder` (a copy of a tokenizers file; nothing for byte); returns the
        record for meta.json."""
        if self.path is None:
            return {"name": self.name, "eod": self.eod}
        import shutil

        shutil.copyfile(self.path, Path(folder) / self.FILE)
        return {"name": self.name, "file": self.FILE, "eod": self.eod}

    @classmethod
    def load(cls, folder: Path, record: dict) -> TextTokenizer:
        """The tokenizer a checkpoint recorded (`save`'s record, with its files in `folder`)."""
        if record.get("file"):
            path = Path(folder) / record["file"]
            if not path.is_file():
                raise ConfigError(f"checkpoint {folder} records tokenizer file {record['file']!r} but it is missing")
            return cls(record["name"], path)
        return cls("byte")


__all__ = ["DEFAULT_CORPUS", "Text", "TextBatch", "TextTokenizer", "load_corpus"]
