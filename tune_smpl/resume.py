"""What `tune --resume` puts right before Ray continues a sweep whose driver died.

Ray continues a sweep from its last snapshot of the experiment (saved after every round of
checkpoints, and every 10 s or so), while the trial folders, the Optuna study and MLflow
are written as results come in. After a SIGKILL to the driver they can be a little ahead:
- a trial's result.json and progress.csv can hold a report after the checkpoint Ray will
  restart it from; that report will come again, so the rows past the checkpoint go;
- child runs are left RUNNING: they are ended as interrupted here, and the trials Ray
  continues reopen theirs (so a trial the snapshot does not know stays ended);
- the study's trials are settled by `SweepOptunaSearch.restore`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
RESULT_FILES = ("result.json", "progress.csv")


def prepare_resume(tuner, settings, tracking_uri: str) -> None:
    from mlflow_tracking import SweepRecorder

    try:
        SweepRecorder(tracking_uri, settings.name).close_open("KILLED", trials_only=True)
    except Exception as e:  # noqa: BLE001 - as the callback: MLflow never stops a sweep
        log.warning("MLflow: could not end the runs of sweep %s left open: %s",
                    settings.name, e)
    if settings.local_dir is None:  # remote storage: Ray's files are left as they are
        return
    trials = tuner.get_results()._experiment_analysis.trials
    for trial in trials:
        if trial.status in ("TERMINATED", "ERROR") or not trial.path:
            continue  # Ray will not run it again
        checkpoint = trial.checkpoint
        folder = Path(trial.path)
        last = _iteration_of(folder, Path(checkpoint.path).name) if checkpoint else 0
        if last is not None:
            _drop_rows_after(folder, last)


def _iteration_of(folder: Path, checkpoint_dir: str) -> int | None:
    """The training_iteration whose report saved `checkpoint_dir`, from result.json."""
    path = folder / "result.json"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if row.get("checkpoint_dir_name") == checkpoint_dir:
            return int(row["training_iteration"])
    return None


def _drop_rows_after(folder: Path, last: int) -> None:
    for name in RESULT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        text = path.read_text()
        kept = (_kept_json(text, last) if name.endswith(".json") else _kept_csv(text, last))
        if kept != text:
            log.info("trial %s: dropped %s rows past its checkpoint (iteration %d)",
                     folder.name, name, last)
            path.write_text(kept)


def _kept_json(text: str, last: int) -> str:
    out = []
    for line in text.splitlines():
        try:
            if int(json.loads(line).get("training_iteration", 0)) > last:
                continue
        except (json.JSONDecodeError, ValueError, TypeError):
            continue  # a line cut short by the kill
        out.append(line + "\n")
    return "".join(out)


def _kept_csv(text: str, last: int) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "training_iteration" not in rows[0]:
        return text
    col = rows[0].index("training_iteration")

    def keep(row: list[str]) -> bool:
        try:
            return len(row) == len(rows[0]) and int(float(row[col])) <= last
        except ValueError:
            return False

    kept = [rows[0]] + [r for r in rows[1:] if keep(r)]
    if len(kept) == len(rows):
        return text
    buf = io.StringIO()
    csv.writer(buf).writerows(kept)
    return buf.getvalue()
