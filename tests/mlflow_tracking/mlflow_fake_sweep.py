"""A fake three-trial sweep through SweepRecorder, and what it must leave in the store.

Shared by the sqlite tests and the test against a real `mlflow server`.
"""

from __future__ import annotations

import re

import pytest
import yaml
from mlflow import MlflowClient

from mlflow_tracking import SweepRecorder
from smpl_core.config import SMPLConfig

SPACE_YAML = "threshold: {uniform: [0.5, 0.99]}\nlr: {loguniform: [0.0001, 0.3]}\n"
SETTINGS = {"num_samples": 3, "metric": "val_accuracy", "fixed": ["dataset"],
            "scheduler": {"name": "asha", "grace_period": 1}}
# trial id, outcome, number of reports, its lr
TRIALS = [("a1_00000", "completed", 3, 0.01), ("a1_00001", "early_stopped", 1, 0.02),
          ("a1_00002", "diverged", 2, 0.03)]
END_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "diverged": "FAILED"}


def run_fake_sweep(uri: str, experiment: str, sweep: str = "sweep-1", model=None,
                   artifact_location: str | None = None) -> SweepRecorder:
    """Three trials, reports interleaved as Tune's driver would see them."""
    rec = SweepRecorder(uri, sweep, experiment_name=experiment,
                        artifact_location=artifact_location)
    rec.start_sweep(SETTINGS, SPACE_YAML)
    for i, (tid, _, _, lr) in enumerate(TRIALS):
        rec.open_trial(tid, f"train_smpl_{tid}", {"lr": lr, "threshold": 0.9,
                                                  "__trial_index__": i}, "running")
        rec.tag_trial(tid, "ray_node_id", f"node-{i}")
    for k in range(max(n for _, _, n, _ in TRIALS)):
        for tid, outcome, n, _ in TRIALS:
            if k < n:
                loss = float("nan") if outcome == "diverged" and k == n - 1 else 1.0 / (k + 1)
                rec.trial_reported(tid, {"val_accuracy": 0.5 + 0.1 * k, "train/loss_uda": loss,
                                         "hostname": "h", "done": False}, step=(k + 1) * 100)
            if k == n - 1:
                err = "FloatingPointError: loss is nan" if outcome == "diverged" else None
                rec.trial_ended(tid, outcome, err)
    best = {"trial_id": TRIALS[0][0], "config": {"lr": TRIALS[0][3], "threshold": 0.9}}
    rec.end_sweep(best, model=model, figures={"best_val_accuracy": 0.7, "trials": 3})
    return rec


def check_fake_sweep(uri: str, experiment: str, sweep: str = "sweep-1") -> dict:
    """Assert what run_fake_sweep must leave in the store; return the children by trial id."""
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([exp_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 1 + len(TRIALS)
    parent = parents[0]
    assert parent.info.run_name == sweep and parent.data.tags["sweep_name"] == sweep
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", parent.data.tags["git_commit"])
    assert parent.data.params["num_samples"] == "3"
    assert parent.data.params["scheduler.grace_period"] == "1"
    assert parent.data.params["fixed"] == '["dataset"]'
    # The sweep's own figures only: nothing of a trial's report (hostname, done, ...).
    assert parent.data.metrics == {"best_val_accuracy": pytest.approx(0.7), "trials": 3}
    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"search_space.yaml", "best_config.yaml"} <= parent_files
    space = client.download_artifacts(parent.info.run_id, "search_space.yaml")
    assert yaml.safe_load(open(space)) == yaml.safe_load(SPACE_YAML)

    children = {r.data.tags["trial_id"]: r for r in runs if r is not parent}
    assert sorted(children) == [t[0] for t in TRIALS]
    assert parent.data.tags["best_run_id"] == children[TRIALS[0][0]].info.run_id
    for i, (tid, outcome, n, lr) in enumerate(TRIALS):
        child = children[tid]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.run_name == f"train_smpl_{tid}"
        assert child.data.tags["ray_node_id"] == f"node-{i}"
        assert child.data.tags["trial_status"] == outcome
        assert child.info.status == END_STATUS[outcome]
        assert set(child.data.params) == set(SMPLConfig.field_names())
        assert child.data.params["lr"] == str(lr)
        assert child.data.params["clamp_min"] == str(SMPLConfig().clamp_min)
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [(k + 1) * 100 for k in range(n)]
        assert len(client.get_metric_history(child.info.run_id, "train/loss_uda")) == n
        assert child.data.metrics["done"] == 0.0 and "hostname" not in child.data.metrics
        cfg_file = client.download_artifacts(child.info.run_id, "config.yaml")
        assert SMPLConfig.from_dict(yaml.safe_load(open(cfg_file))).lr == lr
    assert "loss is nan" in children[TRIALS[2][0]].data.tags["error"]
    assert all(r.info.status != "RUNNING" for r in runs)
    return children
