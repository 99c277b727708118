"""SweepRecorder: one MLflow parent run per sweep, one child run per trial.

It runs on the Tune driver (workers need no MLflow access) and talks to the store through
its own `MlflowClient(tracking_uri)`: no fluent `mlflow.start_run` state and no global
tracking URI, so one process can record two sweeps into two stores.

What lands where (names are stable: the export command and the tests search by them):
- parent: run name = sweep name; tags `sweep_name`, `run_kind=sweep`, `git_commit`
  (also `mlflow.source.git.commit`); settings as params (nested keys joined by `.`);
  artifact `search_space.yaml`. At the end: the sweep's own figures as metrics (given by
  the sweep: best value, trials by outcome, seconds), artifact `best_config.yaml`, tags
  `best_trial_id`, `best_run_id`, `best_model_uri`, and the LoggedModel `best_model`;
  then the sweep's report as artifacts `report/` and its summary as the description
  (`mlflow.note.content`).
- child: run name = trial name; tags `mlflow.parentRunId`, `sweep_name`, `run_kind=trial`,
  `trial_id`, `role` (search | finalist; a finalist run also `finalist_of` and `seed`),
  `ray_node_id`, `trial_status` (pending | running, then the trial's outcome: completed |
  early_stopped | cut_by_budget | diverged | errored | out_of_memory | interrupted),
  `restarts`, `resumes`, `last_failure` (why it restarted), `error`; every SMPLConfig
  field as a param; artifacts `config.yaml` and `error.txt`; each report's
  numeric metrics at step=step.

Backfill (`sync_sweep` and `sync_trial`, from backfill.py, and `end_sweep`, which logs
only what the parent lacks): the sweep's record is the truth, and these make a store match
it, writing only what is missing, so they can run again (after a store that went away, a
killed driver, or into another, empty store) without adding a second point, run or model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from mlflow_tracking import values
from mlflow_tracking.backfill import SPACE_FILE, Backfill
from mlflow_tracking.model_log import log_torch_model
from mlflow_tracking.store import (
    DEFAULT_EXPERIMENT,
    driver_http_settings,
    ensure_experiment,
    experiment_artifact_location,
    open_client,
)
from mlflow_tracking.values import TRIAL_STATUSES

log = logging.getLogger(__name__)

PARENT_ID_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI (markdown)
REPORT_ARTIFACTS = "report"
SWEEP_END_STATUSES = ("FINISHED", "KILLED", "FAILED")
LIST_AFTER = 32  # trials looked up one query each before all child runs are listed
MAX_ERROR_TAG = 5000  # MLflow caps tag values at 8000 characters; the artifact keeps all


class SweepRecorder(Backfill):
    def __init__(self, tracking_uri: str, sweep_name: str, experiment_name: str | None = None,
                 artifact_location: str | None = None):
        values.quoted(sweep_name, "sweep_name")  # it goes into search filters
        self.tracking_uri = tracking_uri
        self.sweep_name = sweep_name
        self.experiment_name = experiment_name or DEFAULT_EXPERIMENT
        self.artifact_location = artifact_location or experiment_artifact_location(
            tracking_uri, self.experiment_name)
        if tracking_uri.startswith(("http://", "https://")):
            driver_http_settings()  # one attempt per call, no "View run" lines (store.py)
        self.client = open_client(tracking_uri)  # safe when two sweeps create the store
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._runs: dict[str, str] = {}  # trial_id -> child run id
        self._have_steps: dict[str, set[int]] = {}  # trial_id -> steps its run has
        # The parent whose child runs `_runs` holds all of (one listing, then each run this
        # recorder creates), so that a new trial costs no search; and the trials whose
        # create_run failed, which the server may have made all the same (searched again).
        self._listed: str | None = None
        self._unsure: set[str] = set()
        # The trials MLflow can hold child runs for, where the caller knows (expect_runs);
        # and how many trials were looked up one query each before the listing.
        self._only: frozenset[str] | None = None
        self._searched = 0

    # --- the sweep -------------------------------------------------------------
    def start_sweep(self, settings: Mapping[str, Any], space_yaml: str,
                    resume: bool = False) -> str:
        """Create the parent run, or with `resume` reopen this sweep's latest one."""
        self._experiment()
        commit = values.git_commit()
        parent = self._find_parents()[:1] if resume else []
        if parent:
            run = parent[0]
            self.parent_run_id = run.info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            resumes = int(run.data.tags.get("resumes", "0")) + 1
            tags: dict[str, Any] = {"resumes": resumes}
            if commit != run.data.tags.get("git_commit"):
                tags["git_commit_resumed"] = commit
            values.set_tags(self.client, self.parent_run_id, tags)
        else:
            tags = {"sweep_name": self.sweep_name, "run_kind": "sweep", "git_commit": commit}
            if commit != "unknown":
                tags["mlflow.source.git.commit"] = commit  # shown in the UI's run page
            run = self.client.create_run(self.experiment_id, run_name=self.sweep_name,
                                         tags=tags)
            self.parent_run_id = self._listed = run.info.run_id  # a new parent: no children
        changed = values.log_new_params(self.client, self.parent_run_id,
                                        values.flat_params(settings))
        if changed:
            log.warning("sweep %s resumed with changed settings %s; MLflow keeps the first "
                        "values", self.sweep_name, ", ".join(changed))
        self.client.log_text(self.parent_run_id, space_yaml, SPACE_FILE)
        return self.parent_run_id

    def end_sweep(self, best: Mapping[str, Any] | None, model: Any = None,
                  status: str = "FINISHED", figures: Mapping[str, float] | None = None,
                  tags: Mapping[str, Any] | None = None,
                  model_from: Callable[[], Any] | None = None) -> str | None:
        """Record the sweep's end on the parent and end its runs; return the model URI.

        `best` holds `trial_id` and `config` (the best trial's config); `figures` are the
        sweep's own numbers (best value, trials by outcome, seconds), the parent's only
        metrics; `tags` e.g. the sweep's status; `model_from` gives the model when `model`
        is None, called only if the parent has none yet. What the parent has already (the
        same figures, tags, best, a model) is not logged again.
        """
        if status not in SWEEP_END_STATUSES:
            raise ValueError(f"`status` must be one of {' | '.join(SWEEP_END_STATUSES)}, "
                             f"but got status={status!r}.")
        parent = self._require_parent()
        have = self.client.get_run(parent).data
        figures = {k: v for k, v in (figures or {}).items()
                   if not values.same_value(have.metrics.get(values.clean_name(k)), v)}
        if figures:
            values.log_metrics(self.client, parent, values.to_metrics(figures, step=0))
        tags = {k: v for k, v in (tags or {}).items() if have.tags.get(k) != str(v)}
        if tags:
            values.set_tags(self.client, parent, tags)
        if best and have.tags.get("best_trial_id") != str(best.get("trial_id") or "unknown"):
            self._log_best(parent, best)
        model_uri = have.tags.get("best_model_uri")
        if model_uri is None:
            if model is None and model_from is not None:
                model = model_from()
            if model is not None:
                model_uri = log_torch_model(self.tracking_uri, self._experiment(), parent,
                                            model)
                values.set_tags(self.client, parent, {"best_model_uri": model_uri})
        self._close(status, [parent], children_status="KILLED")
        return model_uri

    def log_report(self, folder: str, description: str) -> None:
        """The sweep's report (a local folder: HTML, PNGs) as the parent's `report/`
        artifacts, and `description` (markdown) as the parent's description in the UI."""
        parent = self._require_parent()
        self.client.log_artifacts(parent, folder, REPORT_ARTIFACTS)
        self.client.set_tag(parent, NOTE_TAG, description)

    # --- trials ----------------------------------------------------------------
    def open_trial(self, trial_id: str, trial_name: str, config: Mapping[str, Any],
                   status: str = "pending", resumes: int = 0,
                   tags: Mapping[str, Any] | None = None) -> str:
        """Create the trial's child run, or reopen it (a resumed sweep runs it on); `tags`
        are set on it as well (e.g. `role=finalist`, `finalist_of=<trial id>`)."""
        parent = self._require_parent()
        tags = {**(tags or {}), "trial_status": status}
        if resumes:
            tags["resumes"] = resumes
        run_id = self._runs.get(trial_id) or self._find_child(trial_id)
        if run_id is None:
            try:
                run = self.client.create_run(self.experiment_id, run_name=trial_name, tags={
                    PARENT_ID_TAG: parent, "sweep_name": self.sweep_name, "run_kind": "trial",
                    "trial_id": trial_id, **tags})
            except Exception:  # the server may have made it without answering: look again
                self._unsure.add(trial_id)
                raise
            self._unsure.discard(trial_id)
            run_id = run.info.run_id
        else:
            run = self.client.get_run(run_id)
            self.client.update_run(run_id, status="RUNNING")
            values.set_tags(self.client, run_id, tags)
            # A trial continues from its checkpoint, which can be older than its last logged
            # report (a driver killed between the two): those steps are not logged twice.
            self._have_steps[trial_id] = self._steps(run)
        self._runs[trial_id] = run_id
        cfg, params, problem = values.config_params(config)
        changed = values.log_new_params(self.client, run_id, params, run.data.params)
        if changed:
            log.warning("trial %s reopened with changed config %s; MLflow keeps the first "
                        "values", trial_id, ", ".join(changed))
        if cfg is None:  # the trial will fail on it; its run should say why
            values.set_tags(self.client, run_id, {"config_error": problem})
        else:
            header = f"trial {trial_id} of sweep {self.sweep_name}"
            self.client.log_text(run_id, cfg.to_yaml(header=header), "config.yaml")
        return run_id

    def trial_reported(self, trial_id: str, metrics: Mapping[str, Any], step: int,
                       timestamp: float | None = None) -> None:
        """Log every numeric entry of one report at `step` (non-numeric ones are skipped),
        stamped `timestamp` (the report's time, epoch seconds: a batch sent twice is one
        point). A step the run has already is skipped: a reopened run's, and a report
        replayed by a trial that Ray restarted from an older checkpoint (its process or
        node died after a later report), which MLflow would hold as a second point."""
        have = self._have_steps.setdefault(trial_id, set())
        if step in have:
            return
        values.log_metrics(self.client, self._run_of(trial_id),
                           values.to_metrics(metrics, step, timestamp=timestamp))
        have.add(step)

    def tag_trial(self, trial_id: str, key: str, value: Any) -> None:
        self.client.set_tag(self._run_of(trial_id), key, str(value))

    def trial_ended(self, trial_id: str, status: str, error: str | None = None) -> None:
        if status not in TRIAL_STATUSES:
            raise ValueError(f"`status` must be one of {' | '.join(TRIAL_STATUSES)}, but got "
                             f"status={status!r}.")
        run_id = self._run_of(trial_id)
        tags = {"trial_status": status}
        if error:
            cut = error if len(error) <= MAX_ERROR_TAG else error[-MAX_ERROR_TAG:]
            tags["error"] = cut  # the tail: a traceback's last lines name the failure
            self.client.log_text(run_id, error, "error.txt")
        values.set_tags(self.client, run_id, tags)
        self.client.set_terminated(run_id, TRIAL_STATUSES[status])

    # --- lookups -----------------------------------------------------------------
    def _experiment(self) -> str:
        if self.experiment_id is None:
            self.experiment_id = ensure_experiment(self.tracking_uri, self.experiment_name,
                                                   self.artifact_location)
        return self.experiment_id

    def _require_parent(self) -> str:
        if self.parent_run_id is None:
            raise ValueError(f"sweep {self.sweep_name!r} has no parent run: call "
                             f"start_sweep() first.")
        return self.parent_run_id

    def _find_parents(self) -> list:
        name = values.quoted(self.sweep_name, "sweep_name")
        return values.search_all(self.client, self._experiment(),
                            f"tags.sweep_name = {name} and tags.run_kind = 'sweep'")

    def expect_runs(self, trial_ids: Iterable[str]) -> None:
        """MLflow holds child runs of this sweep for these trials only (the caller knows:
        the last command ended with MLflow complete): a trial not among them, e.g. one
        this command creates, is known to have none, with no query."""
        self._only = frozenset(trial_ids)

    def _find_child(self, trial_id: str) -> str | None:
        """The trial's child run of the parent. The first LIST_AFTER trials looked up get
        a query each (about 10 ms on SQLite at 1,000 runs); after them, one listing of all
        child runs (1.9 s of CPU at 1,000 runs, on the writer's thread beside the trials'
        start) serves every lookup, since a query per trial costs a search over every
        child run, quadratic in a sweep's size. A trial whose create_run failed, which the
        server may have made all the same, is searched again each time."""
        parent = self._require_parent()
        if trial_id in self._unsure:
            return self._search_child(parent, trial_id)
        if self._listed == parent or (self._only is not None and trial_id not in self._only):
            return self._runs.get(trial_id)
        if self._searched < LIST_AFTER:
            self._searched += 1
            return self._search_child(parent, trial_id)
        for run in values.search_all(self.client, self._experiment(),
                                     f"tags.`{PARENT_ID_TAG}` = '{parent}'"):
            if "trial_id" in run.data.tags:  # newest first: the newest run of a trial
                self._runs.setdefault(run.data.tags["trial_id"], run.info.run_id)
        self._listed = parent
        return self._runs.get(trial_id)

    def _search_child(self, parent: str, trial_id: str) -> str | None:
        runs = values.search_all(self.client, self._experiment(),
                                 f"tags.`{PARENT_ID_TAG}` = '{parent}' and "
                                 f"tags.trial_id = {values.quoted(trial_id, 'trial_id')}")
        return runs[0].info.run_id if runs else None

    def _run_of(self, trial_id: str) -> str:
        run_id = self._runs.get(trial_id) or self._find_child(trial_id)
        if run_id is None:
            raise ValueError(f"trial {trial_id!r} of sweep {self.sweep_name!r} has no MLflow "
                             f"run: call open_trial() first.")
        self._runs[trial_id] = run_id
        return run_id

    def _log_best(self, parent: str, best: Mapping[str, Any]) -> None:
        """best_config.yaml, then the tags (a parent tagged with its best has its file)."""
        trial_id = str(best.get("trial_id") or "unknown")
        tags = {"best_trial_id": trial_id}
        run_id = self._runs.get(trial_id) or (
            self._find_child(trial_id) if trial_id != "unknown" else None)
        if run_id:
            tags["best_run_id"] = run_id
        cfg, _, problem = values.smpl_config(best.get("config") or {})
        if cfg is None:
            log.warning("best config of sweep %s not recorded: %s", self.sweep_name, problem)
        else:
            header = f"best trial {trial_id} of sweep {self.sweep_name}"
            self.client.log_text(parent, cfg.to_yaml(header=header), "best_config.yaml")
        values.set_tags(self.client, parent, tags)

    def _close(self, status: str, parents: list[str], children_status: str,
               close_parent: bool = True) -> int:
        closed = 0
        for parent in parents:
            running = values.search_all(self.client, self._experiment(),
                                   f"tags.`{PARENT_ID_TAG}` = '{parent}' and "
                                   f"attributes.status = 'RUNNING'")
            for run in running:
                values.set_tags(self.client, run.info.run_id, {"trial_status": "interrupted"})
                self.client.set_terminated(run.info.run_id, children_status)
                closed += 1
            if close_parent and (self.client.get_run(parent).info.status ==
                                 RunStatus.to_string(RunStatus.RUNNING)):
                self.client.set_terminated(parent, status)
                closed += 1
        return closed


class TrialRuns:
    """The run ids of a store's trial runs: the client and the experiment looked up once
    (MLflow's import and its store's start take 2-4 s on a 2-core CPU, which `export`
    spends while it reads the record), then one query per trial."""

    def __init__(self, tracking_uri: str, experiment_name: str | None = None):
        self.client = MlflowClient(tracking_uri)
        exp = self.client.get_experiment_by_name(experiment_name or DEFAULT_EXPERIMENT)
        self.experiment_id = None if exp is None else exp.experiment_id

    def run_id(self, sweep_name: str, trial_id: str) -> str | None:
        """The run id of the trial's child run, or None when the store has none."""
        if self.experiment_id is None:
            return None
        runs = values.search_all(
            self.client, self.experiment_id,
            f"tags.sweep_name = {values.quoted(sweep_name, 'sweep_name')} and "
            f"tags.trial_id = {values.quoted(trial_id, 'trial_id')}")
        return runs[0].info.run_id if runs else None


def find_trial_run(tracking_uri: str, sweep_name: str, trial_id: str,
                   experiment_name: str | None = None) -> str | None:
    """The run id of a trial's child run, or None when the store has none."""
    return TrialRuns(tracking_uri, experiment_name).run_id(sweep_name, trial_id)
