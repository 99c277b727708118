"""`mlflow ui` command line and run_ui's printing and Ctrl-C handling."""

from __future__ import annotations

import sys

import pytest

from mlflow_tracking import default_tracking_uri, ui_command
from mlflow_tracking import ui as ui_module


def test_ui_command_for_the_default_store(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    assert ui_command(uri, "0.0.0.0", 5123) == [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
        "--artifacts-destination", f"{tmp_path}/runs/mlartifacts",
        "--host", "0.0.0.0", "--port", "5123", "--workers", "1"]


def test_ui_command_refuses_a_server_and_bad_ports():
    with pytest.raises(ValueError, match="already a server"):
        ui_command("http://127.0.0.1:5000")
    with pytest.raises(ValueError, match="`port` must be an integer in 1..65535.*port=0"):
        ui_command("sqlite:////tmp/x.db", port=0)


def test_the_installed_mlflow_ui_accepts_every_flag_we_pass(tmp_path):
    import click
    from mlflow.cli import cli  # in-process: a `mlflow ui --help` subprocess takes ~5 s

    cmd = ui_command(default_tracking_uri(tmp_path))
    assert cmd[1:4] == ["-m", "mlflow", "ui"]
    ui = cli.get_command(click.Context(cli), "ui")  # MLflow 3: an alias of `server`
    flags = {opt for param in ui.params for opt in param.opts}
    assert {a for a in cmd if a.startswith("--")} <= flags


class _FakeProc:
    def __init__(self, cmd, env, interrupt):
        self.cmd, self.env, self.interrupt, self.waits = cmd, env, interrupt, 0

    def wait(self, timeout=None):
        self.waits += 1
        if self.interrupt and self.waits == 1:
            raise KeyboardInterrupt
        return 0


@pytest.mark.parametrize("interrupt", [False, True])
def test_run_ui_prints_where_and_survives_ctrl_c(tmp_path, monkeypatch, capsys, interrupt):
    started = []

    def fake_popen(cmd, env=None):
        started.append(_FakeProc(cmd, env, interrupt))
        return started[-1]

    monkeypatch.setattr(ui_module.subprocess, "Popen", fake_popen)
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    uri = default_tracking_uri(tmp_path / "runs")
    assert ui_module.run_ui(uri, port=5123) == 0
    out = capsys.readouterr().out
    first, link = out.strip().splitlines()
    assert first == f"MLflow UI at http://127.0.0.1:5123 (store: {uri}); Ctrl-C to stop"
    # no store yet: no experiment id to link, but the link still opens Model training mode
    assert link.endswith("http://127.0.0.1:5123/#/?workflowType=machine_learning")
    (proc,) = started
    assert proc.cmd == ui_command(uri, port=5123)
    assert proc.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert proc.waits == (2 if interrupt else 1)  # after Ctrl-C it waits for the server
