"""examples/quickstart.ipynb runs through a real Jupyter kernel (nbclient + ipykernel, as
a user's notebook server would run it), its cells in order, with the cell tagged
`parameters` replaced by smaller settings (as papermill does). What the cells leave (the
record, best.yaml, the Parquet files, the report) is then checked against the record read
here, and the sweep's progress came as one line rewritten in place (the kernel's mode)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

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
RESULT = """
import json
print("RESULT " + json.dumps({"name": sweep.name, "status": sweep.status, "best": best.key,
                              "value": best.value, "rows": len(trials)}))
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
    nb = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = SMALL
    nb.cells.append(nbformat.v4.new_code_cell(RESULT))
    env = {**cli_env("qs"), "MPLBACKEND": "Agg"}
    client = NotebookClient(nb, timeout=400, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=env)  # a cell that raises fails here, with its traceback
    finally:
        shutil.rmtree(env["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type == "stream" and o.name == "stdout"]
    stdout = "".join(o.text for o in streams)
    result = json.loads(stdout.split("RESULT ", 1)[1].splitlines()[0])
    # In a kernel the progress is one line rewritten in place ("\r"), not a line per change
    progress = [o.text for o in streams if "| running " in o.text]
    assert len(progress) > 1 and all(t.startswith("\r") and "\n" not in t.rstrip()
                                     for t in progress), progress[:3]
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
    assert "retrained: val_accuracy" in stdout
    assert Path(tmp_path / "runs" / "mlflow.db").is_file()
