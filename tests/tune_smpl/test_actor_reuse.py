"""A freed trial slot's process runs the next trial (`TuneConfig(reuse_actors=True)`): no
new Ray worker per trial, and a trial that runs in a reused process trains exactly as a
fresh run of its config."""

from __future__ import annotations

import torch

from smpl_core import fit
from smpl_core.config import SMPLConfig
from tests.tune_smpl import views
from tests.tune_smpl.conftest import small_sets
from tune_smpl.cli import main


def test_trials_run_in_reused_processes_and_train_as_fresh_runs(ray_local, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = main(["tune", "--name", "reuse", "--storage-path", str(tmp_path / "runs"),
               "--tracking-uri", uri, "--num-samples", "5", "--max-concurrent", "2",
               "--gpus-per-trial", "0", "--grace-period", "4", "--sampler", "random",
               *small_sets("dataset=moons")])
    assert rc == 0
    rec = views.check_finished(tmp_path / "runs" / "reuse", uri, trials=5)
    pids = {key: {r["pid"] for r in t["reports"]} for key, t in rec.items()}
    assert all(len(p) == 1 for p in pids.values())  # no restarts
    assert len(set().union(*pids.values())) <= 2  # 5 trials, 2 slots, 2 processes
    # The last trial ran after another one in its process; it trains as a fresh run.
    last = rec["0004"]
    assert any(t["reports"][-1]["reported_at"] < last["reports"][0]["started_at"]
               and pids[k] == pids["0004"] for k, t in rec.items() if k != "0004")
    names = set(SMPLConfig.field_names())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial's 1 CPU
    try:
        fresh = fit(SMPLConfig.from_dict({k: v for k, v in last["config"].items()
                                          if k in names}).replace(device="cpu")).history
    finally:
        torch.set_num_threads(threads)
    assert [r["val_accuracy"] for r in last["reports"]] == [h["val_accuracy"] for h in fresh]
    assert [r["step"] for r in last["reports"]] == [h["step"] for h in fresh]
