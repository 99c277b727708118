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


# What a command's process imports before it runs (issue 26: torch cost `--resume` 1.5-2 s
# of start-up on a 2-core CPU, torch and scipy `export` 2.3 s of its 4.4 s): the driver of
# a sweep never runs a trial, and export, report, sync and ui only read a record.
_HEAVY = {"torch", "torchvision", "scipy.stats", "sklearn"}
_COMMANDS = {
    "the tune driver": ["tune_smpl.cli", "tune_smpl.launch", "tune_smpl.sweep.run",
                        "tune_smpl.sweep.resume", "tune_smpl.sweep.sync", "trainables"],
    "export, report, sync, ui": ["tune_smpl.cli", "tune_smpl.commands.export",
                                 "tune_smpl.sweep.result", "tune_smpl.sweep.finalists",
                                 "smpl_core", "smpl_core.config"],
}


@pytest.mark.parametrize("what", sorted(_COMMANDS))
def test_a_command_imports_no_torch_before_it_needs_it(what):
    import subprocess
    import sys

    code = ("import sys\n" + "".join(f"import {m}\n" for m in _COMMANDS[what])
            + f"print(sorted({_HEAVY!r} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]", f"{what} imports {out.strip()}"


def test_the_lazy_names_are_still_there():
    import smpl_core
    import trainables

    assert smpl_core.fit.__module__ == "smpl_core.loop"
    assert trainables.load_model.__module__ == "trainables.checkpoint"
    assert trainables.load_state.__module__ == "trainables.checkpoint"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        smpl_core.nope  # noqa: B018
