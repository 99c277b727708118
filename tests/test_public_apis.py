"""No module of ours touches a private name of Ray, Optuna or MLflow (a module, function or
attribute whose name starts with an underscore): their internals move between releases.

Checked on the source: imports from a private module or of a private name, attribute
chains rooted at one of their modules (`mlflow.tracking._x`), and the internals this
project once reached for through objects (`study._storage`, `results._experiment_analysis`:
an object's type cannot be known statically, so these are listed by name).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("smpl_core", "search_spaces", "trainables", "mlflow_tracking", "tune_smpl",
            "benchmarks")
LIBRARIES = ("ray", "optuna", "mlflow")
# Internals the sweep code used to reach for (issue 11), by attribute name.
KNOWN_INTERNALS = {"_ot_trials", "_completed_trials", "_ot_study", "_storage",
                   "_experiment_analysis", "_use_tracking_uri", "_tracking_uri",
                   "_CheckpointManager", "_TrainingResult", "_trial_id",
                   "_find_newest_experiment_checkpoint"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _rooted_in(node: ast.AST, aliases: set[str]) -> bool:
    """`node` is a name of one of the libraries, or an attribute chain rooted at one."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in aliases


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    lib_aliases: set[str] = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in LIBRARIES:
                    lib_aliases.add((a.asname or a.name).split(".")[0])
                    if any(_private(p) for p in a.name.split(".")):
                        out.append(f"{path}:{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in LIBRARIES:
                if any(_private(p) for p in node.module.split(".")):
                    out.append(f"{path}:{node.lineno}: from {node.module}")
                out += [f"{path}:{node.lineno}: import {a.name} from {node.module}"
                        for a in node.names if _private(a.name)]
                lib_aliases.update(a.asname or a.name for a in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if (isinstance(root, ast.Name) and root.id in lib_aliases) or (
                    node.attr in KNOWN_INTERNALS):
                out.append(f"{path}:{node.lineno}: .{node.attr}")
        if isinstance(node, ast.Call) and _rooted_in(node.func, lib_aliases):
            out += [f"{path}:{node.lineno}: {k.arg}=" for k in node.keywords
                    if k.arg and _private(k.arg)]  # ray.init(_temp_dir=...)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str) and _private(node.args[1].value)
                and node.args[1].value in KNOWN_INTERNALS):
            out.append(f"{path}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_names_of_ray_optuna_mlflow(package):
    found = [v for p in sorted((REPO / package).rglob("*.py")) for v in _violations(p)]
    assert found == [], "\n".join(found)


def test_the_check_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import optuna\nfrom ray.train._internal.session import _TrainingResult\n"
                   "from mlflow.tracking._tracking_service import utils\n"
                   "x = optuna.storages._CachedStorage\ny = study._storage\n"
                   "import ray\nray.init(num_cpus=1, _temp_dir='/tmp/r')\n"
                   "from ray import tune\ntune.run(f, _remote=True)\n")
    # the private module and the private name on line 2, line 3, line 4, line 5, and the
    # private keyword arguments on lines 7 and 9
    found = _violations(bad)
    assert len(found) == 7, found
    assert any(":7: _temp_dir=" in v for v in found) and any(":9: _remote=" in v for v in found)
