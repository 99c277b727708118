"""`train_smpl(config)`: one Tune trial = one `smpl_core.fit` run.

One evaluation is one `tune.report` (one `training_iteration`), with the run's state as a
checkpoint, so ASHA, the failure config and `--resume` all work from the same reports.

Running out of memory ends a trial with a last report `{"oom": True, "error": ...}` instead
of an exception: Ray's FailureConfig retries every exception, and an out-of-memory error is
deterministic for a given config and share (a retry from the checkpoint fails the same way,
`max_failures` times over). A process the kernel kills is still retried, `max_failures` times.

The checkpoint file holds tensors and plain types only and is read back with
`torch.load(weights_only=True)` (trainables.checkpoint): a file in a sweep's storage never
runs code. It carries `model_info`, so `load_model` rebuilds the evaluated model from it alone.

torch and smpl_core's loop are imported where a trial runs, not when this module is: the
driver imports it (`with_resources` hands Ray `train_smpl`) and never runs a trial, and
torch cost it 1.5-2 s of start-up on a 2-core CPU before a `--resume` reached a trial
(issue 26).
"""

from __future__ import annotations

import logging
import os
import resource
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from smpl_core.config import SMPLConfig
from smpl_core.uri import is_uri
from trainables.names import RESTORE_FIELD, STATE_FILE, TIME_ATTR, evaluation_at

STORAGE_RETRY_ENV = "TUNE_SMPL_STORAGE_RETRY_S"  # tune_smpl.sweep.record_writer's bound
log = logging.getLogger(__name__)


def with_resources(cpus: float, gpus: float, memory_gb: float | None = None):
    """The trainable with its per-trial share; fractional `gpus` (0.25: four per GPU).
    `memory_gb`: Ray's `memory` resource (a node runs only the trials its RAM holds), which
    the trial also enforces on itself when it runs on the CPU (see `_cap_memory`)."""
    from ray import tune

    share = {"cpu": cpus, "gpu": gpus}
    if memory_gb:
        share["memory"] = int(memory_gb * 2**30)
    return tune.with_resources(train_smpl, share)


def load_checkpoint_state(checkpoint) -> dict:
    """The `smpl_core` state inside a Tune checkpoint (also used by export and MLflow):
    tensors and plain types only (weights_only); any other pickled object is refused."""
    from trainables.checkpoint import load_state

    with checkpoint.as_directory() as d:
        return load_state(Path(d) / STATE_FILE)


def write_checkpoint(run_state: dict, folder: str | os.PathLike) -> None:
    """Write the state `fit` reported (with its `model_info`, which rebuilds the evaluated
    model) into `folder` as the trial's checkpoint."""
    from trainables.checkpoint import save_state

    save_state(run_state, os.path.join(folder, STATE_FILE))


def checkpoint_at(path_or_uri: str):
    """A Tune checkpoint for a folder given as a local path or a pyarrow.fs URI (its query
    string, e.g. an S3 endpoint_override, is part of the URI)."""
    import pyarrow.fs as pafs
    from ray import tune

    if not is_uri(path_or_uri):
        return tune.Checkpoint(path_or_uri)
    fs, inner = pafs.FileSystem.from_uri(path_or_uri)
    return tune.Checkpoint(inner, filesystem=fs)


def _load_retrying(checkpoint) -> dict:
    """The checkpoint's state; a storage that fails (not a missing file) is retried with
    back-off for up to TUNE_SMPL_STORAGE_RETRY_S seconds (default 120, as the driver's
    record writer) before the trial fails: a restart during a storage outage waits for it."""
    try:
        bound = float(os.environ.get(STORAGE_RETRY_ENV) or 120.0)
    except ValueError:
        bound = 120.0
    deadline, wait = time.monotonic() + bound, 0.5
    while True:
        try:
            return load_checkpoint_state(checkpoint)
        except FileNotFoundError:
            raise
        except OSError as e:
            if time.monotonic() + wait > deadline:
                raise
            log.warning("checkpoint %s not read (%s); trying again in %.1f s",
                        checkpoint.path, e, wait)
            time.sleep(wait)
            wait = min(2 * wait, 10.0)


def _placement(cfg: SMPLConfig) -> tuple[SMPLConfig, dict[str, Any]]:
    """Device, CPU threads and CUDA memory cap from the resources Ray gave this trial."""
    import ray
    import torch
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


def _vm_data() -> int | None:
    """Bytes of this process's data segment (what RLIMIT_DATA counts), where /proc has it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cap_memory(cfg: SMPLConfig, memory_bytes: float):
    """Cap what a CPU trial may allocate at its `memory` share above what the Ray worker
    holds when it starts (RLIMIT_DATA: heap and private mappings; a worker with torch loaded
    already holds about 1 GB, and RLIMIT_AS would also count the ~10 GB of address space
    Ray and torch reserve but never touch). Past it, allocations fail with a MemoryError
    in this trial instead of the kernel killing a process, or a neighbour. Returns the undo.

    On CUDA the share of GPU memory is the cap (`set_per_process_memory_fraction`); an
    address-space limit would break the CUDA driver's own reservations."""
    used = _vm_data()
    if not memory_bytes or cfg.device != "cpu" or used is None:
        return lambda: None
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = used + int(memory_bytes)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    return lambda: resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _is_out_of_memory(e: BaseException) -> bool:
    import torch

    if isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(e)  # torch's CPU allocator raises a plain RuntimeError
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text
                                            or "out of memory" in text.lower())


def train_smpl(config: dict[str, Any]) -> None:
    import torch
    from ray import tune

    from smpl_core.loop import fit

    names = set(SMPLConfig.field_names())
    cfg = SMPLConfig.from_dict({k: v for k, v in config.items() if k in names})
    cfg, info = _placement(cfg)

    state = None
    # Ray's checkpoint when it restarted this trial's process; else the one `--resume` chose.
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and config.get(RESTORE_FIELD):
        checkpoint = checkpoint_at(config[RESTORE_FIELD])
    if checkpoint is not None:  # continue, not redo
        state = _load_retrying(checkpoint)

    last_step = [int(state["step"]) if state else 0]

    def report(metrics: dict[str, Any], run_state: dict | None) -> None:
        metrics = {**metrics, **info, "reported_at": time.time(),
                   TIME_ATTR: evaluation_at(metrics["step"], cfg.eval_every)}
        if run_state is None:  # a diverged run has nothing worth checkpointing
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint(run_state, d)
            try:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
            except OSError as e:
                # The storage did not take the checkpoint (full, read-only, unreachable):
                # Ray raises before it registers anything, so the report goes without it
                # and training goes on; the next report tries a checkpoint again.
                log.warning("step %s: checkpoint not stored (%s); reported without it",
                            metrics["step"], e)
                tune.report(metrics)
        last_step[0] = int(metrics["step"])

    memory = tune.get_context().get_trial_resources().required_resources.get("memory", 0)
    uncap = _cap_memory(cfg, memory)
    error = None
    try:
        fit(cfg, report=report, state=state)
    except Exception as e:
        if not _is_out_of_memory(e):
            raise
        limit = f"{memory / 2**30:g} GB of memory" if memory else "the memory it could get"
        where = "its GPU share" if cfg.device.startswith("cuda") else limit
        error = (f"out of memory: the trial needed more than {where} after step "
                 f"{last_step[0]} ({type(e).__name__}: {e})\n\n{traceback.format_exc()}")
    finally:
        uncap()
    if error is not None:  # outside `except`: the failed step's tensors are freed by now
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()
        # val_accuracy 0.0 as for a diverged run: Ray wants the metric in every report.
        tune.report({"oom": True, "error": error, "diverged": False, "val_accuracy": 0.0,
                     "step": last_step[0], **info, "reported_at": time.time(),
                     TIME_ATTR: evaluation_at(last_step[0], cfg.eval_every)})
