"""Turning Python values into what MLflow accepts: params, metrics, tags, search filters.

MLflow's limits (mlflow/utils/validation.py): names of slashes, word characters, `.`, `-`,
` ` and `:`; param values up to 6000 characters, tag values up to 8000; at most 100 params
or tags and 1000 metrics per log_batch call.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from smpl_core.config import SMPLConfig
from smpl_core.errors import ConfigError

MAX_PARAM_VALUE = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- :]")
# A trial's outcome (the `trial_status` tag) -> its run status. The outcome is decided by
# the sweep (tune_smpl.sweep.outcome); this is how MLflow shows it.
TRIAL_STATUSES = {"completed": "FINISHED", "early_stopped": "FINISHED",
                  "cut_by_budget": "FINISHED", "diverged": "FAILED", "errored": "FAILED",
                  "out_of_memory": "FAILED", "interrupted": "KILLED"}


def clean_name(key: Any) -> str:
    """A metric or param name MLflow accepts: other characters become `_`."""
    return _BAD_NAME_CHARS.sub("_", str(key)).strip("/") or "_"


def param_text(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str, sort_keys=isinstance(value, dict))
    else:
        text = str(value)
    return text[:MAX_PARAM_VALUE]


def flat_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as `outer.inner` params; lists stay one JSON-valued param."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = clean_name(f"{prefix}{key}")
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, prefix=f"{name}."))
        else:
            out[name] = param_text(value)
    return out


def metric_value(value: Any) -> float | None:
    """A float for real numbers, bools and one-element arrays/tensors; None otherwise."""
    if isinstance(value, numbers.Real):  # numpy scalars register as numbers.Real
        return float(value)
    numel = getattr(value, "numel", None)  # torch.Tensor.numel(); numpy has .size
    n = numel() if callable(numel) else getattr(value, "size", None)
    if n == 1 and callable(getattr(value, "item", None)):
        try:
            return float(value.item())
        except (TypeError, ValueError):
            return None
    return None


def to_metrics(values: Mapping[str, Any], step: int, prefix: str = "",
               timestamp: float | None = None) -> list[Metric]:
    """Numeric entries as Metrics at `step`, stamped `timestamp` (epoch seconds; default
    now); strings, dicts and None are skipped.

    NaN and inf are kept: a diverged trial's last loss is worth seeing. A fixed timestamp
    makes a write repeatable: MLflow keeps one point per (key, step, value, timestamp), so a
    batch sent again after an answer that never came adds nothing.
    """
    ts = int((time.time() if timestamp is None else timestamp) * 1000)
    out = []
    for key, raw in values.items():
        value = metric_value(raw)
        if value is not None:
            out.append(Metric(clean_name(f"{prefix}{key}"), value, ts, int(step)))
    return out


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def log_new_params(client: MlflowClient, run_id: str, params: Mapping[str, str],
                   existing: Mapping[str, str] | None = None) -> list[str]:
    """Log the params the run lacks (`existing`, the run's params, read here if not
    given); return the names whose recorded value differs.

    MLflow refuses to change a logged param, so a reopened run keeps its first values.
    """
    if existing is None:
        existing = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    for batch in chunks(new, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch)
    return sorted(k for k, v in params.items() if k in existing and existing[k] != v)


def log_metrics(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for batch in chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch)


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    batch = [RunTag(k, str(v)) for k, v in tags.items()]
    for part in chunks(batch, MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, tags=part)


def quoted(value: str, what: str) -> str:
    """`value` as a search-filter string literal; quotes cannot be escaped there."""
    if not isinstance(value, str) or not value or "'" in value or "\n" in value:
        raise ConfigError(f"`{what}` must be a non-empty string without ' or newlines, "
                          f"but got {what}={value!r}.")
    return f"'{value}'"


def search_all(client: MlflowClient, experiment_id: str, filter_string: str,
               order_by: Iterable[str] = ("attributes.start_time DESC",)) -> list:
    """Every matching active run, across result pages (a page holds at most 1000)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY,
                                  max_results=1000, order_by=list(order_by), page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def git_commit(cwd: str | None = None) -> str:
    """HEAD of the repository around `cwd`, or "unknown" (no git, not a repository)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else "unknown"


def same_value(have: float | None, value: Any) -> bool:
    """A metric the run has already (NaN is NaN)."""
    if have is None:
        return False
    value = float(value)
    return have == value or (math.isnan(have) and math.isnan(value))


def config_params(config: Mapping[str, Any]
                  ) -> tuple[SMPLConfig | None, dict[str, str], str | None]:
    """(complete config or None, its params as MLflow text, why it was rejected)."""
    cfg, given, problem = smpl_config(config)
    return cfg, {k: param_text(v) for k, v in (cfg.to_dict() if cfg else given).items()}, \
        problem


def smpl_config(config: Mapping[str, Any]) -> tuple[SMPLConfig | None, dict, str | None]:
    """(complete config or None, the given SMPLConfig fields, why it was rejected).

    Keys that are not SMPLConfig fields (Tune's own entries) are ignored; defaults fill in
    the fields a trial config leaves out, so every child run lists every field.
    """
    names = SMPLConfig.field_names()
    given = {k: v for k, v in config.items() if k in names}
    try:
        return SMPLConfig.from_dict(given), given, None
    except (TypeError, ValueError) as e:
        return None, given, str(e)
