"""tune-smpl: the command line and the sweep builder (Ray Tune + Optuna + ASHA + MLflow).

As a library (docs/design.md, "The library"):

    import tune_smpl
    sweep = tune_smpl.tune(dataset="moons", num_samples=8)   # the flags of `tune-smpl tune`
    sweep.trials, sweep.reports, sweep.best                  # pandas DataFrames, the pick
    tune_smpl.open_sweep("moons-20261202-101500", storage="runs")

The names are imported on first use (module `__getattr__`), so `tune-smpl`'s start-up, which
imports this package, loads neither pandas nor the sweep's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {"tune": "tune_smpl.api", "open_sweep": "tune_smpl.api", "Sweep": "tune_smpl.api",
            "Best": "tune_smpl.api", "TuneOptions": "tune_smpl.options",
            "ConfigError": "smpl_core.errors"}
__all__ = ["Best", "ConfigError", "Sweep", "TuneOptions", "open_sweep", "tune"]

if TYPE_CHECKING:
    from smpl_core.errors import ConfigError
    from tune_smpl.api import Best, Sweep, open_sweep, tune
    from tune_smpl.options import TuneOptions


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    raise AttributeError(f"module 'tune_smpl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
