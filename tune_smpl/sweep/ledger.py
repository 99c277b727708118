"""The driver's bookkeeper of a running sweep: it owns each trial's outcome.

Ray tells it what happens (through `searcher.SweepSearcher`, `searcher.FinalistSearcher` and
`callbacks.LedgerCallback`); it writes the sweep's record first, then derives the other
views from it: the Optuna study (ask/tell, intermediate values; search trials only) and
MLflow (one child run per search trial and per finalist run). A trial's outcome is
decided once, in `_end`; nothing else ends a trial.

MLflow is reached through `tracking.Tracking`, which never stops or holds up a sweep: its
writes are queued to one writer thread, and what MLflow misses is filled in from the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from trainables import RESTORE_FIELD
from tune_smpl.sweep.outcome import METRIC, OPTUNA_STATE, Outcome, decide, score
from tune_smpl.sweep.prune import Pruner
from tune_smpl.sweep.record import SweepRecord, TrialRecord
from tune_smpl.sweep.record_writer import describe, storage_error
from tune_smpl.sweep.restarts import RestartNotices, error_line, last_failure
from tune_smpl.sweep.stop import STOP
from tune_smpl.sweep.study import PRIOR, distributions_json, proposer, study_file
from tune_smpl.sweep.study_mirror import StudyMirror
from tune_smpl.sweep.tracking import Tracking, report_metrics

KEY_FIELD = "trial_key"  # in a Tune trial's config: its record's folder (trial_0003, ...)
STORAGE_RESUMES = 3  # resumes after which a storage error ends a trial as errored after all
# What the study's database raises when its disk is full or read-only.
STUDY_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError)


class Ledger:
    def __init__(self, record: SweepRecord, trials: list[TrialRecord], study: optuna.Study,
                 define_by_run, base: dict, *, sampler: str, n_startup: int, steps: int,
                 deadline: float | None, tracking: Tracking | None = None,
                 restore: dict[str, str] | None = None,
                 finalists: list[TrialRecord] | None = None, n_prior: int = 0,
                 mirror: StudyMirror | None = None):
        self.record = record
        self.trials = {t.key: t for t in trials}  # the search trials
        self.finalists = {t.key: t for t in finalists or []}  # the finalist runs
        self.queue: list[str] = []  # finalist runs the running Tuner has still to start
        self.study = study
        # The study's storage when it is written through to optuna.db by a thread: a write
        # the file refused stops the sweep as one of the study's own did (_study_failed).
        self.mirror = mirror
        self.pruner = Pruner(record.storage, record.name)
        # A warm-started study holds the prior's trials first: study trial n_prior + n is
        # the sweep's trial n (`prior`); the ledger never sees a prior trial.
        self.n_prior = n_prior
        self.define_by_run = define_by_run
        self.base = base  # the constant fields of every trial's config
        self.sampler, self.n_startup = sampler, n_startup
        self.steps = steps  # a trial that reached it completed
        self.deadline = deadline  # time.time() after which trials are cut by the budget
        self.tracking = tracking or Tracking(None, record.name)
        self.restore = dict(restore or {})  # key -> checkpoint URI (a resumed trial)
        self.by_ray: dict[str, str] = {}  # Ray trial id -> key
        self.live: dict[str, optuna.Trial] = {}  # key -> the study's trial, while it runs
        self.nodes: dict[str, str] = {}  # key -> the Ray node it last reported from
        # Restarts whose line waits for its cause (restarts.py): the record is saved when it is.
        self.notices = RestartNotices(lambda key: self.record.save_trial(self._by_key(key)))
        # Trials Ray gave up on because of the storage, left unfinished (see `ended`).
        self.storage_left: list[str] = []
        self.storage_error: str | None = None
        self.study_error: str | None = None  # the study's database failed (_study_failed)
        self.ray_storage_error: str | None = None  # Ray's own files on it failed (run._stage)

    def __getstate__(self):  # Ray pickles the searcher and callbacks into its own files
        return {"sweep": self.record.name}

    def __setstate__(self, state):  # an unpickled copy is never used: the record is the state
        self.__dict__.update(state)

    # --- Ray's events ------------------------------------------------------------
    def budget_spent(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def new_trial(self, ray_id: str) -> dict | None:
        """Ask the study for the next trial (an unfinished one of a resumed sweep first, as
        enqueued, then the prior's best, as enqueued) and record it before Ray runs it;
        return its Tune config (None once the study's database has failed)."""
        if self._study_broken():
            return None
        try:
            return self._new_trial(ray_id)
        except STUDY_ERRORS as e:
            self._study_failed(e)
            return None

    def _new_trial(self, ray_id: str) -> dict:
        who = proposer(self.study, self.sampler, self.n_startup)
        trial = self.study.ask()
        if trial.user_attrs.get("proposed_by") == PRIOR:
            who = PRIOR
        self.define_by_run(trial)
        number = trial.number - self.n_prior
        key = f"{number:04d}"
        t = self.trials.get(key)
        if t is None:
            t = TrialRecord(key=key, number=number, params=dict(trial.params),
                            distributions=distributions_json(trial),
                            config={**self.base, **trial.params}, proposed_by=who)
            self.trials[key] = t
        else:  # an unfinished trial of a resumed sweep, asked again
            t.interrupted, t.resumes = False, t.resumes + 1
            # Its kept reports go back into the study, as a rebuild from the record has
            # them: a trial cut before it reports again ends PRUNED with its last value.
            for row in t.reports:
                _intermediate(trial, row)
        trial.set_user_attr("key", key)
        trial.set_user_attr("proposed_by", t.proposed_by)
        self.live[key], self.by_ray[ray_id] = trial, key
        self.record.save_trial(t)
        self.tracking.open_trial(t)
        return self._tune_config(t, t.params)

    def add_finalists(self, runs: list[TrialRecord]) -> None:
        """The finalist stage's planned runs, recorded (and opened in MLflow) before any
        runs, so that the record says what the stage will do."""
        for t in runs:
            self.finalists[t.key] = t
            self.record.save_trial(t)
            self.tracking.open_trial(t)

    def queue_finalists(self) -> int:
        """Queue every unfinished finalist run for the next Tuner; how many."""
        self.queue = [k for k, t in self.finalists.items() if not t.finished]
        return len(self.queue)

    def new_finalist(self, ray_id: str) -> dict | None:
        """The next finalist run of `queue` (None when there is none); its Tune config."""
        if not self.queue:
            return None
        t = self.finalists[self.queue.pop(0)]
        if t.interrupted:  # an unfinished run of a resumed sweep
            t.interrupted, t.resumes = False, t.resumes + 1
        self.by_ray[ray_id] = t.key
        self.record.save_trial(t)
        self.tracking.open_trial(t)
        return self._tune_config(t, {**t.params, "seed": t.config["seed"]})

    def _tune_config(self, t: TrialRecord, values: dict) -> dict:
        config = {**values, KEY_FIELD: t.name}
        if t.key in self.restore:
            config[RESTORE_FIELD] = self.restore[t.key]
        return config

    def started(self, ray_id: str) -> None:
        t = self._of(ray_id)
        if t is None:
            return
        t.started = True
        self.record.save_trial(t)
        self.tracking.tag_trial(t.key, trial_status="running")

    def reported(self, ray_id: str, result: dict) -> None:
        t = self._of(ray_id)
        if t is None or t.finished or result.get("oom"):  # oom: a failure, not a measurement
            return
        row = t.add_report(result)
        self.record.save_trial(t)
        self.pruner.reported(t, row)  # the checkpoints this report superseded (prune.py)
        node = row.get("ray_node_id")
        if node and self.nodes.get(t.key) != node:  # where it runs, for a cluster's user
            self.nodes[t.key] = node
            self.tracking.tag_trial(t.key, ray_node_id=node)
        self.notices.reported(t.key, node)
        trial = self.live.get(t.key)
        if trial is not None:
            self._in_study(_intermediate, trial, row)
        # Stamped with the report's time: a write the tracking server took but never
        # answered, sent again, is one point.
        self.tracking.trial_reported(t.key, report_metrics(row), int(row.get("step", 0)),
                                     row.get("reported_at"))

    def restarted(self, ray_id: str, error: str, exc: BaseException | None = None,
                  checkpoint: str | None = None) -> None:
        """Ray restarts the trial from `checkpoint` (its folder name; None: from step 0):
        counted and logged at once, said in one line once its cause is known."""
        t = self._of(ray_id)
        if t is None:
            return
        t.restarts += 1
        rows = [r for r in t.reports if r.get("checkpoint_dir_name")]
        if checkpoint is None and t.key in self.restore:  # no new one yet: its resume point
            checkpoint = next((r["checkpoint_dir_name"] for r in rows
                               if r["checkpoint_dir_name"].startswith("restart_")), None)
        row = next((r for r in rows if r["checkpoint_dir_name"] == checkpoint),
                   rows[-1] if rows and checkpoint else {})
        entry = {"at": time.time(), "step": int(row.get("step", 0)), "cause": None}
        t.restart_log.append(entry)
        self.record.save_trial(t)
        self.tracking.tag_trial(t.key, restarts=t.restarts, last_failure=error[-1000:])
        self.notices.add(t.key, entry, exc, error, self.nodes.get(t.key)
                         or t.last.get("ray_node_id"))

    def ended(self, ray_id: str, last: dict | None, errored: bool = False,
              error: str | None = None) -> None:
        t = self._of(ray_id)
        if t is None or t.finished:
            return
        if last and last.get("error") and not error:
            error = last["error"]
        if errored and t.resumes < STORAGE_RESUMES and (
                storage_error(last_failure(error or "")) or self.record.failing):
            # Not the trial's fault: its checkpoint could not be written or read, or the
            # record's storage fails right now. Not `errored` (final) but unfinished, so
            # that `--resume` runs it on from the record's last checkpoint (a few times:
            # a checkpoint that can never be read must not keep a sweep open for ever).
            self.storage_left.append(t.key)
            self.storage_error = error_line(last_failure(error or ""))
            self._interrupt(t)
            return
        self._end(t, decide(last, steps=self.steps, errored=errored,
                              budget_spent=self.budget_spent()), error)

    # --- the end of a command ------------------------------------------------------
    def settle(self, interrupted: bool, finalists: bool = False) -> list[TrialRecord]:
        """Every search trial (with `finalists`: every finalist run) this command knows that
        has no outcome yet: interrupted (Ctrl-C, a second one, or Ray ending without
        finishing them) until `--resume`; cut by the budget when the budget ended the sweep.
        Returns the interrupted ones."""
        self.notices.poll(final=True)  # every restart said, with what is known
        out = []
        for t in (self.finalists if finalists else self.trials).values():
            if t.finished:
                continue
            if not interrupted and self.budget_spent():
                self._end(t, Outcome.CUT_BY_BUDGET, None)
                continue
            self._interrupt(t)
            out.append(t)
        return out

    def _interrupt(self, t: TrialRecord) -> None:
        """Unfinished until `--resume` runs it on: marked so in every view."""
        t.interrupted = True
        self.record.save_trial(t)
        trial = self.live.pop(t.key, None)
        if trial is not None:  # RUNNING in the study, marked until --resume clears it
            self._in_study(trial.set_user_attr, "interrupted", True)
        self.tracking.trial_ended(t.key, Outcome.INTERRUPTED)

    # --- the one place a trial ends --------------------------------------------------
    def _end(self, t: TrialRecord, outcome: Outcome, error: str | None) -> None:
        t.outcome, t.error, t.ended_at, t.interrupted = outcome, error, time.time(), False
        self.record.save_trial(t)  # the record first: every view follows from it
        trial = self.live.pop(t.key, None)
        if trial is not None:
            self._in_study(self._tell, trial, t, outcome, error)
        self.tracking.trial_ended(t.key, outcome, error)

    def _tell(self, trial: optuna.Trial, t: TrialRecord, outcome: Outcome,
              error: str | None) -> None:
        state = TrialState[OPTUNA_STATE[outcome]]
        trial.set_user_attr("outcome", outcome)
        if error:
            trial.set_user_attr("error", error[-1000:])
        value = score(t.reports)[0] if state == TrialState.COMPLETE else None
        self.study.tell(trial, value, state=state)

    # --- the study's database -----------------------------------------------------------
    def _in_study(self, write, *args) -> None:
        """A write of the study, unless its database has failed; a failure stops the sweep."""
        if self._study_broken():
            return
        try:
            write(*args)
        except STUDY_ERRORS as e:
            self._study_failed(e)

    def _study_broken(self) -> bool:
        """The study's database has failed (here, or in its mirror's thread)."""
        if self.study_error is None and self.mirror is not None and self.mirror.error:
            self._study_failed(self.mirror.error)
        return self.study_error is not None

    def close_study(self, give_up: Callable[[], bool] = lambda: False) -> None:
        """Wait until optuna.db has every write of the study (unless `give_up()`: a second
        Ctrl-C leaves the file behind; it is a view, which `--resume` rebuilds); a write it
        refused meanwhile counts as the study's failure."""
        if self.mirror is None:
            return
        while not self.mirror.close(0.5) and not give_up():
            pass
        self._study_broken()

    def _study_failed(self, e: BaseException) -> None:
        """The study's SQLite file did not take a write: its disk is full or read-only (on
        a local storage it lives in the sweep folder). The study is a view of the record,
        rebuilt from it by `--resume`, but this one cannot go on (its cache and its file
        may now differ): the sweep stops as interrupted, as for a storage that failed."""
        while e.__cause__ is not None:  # Optuna's wrapper of the database's own error
            e = e.__cause__
        self.study_error = (f"its study {study_file(self.record.storage, self.record.name)}"
                            f": {describe(e)}")
        STOP.request(f"storage {self.record.uri}: {self.study_error}")

    def _of(self, ray_id: str) -> TrialRecord | None:
        key = self.by_ray.get(ray_id)
        return (self.trials.get(key) or self.finalists.get(key)) if key else None

    def _by_key(self, key: str) -> TrialRecord:
        return self.trials.get(key) or self.finalists[key]


def _intermediate(trial: optuna.Trial, row: dict) -> None:
    """A report's metric as the study trial's intermediate value at its step."""
    if isinstance(row.get(METRIC), (int, float)):
        trial.report(float(row[METRIC]), int(row.get("step", 0)))
