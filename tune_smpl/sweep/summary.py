"""What a command prints when its run of a sweep ends, from the `SweepResult` alone (the
record's outcomes, `outcome.best`): text, nothing else."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterable
from typing import Any

from tune_smpl.sweep.finalists import Measure, StageStatus, finalists, table
from tune_smpl.sweep.outcome import LABELS, METRIC, OUTCOMES, SCORED, Outcome, counts
from tune_smpl.sweep.prior import describe as describe_prior
from tune_smpl.sweep.restarts import restarts_phrase
from tune_smpl.sweep.result import SweepResult
from tune_smpl.sweep.study import PRIOR


def fmt(v) -> str:
    """A value as the progress line, the summary and the report show it."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def knob_table(params: dict[str, Any], knobs: Iterable[str] | None = None,
               show: Callable[[Any], str] = fmt) -> list[tuple[str, str]]:
    """The best trial's knobs as every view's knob table shows them: (name, value), in the
    space's order (`knobs`; names the trial lacks left out) or else sorted by name, each
    value as `show` writes it (the summary: in full; the report: `fmt`)."""
    names = sorted(params) if knobs is None else [k for k in knobs if k in params]
    return [(k, show(params[k])) for k in names]


def proposals(trials) -> str:
    """`2 from the prior, 1 random start-up, 5 proposed by TPE` (no prior: no first part)."""
    by: dict[str, int] = {}
    for t in trials:
        by[t.proposed_by] = by.get(t.proposed_by, 0) + 1
    parts = [f"{by.pop(PRIOR)} from the prior"] if PRIOR in by else []
    parts += [f"{by.pop('random', 0)} random start-up"]
    parts += [f"{n} proposed by {who.upper()}" for who, n in sorted(by.items())]
    return ", ".join(parts)


def resume_command(settings) -> str:
    return (f"tune-smpl tune --name {settings.name} --storage-path "
            f"{shlex.quote(settings.storage_path)} --resume")


def storage_line(result, settings) -> str:
    """The one line of a sweep that its record's storage stopped (exit 75), or that lost
    trials to it: the storage, the error, what the record lacks, and the resume command."""
    f = result.storage_failure
    if f.seconds:
        what = f"failed for {f.seconds:.0f} s ({f.error}); the sweep stopped as interrupted"
    elif f.trials:
        what = (f"failed under trial {', '.join(f.trials)} ({f.error}); left unfinished, "
                f"the sweep ended as interrupted")
    else:  # the study's database (in the sweep folder on a local storage) failed
        what = f"failed ({f.error}); the sweep stopped as interrupted"
    lacks = (f"; the record lacks the last {f.unwritten} write(s) (--resume re-runs what it "
             f"lacks)" if f.unwritten else "")
    return (f"tune-smpl: the record's storage {f.uri} {what}{lacks}; run the same command "
            f"with --resume when it is back: {resume_command(settings)}")


def print_interrupted(result, settings) -> None:
    left = result.left
    saved = ("its record is saved" if not getattr(result, "unwritten", 0) else
             f"its record lacks its last {result.unwritten} write(s), left by the hurried "
             f"close (--resume re-runs what it lacks)")
    print(f"\nsweep {settings.name} interrupted: {len(left)} trial(s) unfinished "
          f"({', '.join(t.key for t in left)}); {saved}. Resume with:\n  "
          f"{resume_command(settings)}", flush=True)
    _print_restarts(result)


def _print_restarts(result) -> None:
    """`2 restarts (trial 0003: node died; ...)` and where Ray's own messages are."""
    said = restarts_phrase([*result.trials, *result.finalist_runs])
    if said:
        where = f"; Ray's messages are in {result.ray_log}" if result.ray_log else ""
        print(f"{said}{where}", flush=True)


def _outcomes(records, always=SCORED) -> str:
    n = counts(records)
    return ", ".join(f"{n[o]} {LABELS[o]}" for o in OUTCOMES if n[o] or o in always)


def print_finished(result, settings, tracking_uri: str | None) -> None:
    """The outcomes, the proposals, the best trial (how much to trust it) and the commands
    a user runs next; when no trial gave a measurement, why (on stderr)."""
    trials, n = result.trials, counts(result.trials)
    print(f"\nsweep {settings.name} finished: {len(trials)} trials: {_outcomes(trials)}")
    _print_restarts(result)
    print(f"proposals: {proposals(trials)}")
    if result.warm_start:
        print(describe_prior(result.warm_start))
    if result.stage is not None:
        print_finalists(result)
    pick = result.pick
    top = pick.trial
    if top is None:
        print("no trial gave a measurement of val_accuracy (" + ", ".join(
            f"{n[o]} {LABELS[o]}" for o in OUTCOMES if n[o]) + "); a failed trial's reason "
              f"is `error` in trial_<key>/trial.json under {result.record.uri}",
              file=sys.stderr)
        return
    if pick.measure == Measure.FINAL:
        print(f"best {METRIC} {pick.value:.4f} (finalist {top.key}: {pick.note}):")
    else:
        row = top.best_report()
        print(f"best {METRIC} {pick.value:.4f} (trial {top.key}, {top.outcome}; its best "
              f"report at step {row.get('step')}; {pick.note}):")
    for k, v in knob_table(top.params, show=str):
        print(f"  {k}: {v}")
    print(f"export it:  tune-smpl export {settings.name} --storage-path "
          f"{shlex.quote(settings.storage_path)} -o best.yaml\n"
          f"train it:   tune-smpl train --config best.yaml --eval-test"
          + (f"\nbrowse:     tune-smpl ui --tracking-uri {shlex.quote(tracking_uri)}"
             if tracking_uri else ""))


def print_finalists(result: SweepResult) -> None:
    """The finalist stage: its runs' outcomes, then per finalist what it promised in the
    search and what it delivered on fresh seeds (nothing without a stage)."""
    stage, runs = result.stage, result.finalist_runs
    if stage is None:
        return
    cut = " (cut by the budget)" if stage.status == StageStatus.CUT_BY_BUDGET else ""
    print(f"finalists: the {len(stage.of)} best trial(s) x {len(stage.seed_values)} "
          f"fresh seed(s) {stage.seed_values}: {len(runs)} runs: "
          f"{_outcomes(runs, always=(Outcome.COMPLETED,))}{cut}")
    for row in table(result.pick.ranked or finalists(stage, result.trials, runs,
                                                      result.steps)):
        if not row.measured:
            print(f"  {row.key}: promised {row.promised}, delivered nothing "
                  f"({row.seeds} runs reached step {result.steps})")
            continue
        print(f"  {row.key}: promised {row.promised}, delivered {row.mean} +- {row.sd} "
              f"{row.ci} over {row.seeds} seeds (optimism {row.optimism})")
