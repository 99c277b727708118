"""Ray for the tuner tests: one local instance per module, shut down only if we started it."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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


# --- the `tune-smpl tune` command in a subprocess (its own Ray) --------------------------
def cli_sets(steps: int = 200, grace: int = 10) -> list[str]:
    """Ten reports per trial; `grace` reports before ASHA may stop one; 2 CPUs offered."""
    sets = [f"steps={steps}", f"eval_every={steps // 10}", "batch_size=16", "mu=2",
            "val_size=100"]
    return [*sum((["--set", s] for s in sets), []), "--grace-period", str(grace),
            "--num-cpus", "2"]


def cli_cmd(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tune_smpl", "tune", "--storage-path", str(root / "runs"),
            "--tracking-uri", f"sqlite:///{root}/mlflow.db", *args]


def default_sigint() -> None:
    """In the child before it runs: Ctrl-C's default disposition. A pytest started in the
    background of a non-interactive shell (`nohup make test &`) ignores SIGINT, and a
    child inherits that; the command would then never see the Ctrl-C these tests send."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(root: Path, tag: str, *args: str) -> subprocess.Popen:
    """`tune-smpl tune ARGS` in its own session (process group), storage root/runs."""
    return subprocess.Popen(cli_cmd(root, *args), env=cli_env(tag), cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=default_sigint)


def run_cli(root: Path, tag: str, *args: str,
            timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(root, *args), env=cli_env(tag), cwd=root,
                          capture_output=True, text=True, timeout=timeout)


def export_cli(root: Path, tag: str, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune_smpl", "export", name, "--storage-path",
                           str(root / "runs")], env=cli_env(tag), capture_output=True,
                          text=True, timeout=120)


def wait_for(proc: subprocess.Popen, cond, timeout: float = 240) -> None:
    """Until `cond()` holds; an AssertionError with the command's output if it exits first
    or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except (OSError, ValueError):  # a record file being replaced
            pass
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out:\n{proc.communicate()[0]}")
        time.sleep(0.1)


def end_group(proc: subprocess.Popen, tag: str) -> None:
    """The command's process group (its Ray, when the command was killed) and its Ray
    temp dir, so that no test leaves processes or files behind."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    shutil.rmtree(cli_env(tag)["TUNE_SMPL_RAY_TMP"], ignore_errors=True)


def kill_group(proc: subprocess.Popen, tag: str) -> None:
    """SIGKILL the command (a killed driver), then clean up as `end_group`."""
    os.killpg(proc.pid, signal.SIGKILL)
    end_group(proc, tag)


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
