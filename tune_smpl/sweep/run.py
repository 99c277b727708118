"""One command's run of a sweep, new or resumed: record, study, Tuner, and how it ended.

`run_sweep` stops at the record: it returns a `SweepResult` (the trials, the best, the
status, the wall time), and the command closes the sweep from it (the summary, MLflow's
parent run, the report). The sweep ends in one of three ways, each leaving the record, the
study and the MLflow trial runs agreed: finished (every trial has its outcome), interrupted
(Ctrl-C: its unfinished trials are marked until `--resume`), or killed (nothing runs after
a SIGKILL: `--resume` starts from the record as it was).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from search_spaces import make_define_by_run, space_to_yaml
from smpl_core.config import SMPLConfig
from tune_smpl.sweep import outcome as O
from tune_smpl.sweep.ledger import Ledger
from tune_smpl.sweep.record import SweepRecord, TrialRecord
from tune_smpl.sweep.resume import restart_points
from tune_smpl.sweep.settings import SweepSettings
from tune_smpl.sweep.storage import SweepStorage
from tune_smpl.sweep.study import (
    build_study,
    check_numbers,
    make_sampler,
    sampler_settings,
    startup_trials,
)
from tune_smpl.sweep.tracking import Tracking
from tune_smpl.sweep.tuner import build_tuner

log = logging.getLogger(__name__)
STUDY_FILE = "optuna.db"


def study_file(storage: SweepStorage, name: str) -> Path:
    """The SQLite study optuna-dashboard opens: in the sweep folder on a local storage, else
    on this machine under ./runs/<name>/ (a copy goes to the storage at the end)."""
    if storage.local:
        return Path(storage.path(name, STUDY_FILE))
    return Path("runs").resolve() / name / STUDY_FILE


def new_record(settings: SweepSettings, base: SMPLConfig, space: dict,
               tracking_uri: str) -> SweepRecord:
    """Claim the sweep's name in its storage (one of two commands racing for it wins)."""
    record = SweepRecord(SweepStorage(settings.storage_path), settings.name)
    n_startup = startup_trials(settings.num_samples, settings.max_concurrent)
    record.create({"settings": asdict(settings), "base": base.to_dict(),
                   "tracking_uri": tracking_uri, "status": "new", "wall_s": 0.0, "runs": 0,
                   "sampler": sampler_settings(settings.sampler, settings.seed, n_startup)},
                  space_to_yaml(space))
    return record


@dataclass
class SweepResult:
    """What one command's run of a sweep left in its record."""

    record: SweepRecord
    trials: list[TrialRecord]  # every trial of the sweep, by number
    status: str  # finished | interrupted
    wall_s: float  # the sweep's wall time over all the command's runs of it
    left: list[TrialRecord]  # the unfinished (interrupted) trials; empty when finished

    @property
    def best(self) -> TrialRecord | None:
        return O.best(self.trials)

    def figures(self) -> dict[str, float]:
        """The sweep's own numbers: the parent run's only metrics."""
        out: dict[str, float] = {f"trials_{o}": n for o, n in O.counts(self.trials).items()}
        out.update(trials=len(self.trials), wall_s=round(self.wall_s, 2),
                   trial_seconds=round(sum(t.seconds for t in self.trials), 2))
        if self.best is not None:
            out[f"best_{O.METRIC}"] = O.score(self.best.reports)[0]
        return out

    def best_checkpoint(self) -> str | None:
        """The URI of the checkpoint of the best trial's best report (else its newest
        checkpoint); None without a best trial or a checkpoint."""
        top = self.best
        if top is None:
            return None
        storage, folder = self.record.storage, (self.record.name, top.name)
        names = [top.best_report().get("checkpoint_dir_name")] + sorted(
            (d for d in storage.list_dirs(*folder) if d.startswith("checkpoint_")),
            reverse=True)
        for name in names:
            if name and storage.exists(*folder, name):
                return storage.uri(*folder, name)
        return None


def run_sweep(record: SweepRecord, base: SMPLConfig, space: dict, settings: SweepSettings,
              tracking: Tracking) -> SweepResult:
    meta = record.meta()
    trials = record.trials()
    restore = restart_points(record, trials)
    n_startup = meta["sampler"].get("sampler_startup_trials", 0)
    db = study_file(record.storage, settings.name)
    # Each run of the command draws on: a resumed sweep re-seeded as it started would
    # propose its first configs again.
    seed = (settings.seed * 1_000_003 + meta["runs"]) % 2**32
    study = build_study(trials, settings.name, f"sqlite:///{db}",
                        make_sampler(settings.sampler, seed, n_startup))
    check_numbers(study, trials)
    budget = settings.time_budget_s
    deadline = time.time() + max(0.0, budget - meta["wall_s"]) if budget else None
    ledger = Ledger(record, trials, study, make_define_by_run(space), base.to_dict(),
                    sampler=settings.sampler, n_startup=n_startup, steps=base.steps,
                    deadline=deadline, tracking=tracking, restore=restore)
    tracking.reconcile(trials)
    meta.update(status="running", runs=meta["runs"] + 1)
    record.save_meta(meta)
    remaining = settings.num_samples - sum(t.finished for t in trials)
    t0, interrupted = time.time(), False
    if remaining > 0:
        # Ray's own Ctrl-C handler ends trials as TERMINATED and prints its own resume line;
        # without it a Ctrl-C reaches us as KeyboardInterrupt, and the ledger decides.
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        try:
            build_tuner(base, space, settings, ledger, remaining).fit()
        except KeyboardInterrupt:
            interrupted = True
    with _no_sigint():  # a second Ctrl-C must not cut the bookkeeping short
        left = ledger.settle(interrupted)
        meta["wall_s"] += time.time() - t0
        meta["status"] = "interrupted" if left else "finished"
        record.save_meta(meta)
        if not left and not record.storage.local:
            _copy_study(record, study_file(record.storage, settings.name))
    return SweepResult(record, sorted(ledger.trials.values(), key=lambda t: t.number),
                       meta["status"], meta["wall_s"], left)


def _copy_study(record: SweepRecord, db: Path) -> None:
    try:
        record.storage.upload_file(db, record.name, STUDY_FILE)
    except OSError as e:  # the record rebuilds it; a copy is a convenience
        log.warning("could not copy the study to %s: %s", record.uri, e)


@contextlib.contextmanager
def _no_sigint():
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to guard
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
