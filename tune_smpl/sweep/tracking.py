"""The sweep's MLflow side as the driver calls it: one typed method per event.

`Tracking` wraps the sweep's `mlflow_tracking.SweepRecorder` (or none, when the store
failed at the start). Each method names the recorder's method itself (`SweepRecorder.x`, no
dispatch by name) and passes keywords, bound to that method's signature in the caller,
with or without a recorder: a wrong or missing argument is a `TypeError` raised here, a
programming error that is never swallowed, and `tests/tune_smpl/test_tracking.py` calls
every method. The call itself goes on the queue of the sweep's one writer thread
(`writer.Writer`) and returns at once, so no trial waits on the tracking server; the writer
keeps the order, retries while the server does not answer, and logs what the store refuses.
MLflow never stops a sweep, and the record (which `--resume` and `tune-smpl sync` read) is
the truth MLflow is filled in from.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mlflow_tracking import SweepRecorder
from tune_smpl.sweep.outcome import Outcome
from tune_smpl.sweep.writer import Writer

# Report fields that are bookkeeping, not measurements (MLflow's step is `step`).
NOT_METRICS = ("step", "pid", "evaluation", "time_this_iter_s", "started_at", "reported_at")


def report_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A report's measurements, as its trial's MLflow run logs them at its step."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float))
            and not isinstance(v, bool) and k not in NOT_METRICS}


def trial_tags(trial) -> dict[str, Any]:
    """The tags a trial's run is opened with: its role (and a finalist run's trial, seed)."""
    tags = {"role": trial.role}
    if trial.finalist_of is not None:
        tags.update(finalist_of=trial.finalist_of, seed=trial.config.get("seed"))
    return tags


def sweep_params(settings: Mapping[str, Any], sampler: Mapping[str, Any],
                 warm_start: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parent run's params: the settings, the sampler's, and what a warm start gave."""
    warm = {}
    if warm_start:
        warm = {"warm_start_trials": warm_start["trials"],
                "warm_start_enqueued": warm_start["enqueued"],
                "warm_start_storages": sorted({s["storage"] for s in warm_start["sweeps"]})}
    return {**settings, **sampler, **warm}


class Tracking:
    def __init__(self, recorder: SweepRecorder | None = None, sweep: str = "",
                 writer: Writer | None = None):
        self.recorder = recorder
        self.sweep = sweep
        self.writer = writer or (Writer(recorder.tracking_uri, sweep)
                                 if recorder is not None else None)

    @property
    def on(self) -> bool:
        """A parent run exists: there is something to log to."""
        return self.recorder is not None and self.recorder.parent_run_id is not None

    @property
    def uri(self) -> str | None:
        """The tracking store's URI, when there is a recorder."""
        return self.recorder.tracking_uri if self.recorder is not None else None

    # --- trials ----------------------------------------------------------------
    def open_trial(self, trial) -> None:
        self._call(SweepRecorder.open_trial, trial_id=trial.key, trial_name=trial.name,
                   config=trial.config, status="pending", resumes=trial.resumes,
                   tags=trial_tags(trial))

    def tag_trial(self, key: str, **tags: Any) -> None:
        for tag, value in tags.items():
            self._call(SweepRecorder.tag_trial, trial_id=key, key=tag, value=value)

    def trial_reported(self, key: str, metrics: Mapping[str, float], step: int,
                       timestamp: float | None = None) -> None:
        self._call(SweepRecorder.trial_reported, trial_id=key, metrics=metrics, step=step,
                   timestamp=timestamp)

    def trial_ended(self, key: str, outcome: str, error: str | None = None) -> None:
        self._call(SweepRecorder.trial_ended, trial_id=key, status=outcome, error=error)

    def expect_runs(self, keys: Iterable[str]) -> None:
        """MLflow holds runs for these trials only (sync.mlflow_complete): the others, the
        trials this command creates among them, are opened without a search for a run."""
        self._call(SweepRecorder.expect_runs, trial_ids=list(keys))

    def reconcile(self, trials: Iterable) -> None:
        """Each trial's run made to match its record (the backfill): a driver killed, or a
        server away, left runs behind the record; a missing run is created, missing
        reports logged, and a finished or interrupted trial's run shows its outcome."""
        for t in trials:
            tags = trial_tags(t)
            tags.update({k: n for k, n in (("restarts", t.restarts), ("resumes", t.resumes))
                         if n})
            node = next((r["ray_node_id"] for r in reversed(t.reports)
                         if r.get("ray_node_id")), None)
            if node:
                tags["ray_node_id"] = node
            status = t.outcome if t.finished else Outcome.INTERRUPTED if t.interrupted else None
            self._call(SweepRecorder.sync_trial, trial_id=t.key, trial_name=t.name,
                       config=t.config, status=status, error=t.error, tags=tags,
                       reports=[(int(r.get("step", 0)), report_metrics(r),
                                 r.get("reported_at")) for r in t.reports],
                       opened="running" if t.started else "pending")

    # --- the sweep ---------------------------------------------------------------
    def sync_sweep(self, settings: Mapping[str, Any], space_yaml: str,
                   resumes: int = 0) -> None:
        """The parent run made to match the record (the backfill), not counted a resume."""
        self._call(SweepRecorder.sync_sweep, settings=settings, space_yaml=space_yaml,
                   resumes=resumes)

    def end_sweep(self, *, status: str, sweep_status: str, figures: Mapping[str, float],
                  best: Mapping[str, Any] | None = None, model: Any = None,
                  measure: str | None = None,
                  model_from: Callable[[], Any] | None = None) -> None:
        """Close the parent run (and any child still open) with the sweep's figures, its
        best trial and model (or `model_from`, which gives it, in the writer), and
        `sweep_status` (and the best's `measure`) as tags."""
        tags = {"sweep_status": sweep_status}
        if measure:
            tags["best_measure"] = measure
        self._call(SweepRecorder.end_sweep, best=best, model=model, status=status,
                   figures=figures, tags=tags, model_from=model_from)

    def log_report(self, folder: str, description: str) -> None:
        """The report's files are copied first: the writer may upload them after the
        folder (a scratch folder, for a storage that is not local) is gone."""
        if self.recorder is None:
            self._call(SweepRecorder.log_report, folder=folder, description=description)
            return
        copy = tempfile.mkdtemp(prefix="tune-smpl-report-")
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        self._call(SweepRecorder.log_report, folder=copy, description=description)
        if self.writer is not None:
            self.writer.put(shutil.rmtree, copy, ignore_errors=True)

    # --- the writer --------------------------------------------------------------
    @property
    def behind(self) -> bool:
        """MLflow lacks something the record has (a write dropped or left)."""
        return self.writer is not None and self.writer.behind

    @property
    def pending(self) -> int:
        return self.writer.pending if self.writer is not None else 0

    @property
    def writes(self) -> int:
        """The writes the store took so far."""
        return self.writer.writes if self.writer is not None else 0

    def drain(self, timeout_s: float, give_up: Callable[[], bool] = lambda: False,
              most_s: float | None = None) -> bool:
        """Wait for the queued writes, `timeout_s` seconds (more while they go through, at
        most `most_s`: writer.Writer.drain); True when none is left."""
        return self.writer is None or self.writer.drain(timeout_s, give_up, most_s=most_s)

    def stop(self) -> None:
        """Write nothing more; what is queued is left to the backfill."""
        if self.writer is not None:
            self.writer.stop()

    def _call(self, method, **kwargs: Any) -> None:
        """`method` (a `SweepRecorder` function) on the recorder with `kwargs`, queued."""
        inspect.signature(method).bind(self.recorder, **kwargs)  # a bug of ours: TypeError
        if self.recorder is not None and self.writer is not None:  # one comes with the other
            self.writer.put(method, self.recorder, **kwargs)
