"""A sweep's record as two pandas tables, and as Parquet files (for pandas, polars, DuckDB).

- trials: one row per trial, the search trials by number, then the finalist runs in the
  order they ran (`role` says which; a finalist run's `finalist_of` names its search
  trial). The searched values are the columns `params_<field>` (Optuna's
  `trials_dataframe` names them so too, and no param can clash with a column of ours).
- reports: one row per report of a trial (long form): `trial`, `role`, `step`, then every
  figure the record keeps of a report (the metrics, and Ray's `time_this_iter_s`,
  `checkpoint_dir_name`, ...).

Both are read from the record alone (`tune_smpl.sweep.record`), as it stands: a running
sweep's tables hold what its trials have reported so far. The best is the sweep's one
decision (`SweepResult.pick`, i.e. `finalists.pick`), never decided here. This module
imports pandas: the command line imports it only for `export --format parquet`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tune_smpl.sweep.finalists import final_value
from tune_smpl.sweep.outcome import METRIC, score
from tune_smpl.sweep.record import FINALIST, DamagedRecord, SweepRecord, TrialRecord
from tune_smpl.sweep.result import SweepResult

# The trials table's columns before the params, in order.
TRIAL_COLUMNS = ("key", "number", "role", "finalist_of", "seed", "proposed_by", "outcome",
                 "interrupted", "best_value", "best_step", "final_value", "steps", "reports",
                 "seconds", "restarts", "resumes", "is_finalist", "measure", "is_best",
                 "error", "created_at", "ended_at")
REPORT_COLUMNS = ("trial", "role", "step")
PARAM_PREFIX = "params_"
FIRST_METRICS = (METRIC, "val_loss")  # then the others, by name


@dataclass
class Snapshot:
    """The record read once: the result as it stands, and the damaged files left out."""

    result: SweepResult
    meta: dict
    damaged: list[DamagedRecord] = field(default_factory=list)


def read(record: SweepRecord) -> Snapshot:
    """The sweep as its record stands now (finished, running or interrupted). A damaged
    trial record is left out (`damaged`), as `export` and `report` do; a damaged
    sweep.json raises its DamagedRecord."""
    meta = record.meta()
    trials, damaged = record.scan()
    runs, damaged_runs = record.scan(FINALIST)
    return Snapshot(SweepResult.of_record(record, trials, runs, meta), meta,
                    damaged + damaged_runs)


def _value(report: dict) -> float:
    v = report.get(METRIC)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return math.nan


def _row(t: TrialRecord, steps: int, chosen: set[str], best_key: str | None) -> dict:
    value, at = score(t.reports)
    finalist = t.role == FINALIST
    measure = final_value(t, steps) if finalist else None
    row = {"key": t.key, "number": t.number, "role": t.role, "finalist_of": t.finalist_of,
           "seed": t.config.get("seed"), "proposed_by": t.proposed_by, "outcome": t.outcome,
           "interrupted": t.interrupted, "best_value": value, "best_step": at.get("step"),
           "final_value": _value(t.last), "steps": t.last.get("step", 0),
           "reports": len(t.reports), "seconds": t.seconds, "restarts": t.restarts,
           "resumes": t.resumes, "is_finalist": not finalist and t.key in chosen,
           "measure": math.nan if measure is None else measure,
           "is_best": not finalist and t.key == best_key, "error": t.error,
           "created_at": t.created_at, "ended_at": t.ended_at}
    row.update({PARAM_PREFIX + k: v for k, v in t.params.items()})
    return row


def trials_frame(result: SweepResult) -> pd.DataFrame:
    """One row per trial (search trials, then finalist runs); see the module docstring."""
    chosen = set(result.stage.of if result.stage else [])
    best = result.pick.trial
    rows = [_row(t, result.steps, chosen, best.key if best else None)
            for t in [*result.trials, *result.finalist_runs]]
    params = sorted({k for r in rows for k in r if k.startswith(PARAM_PREFIX)})
    frame = pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *params])
    for col in ("best_step", "steps", "seed"):  # a column of ints stays one (None: <NA>)
        frame[col] = frame[col].astype("Int64")
    return frame


def reports_frame(result: SweepResult) -> pd.DataFrame:
    """One row per report of every trial and finalist run; see the module docstring."""
    rows = [{"trial": t.key, "role": t.role, **r}
            for t in [*result.trials, *result.finalist_runs] for r in t.reports]
    names = {k for r in rows for k in r} - set(REPORT_COLUMNS)
    metrics = [m for m in FIRST_METRICS if m in names] + sorted(names - set(FIRST_METRICS))
    return pd.DataFrame(rows, columns=[*REPORT_COLUMNS, *metrics])


def parquet_paths(path: str | Path) -> tuple[Path, Path]:
    """(the trials file, the reports file beside it): `x.parquet` and `x-reports.parquet`."""
    p = Path(path).expanduser()
    if not p.suffix:
        p = p.with_suffix(".parquet")
    return p, p.with_name(f"{p.stem}-reports{p.suffix}")


def _arrow_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """A column of mixed Python types (a categorical knob with the choices false and
    "per_lr") has no Arrow type: such a column is written as text."""
    out = frame.copy()
    for col in [c for c in out.columns if pd.api.types.is_object_dtype(out[c])]:
        kinds = {type(v) for v in out[col] if v is not None and not _is_nan(v)}
        if len(kinds) > 1:
            out[col] = [None if v is None or _is_nan(v) else str(v) for v in out[col]]
    return out


def _is_nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def write_parquet(snapshot: Snapshot, path: str | Path) -> tuple[Path, Path]:
    """Write the trials table to `path` and the reports table beside it (parquet_paths);
    each file's metadata names the sweep, its status and the table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    result = snapshot.result
    paths = parquet_paths(path)
    for table, frame in zip(("trials", "reports"), (trials_frame(result),
                                                    reports_frame(result))):
        arrow = pa.Table.from_pandas(_arrow_ready(frame), preserve_index=False)
        about = {"sweep": result.record.name, "storage": result.record.storage.uri(),
                 "status": result.status, "table": table, "best_measure": result.pick.measure}
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               b"tune_smpl": json.dumps(about).encode()})
        out = paths[0] if table == "trials" else paths[1]
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(arrow, out)
    return paths
