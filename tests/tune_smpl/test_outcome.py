"""The one decision of a trial's outcome, the one definition of best, URI joins."""

from __future__ import annotations

import json
import math

import pytest

from mlflow_tracking.values import TRIAL_STATUSES
from tune_smpl.sweep.finalists import Measure, StageStatus
from tune_smpl.sweep.outcome import OPTUNA_STATE, OUTCOMES, SCORED, Outcome, best, decide, rank
from tune_smpl.sweep.record import SweepStatus, TrialRecord
from tune_smpl.sweep.storage import SweepStorage


@pytest.mark.parametrize("last,kw,expected", [
    ({"step": 600, "val_accuracy": 0.9}, {}, "completed"),
    ({"step": 200, "val_accuracy": 0.9}, {}, "early_stopped"),
    ({"step": 200, "val_accuracy": 0.9}, {"budget_spent": True}, "cut_by_budget"),
    ({"step": 600, "val_accuracy": 0.9}, {"budget_spent": True}, "completed"),
    ({"step": 30, "diverged": True, "val_accuracy": 0.0}, {}, "diverged"),
    ({"step": 200, "oom": True, "error": "out of memory"}, {"budget_spent": True},
     "out_of_memory"),
    ({"step": 600}, {"errored": True}, "errored"),
    (None, {"errored": True}, "errored"),
    (None, {}, "early_stopped"),
])
def test_decide(last, kw, expected):
    got = decide(last, steps=600, **kw)
    assert got == expected and got is Outcome(expected)


def test_the_enums_are_the_strings_the_record_and_mlflow_have_always_held():
    """The values written to trial.json, sweep.json and MLflow tags, spelled out: a record
    written before the enums reads back the same, and what the enums write is these."""
    assert [o.value for o in Outcome] == ["completed", "early_stopped", "cut_by_budget",
                                         "diverged", "errored", "out_of_memory", "interrupted"]
    assert [s.value for s in StageStatus] == ["planned", "interrupted", "cut_by_budget", "done"]
    assert [m.value for m in Measure] == ["final val_accuracy at steps",
                                         "best val_accuracy report of a search trial"]
    assert [s.value for s in SweepStatus] == ["new", "running", "finished", "interrupted"]
    for member in [*Outcome, *StageStatus, *Measure, *SweepStatus]:
        assert json.dumps(member) == json.dumps(member.value)
        assert json.dumps({member: 1}) == json.dumps({member.value: 1})
        assert str(member) == f"{member}" == member.value
    assert set(OUTCOMES) == set(Outcome) - {Outcome.INTERRUPTED}
    assert set(SCORED) < set(OUTCOMES) and set(OPTUNA_STATE) == set(OUTCOMES)


def test_the_mlflow_status_map_covers_every_outcome():
    """mlflow_tracking spells the outcomes itself (it imports nothing of tune_smpl): its
    map has exactly the outcomes, a scored one FINISHED, a failed one FAILED, an
    interrupted one KILLED."""
    assert set(TRIAL_STATUSES) == {o.value for o in Outcome}
    for o in Outcome:
        want = ("KILLED" if o is Outcome.INTERRUPTED else
                "FINISHED" if o in SCORED else "FAILED")
        assert TRIAL_STATUSES[o] == want, o


def _t(key: str, outcome: str, values: list[float]) -> TrialRecord:
    return TrialRecord(key=key, number=int(key), params={}, distributions={}, config={},
                       outcome=outcome, reports=[{"step": 100 * (i + 1), "val_accuracy": v}
                                                 for i, v in enumerate(values)])


def test_best_is_the_maximum_over_scored_trials_only():
    trials = [_t("0", "completed", [0.5, 0.7]), _t("1", "early_stopped", [0.8]),
              _t("2", "diverged", [0.99]), _t("3", "out_of_memory", [0.95]),
              _t("4", "errored", [0.97]), _t("5", "cut_by_budget", [0.6, math.nan]),
              _t("6", None, [1.0])]  # unfinished: not scored yet
    assert best(trials).key == "1"
    assert [t.key for t in rank(trials)] == ["1", "0", "5"]
    assert best([_t("0", "diverged", [0.9])]) is None
    assert best([_t("0", "completed", [0.8]), _t("1", "completed", [0.8])]).key == "0"
    assert [t.key for t in rank(trials, "val_accuracy", "min")][0] == "0"  # 0.5


def test_a_uri_keeps_its_query_string_on_every_join(tmp_path):
    uri = "s3://bucket/runs?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    s = SweepStorage(uri)
    assert s.uri("sweep", "trial_0001", "checkpoint_000000") == (
        "s3://bucket/runs/sweep/trial_0001/checkpoint_000000"
        "?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1")
    assert s.path("sweep") == "bucket/runs/sweep"
    local = SweepStorage(str(tmp_path / "runs"))
    assert local.local and local.uri("x") == str(tmp_path / "runs" / "x")
    file_uri = SweepStorage(f"file://{tmp_path}/runs")
    assert file_uri.local and file_uri.uri("x") == f"{tmp_path}/runs/x"


def test_add_report_replaces_a_replayed_step_and_keeps_measurements():
    t = _t("0", None, [])
    t.add_report({"step": 20, "val_accuracy": 0.5, "pid": 1, "done": False,
                  "training_iteration": 1, "config": {"lr": 1}})
    t.add_report({"step": 40, "val_accuracy": 0.6, "pid": 1})
    t.add_report({"step": 40, "val_accuracy": 0.65, "pid": 2})  # replayed after a restart
    assert [(r["step"], r["val_accuracy"], r["pid"]) for r in t.reports] == [
        (20, 0.5, 1), (40, 0.65, 2)]
    assert "done" not in t.reports[0] and "config" not in t.reports[0]
