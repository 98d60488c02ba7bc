"""`python -m arena.report <results dir> [--out DIR] [--length L]`: the comparison report of every run below a folder.

    python -m arena.report results/runs                       # -> results/runs/report/report.html (+ .md, CSVs)
    python -m arena.report results/runs --out /tmp/report --length 1024

Reads only run directories (folders holding a summary.json); a missing folder or one without runs is a one-line
error with exit status 2, and nothing is written.
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
    if not any(p.is_file() for p in results.rglob("summary.json")):
        return f"no run directories (folders with a summary.json) under {results}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reason = no_runs_reason(Path(args.results))
    if reason:
        print(f"arena.report: error: {reason}", file=sys.stderr)
        return 2
    from arena.report.render import NoRunsError, write_report  # pandas + matplotlib: a second or two

    try:
        out = write_report(args.results, args.out, args.length)
    except NoRunsError as err:
        print(f"arena.report: error: {err}", file=sys.stderr)
        return 2
    print(f"arena.report: report in {out / 'report.html'} (Markdown: {out / 'report.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
