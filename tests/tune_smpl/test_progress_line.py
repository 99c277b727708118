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
    line.on_step_end(1, [RayTrial("r0", "RUNNING"), RayTrial("r1", "PENDING")])
    ledger.trials["0000"].outcome = "completed"
    ledger.trials["0000"].reports = [{"step": 10, "val_accuracy": 0.75}]
    line.on_step_end(2, [RayTrial("r1", "RUNNING")])
    ledger.trials["0001"].outcome = "early_stopped"
    line.on_step_end(3, [])
    line.on_experiment_end([])
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
