"""The scripts of benchmarks/ as modules, for the tests that run them or check their maths
(they are scripts, not a package: each is loaded from its file)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    """benchmarks/<name>.py as a module. benchmarks/ goes on sys.path first, as Python puts
    a script's folder there when it runs it: a script imports its siblings (_common.py,
    accuracy.py, chaos_rounds.py, ...) by their plain names."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
