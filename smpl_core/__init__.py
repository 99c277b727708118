"""Self Meta Pseudo Labels in pure PyTorch: config, data, augmentation, models, the step
and the loop. Imports no Ray, MLflow or Optuna.

`fit`, `FitResult` and `test_accuracy` are imported on first use (PEP 562): the loop
imports torch (1.5-2 s on a 2-core CPU), which the commands that only read a sweep's
record (`export`, `report`, `sync`, `ui`) and `smpl_core.errors`/`smpl_core.config` never
need.
"""

from smpl_core.config import SMPLConfig

__all__ = ["SMPLConfig", "FitResult", "fit", "test_accuracy"]
_LOOP = ("FitResult", "fit", "test_accuracy")


def __getattr__(name: str):
    if name in _LOOP:
        from smpl_core import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'smpl_core' has no attribute {name!r}")
