"""benchmarks/search.py: the CI-sized `--quick` study runs real sweeps and prints its table;
the best-so-far curves it reports are what its results say."""

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
