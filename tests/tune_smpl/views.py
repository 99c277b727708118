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


def record(sweep: Path, prefix: str = "trial_") -> dict[str, dict]:
    """key -> trial.json of a local sweep folder (`prefix="finalist_"`: its finalist runs)."""
    return {d.name.removeprefix(prefix): json.loads((d / "trial.json").read_text())
            for d in sorted(sweep.glob(f"{prefix}*")) if (d / "trial.json").is_file()}


def report_count(sweep: Path) -> int:
    """The reports in a sweep's trial records so far (0 before its folder exists)."""
    return sum(len(t["reports"]) for t in record(sweep).values()) if sweep.is_dir() else 0


def history_kept(before: dict, after: dict) -> None:
    """A resumed trial continues from its last checkpoint: the reports it had stay, each
    step comes once, none is missing, and a finished trial is not run again."""
    for key, t in after.items():
        steps = [r["step"] for r in t["reports"]]
        assert steps == sorted(set(steps)), (key, steps)
        if t["outcome"] == "completed":
            assert steps == list(range(steps[0], steps[-1] + 1, steps[0])), (key, steps)
        old = before.get(key)
        if old and old["outcome"]:
            assert t == old, key  # finished before: untouched
        elif old:
            kept = [r["step"] for r in old["reports"]]
            assert steps[:len(kept)] == kept, (key, kept, steps)


def finalist_best(sweep: Path) -> tuple[str, float, int] | None:
    """An independent reading of the best with a finalist stage: (search trial key, mean of
    its runs' final val_accuracy at `steps`, runs) for the highest mean; None without one."""
    steps = json.loads((sweep / "sweep.json").read_text())["base"]["steps"]
    finals: dict[str, list[float]] = {}
    for r in record(sweep, "finalist_").values():
        last = r["reports"][-1] if r["reports"] else {}
        if r["outcome"] == "completed" and last.get("step") == steps:
            finals.setdefault(r["finalist_of"], []).append(last["val_accuracy"])
    if not finals:
        return None
    key = max(sorted(finals), key=lambda k: sum(finals[k]) / len(finals[k]))
    return key, sum(finals[key]) / len(finals[key]), len(finals[key])


def study(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep}/optuna.db")


def own_trials(sweep: Path, st: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """record key -> the study's trial of it. A warm-started study holds the prior's trials
    first (numbers 0..P-1, user attr `prior`, as prior.json lists them, finished: COMPLETE or
    PRUNED); the sweep's own trial n is study trial P + n, and nothing else is a prior."""
    meta = json.loads((sweep / "sweep.json").read_text())
    n_prior = (meta.get("warm_start") or {}).get("trials", 0)
    prior = [t for t in st.trials if "prior" in t.user_attrs]
    assert [t.number for t in prior] == list(range(n_prior)), [t.number for t in prior]
    if n_prior:
        added = json.loads((sweep / "prior.json").read_text())["trials"]
        names = {s["name"] for s in meta["warm_start"]["sweeps"]}
        for t, a in zip(prior, added, strict=True):
            assert t.state in (TrialState.COMPLETE, TrialState.PRUNED), t.number
            assert t.user_attrs["prior"] == a["sweep"] in names and t.params == a["params"]
    own = {f"{t.number - n_prior:04d}": t for t in st.trials if "prior" not in t.user_attrs}
    assert all(t.user_attrs.get("key") in (None, k) for k, t in own.items())
    return own


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


def search_children(children: dict) -> dict:
    return {k: c for k, c in children.items() if c.data.tags.get("role") != "finalist"}


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
    for key, t in rec.items():
        check_checkpoints(sweep / f"trial_{key}", t["reports"])
    # The study: the prior's trials (a warm start), then one trial per record, in the
    # outcome's state, nothing RUNNING or WAITING.
    own = own_trials(sweep, study(sweep))
    assert sorted(own) == sorted(rec)
    for key, t in own.items():
        r = rec[key]
        assert t.state == TrialState[OPTUNA[r["outcome"]]], (t.number, t.state, r["outcome"])
        assert t.params == r["params"]
        steps = {x["step"]: x["val_accuracy"] for x in r["reports"] if "val_accuracy" in x}
        if t.state == TrialState.PRUNED and steps:
            assert t.value == steps[max(steps)]  # PRUNED keeps its last value
        if t.state == TrialState.COMPLETE:
            assert t.value == max(steps.values())
    # MLflow: a child per trial and per finalist run with the same outcome; nothing RUNNING;
    # the parent ended.
    parent, children = mlflow_runs(uri, sweep.name)
    runs = record(sweep, "finalist_")
    assert sorted(search_children(children)) == sorted(rec)
    assert sorted(set(children) - set(rec)) == sorted(runs)
    for key, c in children.items():
        r = rec.get(key) or runs[key]
        assert c.data.tags["trial_status"] == r["outcome"], key
        assert c.info.status == MLFLOW[r["outcome"]], (key, c.info.status)
        assert c.data.tags["role"] == ("finalist" if key in runs else "search"), key
        if key in runs:
            assert c.data.tags["finalist_of"] == r["finalist_of"], key
    for key, r in runs.items():  # a finalist run: one final outcome, never early_stopped
        assert r["outcome"] in OPTUNA and r["outcome"] != "early_stopped", (key, r["outcome"])
        assert not r["interrupted"] and r["finalist_of"] in rec, key
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_status"] == "finished"
    # The one best, everywhere: the finalist with the best mean, else the search's best.
    final = finalist_best(sweep)
    if final is not None:
        key, mean, n = final
        assert parent.data.tags["best_trial_id"] == key
        assert parent.data.tags["best_measure"] == "final val_accuracy at steps"
        assert math.isclose(parent.data.metrics["best_val_accuracy"], mean, rel_tol=1e-9)
        assert parent.data.metrics["finalist_seeds"] == n
        if summary is not None:
            assert f"best val_accuracy {mean:.4f} (finalist {key}:" in summary
        if export is not None:
            assert f"trial_id: {key}" in export
            assert f"best final val_accuracy at steps: {mean:.6g}" in export, export[:300]
        return rec
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


def check_checkpoints(folder: Path, reports: list[dict]) -> None:
    """Of the checkpoints a trial's reports name, only its latest two, its best report's and
    a restart point are left (the driver deletes the others, issue 26); the best report's
    is there."""
    named = [r["checkpoint_dir_name"] for r in reports if r.get("checkpoint_dir_name")]
    scored = [r for r in reports if isinstance(r.get("val_accuracy"), (int, float))
              and math.isfinite(r["val_accuracy"])]
    best = max(scored, key=lambda r: r["val_accuracy"], default={}).get("checkpoint_dir_name")
    keep = set(named[-2:]) | ({best} if best else set())
    keep |= {n for n in named if n.startswith("restart_")}
    have = {d.name for d in folder.iterdir() if d.is_dir()}
    assert not (have & set(named)) - keep, (folder.name, sorted(have), named, best)
    if best:
        assert best in have, (folder.name, best, sorted(have))


def check_interrupted(sweep: Path, uri: str) -> dict[str, dict]:
    """An interrupted sweep: its unfinished trials visibly interrupted, until --resume."""
    rec = record(sweep)
    open_ = [k for k, t in rec.items() if t["outcome"] is None]
    open_runs = [k for k, t in record(sweep, "finalist_").items() if t["outcome"] is None]
    assert (open_ or open_runs) and all(rec[k]["interrupted"] for k in open_)
    st = own_trials(sweep, study(sweep))
    for k in open_:  # asked in the run that stopped: marked; not asked again yet: WAITING
        assert (st[k].state == TrialState.RUNNING and st[k].user_attrs.get("interrupted")
                or st[k].state == TrialState.WAITING), (k, st[k].state)
    parent, children = mlflow_runs(uri, sweep.name)
    runs = record(sweep, "finalist_")
    assert sorted(search_children(children)) == sorted(rec)
    assert sorted(set(children) - set(rec)) == sorted(runs)
    assert parent.info.status == "KILLED" and parent.data.tags["sweep_status"] == "interrupted"
    for k, c in children.items():
        r = rec.get(k) or runs[k]
        want = r["outcome"] or "interrupted"
        assert r["outcome"] or r["interrupted"], k
        assert c.data.tags["trial_status"] == want and c.info.status == MLFLOW[want], k
    return rec
