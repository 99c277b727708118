"""benchmarks/search.py: the CI-sized `--quick` studies run real sweeps and print their
tables; the best-so-far curves, steps-to-reach ratios and paired intervals they report are
what their results say."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmark_scripts import load
from tests.tune_smpl.conftest import REPO, cli_env


def _bench():
    return load('search')


def test_best_so_far_and_budget_views():
    b = _bench()
    row = {"val_by_trial": [0.2, None, 0.5, 0.4], "seconds_by_end": [3.0, 1.0, 2.0, 4.0],
           "val_by_end": [0.2, None, 0.5, 0.4]}
    assert b.best_so_far(row["val_by_trial"]) == [0.2, 0.2, 0.5, 0.5]
    assert b.value_at(row, 3.5) == 0.2  # the second trial (1 s) ended at 4 s
    assert b.value_at(row, 6.0) == 0.5
    assert b.checkpoints(12) == [2, 4, 8, 12]


def _row(arm, seed, vals, steps, ends=None):
    """A sweep row: trials in ask order `vals`; `ends` the ask-order indices in end order."""
    ends = ends or list(range(len(vals)))
    return {"arm": arm, "seed": seed, "val_by_trial": vals, "outcomes": ["completed"] * len(vals),
            "proposed_by": ["prior", "tpe", "random", "tpe"][:len(vals)],
            "steps_by_end": [steps[i] for i in ends], "val_by_end": [vals[i] for i in ends]}


def test_steps_to_reach_walks_the_trials_in_end_order():
    b = _bench()
    row = _row("x", 0, [0.5, 0.9, 0.7, 0.95], [10, 20, 30, 40], ends=[2, 0, 1, 3])
    assert b.steps_to_reach(row, 0.7) == 30  # trial 2 ended first
    assert b.steps_to_reach(row, 0.9) == 30 + 10 + 20
    assert b.steps_to_reach(row, 0.99) == float("inf")


def test_sampler_table_pairs_each_arm_with_random_by_seed():
    """Two seeds, 4 trials: the warm arm is ahead by 10 and 20 points at trial 4, so its
    paired mean difference is +15 with the t interval 15 +- 12.706 * 5 (sd 7.07 / sqrt 2);
    it reaches random's best@4 (0.6, 0.7) within 2 trials on both seeds."""
    b = _bench()
    rows = [_row("random+asha", 0, [0.2, 0.3, 0.5, 0.6], [10] * 4),
            _row("random+asha", 1, [0.7, 0.1, 0.2, 0.3], [50, 10, 10, 10]),
            _row("tpe+asha+warm", 0, [0.6, 0.7, 0.1, 0.1], [10, 10, 10, 10]),
            _row("tpe+asha+warm", 1, [0.1, 0.9, 0.2, 0.2], [10, 10, 10, 10])]
    t = b.sampler_table(rows, 4)
    warm = next(ln for ln in t.splitlines() if ln.startswith("| tpe+asha+warm |"))
    cells = [c.strip() for c in warm.strip("|").split("|")]
    assert cells[1] == "2"
    # columns: arm, sweeps, best@2, best@4, minus random @2, @4, steps, 2 ratios, within 2,
    # stopped, model-proposed
    assert cells[3] == "0.800 [0.750, 0.850]"  # best@4: 0.7 and 0.9
    assert cells[4] == "+30.0 [-97.1, +157.1]"  # @2 minus random: +40, +20 (se 10)
    assert cells[5] == "+15.0 [-48.5, +78.5]"  # @4 minus random: +10, +20
    # steps to reach random's best@4: 10 (seed 0: random's own 40 of 40) and 20 (seed 1:
    # random's own 50 of 80)
    assert cells[7] == f"{(10 / 40 + 20 / 50) / 2:.2f}"
    assert cells[8] == f"{(10 / 40 + 20 / 80) / 2:.2f}"
    assert cells[9] == "2/2"
    assert cells[11] == "2"  # proposals by the model: not prior, not random
    ref = next(ln for ln in t.splitlines() if ln.startswith("| random+asha |"))
    assert [c.strip() for c in ref.strip("|").split("|")][7] == "1.00"


@pytest.mark.slow
def test_quick_study_prints_its_table(tmp_path):
    """A subprocess: the benchmark starts its own Ray, which a test module's Ray would block."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "search.py"), "--quick",
                           "--out", str(tmp_path)], cwd=tmp_path, env=cli_env("search"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| val_size | arm | sweeps | best@2 | best@3 | 2nd-half mean | CPU-s |" in out
    assert "| 50 | random | 1 |" in out and "| 50 | tpe+asha | 1 |" in out
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["random", "tpe+asha"]
    for r in rows:
        assert len(r["val_by_trial"]) == 3 and r["test_accuracy"] is not None
        assert 0 < r["test_accuracy"] <= 1
    assert (tmp_path / "search.png").stat().st_size > 10_000


@pytest.mark.slow
def test_quick_sampler_study_warm_starts_from_its_prior_sweep(tmp_path):
    """Task spread: a prior sweep (random, ASHA off, another labelled split) runs first and
    the warm arm starts from it; the table and the histogram are printed."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "search.py"), "--task",
                           "spread", "--quick", "--out", str(tmp_path)], cwd=tmp_path,
                          env=cli_env("search"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["prior", "random+asha", "tpe+asha+warm"]
    assert rows[0]["data_seed"] == 100 and rows[1]["data_seed"] == 0
    assert "from the prior" in rows[2]["proposals"]
    assert rows[2]["proposed_by"][:2] == ["prior", "prior"]
    assert "random configs (the prior sweeps' 3 trials, full budget)" in proc.stdout
    assert "| tpe+asha+warm | 1 |" in proc.stdout
    assert (tmp_path / "search_spread.png").stat().st_size > 10_000
