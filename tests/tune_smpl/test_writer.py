"""The sweep's MLflow writer (tune_smpl/sweep/writer.py): one thread, one bounded queue.

Fake writes stand for the store's calls, raising what MLflow's client raises when the
server is away (requests' ConnectionError), refuses a request (a 400's MlflowException) or
answers 5xx; the faults are classified by the real `store_fault`. A store_fault test runs
the real client against a closed port.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from mlflow_tracking.store import (
    SERVER_ERROR,
    UNREACHABLE,
    driver_http_settings,
    store_fault,
)
from tests.tune_smpl.conftest import free_port
from tune_smpl.sweep.writer import SERVER_RETRIES, Writer


def _writer(lines: list, size: int = 100, answers=lambda: True) -> Writer:
    return Writer("http://127.0.0.1:1", "w", size, answers=answers, say=lines.append,
                  first_wait_s=0.01, max_wait_s=0.05)


def test_writes_are_made_in_the_order_they_were_put():
    lines, done = [], []
    w = _writer(lines, size=1000)
    for i in range(500):
        assert w.put(done.append, i)
    assert w.drain(30) and done == list(range(500))
    assert not w.behind and not lines and w.pending == 0
    w.stop()


def test_a_server_away_is_said_once_retried_and_caught_up_after():
    lines, done, tries = [], [], []
    down = threading.Event()
    down.set()

    def write(i):
        tries.append(i)
        if down.is_set():
            raise requests.exceptions.ConnectionError("Connection refused")
        done.append(i)

    w = _writer(lines)
    took = []
    for i in range(20):  # the first one is stuck; the others wait behind it
        t0 = time.perf_counter()
        w.put(write, i)
        took.append(time.perf_counter() - t0)
    time.sleep(0.5)
    assert max(took) < 0.05 and done == [] and tries.count(0) > 3 and set(tries) == {0}
    assert len(lines) == 1 and lines[0].startswith("MLflow at http://127.0.0.1:1 unreachable "
                                                   "since ")
    assert lines[0].endswith("; the sweep goes on, the record keeps everything")
    down.clear()
    assert w.drain(30) and done == list(range(20)) and not w.behind
    assert len(lines) == 2 and "answers again" in lines[1] and "(20 writes)" in lines[1]
    # a second outage is said again, once
    down.set()
    w.put(write, 20)
    time.sleep(0.2)
    down.clear()
    assert w.drain(30) and done[-1] == 20 and len(lines) == 4
    w.stop()


def test_a_refused_write_is_dropped_without_holding_up_the_rest(caplog):
    lines, done = [], []

    def refused():
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"})

    w = _writer(lines)
    w.put(done.append, 1)
    w.put(refused)
    w.put(done.append, 2)
    assert w.drain(5) and done == [1, 2]
    assert not w.behind and not lines  # a retry would be refused too; nothing to fill in
    assert ["MLflow refused failed for sweep w: INVALID_PARAMETER_VALUE: bad"] == [
        r.getMessage() for r in caplog.records if r.name == "tune_smpl.sweep.writer"]
    w.stop()


@pytest.mark.parametrize("up", [True, False])
def test_a_5xx_is_tried_again_then_dropped_if_the_server_is_up(up):
    """Up (its /health answers): a few more tries, then dropped and MLflow behind; down
    (a proxy answering 503 for a dead server): retried as unreachable until it answers."""
    lines, tries = [], []
    answered = threading.Event()

    def busy():
        tries.append(1)
        if not answered.is_set():
            raise RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "503"})

    w = _writer(lines, answers=lambda: up)
    w.put(busy)
    if up:
        assert w.drain(5) and len(tries) == 1 + SERVER_RETRIES and w.behind and not lines
    else:
        time.sleep(0.5)
        assert len(tries) > 1 + SERVER_RETRIES and "unreachable" in lines[0]
        answered.set()
        assert w.drain(5) and not w.behind
    w.stop()


def test_a_full_queue_drops_new_writes_and_marks_mlflow_behind():
    lines, done = [], []
    release = threading.Event()
    w = _writer(lines, size=3)
    w.put(release.wait, 10)  # the writer takes it and waits: the queue is empty again
    deadline = time.monotonic() + 5
    while w._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [w.put(done.append, i) for i in range(5)] == [True] * 3 + [False] * 2
    assert w.behind and w.dropped == 2
    assert len(lines) == 1 and "3 writes wait already" in lines[0]  # said once
    release.set()
    assert w.drain(5) and done == [0, 1, 2]
    w.stop()


def test_drain_gives_up_at_its_timeout_or_when_asked_and_stop_leaves_the_rest():
    lines, done = [], []
    release = threading.Event()
    w = _writer(lines)
    w.put(release.wait, 10)
    w.put(done.append, 1)
    t0 = time.monotonic()
    assert not w.drain(0.3)
    assert 0.25 < time.monotonic() - t0 < 2
    t0 = time.monotonic()
    assert not w.drain(30, give_up=lambda: time.monotonic() - t0 > 0.2)  # a second Ctrl-C
    assert time.monotonic() - t0 < 2
    w.stop()
    assert w.behind  # what was left is the backfill's
    release.set()
    assert w.drain(5) and done == []  # stopped: nothing more is written
    assert not w.put(done.append, 2)
    w._thread.join(5)
    assert not w._thread.is_alive()


def test_store_faults_tell_a_server_away_from_a_refused_request(monkeypatch):
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        monkeypatch.delenv(key, raising=False)
    driver_http_settings()  # what every recorder of an http store sets
    client = MlflowClient(f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    with pytest.raises(MlflowException) as away:
        client.get_experiment_by_name("x")
    assert time.monotonic() - t0 < 5  # one attempt, not MLflow's minute of retries
    assert store_fault(away.value) == UNREACHABLE
    assert store_fault(requests.exceptions.ReadTimeout("slow")) == UNREACHABLE
    assert store_fault(RestException({"error_code": "INVALID_PARAMETER_VALUE",
                                      "message": "bad"})) is None
    assert store_fault(MlflowException("x", error_code=INVALID_PARAMETER_VALUE)) is None
    assert store_fault(MlflowException("x", error_code=TEMPORARILY_UNAVAILABLE)) == SERVER_ERROR
    assert store_fault(requests.exceptions.RetryError("too many 500")) == SERVER_ERROR
    assert store_fault(ValueError("trial 'x' has no MLflow run")) is None


@pytest.mark.parametrize("back_after_s", [0.8, 2.3])  # well before, and just at, the deadline
def test_a_drain_catches_up_with_a_server_back_near_its_end(back_after_s):
    """The end of a sweep (sync.finish) drains the queue for at most its timeout: a server
    back near that end is written to within a second (not after the back-off's 10 s), and
    the drain goes on past its timeout while the writes go through (chaos rounds 29, 35
    and 78 had left MLflow behind with the server back for 6-10 s)."""
    lines, done = [], []
    down = threading.Event()
    down.set()

    def write(i):
        if down.is_set():
            raise requests.exceptions.ConnectionError("Connection refused")
        time.sleep(0.05)  # 40 writes: 2 s of catching up, past the drain's timeout
        done.append(i)

    w = Writer("http://127.0.0.1:1", "w", 100, answers=lambda: not down.is_set(),
               say=lines.append)  # the real back-off: 0.5 s doubling to 10 s
    for i in range(40):
        w.put(write, i)
    time.sleep(4)  # the back-off's wait is 4 s long by now (0.5, 1, 2, then 4)
    threading.Timer(back_after_s, down.clear).start()
    t0 = time.monotonic()
    assert w.drain(2.5, stall_s=1.0)
    took = time.monotonic() - t0
    assert done == list(range(40)) and not w.behind
    assert back_after_s + 2 < took < back_after_s + 4.5  # a second at most to notice
    assert "caught up" in lines[-1]
    w.stop()


def test_a_drain_gives_up_at_its_timeout_while_the_server_stays_away():
    lines = []

    def write():
        raise requests.exceptions.ConnectionError("Connection refused")

    w = Writer("http://127.0.0.1:1", "w", 100, answers=lambda: False, say=lines.append)
    w.put(write)
    t0 = time.monotonic()
    assert not w.drain(1.5, stall_s=0.5)
    assert 1.4 < time.monotonic() - t0 < 2.5 and w.pending == 1
    w.stop()
    assert w.behind
