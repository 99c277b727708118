"""`train_smpl(config)`: one Tune trial = one `smpl_core.fit` run.

One evaluation is one `tune.report` (one `training_iteration`), with the run's state as a
checkpoint, so ASHA, the failure config and `--resume` all work from the same reports.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from smpl_core.config import SMPLConfig
from smpl_core.loop import fit

STATE_FILE = "state.pt"


def with_resources(cpus: float, gpus: float):
    """The trainable with its per-trial share; fractional `gpus` (0.25: four per GPU)."""
    from ray import tune

    return tune.with_resources(train_smpl, {"cpu": cpus, "gpu": gpus})


def load_checkpoint_state(checkpoint) -> dict:
    """The `smpl_core` state inside a Tune checkpoint (also used by export and MLflow)."""
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)


def _placement(cfg: SMPLConfig) -> tuple[SMPLConfig, dict[str, Any]]:
    """Device, CPU threads and CUDA memory cap from the resources Ray gave this trial."""
    import ray
    from ray import tune

    resources = tune.get_context().get_trial_resources().required_resources
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = float(resources.get("GPU", 0.0))
    torch.set_num_threads(cpus)  # otherwise every trial spawns one thread per core
    # Where and when this trial (or this restart of it) ran: for MLflow's node tag and for
    # measuring how trials overlap on a shared GPU.
    info = {"ray_node_id": ray.get_runtime_context().get_node_id(), "started_at": time.time()}
    if cfg.device == "auto":
        # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU, so it is cuda:0 in here. Logical
        # GPUs on a machine without CUDA (tests, packing benchmark) run on the CPU.
        on_gpu = gpus > 0 and bool(ray.get_gpu_ids()) and torch.cuda.is_available()
        cfg = cfg.replace(device="cuda" if on_gpu else "cpu")
    if cfg.device.startswith("cuda") and 0 < gpus < 1:
        # A fractional trial must not starve the trials that share its GPU.
        torch.cuda.set_per_process_memory_fraction(gpus, torch.device(cfg.device))
    return cfg, info


def train_smpl(config: dict[str, Any]) -> None:
    from ray import tune

    names = set(SMPLConfig.field_names())
    cfg = SMPLConfig.from_dict({k: v for k, v in config.items() if k in names})
    cfg, info = _placement(cfg)

    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a restarted trial or a resumed sweep: continue, not redo
        state = load_checkpoint_state(checkpoint)

    def report(metrics: dict[str, Any], run_state: dict | None) -> None:
        metrics = {**metrics, **info, "reported_at": time.time()}
        if run_state is None:  # a diverged run has nothing worth checkpointing
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(run_state, os.path.join(d, STATE_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    fit(cfg, report=report, state=state)
