"""`mlflow ui` on a sweep store: the command line, and running it until Ctrl-C.

One worker (`--workers 1`): MLflow 3 serves through uvicorn with 4 workers by default,
four processes of a few hundred MB each, for a UI that one person browses. We also turn
off MLflow's job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION), which otherwise starts
seven huey consumer processes for GenAI jobs a sweep never submits.
"""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow_tracking.store import (
    ARTIFACTS_DIR,
    DEFAULT_EXPERIMENT,
    check_store,
    open_client,
    sqlite_path,
)
from mlflow_tracking.values import quoted, search_all
from smpl_core.errors import ConfigError

# MLflow 3's UI starts in its GenAI workflow (traces, evaluations) unless the URL says
# otherwise; with this query it opens in "Model training" mode on the runs.
WORKFLOW_QUERY = "workflowType=machine_learning"


def ui_base(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> str:
    """Where the UI of `tracking_uri` is: the tracking server itself, or where `tune-smpl ui`
    serves a local store (its defaults)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def experiment_link(base: str, experiment_id: str) -> str:
    """The experiment's runs, in Model training mode."""
    return f"{base}/#/experiments/{experiment_id}/runs?{WORKFLOW_QUERY}"


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page (e.g. a sweep's parent run), in Model training mode."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}"


def experiment_id_of(tracking_uri: str, name: str = DEFAULT_EXPERIMENT) -> str | None:
    """The id of experiment `name` in the store, None when it has none (or no store yet)."""
    db = sqlite_path(tracking_uri)
    if db is not None and not db.exists():
        return None
    try:
        exp = open_client(tracking_uri).get_experiment_by_name(name)
    except Exception:  # noqa: BLE001 - a link is a convenience; the UI starts regardless
        return None
    return exp.experiment_id if exp is not None else None


def sweep_run_id(tracking_uri: str, sweep_name: str,
                 name: str = DEFAULT_EXPERIMENT) -> str | None:
    """The id of a sweep's parent run in the store (the newest, were there two); None when
    the store has none or cannot be read (reading a sweep needs no MLflow)."""
    experiment = experiment_id_of(tracking_uri, name)
    if experiment is None:
        return None
    try:
        runs = search_all(open_client(tracking_uri), experiment,
                          f"tags.sweep_name = {quoted(sweep_name, 'sweep_name')} and "
                          f"tags.run_kind = 'sweep'")
    except Exception:  # noqa: BLE001 - a store that is gone leaves the sweep readable
        return None
    return runs[0].info.run_id if runs else None


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv for `python -m mlflow ui` on `tracking_uri` (a local store, not a server)."""
    if tracking_uri.startswith(("http://", "https://")):
        raise ConfigError(f"`tracking_uri` must be a local store (sqlite:///...) to start a UI "
                          f"on, but got tracking_uri={tracking_uri!r}, which is already a "
                          f"server: open it in a browser.")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"`port` must be an integer in 1..65535, but got port={port!r}.")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"`host` must be a non-empty string, but got host={host!r}.")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri]
    db = sqlite_path(tracking_uri)
    if db is not None:
        # Experiments created from the UI then keep their artifacts beside ours (the
        # server's default destination is ./mlartifacts in whatever directory it started).
        cmd += ["--artifacts-destination", str(db.parent / ARTIFACTS_DIR)]
    return cmd + ["--host", host, "--port", str(port), "--workers", "1"]


def ui_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def run_ui(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Serve the UI until Ctrl-C; return the server's exit code (0 after Ctrl-C)."""
    cmd = ui_command(tracking_uri, host, port)
    check_store(tracking_uri)
    db = sqlite_path(tracking_uri)
    if db is not None and not db.exists():
        print(f"note: {db} does not exist yet; the UI starts on an empty store "
              f"(run a sweep first, or pass --tracking-uri).", file=sys.stderr)
    base = ui_base(tracking_uri, host, port)
    print(f"MLflow UI at {base} (store: {tracking_uri}); Ctrl-C to stop", flush=True)
    exp_id = experiment_id_of(tracking_uri)
    if exp_id is not None:
        print(f"the sweeps' runs (Model training mode): {experiment_link(base, exp_id)}",
              flush=True)
    else:
        print(f"open it in Model training mode: {base}/#/?{WORKFLOW_QUERY}", flush=True)
    proc = subprocess.Popen(cmd, env=ui_env())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the server too (same process group); give it time
        # to shut its uvicorn worker down cleanly before insisting.
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return 0
