"""Ray for the tuner tests: one local instance per module, shut down only if we started it."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

REPO = Path(__file__).resolve().parents[2]

# A sweep small enough for a 2-core CI machine: 40 steps, a report every 10.
SMALL = ["steps=40", "eval_every=10", "batch_size=16", "mu=2", "val_size=100"]


def small_sets(*extra: str) -> list[str]:
    out = []
    for s in (*SMALL, *extra):
        out += ["--set", s]
    return out


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs and 1 logical GPU (fractional packing needs one)."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING,
                 _temp_dir=os.path.join(tempfile.gettempdir(), "ray_smpl_test"))
        started = True
    yield ray
    if started:
        ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(tag: str) -> dict:
    """The environment of a `tune-smpl` (or `ray start`) subprocess: its own short Ray temp
    dir (`/tmp/rt_<pid>_<tag>`: Ray's socket paths must fit in 107 bytes), the checkout on
    PYTHONPATH (every node's workers import trainables/ and smpl_core/ from it), and no
    RAY_ADDRESS from outside."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1",
               RAY_USAGE_STATS_ENABLED="0", TUNE_SMPL_RAY_TMP=f"/tmp/rt_{os.getpid()}_{tag}",
               TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.pop("RAY_ADDRESS", None)
    return env


def spy_model(sampler) -> list[bool]:
    """Wrap the sampler's public `sample_relative`: each call appends whether its model
    proposed params for the trial (False: the trial's params come from the random start-up
    sampler). Returns the list it appends to."""
    modelled: list[bool] = []
    original = sampler.sample_relative

    def spy(study, trial, search_space):
        params = original(study, trial, search_space)
        modelled.append(bool(params))
        return params

    sampler.sample_relative = spy
    return modelled
