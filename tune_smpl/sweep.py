"""Build the `ray.tune.Tuner` of a sweep: trainable, OptunaSearch, ASHA, storage, callbacks."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smpl_core.config import SMPLConfig

METRIC, MODE = "val_accuracy", "max"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class SweepSettings:
    name: str
    storage_path: str  # absolute local path or a pyarrow.fs URI
    space: str = "smpl"  # preset name or YAML file
    num_samples: int = 8
    max_concurrent: int = 0  # 0: as many as the resources allow
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    memory_per_trial_gb: float | None = None  # Ray `memory` resource; a cap on CPU trials
    time_budget_s: float | None = None
    grace_period: int = 2
    reduction_factor: int = 2
    seed: int = 0
    max_failures: int = 2
    num_cpus: int | None = None  # offered by a Ray started here (--num-cpus); a resume reuses
    num_gpus: int | None = None  # them, so a sweep on logical GPUs resumes on logical GPUs
    fixed: list[str] = field(default_factory=list)  # searched fields fixed by --set

    def as_params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def local_dir(self) -> Path | None:
        return None if "://" in self.storage_path else Path(self.storage_path) / self.name

    def validate(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"`--name` must be letters, digits, '.', '_' or '-' (up to 100), "
                             f"but got --name={self.name!r}.")
        for flag, value, low in (("--num-samples", self.num_samples, 1),
                                 ("--grace-period", self.grace_period, 1),
                                 ("--reduction-factor", self.reduction_factor, 2),
                                 ("--max-concurrent", self.max_concurrent, 0),
                                 ("--max-failures", self.max_failures, 0)):
            if value < low:
                raise ValueError(f"`{flag}` must be >= {low}, but got {flag}={value}.")
        if self.memory_per_trial_gb is not None and self.memory_per_trial_gb <= 0:
            raise ValueError(f"`--memory-per-trial` must be > 0 GB, but got "
                             f"--memory-per-trial={self.memory_per_trial_gb:g}.")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"`--time-budget` must be > 0 seconds, but got "
                             f"--time-budget={self.time_budget_s:g}.")


def max_iterations(cfg: SMPLConfig) -> int:
    """Reports per full trial: one per `eval_every` steps, plus one at the last step."""
    return math.ceil(cfg.steps / cfg.eval_every)


def study_path(settings: SweepSettings) -> Path:
    """`<storage>/<name>/optuna.db`; for a remote storage URI the study stays on this
    machine under ./runs/<name>/ (SQLite needs a local file)."""
    base = settings.local_dir or Path("runs").resolve() / settings.name
    return base / "optuna.db"


RECORD = "sweep.json"
SPACE_FILE = "space.yaml"


def save_record(settings: SweepSettings, base: SMPLConfig, space_yaml: str,
                tracking_uri: str) -> None:
    """What `--resume` needs to rebuild the same sweep, whatever flags it is given."""
    folder = study_path(settings).parent
    folder.mkdir(parents=True, exist_ok=True)
    try:  # "x": of two commands that start the same new name at once, one gets it
        with open(folder / RECORD, "x") as fh:
            fh.write(json.dumps({"settings": asdict(settings), "base": base.to_dict(),
                                 "tracking_uri": tracking_uri}, indent=2))
    except FileExistsError:
        raise ValueError(f"`--name` must be new (or pass --resume), but got "
                         f"--name={settings.name!r}, which is in use ({folder / RECORD} "
                         f"exists; remove {folder} if that sweep never ran).") from None
    (folder / SPACE_FILE).write_text(space_yaml)


def load_record(storage_path: str, name: str) -> tuple[SweepSettings, SMPLConfig, Path, str]:
    """(settings, base config, space file, tracking URI) of a sweep this tool started."""
    folder = study_path(SweepSettings(name=name, storage_path=storage_path)).parent
    if not (folder / RECORD).is_file():
        raise ValueError(f"`--name` must be a sweep started by tune-smpl to resume, but "
                         f"{folder / RECORD} is missing for --name={name!r}.")
    rec = json.loads((folder / RECORD).read_text())
    return (SweepSettings(**rec["settings"]), SMPLConfig.from_dict(rec["base"]),
            folder / SPACE_FILE, rec["tracking_uri"])


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def build_tuner(base: SMPLConfig, space: dict, settings: SweepSettings, callbacks: list,
                restore: bool = False):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from search_spaces import make_define_by_run
    from trainables import with_resources
    from tune_smpl.searcher import SweepOptunaSearch, study_storage

    max_t = max_iterations(base)
    trainable = with_resources(settings.cpus_per_trial, settings.gpus_per_trial,
                               settings.memory_per_trial_gb)
    searcher = SweepOptunaSearch(
        space=make_define_by_run(space), metric=METRIC, mode=MODE, seed=settings.seed,
        storage=study_storage(study_path(settings)), study_name=settings.name,
        max_iterations=max_t)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                              grace_period=min(settings.grace_period, max_t),
                              reduction_factor=settings.reduction_factor)
    # Searched fields come from Optuna; everything else is a constant of the trial config.
    param_space = {k: v for k, v in base.to_dict().items() if k not in space}
    if restore:
        return tune.Tuner.restore(f"{settings.storage_path.rstrip('/')}/{settings.name}",
                                  trainable=trainable, param_space=param_space,
                                  resume_unfinished=True, resume_errored=False)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
            num_samples=settings.num_samples, max_concurrent_trials=settings.max_concurrent or None,
            time_budget_s=settings.time_budget_s,
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=settings.name, storage_path=settings.storage_path, verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # Keeps the best report's checkpoint; Ray always keeps the latest as well, so a
            # trial holds at most two on disk.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE)))
