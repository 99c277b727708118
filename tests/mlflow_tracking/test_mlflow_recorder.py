"""SweepRecorder against a sqlite store: a fake sweep, resume, interruption, best model."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow_fake_sweep import TRIALS, check_fake_sweep, run_fake_sweep

from mlflow_tracking import SweepRecorder, find_trial_run
from mlflow_tracking import recorder as recorder_module
from mlflow_tracking.values import to_metrics


def _runs(uri, experiment):
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([exp_id], max_results=1000)


def test_fake_sweep_records_one_parent_and_a_child_per_trial(store_uri, experiment):
    run_fake_sweep(store_uri, experiment)
    children = check_fake_sweep(store_uri, experiment)
    tid = TRIALS[2][0]
    assert find_trial_run(store_uri, "sweep-1", tid, experiment) == children[tid].info.run_id
    assert find_trial_run(store_uri, "sweep-1", "no_such_trial", experiment) is None
    assert find_trial_run(store_uri, "sweep-1", tid, "no-such-experiment") is None


def test_resume_reopens_the_parent_and_the_trial_run(store_uri, experiment):
    first = run_fake_sweep(store_uri, experiment)
    tid = TRIALS[1][0]  # early_stopped after one report
    rec = SweepRecorder(store_uri, "sweep-1", experiment_name=experiment)
    assert rec.start_sweep({"num_samples": 3}, "lr: {}\n", resume=True) == first.parent_run_id
    run_id = rec.open_trial(tid, f"train_smpl_{tid}", {"lr": TRIALS[1][3]}, "running", 1)
    assert run_id == first._runs[tid]
    assert MlflowClient(store_uri).get_run(run_id).info.status == "RUNNING"
    # Opened again (a second resume) it is still the same run.
    assert rec.open_trial(tid, f"train_smpl_{tid}", {"lr": TRIALS[1][3]}, "running", 2) == run_id
    rec.trial_reported(tid, {"val_accuracy": 0.8}, step=200)
    rec.trial_ended(tid, "completed")
    rec.end_sweep(None)

    runs = _runs(store_uri, experiment)
    assert len(runs) == 1 + len(TRIALS)
    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.data.tags["resumes"] == "2" and run.data.tags["trial_status"] == "completed"
    assert run.data.tags["ray_node_id"] == "node-1"  # the first start's node is kept
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [100, 200]
    assert client.get_run(first.parent_run_id).data.tags["resumes"] == "1"
    assert all(r.info.status != "RUNNING" for r in runs)


def test_a_report_replayed_after_a_restart_is_one_point(store_uri, experiment):
    """Ray restarts a trial whose process died from its last checkpoint, which can be older
    than its last report: the report of that step comes again (other timings, another
    time). The record keeps the newer row; MLflow keeps the first point, not a second
    (chaos rounds kill_worker 28 and kill_node 66 had logged 14 metrics twice)."""
    rec = SweepRecorder(store_uri, "replay", experiment_name=experiment)
    rec.start_sweep({}, "")
    rec.open_trial("0000", "0000", {"lr": 0.1}, "running")
    for step, t in ((100, 1.0), (200, 2.0), (200, 9.0), (300, 10.0)):  # 200: replayed
        rec.trial_reported("0000", {"val_accuracy": step / 1000, "images_per_s": t},
                           step=step, timestamp=1_700_000_000 + t)
    client = MlflowClient(store_uri)
    run_id = find_trial_run(store_uri, "replay", "0000", experiment)
    for key in ("val_accuracy", "images_per_s"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [100, 200, 300]
    assert [m.value for m in client.get_metric_history(run_id, "images_per_s")] == [1, 2, 10]


def _count_searches(rec, monkeypatch) -> list:
    calls = []
    search = rec.client.search_runs

    def counted(*args, **kwargs):
        calls.append(args[1] if len(args) > 1 else kwargs.get("filter_string"))
        return search(*args, **kwargs)

    monkeypatch.setattr(rec.client, "search_runs", counted)
    return calls


def test_a_new_trial_costs_no_search_and_a_resume_searches_a_few_then_lists_once(
        store_uri, experiment, monkeypatch):
    """Issue 26: a search for the child run of each new trial was a query over every child
    run of the sweep (quadratic in its size). A new parent has no children; a reopened one
    finds its first LIST_AFTER trials one query each (a listing of 1,000 runs is 1.9 s of
    CPU), then lists the children once, and each trial is then found, or created, without
    a search."""
    monkeypatch.setattr(recorder_module, "LIST_AFTER", 2)
    rec = SweepRecorder(store_uri, "many", experiment_name=experiment)
    rec.start_sweep({}, "")
    calls = _count_searches(rec, monkeypatch)
    keys = ("0000", "0001", "0002", "0003")
    made = {k: rec.open_trial(k, k, {"lr": 0.1}, "running") for k in keys}
    for k in made:
        rec.trial_reported(k, {"val_accuracy": 0.5}, step=10)
        rec.trial_ended(k, "completed")
    assert calls == []

    again = SweepRecorder(store_uri, "many", experiment_name=experiment)
    again.start_sweep({}, "", resume=True)
    calls = _count_searches(again, monkeypatch)
    assert again.open_trial("0001", "0001", {"lr": 0.1}, "running", 1) == made["0001"]
    new = again.open_trial("0004", "0004", {"lr": 0.2}, "running")  # none yet: a new run
    assert len(calls) == 2 and all("trial_id" in c for c in calls)  # one query each
    assert again.open_trial("0002", "0002", {"lr": 0.1}, "running", 1) == made["0002"]
    assert len(calls) == 3 and "trial_id" not in calls[2]  # then one listing of them all
    assert again.open_trial("0003", "0003", {"lr": 0.1}, "running", 1) == made["0003"]
    again.open_trial("0005", "0005", {"lr": 0.2}, "running")
    assert len(calls) == 3
    trials = [r for r in _runs(store_uri, experiment) if r.data.tags.get("run_kind") == "trial"]
    assert sorted(r.data.tags["trial_id"] for r in trials) == [f"000{i}" for i in range(6)]
    assert new in {r.info.run_id for r in trials}  # none twice, the new one among them


def test_where_the_runs_are_known_a_new_trial_is_opened_without_a_search(
        store_uri, experiment, monkeypatch):
    """expect_runs (the last command left MLflow complete): a trial not among them is new,
    opened with no query; one among them is still found (not made twice)."""
    rec = SweepRecorder(store_uri, "known", experiment_name=experiment)
    rec.start_sweep({}, "")
    old = rec.open_trial("0000", "0000", {"lr": 0.1}, "running")
    rec.trial_ended("0000", "interrupted")
    again = SweepRecorder(store_uri, "known", experiment_name=experiment)
    again.start_sweep({}, "", resume=True)
    again.expect_runs(["0000"])
    calls = _count_searches(again, monkeypatch)
    for k in ("0001", "0002", "0003"):
        again.open_trial(k, k, {"lr": 0.2}, "running")
    assert calls == []
    assert again.open_trial("0000", "0000", {"lr": 0.1}, "running", 1) == old
    assert len(calls) == 1
    trials = [r for r in _runs(store_uri, experiment) if r.data.tags.get("run_kind") == "trial"]
    assert sorted(r.data.tags["trial_id"] for r in trials) == ["0000", "0001", "0002", "0003"]


def test_a_trial_run_made_by_a_create_that_failed_is_found_not_made_twice(
        store_uri, experiment, monkeypatch):
    """A server that made the run but whose answer was lost: the writer calls open_trial
    again, which searches for that trial instead of trusting the listing."""
    rec = SweepRecorder(store_uri, "lost", experiment_name=experiment)
    rec.start_sweep({}, "")
    create = rec.client.create_run

    def made_then_failed(*args, **kwargs):
        create(*args, **kwargs)
        raise ConnectionError("the answer was lost")

    monkeypatch.setattr(rec.client, "create_run", made_then_failed)
    with pytest.raises(ConnectionError):
        rec.open_trial("0000", "0000", {"lr": 0.1}, "running")
    monkeypatch.setattr(rec.client, "create_run", create)
    run_id = rec.open_trial("0000", "0000", {"lr": 0.1}, "running")
    trials = [r for r in _runs(store_uri, experiment) if r.data.tags.get("run_kind") == "trial"]
    assert [r.info.run_id for r in trials] == [run_id]


def test_resume_without_a_previous_parent_creates_one(store_uri, experiment):
    rec = SweepRecorder(store_uri, "fresh", experiment_name=experiment)
    parent = rec.start_sweep({}, "", resume=True)
    assert [r.info.run_id for r in _runs(store_uri, experiment)] == [parent]


def test_a_killed_sweep_ends_every_running_run_as_killed(store_uri, experiment):
    rec = SweepRecorder(store_uri, "interrupted", experiment_name=experiment)
    rec.start_sweep({}, "")
    for tid in ("t0", "t1", "t2"):
        rec.open_trial(tid, tid, {})
    rec.trial_ended("t0", "completed")
    rec.end_sweep(None, status="KILLED", tags={"sweep_status": "interrupted"})
    runs = {r.data.tags.get("trial_id", "parent"): r for r in _runs(store_uri, experiment)}
    assert {k: r.info.status for k, r in runs.items()} == {
        "parent": "KILLED", "t0": "FINISHED", "t1": "KILLED", "t2": "KILLED"}
    assert runs["t1"].data.tags["trial_status"] == "interrupted"
    assert runs["t0"].data.tags["trial_status"] == "completed"


def test_best_model_loads_back_with_identical_outputs(store_uri, experiment, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    global_uri = (mlflow.is_tracking_uri_set(), mlflow.get_tracking_uri())
    rec = run_fake_sweep(store_uri, experiment, model=model)
    # no global state left behind
    assert (mlflow.is_tracking_uri_set(), mlflow.get_tracking_uri()) == global_uri

    client = MlflowClient(store_uri)
    parent = client.get_run(rec.parent_run_id)
    uri = parent.data.tags["best_model_uri"]
    assert uri.startswith("models:/")
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    # mlflow.pytorch.log_model(run_id=...) alone files the model under experiment "0".
    assert logged.experiment_id == rec.experiment_id and logged.name == "best_model"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    x = torch.randn(5, 4)
    for model_uri in (uri, f"runs:/{rec.parent_run_id}/best_model"):
        loaded = mlflow.pytorch.load_model(model_uri)
        assert torch.equal(loaded(x), model(x))


def test_two_sweeps_in_two_stores_stay_apart(store_uri, experiment, fresh_store):
    other_uri = fresh_store("other")
    a = SweepRecorder(store_uri, "a", experiment_name=experiment)
    b = SweepRecorder(other_uri, "b", experiment_name=experiment)
    a.start_sweep({"x": 1}, "")
    b.start_sweep({"x": 2}, "")
    a.open_trial("t", "t", {})
    b.open_trial("t", "t", {})
    a.trial_reported("t", {"val_accuracy": 0.1}, 1)
    b.trial_reported("t", {"val_accuracy": 0.2}, 1)
    a.end_sweep(None)
    b.end_sweep(None)
    for uri, name, acc in ((store_uri, "a", 0.1), (other_uri, "b", 0.2)):
        runs = _runs(uri, experiment)
        assert {r.data.tags["sweep_name"] for r in runs} == {name} and len(runs) == 2
        child = next(r for r in runs if "trial_id" in r.data.tags)
        assert child.data.metrics["val_accuracy"] == pytest.approx(acc)


def test_invalid_trial_config_is_still_recorded(store_uri, experiment):
    rec = SweepRecorder(store_uri, "bad", experiment_name=experiment)
    rec.start_sweep({}, "")
    run_id = rec.open_trial("t", "t", {"clamp_min": 0.5, "clamp_max": 0.4})
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.data.params == {"clamp_min": "0.5", "clamp_max": "0.4"}
    assert "clamp_min" in run.data.tags["config_error"]
    rec.end_sweep(None, status="KILLED")


def test_misuse_fails_with_one_line_errors(store_uri, experiment):
    rec = SweepRecorder(store_uri, "misuse", experiment_name=experiment)
    with pytest.raises(ValueError, match="call start_sweep"):
        rec.open_trial("t", "t", {})
    rec.start_sweep({}, "")
    with pytest.raises(ValueError, match="trial 'nope' .* call open_trial"):
        rec.trial_reported("nope", {"val_accuracy": 1.0}, 1)
    rec.open_trial("t", "t", {})
    with pytest.raises(ValueError, match=r"`status` must be one of .* status='finished'"):
        rec.trial_ended("t", "finished")
    with pytest.raises(ValueError, match="`status` must be one of"):
        rec.end_sweep(None, status="DONE")
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        rec.end_sweep(None, model=object())
    rec.end_sweep(None, status="KILLED")
    with pytest.raises(ValueError, match="`sweep_name` must be"):
        SweepRecorder(store_uri, "it's")


def test_long_errors_are_cut_for_the_tag_and_kept_whole_as_an_artifact(store_uri, experiment):
    rec = SweepRecorder(store_uri, "errors", experiment_name=experiment)
    rec.start_sweep({}, "")
    run_id = rec.open_trial("t", "t", {})
    error = "Traceback\n" + "x" * 20000 + "\nRuntimeError: boom"
    rec.trial_ended("t", "errored", error)
    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["trial_status"] == "errored"
    assert len(run.data.tags["error"]) <= 5000
    assert run.data.tags["error"].endswith("RuntimeError: boom")
    assert open(client.download_artifacts(run_id, "error.txt")).read() == error
    rec.end_sweep(None)


def test_metric_conversion_keeps_numbers_and_skips_the_rest():
    metrics = to_metrics({"a": 1, "b": np.float32(0.5), "c": torch.tensor(2.0), "d": True,
                          "e": "text", "f": None, "g": {"x": 1}, "h": float("nan"),
                          "i": np.array([1.0, 2.0]), "j/k": np.int64(3), "bad(name)": 1.0},
                         step=7)
    got = {m.key: m.value for m in metrics}
    assert set(got) == {"a", "b", "c", "d", "h", "j/k", "bad_name_"}
    assert got["c"] == 2.0 and got["d"] == 1.0 and math.isnan(got["h"])
    assert all(m.step == 7 for m in metrics)
