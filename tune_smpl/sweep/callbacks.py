"""The driver-side Ray callbacks of a sweep: the ledger's ears, the budget, the progress line.

Ray calls them on the driver; they forward what happened to the `Ledger`, which decides.
"""

from __future__ import annotations

import math
import posixpath
import sys
import time
from itertools import islice
from typing import Any

from ray.tune import Callback, Stopper

from tune_smpl.sweep.ledger import Ledger
from tune_smpl.sweep.outcome import LABELS, METRIC, SCORED, Outcome, score
from tune_smpl.sweep.record import TrialRecord
from tune_smpl.sweep.restarts import trial_error
from tune_smpl.sweep.stop import STOP
from tune_smpl.sweep.summary import fmt


class LedgerCallback(Callback):
    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def on_step_begin(self, iteration, trials, **info):
        # The safe point of a Ctrl-C: a step of Ray's loop has not begun its events, so no
        # write of the record, the study or MLflow is open (stop.py).
        STOP.check()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.ledger.started(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.ledger.reported(trial.trial_id, result)

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Ray restarts its process from the last checkpoint (FailureConfig), same trial.
        checkpoint = trial.checkpoint
        self.ledger.restarted(trial.trial_id, _error_text(trial), trial_error(trial),
                              checkpoint and posixpath.basename(checkpoint.path))

    def on_step_end(self, iteration, trials, **info):
        self.ledger.notices.poll()  # a restart's line, once its cause is known (restarts.py)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ledger.ended(trial.trial_id, trial.last_result)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ledger.ended(trial.trial_id, trial.last_result, errored=True,
                          error=_error_text(trial))


class BudgetStopper(Stopper):
    """The sweep's time budget (`--time-budget`): stops every trial at `deadline` (epoch
    seconds) through Ray's normal stop path; the ledger then finds them cut by the budget."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline


class Tally:
    """Outcome counts and the best trial (as `outcome.best` picks it) of a dict of records
    that only grows, each record's outcome set once: a step looks at the records without
    one (those running or pending), not at every trial of the sweep."""

    def __init__(self) -> None:
        self.seen = 0  # records of the dict taken in (its insertion order)
        self.open: dict[str, tuple[int, TrialRecord]] = {}  # key -> (position, record)
        self.counts: dict[str, int] = {}
        self.top: TrialRecord | None = None
        self._top_at, self._top_v = -1, math.nan

    def update(self, records: dict[str, TrialRecord]) -> None:
        if len(records) > self.seen:
            for i, t in enumerate(islice(records.values(), self.seen, None), self.seen):
                self.open[t.key] = (i, t)
            self.seen = len(records)
        for key, (i, t) in list(self.open.items()):
            if t.outcome is None:
                continue
            del self.open[key]
            self.counts[t.outcome] = self.counts.get(t.outcome, 0) + 1
            v = score(t.reports)[0] if t.outcome in SCORED else math.nan
            if not math.isnan(v) and (math.isnan(self._top_v) or v > self._top_v or (
                    v == self._top_v and i < self._top_at)):  # ties: the earlier trial
                self.top, self._top_at, self._top_v = t, i, v


class ProgressLine(Callback):
    """running / pending / completed / stopped / failed, the best value, elapsed time; all
    counts from the ledger's outcomes. On a terminal the line rewrites itself; in a log it
    prints when the counts change or every `log_every_s` seconds."""

    def __init__(self, ledger: Ledger, searched: list[str], log_every_s: float = 30.0,
                 finalists: bool = False):
        self.ledger, self.searched, self.log_every_s = ledger, searched, log_every_s
        self.finalists = finalists  # the finalist stage: its runs, no best
        self.tally = Tally()
        self._t0 = time.monotonic()
        self._last_counts, self._last_print, self._last_width = "", 0.0, 0
        self._ray_seen = 0  # the length of Ray's list of trials at the last look
        self._ray_known: set[str] = set()  # the ids of Ray's trials taken in
        self._ray_live: dict[str, Any] = {}  # id -> Ray's trial, for those not ended

    def _running(self, trials) -> set[str | None]:
        """The keys of the Ray trials that are RUNNING. A trial TERMINATED or in ERROR stays
        so, and Ray's list of trials only grows (a trial it restarts moves to the end): a
        step looks at the trials not ended, and at the whole list only when it grew, not
        at every trial of the sweep each step (at trial 1,000 that cost 14 ms of driver CPU
        a trial; issue 26)."""
        if len(trials) != self._ray_seen:
            for t in trials:
                if t.trial_id not in self._ray_known:
                    self._ray_known.add(t.trial_id)
                    self._ray_live[t.trial_id] = t
            self._ray_seen = len(trials)
        running = set()
        for ray_id, t in list(self._ray_live.items()):
            status = t.status
            if status in ("TERMINATED", "ERROR"):
                del self._ray_live[ray_id]
            elif status == "RUNNING":
                running.add(self.ledger.by_ray.get(ray_id))
        return running

    def line(self, trials=()) -> str:
        tally = self.tally
        tally.update(self.ledger.finalists if self.finalists else self.ledger.trials)
        running = self._running(trials)
        counts = dict(tally.counts)
        counts["running"] = sum(key in running for key in tally.open)
        counts["pending"] = len(tally.open) - counts["running"]
        elapsed = int(time.monotonic() - self._t0)
        parts = [f"[{elapsed // 60:02d}:{elapsed % 60:02d}]"] + [
            f"{label} {sum(counts.get(o, 0) for o in group)}" for label, group in (
                ("running", ("running",)), ("pending", ("pending",)),
                *((LABELS[o], (o,)) for o in SCORED),
                ("failed", (Outcome.DIVERGED, Outcome.ERRORED, Outcome.OUT_OF_MEMORY)))]
        if self.finalists:
            return "finalists " + " | ".join(parts)
        top = tally.top
        if top is not None:
            cfg = ", ".join(f"{k}={fmt(top.params.get(k))}" for k in self.searched)
            parts.append(f"best {METRIC} {score(top.reports)[0]:.4f} ({cfg})")
        return " | ".join(parts)

    def on_step_end(self, iteration: int, trials, **info):
        line = self.line(trials)
        counts, now = line.split(" | ", 1)[-1], time.monotonic()
        mode = output_mode(sys.stdout)
        if mode != LOG:
            if now - self._last_print > 0.5:
                # A notebook's output honours "\r" (the line is replaced) but not the ANSI
                # erase, so there the shorter line is padded over the longer one instead.
                text = line[:200]
                rewrite = ("\r\033[K" + text if mode == TERMINAL
                           else "\r" + text.ljust(self._last_width))
                sys.stdout.write(rewrite)
                sys.stdout.flush()
                self._last_print, self._last_width = now, len(text)
        elif counts != self._last_counts or now - self._last_print > self.log_every_s:
            print(line, flush=True)
            self._last_print = now
        self._last_counts = counts

    def on_experiment_end(self, trials, **info):
        if output_mode(sys.stdout) != LOG:
            sys.stdout.write("\n")


TERMINAL, NOTEBOOK, LOG = "terminal", "notebook", "log"


def output_mode(stream) -> str:
    """How the progress line is shown: rewritten in place on a terminal and in a Jupyter
    (IPython kernel) cell, whose stream is no tty; else one line per change, for a log."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        return NOTEBOOK  # a terminal IPython has no kernel: its stdout is the tty
    try:
        return TERMINAL if stream.isatty() else LOG
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return LOG


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        if path:
            with open(path) as fh:
                return fh.read()
    except OSError:
        pass
    return str(getattr(trial, "error_msg", "") or "unknown error")
