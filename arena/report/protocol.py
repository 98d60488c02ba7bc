"""The comparison protocol: learning rate picked on validation, test accuracy reported, seeds as mean and 95% CI.

    from arena.report.protocol import select, lr_table
    selected = select(runs)        # one row per (experiment, mixer, task, train_len, setting)

For every group and every learning rate, the completed runs are averaged per seed first (runs that repeat one
seed, say with another kernel implementation, count as one seed; a note says so), then over the distinct seeds.
Runs that share a config_hash are one run (the runs table's `duplicate_of` names the one kept). The learning
rate with the best mean VALIDATION accuracy is chosen (ties: the lower rate), or for a task selected by loss (text:
the runs table's `selected_by`) the lowest mean validation loss (the `valid_score` column, higher is better, holds
either). The rates are compared on the group's shared seeds, those every rate has a run for (any status), so
that a rate tuned on seed 0 and then replicated on seeds 1 and 2 meets the other rates on seed 0 alone (lr_table:
`choice_score_mean` over `choice_seeds`); where no seed is shared, or no rate completed one, each rate's mean over
all its seeds decides and the group's note says so. The group's reported number is the mean TEST score of the
runs at that rate over all their seeds, in the task's metric (accuracy; scaled accuracy for parity), with a 95%
confidence interval from Student's t (n - 1 degrees of freedom; none for one seed). Diverged and failed runs are
left out of every mean but counted, so they stay visible; a rate whose runs all diverged or failed cannot be
chosen. Training accuracy is never used. Parameters, state size and FLOPs per token of the chosen runs stand
beside each result so that budgets can be matched.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from arena.report.load import GROUP_AXES, setting_columns

PROTOCOL = (
    "For each (experiment, mixer, task, training length, setting) the learning rate with the best mean "
    "validation accuracy is chosen (ties: the lower rate), and the test score of the runs at that rate, over all "
    "their seeds, is reported as mean ± 95% confidence half-width (Student's t, n-1 degrees of freedom; no "
    "interval for one seed), in the task's metric: accuracy, or scaled accuracy (accuracy - chance) / (1 - chance) "
    "where the task is judged by it (parity, modular arithmetic). The rates are compared on the seeds every rate "
    "of the group ran (a diverged or failed run counts as run), so a rate tuned on seed 0 and replicated on seeds "
    "1 and 2 meets the other rates on seed 0 alone; where no seed was run at every rate, each rate's mean over all "
    "its seeds decides, and the group's note says so. Seeds are distinct seeds: runs that repeat a seed "
    "are averaged into one (a note names how they differ), and runs with the same config hash count once. "
    "Diverged and failed runs are excluded from the means but counted; a learning rate whose runs "
    "all diverged or failed cannot be chosen. Training accuracy is never reported. Validation is held-out "
    "data of the training distribution (a length probe's training lengths); the test split alone holds the "
    "test distribution (longer lengths, held-out settings)."
)
LOSS_PROTOCOL = (
    "For {tasks} (language modelling) validation selects by loss instead: each run's best validation evaluation "
    "(the weights the test scores with train.test_on=best) is its lowest validation loss, and the learning rate "
    "chosen is the one with the lowest mean validation loss over the seeds every rate ran (ties: the lower rate)."
)


def protocol_text(runs: pd.DataFrame) -> str:
    """PROTOCOL, plus a sentence naming the tasks whose runs are selected by validation loss, where there are any,
    and one counting those runs that still tested the weights of their best validation accuracy (written before
    arena selected text by loss)."""
    loss = runs[runs["selected_by"] == "loss"] if "selected_by" in runs.columns else runs.iloc[0:0]
    tasks = sorted(map(str, loss["task"].dropna().unique()))
    if not tasks:
        return PROTOCOL
    text = PROTOCOL + " " + LOSS_PROTOCOL.format(tasks=", ".join(tasks))
    older = int((loss["checkpoint_selected_by"] != "loss").sum())
    if older:
        text += (f" {older} of these {len(loss)} runs were made before that rule: each tested the weights of its "
                 "best validation accuracy; their learning rate is still chosen on validation loss.")
    return text


def tested_model_line(runs: pd.DataFrame) -> str:
    """Which weights the reported test scores are of, counted over the runs that have a test score: best (the
    best validation evaluation's, restored before the test: train.test_on=best), final, or legacy runs."""
    kinds = runs["test_model"].fillna("") if "test_model" in runs.columns else pd.Series([], dtype=str)
    counts = kinds[kinds != ""].value_counts()
    if counts.empty:
        return "Tested model: no run has a test score yet."
    words = {"best": "the weights of the best validation evaluation (train.test_on=best)",
             "final": "the final weights (train.test_on=final)",
             "legacy": "the final weights, validated on the test distribution (runs from before train.test_on)"}
    parts = [f"{words.get(kind, kind)} in {n} run{'' if n == 1 else 's'}" for kind, n in counts.items()]
    return ("Tested model: the test scores are of " + "; ".join(parts) + " (runs.csv: test_model, tested_step)."
            + (" Legacy runs chose on another protocol: rerun them to compare." if "legacy" in counts else ""))

# Two-sided 95% quantiles of Student's t, t_{0.975}(dof), dof = 1..30 (standard tables).
T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)
Z975 = 1.959964


def t_quantile_975(dof: int) -> float:
    """t_{0.975} with `dof` degrees of freedom: the table up to 30, then the Cornish-Fisher expansion in 1/dof
    around the normal quantile (error < 1e-4 beyond 30)."""
    if dof < 1:
        return math.nan
    if dof <= len(T975):
        return T975[dof - 1]
    z = Z975
    return (z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3))


def mean_ci95(values) -> tuple[float, int, float]:
    """(mean, n, 95% CI half-width) of the finite values; the half-width is NaN for n < 2, the mean for n = 0."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, 0, math.nan
    if n == 1:
        return float(x[0]), 1, math.nan
    return float(x.mean()), n, t_quantile_975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)


def group_columns(runs: pd.DataFrame) -> list[str]:
    return GROUP_AXES + setting_columns(runs)


def counted(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a comparison counts: duplicates of a config_hash left out (their `duplicate_of` names the kept run)."""
    if "duplicate_of" not in runs.columns:
        return runs
    return runs[runs["duplicate_of"].fillna("") == ""]


def per_seed(done: pd.DataFrame) -> pd.DataFrame:
    """Completed runs of one (group, learning rate) -> one row per distinct seed (means of its runs) with `runs`,
    the number of runs behind it. A run without a recorded seed is a seed of its own."""
    seeds = done["seed"].astype(float)
    unknown = seeds.isna()
    key = seeds.where(~unknown, pd.Series(-1.0 - pd.RangeIndex(len(done)), index=done.index))
    columns = [c for c in ("valid_accuracy", "valid_score", "test_accuracy", "test_metric", "valid_metric",
                           "test_sequence_accuracy", *LM_RESULTS) if c in done.columns]
    table = done.groupby(key)[columns].mean()
    table["runs"] = done.groupby(key).size()
    return table.rename_axis("seed").reset_index()


def seed_note(done: pd.DataFrame) -> str:
    """What a reader must know about the runs pooled as seeds: repeated seeds (averaged as one) and the execution
    keys in which the pooled runs differ."""
    parts = []
    repeats = done.groupby(done["seed"].astype(float)).size()
    for seed, n in repeats[repeats > 1].items():
        parts.append(f"seed {int(seed) if float(seed).is_integer() else seed}: {n} runs averaged as one seed")
    values: dict[str, set] = {}
    for variant in done.get("variant", pd.Series(dtype=object)).fillna(""):
        for item in filter(None, variant.split(", ")):
            key, _, value = item.partition("=")
            values.setdefault(key, set()).add(value)
    for key in sorted(values):
        parts.append(f"pooled runs differ in {key} ({', '.join(sorted(values[key]))})")
    return "; ".join(parts)


def _key_frame(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Group keys with missing values spelled out, so NaN settings group together and merge reliably."""
    return df[columns].astype(object).where(df[columns].notna(), "<none>")


def _canonical(value) -> str:
    """One spelling per value whatever pandas did to its dtype (64, 64.0 and numpy.int64(64) are one key)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return repr(value)


def group_key(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A string naming each row's group, equal for equal keys in any table built from the runs."""
    if not len(df):
        return pd.Series([], dtype=object)
    keys = _key_frame(df, columns)
    return keys.apply(lambda row: "|".join(_canonical(v) for v in row), axis=1)


def _status_counts(status: pd.Series) -> dict:
    completed = int((status == "completed").sum())
    diverged = int((status == "diverged").sum())
    failed = int((status == "failed").sum())
    # interrupted (a time limit, a preemption), running or unreadable: not a result, and not a failure either
    return {"n_runs": len(status), "n_completed": completed, "n_diverged": diverged, "n_failed": failed,
            "n_unfinished": len(status) - completed - diverged - failed}


def _seed_set(runs: pd.DataFrame) -> set:
    """The recorded seeds of `runs`, whatever their status (a run without a recorded seed pairs with none)."""
    return set(runs["seed"].astype(float).dropna())


def seeds_text(seeds) -> str:
    """Seeds in order, integers without a decimal point: "0, 1, 2"."""
    return ", ".join(f"{int(s)}" if float(s).is_integer() else f"{s:g}" for s in sorted(seeds))


def _seed_word(text: str) -> str:
    return f"seed{'s' if ',' in text else ''} {text}" if text else "no seed"


def shared_seeds(group: pd.DataFrame) -> set:
    """The seeds every learning rate of one group has a run for (any status: a diverged or failed run counts as
    the rate having run the seed); the learning rate is chosen on these."""
    sets = [_seed_set(part) for _, part in group.groupby(group["lr"].fillna(-1.0))]
    return set.intersection(*sets) if sets else set()


def lr_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, learning rate): status counts, mean validation and test accuracy over the distinct
    seeds of the completed runs, the validation score the choice compared (`choice_score_mean`, over the seeds
    in `choice_seeds`: those every rate of the group ran), whether the rate can be chosen and whether it was."""
    runs = counted(runs)
    table = _lr_rows(runs.assign(_group=group_key(runs, group_columns(runs))))
    return table.drop(columns=["_group", "_choice_note"])


def _same_lr(values: pd.Series, lr: float) -> pd.Series:
    return values.fillna(-1.0) == (-1.0 if pd.isna(lr) else lr)


def _lr_rows(runs: pd.DataFrame) -> pd.DataFrame:
    columns = group_columns(runs.drop(columns="_group"))
    shared = {group: shared_seeds(part) for group, part in runs.groupby("_group", sort=False)}
    rows = []
    for (group, _), part in runs.groupby(["_group", runs["lr"].fillna(-1.0)], sort=True):
        done = part[part["status"] == "completed"]
        seeds = per_seed(done)
        valid_mean, _, _ = mean_ci95(seeds["valid_accuracy"])
        score_mean, n_valid, _ = mean_ci95(seeds["valid_score"])  # accuracy, or minus the loss
        # the choice compares the rates on the seeds they all ran (paired); without any, on all their seeds
        on_shared = seeds[seeds["seed"].isin(shared[group])]["valid_score"]
        choice_mean, n_choice, _ = mean_ci95(on_shared) if shared[group] else (score_mean, n_valid, math.nan)
        test_mean, n_seeds, test_ci = mean_ci95(seeds["test_accuracy"])
        metric_mean, _, metric_ci = mean_ci95(seeds["test_metric"])
        valid_metric_mean, _, _ = mean_ci95(seeds["valid_metric"])
        rows.append({**part.iloc[0][columns].to_dict(), "_group": group, "lr": part["lr"].iloc[0],
                     **_status_counts(part["status"]), "valid_accuracy_mean": valid_mean,
                     "selected_by": part["selected_by"].iloc[0], "valid_score_mean": score_mean,
                     "test_accuracy_mean": test_mean, "test_accuracy_ci95": test_ci, "metric": part["metric"].iloc[0],
                     "valid_metric_mean": valid_metric_mean, "test_metric_mean": metric_mean,
                     "test_metric_ci95": metric_ci, "n_seeds": n_seeds, "choice_score_mean": choice_mean,
                     "choice_seeds": seeds_text(shared[group] or _seed_set(part)), "selectable": n_choice > 0,
                     "_all_seeds_score": score_mean, "_all_seeds_selectable": n_valid > 0,
                     "_all_seeds": seeds_text(_seed_set(part)),
                     "note": seed_note(done)})
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=columns + ["_group", "lr", "n_runs", "n_completed", "n_diverged", "n_failed",
                                               "n_unfinished",
                                               "valid_accuracy_mean", "selected_by", "valid_score_mean",
                                               "test_accuracy_mean", "test_accuracy_ci95",
                                               "metric", "valid_metric_mean", "test_metric_mean",
                                               "test_metric_ci95", "n_seeds", "choice_score_mean", "choice_seeds",
                                               "selectable", "note", "_choice_note", "selected"])
    table["selected"] = False
    table["_choice_note"] = ""
    for group, part in table.groupby("_group"):
        if not part["selectable"].any() and part["_all_seeds_selectable"].any():
            # shared seeds exist but no rate completed one: each rate's mean over all its seeds decides
            table.loc[part.index, "choice_score_mean"] = part["_all_seeds_score"]
            table.loc[part.index, "selectable"] = part["_all_seeds_selectable"]
            table.loc[part.index, "choice_seeds"] = part["_all_seeds"]
            table.loc[part.index, "_choice_note"] = ("no rate completed a seed that every rate ran: rate chosen on "
                                                    "each rate's mean over all its seeds")
        elif not shared[group]:
            table.loc[part.index, "_choice_note"] = ("no seed was run at every learning rate: rate chosen on each "
                                                    "rate's mean over all its seeds")
        part = table.loc[part.index]
        choosable = part[part["selectable"]]
        if len(choosable):
            # the best mean validation score (accuracy, or minus the loss for a task selected by loss) on the
            # shared seeds, ties (to 1e-12) to the lower learning rate
            best = choosable.assign(_v=choosable["choice_score_mean"].astype(float).round(12))
            best = best.sort_values(["_v", "lr"], ascending=[False, True], na_position="last")
            table.loc[best.index[0], "selected"] = True
    table = table.drop(columns=["_all_seeds_score", "_all_seeds_selectable", "_all_seeds"])
    return table.sort_values(GROUP_AXES + ["lr"], na_position="last", kind="stable").reset_index(drop=True)


SELECTED_COLUMNS = [
    "lr", "valid_accuracy_mean", "test_accuracy_mean", "test_accuracy_ci95", "metric", "chance_accuracy",
    "valid_metric_mean", "test_metric_mean", "test_metric_ci95", "n_seeds", "test_sequence_accuracy_mean",
    "lrs_tried", "n_runs", "n_completed", "n_diverged", "n_failed", "n_unfinished", "train_min_len", "train_max_len",
    "params_total", "params_mixer", "state_size", "flops_per_token", "steps_mean", "note",
    "test_perplexity_mean", "test_bits_per_byte_mean", "best_shortcut", "shortcut_accuracy", "shortcut_metric",
    "selected_by", "valid_score_mean",
]
LM_RESULTS = ("test_perplexity", "test_bits_per_byte")  # language modelling (task text); NaN for the probes
METRIC_RESULTS = ("valid_metric_mean", "test_metric_mean", "test_metric_ci95")


def select(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group: the chosen learning rate, test accuracy there (mean, 95% CI, seeds), status counts of
    the whole group (all rates), and the budget (parameters, state size, FLOPs per token) of the chosen runs.
    A group where no rate can be chosen keeps its row, with NaN results and a note."""
    columns = group_columns(runs)
    if runs.empty:
        return pd.DataFrame(columns=columns + SELECTED_COLUMNS)
    runs = counted(runs)
    runs = runs.assign(_group=group_key(runs, columns))
    per_lr = _lr_rows(runs)
    rows = []
    for group, part in runs.groupby("_group", sort=False):
        choice = per_lr[(per_lr["_group"] == group) & per_lr["selected"]]
        row = {**part.iloc[0][columns].to_dict(), **_status_counts(part["status"]),
               "lrs_tried": ", ".join(f"{lr:g}" for lr in sorted(part["lr"].dropna().unique())),
               "metric": part["metric"].iloc[0], "selected_by": part["selected_by"].iloc[0]}
        if len(choice):
            lr = choice["lr"].iloc[0]
            at_lr = part[_same_lr(part["lr"], lr) & (part["status"] == "completed")]
            seq_mean, _, _ = mean_ci95(per_seed(at_lr)["test_sequence_accuracy"])
            for lm in LM_RESULTS:  # at the learning rate chosen (text: on validation loss)
                row[f"{lm}_mean"] = mean_ci95(per_seed(at_lr)[lm])[0] if lm in at_lr.columns else math.nan
            notes = [str(choice["note"].iloc[0])] if choice["note"].iloc[0] else []
            if not choice["n_seeds"].iloc[0]:
                notes.insert(0, "no test accuracy recorded")
            if choice["_choice_note"].iloc[0]:
                notes.insert(0, str(choice["_choice_note"].iloc[0]))
            elif not _seed_set(at_lr) <= shared_seeds(part):  # tested on seeds the choice did not compare
                notes.insert(0, f"rate chosen on {_seed_word(choice['choice_seeds'].iloc[0])} (the seeds every "
                                f"rate ran); test over {_seed_word(seeds_text(_seed_set(at_lr)))}")
            row.update({"lr": lr, "valid_accuracy_mean": choice["valid_accuracy_mean"].iloc[0],
                        "valid_score_mean": choice["valid_score_mean"].iloc[0],
                        "test_accuracy_mean": choice["test_accuracy_mean"].iloc[0],
                        "test_accuracy_ci95": choice["test_accuracy_ci95"].iloc[0],
                        **{c: choice[c].iloc[0] for c in METRIC_RESULTS},
                        "n_seeds": int(choice["n_seeds"].iloc[0]), "test_sequence_accuracy_mean": seq_mean,
                        "note": "; ".join(notes)})
            budget_rows = at_lr
        else:
            row.update({"lr": math.nan, "valid_accuracy_mean": math.nan, "valid_score_mean": math.nan,
                        "test_accuracy_mean": math.nan,
                        "test_accuracy_ci95": math.nan, **{c: math.nan for c in METRIC_RESULTS}, "n_seeds": 0,
                        "test_sequence_accuracy_mean": math.nan, "note": "no learning rate has a completed run",
                        **{f"{lm}_mean": math.nan for lm in LM_RESULTS}})
            budget_rows = part
        # constant within a group (a value that varied would be a setting column, hence part of the group key)
        for value in ("chance_accuracy", "train_min_len", "train_max_len"):
            row[value] = part[value].median()
        for budget in ("params_total", "params_mixer", "state_size", "flops_per_token"):
            row[budget] = budget_rows[budget].median()  # equal across seeds; the median ignores a stray NaN
        row["steps_mean"] = budget_rows["steps"].mean()
        # the best shortcut on the test data behind the reported score (its seeds' test splits, medianed)
        names = budget_rows["best_shortcut"].replace("", pd.NA).dropna() if "best_shortcut" in budget_rows else []
        row["best_shortcut"] = names.mode().iloc[0] if len(names) else ""
        for value in ("shortcut_accuracy", "shortcut_metric"):
            row[value] = budget_rows[value].median() if value in budget_rows else math.nan
        rows.append(row)
    selected = pd.DataFrame(rows)[columns + SELECTED_COLUMNS]
    return selected.sort_values(GROUP_AXES, na_position="last", kind="stable").reset_index(drop=True)


def chosen_runs(runs: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """The completed runs at each group's chosen learning rate (the runs behind the reported numbers), with the
    group's series label."""
    columns = group_columns(runs)
    if runs.empty or selected.empty:
        return runs.iloc[0:0].assign(series=pd.Series(dtype=object))
    keyed = selected.assign(_group=group_key(selected, columns))[["_group", "lr", "series"]]
    runs = counted(runs)
    runs = runs.assign(_group=group_key(runs, columns))
    merged = runs[runs["status"] == "completed"].merge(keyed, on=["_group", "lr"], how="inner")
    return merged.drop(columns="_group")


def _short(column: str) -> str:
    return column.rsplit(".", 1)[-1]


def add_series(selected: pd.DataFrame) -> pd.DataFrame:
    """A display name per group for legends: the mixer, plus the experiment when a task appears in several, plus
    the settings that differ among that mixer's groups ("kda (allow_neg_eigval=True)")."""
    settings = setting_columns(selected)
    labels = []
    for _, row in selected.iterrows():
        same_task = selected[selected["task"] == row["task"]]
        label = str(row["mixer"])
        if same_task["experiment"].nunique() > 1 and row["experiment"]:
            label = f"{row['experiment']}: {label}"
        peers = same_task[same_task["mixer"] == row["mixer"]]
        parts = [f"{_short(c)}={row[c]}" for c in settings
                 if peers[c].astype(str).nunique() > 1 and pd.notna(row[c])]
        labels.append(f"{label} ({', '.join(parts)})" if parts else label)
    return selected.assign(series=labels)


def fixed_lengths(selected: pd.DataFrame, length: int | None = None) -> dict:
    """The training length each task is shown at in single-length views: `length` where the task has it, else
    the task's largest training length."""
    chosen = {}
    for task, part in selected.groupby("task"):
        lengths = part["train_len"].dropna()
        if lengths.empty:
            chosen[task] = math.nan
        elif length is not None and (lengths == length).any():
            chosen[task] = float(length)
        else:
            chosen[task] = float(lengths.max())
    return chosen


def at_fixed_length(selected: pd.DataFrame, length: int | None = None) -> pd.DataFrame:
    chosen = fixed_lengths(selected, length)
    keep = selected.apply(lambda r: r["train_len"] == chosen.get(r["task"]) or
                          (pd.isna(r["train_len"]) and pd.isna(chosen.get(r["task"]))), axis=1)
    return selected[keep] if len(selected) else selected


def capability_matrix(selected: pd.DataFrame, length: int | None = None) -> pd.DataFrame:
    """Mixers x tasks: the test score (the task's metric) of each mixer's best group at the task's fixed length.
    Among a mixer's settings the best is the one with the highest validation score (accuracy; minus the loss for
    a task selected by loss; choosing on test would flatter it)."""
    rows = at_fixed_length(selected, length)
    rows = rows[rows["valid_score_mean"].notna()]
    if rows.empty:
        return pd.DataFrame()
    best = rows.sort_values(["valid_score_mean", "lr"], ascending=[False, True]).groupby(["mixer", "task"]).head(1)
    return best.pivot(index="mixer", columns="task", values="test_metric_mean").sort_index()


def task_metrics(selected: pd.DataFrame) -> dict:
    """task -> the metric its numbers are in ("accuracy" or "scaled_accuracy")."""
    return {task: str(part["metric"].iloc[0]) for task, part in selected.groupby("task")} if len(selected) else {}
