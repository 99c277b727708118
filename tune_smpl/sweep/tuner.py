"""The `ray.tune.Tuner`s of one command's run of a sweep: the search (trainable, searcher,
ASHA, budget) and the finalist stage (the same trainable and budget, no ASHA).

A resumed sweep is a new Tuner over the trials its record has not finished (re-asked
first, each from its checkpoint) and the ones it has not started; Ray's own experiment
snapshot is not read back, so a snapshot that lags the trial folders cannot mislead it.
"""

from __future__ import annotations

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from smpl_core.config import SMPLConfig
from trainables import TIME_ATTR, evaluation_at, with_resources
from tune_smpl.sweep.callbacks import BudgetStopper, LedgerCallback, ProgressLine
from tune_smpl.sweep.ledger import KEY_FIELD, Ledger
from tune_smpl.sweep.outcome import METRIC, MODE
from tune_smpl.sweep.searcher import FinalistSearcher, SweepSearcher
from tune_smpl.sweep.settings import SweepSettings


def _trial_name(trial) -> str:
    return trial.config[KEY_FIELD]


def build_tuner(base: SMPLConfig, space: dict, settings: SweepSettings, ledger: Ledger,
                num_samples: int) -> tune.Tuner:
    """The search: `num_samples` trials asked of the study, ASHA stopping weak ones."""
    max_t = evaluation_at(base.steps, base.eval_every)  # reports of a full trial
    scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=max_t,
                              grace_period=min(settings.grace_period, max_t),
                              reduction_factor=settings.reduction_factor)
    # Searched fields come from the searcher; everything else is a constant of the config.
    constants = {k: v for k, v in base.to_dict().items() if k not in space}
    return _tuner(settings, ledger, constants, SweepSearcher(ledger), num_samples, scheduler,
                  ProgressLine(ledger, sorted(space)))


def build_finalist_tuner(base: SMPLConfig, space: dict, settings: SweepSettings,
                         ledger: Ledger, num_runs: int) -> tune.Tuner:
    """The finalist stage: the ledger's queued runs, each its full `steps` (no ASHA: Ray's
    FIFO scheduler), the same trainable, resources, failure handling and budget."""
    constants = {k: v for k, v in base.to_dict().items() if k not in space and k != "seed"}
    return _tuner(settings, ledger, constants, FinalistSearcher(ledger), num_runs, None,
                  ProgressLine(ledger, [], finalists=True))


def _tuner(settings: SweepSettings, ledger: Ledger, constants: dict, searcher, num_samples: int,
           scheduler, progress: ProgressLine) -> tune.Tuner:
    storage = ledger.record.storage
    trainable = with_resources(settings.cpus_per_trial, settings.gpus_per_trial,
                               settings.memory_per_trial_gb)
    return tune.Tuner(
        trainable,
        param_space=constants,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
            num_samples=num_samples,
            # A freed slot's process runs the next trial: no new Ray worker to start and no
            # torch to import again (seconds per trial on a small CPU), and the dataset
            # stays loaded (smpl_core.data caches it per process).
            reuse_actors=True,
            max_concurrent_trials=settings.max_concurrent or None,
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=settings.name, storage_path=storage.base,
            storage_filesystem=None if storage.local else storage.fs,
            verbose=0, stop=BudgetStopper(ledger.deadline),
            callbacks=[LedgerCallback(ledger), progress],
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # Ray keeps every checkpoint: the ledger deletes the superseded ones (prune.py;
            # Ray's num_to_keep would save its whole experiment state at every report).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None)))
