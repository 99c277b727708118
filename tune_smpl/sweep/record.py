"""The sweep's record: the one owner of what happened, under `<storage-path>/<name>/`.

    sweep.json              settings, base config, space, tracking URI, sampler, status
    space.yaml              the searched space (a space file `--space` reads back)
    trial_<key>/trial.json  one per trial: its params, config, reports and outcome

Ray's own files (trial folders' result.json, checkpoints, experiment state) sit beside it;
`--resume`, `export` and `report` read this record only, so they work from any machine
that can read the storage, after the Ray cluster is gone. The Optuna study is derived
from it (`tune_smpl.sweep.study`); so is every MLflow run's status.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from smpl_core.errors import ConfigError
from tune_smpl.sweep.outcome import OUTCOMES, score
from tune_smpl.sweep.storage import SweepStorage

SWEEP_FILE, SPACE_FILE, TRIAL_FILE = "sweep.json", "space.yaml", "trial.json"
# Ray's bookkeeping fields that a report keeps (the rest of them are not measurements).
KEPT_RAY_FIELDS = ("checkpoint_dir_name", "time_this_iter_s", "ray_node_id", "pid",
                   "started_at", "reported_at")


def folder_of(key: str) -> str:
    return f"trial_{key}"


@dataclass
class TrialRecord:
    key: str  # the Optuna trial number, zero-padded: also the trial folder and MLflow name
    number: int
    params: dict[str, Any]  # the searched values
    distributions: dict[str, str]  # optuna.distributions JSON, to rebuild the study
    config: dict[str, Any]  # the full SMPLConfig mapping the trial runs
    proposed_by: str = "random"  # random (start-up) | tpe | gp | enqueued
    outcome: str | None = None  # one of outcome.OUTCOMES once it ended; None before
    interrupted: bool = False  # its sweep stopped while it ran; cleared by --resume
    reports: list[dict] = field(default_factory=list)
    error: str | None = None
    restarts: int = 0  # Ray restarted its process from a checkpoint
    resumes: int = 0  # `--resume` continued it after its sweep stopped
    started: bool = False  # a process ran it at least once
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None

    @property
    def name(self) -> str:
        return folder_of(self.key)

    @property
    def finished(self) -> bool:
        return self.outcome in OUTCOMES

    @property
    def last(self) -> dict:
        return self.reports[-1] if self.reports else {}

    @property
    def seconds(self) -> float:
        """The trial's own run time (sum of its reports' intervals): what it cost."""
        return float(sum(r.get("time_this_iter_s", 0.0) or 0.0 for r in self.reports))

    def best_report(self, metric: str = "val_accuracy", mode: str = "max") -> dict:
        return score(self.reports, metric, mode)[1]

    def add_report(self, result: dict) -> dict:
        """Keep a Tune result's measurements; a report of a step the trial already has
        (replayed after a restart) replaces it."""
        row = {k: v for k, v in result.items()
               if k in KEPT_RAY_FIELDS or (k not in _RAY_FIELDS and _plain(v))}
        step = row.get("step")
        self.reports = [r for r in self.reports if r.get("step") != step] + [row]
        self.reports.sort(key=lambda r: r.get("step", 0))
        return row

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrialRecord:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


_RAY_FIELDS = {"training_iteration", "time_total_s", "timestamp", "iterations_since_restore",
               "time_since_restore", "done", "trial_id", "date", "hostname", "node_ip",
               "config", "experiment_tag", "should_checkpoint"}


def _plain(v) -> bool:
    return isinstance(v, (bool, int, float, str)) or v is None


class SweepRecord:
    """Reads and writes one sweep's record in its storage."""

    def __init__(self, storage: SweepStorage, name: str):
        self.storage, self.name = storage, name

    @property
    def uri(self) -> str:
        return self.storage.uri(self.name)

    def exists(self) -> bool:
        return self.storage.exists(self.name, SWEEP_FILE)

    def create(self, meta: dict, space_yaml: str) -> None:
        import json

        if not self.storage.create_new(json.dumps(meta, indent=1, default=str),
                                       self.name, SWEEP_FILE):
            raise ConfigError(f"`--name` must be new (or pass --resume), but got "
                             f"--name={self.name!r}, which is in use "
                             f"({self.storage.uri(self.name, SWEEP_FILE)} exists).")
        self.storage.write_text(space_yaml, self.name, SPACE_FILE)

    def meta(self) -> dict:
        return self.storage.read_json(self.name, SWEEP_FILE)

    def save_meta(self, meta: dict) -> None:
        self.storage.write_json(meta, self.name, SWEEP_FILE)

    def space_yaml(self) -> str:
        return self.storage.read_text(self.name, SPACE_FILE)

    def trials(self) -> list[TrialRecord]:
        out = []
        for d in self.storage.list_dirs(self.name):
            if d.startswith("trial_") and self.storage.exists(self.name, d, TRIAL_FILE):
                out.append(TrialRecord.from_dict(self.storage.read_json(self.name, d,
                                                                        TRIAL_FILE)))
        return sorted(out, key=lambda t: t.number)

    def save_trial(self, trial: TrialRecord) -> None:
        self.storage.write_json(trial.to_dict(), self.name, trial.name, TRIAL_FILE)


def sweeps_in(storage: SweepStorage) -> list[str]:
    """The names of the sweeps this tool started under `storage`."""
    return [d for d in storage.list_dirs() if storage.exists(d, SWEEP_FILE)]


def open_sweep(storage_path: str, name: str, what: str = "sweep") -> SweepRecord:
    """The record of an existing sweep, or a ValueError naming the sweeps that exist
    (`what`: how the command calls the name, `sweep` or `--name`)."""
    storage = SweepStorage(storage_path)
    record = SweepRecord(storage, name)
    if not record.exists():
        found = sweeps_in(storage)
        raise ConfigError(f"`{what}` must be a sweep in {storage.uri()}, but got "
                         f"{what}={name!r}; found: {', '.join(found) or 'none'}.")
    return record
