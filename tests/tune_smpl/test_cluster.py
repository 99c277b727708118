"""Sweeps on a real Ray cluster: two nodes on loopback, the storage rules, file:// storage.

The two-node cluster is two `ray start --block` processes, each in its own process group,
killed by the fixture whatever the outcome (never a bare `ray stop`: it would stop every
other Ray on the machine).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tune_smpl.conftest import REPO, cli_env, free_port, small_sets
from tune_smpl.sweep.cluster import ClusterInfo, absolute_data_dir, check_storage, storage_path

RAY = str(Path(sys.executable).with_name("ray"))
NODE_RE = re.compile(r"^\s*1 node_([0-9a-f]+)\s*$", re.MULTILINE)


def _node_ids(address: str, env: dict) -> list[str]:
    host, _, port = address.rpartition(":")
    try:  # `ray status` retries for a long while when the GCS is not listening yet
        socket.create_connection((host, int(port)), timeout=2.0).close()
        out = subprocess.run([RAY, "status", "--address", address], env=env,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return NODE_RE.findall(out.stdout) if out.returncode == 0 else []


def _wait_nodes(address: str, env: dict, count: int, procs: list, log: Path,
                timeout: float = 150) -> list:
    deadline, ids = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"`ray start` exited with {p.returncode}: " \
                                     f"{log.read_text()[-2000:]}"
        ids = _node_ids(address, env)
        if len(ids) >= count:
            return ids
        time.sleep(1.0)
    raise AssertionError(f"{count} nodes not up within {timeout:.0f} s (saw {ids}): "
                         f"{log.read_text()[-2000:]}")


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each node's process group, then SIGKILL what is left after a short grace
    (a graceful `ray start --block` shutdown takes 30+ s on a loaded machine)."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the leader may be gone while the raylet or GCS of its group lingers
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """(address, env, node ids) of a head and a worker node on this machine, 1 CPU each."""
    env, port = cli_env("n"), free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("nodes") / "ray_start.log"
    common = ["ray", "start", "--block", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    head = [*common, "--head", f"--port={port}", "--include-dashboard=false",
            f"--temp-dir={env['TUNE_SMPL_RAY_TMP']}h", '--resources={"head": 1}',
            f"--dashboard-agent-listen-port={free_port()}"]
    # Ray 2.60 accepts a temp dir per node even on one machine.
    worker = [*common, f"--address={address}", f"--temp-dir={env['TUNE_SMPL_RAY_TMP']}w",
              '--resources={"worker": 1}', f"--dashboard-agent-listen-port={free_port()}"]
    procs: list[subprocess.Popen] = []
    try:
        with open(log, "w") as out:
            for args, count in ((head, 1), (worker, 2)):
                procs.append(subprocess.Popen(
                    args, executable=RAY, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))
                ids = _wait_nodes(address, env, count, procs, log)
        yield address, env, ids
    finally:
        _stop(procs)
        for suffix in "hw":
            shutil.rmtree(env["TUNE_SMPL_RAY_TMP"] + suffix, ignore_errors=True)


def _cmd(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tune_smpl", "tune", "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db", "--gpus-per-trial", "0", *small_sets(), *args]


def test_file_uri_storage_runs_a_local_sweep(tmp_path):
    runs = tmp_path / "file runs"  # a space, percent-encoded in the URI
    uri = "file://" + str(runs).replace(" ", "%20")
    done = subprocess.run(
        _cmd(tmp_path, "--storage-path", uri, "--name", "viafile", "--num-samples", "2",
             "--num-cpus", "2"),
        env=cli_env("f"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    shutil.rmtree(cli_env("f")["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"record in {runs}/viafile" in done.stdout
    sweep = runs / "viafile"
    # The record, the Optuna study and the space sit beside the trials, as for a local path.
    assert len(list(sweep.glob("trial_*/trial.json"))) == 2
    assert (sweep / "optuna.db").is_file() and (sweep / "sweep.json").is_file()
    assert (sweep / "space.yaml").is_file()
    # Ray's periodic save of its experiment state is off (cluster.connect), its save at
    # the sweep's end is not.
    assert list(sweep.glob("experiment_state-*.json"))


def test_unopenable_storage_uri_exits_2_naming_it(tmp_path, capsys):
    from tune_smpl.cli import main

    code = main(["tune", "--storage-path", "foo://x", "--name", "bad",
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "--storage-path='foo://x'" in err and "Unrecognized filesystem" in err


def test_storage_path_forms():
    assert storage_path("file:///tmp/a%20b/sweeps") == str(Path("/tmp/a b/sweeps").resolve())
    assert storage_path("runs") == str(Path("runs").resolve())
    # A remote URI is probed (created, read back) and passed to Ray unchanged.
    assert storage_path("mock:///bucket/sweeps") == "mock:///bucket/sweeps"
    with pytest.raises(ValueError, match=r"^`--storage-path` must .*file://runs.*relative"):
        storage_path("file://runs")


def _info(nodes: int) -> ClusterInfo:
    return ClusterInfo("127.0.0.1:6379", nodes, 2.0 * nodes, 0, 0, 2, False)


def test_check_storage_rules():
    check_storage(_info(1), "/data/runs", shared=False)  # one node: its disk is the storage
    check_storage(_info(3), "/nfs/runs", shared=True)
    check_storage(_info(3), "s3://bucket/sweeps", shared=False)
    with pytest.raises(ValueError, match=r"^`--storage-path` .*3 nodes.*--shared-storage.*"
                                         r"but got the local --storage-path='/data/runs'\.$"):
        check_storage(_info(3), "/data/runs", shared=False)


def test_relative_data_dir_is_made_absolute_on_the_driver():
    from smpl_core.config import SMPLConfig

    cfg = absolute_data_dir(SMPLConfig(dataset="cifar10", data_dir="data"))
    assert cfg.data_dir == str(Path("data").resolve())  # not one download per trial dir
    uri = SMPLConfig(dataset="parquet", data_dir="s3://bucket/cifar")
    assert absolute_data_dir(uri).data_dir == "s3://bucket/cifar"
    assert absolute_data_dir(SMPLConfig(dataset="digits")).data_dir == "data"  # unused there


def test_rayjob_manifest_runs_a_valid_tune_command():
    import shlex

    import yaml

    from tune_smpl.cli import build_parser
    from tune_smpl.commands.train import build_config

    docs = list(yaml.safe_load_all((REPO / "deploy" / "rayjob.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1" and job["spec"]["shutdownAfterJobFinishes"] is True
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = [c["resources"]["limits"] for w in workers
              for c in w["template"]["spec"]["containers"]]
    assert any(int(lim.get("nvidia.com/gpu", 0)) >= 1 for lim in limits)
    argv = shlex.split(job["spec"]["entrypoint"].split("&&")[-1])
    assert argv[:2] == ["tune-smpl", "tune"]
    args = build_parser().parse_args(argv[1:])
    assert args.address == "auto" and args.storage_path.startswith("s3://")
    assert args.gpus_per_trial == 0.25 and args.tracking_uri == "http://mlflow:5000"
    build_config(args.config, [f"dataset={args.dataset}", *(args.set or [])])  # valid fields


# The two-node tests come last: the cluster (a module fixture) stops as the module ends.
def test_local_storage_on_two_nodes_needs_shared_storage(two_nodes, tmp_path):
    address, env, _ = two_nodes
    runs = tmp_path / "runs"
    done = subprocess.run(
        _cmd(tmp_path, "--address", address, "--storage-path", str(runs), "--name", "local",
             "--num-samples", "2"),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--shared-storage" in lines[0] and str(runs) in lines[0] and "2 nodes" in lines[0]
    assert not (runs / "local").exists()  # stopped before any trial (or record) was written


def test_sweep_runs_trials_on_both_nodes(two_nodes, tmp_path):
    import mlflow

    address, env, node_ids = two_nodes
    runs = tmp_path / "runs"
    done = subprocess.run(
        _cmd(tmp_path, "--address", address, "--storage-path", str(runs), "--shared-storage",
             "--name", "two", "--num-samples", "4", "--cpus-per-trial", "1"),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Ray cluster at {address}: 2 nodes, 2 CPUs" in done.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    trials = client.search_runs(experiments, "tags.run_kind = 'trial' and tags.sweep_name = 'two'")
    assert len(trials) == 4
    tagged = {r.data.tags.get("ray_node_id") for r in trials}
    # One CPU per node and one per trial: the first two trials cannot share a node.
    assert len(tagged) == 2 and tagged <= set(node_ids), (tagged, node_ids)
    assert len(list((runs / "two").glob("trial_*/trial.json"))) == 4


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_ray_auth_mode_is_set_only_for_the_ray_started_here(monkeypatch):
    """Joining a cluster (`--address`) keeps the caller's RAY_AUTH_MODE (token auth needs
    it); only a Ray this command starts itself runs with auth disabled."""
    import ray

    from tune_smpl.sweep import cluster

    seen = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(
        (kw.get("address"), os.environ.get("RAY_AUTH_MODE"))))
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2}}])
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    info = cluster.connect("auto")
    assert not info.started_here and seen[-1] == ("auto", None)
    assert "RAY_AUTH_MODE" not in os.environ
    info = cluster.connect(None, num_cpus=2)
    assert info.started_here and seen[-1] == (None, "disabled")


def test_rays_experiment_state_is_saved_only_at_the_end_unless_the_user_says(monkeypatch):
    """Ray's experiment state grows with the trials (41 MB at trial 1,000) and nothing of
    the sweep reads it, so Ray saves it only at the sweep's end, not every 10 s; a user's
    TUNE_GLOBAL_CHECKPOINT_S stands."""
    import ray

    from tune_smpl.sweep import cluster

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: None)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2}}])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S", raising=False)
    cluster.connect(None, num_cpus=2)
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "inf"
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "auto")
    cluster.connect(None, num_cpus=2)
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "auto"
