"""The parent run's report and description, the experiment kind, and the UI deep links
(no Ray: a recorder on a fresh sqlite store)."""

from __future__ import annotations

from mlflow import MlflowClient

from mlflow_tracking import SweepRecorder, default_tracking_uri, ensure_experiment
from mlflow_tracking.ui import experiment_id_of, experiment_link, run_link, ui_base

KIND = ("mlflow.experimentKind", "custom_model_development")


def test_new_and_older_experiments_are_model_training(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    exp_id = ensure_experiment(uri, "fresh")
    client = MlflowClient(uri)
    assert client.get_experiment(exp_id).tags.get(KIND[0]) == KIND[1]
    old = client.create_experiment("older", artifact_location=str(tmp_path / "a"))
    assert KIND[0] not in client.get_experiment(old).tags
    assert ensure_experiment(uri, "older") == old
    assert client.get_experiment(old).tags.get(KIND[0]) == KIND[1]


def test_log_report_puts_artifacts_and_description_on_the_parent(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    rec = SweepRecorder(uri, "s1")
    parent = rec.start_sweep({"num_samples": 2}, "lr: {type: float, low: 0.1, high: 1}\n")
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.html").write_text("<html></html>")
    (folder / "curves.png").write_bytes(b"\x89PNG fake")
    rec.log_report(str(folder), "**Sweep `s1`**: 2 trials.")
    client = MlflowClient(uri)
    files = {f.path for f in client.list_artifacts(parent, "report")}
    assert files == {"report/report.html", "report/curves.png"}
    assert client.get_run(parent).data.tags["mlflow.note.content"] == "**Sweep `s1`**: 2 trials."


def test_deep_links_open_model_training_mode(tmp_path):
    uri = default_tracking_uri(tmp_path / "runs")
    assert experiment_id_of(uri) is None  # no store yet: nothing created by asking
    assert not (tmp_path / "runs" / "mlflow.db").exists()
    exp_id = ensure_experiment(uri)
    assert experiment_id_of(uri) == exp_id
    base = ui_base(uri, "0.0.0.0", 5001)
    assert base == "http://localhost:5001"
    assert ui_base("http://mlflow.internal:5000/") == "http://mlflow.internal:5000"
    assert experiment_link(base, exp_id) == (
        f"http://localhost:5001/#/experiments/{exp_id}/runs?workflowType=machine_learning")
    assert run_link(base, exp_id, "abc") == (
        f"http://localhost:5001/#/experiments/{exp_id}/runs/abc?workflowType=machine_learning")
