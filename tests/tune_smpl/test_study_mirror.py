"""The sweep's study in memory, written through to optuna.db by a thread (issue 26).

What the file holds after `close` is read back by Optuna's own RDB storage and compared
with the in-memory study, trial by trial: every kind of write the ledger makes (ask with
enqueued trials, params, intermediate values, user attrs, tell of each state, add_trial of
a record's finished trials).
"""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from tune_smpl.sweep.study_mirror import StudyMirror


def _view(t: optuna.trial.FrozenTrial) -> tuple:
    return (t.number, t.state, t.value, t.params, t.distributions, t.intermediate_values,
            t.user_attrs)


def _drive(study: optuna.Study, rng: random.Random, n: int) -> None:
    """Trials as a sweep makes them: some added finished, some enqueued, then ask, suggest,
    report, tell (complete, pruned, failed), two in flight at a time."""
    dist = optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
    for k in range(3):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.1 * k,
                                     params={"lr": 0.01 * (k + 1)}, distributions={"lr": dist},
                                     user_attrs={"key": f"{k:04d}"},
                                     intermediate_values={10: 0.05 * k}))
    study.enqueue_trial({"lr": 0.5}, user_attrs={"proposed_by": "prior"})
    live = []
    while n or live:
        if n and len(live) < 2:
            t = study.ask()
            t.suggest_float("lr", 1e-4, 1.0, log=True)
            t.suggest_int("warm", 0, 100)
            t.set_user_attr("key", f"{t.number:04d}")
            live.append(t)
            n -= 1
            continue
        t = live.pop(rng.randrange(len(live)))
        for step in range(rng.randint(0, 3)):
            t.report(rng.random(), 10 * (step + 1))
        state = rng.choice([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
        t.set_user_attr("outcome", state.name)
        study.tell(t, rng.random() if state == TrialState.COMPLETE else None, state=state)
    study.ask().set_user_attr("interrupted", True)  # left RUNNING, as a Ctrl-C leaves one


@pytest.mark.parametrize("seed", [0, 1])
def test_the_file_holds_what_the_memory_holds(tmp_path, seed):
    db = tmp_path / "sweep" / "optuna.db"
    mirror = StudyMirror(db)
    study = optuna.create_study(study_name="s", storage=mirror, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed,
                                                                   n_startup_trials=4))
    _drive(study, random.Random(seed), 12)
    assert mirror.close(60) and mirror.error is None and mirror.pending == 0
    got = optuna.load_study(study_name="s", storage=f"sqlite:///{db}").get_trials()
    want = study.get_trials()
    assert len(got) == len(want) == 3 + 12 + 1
    assert [_view(t) for t in got] == [_view(t) for t in want]
    assert got[-1].state == TrialState.RUNNING and got[-1].user_attrs["interrupted"]


def test_a_write_refused_midway_stops_the_file_there(tmp_path, monkeypatch):
    """The first refused write is the error; the file keeps what came before it and gets
    nothing after it (a partial write never lands out of order). The real refusal (a
    full disk) is test_storage_fault's."""
    again = StudyMirror(tmp_path / "b.db")
    calls = []

    def refuse(f):
        calls.append(1)
        raise optuna.exceptions.StorageInternalError("disk full")

    study = optuna.create_study(study_name="s", storage=again, direction="maximize")
    t = study.ask()
    again._put(refuse)  # noqa: SLF001 - a write the file refuses, in the stream
    study.tell(t, 0.3)
    t = study.ask()
    study.tell(t, 0.4)
    assert again.close(60)
    assert isinstance(again.error, optuna.exceptions.StorageInternalError) and calls == [1]
    kept = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'b.db'}")
    assert [t.state for t in kept.get_trials()] == [TrialState.RUNNING]  # up to the refusal
    assert [t.value for t in study.get_trials()] == [0.3, 0.4]  # the memory went on


def test_the_files_writes_take_at_most_their_share_of_a_core_until_close(tmp_path,
                                                                         monkeypatch):
    """After each write the thread waits 1/SHARE - 1 times the CPU the write took (a
    rebuild of 1,000 trials is 12 s of CPU, which took a core from a resumed sweep's first
    trials); close lifts the wait, and the file still gets every write. Each write is made
    to take 10 s of the thread's CPU, on a clock of the test's: the thread then waits 30 s
    after its first write, until close."""
    import itertools
    import threading
    import time

    from tune_smpl.sweep import study_mirror

    ticks = itertools.count()
    monkeypatch.setattr(study_mirror.time, "thread_time", lambda: next(ticks) * 10.0)
    waits: list[tuple[float, bool]] = []

    class Recorded(threading.Event):
        def wait(self, timeout=None):
            waits.append((timeout, self.is_set()))
            return super().wait(timeout)

    db = tmp_path / "optuna.db"
    mirror = StudyMirror(db)
    mirror._closing = Recorded()  # before any write reaches the thread
    study = optuna.create_study(study_name="s", storage=mirror, direction="maximize")
    _drive(study, random.Random(2), 6)
    deadline = time.monotonic() + 30
    while not waits and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert waits == [(pytest.approx(10.0 * (1 / study_mirror.SHARE - 1)), False)]
    assert mirror.pending > 10  # the rest waits behind it
    t0 = time.monotonic()
    assert mirror.close(60) and mirror.error is None
    assert time.monotonic() - t0 < 20 and all(lifted for _, lifted in waits[1:])
    got = optuna.load_study(study_name="s", storage=f"sqlite:///{db}").get_trials()
    assert [_view(t) for t in got] == [_view(t) for t in study.get_trials()]
