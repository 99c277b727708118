"""benchmarks/scale.py (issue 26): the figures it takes from the trials' clocks and the
driver's timed steps, its plan and its resumable key, its goals, and a `--quick` run end
to end (one sweep of each arm, then resume, export, report and ui on it); it checks the
script and the structure of what it writes, not the numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmark_scripts import BENCHMARKS, load
from tests.tune_smpl.conftest import REPO, cli_env

scale = load("scale")  # puts benchmarks/ on sys.path for its modules
import scale_figures as fig  # noqa: E402

# Two slots from t=10: trials of 4 s; the third starts 0.5 s after the first ends, the
# fourth 1 s after the second, the fifth 0.25 s after the third.
SPANS = [(10.0, 14.0), (10.0, 14.0), (14.5, 18.5), (15.0, 19.0), (18.75, 22.75)]


def test_sweep_figures_from_the_trials_clocks():
    f = fig.sweep_figures(0.0, 25.0, SPANS, 2)
    assert f["ideal_s"] == 10.0 and f["wall_over_ideal"] == 2.5
    assert f["startup_s"] == 10.0 and f["end_s"] == pytest.approx(2.25)
    assert f["gap_median_s"] == 0.5 and f["gap_max_s"] == 1.0
    assert f["gap_max_at_s"] == 5.0  # the fourth start, 5 s after the first
    assert f["slot_use"] == pytest.approx(20.0 / (2 * 12.75)) and f["trials"] == 5


def test_the_window_around_a_trial_starts_after_the_first_wave():
    starts = [float(i) for i in range(30)]
    assert fig.window(starts, 10, 2, 5) == (4.0, 14.0, 5, 15)
    # around the last trial, as wide as the others: the last 10 up to it
    assert fig.window(starts, 30, 2, 5) == (19.0, 29.0, 20, 30)
    # 16 slots: the first 16 start at once, so "around trial 10" is trials 17-27
    assert fig.window(starts, 10, 16, 5) == (16.0, 26.0, 17, 27)
    assert fig.window(starts, 31, 2, 5) is None  # the run has no trial 31
    assert fig.window(starts[:10], 10, 16, 5) is None  # no trial after the first wave
    assert fig.checkpoints([1000, 10, 100], 100) == [10, 100]
    # the median gap of the starts in the window around trial 4 (half 1): trials 3 and 4
    assert fig.gaps_around(SPANS, [4], 2, 1) == {"4": 0.75}


def test_driver_split_takes_the_nested_steps_out():
    # [label, main thread, t0, t1, cpu]: a ledger step holding an ask, a record put and an
    # MLflow put; the writer threads' writes; a step outside the window is not counted.
    events = [["ledger", True, 11.0, 11.5, 0.4], ["ask", True, 11.0, 11.1, 0.1],
              ["proposer", True, 11.1, 11.15, 0.05], ["record put", True, 11.2, 11.22, 0.02],
              ["mlflow put", True, 11.3, 11.31, 0.01], ["record write", False, 11.4, 11.5, 0.03],
              ["mlflow write", False, 11.4, 11.6, 0.2], ["progress line", True, 12.0, 12.1, 0.1],
              ["ledger", True, 30.0, 31.0, 1.0]]
    # [t, process cpu, main thread cpu, rss kB]: 2 s of process CPU, 1.2 s on the main one
    samples = [[10.0, 5.0, 3.0, 1024 * 500], [14.0, 7.0, 4.2, 1024 * 600]]
    got = fig.driver_split(events, samples, 10.0, 14.0, 2)
    parts = got["parts"]
    assert set(parts) == {k for k, _ in fig.PARTS}
    assert got["cpu_s"] == pytest.approx(1.0) and got["trials"] == 2
    assert parts["ask"] == pytest.approx(0.05) and parts["proposer"] == pytest.approx(0.025)
    assert parts["study_other"] == pytest.approx((0.4 - 0.1 - 0.05 - 0.02 - 0.01) / 2)
    assert parts["record_write"] == pytest.approx(0.015)
    assert parts["mlflow_write"] == pytest.approx(0.1)
    assert parts["ray"] == pytest.approx((1.2 - 0.4 - 0.1) / 2)
    assert parts["other_threads"] == pytest.approx((2.0 - 1.2 - 0.03 - 0.2) / 2)
    assert sum(parts.values()) == pytest.approx(got["cpu_s"])
    assert got["ledger_wall_s"] == pytest.approx(0.25) and got["rss_mb"] == 600


def test_end_split_takes_the_steps_after_the_last_report():
    events = [("Tuner.fit", True, 1.0, 20.0, 5.0), ("ledger", True, 9.0, 9.1, 0.1),
              ("mlflow write", False, 20.5, 21.0, 0.25),
              ("end: report drawn and queued", True, 21.0, 24.0, 2.5),
              ("mlflow write", False, 22.0, 23.0, 0.25)]
    end = fig.end_split(events, 18.0)  # the last report at 18 s; Ray's fit returned at 20
    assert end["fit_s"] == 2.0
    assert set(end["steps"]) == {"end: report drawn and queued", "mlflow write"}
    assert end["steps"]["mlflow write"] == {"n": 2, "s": 1.5, "cpu_s": 0.5}
    table = scale.end_table({"n": 8, "end_s": 6.0, "end": end})
    assert table[0].startswith("the end of the N=8 sweep (6.0 s from its last report")
    assert table[4] == "| Ray's Tuner.fit returns | 1 | 2.00 | - |"
    assert table[5] == "| end: report drawn and queued | 1 | 3.00 | 2.50 |"  # longest first


def test_plan_skips_what_the_results_file_has(tmp_path):
    args = scale.parse_args(["--quick"])
    assert (args.sizes, args.slots, args.storages, args.checkpoints) == ([8], [2], ["local"],
                                                                        [4, 8])
    assert [(s["arm"], s["storage"]) for s in scale.plan(args)] == [("plain", None),
                                                                  ("tune", "local")]
    full = scale.parse_args([])
    specs = scale.plan(full)
    assert len(specs) == 3 * 2 * 3  # per (N, C): the plain loop, local and S3
    assert {s["n"] for s in specs} == {10, 100, 1000} and {s["c"] for s in specs} == {2, 16}
    line = {**specs[0], "quick": False, "sets": full.sets}
    assert scale.key(line) == scale.key({**line, "wall_s": 1.0})
    assert scale.key(line) != scale.key({**line, "quick": True})


def _line(n: int, **kw) -> dict:
    driver = {k: {"cpu_s": c, "first": 1, "last": 2, "trials": 1, "rss_mb": r,
                  "ledger_wall_s": 0.01, "slot_s": 0.5, "parts": {p: 0.0 for p, _ in fig.PARTS}}
              for k, c, r in (("10", 0.1, 900), (str(n), 0.2, 1300))}
    line = {"arm": "tune", "storage": "local", "n": n, "c": 2, "rc": 0, "quick": False,
            "sets": [], "trials": n, "trial_s": 1.0, "wall_over_ideal": 1.1, "wall_s": 600.0,
            "ideal_s": 545.0, "startup_s": 10.0, "end_s": 5.0, "slot_use": 0.95,
            "gap_median_s": 0.2, "gap_max_s": 3.0, "driver": driver, "peak_rss_mb": 1400.0,
            "rss_growth_mb": 400.0, "gaps_around": {"10": 0.1, str(n): 0.3},
            "sizes": {"record_mb": 90.0, "sweep_folder_mb": 500.0, "study_mb": 5.0,
                      "mlflow_db_mb": 12.0},
            "after": {"resume": {"first_trial_s": 12.0, "first_new_trial_s": 16.0,
                                 "command_s": 40.0,
                                 "steps": {"record read": {"s": 3.0, "n": 3},
                                           "study from the record": {"s": 2.0, "n": 1}}},
                      "export": {"s": 4.0}, "report": {"s": 40.0, "html_mb": 5.5},
                      "ui": {"listed_s": 9.0, "children_s": 0.5}},
            "date": "2026-12-03T10:00:00", "load_before": [0.1, 0.1, 0.1],
            "load_after": [2.0, 1.0, 0.5],
            "machine": {"host": "h", "cpus": 2, "commit": "abc"}}
    return {**line, **kw}


def test_tables_mark_each_goal():
    text = scale.tables([_line(1000)])
    goals = {row.split(" | ")[0].strip("| "): row for row in text.splitlines()
             if row.startswith("| ") and "C=2, N=1000" in row}
    assert goals["wall <= 1.2x ideal (N largest, C=2)"].endswith("| met |")
    assert goals["largest gap <= 2 s (N largest, C=2)"].endswith("| **not met** |")
    assert goals["driver CPU per trial at trial N <= 1.5x at trial 10"].endswith(
        "| 2.00 | **not met** |")
    # context beside it: the same less the study's part around TPE's proposal (here 50 ms
    # at trial 1,000, none at trial 10): 150 / 100 ms
    line = _line(1000)
    line["driver"]["1000"]["parts"]["study_other"] = 0.05
    context = [r for r in scale.tables([line]).splitlines() if r.startswith(
        "| (the same less TPE's proposal")]
    assert len(context) == 1 and context[0].endswith("| local, C=2, N=1000 | 1.50 | - |")
    # the goal is the first new trial's start (16 s), not the first resumed one's (12 s)
    assert goals["resume: first new trial <= 15 s (local)"].endswith("| 16.00 | **not met** |")
    assert goals["report <= 30 s"].endswith("| **not met** |")
    assert goals["driver peak RSS grows <= 300 MB (trial 10 to N)"].endswith("| **not met** |")
    assert not any("S3" in g for g in goals)  # no S3 sweep: no S3 goal
    assert "| wall / ideal | 1.10x |" in text and "k=1000 (trials 1-2)" in text


@pytest.mark.slow
def test_quick_run_writes_its_lines_tables_and_figure(tmp_path):
    """A subprocess: the benchmark starts tune-smpl's own Ray in each command."""
    out, png = tmp_path / "scale.jsonl", tmp_path / "scale.png"
    argv = [sys.executable, str(BENCHMARKS / "scale.py"), "--quick", "--out", str(out),
            "--figure", str(png), "--work", str(tmp_path / "work")]
    proc = subprocess.run(argv, cwd=tmp_path, env=cli_env("scale"), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(ln["arm"], ln["storage"], ln["n"], ln["c"]) for ln in lines] == [
        ("plain", None, 8, 2), ("tune", "local", 8, 2)]
    for ln in lines:
        assert ln["rc"] == 0 and ln["trials"] == 8 and ln["quick"] is True
        assert ln["wall_s"] > ln["ideal_s"] > 0 and ln["wall_over_ideal"] > 1
        assert 0 < ln["slot_use"] <= 1 and 0 <= ln["gap_median_s"] <= ln["gap_max_s"]
        assert 0 < ln["startup_s"] < ln["wall_s"] and ln["end_s"] > 0
        assert set(ln["driver"]) <= {"4", "8"} and ln["driver"] and ln["peak_rss_mb"] > 0
        assert len(ln["load_before"]) == 3 and ln["machine"]["cpus"] and ln["date"]
    plain, tune = lines
    assert all(w["ask_s"] > 0 and w["cpu_s"] >= 0 for w in plain["driver"].values())
    for w in tune["driver"].values():
        assert set(w["parts"]) == {k for k, _ in fig.PARTS}
        assert w["cpu_s"] > 0 and w["rss_mb"] > 0 and 2 <= w["first"] < w["last"] <= 8
    assert sum(tune["outcomes"].values()) == 8
    assert all(tune["sizes"][k] > 0 for k in ("record_mb", "sweep_folder_mb", "study_mb",
                                              "mlflow_db_mb"))
    after = tune["after"]
    r = after["resume"]
    # a real Ctrl-C left the copy's first new trials interrupted; the resume ran all 8 + 4
    assert r["interrupt_rc"] == 130 and r["interrupted"] >= 1 and r["rc"] == 0
    assert r["trials"] == r["finished"] == 8 + 4
    assert 0 < r["first_trial_s"] <= r["first_new_trial_s"] < r["command_s"]
    assert r["steps"]["record read"]["n"] >= 1 and r["steps"]["Ray start"]["s"] > 0
    assert after["export"]["rc"] == 0 and after["export"]["s"] > 0
    assert after["report"]["rc"] == 0 and after["report"]["html_mb"] > 0
    assert after["ui"]["listed_s"] > 0 and after["ui"]["children_listed"] == 8
    for text in (proc.stdout,):
        assert "### local, C=2 slots" in text and "### goals" in text
        assert "| wall / ideal |" in text and "| plain Optuna: wall / ideal |" in text
        assert "driver CPU per trial (ms) around trial k of the N=8 sweep:" in text
        assert "the end of the N=8 sweep" in text
    assert tune["end"]["fit_s"] > 0
    assert {"end: summary, MLflow, report", "end: summary", "end: report drawn and queued",
            "end: MLflow's writes waited for", "Ray shutdown"} <= set(tune["end"]["steps"])
    assert png.read_bytes()[:4] == b"\x89PNG"

    again = subprocess.run(argv, cwd=tmp_path, env=cli_env("scale2"), capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "scale: 0 sweep(s) to run, 2 already in" in again.stdout
    assert len(out.read_text().splitlines()) == 2
    shown = subprocess.run([sys.executable, str(BENCHMARKS / "scale.py"), "--report", str(out),
                            "--figure", str(tmp_path / "again.png")], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "### goals" in shown.stdout
