"""Issue 26: the driver deletes each trial's superseded checkpoints (Ray keeps them all,
since its num_to_keep saves the whole experiment state at every report). On real folders:
what stays after each report is the latest, the one before, the best report's and a
restart point, whatever order the values come in, a replayed report included."""

from __future__ import annotations

import logging
import random

import pytest

from tune_smpl.sweep.prune import Pruner
from tune_smpl.sweep.record import TrialRecord
from tune_smpl.sweep.storage import SweepStorage


def _dirs(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


@pytest.mark.parametrize("seed", range(4))
def test_each_report_leaves_the_latest_the_one_before_and_the_best(tmp_path, seed):
    rng = random.Random(seed)
    folder = tmp_path / "sw" / "trial_0000"
    (folder / "restart_0000040").mkdir(parents=True)  # a resumed trial's start
    t = TrialRecord(key="0000", number=0, params={}, distributions={}, config={},
                    reports=[{"step": 40, "val_accuracy": 0.3,
                              "checkpoint_dir_name": "restart_0000040"}])
    pruner = Pruner(SweepStorage(str(tmp_path)), "sw")
    for i in range(12):
        name = f"checkpoint_{i:06d}"
        (folder / name).mkdir()
        step = 50 + 10 * i if not (i == 6 and seed % 2) else 50 + 10 * 5  # 6: a replay
        row = t.add_report({"step": step, "val_accuracy": rng.choice([0.2, 0.5, 0.8, 0.9]),
                            "checkpoint_dir_name": name})
        pruner.reported(t, row)
        pruner.flush()
        named = [r["checkpoint_dir_name"] for r in t.reports]
        best = max(t.reports, key=lambda r: r["val_accuracy"])  # the first of the best
        want = {"restart_0000040", *named[-2:], best["checkpoint_dir_name"]}
        assert set(_dirs(folder)) == want, (i, t.reports)
        assert len(want) <= 4


def test_a_delete_that_fails_is_logged_and_the_sweep_goes_on(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tune_smpl.sweep.prune")
    class Refusing(SweepStorage):
        def delete_dir(self, *parts):
            raise OSError("the storage is away")

    t = TrialRecord(key="0001", number=1, params={}, distributions={}, config={})
    pruner = Pruner(Refusing(str(tmp_path)), "sw")
    for i in range(4):
        row = t.add_report({"step": 10 * (i + 1), "val_accuracy": 0.1 * i,
                            "checkpoint_dir_name": f"checkpoint_{i:06d}"})
        gone = pruner.reported(t, row)
    pruner.close()
    assert gone == ["checkpoint_000001"]  # 0 went after report 2; 1 after report 3 (best: 3)
    assert "not deleted (it stays on the storage): the storage is away" in caplog.text
