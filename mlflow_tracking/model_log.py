"""Logging the sweep's best torch model to a run without touching MLflow's global state.

`mlflow.pytorch.log_model` reads the process-wide tracking URI, and with `run_id=` but no
active fluent run it files the LoggedModel under experiment "0" (Default), not the run's
experiment. So we create the LoggedModel ourselves in the right experiment, pass its id,
and point the global URI at our store only for the duration of the call, under a lock,
restoring it afterwards (the driver may record two sweeps into two stores), with the
public `mlflow.set_tracking_uri` / `get_tracking_uri`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import mlflow
from mlflow import MlflowClient

MODEL_NAME = "best_model"
_GLOBAL_URI_LOCK = threading.Lock()


@contextlib.contextmanager
def _tracking_uri(uri: str):
    # None when nothing was set: set_tracking_uri(None) clears it again (and its env var).
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def log_torch_model(tracking_uri: str, experiment_id: str, run_id: str, model: Any,
                    name: str = MODEL_NAME) -> str:
    """Log `model` (a torch.nn.Module) as `name` on `run_id`; return its `models:/` URI.

    `mlflow.pytorch.load_model(uri)` returns it, given MLFLOW_TRACKING_URI=tracking_uri.
    """
    import torch  # only here: the rest of the package needs no torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, but got model of type "
                        f"{type(model).__name__}.")
    client = MlflowClient(tracking_uri)
    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id)
    with _GLOBAL_URI_LOCK, _tracking_uri(tracking_uri):
        info = mlflow.pytorch.log_model(
            model,
            name=name,
            model_id=logged.model_id,
            run_id=run_id,
            # MLflow 3 defaults to "pt2" (torch.export), which needs an input example and
            # gives back an exported program; pickle gives back the module itself.
            serialization_format="pickle",
            # Explicit requirements skip MLflow's inference, which reloads the model in a
            # subprocess (seconds) only to list torch and cloudpickle.
            pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
        )
    return info.model_uri
