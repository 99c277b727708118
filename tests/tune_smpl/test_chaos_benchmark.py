"""benchmarks/chaos.py (issue 25): its invariant checker catches every invariant broken on
a hand-made sweep, its report's arithmetic, its seeded plan, and a `--quick` run of the
cheap faults (Ctrl-C and a killed driver) end to end, cross-checked against
tests/tune_smpl/views.py on the sweeps it leaves."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.benchmark_scripts import BENCHMARKS, load
from tests.tune_smpl import views
from tests.tune_smpl.conftest import REPO, cli_env

chaos = load("chaos")  # puts benchmarks/ on sys.path for its modules
import chaos_invariants as invariants  # noqa: E402
import chaos_rounds as rounds  # noqa: E402

STEPS, EVERY = 300, 50


# --- a hand-made finished sweep, every view agreeing ------------------------------------
def _trial(key: str, outcome: str, vals: list[float]) -> dict:
    reports = [{"step": EVERY * (i + 1), "val_accuracy": v} for i, v in enumerate(vals)]
    return {"key": key, "number": int(key), "params": {"lr": 0.01 * (int(key) + 1)},
            "outcome": outcome, "interrupted": False, "reports": reports, "restarts": 0,
            "error": None}


def _good() -> dict:
    rec = {"0000": _trial("0000", "completed", [0.5, 0.7, 0.6, 0.8, 0.9, 0.85]),
           "0001": _trial("0001", "early_stopped", [0.6, 0.95]),
           "0002": _trial("0002", "diverged", [])}
    states = {"completed": "COMPLETE", "early_stopped": "PRUNED", "diverged": "FAIL"}
    study = {}
    for k, t in rec.items():
        vals = [r["val_accuracy"] for r in t["reports"]]
        value = {"COMPLETE": max(vals) if vals else None,
                 "PRUNED": vals[-1] if vals else None}.get(states[t["outcome"]])
        study[k] = {"state": states[t["outcome"]], "value": value, "params": dict(t["params"]),
                    "user_attrs": {}}
    status = {"completed": "FINISHED", "early_stopped": "FINISHED", "diverged": "FAILED"}
    children = [{"key": k, "name": f"trial_{k}", "run_id": f"r{k}", "status": status[t["outcome"]],
                 "tags": {"trial_status": t["outcome"]},
                 "steps": {"val_accuracy": [r["step"] for r in t["reports"]],
                           "val_loss": [r["step"] for r in t["reports"]]}}
                for k, t in rec.items()]
    # The best by hand: trial 0001 reached 0.95, above trial 0000's 0.9.
    counts = {f"trials_{o}": 0 for o in invariants.FINAL}
    counts.update(trials_completed=1, trials_early_stopped=1, trials_diverged=1)
    parent = {"run_id": "p", "name": "s", "status": "FINISHED",
              "tags": {"sweep_status": "finished", "best_trial_id": "0001"},
              "metrics": {"best_val_accuracy": 0.95, **counts}}
    return {"meta": {"status": "finished"}, "record": rec,
            "folders": [f"trial_{k}" for k in rec], "study": study,
            "mlflow": {"parents": [parent], "children": children, "running": []}}


def _names(found: list[dict]) -> set[str]:
    return {v["invariant"] for v in found}


def test_the_hand_made_sweep_keeps_every_invariant():
    assert invariants.check_views(_good(), trials=3) == []
    assert invariants.best_of(_good()["record"]) == ("0001", 0.95)


def _broken(edit) -> set[str]:
    v = _good()
    edit(v)
    return _names(invariants.check_views(v, trials=3))


@pytest.mark.parametrize("edit, invariant", [
    (lambda v: v["record"]["0000"].update(outcome=None), "one_outcome"),
    (lambda v: v["record"]["0001"].update(interrupted=True), "one_outcome"),
    (lambda v: v["record"]["0002"].update(outcome="interrupted"), "one_outcome"),
    (lambda v: v["record"].pop("0002"), "one_outcome"),
    (lambda v: v["meta"].update(status="interrupted"), "one_outcome"),
    (lambda v: v.update(meta=None), "one_outcome"),
    (lambda v: v["folders"].append("trial_0003"), "one_outcome"),
    (lambda v: v["record"]["0000"]["reports"].append({"step": 300, "val_accuracy": 0.1}),
     "step_once"),
    (lambda v: v["record"]["0000"]["reports"].pop(2), "step_once"),
    (lambda v: v["study"]["0000"].update(state="PRUNED"), "study_agrees"),
    (lambda v: v["study"].pop("0001"), "study_agrees"),
    (lambda v: v["study"]["0001"].update(value=0.6), "study_agrees"),
    (lambda v: v["study"]["0000"].update(params={"lr": 3.0}), "study_agrees"),
    (lambda v: v.update(study=None), "study_agrees"),
    (lambda v: v["study"]["0002"].update(state="RUNNING"), "no_running"),
    (lambda v: v["mlflow"]["children"].pop(0), "mlflow_agrees"),
    (lambda v: v["mlflow"]["children"].append(copy.deepcopy(v["mlflow"]["children"][0])),
     "mlflow_agrees"),
    (lambda v: v["mlflow"]["children"][1].update(status="KILLED"), "mlflow_agrees"),
    (lambda v: v["mlflow"]["children"][1]["tags"].update(trial_status="completed"),
     "mlflow_agrees"),
    (lambda v: v["mlflow"]["children"][0]["steps"]["val_accuracy"].pop(), "mlflow_agrees"),
    (lambda v: v["mlflow"]["children"][0]["steps"]["val_loss"].append(100), "step_once"),
    (lambda v: v["mlflow"]["running"].append("trial_0002"), "no_running"),
    (lambda v: v["mlflow"]["parents"][0].update(status="KILLED"), "mlflow_agrees"),
    (lambda v: v["mlflow"]["parents"].append(copy.deepcopy(v["mlflow"]["parents"][0])),
     "mlflow_agrees"),
    (lambda v: v["mlflow"]["parents"][0]["metrics"].update(trials_completed=2), "mlflow_agrees"),
    (lambda v: v["mlflow"]["parents"][0]["tags"].update(best_trial_id="0000"), "same_best"),
    (lambda v: v["mlflow"]["parents"][0]["metrics"].update(best_val_accuracy=0.9), "same_best"),
])
def test_each_broken_invariant_is_caught(edit, invariant):
    assert invariant in _broken(edit)


def test_an_errored_trial_is_a_lost_trial_even_when_the_views_agree():
    def errored(v):
        v["record"]["0002"].update(outcome="errored", error="ActorDiedError")
        v["mlflow"]["children"][2]["tags"]["trial_status"] = "errored"
        v["mlflow"]["parents"][0]["metrics"].update(trials_diverged=0, trials_errored=1)

    assert _broken(errored) == {"no_lost_trial"}


def test_history_kept_across_a_resume():
    before = copy.deepcopy(_good()["record"])
    before["0001"].update(outcome=None, reports=before["0001"]["reports"][:1])
    assert invariants.check_history(before, _good()["record"]) == []
    changed = _good()["record"]
    changed["0000"]["reports"][0]["val_accuracy"] = 0.1  # a finished trial run again
    assert _names(invariants.check_history(before, changed)) == {"history_kept"}
    dropped = _good()["record"]
    dropped["0001"]["reports"] = [{"step": 100, "val_accuracy": 0.95}]  # step 50 lost
    assert _names(invariants.check_history(before, dropped)) == {"history_kept"}
    gone = _good()["record"]
    gone.pop("0001")
    assert _names(invariants.check_history(before, gone)) == {"history_kept"}


def test_the_summary_and_export_must_name_the_same_best():
    rec = _good()["record"]
    summary = "sweep s finished: 3 trials: ...\nbest val_accuracy 0.9500 (trial 0001, early"
    export = "# best val_accuracy: 0.95 (step 100)\n# trial_id: 0001\n"
    assert invariants.check_best_text(rec, summary, export) == []
    other = summary.replace("0001", "0000")
    assert _names(invariants.check_best_text(rec, other, None)) == {"same_best"}
    other = export.replace("0.95", "0.9")
    assert _names(invariants.check_best_text(rec, None, other)) == {"same_best"}


def test_exit_statuses_and_output():
    assert invariants.check_exit(130, (130,), "first") == []
    assert _names(invariants.check_exit(1, (130,), "first")) == {"exit_status"}
    assert _names(invariants.check_exit(None, (0,), "first")) == {"exit_status"}
    tb = "x\nTraceback (most recent call last):\n  File \"a.py\"\nOSError: gone\n"
    found = invariants.check_output(tb, "first")
    assert _names(found) == {"output"} and "OSError: gone" in found[0]["detail"]
    view_line = "🏃 View run trial_0000 at: http://x"
    assert _names(invariants.check_output(view_line, "first")) == {"output"}
    assert invariants.check_output("sweep s finished: 3 trials", "first") == []


def _fault(kind: str, **state) -> rounds.Fault:
    f = rounds.Fault({"kind": kind, "outage_s": 10.0}, None, {"storage": "s3://sweeps/r1?x=1"})
    f.injected, f.what = True, kind
    f.__dict__.update(state)
    return f


def _cmd(out: str, rc: int = 0, end: float = 100.0):
    return SimpleNamespace(out=out, rc=rc, end=end)


def test_fault_checks_restarts_told():
    rec = _good()["record"]
    rec["0000"]["restarts"] = 1
    told = "trial 0000 restarted from step 150 on another node: its node died\n"
    summary = "sweep s finished: 3 trials\n1 restart (trial 0000: node died)"
    assert _fault("kill_node").check([_cmd(told + summary)], rec, summary) == []
    assert _names(_fault("kill_node").check([_cmd(summary)], rec, summary)) == {"restart_told"}
    worker = "trial 0000 restarted from step 150: its process died\n"
    assert _fault("kill_worker").check([_cmd(worker)], rec, "1 restart") == []
    assert _names(_fault("kill_worker").check([_cmd(worker)], rec, "no count")) == {
        "restart_told"}
    none = _good()["record"]  # a worker killed, and no trial counts a restart
    assert _names(_fault("kill_worker").check([_cmd("")], none, None)) == {"restart_told"}


def test_a_node_killed_at_a_trials_start_need_not_restart_one():
    """Killed as the next trial starts there, Ray may not have placed it yet (it then runs
    elsewhere, no restart); a restart that did happen must still be told."""
    rec = _good()["record"]
    at_start = _fault("kill_node", spec={"kind": "kill_node", "at_start": True})
    assert at_start.check([_cmd("")], rec, None) == []
    assert _names(_fault("kill_node").check([_cmd("")], rec, None)) == {"restart_told"}
    rec["0001"]["restarts"] = 1
    assert _names(at_start.check([_cmd("")], rec, None)) == {"restart_told"}
    told = "trial 0001 restarted from step 0 on another node: its node died\n"
    assert at_start.check([_cmd(told)], rec, None) == []


def test_fault_checks_ctrl_c_the_tracking_line_and_the_storage_line():
    quick = _fault("sigint", signals=[90.0])
    assert quick.check([_cmd("", 130, end=100.0)], {}, None) == []
    assert _names(_fault("sigint", signals=[0.0]).check([_cmd("", 130, end=121.0)], {},
                                                        None)) == {"exit_status"}
    assert _names(_fault("sigint2", signals=[60.0]).check([_cmd("", 130, end=91.0)], {},
                                                          None)) == {"exit_status"}
    rec = _good()["record"]
    rec["0000"]["reports"][2]["reported_at"] = 55.0  # a report while the server was down
    line = ("MLflow at http://127.0.0.1:5 unreachable since 21:05:07; the sweep goes on, "
            "the record keeps everything\n")
    down = {"down_at": 50.0, "up_at": 60.0}
    assert _fault("tracking_down", **down).check([_cmd(line)], rec, None) == []
    assert _names(_fault("tracking_down", **down).check([_cmd("")], rec, None)) == {"output"}
    assert _names(_fault("tracking_down", **down).check([_cmd(line * 2)], rec, None)) == {
        "output"}
    told = "tune-smpl: storage s3://sweeps/r1 unreachable (AWS Error NETWORK_CONNECTION)\n"
    assert _fault("storage_down").check([_cmd(told, 75)], rec, None) == []
    assert _names(_fault("storage_down").check([_cmd("stopped", 75)], rec, None)) == {"output"}


def test_a_ctrl_c_with_nothing_left_to_stop_may_exit_0():
    """A SIGINT after Ray's loop took its last step finds no safe point: the sweep finishes,
    exit 0 (chaos --quick seed 7 round 4). Only then: a report after the signal, or a sweep
    that did not finish, means the Ctrl-C was not taken."""
    views = _good()
    for t in views["record"].values():
        for i, r in enumerate(t["reports"]):
            r["reported_at"] = 10.0 + i
    late = _fault("sigint", signals=[30.0])
    assert late.allowed(views) == (0, 130)
    assert _names(invariants.check_exit(0, late.allowed(views), "first")) == set()
    assert _fault("sigint", signals=[12.5]).allowed(views) == (130,)  # trials ran on
    assert _fault("sigint2", signals=[30.0]).allowed(views) == (0, 130)
    running = copy.deepcopy(views)
    running["meta"]["status"] = "running"
    assert _fault("sigint", signals=[30.0]).allowed(running) == (130,)
    assert _fault("sigint", signals=[12.5], finished_at_signal=True).allowed(running) == (
        0, 130)  # the signal found sweep.json finished: the close
    unstamped = copy.deepcopy(views)
    del unstamped["record"]["0000"]["reports"][0]["reported_at"]
    assert _fault("sigint", signals=[30.0]).allowed(unstamped) == (130,)
    assert _fault("kill_driver").allowed(views) == (-9,)
    assert _fault("sigint").allowed(views) == (130,)  # no signal sent


# --- the plan and the report --------------------------------------------------------------
def test_the_plan_is_seeded_and_balanced():
    faults = list(chaos.FAULTS)
    plan = chaos.plan(7, 3 * len(faults), faults, quick=False)
    assert plan == chaos.plan(7, 3 * len(faults), faults, quick=False)
    assert plan != chaos.plan(8, 3 * len(faults), faults, quick=False)
    assert all(sum(r["kind"] == f for r in plan) == 3 for f in faults)
    lo, hi = chaos.MODES[False]["outage"]
    for r in plan:
        assert lo <= r["outage_s"] <= hi and 0.1 <= r["gap_s"] <= 2.0
        assert 0 <= r["reports"] <= chaos.MODES[False]["reports"]
        if r["kind"] in ("kill_worker", "kill_node", "tracking_down", "storage_down"):
            assert r["anchor"] == "report"
        if r["kind"].startswith("kill_"):  # early enough that a trial has reports to go
            assert r["reports"] <= chaos.MODES[False]["reports"] // 2
    assert len({r["seed"] for r in plan}) == len(plan)
    short = chaos.plan(7, 4, faults, quick=True)
    assert all(r["outage_s"] <= chaos.MODES[True]["outage"][1] for r in short)
    # kill_node: some rounds as a trial starts on the node, the others mid-trial; no other
    # kind has them, and the rest of each round's spec did not move when it was added
    nodes = [r["at_start"] for r in chaos.plan(7, 20 * len(faults), faults, quick=False)
             if r["kind"] == "kill_node"]
    assert 0 < sum(nodes) < len(nodes)
    assert not any(r["at_start"] for r in plan if r["kind"] != "kill_node")
    spec = chaos.plan(6, 94, faults, quick=False)[93]  # seed 6's round 93, as it ran
    assert {k: v for k, v in spec.items() if k != "at_start"} == {
        "round": 93, "seed": 6000111, "kind": "kill_node", "anchor": "report",
        "offset_s": 34.72, "reports": 5, "jitter_s": 0.25, "gap_s": 1.14, "outage_s": 52.7,
        "mode": "blackhole", "pick": 0.3038406892974438}


def _line(kind, setup, sweep_s, injected=True, violations=(), round_s=None):
    return {"kind": kind, "setup": setup, "quick": False, "sweep_s": sweep_s,
            "round_s": round_s or sweep_s + 10, "injected": injected, "seed": 1,
            "violations": [{"invariant": v, "detail": "x"} for v in violations]}


def test_the_report_counts_and_the_stall_against_the_baselines():
    lines = [_line("none", "local", s, injected=False) for s in (40.0, 50.0, 70.0)]
    lines += [_line("none", "http", 100.0, injected=False)]
    lines += [_line("sigint", "local", 65.0, violations=["exit_status"]),
              _line("sigint", "local", 95.0),
              _line("sigint", "local", 20.0, injected=False),  # missed: no stall
              _line("tracking_down", "http", 130.0, violations=["output", "output",
                                                                 "mlflow_agrees"]),
              _line("kill_node", "cluster", 80.0)]  # no baseline for its setup
    rows = {r["kind"]: r for r in chaos.summarize(lines)}
    base_local = statistics.median([40.0, 50.0, 70.0])
    sig = rows["sigint"]
    assert (sig["rounds"], sig["injected"], sig["bad_rounds"], sig["violations"]) == (3, 2, 1, 1)
    assert sig["stall_s"] == pytest.approx(statistics.median([65 - base_local, 95 - base_local]))
    assert sig["stall_ratio"] == pytest.approx(statistics.median([65 / base_local,
                                                                  95 / base_local]))
    assert sig["stall_max_s"] == pytest.approx(95 - base_local)
    assert sig["round_s"] == statistics.median([75.0, 105.0, 30.0])
    td = rows["tracking_down"]
    assert td["by_invariant"] == {"output": 2, "mlflow_agrees": 1} and td["bad_rounds"] == 1
    assert td["stall_s"] == pytest.approx(30.0) and td["stall_ratio"] == pytest.approx(1.3)
    assert rows["kill_node"]["stall_s"] is None and rows["none"]["injected"] == 0
    text = chaos.table(lines)
    assert "| sigint | 3 | 2 | 1 | 1 (exit_status 1) |" in text
    assert f"{95 - base_local:+.1f}" in text and "| kill_node | 1 | 1 | 0 | 0 |" in text


# --- a quick run, end to end --------------------------------------------------------------
@pytest.mark.slow
def test_quick_run_of_the_cheap_faults(tmp_path):
    """One round (seed 1: a killed driver, resumed to the end; the Ctrl-C paths have tests of
    their own in test_reliability.py): the benchmark's verdict on the sweep agrees with
    views.py's asserts, a rerun skips the round, and --report prints it."""
    out, work = tmp_path / "chaos.jsonl", tmp_path / "work"
    argv = [sys.executable, str(BENCHMARKS / "chaos.py"), "--quick", "--rounds", "1",
            "--faults", "kill_driver", "--seed", "1", "--baselines", "0", "--out",
            str(out), "--work", str(work), "--keep"]
    done = subprocess.run(argv, cwd=REPO, env=cli_env("chaos"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    assert [ln["kind"] for ln in lines] == ["kill_driver"]
    for ln in lines:
        assert ln["injected"], ln
        first, last = ln["commands"][0], ln["commands"][-1]
        if ln["kind"] == "kill_driver":
            assert first["rc"] == -9
        assert last["rc"] == 0 and last["command"] in ("tune", "tune --resume"), ln["commands"]
        assert ln["sweep_s"] == pytest.approx(sum(c["wall_s"] for c in ln["commands"]), abs=0.1)
        sweep = work / f"{ln['kind']}-local-{ln['seed']}" / "runs" / f"c{ln['seed']}"
        uri = f"sqlite:///{sweep.parent.parent}/mlflow.db"
        said = {v["invariant"] for v in ln["violations"]}
        try:
            views.check_finished(sweep, uri, trials=chaos.MODES[True]["trials"])
        except AssertionError as e:  # views.py finds a broken view: so must the benchmark
            assert said & {"one_outcome", "study_agrees", "mlflow_agrees", "same_best",
                           "no_running"}, (e, ln["violations"])
        else:
            assert not said & {"one_outcome", "study_agrees", "mlflow_agrees", "same_best",
                               "no_running"}, ln["violations"]
            assert sorted(ln["outcomes"]) == sorted(views.record(sweep))
    again = subprocess.run(argv, cwd=REPO, env=cli_env("chaos"), capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "0 round(s) to run, 1 already" in again.stdout
    assert len(out.read_text().splitlines()) == 1
    report = subprocess.run([sys.executable, str(BENCHMARKS / "chaos.py"), "--report",
                             str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "| kill_driver | 1 | 1 |" in report.stdout and "| sigint |" not in report.stdout


def test_the_benchmark_modules_import_nothing_from_tests():
    for name in ("chaos", "chaos_rounds", "chaos_faults", "chaos_invariants"):
        text = (BENCHMARKS / f"{name}.py").read_text()
        assert "from tests" not in text and "import tests" not in text, name
    assert Path(invariants.__file__).parent == BENCHMARKS
