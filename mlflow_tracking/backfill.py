"""The recorder's backfill half: make a store's runs match the sweep's record.

The record is the truth. After a tracking server that went away, a driver that was killed,
or for another, empty store, these write what the store lacks and nothing else (a second
run of them writes nothing), so `tune-smpl sync`, `--resume` and the end of a sweep can all
run them. `SweepRecorder` inherits them; they use its client and lookups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import Param, RunStatus

from mlflow_tracking import values
from mlflow_tracking.values import TRIAL_STATUSES

SPACE_FILE = "search_space.yaml"


class Backfill:
    # What SweepRecorder, the class this half is mixed into, provides (recorder.py).
    client: MlflowClient
    parent_run_id: str | None
    _runs: dict[str, str]  # trial_id -> child run id
    _have_steps: dict[str, set[int]]

    if TYPE_CHECKING:
        def _experiment(self) -> str: ...
        def _require_parent(self) -> str: ...
        def _find_parents(self) -> list: ...
        def _find_child(self, trial_id: str) -> str | None: ...
        def start_sweep(self, settings: Mapping[str, Any], space_yaml: str,
                        resume: bool = False) -> str: ...
        def open_trial(self, trial_id: str, trial_name: str, config: Mapping[str, Any],
                       status: str = "pending", resumes: int = 0,
                       tags: Mapping[str, Any] | None = None) -> str: ...
        def trial_ended(self, trial_id: str, status: str, error: str | None = None
                        ) -> None: ...

    def sync_sweep(self, settings: Mapping[str, Any], space_yaml: str,
                   resumes: int = 0) -> int:
        """The parent run as the sweep's record has it, never counted as a resume: found
        (the params it lacks logged) or created; `resumes` as the record counts them.
        Returns the writes it took (0: the parent was complete)."""
        self._experiment()
        if self.parent_run_id is None:
            found = self._find_parents()[:1]
            self.parent_run_id = found[0].info.run_id if found else None
        writes = 0
        if self.parent_run_id is None:
            self.start_sweep(settings, space_yaml)
            writes, tags = 1, {}
        else:
            run = self.client.get_run(self.parent_run_id)
            tags = run.data.tags
            new = [Param(k, v) for k, v in values.flat_params(settings).items()
                   if k not in run.data.params]
            for batch in values.chunks(new, values.MAX_PARAMS_PER_BATCH):
                self.client.log_batch(self.parent_run_id, params=batch)
                writes += 1
            if SPACE_FILE not in {f.path for f in self.client.list_artifacts(
                    self.parent_run_id)}:
                self.client.log_text(self.parent_run_id, space_yaml, SPACE_FILE)
                writes += 1
        if resumes and tags.get("resumes") != str(resumes):
            values.set_tags(self.client, self._require_parent(), {"resumes": resumes})
            writes += 1
        return writes

    def sync_trial(self, trial_id: str, trial_name: str, config: Mapping[str, Any],
                   reports: Sequence[tuple[int, Mapping[str, Any], float | None]] = (),
                   status: str | None = None, error: str | None = None,
                   tags: Mapping[str, Any] | None = None, opened: str = "pending") -> int:
        """Make the trial's run show what the sweep's record has: the run (created if
        missing, its `trial_status` then `opened`), its params, the metrics of each report
        (step, metrics, epoch seconds) at a step the run lacks, the `tags` that differ, and
        `status` (an outcome or `interrupted`; None leaves a trial that runs on as it is).
        Returns the writes it took (0: the run was complete)."""
        tags = {k: str(v) for k, v in (tags or {}).items()}
        run_id = self._runs.get(trial_id) or self._find_child(trial_id)
        if run_id is None:
            self.open_trial(trial_id, trial_name, config, opened, tags=tags)
            run_id, have, writes = self._runs[trial_id], set(), 1
            shown = (opened, RunStatus.to_string(RunStatus.RUNNING))
        else:
            self._runs[trial_id] = run_id
            run = self.client.get_run(run_id)
            have, writes = self._steps(run), 0
            shown = (run.data.tags.get("trial_status"), run.info.status)
            new = [Param(k, v) for k, v in values.config_params(config)[1].items()
                   if k not in run.data.params]
            for batch in values.chunks(new, values.MAX_PARAMS_PER_BATCH):
                self.client.log_batch(run_id, params=batch)
                writes += 1
            changed = {k: v for k, v in tags.items() if run.data.tags.get(k) != v}
            if changed:
                values.set_tags(self.client, run_id, changed)
                writes += 1
        missing = [(int(step), m, ts) for step, m, ts in reports if int(step) not in have]
        points = [p for step, m, ts in missing for p in values.to_metrics(m, step, timestamp=ts)]
        if points:
            values.log_metrics(self.client, run_id, points)
            writes += len(missing)
        self._have_steps[trial_id] = have | {step for step, _, _ in missing}
        if status is not None and shown != (status, TRIAL_STATUSES.get(status)):
            self.trial_ended(trial_id, status, error)
            writes += 1
        return writes

    def _steps(self, run) -> set[int]:
        """The steps at which `run` has a metric (a report's metrics land in one batch)."""
        return {m.step for key in run.data.metrics
                for m in self.client.get_metric_history(run.info.run_id, key)}
