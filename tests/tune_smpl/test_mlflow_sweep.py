"""MLflow after a real sweep: one parent, one child per trial with everything in it; the
exported config trains again; the logged best model scores as reported; an MLflow server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient

from mlflow_tracking import check_store
from smpl_core.config import SMPLConfig, load_yaml
from smpl_core.data import load_splits
from smpl_core.loop import evaluate
from tests.tune_smpl.conftest import free_port, small_sets
from tune_smpl.cli import main

MAX_T = 4  # small_sets(): 40 steps, a report every 10


def _rows(trial_dir: Path) -> list[dict]:
    return json.loads((trial_dir / "trial.json").read_text())["reports"]


def _run_sweep(root: Path, name: str, tracking_uri: str, samples: int = 6) -> dict[str, list]:
    rc = main(["tune", "--name", name, "--storage-path", str(root / "runs"),
               "--tracking-uri", tracking_uri, "--num-samples", str(samples),
               "--grace-period", "1", "--gpus-per-trial", "0", *small_sets()])
    assert rc == 0
    trials = {}
    for d in sorted((root / "runs" / name).glob("trial_*")):
        trials[d.name.removeprefix("trial_")] = _rows(d)
    return trials


def _check_runs(client: MlflowClient, name: str, trials: dict[str, list]) -> dict:
    exp = client.get_experiment_by_name("tune-smpl")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep_name = '{name}'",
                              max_results=1000)
    parents = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1 == len(trials)
    fields = set(SMPLConfig.field_names())
    for child in children:
        tid = child.data.tags["trial_id"]
        rows = trials[tid]
        assert fields <= set(child.data.params), fields - set(child.data.params)
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [r["step"] for r in rows]
        assert [m.value for m in history] == pytest.approx([r["val_accuracy"] for r in rows])
        ray_status = "completed" if len(rows) == MAX_T else "early_stopped"
        assert child.data.tags["trial_status"] == ray_status
        assert child.data.tags["ray_node_id"] == rows[0]["ray_node_id"]
        assert child.info.status == "FINISHED"
    assert parent.info.status == "FINISHED"
    return {"parent": parent, "children": children}


@pytest.fixture(scope="module")
def sweep(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlsweep")
    uri = f"sqlite:///{root}/mlflow.db"
    return root, uri, _run_sweep(root, "ml", uri)


def test_one_parent_and_one_complete_child_per_trial(sweep):
    root, uri, trials = sweep
    runs = _check_runs(MlflowClient(uri), "ml", trials)
    statuses = {c.data.tags["trial_status"] for c in runs["children"]}
    assert statuses == {"completed", "early_stopped"}  # ASHA stopped some, others finished


def test_logged_best_model_scores_as_reported(sweep, monkeypatch):
    root, uri, trials = sweep
    client = MlflowClient(uri)
    parent = _check_runs(client, "ml", trials)["parent"]
    best = max(r["val_accuracy"] for rows in trials.values() for r in rows)
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best)
    assert not [k for k in parent.data.metrics if k.startswith("best/")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pytorch.load_model(parent.data.tags["best_model_uri"])
    path = client.download_artifacts(parent.info.run_id, "best_config.yaml", str(root))
    cfg = SMPLConfig.from_dict(yaml.safe_load(Path(path).read_text()))
    splits = load_splits(cfg.replace(device="cpu"), torch.device("cpu"))
    acc, _ = evaluate(model, splits, splits.x_val, splits.y_val)
    assert acc == pytest.approx(best, abs=1e-6)


def test_export_then_train_round_trip(sweep, tmp_path, capsys):
    root, uri, trials = sweep
    out = tmp_path / "best.yaml"
    assert main(["export", "ml", "--storage-path", str(root / "runs"), "-o", str(out),
                 "--tracking-uri", uri]) == 0
    text = out.read_text()
    best_tid = text.split("trial_id: ")[1].split()[0]
    best_value = max(r["val_accuracy"] for r in trials[best_tid])
    assert f"best val_accuracy: {best_value:.6g}" in text
    assert "mlflow_run_id: unknown" not in text
    cfg = SMPLConfig.from_dict(load_yaml(out))
    rows = trials[best_tid]
    trial_cfg = json.loads((root / "runs" / "ml" / f"trial_{best_tid}" / "trial.json")
                           .read_text())["config"]  # what the trial ran, as recorded
    assert cfg == SMPLConfig.from_dict({k: v for k, v in trial_cfg.items()
                                        if k in SMPLConfig.field_names()})
    capsys.readouterr()
    assert main(["train", "--config", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    retrained = summary["runs"][0]["val_accuracy"]
    if len(rows) == MAX_T:  # a trial that ran its whole budget is reproduced closely
        assert retrained == pytest.approx(rows[-1]["val_accuracy"], abs=0.03)
    assert retrained == pytest.approx(best_value, abs=0.15)

    # --top 2 writes two files; a bad metric or sweep is one line and exit 2.
    assert main(["export", "ml", "--storage-path", str(root / "runs"), "--top", "2",
                 "-o", str(tmp_path / "top.yaml")]) == 0
    assert (tmp_path / "top-1.yaml").is_file() and (tmp_path / "top-2.yaml").is_file()
    for args, needle in ((["--metric", "nope"], "val_accuracy"), (["-o", "/proc/x/y.yaml"],
                         "--output")):
        capsys.readouterr()
        assert main(["export", "ml", "--storage-path", str(root / "runs"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
    assert main(["export", "missing", "--storage-path", str(root / "runs")]) == 2
    assert "ml" in capsys.readouterr().err


def test_sweep_through_an_mlflow_server(ray_local, tmp_path, monkeypatch):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{tmp_path}/server.db", "--artifacts-destination",
             str(tmp_path / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                check_store(uri, timeout_s=1)
                break
            except ValueError:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        trials = _run_sweep(tmp_path, "srv", uri, samples=3)
        _check_runs(MlflowClient(uri), "srv", trials)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_unreachable_tracking_server_fails_before_trials(ray_local, tmp_path, capsys):
    port = free_port()
    rc = main(["tune", "--name", "nope", "--storage-path", str(tmp_path / "runs"),
               "--tracking-uri", f"http://127.0.0.1:{port}", *small_sets()])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0]
    assert not (tmp_path / "runs" / "nope").exists()
