"""`python -m arena.report <results dir> [--out DIR] [--length L]`: the comparison report of every run below a folder.

    python -m arena.report results/runs                       # -> results/runs/report/report.html (+ .md, CSVs)
    python -m arena.report results/runs --out /tmp/report --length 1024

Reads only run directories (folders holding a summary.json); a missing folder, one without runs, or a --length
that no run was trained at is a one-line error with exit status 2, and nothing is written. What could not be read
in full (a corrupted summary.json, a torn metrics.jsonl line, a --length some task lacks) is printed as one
`arena.report: warning: ...` line each on stderr, and listed under "Warnings" in report.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="arena.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="folder searched recursively for run directories")
    parser.add_argument("--out", default=None, help="output folder (default: <results>/report)")
    parser.add_argument("--length", type=int, default=None,
                        help="training length for the single-length views (default: each task's largest)")
    return parser.parse_args(argv)


def no_runs_reason(results: Path) -> str | None:
    """Why `results` cannot give a report, checked before pandas and matplotlib are imported (a typo fails fast)."""
    if not results.is_dir():
        return f"{results} is not a directory"
    if not any(p.is_file() for name in ("summary.json", "skipped.json") for p in results.rglob(name)):
        return f"no run directories (folders with a summary.json or a sweep's skipped.json) under {results}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reason = no_runs_reason(Path(args.results))
    if reason:
        print(f"arena.report: error: {reason}", file=sys.stderr)
        return 2
    from arena.report.render import NoRunsError, ReportInputError, build_tables, write_tables  # pandas: a second

    try:
        tables = build_tables(args.results, args.length)
    except ReportInputError as err:
        print(f"arena.report: error: {err}", file=sys.stderr)
        return 2
    for message in tables["warnings"]:
        print(f"arena.report: warning: {message}", file=sys.stderr)
    try:
        out = write_tables(args.results, tables, args.out)
    except NoRunsError as err:
        print(f"arena.report: error: {err}", file=sys.stderr)
        return 2
    print(f"arena.report: report in {out / 'report.html'} (Markdown: {out / 'report.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
