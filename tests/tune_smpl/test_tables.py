"""The tables of `Sweep` on records written here (no Ray): a sweep with no trial yet, one
half run (a trial with reports, an interrupted one, one never started), a damaged trial
record, and a knob whose choices mix types (false and "per_lr"), which Parquet must hold."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import tune_smpl
from tune_smpl.options import TuneOptions
from tune_smpl.plan import prepare
from tune_smpl.sweep.record import SweepRecord, TrialRecord
from tune_smpl.sweep.run import new_record
from tune_smpl.sweep.storage import SweepStorage
from tune_smpl.tables import PARAM_PREFIX, TRIAL_COLUMNS


@pytest.fixture
def record(tmp_path) -> SweepRecord:
    plan = prepare(TuneOptions(dataset="moons", set={"steps": 40, "eval_every": 10},
                               num_samples=4, name="t", storage_path=str(tmp_path)))
    return new_record(plan.settings, plan.base, plan.space, "sqlite:///nowhere/mlflow.db")


def _trial(n: int, params: dict, reports: list[dict], **kw) -> TrialRecord:
    return TrialRecord(key=f"{n:04d}", number=n, params=params, distributions={},
                       config={"seed": 0, "steps": 40, **params}, reports=reports, **kw)


def _reports(*values: float) -> list[dict]:
    return [{"step": 10 * (i + 1), "val_accuracy": v, "val_loss": 1 - v,
             "time_this_iter_s": 0.5} for i, v in enumerate(values)]


def test_a_sweep_without_trials_has_empty_tables_and_no_best(record, tmp_path):
    sweep = tune_smpl.open_sweep("t", tmp_path)
    assert sweep.status == "new" and sweep.best is None
    assert list(sweep.trials.columns) == list(TRIAL_COLUMNS) and sweep.trials.empty
    assert list(sweep.reports.columns) == ["trial", "role", "step"] and sweep.reports.empty
    trials, reports = sweep.to_parquet(tmp_path / "e.parquet")
    assert pd.read_parquet(trials).empty and pd.read_parquet(reports).empty
    assert sweep.mlflow_run_id is None  # no store there: read without MLflow


def test_a_half_run_sweep_as_it_stands(record, tmp_path):
    done = _trial(0, {"lr": 0.1, "feedback_baseline": False}, _reports(0.5, 0.8, 0.7, 0.75),
                  outcome="completed", started=True, proposed_by="random")
    cut = _trial(1, {"lr": 0.2, "feedback_baseline": "per_lr"}, _reports(0.6, 0.9),
                 interrupted=True, started=True, proposed_by="tpe")
    waiting = _trial(2, {"lr": 0.3, "feedback_baseline": "normalised"}, [])
    for t in (done, cut, waiting):
        record.save_trial(t)
    sweep = tune_smpl.open_sweep("t", tmp_path)
    frame = sweep.trials.set_index("key")
    assert list(frame.index) == ["0000", "0001", "0002"]
    assert frame.loc["0000", "best_value"] == 0.8 and frame.loc["0000", "best_step"] == 20
    assert frame.loc["0000", "final_value"] == 0.75 and frame.loc["0000", "steps"] == 40
    assert frame.loc["0000", "seconds"] == 2.0 and frame.loc["0000", "reports"] == 4
    # an interrupted trial is no candidate for the best, whatever it reported
    assert frame.loc["0001", "best_value"] == 0.9 and bool(frame.loc["0001", "interrupted"])
    assert pd.isna(frame.loc["0001", "outcome"]) and not frame.loc["0001", "is_best"]
    assert bool(frame.loc["0000", "is_best"]) and sweep.best.key == "0000"
    assert math.isnan(frame.loc["0002", "best_value"]) and frame.loc["0002", "steps"] == 0
    assert frame.loc["0002", "best_step"] is pd.NA
    assert list(frame[PARAM_PREFIX + "feedback_baseline"]) == [False, "per_lr", "normalised"]
    assert sweep.best.value == 0.8 and "one noisy estimate" in sweep.best.note

    reports = sweep.reports
    assert list(reports["trial"]) == ["0000"] * 4 + ["0001"] * 2
    assert list(reports["val_loss"]) == pytest.approx([0.5, 0.2, 0.3, 0.25, 0.4, 0.1])

    # Parquet holds the mixed knob as text (Arrow has no column of bool and str)
    trials, _ = sweep.to_parquet(tmp_path / "h.parquet")
    back = pd.read_parquet(trials)
    assert list(back[PARAM_PREFIX + "feedback_baseline"]) == ["False", "per_lr", "normalised"]
    assert list(back[PARAM_PREFIX + "lr"]) == [0.1, 0.2, 0.3]
    assert list(back["key"]) == list(frame.index)


def test_a_damaged_trial_record_is_left_out_with_a_warning(record, tmp_path):
    record.save_trial(_trial(0, {"lr": 0.1}, _reports(0.5), outcome="early_stopped"))
    record.save_trial(_trial(1, {"lr": 0.2}, _reports(0.6), outcome="early_stopped"))
    (tmp_path / "t" / "trial_0001" / "trial.json").write_text('{"key": "0001", "num')
    sweep = tune_smpl.open_sweep("t", tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 1 damaged trial record: .*trial_0001"):
        frame = sweep.trials
    assert list(frame["key"]) == ["0000"]


def test_the_status_follows_the_record(record, tmp_path):
    sweep = tune_smpl.open_sweep("t", str(tmp_path))
    storage = SweepStorage(str(tmp_path))
    meta = json.loads(storage.read_text("t", "sweep.json"))
    for status in ("running", "interrupted", "finished"):
        record.save_meta({**meta, "status": status})
        assert sweep.status == status  # read each time: a running sweep as it stands


def test_export_json_is_built_from_the_record_with_nulls_not_placeholder_strings(
        record, tmp_path, capsys, monkeypatch):
    """`export --format json` of a trial without a checkpoint and without an MLflow run
    (the record's store, relative `nowhere/mlflow.db`, has no run of it): null where the
    YAML header says unknown / none, and every other field as the YAML header has it."""
    from tune_smpl.cli import main

    monkeypatch.chdir(tmp_path)  # the relative store lands here

    reports = _reports(0.5, 0.8)
    top = _trial(0, {"lr": 0.1}, reports, outcome="completed", started=True)
    record.save_trial(top)
    record.save_trial(_trial(1, {"lr": 0.2}, _reports(0.4), outcome="diverged"))
    assert main(["export", "t", "--storage-path", str(tmp_path), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)["_export"]
    assert got == {"metric": "val_accuracy", "value": 0.8, "sweep": "t", "trial_id": "0000",
                   "outcome": "completed", "mlflow_run_id": None, "checkpoint": None,
                   "measure": "best val_accuracy report of a search trial",
                   "note": got["note"], "skipped_damaged": []}
    assert got["note"].startswith("one noisy estimate: the highest best report of 1 trial")
    assert main(["export", "t", "--storage-path", str(tmp_path)]) == 0
    header = capsys.readouterr().out
    assert "# mlflow_run_id: unknown\n" in header and "# checkpoint: none\n" in header
    # A checkpoint the best report names: its URI in both formats.
    record.save_trial(_trial(0, {"lr": 0.1}, [reports[0], {**reports[1],
                             "checkpoint_dir_name": "checkpoint_000001"}],
                             outcome="completed", started=True))
    assert main(["export", "t", "--storage-path", str(tmp_path), "--format", "json"]) == 0
    want = str(tmp_path / "t" / "trial_0000" / "checkpoint_000001")
    assert json.loads(capsys.readouterr().out)["_export"]["checkpoint"] == want
    assert main(["export", "t", "--storage-path", str(tmp_path)]) == 0
    assert f"# checkpoint: {want}\n" in capsys.readouterr().out
