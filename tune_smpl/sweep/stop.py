"""Requests that a running sweep stop, taken only at safe points.

A Ctrl-C used to raise KeyboardInterrupt wherever the driver happened to be, including
inside a SQLAlchemy transaction of the Optuna study or of MLflow; the bookkeeping after it
then waited on the lock that the cut transaction still held (`database is locked`). Now the
command installs `STOP.sigint` as its SIGINT handler, which only counts the request. The
sweep takes it at points where no write is open: the start of each step of Ray's loop
(`callbacks.LedgerCallback.on_step_begin`) and the start of each stage (`run.run_sweep`);
there `check()` raises `StopRequested`, and the ledger marks the unfinished trials
interrupted. It is an `Exception`, not a `KeyboardInterrupt`: Ray Tune's loop ends its
trials' actors on an `Exception` only (`tune.run`: `except Exception: runner.cleanup()`),
and an actor left running holds its CPUs and GPU share in a Ray that outlives the sweep
(a notebook's second `tune_smpl.tune`, a test module's Ray), where the next sweep's trials
would then wait for ever.

- The first request: stop asking for trials, end the running ones as interrupted, close
  (summary, MLflow's parent run KILLED), exit 130.
- A second: the same, faster: whatever may wait (MLflow catching up with the record) is
  left to `--resume` or `tune-smpl sync`, which rebuild it from the record (`hurried`).
- A third: out at once, as a SIGKILL would leave it: every record write is a whole file
  replaced, so `--resume` starts from the record as it was.

Other causes (a storage that stays away) request a stop through `request(reason)`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised at a safe point once a stop was requested (its reason as the message)."""


class StopRequests:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0  # Ctrl-C and other requests since the command began
        self.reasons: list[str] = []  # why, in order ("Ctrl-C", "storage ...")
        self.first_at: float | None = None  # time.time() of the first request

    def reset(self) -> None:
        with self._lock:
            self.count, self.reasons, self.first_at = 0, [], None

    def request(self, reason: str) -> None:
        """Ask the sweep to stop at its next safe point; thread-safe, never raises."""
        with self._lock:
            self.count += 1
            self.reasons.append(reason)
            if self.first_at is None:
                self.first_at = time.time()

    @property
    def requested(self) -> bool:
        return self.count > 0

    @property
    def hurried(self) -> bool:
        """A second request: skip what may wait (the record has everything)."""
        return self.count > 1

    @property
    def reason(self) -> str | None:
        return self.reasons[0] if self.reasons else None

    def check(self) -> None:
        """At a safe point: raise StopRequested if a stop was requested."""
        if self.count:
            raise StopRequested(self.reason)

    def sigint(self, signum, frame) -> None:
        """The SIGINT handler: a request, nothing raised here (see the module docstring)."""
        self.request("Ctrl-C")
        if self.count == 1:
            _say("\nCtrl-C: stopping at the next safe point (the running trials end as "
                 "interrupted; --resume runs them on). Ctrl-C again to hurry.")
        elif self.count == 2:
            _say("\nCtrl-C again: closing now; MLflow catches up on --resume or "
                 "`tune-smpl sync`.")
        else:  # the user insists: as a SIGKILL would, and the record stays as it was
            _say("\nCtrl-C a third time: exiting now; --resume starts from the record.")
            os._exit(130)

    @contextlib.contextmanager
    def installed(self):
        """The SIGINT handler for the block (the main thread only; elsewhere signals are
        not ours to take), with the requests counted from zero."""
        self.reset()
        try:
            previous = signal.signal(signal.SIGINT, self.sigint)
        except ValueError:  # not the main thread
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _say(line: str) -> None:
    with contextlib.suppress(Exception):  # a closed stdout must not cost the request
        print(line, file=sys.stderr, flush=True)


STOP = StopRequests()  # the process's one sweep driver
