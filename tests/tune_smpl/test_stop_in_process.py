"""A stop taken in a Ray that outlives the sweep (a notebook's kernel, a test module): the
interrupted sweep's trial actors end with it, so the next sweep on the same Ray gets their
CPUs. `STOP.check` used to raise KeyboardInterrupt, which Ray Tune's loop does not clean up
after (`tune.run` ends its actors on an `Exception` only): the actors stayed, blocked in
`tune.report`, holding both CPUs, and a `--resume` in the same Ray waited for ever."""

from __future__ import annotations

import signal
import threading
import time

from tests.tune_smpl import views
from tests.tune_smpl.conftest import small_sets
from tune_smpl.cli import main
from tune_smpl.sweep.stop import STOP


def _tune(root, name, *args):
    return ["tune", "--name", name, "--storage-path", str(root / "runs"), "--tracking-uri",
            f"sqlite:///{root}/mlflow.db", "--gpus-per-trial", "0", "--sampler", "random",
            *args, *small_sets("steps=80", "device=cpu")]


def _free_cpus(ray) -> float:
    return ray.available_resources().get("CPU", 0.0)


def test_a_stop_ends_the_trials_actors_and_resume_runs_in_the_same_ray(ray_local, tmp_path,
                                                                        capsys):
    sweep, uri = tmp_path / "runs" / "stop", f"sqlite:///{tmp_path}/mlflow.db"
    total = ray_local.cluster_resources()["CPU"]

    def request():  # as a Ctrl-C does (the handler only counts it), at the first report
        deadline = time.monotonic() + 300
        while views.report_count(sweep) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        STOP.request("Ctrl-C")

    threading.Thread(target=request, daemon=True).start()
    args = _tune(tmp_path, "stop", "--num-samples", "3", "--max-concurrent", "2",
                 "--grace-period", "8")
    assert main(args) == 130, capsys.readouterr().out
    before = views.check_interrupted(sweep, uri)
    deadline = time.monotonic() + 20  # the actors' stop: at most Ray's 5 s, then killed
    while _free_cpus(ray_local) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _free_cpus(ray_local) == total, ray_local.available_resources()

    capsys.readouterr()
    assert main(_tune(tmp_path, "stop", "--resume")) == 0
    after = views.check_finished(sweep, uri, trials=3, summary=capsys.readouterr().out)
    views.history_kept(before, after)


def test_a_ctrl_c_after_the_last_step_of_rays_loop_finds_nothing_to_stop(
        ray_local, tmp_path, capsys, monkeypatch):
    """A Ctrl-C while `fit` closes (every trial ended, Ray's loop past its last step, the
    last safe point): nothing is left to stop, the sweep finishes and exits 0, and every
    view says finished (chaos --quick seed 7 round 4 found this instant)."""
    from tune_smpl.sweep.callbacks import LedgerCallback

    def ctrl_c(self, trials, **info):  # the handler itself, as the signal runs it
        STOP.sigint(signal.SIGINT, None)

    monkeypatch.setattr(LedgerCallback, "on_experiment_end", ctrl_c, raising=False)
    sweep, uri = tmp_path / "runs" / "late", f"sqlite:///{tmp_path}/mlflow.db"
    assert main(_tune(tmp_path, "late", "--num-samples", "2", "--max-concurrent", "2")) == 0
    out = capsys.readouterr()
    assert "Ctrl-C: stopping at the next safe point" in out.err
    views.check_finished(sweep, uri, trials=2, summary=out.out)
