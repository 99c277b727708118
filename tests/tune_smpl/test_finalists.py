"""The finalist stage (issue 17): the K best search trials retrained on S fresh seeds.

Unit tests of the plan, the measure and the statistics (against independent computations),
the flags' bad values, and one in-process sweep (4 search trials + 2 finalists x 2 seeds)
whose summary, parent run, report and export name the same winner with the same figures,
and whose winner's measure is what `train --config` of its export reports. Ctrl-C, a
killed driver and the budget in the finalist stage are in test_reliability.py.
"""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from tests.tune_smpl import views
from tests.tune_smpl.conftest import small_sets
from tune_smpl.cli import main
from tune_smpl.sweep import finalists
from tune_smpl.sweep.finalists import FinalistStage, Measure, StageStatus
from tune_smpl.sweep.record import FINALIST, TrialRecord
from tune_smpl.sweep.summary import knob_table


def _trial(key: str, outcome: str, vals: list[float], seed: int = 0, steps: int = 40,
           of: str | None = None) -> TrialRecord:
    every = steps // len(vals) if vals else steps
    reports = [{"step": every * (i + 1), "val_accuracy": v} for i, v in enumerate(vals)]
    return TrialRecord(key=key, number=int(key[:4]), params={"lr": 0.1}, distributions={},
                       config={"seed": seed, "steps": steps, "val_size": 100},
                       outcome=outcome, reports=reports,
                       role=FINALIST if of else "search", finalist_of=of)


def test_plan_takes_the_k_best_and_seeds_the_search_never_used():
    trials = [_trial("0000", "completed", [0.5, 0.6]), _trial("0001", "early_stopped", [0.9]),
              _trial("0002", "diverged", [0.99]), _trial("0003", "completed", [0.7, 0.8]),
              _trial("0004", "completed", [0.2, 0.3], seed=1000)]
    stage = finalists.plan(trials, 2, 3, base_seed=0)
    assert stage.of == ["0001", "0003"]  # best report 0.9, 0.8; a diverged trial never
    assert stage.seed_values == [1001, 1002, 1003]  # 1000 was used by trial 0004
    assert stage.status == StageStatus.PLANNED
    # sweep.json's object, key for key as before the dataclass, and back
    assert stage.to_dict() == {"k": 2, "seeds": 3, "of": ["0001", "0003"],
                               "seed_values": [1001, 1002, 1003], "status": "planned"}
    assert json.dumps(stage.to_dict()) == (
        '{"k": 2, "seeds": 3, "of": ["0001", "0003"], "seed_values": [1001, 1002, 1003], '
        '"status": "planned"}')
    assert FinalistStage.from_dict(json.loads(json.dumps(stage.to_dict()))) == stage
    assert stage.runs() == [("0001", 1001), ("0003", 1001), ("0001", 1002),
                                     ("0003", 1002), ("0001", 1003), ("0003", 1003)]


def test_the_measure_is_the_final_evaluation_of_a_completed_run():
    assert finalists.final_value(_trial("0000_s1", "completed", [0.5, 0.7], of="0000"), 40) == 0.7
    # its best report is earlier, but the measure is the one at `steps`
    assert finalists.final_value(_trial("0000_s1", "completed", [0.9, 0.7], of="0000"), 40) == 0.7
    assert finalists.final_value(_trial("0000_s1", "cut_by_budget", [0.5], of="0000"), 40) is None
    assert finalists.final_value(_trial("0000_s1", "diverged", [0.5, 0.1], of="0000"), 40) is None
    assert finalists.final_value(_trial("0000_s1", "completed", [0.5, 0.7], of="0000"), 80) is None


def test_mean_ci_is_the_student_t_interval():
    xs = [0.91, 0.88, 0.95, 0.90]
    mean, sd, lo, hi = finalists.mean_ci(xs)
    # independent: numpy's sd and the two-sided 97.5% t quantile for 3 df (3.182446)
    assert math.isclose(mean, np.mean(xs)) and math.isclose(sd, np.std(xs, ddof=1))
    half = 3.182446305284263 * np.std(xs, ddof=1) / 2
    assert math.isclose(lo, mean - half, rel_tol=1e-9)
    assert math.isclose(hi, mean + half, rel_tol=1e-9)
    assert finalists.mean_ci([0.5]) == (0.5, 0.0, 0.5, 0.5)


def test_pick_prefers_the_best_finalist_mean_and_pairs_the_margin_by_seed():
    trials = [_trial("0000", "completed", [0.6, 0.95]), _trial("0001", "completed", [0.9])]
    stage = finalists.plan(trials, 2, 3, base_seed=0)
    runs = [_trial(f"{of}_s{s}", "completed", [v], seed=s, of=of) for of, s, v in [
        ("0000", 1000, 0.80), ("0000", 1001, 0.82), ("0000", 1002, 0.78),
        ("0001", 1000, 0.86), ("0001", 1001, 0.90), ("0001", 1002, 0.83)]]
    pick = finalists.pick(trials, runs, stage, 40)
    assert pick.trial.key == "0001" and pick.measure == Measure.FINAL  # not the search's 0000
    assert math.isclose(pick.value, statistics.fmean([0.86, 0.90, 0.83]))
    assert pick.model_run.key == "0001_s1000"  # the first seed's run, not the luckiest
    sep = pick.verdict["separation"]
    diffs = [0.06, 0.08, 0.05]
    assert sep["runner_up"] == "0000" and math.isclose(sep["diff"], np.mean(diffs))
    assert sep["separated"] == (sep["ci_low"] > 0) and sep["separated"]
    w = pick.verdict["winner"]
    assert math.isclose(w["optimism"], 0.9 - pick.value) and w["runs"] == 3
    # a run cut by the budget is left out of its finalist's mean
    runs[4].outcome = "cut_by_budget"
    assert finalists.pick(trials, runs, stage, 40).ranked[0].n == 2


def test_one_finalist_table_and_one_knob_table_for_every_view():
    measured = finalists.Finalist("0001", 0.9, {1000: 0.86, 1001: 0.90, 1002: 0.83},
                                  planned=3)
    rows = finalists.table([measured, finalists.Finalist("0002", 0.8, planned=3)])
    xs = [0.86, 0.90, 0.83]
    mean, sd = float(np.mean(xs)), float(np.std(xs, ddof=1))
    half = 4.302652729911275 * sd / math.sqrt(3)  # two-sided 97.5% t quantile, 2 df
    assert rows == [
        finalists.FinalistRow("0001", "0.9000", f"{mean:.4f}", f"{sd:.4f}",
                              f"[{mean - half:.4f}, {mean + half:.4f}]", "3 of 3",
                              f"{0.9 - mean:+.4f}", 3, True),
        finalists.FinalistRow("0002", "0.8000", "-", "-", "-", "0 of 3", "-", 0, False)]
    params = {"lr": 0.0123456789, "mu": 7, "feedback_sign": "paper"}
    assert knob_table(params) == [("feedback_sign", "paper"), ("lr", "0.01235"), ("mu", "7")]
    assert knob_table(params, ["mu", "lr", "threshold"], show=str) == [
        ("mu", "7"), ("lr", "0.0123456789")]


def test_without_finalists_or_a_measure_the_best_is_the_search_one_noisy_estimate():
    trials = [_trial("0000", "completed", [0.6, 0.95]), _trial("0001", "completed", [0.9])]
    pick = finalists.pick(trials, [], None, 40)
    assert pick.trial.key == "0000" and pick.value == 0.95 and pick.measure == Measure.SEARCH
    assert "one noisy estimate" in pick.note and "--finalists" in pick.note
    assert "biased up: retraining it tends to deliver less" in pick.note  # the best of 2
    one = finalists.pick(trials[1:], [], None, 40)
    assert "biased up" not in one.note  # one trial: no maximum over noisy estimates
    stage = finalists.plan(trials, 1, 1, 0)
    cut = [_trial("0000_s1000", "cut_by_budget", [], seed=1000, of="0000")]
    pick = finalists.pick(trials, cut, stage, 40)
    assert pick.trial.key == "0000" and "gave no final measurement" in pick.note


@pytest.mark.parametrize("flags, says", [
    (["--finalists", "-1"], "`--finalists` must be >= 0, but got --finalists=-1."),
    (["--finalist-seeds", "0"], "`--finalist-seeds` must be >= 1, but got --finalist-seeds=0."),
    (["--finalists", "5", "--num-samples", "4"],
     "`--finalists` must be at most --num-samples (4), but got --finalists=5."),
])
def test_bad_finalist_flags_exit_2_with_one_line(tmp_path, capsys, flags, says):
    rc = main(["tune", "--storage-path", str(tmp_path / "runs"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"tune-smpl: error: {says}\n"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --- one sweep with a finalist stage -------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("finalists")
    uri = f"sqlite:///{root}/mlflow.db"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["tune", "--name", "fin", "--storage-path", str(root / "runs"),
                   "--tracking-uri", uri, "--num-samples", "4", "--finalists", "2",
                   "--finalist-seeds", "2", "--gpus-per-trial", "0", "--grace-period", "4",
                   *small_sets()])
    assert rc == 0, out.getvalue()
    return {"root": root, "dir": root / "runs" / "fin", "uri": uri, "out": out.getvalue()}


def _export(sweep, capsys, *extra: str) -> str:
    capsys.readouterr()
    assert main(["export", "fin", "--storage-path", str(sweep["root"] / "runs"), *extra]) == 0
    return capsys.readouterr().out


def test_four_trials_and_four_finalist_runs_agree_everywhere(sweep, capsys):
    export = _export(sweep, capsys)
    rec = views.check_finished(sweep["dir"], sweep["uri"], trials=4, summary=sweep["out"],
                               export=export)
    runs = views.record(sweep["dir"], "finalist_")
    meta = json.loads((sweep["dir"] / "sweep.json").read_text())
    stage = meta["finalists"]
    assert stage["status"] == "done" and len(stage["of"]) == 2
    assert len(runs) == 4 and {r["outcome"] for r in runs.values()} == {"completed"}
    used = {t["config"]["seed"] for t in rec.values()}
    assert not used & set(stage["seed_values"])  # fresh seeds
    assert {(r["finalist_of"], r["config"]["seed"]) for r in runs.values()} == {
        (of, s) for of in stage["of"] for s in stage["seed_values"]}
    for r in runs.values():  # the finalist's config, full steps, only the seed changed
        trial = rec[r["finalist_of"]]
        assert {k: v for k, v in r["config"].items() if k != "seed"} == {
            k: v for k, v in trial["config"].items() if k != "seed"}
        assert r["reports"][-1]["step"] == meta["base"]["steps"]
    # the study is the search: no finalist in it
    assert len(views.study(sweep["dir"]).trials) == 4
    key, mean, n = views.finalist_best(sweep["dir"])
    parent, children = views.mlflow_runs(sweep["uri"], "fin")
    assert sum(c.data.tags.get("role") == "finalist" for c in children.values()) == 4
    w = json.loads(_export(sweep, capsys, "--format", "json"))["_export"]
    assert w["trial_id"] == key and w["measure"] == Measure.FINAL
    assert math.isclose(w["finalist"]["mean"], mean)
    for stat in ("mean", "sd", "ci_low", "ci_high", "promised", "optimism"):
        assert math.isclose(parent.data.metrics[f"finalist_{stat}"], w["finalist"][stat],
                            rel_tol=1e-9, abs_tol=1e-12), stat
    assert f"{w['finalist']['mean']:.4f} +- {w['finalist']['sd']:.4f}" in sweep["out"]
    html = (sweep["dir"] / "report" / "report.html").read_text()
    assert "id='finalists'" in html and "finalist-table" in html
    assert f"finalist {key}," in html and f"{mean:.4f}" in html
    assert (sweep["dir"] / "report" / "finalists.png").is_file()
    desc = (sweep["dir"] / "report" / "description.md").read_text()
    assert f"trial `{key}`" in desc and f"{mean:.4f}" in desc


def test_train_of_the_export_reports_the_measure_that_picked_it(sweep, capsys, tmp_path):
    """The winner was picked by each run's final val_accuracy at `steps`; retraining its
    export on one of those seeds gives that same number (same steps, same evaluation)."""
    best = tmp_path / "best.yaml"
    _export(sweep, capsys, "-o", str(best))
    key, _, _ = views.finalist_best(sweep["dir"])
    run = next(r for r in views.record(sweep["dir"], "finalist_").values()
               if r["finalist_of"] == key)
    capsys.readouterr()
    assert main(["train", "--config", str(best), "--set", f"seed={run['config']['seed']}",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"][0]
    assert got["final"]["step"] == run["reports"][-1]["step"]
    assert got["val_accuracy"] == pytest.approx(run["reports"][-1]["val_accuracy"], abs=1e-9)
