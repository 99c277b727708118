"""Store defaults, experiments, and check_store's fast one-line failures."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_tracking import (
    check_store,
    default_artifact_root,
    default_tracking_uri,
    ensure_experiment,
    experiment_artifact_location,
)


def test_default_store_is_sqlite_under_the_absolute_runs_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert default_tracking_uri("runs").startswith("sqlite:////")
    assert default_artifact_root() == f"{tmp_path}/runs/mlartifacts"
    assert default_tracking_uri(tmp_path / "x") == f"sqlite:///{tmp_path}/x/mlflow.db"
    with pytest.raises(ValueError, match="`runs_dir` must be a local directory.*s3://b/r"):
        default_tracking_uri("s3://b/r")


def test_experiment_artifacts_sit_beside_the_sqlite_file(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    got = experiment_artifact_location(uri, "tune smpl/v1")
    assert got == f"{tmp_path}/runs/mlartifacts/tune_smpl_v1"
    assert experiment_artifact_location("http://127.0.0.1:5000", "x") is None


def test_ensure_experiment_is_idempotent_and_keeps_its_location(store_uri, experiment,
                                                                  tmp_path):
    first = ensure_experiment(store_uri, experiment, str(tmp_path / "art"))
    assert ensure_experiment(store_uri, experiment, "/elsewhere") == first
    exp = MlflowClient(store_uri).get_experiment(first)
    assert exp.name == experiment and exp.artifact_location == str(tmp_path / "art")


def test_ensure_experiment_refuses_a_deleted_experiment(store_uri, experiment):
    MlflowClient(store_uri).delete_experiment(ensure_experiment(store_uri, experiment))
    with pytest.raises(ValueError, match=f"experiment '{experiment}' must be active"):
        ensure_experiment(store_uri, experiment)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_store_fails_fast_when_nothing_listens():
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(ValueError) as e:
        check_store(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 10
    msg = str(e.value)
    assert msg.startswith(f"MLflow tracking store http://127.0.0.1:{port} is not reachable: ")
    assert "\n" not in msg


def test_check_store_times_out_on_a_server_that_never_answers():
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ValueError, match="not reachable: no answer within 1 s"):
            check_store(f"http://127.0.0.1:{port}", timeout_s=1)
        assert time.monotonic() - start < 5


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the name http.server calls
        code = 200 if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_check_store_accepts_a_server_that_answers():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check_store(f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()


def test_check_store_creates_the_sqlite_directory(tmp_path):
    check_store(default_tracking_uri(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()


def test_check_store_rejects_a_sqlite_path_it_cannot_create(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the directory should be: fails even as root
    uri = f"sqlite:///{blocker / 'runs' / 'mlflow.db'}"
    with pytest.raises(ValueError, match=f"MLflow tracking store {uri} is not writable"):
        check_store(uri)


def test_check_store_rejects_the_file_store_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = Path(tmp_path).as_uri()
    with pytest.raises(ValueError, match="is a file store, which MLflow 3 refuses"):
        check_store(uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_store(uri)


def test_a_creator_killed_anywhere_leaves_no_half_made_store(tmp_path):
    """A process killed while MLflow makes a new sqlite store's tables (dozens of
    transactions) left a file MLflow could not open again (`table ... already exists`;
    benchmarks/chaos.py, a driver killed 7.5 s into a sweep's first start). The store is
    made beside its name and renamed whole: after a SIGKILL at seeded instants of the
    making, the store is absent or whole, and the next process makes or opens it."""
    import os
    import random
    import signal
    import subprocess
    import sys

    db = tmp_path / "runs" / "mlflow.db"
    uri = f"sqlite:///{db}"
    part = db.with_name(db.name + ".creating")
    code = f"from mlflow_tracking import ensure_experiment; ensure_experiment({uri!r})"
    rng = random.Random(20261204)
    inside = after = 0  # kills that fell inside the making; after the rename
    # Until two kills fell inside (a loaded machine wakes the watcher late, and a kill can
    # land after the rename: the store is then whole, and is removed for the next try).
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not part.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None and part.exists():
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the making (about 1 s)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        if db.exists():  # killed after the rename (or it ended first): whole
            # (in a process of its own: MLflow keeps a store open per URI in a process,
            # and this file is removed and made again)
            opened = subprocess.run([sys.executable, "-c", (
                "from mlflow import MlflowClient; "
                f"assert MlflowClient({uri!r}).get_experiment_by_name('Default')")],
                capture_output=True, text=True, timeout=120)
            assert opened.returncode == 0, opened.stderr
            db.unlink()
            after += 1
            continue
        inside += part.exists()
        if inside == 2:
            break
    assert inside, f"no kill fell inside the making ({after} after it)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert db.exists() and not part.exists()
    exp = MlflowClient(uri).get_experiment_by_name("tune-smpl")
    assert exp is not None and exp.lifecycle_stage == "active"
