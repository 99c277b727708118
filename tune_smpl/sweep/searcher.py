"""Ray's searchers of a sweep: each search suggestion is one `study.ask()` through the
ledger; each finalist suggestion is the ledger's next planned finalist run.

Ray's own OptunaSearch keeps a second copy of the study's trials and decides their states
itself; here the ledger owns both (see `ledger.Ledger`), and this class only hands Ray the
configs, through Ray's public `Searcher` interface. It keeps no state of its own: a sweep
resumes from its record, not from Ray's snapshot of the searcher.
"""

from __future__ import annotations

from ray.tune.search import Searcher

from tune_smpl.sweep.ledger import Ledger
from tune_smpl.sweep.outcome import METRIC, MODE
from tune_smpl.sweep.stop import STOP


class SweepSearcher(Searcher):
    def __init__(self, ledger: Ledger):
        super().__init__(metric=METRIC, mode=MODE)
        self.ledger = ledger

    def suggest(self, trial_id: str) -> dict | None:
        if STOP.requested:  # a stop is on its way: no new trial (None: none for now)
            return None
        return self.ledger.new_trial(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # the ledger records every report (LedgerCallback sees them all; this does not)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        pass  # the ledger decides the outcome (LedgerCallback), once

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as fh:  # Ray snapshots searchers; the record is ours
            fh.write("tune-smpl: this sweep resumes from its record (sweep.json)\n")

    def restore(self, checkpoint_path: str) -> None:
        pass


class FinalistSearcher(SweepSearcher):
    """The finalist stage: the planned runs the ledger queued, in order; no study."""

    def suggest(self, trial_id: str) -> dict | None:
        if STOP.requested:
            return None
        config = self.ledger.new_finalist(trial_id)
        return Searcher.FINISHED if config is None else config
