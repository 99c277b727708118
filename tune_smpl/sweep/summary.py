"""What a command prints when its run of a sweep ends, from the `SweepResult` alone (the
record's outcomes, `outcome.best`): text, nothing else."""

from __future__ import annotations

import shlex
import sys

from tune_smpl.sweep import outcome as O


def fmt(v) -> str:
    """A value as the progress line, the summary and the report show it."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def proposals(trials) -> str:
    by: dict[str, int] = {}
    for t in trials:
        by[t.proposed_by] = by.get(t.proposed_by, 0) + 1
    parts = [f"{by.pop('random', 0)} random start-up"]
    parts += [f"{n} proposed by {who.upper()}" for who, n in sorted(by.items())]
    return ", ".join(parts)


def resume_command(settings) -> str:
    return (f"tune-smpl tune --name {settings.name} --storage-path "
            f"{shlex.quote(settings.storage_path)} --resume")


def print_interrupted(result, settings) -> None:
    left = result.left
    print(f"\nsweep {settings.name} interrupted: {len(left)} trial(s) unfinished "
          f"({', '.join(t.key for t in left)}); its record is saved. Resume with:\n  "
          f"{resume_command(settings)}", flush=True)


def print_finished(result, settings, tracking_uri: str | None) -> None:
    """The outcomes, the proposals, the best trial and the commands a user runs next; when
    no trial gave a measurement, why (on stderr)."""
    trials, n = result.trials, O.counts(result.trials)
    print(f"\nsweep {settings.name} finished: {len(trials)} trials: " + ", ".join(
        f"{n[o]} {O.LABELS[o]}" for o in O.OUTCOMES if n[o] or o in O.SCORED))
    print(f"proposals: {proposals(trials)}")
    top = result.best
    if top is None:
        print("no trial gave a measurement of val_accuracy (" + ", ".join(
            f"{n[o]} {O.LABELS[o]}" for o in O.OUTCOMES if n[o]) + "); a failed trial's reason "
              f"is `error` in trial_<key>/trial.json under {result.record.uri}",
              file=sys.stderr)
        return
    value, row = O.score(top.reports)
    print(f"best {O.METRIC} {value:.4f} (trial {top.key}, {top.outcome}; its best report at "
          f"step {row.get('step')}):")
    for k in sorted(top.params):
        print(f"  {k}: {top.params[k]}")
    print(f"export it:  tune-smpl export {settings.name} --storage-path "
          f"{shlex.quote(settings.storage_path)} -o best.yaml\n"
          f"train it:   tune-smpl train --config best.yaml --eval-test"
          + (f"\nbrowse:     tune-smpl ui --tracking-uri {shlex.quote(tracking_uri)}"
             if tracking_uri else ""))
