"""The running sweep's study: in memory, and written through to its SQLite file.

The ledger asks, tells and reports to an in-memory Optuna storage, so that no trial waits
on SQLite: Optuna's RDB storage costs tens of milliseconds a trial write on this 2-core
machine, and rebuilding a 1,000-trial study from the record took 49-66 s (issue 26).
Each write is then made again, in the same order, on the SQLite file (`optuna.db`, which
optuna-dashboard opens while the sweep runs) by one thread of its own; every read is the
memory's. `close` waits until the file has every write. The file is a view: `--resume`
rebuilds it from the record, so a write it missed (the process killed) is never lost.

The thread takes at most SHARE of a core while the sweep runs: after each write it waits
for 1/SHARE - 1 times the CPU the write took. Rebuilding a 1,000-trial file is 12 s of CPU
(Optuna's RDB storage writes one trial at a time); unthrottled on a 2-core machine it took
a core from the trials a resumed sweep starts first, whose start then took 7 s instead of
2-3 (issue 26). `close` lifts the limit: the file catches up at full speed.

A write the file refuses (its disk full or read-only) is kept in `error` and the file gets
nothing more; the ledger stops the sweep on it, as it did when the write was its own.
Only public Optuna APIs: `BaseStorage` is Optuna's interface for a storage of one's own.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

_CLOSE = object()
SHARE = 0.25  # of a core, at most, for the file's writes until `close`


class StudyMirror(BaseStorage):
    """An in-memory storage whose writes are replayed on `sqlite:///<db>` by a thread."""

    def __init__(self, db: Path):
        db.parent.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)  # a view of the record, rebuilt whole
        self.db, self.memory = db, InMemoryStorage()
        self.error: BaseException | None = None  # the first write the file refused
        self._studies: dict[int, int] = {}  # memory id -> the file's, made by the thread
        self._trials: dict[int, int] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = threading.Event()  # set by close: no more waits between writes
        self._thread = threading.Thread(target=self._run, name="study-mirror", daemon=True)
        self._thread.start()

    # --- the thread ---------------------------------------------------------------
    def _put(self, write: Callable[[RDBStorage], Any]) -> None:
        self._queue.put(write)

    def _run(self) -> None:
        file: RDBStorage | None = None
        while True:
            write = self._queue.get()
            if write is _CLOSE:
                return
            if self.error is not None:
                continue  # the file is behind from here on; --resume rebuilds it
            cpu = time.thread_time()
            try:
                if file is None:
                    file = RDBStorage(f"sqlite:///{self.db}")
                write(file)
            except Exception as e:  # noqa: BLE001 - kept for the ledger, which stops on it
                self.error = e
            self._closing.wait((time.thread_time() - cpu) * (1 / SHARE - 1))

    def close(self, timeout_s: float | None = None) -> bool:
        """Wait for the file to have every write (at most `timeout_s`); True when it has
        them all or has failed (`error`): nothing more will reach it either way."""
        if self._thread.is_alive():
            self._closing.set()
            self._queue.put(_CLOSE)
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Writes queued for the file (approximately)."""
        return self._queue.qsize()

    # --- writes: the memory's at once, the file's queued --------------------------
    def create_new_study(self, directions: Sequence[StudyDirection],
                         study_name: str | None = None) -> int:
        sid = self.memory.create_new_study(directions, study_name)
        name = self.memory.get_study_name_from_id(sid)
        self._put(lambda f: self._studies.__setitem__(sid, f.create_new_study(directions, name)))
        return sid

    def delete_study(self, study_id: int) -> None:
        self.memory.delete_study(study_id)
        self._put(lambda f: f.delete_study(self._studies[study_id]))

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.memory.set_study_user_attr(study_id, key, value)
        self._put(lambda f: f.set_study_user_attr(self._studies[study_id], key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.memory.set_study_system_attr(study_id, key, value)
        self._put(lambda f: f.set_study_system_attr(self._studies[study_id], key, value))

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        tid = self.memory.create_new_trial(study_id, template_trial)
        template = copy.deepcopy(template_trial)  # as it is now

        def write(f: RDBStorage) -> None:
            self._trials[tid] = f.create_new_trial(self._studies[study_id], template)

        self._put(write)
        return tid

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self.memory.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        self._put(lambda f: f.set_trial_param(self._trials[trial_id], param_name,
                                              param_value_internal, distribution))

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        done = self.memory.set_trial_state_values(trial_id, state, values)
        if done:  # False: another asker took this waiting trial; nothing changed
            values = None if values is None else list(values)
            self._put(lambda f: f.set_trial_state_values(self._trials[trial_id], state, values))
        return done

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        self.memory.set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._put(lambda f: f.set_trial_intermediate_value(self._trials[trial_id], step,
                                                           intermediate_value))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.memory.set_trial_user_attr(trial_id, key, value)
        self._put(lambda f: f.set_trial_user_attr(self._trials[trial_id], key, value))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.memory.set_trial_system_attr(trial_id, key, value)
        self._put(lambda f: f.set_trial_system_attr(self._trials[trial_id], key, value))

    # --- reads: the memory's ------------------------------------------------------
    def get_study_id_from_name(self, study_name: str) -> int:
        return self.memory.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.memory.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.memory.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.memory.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.memory.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list:  # of optuna.study FrozenStudy
        return self.memory.get_all_studies()

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.memory.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self.memory.get_trial_number_from_id(trial_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self.memory.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self.memory.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(self, study_id: int,
                     state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self.memory.get_n_trials(study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self.memory.get_best_trial(study_id)


__all__ = ["StudyMirror"]
