"""Each trial's superseded checkpoints, deleted by the driver as its reports come in.

Ray's `CheckpointConfig(num_to_keep=K)` would delete them, but it also makes Ray's loop save
and upload its whole experiment state whenever a trial has saved K checkpoints since the
last upload (`TuneController` passes K as its `sync_every_n_trial_checkpoints`): with a
checkpoint at every report that is a save of every trial so far at every report, work that
grows with the sweep (0.27 s of the driver's main thread a trial at trial 300, growing
linearly; issue 26). So Ray keeps every checkpoint (its experiment state is then saved at
its own period), and the ledger hands each report to a `Pruner`, which keeps of a trial:

- its latest report's checkpoint: what Ray restarts a trial whose process died from;
- the one before it: what the record on the storage may still name while its writer
  catches up (a killed driver's `--resume` continues from there);
- its best report's (`TrialRecord.best_report`): what `export` and the best model read;
- a resumed trial's restart point (`restart_<step>`: resume.py keeps one per trial);

and deletes the rest on a thread of its own (a delete on S3 is a few requests: never on a
trial's path). A delete that fails costs disk, nothing else: it is logged.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait

from tune_smpl.sweep.outcome import score
from tune_smpl.sweep.record import TrialRecord
from tune_smpl.sweep.storage import SweepStorage

log = logging.getLogger(__name__)
CKPT = "checkpoint_dir_name"
CLOSE_WAIT_S = 30.0  # the end of a command waits this long for the deletes under way


def kept(reports: list[dict]) -> set[str]:
    """The checkpoints of a trial's reports that stay: the latest, the one before, the
    best report's."""
    named = [r[CKPT] for r in reports if r.get(CKPT)]
    best = score(reports)[1].get(CKPT)  # TrialRecord.best_report
    return set(named[-2:]) | ({best} if best else set())


class Pruner:
    def __init__(self, storage: SweepStorage, sweep: str):
        self.storage, self.sweep = storage, sweep
        self._seen: dict[str, list[str]] = {}  # key -> every checkpoint its reports named
        self._gone: dict[str, set[str]] = {}  # key -> those handed to the thread
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-pruner")
        self._futures: list[Future] = []

    def reported(self, t: TrialRecord, row: dict) -> list[str]:
        """The trial's report `row` was recorded: queue the deletes of the checkpoints it
        superseded; their names."""
        name = row.get(CKPT)
        if not name:
            return []
        seen = self._seen.setdefault(t.key, [])
        if name not in seen:
            seen.append(name)
        gone, keep = self._gone.setdefault(t.key, set()), kept(t.reports)
        out = [n for n in seen if n not in keep and n not in gone
               and not n.startswith("restart_")]
        for n in out:
            gone.add(n)
            self._futures.append(self._pool.submit(self._delete, t.name, n))
        self._futures = [f for f in self._futures if not f.done()]
        return out

    def _delete(self, folder: str, name: str) -> None:
        try:
            self.storage.delete_dir(self.sweep, folder, name)
        except OSError as e:
            log.info("checkpoint %s/%s not deleted (it stays on the storage): %s", folder,
                     name, e)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for the deletes queued so far (at most `timeout_s`)."""
        wait(self._futures, timeout=timeout_s)

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Wait for the deletes under way (at most `timeout_s`); the rest are dropped."""
        self.flush(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
