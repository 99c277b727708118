"""The packages' one-way dependencies (docs/design.md, "Layout"), checked on the source.

`tune_smpl -> {search_spaces, trainables, mlflow_tracking}`, `trainables -> smpl_core`;
`smpl_core` imports no Ray, MLflow or Optuna (nor any package of ours above it);
`mlflow_tracking` no Ray; `tune_smpl/sweep/` stops at the record (it imports neither the
report nor the commands); and no module of the sweep imports one of ours inside a function
(the way a cycle is dodged).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("smpl_core", "search_spaces", "trainables", "mlflow_tracking", "tune_smpl")
# package (or folder) -> the top-level names none of its modules may import
FORBIDDEN = {
    "smpl_core": ("ray", "mlflow", "optuna", "search_spaces", "trainables", "mlflow_tracking",
                  "tune_smpl"),
    "search_spaces": ("ray", "mlflow", "trainables", "mlflow_tracking", "tune_smpl"),
    "mlflow_tracking": ("ray", "trainables", "tune_smpl", "search_spaces"),
    "trainables": ("mlflow", "mlflow_tracking", "tune_smpl", "search_spaces"),
    "tune_smpl/sweep": ("tune_smpl.report", "tune_smpl.commands"),
}


def _imports(path: Path):
    """(module name, line, inside a function) of every import in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in funcs for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno, id(node) in inner
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, node.lineno, id(node) in inner


def _hits(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_dependencies_point_one_way(where):
    found = [f"{p.relative_to(REPO)}:{line}: {name}"
             for p in sorted((REPO / where).rglob("*.py"))
             for name, line, _ in _imports(p) if _hits(name, FORBIDDEN[where])]
    assert found == [], "\n".join(found)


def test_the_sweep_imports_ours_at_the_top_only():
    found = [f"{p.relative_to(REPO)}:{line}: {name}"
             for p in sorted((REPO / "tune_smpl" / "sweep").rglob("*.py"))
             for name, line, inner in _imports(p) if inner and _hits(name, OURS)]
    assert found == [], "\n".join(found)


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    from tune_smpl.report import publish\n")
    assert list(_imports(f)) == [("os", 1, False), ("tune_smpl.report", 4, True)]


def test_the_tune_command_holds_no_sweep_logic():
    """`tune-smpl tune` parses its flags and calls `tune_smpl.launch.run`, which
    `tune_smpl.tune` runs too: the command module defines nothing else and imports only
    the options (its flags) and the launch."""
    path = REPO / "tune_smpl" / "commands" / "tune.py"
    tree = ast.parse(path.read_text(), str(path))
    defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defs == ["add_parser", "run"], defs
    ours = sorted({name for name, _, _ in _imports(path) if _hits(name, OURS)}
                  | {f"tune_smpl.{a.name}" for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module == "tune_smpl"
                     for a in n.names})
    assert ours == ["tune_smpl", "tune_smpl.launch", "tune_smpl.options"], ours
