"""The docs stand alone: nothing points outside the repository, and every doc path or link mentioned resolves.

    python -m pytest -q tests/test_docs.py

A clone has only this repository, so README.md, arena/, conf/, scripts/, tests/ and docs/ must not send the
reader to `../shared/...` (a folder beside the checkout of the machine the project was written on) or to the
reference catalogue `tasks.md` it held; the probe catalogue is docs/probes.md and the mixer notes docs/mixers.md.
Checked here:
- no scanned file contains "../shared", "shared/docs" or a mention of `tasks.md`;
- every `docs/...` path mentioned in a scanned file exists, and every `docs/<file>.md#anchor` and
  `docs/<file>.md §N.M` names a heading of that file;
- every relative Markdown link in README.md and docs/*.md resolves (the file, and the anchor when given).
Files are read from disk, not from git, so new files count before they are committed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["README.md", "pyproject.toml", "arena", "conf", "scripts", "tests", "docs"]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".triton_cache"}
THIS_FILE = Path(__file__).resolve()

# strings split so that this file does not match itself if it is ever scanned
FORBIDDEN = [("../" + "shared", "a folder outside the repository"),
             ("shared/" + "docs", "a folder outside the repository")]
OLD_CATALOGUE = re.compile(r"\b" + "tasks" + r"\.md\b")  # the reference catalogue, now docs/probes.md

DOC_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*[\w/]")  # docs/x.md, docs/sub/ (not fla/docs/, not URLs)
DOC_ANCHOR = re.compile(r"(?<![\w./-])(docs/[\w./-]+\.md)#([\w-]+)")
DOC_SECTION = re.compile(r"(?<![\w./-])(docs/[\w./-]+\.md)[,\s]+§\s?(\d+(?:\.\d+)*)")
MD_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*"))
                      if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)]
    return [p for p in files if p.resolve() != THIS_FILE]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file (a NUL byte in it)."""
    data = path.read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def texts() -> dict[str, str]:
    out = {}
    for path in scanned_files():
        text = read_text(path)
        if text is not None:
            out[path.relative_to(ROOT).as_posix()] = text
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(md: Path) -> list[str]:
    """The heading texts of a Markdown file, fenced code blocks skipped."""
    out, fenced = [], False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            out.append(m.group(2))
    return out


def anchors(md: Path) -> set[str]:
    """Anchors GitHub generates for md's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for text in headings(md):
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def section_numbers(md: Path) -> set[str]:
    """Leading section numbers of md's headings: '## 1.2 Layer' -> '1.2', '## 3. Mamba2' -> '3'."""
    out = set()
    for text in headings(md):
        m = re.match(r"(\d+(?:\.\d+)*)\.?\s", text)
        if m:
            out.add(m.group(1))
    return out


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def test_the_scan_sees_the_project():
    """Guards the other tests against scanning nothing (a moved root would make them pass vacuously)."""
    found = texts()
    for must in ("README.md", "arena/model.py", "conf/config.yaml", "docs/adding_a_mixer.md"):
        assert must in found, f"{must} was not scanned"


def test_nothing_points_outside_the_repository():
    bad = []
    for rel, text in texts().items():
        for needle, why in FORBIDDEN:
            for m in re.finditer(re.escape(needle), text):
                bad.append(f"{rel}:{line_of(text, m.start())}: {needle!r} ({why})")
        for m in OLD_CATALOGUE.finditer(text):
            bad.append(f"{rel}:{line_of(text, m.start())}: {m.group(0)!r} (the probe catalogue is docs/probes.md)")
    assert not bad, "pointers to files a clone does not have:\n" + "\n".join(bad)


def test_every_docs_path_mentioned_exists():
    bad = []
    for rel, text in texts().items():
        for m in DOC_PATH.finditer(text):
            target = m.group(0).rstrip(".")
            if not (ROOT / target).exists():
                bad.append(f"{rel}:{line_of(text, m.start())}: {target}")
    assert not bad, "docs paths that do not exist:\n" + "\n".join(bad)


def test_every_docs_anchor_and_section_mentioned_exists():
    bad = []
    for rel, text in texts().items():
        for m in DOC_ANCHOR.finditer(text):
            md = ROOT / m.group(1)
            if md.is_file() and m.group(2) not in anchors(md):
                bad.append(f"{rel}:{line_of(text, m.start())}: {m.group(0)} (no such heading)")
        for m in DOC_SECTION.finditer(text):
            md = ROOT / m.group(1)
            if md.is_file() and m.group(2) not in section_numbers(md):
                bad.append(f"{rel}:{line_of(text, m.start())}: {m.group(0)} (no heading numbered {m.group(2)})")
    assert not bad, "doc anchors or sections that do not exist:\n" + "\n".join(bad)


MARKDOWN = ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("rel", MARKDOWN)
def test_relative_markdown_links_resolve(rel):
    md = ROOT / rel
    text = md.read_text(encoding="utf-8")
    bad = []
    for m in MD_LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = md if not path else (md.parent / path)
        if not dest.exists():
            bad.append(f"{rel}:{line_of(text, m.start())}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{rel}:{line_of(text, m.start())}: {target} (no such heading)")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_slug_follows_github():
    assert slug("`s3`, `s5`, `a5`") == "s3-s5-a5"
    assert slug("1.2 Layer parameterization (KDA)") == "12-layer-parameterization-kda"
    assert slug("modular_arithmetic_brackets") == "modular_arithmetic_brackets"


def test_adding_a_mixer_says_the_model_reinitialises_linears():
    """The doc says it, and it is true: a Linear inside a mixer leaves LanguageModel with N(0, init_std), bias 0."""
    import torch
    from torch import nn

    from arena.model import LanguageModel, ModelConfig

    text = (ROOT / "docs" / "adding_a_mixer.md").read_text(encoding="utf-8")
    assert "_init_weights" in text and "nn.Linear" in text and "N(0, 0.02)" in text, \
        "docs/adding_a_mixer.md must say that LanguageModel._init_weights re-initialises every nn.Linear"
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=16, d_model=64, n_layers=1, mlp_ratio=0.0),
                          {"mamba2": {"name": "mamba2", "bias": True, "d_state": 16, "headdim": 32}})
    linears = [m for m in model.blocks[0].mixer.modules() if isinstance(m, nn.Linear)]
    assert linears
    for lin in linears:
        # PyTorch's own init has std 1/sqrt(3 fan_in) = 0.072 here; the model's is 0.02
        assert abs(lin.weight.std().item() - 0.02) < 0.003
        assert lin.bias is not None and not lin.bias.any()
