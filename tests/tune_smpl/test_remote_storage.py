"""A sweep whose storage is an S3 bucket (a local S3-compatible server, moto, on 127.0.0.1):
everything `--resume` and `export` need lives in the bucket, the URI's query string
(endpoint_override, scheme, region) survives every join, and a driver killed on one
machine is resumed and exported from another working directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tune_smpl import views
from tests.tune_smpl.conftest import cli_env, free_port
from tune_smpl.sweep.record import SweepRecord
from tune_smpl.sweep.storage import SweepStorage

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("moto")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, **CREDS}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **{
            "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
            "region_name": "us-east-1"})
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket="sweeps")
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        yield f"s3://sweeps/runs?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _env(tag: str) -> dict:
    return {**cli_env(tag), **CREDS}


def _tune(cwd: Path, uri: str, mlflow_uri: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tune_smpl", "tune", "--storage-path", uri,
            "--tracking-uri", mlflow_uri, "--num-cpus", "2", *args]


def test_sweep_in_a_bucket_resumes_and_exports_from_elsewhere(s3, tmp_path):
    first, second, third = (tmp_path / d for d in ("first", "second", "third"))
    for d in (first, second, third):
        d.mkdir()
    mlflow_uri = f"sqlite:///{tmp_path}/mlflow.db"
    record = SweepRecord(SweepStorage(s3), "s3sweep")
    sets = sum((["--set", s] for s in ("steps=60", "eval_every=20", "batch_size=16", "mu=2",
                                       "val_size=100")), [])
    proc = subprocess.Popen(_tune(first, s3, mlflow_uri, "--name", "s3sweep",
                                  "--num-samples", "3", "--grace-period", "3",
                                  "--finalists", "1", "--finalist-seeds", "1", *sets),
                            cwd=first, env=_env("s3"), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(t.reports for t in _trials(record)):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no report within 300 s"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate(timeout=60)[0]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(_env("s3")["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    assert f"record in {s3.replace('/runs?', '/runs/s3sweep?')}" in out, out
    shutil.rmtree(first)  # the driver's machine is gone: nothing is read from it

    done = subprocess.run(_tune(second, s3, mlflow_uri, "--name", "s3sweep", "--resume"),
                          cwd=second, env=_env("s3b"), capture_output=True, text=True,
                          timeout=400)
    shutil.rmtree(_env("s3b")["TUNE_SMPL_RAY_TMP"], ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    exported = subprocess.run([sys.executable, "-m", "tune_smpl", "export", "s3sweep",
                               "--storage-path", s3, "-o", "best.yaml"], cwd=third,
                              env=_env("s3c"), capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stdout + exported.stderr

    trials = _trials(record)
    assert len(trials) == 3 and all(t.finished for t in trials)
    top = max((t for t in trials if t.outcome in views.SCORED),
              key=lambda t: max(r["val_accuracy"] for r in t.reports))
    text = (third / "best.yaml").read_text()
    assert f"trial_id: {top.key}" in text and "endpoint_override=" in text  # checkpoint URI
    # The finalist stage (the best trial on one fresh seed) ran from the resumed driver,
    # its record in the bucket beside the trials'; with one finalist it is the winner.
    runs = record.finalists()
    assert [(r.finalist_of, r.outcome) for r in runs] == [(top.key, "completed")]
    assert record.meta()["finalists"]["status"] == "done"
    assert "best final val_accuracy at steps" in text
    parent, children = views.mlflow_runs(mlflow_uri, "s3sweep")
    assert sorted(views.search_children(children)) == [t.key for t in trials]
    assert {k: c.data.tags["trial_status"] for k, c in children.items()} == {
        t.key: t.outcome for t in trials + runs}
    assert parent.data.tags["best_trial_id"] == top.key and parent.info.status == "FINISHED"
    # The study's copy lives in the bucket too (optuna-dashboard can open a download).
    study_copy = tmp_path / "optuna.db"
    with record.storage.fs.open_input_stream(record.storage.path("s3sweep", "optuna.db")) as fh:
        study_copy.write_bytes(fh.read())
    import optuna

    study = optuna.load_study(study_name="s3sweep", storage=f"sqlite:///{study_copy}")
    assert [f"{t.number:04d}" for t in study.trials] == [t.key for t in trials]
    assert all(t.state.is_finished() for t in study.trials)


def _trials(record: SweepRecord):
    try:
        return record.trials()
    except (OSError, ValueError):  # the bucket listing raced a write
        return []


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
