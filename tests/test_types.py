"""The static type check: mypy over the five packages (configured in pyproject.toml's
[tool.mypy]: third-party code is not analysed, its imports resolve silently) reports no
error. It runs in `make test` through this test; mypy is in requirements-dev.txt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["smpl_core", "search_spaces", "trainables", "mlflow_tracking", "tune_smpl"]


def _mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_mypy_finds_no_error_in_the_packages():
    got = _mypy()  # the files and settings of pyproject.toml
    assert got.returncode == 0, got.stdout[-6000:] + got.stderr[-2000:]
    assert "no issues found in" in got.stdout
    checked = int(got.stdout.rsplit(" in ", 1)[1].split()[0])
    want = sum(1 for p in PACKAGES for _ in (ROOT / p).rglob("*.py"))
    assert checked == want, got.stdout  # every module of the five packages, no more


def test_the_configured_check_reports_a_wrong_type(tmp_path):
    """The same settings catch an error (the check above is not vacuous): a wrong argument
    type, an Optional used unchecked, and a misspelt attribute of the project's own type."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace(
        'files = ["smpl_core", "search_spaces", "trainables", "mlflow_tracking", "tune_smpl"]',
        f'files = ["bad.py"]\nmypy_path = "{ROOT}"').replace('cache_dir = ".mypy_cache"',
                                      f'cache_dir = "{tmp_path / "cache"}"'))
    (tmp_path / "bad.py").write_text(
        "from tune_smpl.sweep.finalists import FinalistStage\n"
        "def half(x: int) -> int:\n    return x // 2\n"
        "half('4')\n"
        "def first(stage: FinalistStage | None) -> str:\n    return stage.of[0]\n"
        "FinalistStage(1, 1, ['0000'], [1000]).seed_value\n")
    got = _mypy(cwd=tmp_path)
    assert got.returncode == 1, got.stdout
    for line, code in ((4, "arg-type"), (6, "union-attr"), (7, "attr-defined")):
        assert any(f"bad.py:{line}: error:" in x and f"[{code}]" in x
                   for x in got.stdout.splitlines()), (line, got.stdout)
    assert "Found 3 errors in 1 file" in got.stdout
