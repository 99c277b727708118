"""MLflow filled in from the sweep's record (the backfill), and the end of a sweep's writes.

The record is the truth; MLflow is a view of it that can fall behind (a tracking server
that went away, a full write queue, a driver killed or hurried out by a second Ctrl-C).
`sync` makes a store match a record: the parent run (params, search space, and for an
ended sweep its status, figures, best and model, as `close` logs them: `end_args`), and
every trial's and finalist run's child run (params, config, every report's metrics at its
step, tags, the outcome), each created if missing. It writes only what the store lacks, so
it can run any number of times; into an empty store it rebuilds the sweep's runs.

It runs at the end of a sweep when the writer fell behind (`finish`, bounded in time), on
`--resume` (`Tracking.reconcile`, before any trial runs), and as `tune-smpl sync SWEEP`.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

import trainables
from mlflow_tracking import SweepRecorder
from tune_smpl.sweep.record import SweepRecord, SweepStatus, TrialRecord
from tune_smpl.sweep.result import SweepResult
from tune_smpl.sweep.settings import SweepSettings
from tune_smpl.sweep.tracking import Tracking, sweep_params
from tune_smpl.sweep.writer import CATCH_UP_FACTOR, CATCH_UP_STALL_S

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 60.0  # how long the end of a sweep waits for MLflow to take its writes


def end_args(result: SweepResult) -> dict:
    """The parent run's end as `close` logs it (Tracking.end_sweep's keywords, but the
    model): an interrupted sweep ends KILLED; a finished one FINISHED with its figures, its
    best (the pick) and how the best was measured."""
    if result.status != SweepStatus.FINISHED:
        return {"status": "KILLED", "sweep_status": str(SweepStatus.INTERRUPTED),
                "figures": {}}
    pick = result.pick
    top = pick.trial
    return {"status": "FINISHED", "sweep_status": str(SweepStatus.FINISHED),
            "figures": result.figures(),
            "best": top and {"trial_id": top.key, "config": top.config},
            "measure": pick.measure}


def best_model(result: SweepResult):
    """The best trial's model, rebuilt from its checkpoint alone; None if there is none or
    it cannot be read (the sweep's result stands without it)."""
    uri = result.best_checkpoint()
    if uri is None:
        return None
    try:
        return trainables.load_model(uri)  # torch is imported here, not with this module
    except Exception as e:  # noqa: BLE001 - a damaged or missing checkpoint costs the model
        log.warning("best model of sweep %s not loaded from %s: %s", result.record.name,
                    uri, e)
        return None


def result_of(record: SweepRecord, trials: list[TrialRecord] | None = None,
              runs: list[TrialRecord] | None = None) -> SweepResult:
    """The sweep's result as its record has it (what `run_sweep` returned at its end)."""
    trials = record.trials() if trials is None else trials
    runs = record.finalists() if runs is None else runs
    return SweepResult.of_record(record, trials, runs)


def backfill(tracking: Tracking, record: SweepRecord, trials: list[TrialRecord] | None = None,
             runs: list[TrialRecord] | None = None) -> None:
    """Queue on `tracking` what makes its store match `record` (`trials` and `runs`: the
    records to take, default all): the parent, each child run, then the parent's end for
    a sweep that ended (finished or interrupted; a running or killed one stays open)."""
    meta = record.meta()
    result = result_of(record, trials, runs)
    settings = SweepSettings.from_dict(meta["settings"]).as_params()
    tracking.sync_sweep(sweep_params(settings, meta["sampler"], meta.get("warm_start")),
                        record.space_yaml(), resumes=max(0, meta["runs"] - 1))
    tracking.reconcile(result.trials + result.finalist_runs)
    if meta["status"] in (SweepStatus.FINISHED, SweepStatus.INTERRUPTED):
        finished = result.status == SweepStatus.FINISHED and result.pick.trial is not None
        tracking.end_sweep(**end_args(result),
                           model_from=(lambda: best_model(result)) if finished else None)


@dataclass
class Synced:
    complete: bool  # the store has everything the record has
    writes: int  # what it took (0: the store was complete)
    runs: int  # the sweep's runs in the record: its trials and finalist runs, and the parent


def sync(record: SweepRecord, target: SweepRecorder | str, timeout_s: float = 600.0,
         trials: list[TrialRecord] | None = None,
         give_up: Callable[[], bool] = lambda: False) -> Synced:
    """Make the store `target` (a recorder, or a tracking URI) match `record`, waiting
    `timeout_s` seconds for it to take the writes (more while they go through:
    writer.Writer.drain)."""
    recorder = target if isinstance(target, SweepRecorder) else SweepRecorder(target,
                                                                              record.name)
    tracking = Tracking(recorder, record.name)
    trials = record.trials() if trials is None else trials
    runs = record.finalists()
    backfill(tracking, record, trials, runs)
    done = tracking.drain(timeout_s, give_up)
    tracking.stop()
    return Synced(done and not tracking.behind, tracking.writes,
                  len(trials) + len(runs) + 1)


COMPLETE = "mlflow_complete"  # sweep.json: the command run whose end left MLflow complete


def mark_complete(record: SweepRecord, uri: str | None) -> None:
    """The record says that MLflow at `uri` had everything at the end of its latest
    command run (`runs`): the next `--resume` backfills only what that run left open."""
    try:
        meta = record.meta()
        meta[COMPLETE] = {"runs": meta["runs"], "uri": uri}
        record.save_meta(meta)
    except OSError as e:  # the storage went away: the next resume backfills every trial
        log.info("sweep %s: MLflow's completeness not recorded: %s", record.name, e)


def mlflow_complete(meta: dict, uri: str | None) -> bool:
    """The last command run ended with MLflow at `uri` holding all the record had then
    (mark_complete), and so a run only for a trial the record has."""
    return meta.get(COMPLETE) == {"runs": meta["runs"], "uri": uri}


def to_reconcile(meta: dict, uri: str | None, trials: list[TrialRecord],
                 changed: list[TrialRecord]) -> list[TrialRecord]:
    """The trials whose MLflow runs a command starting now makes match the record: all of
    them, unless the last command run ended with MLflow at `uri` complete (mark_complete;
    a killed driver or a server that stayed away never marks it): then those it left
    unfinished and those the record has `changed` since (resume.settle_done)."""
    if not mlflow_complete(meta, uri):
        return trials
    keys = {t.key for t in changed}
    return [t for t in trials if not t.finished or t.key in keys]


def finish(tracking: Tracking, record: SweepRecord, storage_path: str,
           hurried: Callable[[], bool], timeout_s: float = CLOSE_WAIT_S,
           mark: bool = True) -> str | None:
    """The end of a command's MLflow writes: wait (`timeout_s` in all; more while the
    writes go through, writer.Writer.drain) for the writer to make them; if it fell behind
    (a write dropped or left), queue the backfill and wait for it in the time left. None
    when MLflow has everything; else the line to print, naming the command that fills it
    in. `hurried()` (a second Ctrl-C): no wait at all. `mark`: a complete MLflow is
    marked so in the record (mark_complete); not after the record's storage failed, when
    MLflow may hold a trial whose record write was lost."""
    if tracking.recorder is None or tracking.writer is None:  # one comes with the other
        return None
    start = time.monotonic()
    most = timeout_s * CATCH_UP_FACTOR  # while the writes go through (writer.Writer.drain)
    if not hurried() and tracking.drain(timeout_s, hurried) and tracking.behind:
        tracking.writer.behind = False  # the backfill below writes what was dropped
        backfill(tracking, record)
        # After a catch-up that ran past `timeout_s`, the backfill still gets its own
        # short wait (and more while it goes through).
        spent = time.monotonic() - start
        wait = max(timeout_s - spent, min(timeout_s, CATCH_UP_STALL_S))
        tracking.drain(wait, hurried, most_s=max(wait, most - spent))
    left = tracking.pending
    complete = not left and not tracking.behind
    tracking.stop()
    if complete:
        if mark:
            mark_complete(record, tracking.uri)
        return None
    fill_in = (f"`tune-smpl sync {record.name} --storage-path {shlex.quote(storage_path)}` "
               f"(or --resume) fills it in from the record")
    if hurried():
        return (f"MLflow at {tracking.uri} not waited for (Ctrl-C twice; {left} writes "
                f"left): the record has everything; {fill_in}.")
    return (f"MLflow at {tracking.uri} is behind the record ({left} writes left after "
            f"{timeout_s:g} s): the record has everything; {fill_in}.")
