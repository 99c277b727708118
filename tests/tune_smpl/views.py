"""Every view of a sweep, read independently, and the invariants that tie them together.

The record (`<storage>/<name>/trial_*/trial.json`), the Optuna study (`optuna.db`), MLflow
(one parent, one child per trial), Ray's trial folders, the final summary and `export` must
tell one story: one outcome per trial, the same everywhere, nothing left RUNNING, the same
counts and the same best.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

OPTUNA = {"completed": "COMPLETE", "early_stopped": "PRUNED", "cut_by_budget": "PRUNED",
          "diverged": "FAIL", "errored": "FAIL", "out_of_memory": "FAIL"}
MLFLOW = {"completed": "FINISHED", "early_stopped": "FINISHED", "cut_by_budget": "FINISHED",
          "diverged": "FAILED", "errored": "FAILED", "out_of_memory": "FAILED",
          "interrupted": "KILLED"}
SCORED = ("completed", "early_stopped", "cut_by_budget")


def record(sweep: Path) -> dict[str, dict]:
    """key -> trial.json of a local sweep folder."""
    return {d.name.removeprefix("trial_"): json.loads((d / "trial.json").read_text())
            for d in sorted(sweep.glob("trial_*")) if (d / "trial.json").is_file()}


def study(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep}/optuna.db")


def mlflow_runs(uri: str, name: str) -> tuple:
    """(parent, {trial key: child}); asserts one parent and no trial twice."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tune-smpl")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep_name = '{name}'",
                              max_results=1000)
    parents = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    by_key = {c.data.tags["trial_id"]: c for c in children}
    assert len(by_key) == len(children) == len(runs) - 1, "a trial has two child runs"
    return parents[0], by_key


def best_of(trials: dict[str, dict]) -> tuple[str, float] | None:
    """An independent reading of "best": max val_accuracy over scored trials' reports."""
    top = None
    for key in sorted(trials):
        t = trials[key]
        if t["outcome"] not in SCORED:
            continue
        vals = [r["val_accuracy"] for r in t["reports"]
                if isinstance(r.get("val_accuracy"), (int, float))
                and math.isfinite(r["val_accuracy"])]
        if vals and (top is None or max(vals) > top[1]):
            top = (key, max(vals))
    return top


def check_finished(sweep: Path, uri: str, *, trials: int | None = None,
                   summary: str | None = None, export: str | None = None) -> dict[str, dict]:
    """The invariants of a finished sweep; returns its record."""
    rec = record(sweep)
    if trials is not None:
        assert len(rec) == trials, sorted(rec)
    for key, t in rec.items():
        assert t["outcome"] in OPTUNA, (key, t["outcome"])  # one final outcome each
        assert not t["interrupted"], key
    # Ray's trial folders: one per trial, none without a record.
    assert sorted(d.name for d in sweep.glob("trial_*")) == [f"trial_{k}" for k in sorted(rec)]
    # The study: one trial per record, in the outcome's state, nothing RUNNING or WAITING.
    st = study(sweep)
    assert [f"{t.number:04d}" for t in st.trials] == sorted(rec)
    for t in st.trials:
        r = rec[f"{t.number:04d}"]
        assert t.state == TrialState[OPTUNA[r["outcome"]]], (t.number, t.state, r["outcome"])
        assert t.params == r["params"]
        steps = {x["step"]: x["val_accuracy"] for x in r["reports"] if "val_accuracy" in x}
        if t.state == TrialState.PRUNED and steps:
            assert t.value == steps[max(steps)]  # PRUNED keeps its last value
        if t.state == TrialState.COMPLETE:
            assert t.value == max(steps.values())
    # MLflow: a child per trial with the same outcome; nothing RUNNING; the parent ended.
    parent, children = mlflow_runs(uri, sweep.name)
    assert sorted(children) == sorted(rec)
    for key, c in children.items():
        assert c.data.tags["trial_status"] == rec[key]["outcome"], key
        assert c.info.status == MLFLOW[rec[key]["outcome"]], (key, c.info.status)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_status"] == "finished"
    # The one best, everywhere.
    top = best_of(rec)
    if top is None:
        assert "best_trial_id" not in parent.data.tags
    else:
        assert parent.data.tags["best_trial_id"] == top[0]
        assert parent.data.metrics["best_val_accuracy"] == top[1]
        for o in OPTUNA:
            assert parent.data.metrics[f"trials_{o}"] == sum(
                t["outcome"] == o for t in rec.values())
        if summary is not None:
            assert f"best val_accuracy {top[1]:.4f} (trial {top[0]}," in summary
            assert f"{len(rec)} trials:" in summary
        if export is not None:
            assert f"trial_id: {top[0]}" in export
            assert re.search(rf"best val_accuracy: {top[1]:.6g}\b", export), export[:300]
    return rec


def check_interrupted(sweep: Path, uri: str) -> dict[str, dict]:
    """An interrupted sweep: its unfinished trials visibly interrupted, until --resume."""
    rec = record(sweep)
    open_ = [k for k, t in rec.items() if t["outcome"] is None]
    assert open_ and all(rec[k]["interrupted"] for k in open_)
    st = {f"{t.number:04d}": t for t in study(sweep).trials}
    for k in open_:  # asked in the run that stopped: marked; not asked again yet: WAITING
        assert (st[k].state == TrialState.RUNNING and st[k].user_attrs.get("interrupted")
                or st[k].state == TrialState.WAITING), (k, st[k].state)
    parent, children = mlflow_runs(uri, sweep.name)
    assert sorted(children) == sorted(rec)
    assert parent.info.status == "KILLED" and parent.data.tags["sweep_status"] == "interrupted"
    for k, c in children.items():
        want = rec[k]["outcome"] or "interrupted"
        assert c.data.tags["trial_status"] == want and c.info.status == MLFLOW[want], k
    return rec
