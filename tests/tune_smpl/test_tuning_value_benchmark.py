"""benchmarks/tuning_value.py: the CI-sized `--quick` study runs real sweeps (one with a
finalist stage), retrains their exports and the default, and reports paired differences;
the report's arithmetic is checked on rows made here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmark_scripts import load
from tests.tune_smpl.conftest import REPO, cli_env


def _bench():
    return load('tuning_value')


def _row(name, seed, test, promised, steps, finalist_steps=0, winner=None, wtest=None):
    row = {"name": name, "seed": seed, "search_best": "0001", "search_promised": promised,
           "search_steps": steps, "finalist_steps": finalist_steps,
           "search": {"test": test}, "export": {"test": wtest or test}}
    if winner:
        row.update(winner=winner, winner_promised=promised - 0.05)
    return row


def test_the_report_pairs_arms_by_sweep_seed():
    b = _bench()
    rows = [{"name": "default", "test": [0.80, 0.82]}]
    for seed, (tb, tc, td) in enumerate([(0.84, 0.86, 0.85), (0.86, 0.90, 0.87),
                                         (0.85, 0.88, 0.84)]):
        rows.append(_row(f"c-s{seed}", seed, [tb], 0.95, 300, 240, "0002", [tc]))
        rows.append(_row(f"d-s{seed}", seed, [td], 0.96, 420))
    per = b.arms(rows)
    assert sorted(per) == [0, 1, 2] and per[1]["c"][0] == 0.90 and per[1]["c"][2] == 540
    assert per[0]["a"][0] == pytest.approx(0.81) and not per[0]["same_pick"]
    text = b.report(rows)
    # c - b = +2, +4, +3 points: mean +3, sd 1, t(0.975, 2) = 4.3027 -> +-2.48
    assert "| c - b | +3.00 [+0.52, +5.48] |" in text
    assert "| b: sweep, no finalists | 85.00 +- 1.00 | 95.00 | 300 |" in text
    assert "| c: sweep + finalists | " in text
    assert "The finalists kept the search's best in 0 of 3" in text


@pytest.mark.slow
def test_quick_study_appends_each_unit_and_resumes(tmp_path):
    """A subprocess: the benchmark starts its own Ray, which a test module's Ray would block.
    A second run finds every unit in the results file and trains nothing."""
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, str(REPO / "benchmarks" / "tuning_value.py"), "--quick", "--out",
           str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cli_env("tv"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in rows] == ["default", "c-s0", "d-s0"]
    c = rows[1]
    assert c["finalist_steps"] == 20 and c["finalists"][0]["runs"] == 1  # 1 finalist x 1 seed
    assert all(0 <= a <= 1 for r in rows[1:] for a in r["export"]["test"])
    assert "| c - b |" in proc.stdout and (tmp_path / "r.png").stat().st_size > 10_000
    again = subprocess.run(cmd, cwd=tmp_path, env=cli_env("tv"), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and len(out.read_text().splitlines()) == 3
    assert "done (" not in again.stderr
