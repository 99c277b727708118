"""A sweep's plan: everything that can be checked before Ray starts.

`prepare(options)` reads a `TuneOptions` (the command line's flags or `tune_smpl.tune`'s
keywords) and returns a `SweepPlan`: the base config, the space, the settings, and the
record of a resumed sweep or the prior of a new warm-started one. It raises `ConfigError`
for bad input, before Ray starts and before anything is written, and it never changes the
options it was given.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import fix, load_space
from smpl_core.config import SMPLConfig
from smpl_core.errors import ConfigError
from tune_smpl.commands.train import build_config
from tune_smpl.options import TuneOptions
from tune_smpl.sweep import prior as prior_of
from tune_smpl.sweep.cluster import absolute_data_dir, storage_path
from tune_smpl.sweep.prior import Prior
from tune_smpl.sweep.record import SweepRecord, open_sweep, sweeps_in
from tune_smpl.sweep.settings import SweepSettings
from tune_smpl.sweep.storage import SweepStorage


@dataclass(frozen=True)
class SweepPlan:
    """What one run of `tune` starts from."""

    base: SMPLConfig  # the base config: a resumed sweep's from its record
    space: dict[str, Any]  # field -> ParamSpec, as searched (fixed fields removed)
    settings: SweepSettings  # validated; a resumed sweep's from its record
    record: SweepRecord | None  # the record of a resumed sweep; None for a new one
    prior: Prior | None  # a new warm-started sweep's prior; None otherwise
    tracking_uri: str | None  # the MLflow store given, or the resumed sweep's; None: default

    @property
    def resumed(self) -> bool:
        return self.record is not None


def base_config(options: TuneOptions) -> tuple[SMPLConfig, frozenset[str]]:
    """The base config of `--config`, `--dataset` and `--set`, and the fields given."""
    base, given = build_config(options.config, options.fixed_fields())
    return absolute_data_dir(base), given


def default_name(base: SMPLConfig) -> str:
    """A new sweep's name when none is given: `<dataset>-<date>-<time>`."""
    return f"{base.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare(options: TuneOptions) -> SweepPlan:
    """The plan of `options`; a ConfigError for anything that cannot work."""
    storage = storage_path(options.storage_path)
    if options.resume:
        warm = [f for f, v in (("--warm-start", options.warm_start),
                               ("--warm-start-storage", options.warm_start_storage),
                               ("--warm-start-top", options.warm_start_top)) if v is not None]
        if warm:
            raise ConfigError(f"`{warm[0]}` must not be given with --resume: a resumed sweep "
                              f"keeps the warm start it started with (in its record).")
        return _prepare_resume(options, storage)
    base, given = base_config(options)
    space = load_space(options.space, base.to_dict())
    space, removed = fix(space, {k: getattr(base, k) for k in given})
    name = options.name or default_name(base)
    settings = SweepSettings(
        name=name, storage_path=storage, space=options.space,
        num_samples=options.num_samples, max_concurrent=options.max_concurrent,
        gpus_per_trial=options.gpus_per_trial or 0.0, cpus_per_trial=options.cpus_per_trial,
        memory_per_trial_gb=options.memory_per_trial, time_budget_s=options.time_budget,
        max_failures=options.max_failures, grace_period=options.grace_period,
        reduction_factor=options.reduction_factor, seed=options.seed,
        sampler=options.sampler, num_cpus=options.num_cpus, num_gpus=options.num_gpus,
        fixed=sorted(removed), finalists=options.finalists,
        finalist_seeds=options.finalist_seeds, warm_start=list(options.warm_start or []),
        warm_start_top=options.warm_start_top,
        warm_start_storage=(storage_path(options.warm_start_storage)
                            if options.warm_start_storage else None))
    settings.validate()
    if not space:
        raise ConfigError("`--space` must leave at least one field to search, but --set fixed "
                          "every one of them.")
    if SweepRecord(SweepStorage(storage), name).exists():
        raise ConfigError(f"`--name` must be new (or pass --resume), but got --name={name!r}, "
                          f"which already exists in {storage}.")
    prior = (prior_of.load(settings.warm_start, settings.warm_start_storage or storage, space)
             if settings.warm_start else None)
    return SweepPlan(base, space, settings, None, prior, options.tracking_uri)


def _prepare_resume(options: TuneOptions, storage: str) -> SweepPlan:
    """A resumed sweep is the sweep that was started: its config, space, settings and
    MLflow store come from its record, not from this run's options (a store given now
    replaces the recorded one)."""
    if not options.name:
        found = sweeps_in(SweepStorage(storage))
        raise ConfigError("`--resume` needs `--name` of the sweep to resume; found: "
                          f"{', '.join(found) or 'none'}.")
    record = open_sweep(storage, options.name, what="--name")
    meta = record.meta()
    record.trials()  # a damaged trial record refuses the resume here, before Ray starts
    settings = SweepSettings.from_dict({**meta["settings"], "storage_path": storage})
    base = SMPLConfig.from_dict(meta["base"])
    with tempfile.TemporaryDirectory() as d:  # the record may be on an object store
        path = Path(d) / "space.yaml"
        path.write_text(record.space_yaml())
        space = load_space(str(path), base.to_dict())
    return SweepPlan(base, space, settings, record, None,
                     options.tracking_uri or meta["tracking_uri"])
