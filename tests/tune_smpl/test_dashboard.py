"""`tune-smpl dashboard`: optuna-dashboard on a sweep's study starts, answers HTTP 200 with
the objective named `val_accuracy`, and stops on SIGINT. The sweep is a record written by
hand (no Ray needed): the dashboard reads the record, not Ray."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from optuna.distributions import FloatDistribution, distribution_to_json

from tests.tune_smpl.conftest import REPO, cli_env, free_port
from tune_smpl.commands import dashboard
from tune_smpl.sweep.record import SweepRecord, TrialRecord
from tune_smpl.sweep.storage import SweepStorage
from tune_smpl.sweep.study import build_study


def _record(root, name="dash") -> SweepRecord:
    record = SweepRecord(SweepStorage(str(root)), name)
    record.create({"settings": {}, "base": {}, "tracking_uri": "", "status": "finished",
                   "wall_s": 1.0, "runs": 1, "sampler": {"sampler": "tpe"}},
                  "lr: {type: float, low: 0.0001, high: 0.3, log: true}\n")
    dist = distribution_to_json(FloatDistribution(1e-4, 0.3, log=True))
    for i, (lr, outcome) in enumerate([(0.01, "completed"), (0.1, "early_stopped"),
                                       (0.2, "diverged")]):
        reports = [] if outcome == "diverged" else [
            {"step": s, "val_accuracy": 0.5 + 0.1 * i + s / 1000} for s in (10, 20)]
        record.save_trial(TrialRecord(key=f"{i:04d}", number=i, params={"lr": lr},
                                      distributions={"lr": dist}, config={"lr": lr},
                                      outcome=outcome, reports=reports))
    return record


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read()


def _sigint_default() -> None:
    # A shell's background job inherits SIGINT ignored (so would this child); a terminal's
    # Ctrl-C reaches a foreground command with the default action, as here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_dashboard_serves_the_study_and_stops_on_sigint(tmp_path):
    _record(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tune_smpl", "dashboard", "dash", "--storage-path",
         str(tmp_path), "--port", str(port)], cwd=REPO, env=cli_env("dash"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_sigint_default)
    try:
        status, deadline = None, time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/dashboard/")
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, f"no answer on port {port}; rc={proc.poll()}"
        _, body = _get(f"http://127.0.0.1:{port}/api/studies")
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash"]
        _, body = _get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")
        detail = json.loads(body)
        assert detail["objective_names"] == ["val_accuracy"]  # set_metric_names
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Pruned", "Fail"]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/dashboard/" in out
    assert "rebuilt from the sweep's record" in out
    with pytest.raises(OSError):  # the port is free again: nothing listens
        _get(f"http://127.0.0.1:{port}/dashboard/", timeout=1)


def test_dashboard_prefers_the_sweeps_study_file(tmp_path):
    record = _record(tmp_path)
    db = tmp_path / "dash" / "optuna.db"
    build_study(record.trials(), "dash", f"sqlite:///{db}")
    url, where = dashboard.study_storage(record, str(tmp_path / "scratch"))
    assert url == f"sqlite:///{db}" and where == str(db)


def test_dashboard_refuses_a_busy_port_and_an_unknown_sweep(tmp_path, capsys):
    import socket

    from tune_smpl.cli import main

    _record(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["dashboard", "dash", "--storage-path", str(tmp_path),
                     "--port", str(port)]) == 2
    assert f"--port={port}" in capsys.readouterr().err
    assert main(["dashboard", "nope", "--storage-path", str(tmp_path)]) == 2
    assert "found: dash" in capsys.readouterr().err
