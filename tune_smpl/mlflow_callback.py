"""The Ray side of MLflow tracking: a driver callback that feeds `SweepRecorder`.

It runs on the driver, so workers on a cluster need no access to the tracking store.
It pickles without its MLflow client (Ray stores callbacks with the sweep), so a resumed
sweep reopens the same parent and child runs.
"""

from __future__ import annotations

import functools
import logging

from ray.tune import Callback

from mlflow_tracking import SweepRecorder
from smpl_core.config import SMPLConfig
from tune_smpl.progress import trial_outcome

# Ray adds bookkeeping fields to every result; MLflow gets the run's own metrics only.
_RAY_FIELDS = {"training_iteration", "time_this_iter_s", "time_total_s", "timestamp",
               "iterations_since_restore", "time_since_restore", "pid", "done", "step",
               "diverged", "started_at", "reported_at"}


log = logging.getLogger(__name__)


def _never_fails(hook):
    """A tracking store that hiccups (a restarted server, a locked SQLite file) must not
    fail the trial Ray is reporting on: log it and carry on."""

    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        try:
            return hook(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any store error; the sweep goes on
            log.warning("MLflow %s failed for sweep %s: %s", hook.__name__, self.sweep_name, e)
            self._recorder = None  # reconnect on the next hook
    return wrapper


class MlflowSweepCallback(Callback):
    def __init__(self, tracking_uri: str, sweep_name: str, max_iterations: int,
                 settings: dict, space_yaml: str, searched: list[str]):
        self.tracking_uri = tracking_uri
        self.sweep_name = sweep_name
        self.max_iterations = max_iterations
        self.settings = settings
        self.space_yaml = space_yaml
        self.searched = searched
        self._recorder: SweepRecorder | None = None
        self._node_tagged: set[str] = set()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_recorder"], state["_node_tagged"] = None, set()
        return state

    @property
    def recorder(self) -> SweepRecorder:
        if self._recorder is None:
            self._recorder = SweepRecorder(self.tracking_uri, self.sweep_name)
            # Reopens the parent run when it exists (a resumed sweep), else creates it.
            self._recorder.start_sweep(self.settings, self.space_yaml, resume=True)
        return self._recorder

    def setup(self, **info):
        self.recorder  # noqa: B018 - open the parent run before the first trial

    def _start(self, trial) -> None:
        self.recorder.trial_started(trial.trial_id, str(trial), _config(trial.config), None)

    @_never_fails
    def on_trial_start(self, iteration, trials, trial, **info):
        self._start(trial)

    @_never_fails
    def on_trial_recover(self, iteration, trials, trial, **info):
        # Ray restarts it from its checkpoint; on_trial_start then reopens its child run
        # (and counts the restart). Here: why it had to.
        self.recorder.tag_trial(trial.trial_id, "last_failure", _error_text(trial)[-1000:])

    @_never_fails
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("oom"):  # a failure, not a measurement: on_trial_complete records it
            return
        node = result.get("ray_node_id")
        if node and trial.trial_id not in self._node_tagged:
            self.recorder.tag_trial(trial.trial_id, "ray_node_id", str(node))
            self._node_tagged.add(trial.trial_id)
        metrics = {k: v for k, v in result.items() if k not in _RAY_FIELDS
                   and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.recorder.trial_reported(trial.trial_id, metrics, int(result.get("step", 0)))

    @_never_fails
    def on_trial_complete(self, iteration, trials, trial, **info):
        outcome = trial_outcome(trial, self.max_iterations, ended=True)
        error = (trial.last_result or {}).get("error") if outcome == "errored" else None
        self.recorder.trial_ended(trial.trial_id, outcome, error)

    @_never_fails
    def on_trial_error(self, iteration, trials, trial, **info):
        self.recorder.trial_ended(trial.trial_id, "errored", _error_text(trial))

    def end_sweep(self, best: dict | None, model) -> None:
        self.recorder.end_sweep(best, model)

    def close_open(self) -> None:
        self.recorder.close_open("KILLED")


def _config(config: dict) -> dict:
    names = set(SMPLConfig.field_names())
    return {k: v for k, v in config.items() if k in names}


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        if path:
            with open(path) as fh:
                return fh.read()
    except OSError:
        pass
    return str(getattr(trial, "error_msg", "") or "unknown error")
