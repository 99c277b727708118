"""OptunaSearch that records what ASHA did: stopped trials PRUNED, failures FAIL.

Ray's OptunaSearch tells Optuna COMPLETE with the last (short-budget) value for a trial
that the scheduler stopped early, which makes TPE believe a 1-rung result is final. A
trial that ended without error before `max_iterations` reports was stopped (by ASHA, the
time budget or the user), so it is PRUNED, keeping its intermediate values; a diverged,
out-of-memory or errored trial is FAIL.

After a driver was killed (SIGKILL, a lost head node), Ray restores this searcher from its
last snapshot, which can be a few seconds older than the study: a trial finished since is
not told twice, and a trial asked for since (Ray will never run it) is told FAIL.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class SweepOptunaSearch(OptunaSearch):
    def __init__(self, *args, max_iterations: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_iterations = max_iterations

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        if ot_trial.number in self._finished_numbers():  # told before a killed driver saved
            self._completed_trials.add(trial_id)
            return None
        failure = _failure(result, error)
        if failure:
            ot_trial.set_user_attr("failure", failure)
            state = TrialState.FAIL
        elif result.get("training_iteration", 0) < self.max_iterations:
            state = TrialState.PRUNED
        else:
            return super().on_trial_complete(trial_id, result, error)
        step = result.get("training_iteration") if result else None
        # Ray hands the last result to on_trial_complete only, not to on_trial_result:
        # record it so the pruned trial keeps the value it was pruned at (a failed trial's
        # last value is a placeholder).
        if state == TrialState.PRUNED and step is not None and result.get(self.metric) is not None:
            ot_trial.report(result[self.metric], step)
        self._ot_study.tell(ot_trial, state=state)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in known:  # asked for after the snapshot: Ray has no such trial
                self._ot_study._storage.set_trial_user_attr(
                    t._trial_id, "failure", "interrupted: its driver stopped before saving it")
                self._ot_study.tell(t.number, state=TrialState.FAIL)

    def _finished_numbers(self) -> set[int]:
        return {t.number for t in self._ot_study.get_trials(deepcopy=False)
                if t.state.is_finished()}


def _failure(result: dict | None, error: bool) -> str | None:
    if error or not result:
        return "errored"
    if result.get("oom"):
        return "out of memory"
    return "diverged" if result.get("diverged") else None


def study_storage(path: Path) -> optuna.storages.RDBStorage:
    """The study lives in `<sweep dir>/optuna.db`; optuna-dashboard opens it directly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
