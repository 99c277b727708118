"""A tracking server that goes away, and `tune-smpl sync` (issue 25).

- An `mlflow server` killed mid-sweep and started again on the same port and store some
  seconds later: the sweep goes on (no report waits on MLflow: the driver's callback is
  timed), says so once, and MLflow ends complete without a resume; no "View run" lines.
- A sweep recorded with MLflow unreachable throughout, then `tune-smpl sync` into a sqlite
  store: the runs the record says, metric point for metric point; and the live sweep above
  synced into an empty store: the same runs as the live store.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_tracking import check_store
from mlflow_tracking.values import TRIAL_STATUSES
from tests.tune_smpl import views
from tests.tune_smpl.conftest import free_port
from tune_smpl.cli import main
from tune_smpl.sweep import callbacks
from tune_smpl.sweep.tracking import report_metrics

OUTAGE_S = 6  # the server is away this long, plus its start-up
# Ten reports per trial, no ASHA stop before the last: every trial completes.
SWEEP = ["--num-samples", "4", "--gpus-per-trial", "0", "--grace-period", "10",
         *sum((["--set", s] for s in ("steps=200", "eval_every=20", "batch_size=16", "mu=2",
                                       "val_size=100")), [])]


def _server(root: Path, port: int, tag: str) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port over root's sqlite store and artifacts, up."""
    log = open(root / f"server-{tag}.log", "w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root}/server.db", "--artifacts-destination", str(root / "mlartifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (root / f"server-{tag}.log").read_text()[-3000:]
        try:
            check_store(f"http://127.0.0.1:{port}", timeout_s=1)
            return proc
        except ValueError:
            assert time.monotonic() < deadline, "mlflow server not up in 120 s"
            time.sleep(0.3)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _clean(v: float):
    return "nan" if isinstance(v, float) and math.isnan(v) else v


def record_view(sweep: Path) -> dict:
    """What MLflow must show, read from the record alone: per trial its outcome's run
    status and every metric point (key -> [(step, value)])."""
    out = {}
    for key, t in views.record(sweep).items():
        points: dict[str, list] = {}
        for row in t["reports"]:
            for k, v in report_metrics(row).items():
                points.setdefault(k, []).append((row["step"], _clean(float(v))))
        out[key] = {"trial_status": t["outcome"], "status": TRIAL_STATUSES[t["outcome"]],
                    "metrics": points, "lr": str(t["config"]["lr"])}
    return out


def mlflow_view(uri: str, name: str) -> tuple[dict, dict]:
    """(the same shape read from MLflow, the parent's status, tags, params and metrics)."""
    client = MlflowClient(uri)
    parent, children = views.mlflow_runs(uri, name)
    out = {}
    for key, c in children.items():
        out[key] = {"trial_status": c.data.tags["trial_status"], "status": c.info.status,
                    "metrics": {k: [(m.step, _clean(m.value)) for m in
                                    client.get_metric_history(c.info.run_id, k)]
                                for k in c.data.metrics},
                    "lr": c.data.params["lr"]}
    keep = ("sweep_status", "best_trial_id", "best_measure")
    return out, {"status": parent.info.status, "params": parent.data.params,
                 "metrics": parent.data.metrics,
                 "tags": {k: v for k, v in parent.data.tags.items() if k in keep}}


@pytest.fixture(scope="module")
def outage(ray_local, tmp_path_factory):
    """The sweep through a server that is killed at the first report and started again
    OUTAGE_S seconds later; yields (root, uri, output, callback times, window)."""
    root = tmp_path_factory.mktemp("outage")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = {"proc": _server(root, port, "first")}
    window: dict[str, float] = {}
    sweep = root / "runs" / "out"

    def chaos():
        while views.report_count(sweep) < 1:
            time.sleep(0.05)
        _kill(server["proc"])
        window["down"] = time.monotonic()
        time.sleep(OUTAGE_S)
        server["proc"] = _server(root, port, "second")
        window["up"] = time.monotonic()

    took: list[tuple[float, float]] = []  # (start, seconds) of each on_trial_result
    real = callbacks.LedgerCallback.on_trial_result

    def timed(self, *args, **kwargs):
        t0 = time.monotonic()
        try:
            return real(self, *args, **kwargs)
        finally:
            took.append((t0, time.monotonic() - t0))

    mp = pytest.MonkeyPatch()
    mp.setattr(callbacks.LedgerCallback, "on_trial_result", timed)
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        mp.delenv(key, raising=False)  # as a user's shell has them; restored after
    import contextlib
    import io

    out = io.StringIO()
    thread = threading.Thread(target=chaos, daemon=True)
    try:
        thread.start()
        with contextlib.redirect_stdout(out):
            rc = main(["tune", "--name", "out", "--storage-path", str(root / "runs"),
                       "--tracking-uri", uri, *SWEEP])
        thread.join(180)
        assert rc == 0, out.getvalue()[-3000:]
        yield root, uri, out.getvalue(), took, window
    finally:
        mp.undo()
        _kill(server["proc"])


def test_a_server_away_mid_sweep_holds_up_no_report_and_mlflow_ends_complete(outage):
    root, uri, out, took, window = outage
    assert set(window) == {"down", "up"}, "the server was not killed and started again"
    while_down = [s for t0, s in took if window["down"] <= t0 <= window["up"]]
    assert while_down, "no report came while the server was away"
    slowest = max(s for _, s in took)
    print(f"server away {window['up'] - window['down']:.1f} s, {len(while_down)} of "
          f"{len(took)} reports then; the slowest callback {slowest:.3f} s")
    assert slowest < 1.0, sorted(s for _, s in took)[-5:]
    lines = out.splitlines()
    away = [x for x in lines if "unreachable since" in x]
    assert away == [f"MLflow at {uri} unreachable since {away[0].split('since ')[1]}"] and \
        away[0].endswith("; the sweep goes on, the record keeps everything"), away
    assert len([x for x in lines if f"MLflow at {uri} answers again" in x]) == 1, lines
    assert "View run" not in out and "View experiment" not in out
    assert "behind the record" not in out  # nothing left for a sync
    sweep = root / "runs" / "out"
    views.check_finished(sweep, uri, trials=4)
    children, parent = mlflow_view(uri, "out")
    assert children == record_view(sweep)  # every trial, every metric point, every status
    assert parent["status"] == "FINISHED"
    assert json.loads((sweep / "sweep.json").read_text())["runs"] == 1  # no resume


def test_sync_rebuilds_a_live_sweep_into_an_empty_store(outage, tmp_path, capsys):
    root, uri, *_ = outage
    store = f"sqlite:///{tmp_path}/b.db"
    args = ["sync", "out", "--storage-path", str(root / "runs")]
    assert main([*args, "--tracking-uri", store]) == 0
    assert "writes made" in capsys.readouterr().out
    assert mlflow_view(store, "out") == mlflow_view(uri, "out")
    # the live store (the sweep's own, from sweep.json) lacks nothing
    assert main(args) == 0
    assert f"MLflow at {uri} matches its record (5 runs; nothing was missing)" in \
        capsys.readouterr().out


def test_a_sweep_with_mlflow_away_throughout_is_filled_in_by_sync(ray_local, tmp_path,
                                                                  monkeypatch, capsys):
    closed = f"http://127.0.0.1:{free_port()}"
    # The start's check refuses an unreachable server; this is one lost right after it.
    monkeypatch.setattr("tune_smpl.launch.check_store", lambda *a, **k: None)
    runs = str(tmp_path / "runs")
    assert main(["tune", "--name", "away", "--storage-path", runs, "--tracking-uri", closed,
                 *SWEEP]) == 0
    monkeypatch.undo()
    sweep = tmp_path / "runs" / "away"
    capsys.readouterr()
    # sync's default store is the sweep's: still away, one line, exit 2
    assert main(["sync", "away", "--storage-path", runs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and closed in err[0]
    store = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["sync", "away", "--storage-path", runs, "--tracking-uri", store]) == 0
    views.check_finished(sweep, store, trials=4)
    children, parent = mlflow_view(store, "away")
    assert children == record_view(sweep)
    meta = json.loads((sweep / "sweep.json").read_text())
    assert parent["params"]["num_samples"] == "4" and parent["params"]["sampler"] == "tpe"
    assert parent["params"]["sampler_startup_trials"] == str(
        meta["sampler"]["sampler_startup_trials"])
    assert parent["metrics"]["wall_s"] == round(meta["wall_s"], 2)
    client = MlflowClient(store)
    model_uri = client.get_run(views.mlflow_runs(store, "away")[0].info.run_id).data.tags[
        "best_model_uri"]
    assert model_uri.startswith("models:/")
    capsys.readouterr()
    assert main(["sync", "away", "--storage-path", runs, "--tracking-uri", store]) == 0
    assert "nothing was missing" in capsys.readouterr().out
