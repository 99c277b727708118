"""Self Meta Pseudo Labels in pure PyTorch: config, data, augmentation, models, the step
and the loop. Imports no Ray, MLflow or Optuna."""

from smpl_core.config import SMPLConfig
from smpl_core.loop import FitResult, fit, test_accuracy

__all__ = ["SMPLConfig", "FitResult", "fit", "test_accuracy"]
