"""How a trial ended: one outcome from a fixed set, decided once, and what each view shows.

Every view of a sweep (the Optuna study, the MLflow child run, the progress line, the
summary, `export`, the report) is derived from the outcome in the sweep's record; none
decides for itself. "Best" is `best()`, and only here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum

METRIC, MODE = "val_accuracy", "max"


class Outcome(StrEnum):
    """How a trial ended. A `StrEnum`: each member is its string value, so the record
    (trial.json's `outcome`), the MLflow `trial_status` tag and what they read back are
    the same strings as before the enum, and a string read from a record compares equal."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    CUT_BY_BUDGET = "cut_by_budget"
    DIVERGED = "diverged"
    ERRORED = "errored"
    OUT_OF_MEMORY = "out_of_memory"
    INTERRUPTED = "interrupted"  # not final: `tune --resume` runs the trial on


# The final outcomes, in the order every view lists them.
OUTCOMES = (Outcome.COMPLETED, Outcome.EARLY_STOPPED, Outcome.CUT_BY_BUDGET,
            Outcome.DIVERGED, Outcome.ERRORED, Outcome.OUT_OF_MEMORY)
# Outcomes whose reports are measurements: only these can be the sweep's best.
SCORED = (Outcome.COMPLETED, Outcome.EARLY_STOPPED, Outcome.CUT_BY_BUDGET)

# The Optuna state of each outcome: a stopped trial is PRUNED (its last value is a
# short-budget value, not a final one), a failed one FAIL.
OPTUNA_STATE = {Outcome.COMPLETED: "COMPLETE", Outcome.EARLY_STOPPED: "PRUNED",
                Outcome.CUT_BY_BUDGET: "PRUNED", Outcome.DIVERGED: "FAIL",
                Outcome.ERRORED: "FAIL", Outcome.OUT_OF_MEMORY: "FAIL"}
# How the summary, the progress line and the report name each outcome.
LABELS: dict[Outcome | None, str] = {
    Outcome.COMPLETED: "completed", Outcome.EARLY_STOPPED: "stopped early",
    Outcome.CUT_BY_BUDGET: "cut by budget", Outcome.DIVERGED: "diverged",
    Outcome.ERRORED: "errored", Outcome.OUT_OF_MEMORY: "out of memory"}
# The MLflow run status of each outcome is MLflow's side of it:
# `mlflow_tracking.values.TRIAL_STATUSES` (mlflow_tracking does not import this package;
# tests/tune_smpl/test_outcome.py checks that it covers every outcome).


def decide(last: dict | None, *, steps: int, errored: bool = False,
           budget_spent: bool = False) -> Outcome:
    """The outcome of a trial that Ray ended, from its last report.

    `errored`: Ray gave up on it (an exception, `max_failures` restarts spent).
    `budget_spent`: the sweep's time budget had run out when it ended.
    """
    last = last or {}
    if errored:
        return Outcome.ERRORED
    if last.get("oom"):  # the trainable ends an out-of-memory trial with a last report
        return Outcome.OUT_OF_MEMORY
    if last.get("diverged"):
        return Outcome.DIVERGED
    if last.get("step", 0) >= steps:
        return Outcome.COMPLETED
    return Outcome.CUT_BY_BUDGET if budget_spent else Outcome.EARLY_STOPPED


def counts(trials: Iterable) -> dict[Outcome, int]:
    """Trials by final outcome, every outcome present (0 where none)."""
    out = {o: 0 for o in OUTCOMES}
    for t in trials:
        if t.outcome in out:
            out[t.outcome] += 1
    return out


def score(reports: Iterable[dict], metric: str = METRIC, mode: str = MODE) -> tuple[float, dict]:
    """(best value, its report) over a trial's reports; (nan, {}) when it has none."""
    best, row = math.nan, {}
    for r in reports:
        v = r.get(metric)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            continue
        if math.isnan(best) or (v > best if mode == "max" else v < best):
            best, row = float(v), r
    return best, row


def rank(trials: Iterable, metric: str = METRIC, mode: str = MODE) -> list:
    """Trials whose outcome is scored and that reported `metric`, best first (ties: the
    earlier trial). Each item is a trial record with a `.reports` list and an `.outcome`."""
    scored = [(score(t.reports, metric, mode)[0], t) for t in trials if t.outcome in SCORED]
    scored = [(v, t) for v, t in scored if not math.isnan(v)]
    scored.sort(key=lambda vt: -vt[0] if mode == "max" else vt[0])
    return [t for _, t in scored]


def best(trials: Iterable, metric: str = METRIC, mode: str = MODE):
    """The sweep's best trial: the maximum of `metric` over completed, early-stopped and
    budget-cut trials (a diverged, errored or out-of-memory trial never wins); None if none."""
    ranked = rank(trials, metric, mode)
    return ranked[0] if ranked else None
