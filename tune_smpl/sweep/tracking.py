"""The sweep's MLflow side as the driver calls it: one typed method per event.

`Tracking` wraps the sweep's `mlflow_tracking.SweepRecorder` (or none, when the store
failed at the start). Each method names the recorder's method itself (`SweepRecorder.x`, no
dispatch by name) and passes keywords, bound to that method's signature before the call,
with or without a recorder: a wrong or missing argument is a `TypeError` raised here, a
programming error that is never swallowed, and `tests/tune_smpl/test_tracking.py` calls
every method. What the store itself raises is logged in one place, `_call`: MLflow never
stops a sweep, and the record (which `--resume` reads) is unaffected.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from mlflow_tracking import SweepRecorder

log = logging.getLogger(__name__)


class Tracking:
    def __init__(self, recorder: SweepRecorder | None = None, sweep: str = ""):
        self.recorder = recorder
        self.sweep = sweep

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
        tags = {"role": trial.role}
        if trial.finalist_of is not None:
            tags.update(finalist_of=trial.finalist_of, seed=trial.config.get("seed"))
        self._call(SweepRecorder.open_trial, trial_id=trial.key, trial_name=trial.name,
                   config=trial.config, status="pending", resumes=trial.resumes, tags=tags)

    def tag_trial(self, key: str, **tags: Any) -> None:
        for tag, value in tags.items():
            self._call(SweepRecorder.tag_trial, trial_id=key, key=tag, value=value)

    def trial_reported(self, key: str, metrics: Mapping[str, float], step: int) -> None:
        self._call(SweepRecorder.trial_reported, trial_id=key, metrics=metrics, step=step)

    def trial_ended(self, key: str, outcome: str, error: str | None = None) -> None:
        self._call(SweepRecorder.trial_ended, trial_id=key, status=outcome, error=error)

    def reconcile(self, trials: Iterable) -> None:
        """A driver killed between the record and MLflow leaves runs behind the record:
        each finished trial's run gets its outcome (a missing run is created)."""
        for t in trials:
            if t.finished:
                self._call(SweepRecorder.ensure_ended, trial_id=t.key, trial_name=t.name,
                           config=t.config, status=t.outcome, error=t.error)

    # --- the sweep ---------------------------------------------------------------
    def end_sweep(self, *, status: str, sweep_status: str, figures: Mapping[str, float],
                  best: Mapping[str, Any] | None = None, model: Any = None,
                  measure: str | None = None) -> None:
        """Close the parent run (and any child still open) with the sweep's figures, its
        best trial and model, and `sweep_status` (and the best's `measure`) as tags."""
        tags = {"sweep_status": sweep_status}
        if measure:
            tags["best_measure"] = measure
        self._call(SweepRecorder.end_sweep, best=best, model=model, status=status,
                   figures=figures, tags=tags)

    def log_report(self, folder: str, description: str) -> None:
        self._call(SweepRecorder.log_report, folder=folder, description=description)

    # --- the one place a store error is caught -------------------------------------
    def _call(self, method, **kwargs: Any):
        """`method` (a `SweepRecorder` function) on the recorder with `kwargs`."""
        inspect.signature(method).bind(self.recorder, **kwargs)  # a bug of ours: TypeError
        if self.recorder is None:
            return None
        try:
            return method(self.recorder, **kwargs)
        except Exception as e:  # noqa: BLE001 - any store error; the sweep goes on
            log.warning("MLflow %s failed for sweep %s: %s", method.__name__, self.sweep, e)
            return None
