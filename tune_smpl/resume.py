"""What `tune --resume` puts right before Ray continues a sweep whose driver died.

Ray continues a sweep from its last snapshot of the experiment (`experiment_state-*.json`,
saved every few seconds), while the trial folders, the Optuna study and MLflow are written
as results come in. After a SIGKILL to the driver they can be ahead of the snapshot:
- a trial's checkpoints: the snapshot's latest checkpoint of a trial may already be deleted
  (a better one came after it, and each trial keeps only its best and its latest), and
  Ray would fail to restore it, `max_failures` times. Each unfinished trial's checkpoint
  list is rebuilt from the checkpoints on disk that have a result row, and it restarts
  from the newest of them (Ray's own bookkeeping, `_CheckpointManager`, decides which to
  keep, as it would have);
- its result.json and progress.csv can hold reports after that checkpoint: those reports
  will come again, so the rows past it go (in the driver's staged copy too, when the
  Ray session outlived the driver);
- child runs are left RUNNING: they are ended as interrupted here, and the trials Ray
  continues reopen theirs (so a trial the snapshot does not know stays ended);
- the study's trials are settled by `SweepOptunaSearch.restore`.

The snapshot is edited as JSON (its trial entries keep Ray's cloudpickled fields as they
are, except the two rebuilt here), so that nothing else in it changes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
RESULT_FILES = ("result.json", "progress.csv")
PICKLED = "CLOUDPICKLE_FALLBACK"  # how Ray's TuneFunctionEncoder marks a pickled value


def prepare_resume(settings, tracking_uri: str) -> None:
    from mlflow_tracking import SweepRecorder

    try:
        SweepRecorder(tracking_uri, settings.name).close_open("KILLED", trials_only=True)
    except Exception as e:  # noqa: BLE001 - as the callback: MLflow never stops a sweep
        log.warning("MLflow: could not end the runs of sweep %s left open: %s",
                    settings.name, e)
    if settings.local_dir is not None:  # remote storage: Ray's files are left as they are
        settle_trials(settings.local_dir)


def settle_trials(sweep: Path) -> None:
    """Make Ray's newest snapshot of `sweep` agree with its trial folders (see above)."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    path = _find_newest_experiment_checkpoint(str(sweep))
    if path is None:
        return
    state = json.loads(Path(path).read_text())
    for entry in state["trial_data"]:
        trial, meta = json.loads(entry[0]), json.loads(entry[1])
        if trial["status"] in ("TERMINATED", "ERROR"):
            continue  # Ray will not run it again
        folder = sweep / f"trial_{trial['trial_id']}"
        _take_staged_files(folder, _staging(trial))
        last = _rebuild_checkpoints(folder, trial, meta)
        _drop_rows_after(folder, last)
        entry[0], entry[1] = json.dumps(trial), json.dumps(meta)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _staging(trial: dict) -> Path | None:
    """Where this driver's Ray session stages the trial's result files (the driver writes
    them there and copies them to the trial folder every few seconds)."""
    try:
        return Path(_unpickle(trial["storage"]).trial_driver_staging_path)
    except Exception:  # noqa: BLE001 - no Ray session here: nothing staged either
        return None


def _take_staged_files(folder: Path, staged: Path | None) -> None:
    """A driver killed on a Ray cluster that lives on leaves its staged result files in
    the cluster's session, possibly ahead of the trial folder, and the resumed driver
    would copy them over the settled ones. The copy with more rows (Ray only appends) goes
    to the trial folder and the staged one is removed (Ray copies it back when the trial
    restarts from a checkpoint; a trial folder not there yet has no checkpoint either)."""
    if staged is None or not staged.is_dir():
        return
    for name in RESULT_FILES:
        src, dst = staged / name, folder / name
        if not src.is_file():
            continue
        if folder.is_dir() and (not dst.is_file() or _lines(src) > _lines(dst)):
            shutil.copyfile(src, dst)
        src.unlink()


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def _rebuild_checkpoints(folder: Path, trial: dict, meta: dict) -> int:
    """Point the trial at the checkpoints on disk; the training_iteration it restarts after."""
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    storage, old = _unpickle(trial["storage"]), _unpickle(meta["checkpoint_manager"])
    rows = {r["checkpoint_dir_name"]: r for r in _rows(folder / "result.json")
            if r.get("checkpoint_dir_name")}
    manager = _CheckpointManager(old.checkpoint_config)
    for d in sorted(folder.glob("checkpoint_*")):
        if d.name in rows:  # a row: the driver had the report, so the copy was complete
            manager.register_checkpoint(_TrainingResult(
                checkpoint=Checkpoint(path=f"{storage.trial_fs_path}/{d.name}",
                                      filesystem=storage.storage_filesystem),
                metrics=rows[d.name]))
    latest = manager.latest_checkpoint_result
    # What Ray keeps: its best (`best_checkpoint_results`, num_to_keep of them) and its
    # latest, which may be worse than those and is never deleted.
    kept = {Path(r.checkpoint.path).name
            for r in [*manager.best_checkpoint_results, latest] if r is not None}
    for d in folder.glob("checkpoint_*"):
        if d.name not in kept:  # written after the last report the driver saw
            shutil.rmtree(d, ignore_errors=True)
    if latest is None:  # nothing to continue from: the trial starts again
        if old.latest_checkpoint_result is not None:
            storage.current_checkpoint_index = -1  # Ray's start: its first is checkpoint_000000
        last = 0
    else:
        # Ray adds 1 before it writes a checkpoint: the next is the one after this.
        name = Path(latest.checkpoint.path).name
        storage.current_checkpoint_index = int(name.rpartition("_")[2])
        meta["last_result"] = latest.metrics  # what Ray judges the trial by if it ends now
        last = int(latest.metrics["training_iteration"])
    trial["storage"], meta["checkpoint_manager"] = _pickle(storage), _pickle(manager)
    return last


def _unpickle(value: dict):
    import cloudpickle

    assert value.get("_type") == PICKLED, value.get("_type")
    return cloudpickle.loads(bytes.fromhex(value["value"]))


def _pickle(obj) -> dict:  # as TuneFunctionEncoder writes it: hex of the cloudpickle
    import cloudpickle

    return {"_type": PICKLED, "value": cloudpickle.dumps(obj).hex()}


def _rows(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
    return out


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
