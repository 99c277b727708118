"""benchmarks/overhead.py: the figures it takes from the trials' clocks, and its CI-sized
`--quick` run (both arms, the same trials, the table); it checks the script, not the
numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmark_scripts import load
from tests.tune_smpl.conftest import REPO, cli_env


def test_figures_from_the_trials_clocks():
    b = load("overhead")
    # Two slots from t=10: trials of 4 s; the third starts 0.5 s after the first ends, the
    # fourth 1 s after the second.
    spans = [(10.0, 14.0), (10.0, 14.0), (14.5, 18.5), (15.0, 19.0)]
    f = b.figures(0.0, 21.0, spans)
    assert f["startup_s"] == 10.0 and f["end_s"] == 2.0 and f["wall_s"] == 21.0
    assert f["gap_s"] == 0.75 and f["gap_max_s"] == 1.0
    assert f["slot_use"] == pytest.approx(16.0 / (2 * 9.0))
    assert f["trial_s"] == 4.0 and f["trials"] == 4


def test_the_same_trials_for_every_run():
    b = load("overhead")
    args = b.parse_args(["--quick"])
    base, params = b.task_trials(args, "moons")
    assert (base["dataset"], base["steps"], base["eval_every"]) == ("moons", 20, 10)
    assert len(params) == 4 and len({json.dumps(p, sort_keys=True) for p in params}) == 4
    assert b.task_trials(args, "moons") == (base, params)  # drawn the same every time


@pytest.mark.slow
def test_quick_run_prints_its_table(tmp_path):
    """A subprocess: the benchmark starts tune-smpl's own Ray, which a test module's Ray
    would block."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "overhead.py"), "--quick",
                           "--out", str(tmp_path)], cwd=tmp_path, env=cli_env("overhead"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| figure | plain Optuna | tune-smpl | ratio | difference |" in proc.stdout
    for label in ("wall time (s)", "slot use", "start-up (s)", "end of sweep (s)"):
        assert f"| {label} |" in proc.stdout
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["tune", "plain"]
    for r in rows:
        assert r["trials"] == 4 and 0 < r["slot_use"] <= 1
        assert 0 < r["startup_s"] < r["wall_s"] and r["end_s"] > 0


def test_profile_splits_the_time_by_the_driver_steps():
    p = load("overhead_profile")
    spans = [(10.0, 14.0), (10.0, 14.0), (14.5, 18.5), (15.0, 19.0)]
    events = [("Ray start (ray.init)", 2.0, 5.0), (p.MLFLOW_START, 5.0, 5.5),
              ("study from the record", 5.5, 6.0), ("Tuner.fit", 6.5, 19.5),
              ("ledger", 7.0, 7.5), ("ledger", 7.5, 8.0),  # the first two asks
              ("ledger", 14.0, 14.3), ("MLflow", 14.1, 14.2), ("record", 14.2, 14.25),
              ("ledger", 14.3, 14.4), ("command", 1.0, 21.5),
              ("report (HTML + PNGs) and its upload", 19.6, 20.6)]
    got = p.splits(0.0, 22.0, spans, 1.0, events)
    start, gap, end = (dict(v) for v in got.values())
    assert list(got)[0] == "start-up (10.00 s)"
    assert start["Python start, imports (the timers' too)"] == 1.0
    assert start["Ray start (ray.init)"] == 3.0
    assert start["other driver steps to the first ask"] == pytest.approx(2.0)
    assert start["first ask to the first trial's start (trial processes, torch import)"] == 3.0
    # gaps: [14, 14.5] holds all 0.4 s of ledger steps, [14, 15] too; the medians
    assert gap["ledger: MLflow writes"] == pytest.approx(0.1)
    assert gap["ledger: record writes"] == pytest.approx(0.05)
    assert gap["ledger: study ask/tell and its SQLite writes"] == pytest.approx(0.25)
    assert gap["Ray: result to the driver, trial end, next trial in its process"] == pytest.approx(
        0.35)
    assert end["Tune's wind-down after the last report"] == pytest.approx(0.5)
    assert end["report (HTML + PNGs) and its upload"] == pytest.approx(1.0)
    assert end["process exit after the command returned"] == pytest.approx(0.5)
    assert sum(end.values()) == pytest.approx(3.0)
