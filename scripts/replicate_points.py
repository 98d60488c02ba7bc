"""The runs a study still needs, as a points file for scripts/run_points.py: each group's chosen learning rate
replicated over more seeds, and the runs left unfinished.

    python scripts/replicate_points.py results/runs/nope_vs_rope --seeds 1,2 > points.tsv
    python scripts/replicate_points.py results/runs/nope_vs_rope --seeds 1,2 --unfinished > points.tsv
    python scripts/run_points.py points.tsv --jobs 8 --time-limit 540

The usual economy of a sweep: the whole learning-rate grid on seed 0, then only the rate chosen on validation (as
`python -m arena.report` chooses it) on the other seeds. A group (experiment, mixer, task, training length,
setting) with no rate chosen yet (its runs unfinished) gets every rate it tried. Each point copies the overrides of
a run of its group (the run's .hydra/overrides.yaml), with train.lr and train.seed set, into
<results>/replicates/<that run's name, seed replaced>; a seed the group already finished at that rate is left out,
and one it left unfinished resumes in its own folder. `--unfinished` adds every other run that stopped before the
end (interrupted, failed), in its own folder, so that it resumes from its checkpoint.

Output: one point a line, the run directory, a tab, then the overrides (scripts/run_points.py's format); a count on
stderr. Exit status 2, with one line on stderr, for a folder without runs or a run without its overrides file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arena.report.load import load_runs  # noqa: E402
from arena.report.protocol import counted, group_columns, group_key, select  # noqa: E402

FINISHED = ("completed", "diverged")


class PointsError(Exception):
    """Input that gives no points file: the message is the one-line error."""


def run_overrides(run_dir: Path) -> list[str]:
    """The task overrides a run was launched with (Hydra's own `hydra.*` overrides left out)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise PointsError(f"{path} is missing: the run's overrides cannot be replicated (was it run by Hydra with "
                          f"hydra.output_subdir=null?)")
    overrides = yaml.safe_load(path.read_text()) or []
    return [str(o) for o in overrides if not str(o).lstrip("+~").startswith("hydra.")]


def with_values(overrides: list[str], values: dict[str, str]) -> list[str]:
    """`overrides` with each key of `values` set (replaced where present, appended where not)."""
    out, done = [], set()
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in values:
            out.append(f"{key}={values[key]}")
            done.add(key)
        else:
            out.append(item)
    return out + [f"{key}={value}" for key, value in values.items() if key not in done]


def point_name(template: Path, seed: int) -> str:
    """A replicate's folder name: the template run's, without a sweep's job number, with its seed replaced."""
    name = re.sub(r"^\d+_", "", template.name)
    return re.sub(r"-s\d+$", "", name) + f"-s{seed}"


def points(root: Path, seeds: list[int], unfinished: bool) -> list[tuple[Path, list[str]]]:
    runs = load_runs(root)
    if runs.empty:
        raise PointsError(f"no runs under {root}")
    # real run dirs only (not a sweep's skipped points), and not the earlier attempts a rerun set aside; a live run
    # that load_runs marked a duplicate of its own set-aside attempt (same config_hash) is the one that counts
    keep = runs["run_dir"].map(lambda d: (root / d / "summary.json").is_file()
                               and not any(p.startswith("attempt_") for p in Path(d).parts))
    dropped = set(runs.loc[~keep, "run_dir"])
    runs = runs[keep].copy()
    runs.loc[runs["duplicate_of"].isin(dropped), "duplicate_of"] = ""
    runs = counted(runs)
    columns = group_columns(runs)
    runs = runs.assign(_group=group_key(runs, columns))
    selected = select(runs.drop(columns="_group"))
    chosen = dict(zip(group_key(selected, columns), selected["lr"]))
    out: list[tuple[Path, list[str]]] = []
    seen: set[Path] = set()

    def add(run_dir: Path, overrides: list[str]) -> None:
        if run_dir in seen:
            raise PointsError(f"two points would share {run_dir}: the runs' folder names do not tell the groups apart")
        seen.add(run_dir)
        out.append((run_dir, overrides))

    for group, part in runs.groupby("_group", sort=False):
        lr = chosen.get(group)
        rates = [lr] if lr == lr and lr is not None else sorted(part["lr"].dropna().unique())  # NaN: none chosen
        for rate in rates:
            at_rate = part[part["lr"] == rate]
            template = root / at_rate.sort_values("seed")["run_dir"].iloc[0]
            for seed in seeds:
                mine = at_rate[at_rate["seed"] == seed]
                if mine["status"].isin(FINISHED).any():
                    continue
                run_dir = root / mine["run_dir"].iloc[0] if len(mine) else (
                    root / "replicates" / point_name(template, seed))
                add(run_dir, with_values(run_overrides(template), {"train.lr": f"{rate:g}", "train.seed": str(seed)}))
    if unfinished:
        for row in runs[~runs["status"].isin(FINISHED)].itertuples():
            run_dir = root / row.run_dir
            if run_dir not in seen:
                add(run_dir, run_overrides(run_dir))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a study's results folder (searched for run directories)")
    parser.add_argument("--seeds", default="", help="comma-separated seeds to replicate the chosen rate over")
    parser.add_argument("--unfinished", action="store_true", help="also resume every unfinished run")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"replicate_points: error: --seeds {args.seeds!r} is not a comma-separated list of integers",
              file=sys.stderr)
        return 2
    if not args.results.is_dir():
        print(f"replicate_points: error: {args.results} is not a directory", file=sys.stderr)
        return 2
    try:
        found = points(args.results, seeds, args.unfinished)
    except PointsError as err:
        print(f"replicate_points: error: {err}", file=sys.stderr)
        return 2
    for run_dir, overrides in found:
        print(f"{run_dir}\t{' '.join(overrides)}")
    print(f"replicate_points: {len(found)} points", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
