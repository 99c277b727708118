"""One command's run of a sweep, new or resumed: record, study, Tuner, and how it ended.

`run_sweep` stops at the record: it returns a `SweepResult` (result.py: the trials, the
best, the status, the wall time), and the command closes the sweep from it (the summary, MLflow's
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
import traceback
from dataclasses import asdict
from pathlib import Path

from search_spaces import make_define_by_run, space_to_yaml
from smpl_core.config import SMPLConfig
from tune_smpl.sweep import prior
from tune_smpl.sweep.finalists import FinalistStage, StageStatus, plan, run_key
from tune_smpl.sweep.ledger import Ledger
from tune_smpl.sweep.outcome import METRIC, MODE, Outcome
from tune_smpl.sweep.prune import CLOSE_WAIT_S
from tune_smpl.sweep.record import FINALIST, SweepRecord, SweepStatus, TrialRecord
from tune_smpl.sweep.record_writer import RecordWriter, StorageFailure, describe, storage_error
from tune_smpl.sweep.restarts import LOG_NAME, route_ray_messages
from tune_smpl.sweep.result import SweepResult
from tune_smpl.sweep.resume import drop_orphans, restart_points, settle_done
from tune_smpl.sweep.settings import SweepSettings
from tune_smpl.sweep.stop import STOP, StopRequested
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
from tune_smpl.sweep.study_mirror import StudyMirror
from tune_smpl.sweep.sync import mlflow_complete, to_reconcile
from tune_smpl.sweep.tracking import Tracking
from tune_smpl.sweep.tuner import build_finalist_tuner, build_tuner

log = logging.getLogger(__name__)


def new_record(settings: SweepSettings, base: SMPLConfig, space: dict,
               tracking_uri: str, warm: prior.Prior | None = None) -> SweepRecord:
    """Claim the sweep's name in its storage (one of two commands racing for it wins); a
    warm start's prior goes into the record with it (sweep.json's `warm_start`, prior.json).

    The start-up count is the same with a prior: Optuna counts every finished trial of the
    study towards it, the prior's too, so a prior of at least that many finished trials
    leaves the new sweep no random start-up (README, "Warm start")."""
    record = SweepRecord(SweepStorage(settings.storage_path), settings.name)
    n_startup = startup_trials(settings.num_samples, settings.max_concurrent)
    meta = {"settings": asdict(settings), "base": base.to_dict(),
            "tracking_uri": tracking_uri, "status": str(SweepStatus.NEW), "wall_s": 0.0,
            "runs": 0,
            "metric": METRIC, "mode": MODE,
            "sampler": sampler_settings(settings.sampler, settings.seed, n_startup, counted(
                settings.sampler, [t.state for t in warm.trials] if warm else []))}
    if warm is not None:
        meta["warm_start"] = warm.meta()
    record.create(meta, space_to_yaml(space))
    if warm is not None:
        prior.save(record, warm)
    return record


def run_sweep(record: SweepRecord, base: SMPLConfig, space: dict, settings: SweepSettings,
              tracking: Tracking) -> SweepResult:
    meta = record.meta()
    trials, runs = record.trials(), record.finalists()
    settled = settle_done(record, trials + runs, base.steps)  # stopped after their last report
    restore = restart_points(record, trials + runs)
    drop_orphans(record, trials + runs)
    # From here the record is written by a thread of its own, so that a storage that fails
    # never holds up a trial (record_writer.py); the stages and the end wait for it.
    writer = record.writer = RecordWriter(record.storage.write_text, record.uri)
    n_startup = meta["sampler"].get("sampler_startup_trials", 0)
    db = study_file(record.storage, settings.name)
    # Each run of the command draws on: a resumed sweep re-seeded as it started would
    # propose its first configs again.
    seed = (settings.seed * 1_000_003 + meta["runs"]) % 2**32
    warm = prior.read(record, meta)  # a warm start's prior, as the sweep started with it
    # In memory for the ledger, written through to optuna.db by a thread (study_mirror.py)
    mirror = StudyMirror(db)
    study = build_study(trials, settings.name, mirror,
                        make_sampler(settings.sampler, seed, n_startup), warm)
    n_prior = len(warm.trials) if warm else 0
    check_numbers(study, trials, n_prior)
    budget = settings.time_budget_s
    deadline = time.time() + max(0.0, budget - meta["wall_s"]) if budget else None
    ledger = Ledger(record, trials, study, make_define_by_run(space), base.to_dict(),
                    sampler=settings.sampler, n_startup=n_startup, steps=base.steps,
                    deadline=deadline, tracking=tracking, restore=restore, finalists=runs,
                    n_prior=n_prior, mirror=mirror)
    if mlflow_complete(meta, tracking.uri):
        tracking.expect_runs(t.key for t in trials + runs)
    tracking.reconcile(to_reconcile(meta, tracking.uri, trials + runs, settled))
    meta.update(status=str(SweepStatus.RUNNING), runs=meta["runs"] + 1)
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
        meta["finalists"]["status"] = str(
            StageStatus.INTERRUPTED if stopped else StageStatus.CUT_BY_BUDGET
            if any(t.outcome == Outcome.CUT_BY_BUDGET for t in runs) else StageStatus.DONE)
    meta["wall_s"] += time.time() - t0
    meta["status"] = str(SweepStatus.INTERRUPTED if stopped else SweepStatus.FINISHED)
    record.save_meta(meta)
    # The record's last writes, bounded (a second Ctrl-C cuts the wait for a storage that
    # fails, never the writes themselves); a storage that failed is said instead of a
    # summary the record would not back.
    writer.close(lambda: STOP.hurried and record.failing)
    ledger.close_study(lambda: STOP.hurried)  # optuna.db with every write (a view: see there)
    ledger.pruner.close(0 if STOP.hurried else CLOSE_WAIT_S)  # the deletes under way
    failure = writer.failure(tuple(ledger.storage_left), ledger.storage_error)
    unwritten, record.writer = writer.pending, None
    other = ledger.study_error or ledger.ray_storage_error  # not the record's own writes
    if failure is None and other is not None:  # the study's disk full or read-only, or Ray's
        failure = StorageFailure(record.uri, other, 0.0, unwritten)
    if (failure is not None and ledger.study_error is None
            and not (stopped or failure.unwritten or failure.trials)):
        # The bound passed only after the stages had ended (the stop it asked for came too
        # late to stop anything) and the last tries wrote every file: the record says
        # finished, complete, and the command says so too (the writer said it caught up).
        failure = None
    if failure is not None:
        meta["status"], stopped = str(SweepStatus.INTERRUPTED), True
    if not stopped and not record.storage.local:
        _copy_study(record, study_file(record.storage, settings.name))
    return SweepResult(record, sorted(ledger.trials.values(), key=lambda t: t.number),
                       meta["status"], meta["wall_s"], left, base.steps, runs,
                       FinalistStage.of_meta(meta), meta.get("warm_start"), str(ray_log), failure,
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
    except (StopRequested, KeyboardInterrupt):  # STOP.check at a safe point, never mid-write
        interrupted = True
    except OSError as e:
        if not storage_error("".join(traceback.format_exception(e))):
            raise
        # Ray's own files on the storage failed (its experiment state, listed once more at
        # the end of `fit`): the record, written by its own writer, is the truth, and the
        # sweep stops as for a storage that failed (exit 75; --resume goes on from the
        # record). Ray's traceback goes to its log file (restarts.py), not the terminal.
        logging.getLogger("ray.tune").warning("Ray's fit failed on the storage", exc_info=e)
        ledger.ray_storage_error = f"Ray's experiment files: {describe(e)}"
        interrupted = True
    left = ledger.settle(interrupted, finalists=finalist_stage)
    return left, interrupted or bool(left)


def _plan_finalists(record: SweepRecord, meta: dict, ledger: Ledger,
                    settings: SweepSettings) -> None:
    """The stage's plan, made once (kept in sweep.json before any run is recorded), and a
    record for each planned run that has none yet (a stage interrupted while planning)."""
    if "finalists" not in meta:
        meta["finalists"] = plan(list(ledger.trials.values()), settings.finalists,
                                 settings.finalist_seeds, int(ledger.base["seed"])).to_dict()
        record.save_meta(meta)
    new = []
    for number, (of, seed) in enumerate(FinalistStage.from_dict(meta["finalists"]).runs()):
        key = run_key(of, seed)
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
