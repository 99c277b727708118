"""examples/quickstart.ipynb runs: its code cells, in order, in one namespace, in a Python
process of their own (no Jupyter kernel is installed here: nbclient and ipykernel are not
dependencies), with the cell tagged `parameters` replaced by smaller settings, as papermill
does. What the cells leave (the record, best.yaml, the Parquet files, the report) is then
checked against the record read here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.tune_smpl import views
from tests.tune_smpl.conftest import REPO, cli_env

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
SMALL = """
storage = "runs"
name = "qs"
num_samples = 3
steps = 40
num_cpus = 2
"""
RUNNER = """
import json, sys
cells = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for i, source in enumerate(cells):
    print(f"--- cell {i}", flush=True)
    exec(compile(source, f"<cell {i}>", "exec"), namespace)
sweep, best = namespace["sweep"], namespace["best"]
print("RESULT " + json.dumps({"name": sweep.name, "status": sweep.status, "best": best.key,
                              "value": best.value, "rows": len(namespace["trials"])}))
"""


def _cells() -> list[dict]:
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_notebook_is_stored_without_outputs_and_compiles():
    cells = _cells()
    assert [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    for c in cells:
        assert c["outputs"] == [] and c["execution_count"] is None
        compile(_source(c), "<cell>", "exec")


@pytest.mark.slow
def test_the_quickstart_runs_its_sweep_and_its_views(tmp_path):
    sources = [SMALL if "parameters" in c["metadata"].get("tags", []) else _source(c)
               for c in _cells()]
    (tmp_path / "cells.json").write_text(json.dumps(sources))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**cli_env("qs"), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "runner.py", "cells.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    shutil.rmtree(env["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    sweep = tmp_path / "runs" / "qs"
    # the default MLflow store of storage "runs": runs/mlflow.db
    views.check_finished(sweep, f"sqlite:///{tmp_path}/runs/mlflow.db", trials=3)
    finalist = views.finalist_best(sweep)
    assert finalist is not None, "the notebook's finalist stage measured nothing"
    key, mean, _ = finalist
    assert result["status"] == "finished" and result["best"] == key
    assert abs(result["value"] - mean) < 1e-12
    runs = views.record(sweep, "finalist_")
    assert result["rows"] == 3 + len(runs) == 7  # 3 trials, 2 finalists x 2 seeds
    assert f"trial_id: {key}" in (tmp_path / "best.yaml").read_text()
    back = pd.read_parquet(tmp_path / "sweep.parquet")
    assert sorted(back["key"]) == sorted([*views.record(sweep), *runs])
    assert (tmp_path / "sweep-reports.parquet").is_file()
    assert (sweep / "report" / "report.html").is_file()
    assert "retrained: val_accuracy" in done.stdout
    assert Path(tmp_path / "runs" / "mlflow.db").is_file()
