"""The sweep's MLflow writes, off the trials' path: one bounded queue, one writer thread.

A function trainable's `tune.report` waits for the driver's callbacks, so a write to the
tracking server made there makes every trial wait on that server: a server restarted for
25 s once held the whole sweep for 62 s (MLflow's client retrying with back-off). Every
`Tracking` call is therefore put on this queue and returns at once; one thread makes the
writes, in the order they were put (so a run is created before its metrics, and a report's
points land in step order).

What a failed write does depends on why it failed (`mlflow_tracking.store.store_fault`):
- the server does not answer (connection refused, a timeout; or 5xx while its /health does
  not answer either): the writer says so once, `MLflow at URI unreachable since hh:mm:ss;
  the sweep goes on, the record keeps everything`, and retries the same write with back-off
  (0.5 s doubling to 10 s) while the queue fills; when the server answers again it catches
  up, and says so in one line when the queue is empty.
- the server answers 5xx or 429 but is up: a few more tries, then the write is dropped and
  MLflow is marked `behind`.
- the store refuses the request (a bad param, a run it does not have): logged and dropped,
  as a retry would be refused too.
A full queue drops the new write and marks MLflow `behind`.

`drain` (the end of a command) waits for the queue: the back-off between tries is then at
most DRAIN_WAIT_S, so a server that is back is written to within a second; past its
timeout it goes on while the writes go through (one done within CATCH_UP_STALL_S of the
last, or a server that answers again at the deadline), up to `timeout_s` × CATCH_UP_FACTOR
in all, so that a server back near the end is caught up with rather than left behind.

Nothing here is lost for good: the record has every write's content, and the backfill
(`tune_smpl.sweep.sync`) fills in what MLflow lacks at the end of the sweep, on `--resume`,
or with `tune-smpl sync`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable

from mlflow_tracking.store import SERVER_ERROR, UNREACHABLE, reachable, store_fault

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # writes; a report is one, so hours of an outage at a few a second
FIRST_WAIT_S, MAX_WAIT_S = 0.5, 10.0  # back-off between tries of a write that got no answer
SERVER_RETRIES = 3  # more tries of a write that a server which is up answered with 5xx
DRAIN_WAIT_S = 1.0  # the back-off's cap while a drain waits (the end of a command)
CATCH_UP_STALL_S = 10.0  # past a drain's timeout: it goes on while writes are this close
CATCH_UP_FACTOR = 10  # ... up to this many times its timeout in all


class Writer:
    def __init__(self, uri: str, sweep: str, size: int = QUEUE_SIZE, *,
                 fault: Callable[[BaseException], str | None] = store_fault,
                 answers: Callable[[], bool] | None = None,
                 say: Callable[[str], None] | None = None,
                 first_wait_s: float = FIRST_WAIT_S, max_wait_s: float = MAX_WAIT_S):
        self.uri, self.sweep = uri, sweep
        self.fault = fault
        self.answers = answers or (lambda: reachable(uri))
        self.say = say or _say
        self.first_wait_s, self.max_wait_s = first_wait_s, max_wait_s
        self.size = size
        self.behind = False  # a write was dropped or left: MLflow lacks what the record has
        self.dropped = 0  # writes dropped for a full queue
        self.writes = 0  # what the calls made said they wrote (the backfill's counts)
        self.down_since: float | None = None  # time.time() of the first unanswered try
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._pending = 0  # put and not yet done (written, dropped or left)
        self._done = threading.Condition()
        self._quit = threading.Event()
        self._wake = threading.Event()  # cuts a back-off short (a drain began, or stop)
        self._draining = False
        self._finished = 0  # writes done (written, dropped or left): a drain's progress
        self._thread: threading.Thread | None = None
        self._back: tuple[float, float] | None = None  # (down since, back at) until caught up
        self._since_back = 0  # writes made since the server answered again

    @property
    def pending(self) -> int:
        return self._pending

    def put(self, fn: Callable, /, *args, **kwargs) -> bool:
        """Queue `fn(*args, **kwargs)`; never waits. False when it was dropped (the queue is
        full, or the writer has stopped): MLflow is then behind."""
        with self._done:
            if self._quit.is_set():
                self.behind = True
                return False
            try:
                self._queue.put_nowait((fn, args, kwargs))
            except queue.Full:
                self.dropped += 1
                self.behind = True
                if self.dropped == 1:
                    self.say(f"MLflow at {self.uri}: {self.size} writes wait already; newer "
                             f"ones are dropped and filled in from the record at the end")
                return False
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=f"mlflow-writer-{self.sweep}")
                self._thread.start()
        return True

    def drain(self, timeout_s: float, give_up: Callable[[], bool] = lambda: False,
              stall_s: float = CATCH_UP_STALL_S, most_s: float | None = None) -> bool:
        """Wait until every queued write is done: True. False at `timeout_s` seconds, unless
        the writes are going through then (see the module's docstring; at most `most_s`
        in all, default `timeout_s` × CATCH_UP_FACTOR), or when `give_up()` (at once)."""
        start = time.monotonic()
        deadline = start + timeout_s
        most = start + (timeout_s * CATCH_UP_FACTOR if most_s is None else most_s)
        moved, probed = None, False  # when a write was last done; the server asked once
        with self._done:
            self._draining = True
            self._wake.set()  # a back-off under way ends now
            try:
                finished = self._finished
                while self._pending:
                    now = time.monotonic()
                    if self._finished != finished:
                        finished, moved = self._finished, now
                    if give_up() or now >= most:
                        return False
                    if now >= deadline and (moved is None or now - moved > stall_s):
                        if probed or self.down_since is None or not self._answers_now():
                            return False
                        probed, moved = True, now  # back at the deadline: a grace to write
                        self._wake.set()
                    self._done.wait(0.1)
            finally:
                self._draining = False
        return True

    def _answers_now(self) -> bool:
        """`answers()` with the lock released (it may wait for the server's answer)."""
        self._done.release()
        try:
            return self.answers()
        finally:
            self._done.acquire()

    def stop(self) -> None:
        """Write nothing more: what is still queued is left to the backfill (the record has
        it); a write under way finishes. The thread ends once the queue is empty."""
        with self._done:
            self._quit.set()
            self._wake.set()
            if self._pending:
                self.behind = True

    # --- the writer thread -----------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                fn, args, kwargs = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._quit.is_set():
                    return
                continue
            try:
                if not self._quit.is_set():
                    self._write(fn, args, kwargs)
            finally:
                with self._done:
                    self._pending -= 1
                    self._finished += 1
                    if not self._pending and self._back and not self._quit.is_set():
                        since, back = self._back
                        self._back = None  # said before a drain returns
                        self.say(f"MLflow at {self.uri} answers again (unreachable for "
                                 f"{_duration(back - since)}); it has caught up with the "
                                 f"sweep ({self._since_back} writes)")
                    self._done.notify_all()

    def _write(self, fn: Callable, args: tuple, kwargs: dict) -> None:
        """One write, tried again while the server does not answer (see the docstring)."""
        wait, server_errors = self.first_wait_s, 0
        while True:
            try:
                done = fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any store error; the sweep goes on
                kind = self.fault(e)
                if kind == SERVER_ERROR and not self.answers():
                    kind = UNREACHABLE
                if kind == SERVER_ERROR:
                    server_errors += 1
                    if server_errors > SERVER_RETRIES:
                        self.behind = True
                        kind = None
                if kind is None:
                    log.warning("MLflow %s failed for sweep %s: %s", _name(fn), self.sweep, e)
                    return
                if kind == UNREACHABLE and self.down_since is None:
                    self.down_since, self._back = time.time(), None
                    self.say(f"MLflow at {self.uri} unreachable since "
                             f"{time.strftime('%H:%M:%S', time.localtime(self.down_since))};"
                             f" the sweep goes on, the record keeps everything")
                if self._wake.wait(wait):
                    self._wake.clear()
                if self._quit.is_set():  # stopped: the backfill has it
                    self.behind = True
                    return
                wait = min(2 * wait, DRAIN_WAIT_S if self._draining else self.max_wait_s)
                continue
            if isinstance(done, int) and not isinstance(done, bool):
                self.writes += done
            if self.down_since is not None:
                self._back, self.down_since, self._since_back = (
                    (self.down_since, time.time()), None, 0)
            if self._back is not None:
                self._since_back += 1
            return


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", repr(fn))


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def _say(line: str) -> None:
    """One line on the terminal, under the progress line (which rewrites itself there)."""
    with contextlib.suppress(Exception):  # a closed stdout must not stop the writer
        prefix = "\r\033[K" if sys.stdout.isatty() else ""
        print(prefix + line, flush=True)
