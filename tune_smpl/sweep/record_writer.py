"""The sweep record's writes, off the trials' path: one writer thread per running sweep.

A function trainable's `tune.report` waits for the driver's callbacks, and the ledger writes
the record at every report: a storage that fails (an S3 endpoint that does not answer, a
full disk, a folder turned read-only) would hold every trial for as long as a write retries.
So during a sweep `SweepRecord.save_trial` / `save_meta` only hand their file's new content
to this writer and return. It keeps, per file, the latest content (each record file is
replaced whole, so newer content supersedes older), and writes the files in the order of
their latest change (a file changed again moves behind the files changed before it), one
at a time; a storage that fails is retried with back-off (0.5 s doubling to 10 s).

What it says and does:
- a write fails: one line, `the record's storage URI does not take writes since hh:mm:ss
  (error); the sweep goes on and retries for up to N s`; trials keep training.
- it takes writes again: one line when the record has caught up.
- it stays away `retry_s()` seconds (TUNE_SMPL_STORAGE_RETRY_S, default 120; also a single
  write that has not returned by then): the writer has `failed`; it asks the sweep to stop
  (`STOP.request("storage URI: error")`), which stops as interrupted; the command then
  prints the storage's line and exits 75 (EX_TEMPFAIL). `--resume`, once the storage is
  back, re-runs what the record lacks from the record's last state.

Nothing is reported as written that was not: `pending` counts the files whose newest
content is not on the storage yet, `flush()` waits for them (bounded), and the end of a
stage and the command's summary consult it (`run.run_sweep`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from smpl_core.errors import ConfigError
from tune_smpl.sweep.stop import STOP

RETRY_ENV = "TUNE_SMPL_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 120.0
FIRST_WAIT_S, MAX_WAIT_S = 0.5, 10.0  # back-off between tries of a failed write
LAST_TRY_S = 30.0  # at the end of a command, after the bound: the last tries, at most
# Where a trial's error came through the storage (Ray's checkpoint upload or download,
# pyarrow's filesystems): Ray gave up on it because of the storage, not because of it.
_STORAGE_FRAMES = ("train/_internal/storage.py", "pyarrow/fs.py", "pyarrow/_fs.pyx",
                   "persist_current_checkpoint", "_download_from_fs_path",
                   "Unable to set up cluster storage")


def retry_s() -> float:
    """How long a failing storage is retried (TUNE_SMPL_STORAGE_RETRY_S, seconds)."""
    text = os.environ.get(RETRY_ENV, "").strip()
    if not text:
        return DEFAULT_RETRY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"`{RETRY_ENV}` must be a number of seconds > 0, but got "
                          f"{RETRY_ENV}={text!r}.")
    return value


def storage_error(text: str | None) -> bool:
    """A trial error that came through the storage layer (a checkpoint that could not be
    uploaded or read), not from the trial itself."""
    return text is not None and any(frame in text for frame in _STORAGE_FRAMES)


def describe(e: BaseException) -> str:
    """`OSError: [Errno 28] No space left on device: ...`, one line, at most 200 chars."""
    line = (str(e).strip().splitlines() or [""])[0]
    name = type(e).__name__
    return (line if line.startswith(name) else f"{name}: {line}")[:200]


@dataclass
class StorageFailure:
    """Why the record lacks (or lacked) what the sweep did: its storage, the error, how
    long it failed, the writes still not made at the end, and the trials Ray gave up on
    because of it."""

    uri: str
    error: str
    seconds: float
    unwritten: int = 0
    trials: tuple[str, ...] = ()


class RecordWriter:
    def __init__(self, write: Callable[..., None], uri: str, *, bound_s: float | None = None,
                 say: Callable[[str], None] | None = None,
                 request_stop: Callable[[str], None] | None = None,
                 first_wait_s: float = FIRST_WAIT_S, max_wait_s: float = MAX_WAIT_S,
                 clock: Callable[[], float] = time.monotonic):
        self.write, self.uri = write, uri  # write(text, *parts): SweepStorage.write_text
        self.bound_s = retry_s() if bound_s is None else bound_s
        self.say = say or _say
        self.request_stop = request_stop or STOP.request
        self.first_wait_s, self.max_wait_s, self.clock = first_wait_s, max_wait_s, clock
        self.written = 0  # writes made
        self.error: str | None = None  # the newest failure, described
        self.failing_since: float | None = None  # clock() of the current outage's start
        self.failed_for: float | None = None  # set once the bound passed: the sweep stops
        self._pending: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._quit = False
        self._hurry = False  # the last tries: every half second
        self._inflight_since: float | None = None
        self._caught_up_from: float | None = None  # an outage ended; said once caught up
        self._thread: threading.Thread | None = None
        # A command that ends another way (an exception) still gets its last writes made.
        atexit.register(self.close)

    # --- the driver's side ------------------------------------------------------------
    def put(self, text: str, *parts: str) -> None:
        """The newest content of the file `parts`; never waits on the storage."""
        with self._cond:
            self._pending.pop(parts, None)  # the newer content goes behind the others
            self._pending[parts] = text
            self._watchdog()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="record-writer")
                self._thread.start()
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Files whose newest content is not on the storage yet."""
        return len(self._pending)

    @property
    def failed(self) -> bool:
        return self.failed_for is not None

    @property
    def failing(self) -> bool:
        """The storage does not take the record's writes now (or has not for the bound)."""
        with self._cond:
            self._watchdog()
            return self.failing_since is not None or self.failed

    def flush(self, give_up: Callable[[], bool] = lambda: False,
              last_try_s: float = 0.0) -> bool:
        """Wait until every file is written: True. While the storage fails this waits until
        the bound passes (the writer has failed), then `last_try_s` more seconds of tries
        every half second; False when files are left then, or when `give_up()`."""
        deadline = None
        with self._cond:
            while self._pending:
                self._watchdog()
                if give_up():
                    return False
                if self.failed:
                    if deadline is None:
                        deadline = self.clock() + max(0.0, last_try_s)
                        self._hurry = True
                        self._wake.set()
                    if self.clock() >= deadline:
                        return False
                self._cond.wait(0.05)
        return True

    def close(self, give_up: Callable[[], bool] = lambda: False) -> bool:
        """The end of the command's writes: flush (with the last tries), then stop the
        thread; True when the storage has every file."""
        atexit.unregister(self.close)
        done = self.flush(give_up, min(self.bound_s, LAST_TRY_S))
        with self._cond:
            self._quit = True
            self._cond.notify_all()
        self._wake.set()
        return done

    def failure(self, trials: tuple[str, ...] = (), trial_error: str | None = None
                ) -> StorageFailure | None:
        """What the command says when the storage failed: it stayed away past the bound
        (the sweep was stopped), it still fails now, or Ray gave up on `trials` because of
        it; None when none of these happened (files left by a hurried end are `pending`)."""
        with self._cond:
            if self.failed_for is not None:
                seconds = self.failed_for
            elif self.failing_since is not None:
                seconds = max(self.clock() - self.failing_since, 1e-3)
            elif trials:
                seconds = 0.0
            else:
                return None
            error = self.error or trial_error or "unknown error"
            return StorageFailure(self.uri, error, seconds, len(self._pending), trials)

    # --- the writer thread ------------------------------------------------------------
    def _loop(self) -> None:
        wait = self.first_wait_s
        while True:
            with self._cond:
                while not self._pending and not self._quit:
                    self._cond.wait(0.5)
                if self._quit:
                    return
                parts, text = next(iter(self._pending.items()))
                self._inflight_since = self.clock()
            try:
                self.write(text, *parts)
                error = None
            except Exception as e:  # noqa: BLE001 - whatever the storage raises; retried
                error = e
            with self._cond:
                self._inflight_since = None
                if error is None:
                    if self._pending.get(parts) is text:  # not changed again meanwhile
                        del self._pending[parts]
                    self.written += 1
                    self._back()
                    wait = self.first_wait_s
                    self._cond.notify_all()
                    continue
                since = self._failed_write(error)
                self._cond.notify_all()
                sleep = self.first_wait_s if self._hurry else wait
                if not self.failed:  # a try at the bound: the stop comes when it is due
                    due = since + self.bound_s - self.clock()
                    sleep = min(sleep, max(0.0, due))
            if self._wake.wait(sleep):
                self._wake.clear()
            wait = min(2 * wait, self.max_wait_s)

    def _failed_write(self, e: BaseException) -> float:
        """Count a failed write; returns when the current outage started (clock())."""
        now = self.clock()
        self.error = describe(e)
        since = self.failing_since
        if since is None:
            since = self.failing_since = now
            self._caught_up_from = None
            self.say(f"tune-smpl: the record's storage {self.uri} does not take writes since "
                     f"{time.strftime('%H:%M:%S')} ({self.error}); the sweep goes on and "
                     f"retries for up to {self.bound_s:g} s")
        self._check_bound(now, since)
        return since

    def _watchdog(self) -> None:
        """A write that has not returned within the bound counts as a failure."""
        inflight = self._inflight_since
        if inflight is not None and not self.failed:
            now = self.clock()
            if now - inflight >= self.bound_s:
                since = self.failing_since = self.failing_since or inflight
                self.error = self.error or f"a write did not return within {self.bound_s:g} s"
                self._check_bound(now, since)

    def _check_bound(self, now: float, since: float) -> None:
        if not self.failed and now - since >= self.bound_s:
            self.failed_for = now - since
            self.request_stop(f"storage {self.uri}: {self.error}")

    def _back(self) -> None:
        """A write went through: an outage (if any) is over; said once the record has
        caught up."""
        if self.failing_since is not None:
            self._caught_up_from, self.failing_since = self.failing_since, None
        if self._caught_up_from is not None and not self._pending:
            away = self.clock() - self._caught_up_from
            self._caught_up_from = None
            self.say(f"tune-smpl: the record's storage {self.uri} takes writes again (it "
                     f"failed for {away:.0f} s); the record has caught up")


def _say(line: str) -> None:
    """One line on the terminal, under the progress line (which rewrites itself there)."""
    with contextlib.suppress(Exception):  # a closed stdout must not stop the writer
        prefix = "\r\033[K" if sys.stdout.isatty() else ""
        print(prefix + line, flush=True)
