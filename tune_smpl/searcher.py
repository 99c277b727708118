"""OptunaSearch that records what ASHA did: stopped trials PRUNED, failures FAIL.

Ray's OptunaSearch tells Optuna COMPLETE with the last (short-budget) value for a trial
that the scheduler stopped early, which makes TPE believe a 1-rung result is final. A
trial that ended without error before `max_iterations` reports was stopped (by ASHA, the
time budget or the user), so it is PRUNED, keeping its intermediate values; a diverged or
errored trial is FAIL.
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
        if error or not result or result.get("diverged"):
            state = TrialState.FAIL
        elif result.get("training_iteration", 0) < self.max_iterations:
            state = TrialState.PRUNED
        else:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        step = result.get("training_iteration") if result else None
        # Ray hands the last result to on_trial_complete only, not to on_trial_result:
        # record it so the pruned trial keeps the value it was pruned at.
        if step is not None and result.get(self.metric) is not None:
            ot_trial.report(result[self.metric], step)
        self._ot_study.tell(ot_trial, state=state)
        self._completed_trials.add(trial_id)


def study_storage(path: Path) -> optuna.storages.RDBStorage:
    """The study lives in `<sweep dir>/optuna.db`; optuna-dashboard opens it directly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
