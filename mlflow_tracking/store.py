"""Where MLflow data lives: default store, experiments, and a fast reachability check.

The default store is `sqlite:///<runs>/mlflow.db` with artifacts under `<runs>/mlartifacts`:
MLflow 3 refuses its file store (`./mlruns`) unless MLFLOW_ALLOW_FILE_STORE is set, and a
sqlite client that is given no artifact root puts artifacts in `./mlruns` relative to the
process's working directory, so every experiment we create gets an explicit location.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import LifecycleStage
from mlflow.exceptions import MlflowException

from smpl_core.errors import ConfigError
from smpl_core.uri import is_uri

DEFAULT_EXPERIMENT = "tune-smpl"
# MLflow 3's UI opens an experiment in its GenAI workflow unless the experiment says it is
# model training (the UI reads this tag; values genai_development | custom_model_development).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def _local_runs_dir(runs_dir: str | os.PathLike) -> Path:
    text = os.fspath(runs_dir)
    if is_uri(text):
        raise ConfigError(
            f"`runs_dir` must be a local directory for the default sqlite store, but got "
            f"runs_dir={text!r}; pass --tracking-uri (e.g. http://host:5000) instead.")
    return Path(text).expanduser().resolve()


def default_tracking_uri(runs_dir: str | os.PathLike = "runs") -> str:
    """`sqlite:///<absolute runs_dir>/mlflow.db` (four slashes for an absolute path)."""
    return f"sqlite:///{_local_runs_dir(runs_dir) / DB_FILE}"


def default_artifact_root(runs_dir: str | os.PathLike = "runs") -> str:
    """`<absolute runs_dir>/mlartifacts`: one folder per experiment below it."""
    return str(_local_runs_dir(runs_dir) / ARTIFACTS_DIR)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for other stores or in-memory sqlite."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path).resolve()


def experiment_artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """Artifacts of a new experiment: `<db dir>/mlartifacts/<name>` for sqlite, else None.

    None lets a tracking server choose (it proxies `mlflow-artifacts:/` to its own
    destination), which is right: a client-side path would not exist on the server.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    slug = re.sub(r"[^\w.\-]+", "_", experiment_name).strip("._") or "experiment"
    return str(db.parent / ARTIFACTS_DIR / slug)


def ensure_experiment(tracking_uri: str, name: str = DEFAULT_EXPERIMENT,
                      artifact_location: str | None = None) -> str:
    """The id of experiment `name`, creating it (with `artifact_location`) when missing.

    An existing experiment keeps its own artifact location; MLflow cannot move it.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"`experiment_name` must be a non-empty string, but got "
                          f"experiment_name={name!r}.")
    with _first_use_lock(tracking_uri):
        return _ensure(MlflowClient(tracking_uri), tracking_uri, name, artifact_location)


def open_client(tracking_uri: str) -> MlflowClient:
    """`MlflowClient(tracking_uri)`, whose constructor creates a new sqlite store's tables,
    under the lock below."""
    with _first_use_lock(tracking_uri):
        return MlflowClient(tracking_uri)


@contextlib.contextmanager
def _first_use_lock(tracking_uri: str):
    """Serialise the first use of a sqlite store across processes: MLflow creates and
    migrates its tables on a process's first call, and two sweeps started at once on a new
    runs/ would both run the migrations and fail (alembic: `duplicate column`). Under the
    lock a new store is made whole before it gets its name (`_create_store`)."""
    db = sqlite_path(tracking_uri)
    if db is None or sys.platform == "win32":  # not POSIX (no fcntl): no lock
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if not db.exists():
                _create_store(db)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _create_store(db: Path) -> None:
    """A new sqlite store, made in `<db>.creating` and renamed to `db` once MLflow has made
    all its tables. MLflow makes them in dozens of transactions (its migrations); a process
    killed among them left a file MLflow no longer opens (`table ... already exists`, found
    by benchmarks/chaos.py: a driver killed 7.5 s into a sweep's first start). The rename is
    atomic, so `db` is either absent or whole; a side file a killed creator left is made
    again. Called under the lock, so one creator at a time."""
    part = db.with_name(db.name + ".creating")
    for leftover in (part, part.with_name(part.name + "-journal")):
        leftover.unlink(missing_ok=True)
    MlflowClient(f"sqlite:///{part}")  # its constructor makes the tables
    os.replace(part, db)


def _ensure(client: MlflowClient, tracking_uri: str, name: str,
            artifact_location: str | None) -> str:
    for _ in range(2):  # a second pass covers a concurrent creator winning the race
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == LifecycleStage.DELETED:
                raise ConfigError(
                    f"MLflow experiment {name!r} must be active, but it is deleted "
                    f"(id {exp.experiment_id}); restore it with `mlflow experiments restore "
                    f"--experiment-id {exp.experiment_id}` or choose another name.")
            for key, value in EXPERIMENT_KIND.items():  # an experiment made before the tag
                if key not in exp.tags:
                    client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags=EXPERIMENT_KIND)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    raise ConfigError(f"MLflow experiment {name!r} could not be created or found in "
                      f"{tracking_uri}.")


# The driver's MLflow client over http (set by every SweepRecorder, the one place): MLflow's
# own client retries a failed call with back-off for minutes and waits 120 s for an answer,
# and with the writes in order behind it the sweep's MLflow would stand still that long. The
# sweep's writer (tune_smpl/sweep/writer.py) retries instead, off the trials' path, so the
# client makes one attempt, waits at most 20 s (unless the user set a timeout), and prints
# none of its "View run ... at" / "View experiment at" lines (one per run it ends).
DRIVER_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
DRIVER_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
UNREACHABLE, SERVER_ERROR = "unreachable", "server_error"


def driver_http_settings() -> None:
    """The process's MLflow http client as the driver needs it (DRIVER_HTTP_ENV above)."""
    os.environ.update(DRIVER_HTTP_ENV)
    for key, value in DRIVER_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def store_fault(error: BaseException) -> str | None:
    """What kind of failure a store call raised: UNREACHABLE (no answer: connection refused
    or reset, a timeout), SERVER_ERROR (an answer of 5xx or 429: a server in trouble, or one
    going away behind a proxy), or None: the store refused the request (a bad param, a run
    that is not there), which a retry would not change."""
    import requests

    chain: list[BaseException] = []
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:  # the exception and what caused it
        seen.add(id(cause))
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    # MLflow wraps a refused connection in an MlflowException of status 500: look at the
    # causes first.
    no_answer = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                 requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)
    if any(isinstance(e, no_answer) for e in chain):
        return UNREACHABLE
    for e in chain:
        if isinstance(e, requests.exceptions.RetryError):  # urllib3: 5xx, retries spent
            return SERVER_ERROR
        if isinstance(e, MlflowException):
            status = e.get_http_status_code()
            if status >= 500 or status == 429:
                return SERVER_ERROR
    return None


def reachable(tracking_uri: str, timeout_s: float = 2.0) -> bool:
    """The store answers: an http server's GET /health below 500 within `timeout_s`; any
    other store is local, so True."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    try:
        _check_http(tracking_uri, timeout_s)
        return True
    except ConfigError:
        return False


def check_store(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when the store cannot take writes.

    MLflow's own HTTP client retries for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 120 s
    timeouts), so a typo in --tracking-uri would stall a sweep's start; a plain GET with a
    short timeout answers within `timeout_s` seconds.
    """
    if tracking_uri.startswith(("http://", "https://")):
        _check_http(tracking_uri, timeout_s)
    elif tracking_uri.startswith("sqlite:"):
        _check_sqlite(tracking_uri)
    elif tracking_uri.startswith("file:") or not is_uri(tracking_uri):
        allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true")
        if not allowed:
            raise ConfigError(
                f"MLflow tracking store {tracking_uri} is a file store, which MLflow 3 "
                f"refuses; use sqlite:///<dir>/mlflow.db or an http:// server.")


def _check_http(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            resp.read(64)
    except urllib.error.HTTPError as e:
        if e.code >= 500:  # anything below means something is there and answering
            raise ConfigError(f"MLflow tracking store {uri} is not reachable: "
                              f"GET /health answered HTTP {e.code}.") from None
    except OSError as e:  # URLError and socket timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {timeout_s:g} s"
        raise ConfigError(f"MLflow tracking store {uri} is not reachable: {reason}") from None


def _check_sqlite(uri: str) -> None:
    db = sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"MLflow tracking store {uri} is not writable: cannot create "
                          f"{db.parent} ({e.strerror or e}).") from None
    target = db if db.exists() else db.parent
    if not os.access(target, os.W_OK):
        raise ConfigError(f"MLflow tracking store {uri} is not writable: {target} "
                          f"denies writes.")
