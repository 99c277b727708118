"""The typed seam between the sweep and its MLflow recorder (tune_smpl/sweep/tracking.py).

Every method of `Tracking` is called against a real `SweepRecorder` on a fresh sqlite
store, so a recorder method renamed or given other parameters fails here, not in a sweep;
a wrong argument is a TypeError raised at the call (with or without a recorder), although
the write itself is queued; a store error is logged by the writer, and a store that does
not answer holds up no call.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_tracking import SweepRecorder
from tune_smpl.sweep.record import TrialRecord
from tune_smpl.sweep.tracking import Tracking


def _trial(key: str, outcome: str | None = None) -> TrialRecord:
    return TrialRecord(key=key, number=int(key), params={"lr": 0.01}, distributions={},
                       config={"lr": 0.01, "dataset": "digits"}, outcome=outcome)


def _public(cls) -> set[str]:
    return {n for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}


@pytest.fixture
def recorder(tmp_path):
    rec = SweepRecorder(f"sqlite:///{tmp_path}/mlflow.db", "seam", experiment_name="seam")
    rec.start_sweep({"num_samples": 2}, "lr: {loguniform: [0.0001, 0.3]}\n")
    return rec


def test_every_method_reaches_the_recorder_with_its_own_signature(recorder, monkeypatch):
    called = []
    real = Tracking._call

    def spy(self, method, **kwargs):
        called.append(method.__name__)
        return real(self, method, **kwargs)

    monkeypatch.setattr(Tracking, "_call", spy)
    tracking = Tracking(recorder, "seam")
    done = _trial("0000")
    tracking.open_trial(done)
    tracking.tag_trial("0000", trial_status="running", ray_node_id="n1")
    tracking.trial_reported("0000", {"val_accuracy": 0.5}, 10)
    tracking.trial_ended("0000", "completed")
    tracking.expect_runs(["0000", "0001", "0002"])  # the record's trials (none is new)
    # a run the record finished but MLflow never heard of (a driver killed in between)
    tracking.reconcile([_trial("0001", "early_stopped"), _trial("0002")])
    tracking.sync_sweep({"num_samples": 2, "seed": 3}, "lr: {}\n", resumes=1)
    folder = _report_folder(tracking)
    tracking.log_report(str(folder), "**sweep** seam")
    (folder / "report.html").unlink()  # the writer uploads its own copy
    tracking.end_sweep(status="FINISHED", sweep_status="finished", figures={"trials": 2},
                       best={"trial_id": "0000", "config": done.config})
    assert tracking.drain(60) and not tracking.behind
    tracking.stop()
    exercised = {"open_trial", "tag_trial", "trial_reported", "trial_ended", "expect_runs",
                 "reconcile",
                 "sync_sweep", "log_report", "end_sweep", "drain", "stop"}
    assert _public(Tracking) == exercised  # a new method needs a line here
    assert set(called) <= _public(SweepRecorder) and {"sync_trial", "expect_runs"} <= set(called)

    client = MlflowClient(recorder.tracking_uri)
    runs = {r.data.tags.get("trial_id", "parent"): r for r in client.search_runs(
        [recorder.experiment_id])}
    assert runs["0000"].data.tags["trial_status"] == "completed"
    assert runs["0000"].data.tags["ray_node_id"] == "n1"
    assert runs["0000"].data.metrics["val_accuracy"] == 0.5
    assert runs["0001"].data.tags["trial_status"] == "early_stopped"
    assert runs["0001"].info.status == "FINISHED"
    # unfinished: its run is opened (a resumed sweep runs it on), and the sweep's end
    # closes it as interrupted
    assert runs["0002"].data.tags["trial_status"] == "interrupted"
    assert runs["0002"].info.status == "KILLED"
    parent = runs["parent"]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_status"] == "finished"
    assert parent.data.tags["best_trial_id"] == "0000"
    assert parent.data.tags["mlflow.note.content"] == "**sweep** seam"
    assert parent.data.tags["resumes"] == "1" and parent.data.params["seed"] == "3"
    assert [f.path for f in client.list_artifacts(parent.info.run_id, "report")] == [
        "report/report.html"]
    assert tracking.uri == recorder.tracking_uri and tracking.on


def _report_folder(tracking):
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    (d / "report.html").write_text("<html></html>")
    return d


@pytest.mark.parametrize("with_recorder", [True, False])
def test_a_wrong_argument_is_a_type_error_not_a_warning(with_recorder, request, caplog):
    rec = request.getfixturevalue("recorder") if with_recorder else None
    tracking = Tracking(rec, "seam")
    with caplog.at_level(logging.WARNING), pytest.raises(TypeError):
        tracking._call(SweepRecorder.trial_ended, trial_id="0000", outcome="completed")
    with pytest.raises(TypeError):
        tracking._call(SweepRecorder.tag_trial, trial_id="0000", key="k")  # value missing
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_a_recorder_every_method_is_a_no_op():
    tracking = Tracking(None, "seam")
    tracking.open_trial(_trial("0000"))
    tracking.trial_ended("0000", "completed", "boom")
    tracking.end_sweep(status="KILLED", sweep_status="interrupted", figures={})
    assert tracking.uri is None and not tracking.on


def test_a_refused_write_is_logged_once_and_the_sweep_goes_on(recorder, monkeypatch,
                                                              caplog):
    def refused(*args, **kwargs):
        raise MlflowException("no such tag", error_code=INVALID_PARAMETER_VALUE)

    tracking = Tracking(recorder, "seam")
    tracking.open_trial(_trial("0000"))
    assert tracking.drain(30)
    monkeypatch.setattr(recorder.client, "set_tag", refused)
    with caplog.at_level(logging.WARNING, logger="tune_smpl.sweep.writer"):
        tracking.tag_trial("0000", trial_status="running")
        tracking.trial_ended("0000", "completed")  # after it, not held up by it
        assert tracking.drain(30)
    assert [r.getMessage() for r in caplog.records] == [
        "MLflow tag_trial failed for sweep seam: no such tag"]
    assert not tracking.behind  # a retry would be refused too: nothing left to fill in
    run = MlflowClient(recorder.tracking_uri).get_run(recorder._runs["0000"])
    assert run.data.tags["trial_status"] == "completed"


def test_no_call_waits_on_a_store_that_does_not_answer(recorder, monkeypatch):
    """The store hangs: each call still returns at once, and the writes land in order once
    it answers."""
    release = threading.Event()
    real = recorder.client.log_batch

    def hangs(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    tracking = Tracking(recorder, "seam")
    tracking.open_trial(_trial("0000"))
    assert tracking.drain(30)
    monkeypatch.setattr(recorder.client, "log_batch", hangs)
    took = []
    for step in range(1, 21):
        t0 = time.perf_counter()
        tracking.trial_reported("0000", {"val_accuracy": step / 100}, step, 1e9 + step)
        took.append(time.perf_counter() - t0)
    assert max(took) < 0.05 and tracking.pending == 20
    release.set()
    assert tracking.drain(60)
    history = MlflowClient(recorder.tracking_uri).get_metric_history(
        recorder._runs["0000"], "val_accuracy")
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (s, s / 100, int((1e9 + s) * 1000)) for s in range(1, 21)]
