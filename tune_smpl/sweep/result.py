"""What a sweep's record says it did: the trials, the finalist runs, the status, and the
one pick of its best (`finalists.pick`), computed once.

`run_sweep` returns a `SweepResult` at its end; every other reader of a record (`export`,
the report, `sync`, the tables of `tune_smpl.tables`, the benchmarks) builds one with
`SweepResult.of_record`, so the pick's inputs (the search trials, the finalist runs, the
stage's plan, a full trial's steps) are assembled in one place. No Ray here: the readers
of a record need none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from tune_smpl.sweep.finalists import FinalistStage, Pick, pick
from tune_smpl.sweep.outcome import METRIC, counts
from tune_smpl.sweep.record import SweepRecord, TrialRecord
from tune_smpl.sweep.record_writer import StorageFailure


@dataclass
class SweepResult:
    """What one command's run of a sweep left in its record. Built once its trials have
    ended (nothing changes its fields or its trials afterwards), so its pick is computed
    once (`pick`, a cached property)."""

    record: SweepRecord
    trials: list[TrialRecord]  # every search trial of the sweep, by number
    status: str  # a SweepStatus: finished | interrupted (| new, running: read as it stands)
    wall_s: float  # the sweep's wall time over all the command's runs of it
    left: list[TrialRecord]  # the unfinished (interrupted) trials and runs; empty when finished
    steps: int = 0  # a full trial's steps (a finalist run's measure is taken there)
    finalist_runs: list[TrialRecord] = field(default_factory=list)
    stage: FinalistStage | None = None  # the finalist stage's plan and status, if any
    warm_start: dict | None = None  # what the sweep was warm-started from (sweep.json)
    ray_log: str | None = None  # where Ray's driver-side messages went (restarts.py)
    # The record lacks (or lacked, long enough to stop the sweep) what the sweep did: its
    # storage failed (record_writer.py); the command says so and exits 75.
    storage_failure: StorageFailure | None = None
    unwritten: int = 0  # record files whose last content the storage did not get (hurried)

    @classmethod
    def of_record(cls, record: SweepRecord, trials: list[TrialRecord],
                  runs: list[TrialRecord], meta: dict | None = None) -> SweepResult:
        """The result as the record stands (`meta`: its sweep.json, read if not given), of
        the search `trials` and finalist `runs` read from it (by `trials()`/`finalists()`,
        or `scan`, which leaves a damaged one out)."""
        meta = record.meta() if meta is None else meta
        return cls(record, trials, meta["status"], float(meta["wall_s"]),
                   [t for t in trials + runs if not t.finished], int(meta["base"]["steps"]),
                   runs, FinalistStage.of_meta(meta), meta.get("warm_start"))

    @cached_property
    def pick(self) -> Pick:
        """The sweep's best as every view shows it (finalists.pick), computed once."""
        return pick(self.trials, self.finalist_runs, self.stage, self.steps)

    @property
    def best(self) -> TrialRecord | None:
        return self.pick.trial

    def figures(self) -> dict[str, float]:
        """The sweep's own numbers: the parent run's only metrics."""
        out: dict[str, float] = {f"trials_{o}": n for o, n in counts(self.trials).items()}
        out.update(trials=len(self.trials), wall_s=round(self.wall_s, 2),
                   trial_seconds=round(sum(t.seconds for t in self.trials), 2),
                   restarts=sum(t.restarts for t in self.trials + self.finalist_runs))
        if self.stage is not None:
            out.update({f"finalist_runs_{o}": n
                        for o, n in counts(self.finalist_runs).items()},
                       finalist_runs=len(self.finalist_runs),
                       finalist_seconds=round(sum(t.seconds for t in self.finalist_runs), 2))
        pick = self.pick
        if pick.trial is not None:
            out[f"best_{METRIC}"] = pick.value
            out.update(pick.figures())
        return out

    def best_checkpoint(self) -> str | None:
        """The URI of the checkpoint of the best model: the winning finalist's run on the
        stage's first seed (its final report), else the best search trial's best report
        (else its newest checkpoint); None without a best or a checkpoint."""
        pick = self.pick
        if pick.trial is None:
            return None
        t = pick.model_run or pick.trial
        row = t.last if pick.model_run else t.best_report()
        storage, folder = self.record.storage, (self.record.name, t.name)
        names = [row.get("checkpoint_dir_name")] + sorted(
            (d for d in storage.list_dirs(*folder) if d.startswith("checkpoint_")),
            reverse=True)
        for name in names:
            if name and storage.exists(*folder, name):
                return storage.uri(*folder, name)
        return None
