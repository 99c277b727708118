"""The typed seam between the sweep and its MLflow recorder (tune_smpl/sweep/tracking.py).

Every method of `Tracking` is called against a real `SweepRecorder` on a fresh sqlite
store, so a recorder method renamed or given other parameters fails here, not in a sweep;
a wrong argument is a TypeError (with or without a recorder); a store error is logged.
"""

from __future__ import annotations

import inspect
import logging

import pytest
from mlflow import MlflowClient

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
    # a run the record finished but MLflow never heard of (a driver killed in between)
    tracking.reconcile([_trial("0001", "early_stopped"), _trial("0002")])
    tracking.log_report(str(_report_folder(tracking)), "**sweep** seam")
    tracking.end_sweep(status="FINISHED", sweep_status="finished", figures={"trials": 2},
                       best={"trial_id": "0000", "config": done.config})
    exercised = {"open_trial", "tag_trial", "trial_reported", "trial_ended", "reconcile",
                 "log_report", "end_sweep"}
    assert _public(Tracking) - {"uri", "on"} == exercised  # a new method needs a line here
    assert set(called) <= _public(SweepRecorder) and "ensure_ended" in called

    client = MlflowClient(recorder.tracking_uri)
    runs = {r.data.tags.get("trial_id", "parent"): r for r in client.search_runs(
        [recorder.experiment_id])}
    assert runs["0000"].data.tags["trial_status"] == "completed"
    assert runs["0000"].data.tags["ray_node_id"] == "n1"
    assert runs["0000"].data.metrics["val_accuracy"] == 0.5
    assert runs["0001"].data.tags["trial_status"] == "early_stopped"
    assert "0002" not in runs  # unfinished: reconcile leaves it to the resumed sweep
    parent = runs["parent"]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_status"] == "finished"
    assert parent.data.tags["best_trial_id"] == "0000"
    assert parent.data.tags["mlflow.note.content"] == "**sweep** seam"
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


def test_a_store_error_is_logged_once_and_the_sweep_goes_on(recorder, monkeypatch, caplog):
    def down(*args, **kwargs):
        raise ConnectionError("store is down")

    tracking = Tracking(recorder, "seam")
    tracking.open_trial(_trial("0000"))
    monkeypatch.setattr(recorder.client, "set_tag", down)
    with caplog.at_level(logging.WARNING, logger="tune_smpl.sweep.tracking"):
        tracking.tag_trial("0000", trial_status="running")
    assert [r.getMessage() for r in caplog.records] == [
        "MLflow tag_trial failed for sweep seam: store is down"]
