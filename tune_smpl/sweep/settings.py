"""A sweep's settings: what `tune` was asked, validated at the edge, stored in the record."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from smpl_core.errors import ConfigError
from tune_smpl.sweep.study import SAMPLERS

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
    sampler: str = "tpe"  # tpe | random | gp
    max_failures: int = 2
    num_cpus: int | None = None  # offered by a Ray started here (--num-cpus); a resume reuses
    num_gpus: int | None = None  # them, so a sweep on logical GPUs resumes on logical GPUs
    fixed: list[str] = field(default_factory=list)  # searched fields fixed by --set
    finalists: int = 0  # the K best search trials retrained when the search ends (0: none)
    finalist_seeds: int = 2  # fresh seeds per finalist
    warm_start: list[str] = field(default_factory=list)  # prior sweeps (--warm-start)
    warm_start_storage: str | None = None  # where they are (default: storage_path)
    warm_start_top: int | None = None  # the prior's best that run first (None: the slots)

    def as_params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> SweepSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> None:
        if not NAME_RE.match(self.name):
            raise ConfigError(f"`--name` must be letters, digits, '.', '_' or '-' (up to 100), "
                              f"but got --name={self.name!r}.")
        for flag, value, low in (("--num-samples", self.num_samples, 1),
                                 ("--grace-period", self.grace_period, 1),
                                 ("--reduction-factor", self.reduction_factor, 2),
                                 ("--max-concurrent", self.max_concurrent, 0),
                                 ("--max-failures", self.max_failures, 0),
                                 ("--finalists", self.finalists, 0),
                                 ("--finalist-seeds", self.finalist_seeds, 1)):
            if value < low:
                raise ConfigError(f"`{flag}` must be >= {low}, but got {flag}={value}.")
        if self.finalists > self.num_samples:
            raise ConfigError(f"`--finalists` must be at most --num-samples "
                              f"({self.num_samples}), but got --finalists={self.finalists}.")
        if self.memory_per_trial_gb is not None and self.memory_per_trial_gb <= 0:
            raise ConfigError(f"`--memory-per-trial` must be > 0 GB, but got "
                              f"--memory-per-trial={self.memory_per_trial_gb:g}.")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"`--time-budget` must be > 0 seconds, but got "
                              f"--time-budget={self.time_budget_s:g}.")
        if self.warm_start_top is not None and self.warm_start_top < 1:
            raise ConfigError(f"`--warm-start-top` must be >= 1, but got "
                              f"--warm-start-top={self.warm_start_top}.")
        for flag, given in (("--warm-start-top", self.warm_start_top),
                            ("--warm-start-storage", self.warm_start_storage)):
            if given is not None and not self.warm_start:
                raise ConfigError(f"`{flag}` needs `--warm-start SWEEP`, but got {flag}="
                                  f"{given} alone.")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"`--sampler` must be one of {' | '.join(SAMPLERS)}, but got "
                              f"--sampler={self.sampler!r}.")

