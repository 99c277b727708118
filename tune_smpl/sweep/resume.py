"""`tune --resume`: put each unfinished trial of the record back at its last checkpoint.

A trial the sweep did not finish (Ctrl-C, a killed driver, a lost head node) runs on from
the checkpoint of its last recorded report: the trainable saves a checkpoint before Ray
hands the driver its report, and the driver deletes a checkpoint only once two newer
reports are recorded (prune.py), so that checkpoint is on the storage. Reports past it (none,
unless the record is behind its files) are dropped: they come again. A trial with no
checkpoint starts from step 0 with its own config.

The Ray run that continues a trial numbers its checkpoints from checkpoint_000000 again, so
the restart point moves out of that pattern (`restart_<step>`) and the trial's other
checkpoints go: no name in the record can then point at a checkpoint of another step.
"""

from __future__ import annotations

import logging
import time

from trainables.train import STATE_FILE
from tune_smpl.sweep.outcome import decide
from tune_smpl.sweep.record import SweepRecord, TrialRecord

log = logging.getLogger(__name__)
_CHECKPOINT_DIRS = ("checkpoint_", "restart_")


def restart_points(record: SweepRecord, trials: list[TrialRecord]) -> dict[str, str]:
    """key -> checkpoint URI of every unfinished trial that has one; records updated."""
    out = {}
    for t in trials:
        if not t.finished:
            point = _restart_point(record, t)
            if point:
                out[t.key] = record.storage.uri(record.name, t.name, point)
            record.save_trial(t)
    return out


def settle_done(record: SweepRecord, trials: list[TrialRecord], steps: int
                ) -> list[TrialRecord]:
    """The unfinished trials whose last recorded report already decides them (it reached
    `steps`, or diverged, or ran out of memory): the sweep stopped after that report and
    before Ray ended the trial. Run again, such a trial would have nothing left to train
    and end without a report; it ends here, as its report says. Returns them."""
    done = []
    for t in trials:
        last = t.last
        if t.finished or not (last.get("step", 0) >= steps or last.get("diverged")
                              or last.get("oom")):
            continue
        t.outcome = decide(last, steps=steps)
        t.error = last.get("error") if last.get("oom") else t.error
        t.interrupted, t.ended_at = False, time.time()
        record.save_trial(t)
        done.append(t)
    if done:
        log.info("trial(s) %s ended by their last report", ", ".join(t.key for t in done))
    return done


def drop_orphans(record: SweepRecord, known: list[TrialRecord]) -> list[str]:
    """Delete the trial folders that have no record file (Ray's files of a trial whose
    record never reached a storage that failed: the record re-asks that trial, and the new
    one must not find the old one's checkpoints in its folder); their names. `known`: every
    record the sweep's folders hold (just read: one listing, no lookup per folder)."""
    storage, gone, have = record.storage, [], {t.name for t in known}
    for d in storage.list_dirs(record.name):
        if d.startswith(("trial_", "finalist_")) and d not in have:
            storage.delete_dir(record.name, d)
            gone.append(d)
    if gone:
        log.info("removed %d trial folder(s) the record never had: %s", len(gone),
                 ", ".join(gone))
    return gone


def _restart_point(record: SweepRecord, t: TrialRecord) -> str | None:
    storage, folder = record.storage, (record.name, t.name)
    row = next((r for r in reversed(t.reports) if r.get("checkpoint_dir_name")
                and storage.exists(*folder, r["checkpoint_dir_name"], STATE_FILE)), None)
    last_step = row["step"] if row else -1
    dropped = sum(r.get("step", 0) > last_step for r in t.reports)
    if dropped:
        log.info("trial %s: %d report(s) after its checkpoint come again", t.key, dropped)
    t.reports = [r for r in t.reports if r.get("step", 0) <= last_step]
    point = None
    if row:
        point = f"restart_{int(row['step']):07d}"
        if row["checkpoint_dir_name"] != point:
            _move(storage, folder, row["checkpoint_dir_name"], point)
    for r in t.reports:
        r["checkpoint_dir_name"] = point if r is row else None
    for d in storage.list_dirs(*folder):
        if d.startswith(_CHECKPOINT_DIRS) and d != point:
            storage.delete_dir(*folder, d)
    return point


def _move(storage, folder: tuple[str, str], src: str, dst: str) -> None:
    storage.delete_dir(*folder, dst)
    if storage.local:
        storage.fs.move(storage.path(*folder, src), storage.path(*folder, dst))
        return
    import pyarrow.fs as pafs  # object stores: copy, then delete (no directory rename)

    pafs.copy_files(storage.path(*folder, src), storage.path(*folder, dst),
                    source_filesystem=storage.fs, destination_filesystem=storage.fs)
    storage.delete_dir(*folder, src)
