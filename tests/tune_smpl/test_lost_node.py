"""Issue 25: a worker node lost mid-trial, told plainly.

A two-node `ray start` cluster on this machine (head and worker, one CPU each), a sweep with
`--shared-storage --max-failures 3`; once a trial running on the worker node has its first
checkpoint, the worker node's whole process group is SIGKILLed. The trial must restart from
that checkpoint on the head and complete; record, study and MLflow agree; the user sees one
line for it (`trial 0001 restarted from step 40 on another node: its node died`) and no
Ray traceback; the summary, the report and the parent run count the restart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.tune_smpl import views
from tests.tune_smpl.conftest import cli_env, free_port
from tests.tune_smpl.test_cluster import RAY, _stop, _wait_nodes

STEPS, EVERY = 200, 20  # ten reports: time to kill a node between two of them


@pytest.fixture
def nodes(tmp_path):
    """(address, env, worker `ray start` process): a head and a worker node on loopback."""
    env, port = cli_env("ln"), free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path / "ray_start.log"
    common = ["ray", "start", "--block", "--num-cpus=1", "--num-gpus=0",
              "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    head = [*common, "--head", f"--port={port}", "--include-dashboard=false",
            f"--temp-dir={env['TUNE_SMPL_RAY_TMP']}h",
            f"--dashboard-agent-listen-port={free_port()}"]
    worker = [*common, f"--address={address}", f"--temp-dir={env['TUNE_SMPL_RAY_TMP']}w",
              f"--dashboard-agent-listen-port={free_port()}"]
    procs: list[subprocess.Popen] = []
    try:
        with open(log, "w") as out:
            for args, count in ((head, 1), (worker, 2)):
                procs.append(subprocess.Popen(args, executable=RAY, env=env, stdout=out,
                                              stderr=subprocess.STDOUT,
                                              start_new_session=True))
                _wait_nodes(address, env, count, procs, log)
        yield address, env, procs[1]
    finally:
        _stop(procs)
        for suffix in "hw":
            subprocess.run(["rm", "-rf", env["TUNE_SMPL_RAY_TMP"] + suffix], check=False)


def _group_of_parent(pid: int) -> int | None:
    """The process group of `pid`'s parent (a Ray worker's parent is its node's raylet;
    the worker itself leads a group of its own)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        return os.getpgid(ppid)
    except (OSError, ValueError, IndexError):
        return None


def test_lost_worker_node_restarts_the_trial_on_the_head_with_one_line(nodes, tmp_path):
    address, env, worker = nodes
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    sweep = runs / "lost"
    sets = sum((["--set", s] for s in (f"steps={STEPS}", f"eval_every={EVERY}",
                                       "batch_size=16", "mu=2", "val_size=100")), [])
    cmd = [sys.executable, "-m", "tune_smpl", "tune", "--tracking-uri", uri, "--address",
           address, "--storage-path", str(runs), "--shared-storage", "--name", "lost",
           "--num-samples", "2", "--max-failures", "3", "--gpus-per-trial", "0",
           "--sampler", "random", "--grace-period", "20", *sets]  # ASHA never stops one
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    victim = None
    try:
        deadline = time.monotonic() + 300
        while victim is None:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no trial checkpointed on the worker node"
            for key, t in (views.record(sweep) if sweep.is_dir() else {}).items():
                rows = t["reports"]
                if (rows and rows[-1].get("checkpoint_dir_name") and rows[-1]["step"] < STEPS
                        and _group_of_parent(rows[-1]["pid"]) == worker.pid):
                    os.killpg(worker.pid, signal.SIGKILL)  # the node: raylet and workers
                    victim = key, rows
                    break
            time.sleep(0.1)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == 0, out
    key, before = victim

    rec = views.check_finished(sweep, uri, trials=2, summary=out)
    t = rec[key]
    assert t["outcome"] == "completed" and t["restarts"] == 1
    rows = t["reports"]
    assert [r["step"] for r in rows] == list(range(EVERY, STEPS + 1, EVERY))  # each once
    dead_node = before[-1]["ray_node_id"]
    moved = [r for r in rows if r["ray_node_id"] != dead_node]
    assert moved and all(r["ray_node_id"] != dead_node for r in rows[rows.index(moved[0]):])
    # It went on from a checkpoint, not from step 0: the step after it is the first report
    # of the new node, and the reports before it (from the dead node) were kept.
    step = moved[0]["step"] - EVERY
    assert step >= before[-1]["step"] and rows[:len(before)] == before[:len(rows)]
    assert t["restart_log"] and len(t["restart_log"]) == 1
    entry = t["restart_log"][0]
    assert (entry["step"], entry["cause"], entry["where"]) == (step, "node died",
                                                               "on another node")

    line = f"trial {key} restarted from step {step} on another node: its node died"
    assert out.count("restarted from step") == 1 and line in out, out
    for ray_text in ("Traceback", "ActorUnavailableError", "ActorDiedError", "marked dead",
                     "Trial task failed"):
        assert ray_text not in out, (ray_text, out)
    log = sweep / "ray-driver.log"
    assert f"1 restart (trial {key}: node died); Ray's messages are in {log}" in out
    assert "Trial task failed" in log.read_text()

    parent, children = views.mlflow_runs(uri, "lost")
    assert parent.data.metrics["restarts"] == 1
    assert children[key].data.tags["restarts"] == "1"
    page = (sweep / "report" / "report.html").read_text()
    assert re.search(rf"id='restarts'>[^<]*1 restart \(trial {key}: node died\)", page)
    assert json.loads((sweep / "sweep.json").read_text())["status"] == "finished"


pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
