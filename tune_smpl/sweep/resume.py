"""`tune --resume`: put each unfinished trial of the record back at its last checkpoint.

A trial the sweep did not finish (Ctrl-C, a killed driver, a lost head node) runs on from
the checkpoint of its last recorded report: the trainable saves a checkpoint before Ray
hands the driver its report, and Ray deletes an older checkpoint only after the ledger has
recorded the newer report, so that checkpoint is on the storage. Reports past it (none,
unless the record is behind its files) are dropped: they come again. A trial with no
checkpoint starts from step 0 with its own config. Its other checkpoint folders are
removed, so that the Ray run that continues it numbers its checkpoints from scratch.
"""

from __future__ import annotations

import logging

from trainables.train import STATE_FILE
from tune_smpl.sweep.record import SweepRecord, TrialRecord

log = logging.getLogger(__name__)


def restart_points(record: SweepRecord, trials: list[TrialRecord]) -> dict[str, str]:
    """key -> checkpoint URI of every unfinished trial that has one; records updated."""
    storage, out = record.storage, {}
    for t in trials:
        if t.finished:
            continue
        folder = (record.name, t.name)
        ckpt = next((r["checkpoint_dir_name"] for r in reversed(t.reports)
                     if r.get("checkpoint_dir_name")
                     and storage.exists(*folder, r["checkpoint_dir_name"], STATE_FILE)), None)
        kept = [r for r in t.reports if ckpt and r.get("checkpoint_dir_name") == ckpt]
        last_step = kept[0]["step"] if kept else -1
        dropped = [r for r in t.reports if r.get("step", 0) > last_step]
        if dropped:
            log.info("trial %s: %d report(s) after its checkpoint come again", t.key,
                     len(dropped))
        t.reports = [r for r in t.reports if r.get("step", 0) <= last_step]
        for d in storage.list_dirs(*folder):
            if d.startswith("checkpoint_") and d != ckpt:
                storage.delete_dir(*folder, d)
        if ckpt:
            out[t.key] = storage.uri(*folder, ckpt)
        record.save_trial(t)
    return out
