"""benchmarks/tracking_outage.py: its CI-sized `--quick` run (both arms, a real server
killed and started again) and its table; it checks the script, not the numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.benchmark_scripts import load
from tests.tune_smpl.conftest import REPO, cli_env


def test_the_table_pairs_the_arms_of_one_invocation():
    b = load("tracking_outage")
    row = {"started": "t", "pair": 0, "mlflow_complete": True, "unreachable_lines": 1,
           "caught_up_lines": 1, "view_run_lines": 0, "outage_s": 130.0}
    rows = [{**row, "arm": "up", "wall_s": 200.0}, {**row, "arm": "outage", "wall_s": 216.0},
            {**row, "started": "u", "arm": "up", "wall_s": 100.0}]  # no pair: left out
    lines = b.table(rows).splitlines()
    assert len(lines) == 3
    assert lines[2] == "| t #0 | 200.0 | 216.0 | 130 | 1.080 (met) | yes | 1 / 1 / 0 |"
    rows[1]["wall_s"] = 230.0
    assert "1.150 (not met)" in b.table(rows)


@pytest.mark.slow
def test_quick_run_kills_the_server_and_mlflow_ends_complete(tmp_path):
    """A subprocess: the benchmark starts tune-smpl's own Ray, which a test module's Ray
    would block."""
    out = tmp_path / "results.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tracking_outage.py"),
                           "--quick", "--out", str(out)], cwd=tmp_path,
                          env=cli_env("outage_bench"), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["up", "outage"]
    up, down = rows
    assert up["outage_s"] == 0.0 and down["outage_s"] >= 5
    for r in rows:
        assert r["rc"] == 0 and r["mlflow_complete"], r["problems"]
        assert r["view_run_lines"] == 0 and r["behind_lines"] == 0
    assert (up["unreachable_lines"], down["unreachable_lines"]) == (0, 1)
    assert down["caught_up_lines"] == 1
    assert "| ratio |" in proc.stdout
