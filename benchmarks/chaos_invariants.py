"""The invariants a sweep must keep after any fault, checked on plain data (chaos.py).

The views of a sweep are read independently of the product's own readers (the record as
raw JSON from its folder or bucket, the Optuna study from its SQLite file, MLflow through
its client) into plain dicts; `check_views` and `check_commands` then return every broken
invariant as data, `{"invariant": name, "detail": text}`, so that the benchmark counts
violations instead of stopping at the first one (tests/tune_smpl/views.py asserts the same
rules; this module keeps the benchmark free of test imports). The rules are the documented
ones (docs/design.md, "Outcomes", "The end of a sweep", "Resume from the record"; issue 25).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

FINAL = ("completed", "early_stopped", "cut_by_budget", "diverged", "errored",
         "out_of_memory")
SCORED = ("completed", "early_stopped", "cut_by_budget")
OPTUNA = {"completed": "COMPLETE", "early_stopped": "PRUNED", "cut_by_budget": "PRUNED",
          "diverged": "FAIL", "errored": "FAIL", "out_of_memory": "FAIL"}
MLFLOW = {"completed": "FINISHED", "early_stopped": "FINISHED", "cut_by_budget": "FINISHED",
          "diverged": "FAILED", "errored": "FAILED", "out_of_memory": "FAILED"}
# Every invariant the benchmark counts, in the order of the report's columns.
INVARIANTS = ("one_outcome", "study_agrees", "mlflow_agrees", "same_best", "step_once",
              "history_kept", "no_running", "no_lost_trial", "restart_told", "export_report",
              "exit_status", "output")


def violation(invariant: str, detail: str) -> dict:
    assert invariant in INVARIANTS, invariant
    return {"invariant": invariant, "detail": detail[:400]}


# --- reading the views ----------------------------------------------------------------
def read_local(sweep: Path) -> dict:
    """sweep.json, the trial records and the trial folders of a local sweep folder."""
    meta = sweep / "sweep.json"
    return {"meta": json.loads(meta.read_text()) if meta.is_file() else None,
            "record": {d.name.removeprefix("trial_"): json.loads((d / "trial.json").read_text())
                       for d in sorted(sweep.glob("trial_*")) if (d / "trial.json").is_file()},
            "folders": sorted(d.name for d in sweep.glob("trial_*") if d.is_dir())}


def read_bucket(client, bucket: str, prefix: str) -> dict:
    """The same from an S3 bucket (`prefix`: the sweep's folder, no slashes at the ends)."""
    keys = [o["Key"][len(prefix) + 1:]
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix + "/") for o in page.get("Contents", [])]

    def load(rel: str):
        return json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read())

    folders = sorted({k.split("/", 1)[0] for k in keys if k.startswith("trial_")})
    return {"meta": load("sweep.json") if "sweep.json" in keys else None,
            "record": {f.removeprefix("trial_"): load(f"{f}/trial.json")
                       for f in folders if f"{f}/trial.json" in keys},
            "folders": folders}


def read_study(db: Path, name: str) -> dict | None:
    """key -> {state, value, params, user_attrs} of the study's trials (no warm start in
    these sweeps: study trial n is the record's trial n); None without a study file."""
    import optuna

    if not db.is_file():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return {f"{t.number:04d}": {"state": t.state.name, "value": t.value, "params": t.params,
                                "user_attrs": dict(t.user_attrs)} for t in st.trials}


def read_mlflow(uri: str, name: str) -> dict:
    """Every run tagged with the sweep's name: parents, children (with the steps of each
    metric's history), and the names of runs still RUNNING."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tune-smpl")
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], f"tags.sweep_name = '{name}'", max_results=5000)
    out = {"parents": [], "children": [],
           "running": [r.info.run_name for r in runs if r.info.status == "RUNNING"]}
    for r in runs:
        row = {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
               "tags": dict(r.data.tags), "metrics": dict(r.data.metrics)}
        if r.data.tags.get("run_kind") == "sweep":
            out["parents"].append(row)
        elif r.data.tags.get("run_kind") == "trial":
            row["key"] = r.data.tags.get("trial_id")
            row["steps"] = {m: [p.step for p in client.get_metric_history(r.info.run_id, m)]
                            for m in sorted(r.data.metrics)}
            out["children"].append(row)
    return out


# --- the invariants -------------------------------------------------------------------
def best_of(record: dict[str, dict]) -> tuple[str, float] | None:
    """The best, read independently: the highest val_accuracy of any report of a scored
    trial; a tie goes to the earlier trial."""
    top = None
    for key in sorted(record):
        t = record[key]
        if t.get("outcome") not in SCORED:
            continue
        vals = [r["val_accuracy"] for r in t.get("reports", [])
                if isinstance(r.get("val_accuracy"), (int, float))
                and math.isfinite(r["val_accuracy"])]
        if vals and (top is None or max(vals) > top[1]):
            top = (key, max(vals))
    return top


def check_views(v: dict, trials: int) -> list[dict]:
    """The invariants of a finished sweep of `trials` trials over its views
    (`read_local`/`read_bucket` + `study` + `mlflow`)."""
    out: list[dict] = []
    rec, meta = v.get("record") or {}, v.get("meta")
    # Every trial exactly one final outcome; the sweep finished with all of them.
    if meta is None:
        out.append(violation("one_outcome", "no sweep.json"))
    elif meta.get("status") != "finished":
        out.append(violation("one_outcome", f"sweep status {meta.get('status')!r}"))
    if sorted(rec) != [f"{n:04d}" for n in range(trials)]:
        out.append(violation("one_outcome", f"trials {sorted(rec)}, expected {trials}"))
    for key, t in sorted(rec.items()):
        if t.get("outcome") not in FINAL:
            out.append(violation("one_outcome", f"trial {key}: outcome {t.get('outcome')!r}"))
        if t.get("interrupted"):
            out.append(violation("one_outcome", f"trial {key}: still marked interrupted"))
        if t.get("outcome") == "errored":  # no fault here is documented to cost a trial
            out.append(violation("no_lost_trial", f"trial {key} errored: "
                                 f"{(t.get('error') or '')[-200:]}"))
    if v.get("folders") is not None and sorted(v["folders"]) != [f"trial_{k}" for k in rec]:
        out.append(violation("one_outcome", f"trial folders {v['folders']} vs records "
                                            f"{sorted(rec)}"))
    out += _steps(rec)
    out += _study(v.get("study"), rec)
    out += _mlflow(v.get("mlflow"), rec)
    return out


def _steps(rec: dict) -> list[dict]:
    out = []
    for key, t in sorted(rec.items()):
        steps = [r.get("step") for r in t.get("reports", [])]
        if steps != sorted(set(steps)):
            out.append(violation("step_once", f"record trial {key}: steps {steps}"))
        elif t.get("outcome") == "completed" and steps and steps != list(
                range(steps[0], steps[-1] + 1, steps[0])):
            out.append(violation("step_once", f"record trial {key}: steps missing {steps}"))
    return out


def _study(study: dict | None, rec: dict) -> list[dict]:
    if study is None:
        return [violation("study_agrees", "no study")]
    out = []
    if sorted(study) != sorted(rec):
        out.append(violation("study_agrees", f"study trials {sorted(study)} vs record "
                                             f"{sorted(rec)}"))
    for key, s in sorted(study.items()):
        if s["state"] in ("RUNNING", "WAITING"):
            out.append(violation("no_running", f"study trial {key} {s['state']}"))
        r = rec.get(key)
        if r is None or r.get("outcome") not in OPTUNA:
            continue
        if s["state"] != OPTUNA[r["outcome"]]:
            out.append(violation("study_agrees", f"trial {key}: study {s['state']}, record "
                                                 f"{r['outcome']}"))
        if s["params"] != r.get("params"):
            out.append(violation("study_agrees", f"trial {key}: params differ"))
        vals = {x["step"]: x["val_accuracy"] for x in r.get("reports", [])
                if "val_accuracy" in x}
        want = (max(vals.values()) if s["state"] == "COMPLETE" and vals else
                vals[max(vals)] if s["state"] == "PRUNED" and vals else None)
        if want is not None and s["value"] != want:
            out.append(violation("study_agrees", f"trial {key}: study value {s['value']} "
                                                 f"vs record {want}"))
    return out


def _mlflow(ml: dict | None, rec: dict) -> list[dict]:
    if ml is None:
        return [violation("mlflow_agrees", "MLflow not read")]
    out = [violation("no_running", f"MLflow run {n} RUNNING") for n in sorted(ml["running"])]
    if len(ml["parents"]) != 1:
        out.append(violation("mlflow_agrees", f"{len(ml['parents'])} parent runs"))
    keys = [c["key"] for c in ml["children"]]
    if sorted(keys) != sorted(rec):
        out.append(violation("mlflow_agrees", f"child runs {sorted(keys)} vs record "
                                              f"{sorted(rec)}"))
    for c in ml["children"]:
        r = rec.get(c["key"])
        twice = {m: sorted({s for s in steps if steps.count(s) > 1})
                 for m, steps in sorted(c.get("steps", {}).items())
                 if len(steps) != len(set(steps))}
        if twice:
            first = next(iter(twice))
            out.append(violation("step_once", f"MLflow trial {c['key']}: steps logged twice "
                                 f"in {len(twice)} metrics ({first} at {twice[first]})"))
        if r is None or r.get("outcome") not in MLFLOW:
            continue
        if c["tags"].get("trial_status") != r["outcome"] or c["status"] != MLFLOW[r["outcome"]]:
            out.append(violation("mlflow_agrees", f"trial {c['key']}: MLflow "
                                 f"{c['status']}/{c['tags'].get('trial_status')}, record "
                                 f"{r['outcome']}"))
        want = sorted({x["step"] for x in r.get("reports", []) if "val_accuracy" in x})
        have = sorted(set(c.get("steps", {}).get("val_accuracy", [])))
        if want != have:  # every metric point of the record, no other
            out.append(violation("mlflow_agrees", f"trial {c['key']}: MLflow val_accuracy "
                                                  f"steps {have} vs record {want}"))
    if len(ml["parents"]) == 1:
        p = ml["parents"][0]
        if p["status"] != "FINISHED" or p["tags"].get("sweep_status") != "finished":
            out.append(violation("mlflow_agrees", f"parent {p['status']}/"
                                                  f"{p['tags'].get('sweep_status')}"))
        top = best_of(rec)
        got = (p["tags"].get("best_trial_id"), p["metrics"].get("best_val_accuracy"))
        if top is not None and got != top:
            out.append(violation("same_best", f"MLflow best {got} vs record {top}"))
        for o in FINAL if top is not None else ():
            n = sum(t.get("outcome") == o for t in rec.values())
            if p["metrics"].get(f"trials_{o}") != n:
                out.append(violation("mlflow_agrees", f"parent trials_{o} "
                                     f"{p['metrics'].get(f'trials_{o}')} vs record {n}"))
    return out


def check_history(before: dict[str, dict], after: dict[str, dict]) -> list[dict]:
    """A resume keeps what the record had: a finished trial untouched, an unfinished one's
    reports kept as they were (it continues from the checkpoint of its last one)."""
    out = []
    for key, old in sorted(before.items()):
        new = after.get(key)
        if new is None:
            out.append(violation("history_kept", f"trial {key} vanished"))
        elif old.get("outcome") and new != old:
            out.append(violation("history_kept", f"finished trial {key} changed by a resume"))
        elif old.get("params") != new.get("params"):
            out.append(violation("history_kept", f"trial {key}: params changed"))
        else:
            kept = [r.get("step") for r in old.get("reports", [])]
            steps = [r.get("step") for r in new.get("reports", [])]
            if steps[:len(kept)] != kept:
                out.append(violation("history_kept", f"trial {key}: reports {kept} became "
                                                      f"{steps}"))
    return out


def check_best_text(rec: dict, summary: str | None, export: str | None) -> list[dict]:
    """The summary and `export` name the same best as the record."""
    top, out = best_of(rec), []
    if top is None:
        return out
    if summary is not None and f"best val_accuracy {top[1]:.4f} (trial {top[0]}," not in summary:
        out.append(violation("same_best", f"summary does not name trial {top[0]} "
                                          f"{top[1]:.4f}"))
    if summary is not None and f"{len(rec)} trials:" not in summary:
        out.append(violation("same_best", f"summary does not count {len(rec)} trials"))
    if export is not None and (f"trial_id: {top[0]}" not in export or not re.search(
            rf"best val_accuracy: {top[1]:.6g}\b", export)):
        out.append(violation("same_best", f"export does not name trial {top[0]} {top[1]:.6g}"))
    return out


# --- the commands: exit statuses and what the user sees ----------------------------------
RESTART_RE = r"trial {key} restarted from step \d+"
NODE_RE = r"trial {key} restarted from step \d+ on another node: its node died"
# The line of a command that gave up waiting for MLflow (tune_smpl/sweep/sync.py, finish).
BEHIND = "is behind the record ("
UNREACHABLE_RE = (r"MLflow at \S+ unreachable since \d\d:\d\d:\d\d; the sweep goes on, "
                  r"the record keeps everything")


def check_output(text: str, what: str) -> list[dict]:
    """What no command prints: a traceback, MLflow's own "View run" lines."""
    out = []
    if "Traceback (most recent call last)" in text:
        after = text.split("Traceback (most recent call last)", 1)[1].splitlines()[1:]
        line = next((ln for ln in after if ln.strip() and not ln[0].isspace()), "")
        out.append(violation("output", f"{what}: a traceback on the terminal ({line[:160]})"))
    if "View run " in text:
        out.append(violation("output", f"{what}: MLflow's 'View run' lines"))
    return out


def check_exit(rc: int | None, allowed: tuple[int, ...], what: str) -> list[dict]:
    if rc is None:
        return [violation("exit_status", f"{what}: did not exit in time (killed)")]
    if rc not in allowed:
        want = " or ".join(map(str, allowed))
        return [violation("exit_status", f"{what}: exit {rc}, expected {want}")]
    return []
