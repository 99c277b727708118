"""The end of a sweep (new or resumed): its report into the sweep folder and onto the
MLflow parent run, and the links a user opens next.

The record is written before this runs, so a report that fails (a full disk, a store that
hiccups) costs only the report: `tune-smpl report SWEEP` writes it again from the record.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from mlflow_tracking.ui import experiment_link, run_link, ui_base
from tune_smpl.report import HTML_FILE, REPORT_DIR, build_report

log = logging.getLogger(__name__)


def report_folder(record, scratch: str) -> Path:
    """Where the report is written: the sweep folder on a local storage, else a scratch
    folder that is then copied to the storage."""
    if record.storage.local:
        return Path(record.storage.path(record.name, REPORT_DIR))
    return Path(scratch)


def publish(record, tracking, storage_path: str, result=None) -> list[str]:
    """Write the report of `record` (a SweepRecord; `result`: the SweepResult the command
    has, which the report is built from) and log it to the parent run through `tracking`
    (a `tune_smpl.sweep.tracking.Tracking`); return the lines to print (where the report
    is, the MLflow UI links)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = report_folder(record, scratch)
        rep = build_report(record, out, storage_path, result)
        if not record.storage.local:
            for f in sorted(out.iterdir()):
                record.storage.upload_file(f, record.name, REPORT_DIR, f.name)
        lines = [f"report:     {record.storage.uri(record.name, REPORT_DIR, HTML_FILE)}"]
        if not tracking.on:
            return lines
        tracking.log_report(str(out), rep.description)  # a store error is logged there
    return lines + mlflow_links(tracking.recorder)


def mlflow_links(recorder) -> list[str]:
    """The UI deep links (Model training mode) to the experiment's runs and to the sweep's
    parent run; for a local store they work once `tune-smpl ui` serves it (its default
    host and port)."""
    if recorder.experiment_id is None:
        return []
    base = ui_base(recorder.tracking_uri)
    return [f"runs:       {experiment_link(base, recorder.experiment_id)}",
            f"this sweep: {run_link(base, recorder.experiment_id, recorder.parent_run_id)}"]
