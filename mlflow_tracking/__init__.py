"""MLflow side of tune-smpl: store defaults, the sweep recorder, the UI.

Imports no Ray: the sweep's ledger (`tune_smpl.sweep.ledger`) feeds `SweepRecorder`.
"""

from mlflow_tracking.model_log import MODEL_NAME, log_torch_model
from mlflow_tracking.recorder import TRIAL_STATUSES, SweepRecorder, TrialRuns, find_trial_run
from mlflow_tracking.store import (
    DEFAULT_EXPERIMENT,
    check_store,
    default_artifact_root,
    default_tracking_uri,
    ensure_experiment,
    experiment_artifact_location,
)
from mlflow_tracking.ui import run_ui, ui_command

__all__ = [
    "DEFAULT_EXPERIMENT", "MODEL_NAME", "TRIAL_STATUSES", "SweepRecorder", "TrialRuns",
    "check_store",
    "default_artifact_root", "default_tracking_uri", "ensure_experiment",
    "experiment_artifact_location", "find_trial_run", "log_torch_model", "run_ui",
    "ui_command",
]
