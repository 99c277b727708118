"""The progress line on a terminal, in a notebook and in a log.

A terminal rewrites the line with "\\r" and an ANSI erase; a Jupyter cell (an IPython
kernel; its stream is no tty) honours "\\r" but not the erase, so there the line is
rewritten with "\\r" and padded; a log gets one line per change. IPython is not installed
here: the kernel is an object with a `kernel`, as `IPython.get_ipython()` returns in
Jupyter (a terminal IPython's shell has none).
"""

from __future__ import annotations

import io
import sys
import types
from dataclasses import dataclass, field

import pytest

from tune_smpl.sweep import callbacks
from tune_smpl.sweep.callbacks import LOG, NOTEBOOK, TERMINAL, ProgressLine, output_mode
from tune_smpl.sweep.record import TrialRecord


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@dataclass
class FakeLedger:  # what ProgressLine reads of the ledger
    trials: dict = field(default_factory=dict)
    finalists: dict = field(default_factory=dict)
    by_ray: dict = field(default_factory=dict)


@dataclass
class RayTrial:
    trial_id: str
    status: str


def _kernel(monkeypatch, kernel: object | None) -> None:
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def _steps(monkeypatch, stream) -> str:
    """Three steps of a sweep of two trials (one starts, one completes, the other is
    stopped early), each more than 0.5 s after the last; what the stream got."""
    monkeypatch.setattr(sys, "stdout", stream)
    clock = iter(range(10, 1000, 5))
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: float(next(clock)))
    ledger = FakeLedger(by_ray={"r0": "0000", "r1": "0001"})
    for k in ("0000", "0001"):
        ledger.trials[k] = TrialRecord(key=k, number=int(k), params={"lr": 0.1},
                                       distributions={}, config={})
    line = ProgressLine(ledger, ["lr"])
    ray = [RayTrial("r0", "RUNNING"), RayTrial("r1", "PENDING")]  # Ray's one list of trials
    line.on_step_end(1, ray)
    ledger.trials["0000"].outcome = "completed"
    ledger.trials["0000"].reports = [{"step": 10, "val_accuracy": 0.75}]
    ray[0].status, ray[1].status = "TERMINATED", "RUNNING"
    line.on_step_end(2, ray)
    ledger.trials["0001"].outcome = "early_stopped"
    ray[1].status = "TERMINATED"
    line.on_step_end(3, ray)
    line.on_experiment_end(ray)
    return stream.getvalue()


def test_a_log_gets_one_line_per_change(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    out = _steps(monkeypatch, io.StringIO())
    lines = out.splitlines()
    assert "\r" not in out and len(lines) == 3 and out.endswith("\n")
    assert "running 1 | pending 1" in lines[0] and "best" not in lines[0]
    assert "completed 1" in lines[1] and "best val_accuracy 0.7500 (lr=0.1)" in lines[1]
    assert "stopped early 1" in lines[2]


def test_a_terminal_rewrites_one_line(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    out = _steps(monkeypatch, Tty())
    assert out.count("\r\033[K") == 3 and out.count("\n") == 1 and out.endswith("\n")
    assert out.split("\r\033[K")[-1].startswith("[") and "stopped early 1" in out


def test_a_notebook_cell_rewrites_one_line_without_ansi(monkeypatch):
    _kernel(monkeypatch, kernel=object())
    out = _steps(monkeypatch, io.StringIO())  # a kernel's stream is no tty
    assert "\033" not in out and out.count("\r") == 3
    assert out.count("\n") == 1 and out.endswith("\n")
    shown = [part.rstrip("\n") for part in out.split("\r")[1:]]
    # each rewrite covers the line before it (Jupyter replaces the text after "\r")
    for before, after in zip(shown, shown[1:]):
        assert len(after) >= len(before.rstrip())
    assert "stopped early 1" in shown[-1] and "best val_accuracy 0.7500" in shown[-1]


@pytest.mark.parametrize("kernel, stream, mode", [
    (object(), io.StringIO(), NOTEBOOK), (object(), Tty(), NOTEBOOK),
    (None, Tty(), TERMINAL),  # IPython in a terminal: no kernel, the tty decides
    (None, io.StringIO(), LOG)])
def test_the_mode_follows_the_kernel_then_the_tty(monkeypatch, kernel, stream, mode):
    _kernel(monkeypatch, kernel)
    assert output_mode(stream) == mode


def test_a_stream_without_isatty_is_a_log(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert output_mode(object()) == LOG
    closed = io.StringIO()
    closed.close()
    assert output_mode(closed) == LOG


@pytest.mark.parametrize("seed", range(5))
def test_the_tally_agrees_with_a_count_of_every_trial_at_every_step(seed):
    """Issue 26: the line counted every trial and ranked them all at each step of Ray's
    loop (a sort of the whole sweep, several times a trial). The tally looks at the trials
    without an outcome only; at every step it must say what the full count and
    `outcome.best` say, ties (the earlier trial) and trials without a value included."""
    import random

    from tune_smpl.sweep.callbacks import Tally
    from tune_smpl.sweep.outcome import OUTCOMES, best

    rng = random.Random(seed)
    records, tally = {}, Tally()
    for _ in range(300):
        if rng.random() < 0.4:
            k = f"{len(records):04d}"
            records[k] = TrialRecord(key=k, number=len(records), params={}, distributions={},
                                     config={})
        unfinished = [t for t in records.values() if t.outcome is None]
        if unfinished and rng.random() < 0.4:
            t = rng.choice(unfinished)
            t.reports = [{"step": s, "val_accuracy": rng.choice([0.5, 0.75, 0.9])}
                         for s in range(rng.randint(0, 3))]
            t.outcome = rng.choice(OUTCOMES)
        tally.update(records)
        want = {o: sum(t.outcome == o for t in records.values()) for o in OUTCOMES}
        assert {o: tally.counts.get(o, 0) for o in OUTCOMES} == want
        assert set(tally.open) == {k for k, t in records.items() if t.outcome is None}
        assert tally.top is best(records.values())


class CountedTrial:
    """A Ray trial that counts how often its status is read."""

    def __init__(self, trial_id: str, status: str):
        self.trial_id, self._status, self.reads = trial_id, status, 0

    @property
    def status(self) -> str:
        self.reads += 1
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        self._status = value


@pytest.mark.parametrize("seed", range(3))
def test_running_counts_every_step_without_reading_the_ended_trials(seed, monkeypatch):
    """Issue 26: each step read the status of every Ray trial of the sweep (14 ms of driver
    CPU a trial at trial 1,000). At every step of a random sweep (trials added, started,
    ended, and restarted: moved to the end of Ray's list, as Ray requeues a trial it
    recovers), the line's running and pending counts are those of a count of every trial;
    and a trial that ended is read at most at the one step that finds it ended."""
    import random
    import re

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    rng = random.Random(seed)
    ledger, ray = FakeLedger(), []
    line = ProgressLine(ledger, [])
    for step in range(400):
        r = rng.random()
        if r < 0.2:
            k = f"{len(ray):04d}"
            ledger.trials[k] = TrialRecord(key=k, number=len(ray), params={},
                                           distributions={}, config={})
            ledger.by_ray[f"r{k}"] = k
            ray.append(CountedTrial(f"r{k}", "PENDING"))
        live = [t for t in ray if t.status not in ("TERMINATED", "ERROR")]
        if live and r >= 0.2:
            t = rng.choice(live)
            if t.status == "PENDING":
                t.status = "RUNNING"
            elif r < 0.5:  # ended: its outcome, then Ray's status
                ledger.trials[ledger.by_ray[t.trial_id]].outcome = rng.choice(
                    ["completed", "early_stopped", "errored"])
                t.status = rng.choice(["TERMINATED", "ERROR"])
            elif r < 0.6:  # restarted: pending again, at the end of the list
                t.status = "PENDING"
                ray.remove(t)
                ray.append(t)
        ended_before = {t.trial_id: t.reads for t in ray if t._status in ("TERMINATED",
                                                                           "ERROR")}
        text = line.line(ray)
        open_keys = {k for k, t in ledger.trials.items() if t.outcome is None}
        want_running = sum(t._status == "RUNNING" and ledger.by_ray[t.trial_id] in open_keys
                           for t in ray)
        got = dict(re.findall(r"(running|pending) (\d+)", text))
        assert (int(got["running"]), int(got["pending"])) == (
            want_running, len(open_keys) - want_running), (step, text)
        line.line(ray)  # a second look at the same list
        for t in ray:
            if t.trial_id in ended_before:
                assert t.reads - ended_before[t.trial_id] <= 1, (step, t.trial_id)
