"""The recorder's backfill (mlflow_tracking/backfill.py, and `end_sweep`): it writes only
what a store lacks, so a second run writes nothing, and a store it fills in from scratch
holds what the live writes would have left."""

from __future__ import annotations

import torch
from mlflow import MlflowClient

from mlflow_tracking import SweepRecorder

REPORTS = [(s, {"val_accuracy": s / 100, "train/loss_uda": 1.0 / s}, 1.7e9 + s)
           for s in (10, 20, 30, 40)]
CONFIG = {"lr": 0.02, "threshold": 0.9}


def _recorder(uri, experiment, name="bf") -> SweepRecorder:
    return SweepRecorder(uri, name, experiment_name=experiment)


def _history(client, run_id, key="val_accuracy"):
    return [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]


def test_sync_trial_creates_a_missing_run_and_a_second_sync_writes_nothing(store_uri,
                                                                           experiment):
    rec = _recorder(store_uri, experiment)
    rec.start_sweep({"num_samples": 1}, "lr: {}\n")
    tags = {"role": "search", "restarts": 1, "ray_node_id": "n2"}
    assert rec.sync_trial("0000", "trial_0000", CONFIG, REPORTS, "completed", None, tags) > 0
    again = _recorder(store_uri, experiment)  # a fresh process: it finds what is there
    assert again.sync_sweep({"num_samples": 1}, "lr: {}\n") == 0
    assert again.sync_trial("0000", "trial_0000", CONFIG, REPORTS, "completed", None,
                            tags) == 0
    client = MlflowClient(store_uri)
    run = client.get_run(again._runs["0000"])
    assert run.info.status == "FINISHED" and run.data.tags["trial_status"] == "completed"
    assert run.data.tags["restarts"] == "1" and run.data.tags["ray_node_id"] == "n2"
    assert run.data.params["lr"] == "0.02" and "steps" in run.data.params  # every field
    assert _history(client, run.info.run_id) == [
        (s, m["val_accuracy"], int(ts * 1000)) for s, m, ts in REPORTS]


def test_sync_trial_logs_only_the_missing_steps_and_the_outcome(store_uri, experiment):
    live = _recorder(store_uri, experiment)
    live.start_sweep({}, "")
    run_id = live.open_trial("0000", "trial_0000", CONFIG, "running")
    for step, metrics, ts in REPORTS[::2]:  # steps 10 and 30 reached MLflow, 20, 40 did not
        live.trial_reported("0000", metrics, step, ts)
    back = _recorder(store_uri, experiment)
    assert back.sync_sweep({}, "") == 0  # it finds the parent (and lacks nothing)
    # two missing reports and the outcome: one batch of points, one end
    assert back.sync_trial("0000", "trial_0000", CONFIG, REPORTS, "early_stopped") == 3
    client = MlflowClient(store_uri)
    assert _history(client, run_id) == [(s, m["val_accuracy"], int(ts * 1000))
                                        for s, m, ts in REPORTS]
    assert [m.step for m in client.get_metric_history(run_id, "train/loss_uda")] == [
        10, 20, 30, 40]
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags["trial_status"]) == ("FINISHED", "early_stopped")
    # a report sent twice with its timestamp is one point (the writer's retry after an
    # answer that never came)
    live.trial_reported("0000", REPORTS[0][1], 10, REPORTS[0][2])
    assert len(client.get_metric_history(run_id, "val_accuracy")) == 4


def test_end_sweep_twice_logs_one_model_and_one_point_per_figure(store_uri, experiment):
    rec = _recorder(store_uri, experiment)
    rec.start_sweep({}, "")
    rec.sync_trial("0000", "trial_0000", CONFIG, REPORTS, "completed")
    made = []

    def model():
        made.append(1)
        return torch.nn.Linear(2, 2)

    figures = {"best_val_accuracy": 0.4, "trials": 1, "wall_s": 12.5}
    best = {"trial_id": "0000", "config": CONFIG}
    uri = rec.end_sweep(best, figures=figures, tags={"sweep_status": "finished"},
                        model_from=model)
    again = _recorder(store_uri, experiment)
    assert again.sync_sweep({}, "") == 0
    assert again.end_sweep(best, figures=figures, tags={"sweep_status": "finished"},
                           model_from=model) == uri
    assert made == [1]  # the model is read only for a parent that has none
    client = MlflowClient(store_uri)
    parent = client.get_run(rec.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["best_model_uri"] == uri
    for key, value in figures.items():
        assert [m.value for m in client.get_metric_history(rec.parent_run_id, key)] == [value]
    assert [p.path for p in client.list_artifacts(rec.parent_run_id)
            if p.path.endswith(".yaml")] == ["best_config.yaml", "search_space.yaml"]


def test_sync_sweep_creates_a_missing_parent_and_never_counts_a_resume(fresh_store,
                                                                      experiment):
    uri = fresh_store("empty")
    rec = _recorder(uri, experiment)
    settings = {"num_samples": 4, "sampler": "tpe"}
    assert rec.sync_sweep(settings, "lr: {}\n", resumes=2) > 0
    again = _recorder(uri, experiment)
    assert again.sync_sweep({**settings, "seed": 1}, "lr: {}\n", resumes=2) == 1  # `seed`
    client = MlflowClient(uri)
    runs = client.search_runs([again.experiment_id])
    assert [r.info.run_id for r in runs] == [rec.parent_run_id]
    parent = runs[0]
    assert parent.data.tags["resumes"] == "2" and parent.data.tags["run_kind"] == "sweep"
    assert parent.data.params == {"num_samples": "4", "sampler": "tpe", "seed": "1"}
    assert parent.info.status == "RUNNING"  # its end is end_sweep's, as the record says
