"""One command's run of a sweep, new or resumed: record, study, Tuner, and how it ended.

`run_sweep` stops at the record: it returns a `SweepResult` (the trials, the best, the
status, the wall time), and the command closes the sweep from it (the summary, MLflow's
parent run, the report). The sweep ends in one of three ways, each leaving the record, the
study and the MLflow trial runs agreed: finished (every trial has its outcome), interrupted
(Ctrl-C: its unfinished trials are marked until `--resume`), or killed (nothing runs after
a SIGKILL: `--resume` starts from the record as it was). A Ctrl-C is a request
(`stop.STOP`), taken at the start of a stage or of a step of Ray's loop, where no write of
the record, the study or MLflow is open.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from search_spaces import make_define_by_run, space_to_yaml
from smpl_core.config import SMPLConfig
from tune_smpl.sweep import finalists as F
from tune_smpl.sweep import outcome as O
from tune_smpl.sweep import prior as P
from tune_smpl.sweep.ledger import Ledger
from tune_smpl.sweep.record import FINALIST, SweepRecord, TrialRecord
from tune_smpl.sweep.record_writer import RecordWriter, StorageFailure
from tune_smpl.sweep.restarts import LOG_NAME, route_ray_messages
from tune_smpl.sweep.resume import drop_orphans, restart_points, settle_done
from tune_smpl.sweep.settings import SweepSettings
from tune_smpl.sweep.stop import STOP
from tune_smpl.sweep.storage import SweepStorage
from tune_smpl.sweep.study import (
    STUDY_FILE,
    build_study,
    check_numbers,
    counted,
    make_sampler,
    sampler_settings,
    startup_trials,
    study_file,
)
from tune_smpl.sweep.tracking import Tracking
from tune_smpl.sweep.tuner import build_finalist_tuner, build_tuner

log = logging.getLogger(__name__)


def new_record(settings: SweepSettings, base: SMPLConfig, space: dict,
               tracking_uri: str, prior: P.Prior | None = None) -> SweepRecord:
    """Claim the sweep's name in its storage (one of two commands racing for it wins); a
    warm start's prior goes into the record with it (sweep.json's `warm_start`, prior.json).

    The start-up count is the same with a prior: Optuna counts every finished trial of the
    study towards it, the prior's too, so a prior of at least that many finished trials
    leaves the new sweep no random start-up (README, "Warm start")."""
    record = SweepRecord(SweepStorage(settings.storage_path), settings.name)
    n_startup = startup_trials(settings.num_samples, settings.max_concurrent)
    meta = {"settings": asdict(settings), "base": base.to_dict(),
            "tracking_uri": tracking_uri, "status": "new", "wall_s": 0.0, "runs": 0,
            "metric": O.METRIC, "mode": O.MODE,
            "sampler": sampler_settings(settings.sampler, settings.seed, n_startup, counted(
                settings.sampler, [t["state"] for t in prior.trials] if prior else []))}
    if prior is not None:
        meta["warm_start"] = prior.meta()
    record.create(meta, space_to_yaml(space))
    if prior is not None:
        P.save(record, prior)
    return record


@dataclass
class SweepResult:
    """What one command's run of a sweep left in its record."""

    record: SweepRecord
    trials: list[TrialRecord]  # every search trial of the sweep, by number
    status: str  # finished | interrupted
    wall_s: float  # the sweep's wall time over all the command's runs of it
    left: list[TrialRecord]  # the unfinished (interrupted) trials and runs; empty when finished
    steps: int = 0  # a full trial's steps (a finalist run's measure is taken there)
    finalist_runs: list[TrialRecord] = field(default_factory=list)
    stage: dict | None = None  # the finalist stage's plan and status (sweep.json), if any
    warm_start: dict | None = None  # what the sweep was warm-started from (sweep.json)
    ray_log: str | None = None  # where Ray's driver-side messages went (restarts.py)
    # The record lacks (or lacked, long enough to stop the sweep) what the sweep did: its
    # storage failed (record_writer.py); the command says so and exits 75.
    storage_failure: StorageFailure | None = None
    unwritten: int = 0  # record files whose last content the storage did not get (hurried)

    @property
    def pick(self) -> F.Pick:
        return F.pick(self.trials, self.finalist_runs, self.stage, self.steps)

    @property
    def best(self) -> TrialRecord | None:
        return self.pick.trial

    def figures(self) -> dict[str, float]:
        """The sweep's own numbers: the parent run's only metrics."""
        out: dict[str, float] = {f"trials_{o}": n for o, n in O.counts(self.trials).items()}
        out.update(trials=len(self.trials), wall_s=round(self.wall_s, 2),
                   trial_seconds=round(sum(t.seconds for t in self.trials), 2),
                   restarts=sum(t.restarts for t in self.trials + self.finalist_runs))
        if self.stage is not None:
            out.update({f"finalist_runs_{o}": n
                        for o, n in O.counts(self.finalist_runs).items()},
                       finalist_runs=len(self.finalist_runs),
                       finalist_seconds=round(sum(t.seconds for t in self.finalist_runs), 2))
        pick = self.pick
        if pick.trial is not None:
            out[f"best_{O.METRIC}"] = pick.value
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


def run_sweep(record: SweepRecord, base: SMPLConfig, space: dict, settings: SweepSettings,
              tracking: Tracking) -> SweepResult:
    meta = record.meta()
    trials, runs = record.trials(), record.finalists()
    settle_done(record, trials + runs, base.steps)  # stopped after their last report
    restore = restart_points(record, trials + runs)
    drop_orphans(record)
    # From here the record is written by a thread of its own, so that a storage that fails
    # never holds up a trial (record_writer.py); the stages and the end wait for it.
    record.writer = RecordWriter(record.storage.write_text, record.uri)
    n_startup = meta["sampler"].get("sampler_startup_trials", 0)
    db = study_file(record.storage, settings.name)
    # Each run of the command draws on: a resumed sweep re-seeded as it started would
    # propose its first configs again.
    seed = (settings.seed * 1_000_003 + meta["runs"]) % 2**32
    prior = P.read(record, meta)  # a warm start's prior, as the sweep started with it
    study = build_study(trials, settings.name, f"sqlite:///{db}",
                        make_sampler(settings.sampler, seed, n_startup), prior)
    n_prior = len(prior.trials) if prior else 0
    check_numbers(study, trials, n_prior)
    budget = settings.time_budget_s
    deadline = time.time() + max(0.0, budget - meta["wall_s"]) if budget else None
    ledger = Ledger(record, trials, study, make_define_by_run(space), base.to_dict(),
                    sampler=settings.sampler, n_startup=n_startup, steps=base.steps,
                    deadline=deadline, tracking=tracking, restore=restore, finalists=runs,
                    n_prior=n_prior)
    tracking.reconcile(trials + runs)
    meta.update(status="running", runs=meta["runs"] + 1)
    record.save_meta(meta)
    remaining = settings.num_samples - sum(t.finished for t in trials)
    t0 = time.time()
    # Ray's own Ctrl-C handler ends trials as TERMINATED and prints its own resume line;
    # without it a Ctrl-C is the command's stop request (stop.STOP), and the ledger decides.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    def search():
        if remaining > 0:
            build_tuner(base, space, settings, ledger, remaining).fit()

    def finalists():
        _plan_finalists(record, meta, ledger, settings)
        if ledger.queue_finalists() and not ledger.budget_spent():
            build_finalist_tuner(base, space, settings, ledger, len(ledger.queue)).fit()

    # Ray's tracebacks into a file, not onto the terminal (restarts.py)
    ray_log = route_ray_messages(study_file(record.storage, settings.name).parent / LOG_NAME)
    left, stopped = _stage(ledger, search)
    if not stopped and settings.finalists:
        left, stopped = _stage(ledger, finalists, finalist_stage=True)
    runs = sorted(ledger.finalists.values(), key=lambda t: t.number)
    if "finalists" in meta:
        meta["finalists"]["status"] = (
            "interrupted" if stopped else "cut_by_budget"
            if any(t.outcome == O.CUT_BY_BUDGET for t in runs) else "done")
    meta["wall_s"] += time.time() - t0
    meta["status"] = "interrupted" if stopped else "finished"
    record.save_meta(meta)
    # The record's last writes, bounded (a second Ctrl-C cuts the wait for a storage that
    # fails, never the writes themselves); a storage that failed is said instead of a
    # summary the record would not back.
    record.writer.close(lambda: STOP.hurried and record.failing)
    failure = record.writer.failure(tuple(ledger.storage_left), ledger.storage_error)
    unwritten, record.writer = record.writer.pending, None
    if failure is None and ledger.study_error is not None:  # its disk: full or read-only
        failure = StorageFailure(record.uri, ledger.study_error, 0.0, unwritten)
    if (failure is not None and ledger.study_error is None
            and not (stopped or failure.unwritten or failure.trials)):
        # The bound passed only after the stages had ended (the stop it asked for came too
        # late to stop anything) and the last tries wrote every file: the record says
        # finished, complete, and the command says so too (the writer said it caught up).
        failure = None
    if failure is not None:
        meta["status"], stopped = "interrupted", True
    if not stopped and not record.storage.local:
        _copy_study(record, study_file(record.storage, settings.name))
    return SweepResult(record, sorted(ledger.trials.values(), key=lambda t: t.number),
                       meta["status"], meta["wall_s"], left, base.steps, runs,
                       meta.get("finalists"), meta.get("warm_start"), str(ray_log), failure,
                       unwritten)


def _stage(ledger: Ledger, work, finalist_stage: bool = False
           ) -> tuple[list[TrialRecord], bool]:
    """Run one stage of the sweep; then settle what it left. Returns the interrupted trials
    and whether the stage was stopped: a stop requested before it starts runs none of it
    (and a finalist stage stopped before its plan leaves no run to mark, yet is not done)."""
    interrupted = False
    try:
        STOP.check()
        # The record has what came before (the plan, the restart points): a storage that
        # fails holds the stage back here, until the writer gives up and stops it (or a
        # stop is requested: the stage would not run anyway).
        ledger.record.flush(lambda: STOP.requested and ledger.record.failing)
        STOP.check()
        work()
    except KeyboardInterrupt:  # raised by STOP.check at a safe point, never mid-write
        interrupted = True
    left = ledger.settle(interrupted, finalists=finalist_stage)
    return left, interrupted or bool(left)


def _plan_finalists(record: SweepRecord, meta: dict, ledger: Ledger,
                    settings: SweepSettings) -> None:
    """The stage's plan, made once (kept in sweep.json before any run is recorded), and a
    record for each planned run that has none yet (a stage interrupted while planning)."""
    if "finalists" not in meta:
        meta["finalists"] = F.plan(list(ledger.trials.values()), settings.finalists,
                                   settings.finalist_seeds, int(ledger.base["seed"]))
        record.save_meta(meta)
    new = []
    for number, (of, seed) in enumerate(F.planned_runs(meta["finalists"])):
        key = F.run_key(of, seed)
        if key not in ledger.finalists:
            trial = ledger.trials[of]
            new.append(TrialRecord(key=key, number=number, params=dict(trial.params),
                                   distributions={}, config={**trial.config, "seed": seed},
                                   proposed_by=FINALIST, role=FINALIST, finalist_of=of))
    ledger.add_finalists(new)


def _copy_study(record: SweepRecord, db: Path) -> None:
    try:
        record.storage.upload_file(db, record.name, STUDY_FILE)
    except OSError as e:  # the record rebuilds it; a copy is a convenience
        log.warning("could not copy the study to %s: %s", record.uri, e)
