"""A trial that Ray restarted (its process or its node died), told in one line, and Ray's
own driver-side messages kept in a log file instead of on the terminal.

When a trial's process or node dies, Ray (FailureConfig) restarts the trial from its last
checkpoint and calls `on_trial_recover`; the ledger then records the restart and this
module says it once:

    trial 0003 restarted from step 300 on another node: its node died

What Ray 2.60 gives the driver at that moment is the trial's error (`Trial.get_pickled_error`,
and the text of its error file), not the cause: a SIGKILLed node shows up first as an
`ActorUnavailableError` ("Socket closed") of the trial's actor, and the cluster's control
store marks the node dead only when its health checks have failed for a while (15-20 s on
this machine). So the node the trial last reported from is looked at: the control store's
view (`ray.nodes()`), and for a node it still calls alive, its raylet's port (a refused
connection: the raylet is gone). The cause is then:
- **its node died**: a `NodeDiedError`, a raylet that died, a "node ... died" message, or
  the trial's node dead (or gone from the table). A dead node cannot host the restart, so
  it runs "on another node".
- **its process died**: an actor error (`ActorDiedError`, `RayActorError`, an
  `ActorUnavailableError`) or a crashed worker while its node is alive; where it runs
  again is not known yet, so the line names no node.
- otherwise the error's own line (`ValueError: ...`).
When the node does not answer either way (cut off, busy), the line waits for the control
store, checked about once a second from the driver's loop, for `NODE_DEATH_WINDOW_S` at
most (then: its process died); the end of a stage says what is left with what is known.
A trial that failed before its first report has no node of its own: then every node is
looked at, and a node that trials reported from within `NODE_DEATH_WINDOW_S` before the
failure and that is dead now means its node died (chaos.py's kill_node, the node killed as
a trial started on it: the line used to say its process died); every node alive and
answering means its process died.

The record keeps each restart (`TrialRecord.restart_log`: when, the step it restarts from,
the cause), so the summary, the report and the parent run's figures count them.

Ray Tune's driver-side logging (the 20-line traceback of a failed trial task, a failed
experiment-state sync) and the lines Ray's error listener prints ("(raylet) The node ...
has been marked dead") go to `ray-driver.log` beside the study (the sweep folder on a
local storage, else ./runs/<name>/ on the driver); one-line warnings without a traceback
still reach the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

NODE_DIED, PROCESS_DIED = "node died", "process died"
PHRASES = {NODE_DIED: "its node died", PROCESS_DIED: "its process died"}
NODE_DEATH_WINDOW_S = 45.0  # longer than the cluster takes to mark a dead node (~15-20 s)
POLL_S = 1.0  # how often pending restarts look at the cluster's nodes
PROBE_S = 0.3  # a raylet's answer to a connection, seconds
ALL_NODES = "*"  # in a probe set: ask every node the control store calls alive
LOG_NAME = "ray-driver.log"
_NODE_DIED_TEXT = re.compile(r"node\b[^.\n]{0,120}\b(has )?died|raylet died|node is dead",
                             re.IGNORECASE)
_FAILURE_HEADER = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)\s*$", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Ray's error listener thread: what it prints (a node marked dead, ...) goes to the log.
RAY_PRINTERS = ("ray_listen_error_messages",)


def last_failure(text: str) -> str:
    """The newest failure of a Ray trial error file (it appends `Failure # N (...)` blocks)."""
    parts = _FAILURE_HEADER.split(text or "")
    return parts[-1].strip() if parts else ""


def error_line(text: str) -> str:
    """An error's own line: the exception line of a traceback (its last line), else the
    first line; at most 200 characters."""
    text = _ANSI.sub("", text or "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    # Ray writes a task's traceback under a `ray::Class.method() (pid=..)` header.
    tb = lines[0].startswith("ray::") or any(
        ln.startswith(("Traceback (most recent call last)", 'File "')) for ln in lines)
    return (lines[-1] if tb else lines[0])[:200]


def classify(error: BaseException | None, text: str, node_alive: bool | None) -> str | None:
    """The cause of a restart: NODE_DIED, PROCESS_DIED, the error's line, or None while it
    cannot be told yet (an actor error whose node the cluster has not ruled on).
    `node_alive`: the node the trial ran on, as the cluster sees it now (None: unknown)."""
    from ray import exceptions as rx

    text = last_failure(text) or (str(error) if error is not None else "")
    if isinstance(error, rx.RayTaskError):  # the trainable raised: its own error
        return error_line(text)
    if isinstance(error, (rx.NodeDiedError, rx.LocalRayletDiedError)) or (
            _NODE_DIED_TEXT.search(text)):
        return NODE_DIED
    if node_alive is False:
        return NODE_DIED
    actor = isinstance(error, (rx.RayActorError, rx.WorkerCrashedError)) or (
        error is None and ("The actor" in text or "worker died" in text.lower()))
    if not actor:
        return error_line(text)
    return PROCESS_DIED if node_alive is True else None


def restart_line(key: str, step: int, cause: str, where: str | None) -> str:
    """`trial 0003 restarted from step 300 on another node: its node died`."""
    place = f" {where}" if where else ""
    return f"trial {key} restarted from step {step}{place}: {PHRASES.get(cause, cause)}"


def restarts_phrase(trials) -> str | None:
    """`2 restarts (trial 0003: node died; trial 0005: process died)`; None without any."""
    parts, n = [], 0
    for t in trials:
        if not t.restarts:
            continue
        n += t.restarts
        causes = [e.get("cause") or "unknown" for e in t.restart_log][-t.restarts:]
        causes += ["unknown"] * (t.restarts - len(causes))
        parts.append(f"trial {t.key}: {', '.join(causes)}")
    if not n:
        return None
    return f"{n} restart{'s' if n != 1 else ''} ({'; '.join(parts)})"


@dataclass
class _Pending:
    key: str
    entry: dict  # the TrialRecord.restart_log entry it completes
    error: BaseException | None
    text: str
    node: str | None  # where the trial ran when it failed
    since: float = field(default_factory=time.monotonic)
    new_node: str | None = None  # where it reported from after the restart


class RestartNotices:
    """The restarts whose line is still to be said; `poll` decides when the cause is known.
    `save(key)` writes the trial's record once an entry's cause is set; `say(line)` prints."""

    def __init__(self, save: Callable[[str], None], say: Callable[[str], None] | None = None,
                 nodes: Callable[[set[str]], dict[str, bool | None]] | None = None,
                 window_s: float = NODE_DEATH_WINDOW_S):
        self.save, self.say = save, say or _say
        self.nodes = nodes or alive_nodes
        self.window_s = window_s
        self.pending: list[_Pending] = []
        self._last_poll = 0.0
        self.seen: dict[str, float] = {}  # node -> when a trial last reported from it

    def add(self, key: str, entry: dict, error: BaseException | None, text: str,
            node: str | None) -> None:
        self.pending.append(_Pending(key, entry, error, text, node))
        self.poll(force=True)

    def reported(self, key: str, node: str | None) -> None:
        """The trial reported (from `node`): the node was alive then, and where a pending
        restart of the trial runs."""
        if node:
            self.seen[node] = time.monotonic()
        for p in self.pending:
            if p.key == key and node and p.new_node is None:
                p.new_node = node

    def poll(self, force: bool = False, final: bool = False) -> None:
        """Say every restart whose cause is known now; `final` (the end of a stage): say
        the rest with what is known."""
        now = time.monotonic()
        if not self.pending or (not force and not final and now - self._last_poll < POLL_S):
            return
        self._last_poll = now
        probe = {p.node for p in self.pending if p.node}
        if any(p.node is None for p in self.pending):
            probe.add(ALL_NODES)
        try:
            states = self.nodes(probe)
        except Exception:  # noqa: BLE001 - a cluster that does not answer: unknown
            states = {}
        for p in list(self.pending):
            # A node the cluster no longer lists is not alive either.
            node_alive = (states.get(p.node, False if states else None) if p.node
                          else self._unknown_node(p, states))
            if node_alive is None and p.new_node and p.new_node == p.node:
                node_alive = True  # it runs there again: that node is alive
            cause = classify(p.error, p.text, node_alive)
            if cause is None and (final or now - p.since >= self.window_s):
                cause = PROCESS_DIED
            if cause is not None:
                self.pending.remove(p)
                self._said(p, cause)

    def _unknown_node(self, p: _Pending, states: dict[str, bool | None]) -> bool | None:
        """A trial that failed before it reported: its node is one of the cluster's. Dead
        (False) when a node trials reported from shortly before the failure is dead or gone
        now; alive (True) when every node is alive and answers; else unknown (None)."""
        if not states:
            return None
        recent = [n for n, at in self.seen.items() if at >= p.since - self.window_s]
        if any(states.get(n, False) is False for n in recent):
            return False
        return True if all(v is not None for v in states.values()) else None

    def _said(self, p: _Pending, cause: str) -> None:
        if cause == NODE_DIED:
            where = "on another node"
        elif p.new_node and p.node:
            where = "on another node" if p.new_node != p.node else "on the same node"
        else:
            where = None
        p.entry["cause"] = cause
        if where:
            p.entry["where"] = where
        self.save(p.key)
        self.say(restart_line(p.key, int(p.entry.get("step", 0)), cause, where))


def alive_nodes(probe: set[str]) -> dict[str, bool | None]:
    """node id -> alive (True), dead (False) or unknown (None). The cluster's control store
    marks a node dead only after its health checks have failed for a while, so each node in
    `probe` (every node, with ALL_NODES in it) that it still calls alive is asked directly:
    its raylet's port refusing a connection means the raylet is gone (False); no answer
    within PROBE_S, unknown."""
    import ray

    out: dict[str, bool | None] = {}
    for n in ray.nodes():
        node, alive = n["NodeID"], bool(n.get("Alive"))
        out[node] = alive
        if alive and (node in probe or ALL_NODES in probe):
            try:
                socket.create_connection((n["NodeManagerAddress"], n["NodeManagerPort"]),
                                         timeout=PROBE_S).close()
            except ConnectionRefusedError:
                out[node] = False
            except OSError:  # a timeout, no route: the node may be cut off or busy
                out[node] = None
    return out


def trial_error(trial) -> BaseException | None:
    """The newest error of a Ray trial, as Ray pickled it (None when it has none)."""
    try:
        return trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - a file that is gone or does not unpickle
        return None


def _say(line: str) -> None:
    """One line on the terminal, under the progress line (which rewrites itself there)."""
    with contextlib.suppress(Exception):  # a closed stdout must not cost the sweep
        prefix = "\r\033[K" if sys.stdout.isatty() else ""
        print(prefix + line, flush=True)


# --- Ray's driver-side messages into a log file -------------------------------------------
def _append(text: str) -> None:
    """A line into the current sweep's log; never raises (its disk may be what fails)."""
    if _LOG_TO:
        with contextlib.suppress(OSError), open(_LOG_TO[0], "a") as fh:
            fh.write(text.rstrip("\n") + "\n")


class _ToLog(logging.Handler):
    def emit(self, record) -> None:
        with contextlib.suppress(Exception):
            _append(self.format(record))


class _ToTerminal(logging.Handler):
    """A one-line message without a traceback still reaches stderr (as it is then)."""

    def emit(self, record) -> None:
        if record.exc_info or "\n" in record.getMessage():
            return
        with contextlib.suppress(Exception):
            sys.stderr.write(self.format(record) + "\n")


class _Routed:
    """A stream whose writes from Ray's printer threads go to the sweep's log file."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        if threading.current_thread().name in RAY_PRINTERS and _LOG_TO:
            clean = _ANSI.sub("", text)
            if clean.strip():
                _append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} (ray) {clean.rstrip()}")
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


_LOG_TO: list[Path] = []  # the log of the sweep that ran last in this process
_HANDLERS = (_ToLog(), _ToTerminal())
_HANDLERS[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
_HANDLERS[1].setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
RAY_LOGGERS = ("ray.tune", "ray.train")


def route_ray_messages(path: Path) -> Path:
    """From now on in this process, Ray Tune's and Ray Train's driver-side log records go
    to `path` (one-line warnings without a traceback still reach stderr), and so does what
    Ray's error listener prints. Not undone when the sweep's stages end: Ray's background
    syncs log after them, and a node is often marked dead while the command closes the
    sweep; the next sweep in the process routes them to its own log. The streams stay
    wrapped; every other write passes through as before."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    _LOG_TO[:] = [path]
    if not isinstance(sys.stdout, _Routed):
        sys.stdout = _Routed(sys.stdout)
    if not isinstance(sys.stderr, _Routed):
        sys.stderr = _Routed(sys.stderr)
    for name in RAY_LOGGERS:
        lg = logging.getLogger(name)
        for h in _HANDLERS:
            if h not in lg.handlers:
                lg.addHandler(h)
        lg.propagate = False
    return path
