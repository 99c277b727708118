"""The backfill and the end of a sweep's MLflow writes (tune_smpl/sweep/sync.py), on a
record written by hand (no Ray): `sync` fills an empty store in as the record says and a
second sync writes nothing; `finish` backfills when the writer fell behind, and names
`tune-smpl sync` when the store stays away or a second Ctrl-C hurries the close."""

from __future__ import annotations

import time
from dataclasses import asdict

from mlflow import MlflowClient

from mlflow_tracking import SweepRecorder
from smpl_core.config import SMPLConfig
from tests.tune_smpl import views
from tests.tune_smpl.conftest import free_port
from tune_smpl.sweep.record import SweepRecord, TrialRecord
from tune_smpl.sweep.settings import SweepSettings
from tune_smpl.sweep.storage import SweepStorage
from tune_smpl.sweep.sync import (
    COMPLETE,
    finish,
    mark_complete,
    mlflow_complete,
    result_of,
    sync,
    to_reconcile,
)
from tune_smpl.sweep.tracking import Tracking

# key -> (outcome, reports): val_accuracy at steps 10, 20, ...
TRIALS = {"0000": ("completed", [0.5, 0.6, 0.7, 0.65]), "0001": ("early_stopped", [0.4, 0.3]),
          "0002": ("diverged", [0.0])}


def _record(tmp_path, status: str = "finished") -> SweepRecord:
    settings = SweepSettings(name="hand", storage_path=str(tmp_path / "runs"), num_samples=3,
                             max_concurrent=2)
    base = SMPLConfig(steps=40, eval_every=10)
    record = SweepRecord(SweepStorage(settings.storage_path), "hand")
    record.create({"settings": asdict(settings), "base": base.to_dict(),
                   "tracking_uri": "sqlite:///nowhere.db", "status": status, "wall_s": 31.25,
                   "runs": 2, "metric": "val_accuracy", "mode": "max",
                   "sampler": {"sampler": "tpe", "sampler_seed": 0,
                               "sampler_startup_trials": 2}}, "lr: {}\n")
    for n, (key, (outcome, accs)) in enumerate(TRIALS.items()):
        reports = [{"step": 10 * (i + 1), "val_accuracy": a, "val_loss": 1 - a,
                    "reported_at": 1.7e9 + 10 * i, "ray_node_id": f"node{n}",
                    "time_this_iter_s": 1.5} for i, a in enumerate(accs)]
        record.save_trial(TrialRecord(
            key=key, number=n, params={"lr": 0.01 * (n + 1)}, distributions={},
            config={**base.to_dict(), "lr": 0.01 * (n + 1)}, outcome=outcome, reports=reports,
            started=True, restarts=n, ended_at=1.7e9 + 100))
    return record


def _points(uri: str) -> dict:
    client = MlflowClient(uri)
    _, children = views.mlflow_runs(uri, "hand")
    return {k: (c.data.tags["trial_status"], c.info.status, c.data.tags.get("restarts"),
                [(m.step, m.value) for m in client.get_metric_history(c.info.run_id,
                                                                      "val_accuracy")])
            for k, c in children.items()}


def _want() -> dict:
    status = {"completed": "FINISHED", "early_stopped": "FINISHED", "diverged": "FAILED"}
    return {k: (o, status[o], str(n) if n else None,
                [(10 * (i + 1), a) for i, a in enumerate(accs)])
            for n, (k, (o, accs)) in enumerate(TRIALS.items())}


def test_sync_fills_an_empty_store_as_the_record_says_and_then_writes_nothing(tmp_path):
    record = _record(tmp_path)
    uri = f"sqlite:///{tmp_path}/b.db"
    done = sync(record, uri, timeout_s=60)
    assert done.complete and done.writes > 0 and done.runs == 4
    assert _points(uri) == _want()
    parent, _ = views.mlflow_runs(uri, "hand")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_status"] == "finished"
    assert parent.data.tags["best_trial_id"] == "0000" and parent.data.tags["resumes"] == "1"
    figures = result_of(record).figures()
    assert {k: parent.data.metrics[k] for k in figures} == figures
    assert parent.data.metrics["best_val_accuracy"] == 0.7
    assert parent.data.params["num_samples"] == "3"
    assert sync(record, uri, timeout_s=60).writes == 0  # complete: nothing to write


def test_an_interrupted_sweep_syncs_its_unfinished_trial_as_interrupted(tmp_path):
    record = _record(tmp_path, status="interrupted")
    t = record.trials()[1]
    t.outcome, t.interrupted = None, True
    record.save_trial(t)
    uri = f"sqlite:///{tmp_path}/b.db"
    assert sync(record, uri, timeout_s=60).complete
    got = _points(uri)
    assert got["0001"][:2] == ("interrupted", "KILLED") and got["0001"][3] == _want()["0001"][3]
    parent, _ = views.mlflow_runs(uri, "hand")
    assert (parent.info.status, parent.data.tags["sweep_status"]) == ("KILLED", "interrupted")
    assert "best_trial_id" not in parent.data.tags


def test_finish_backfills_what_a_writer_behind_dropped(tmp_path):
    record = _record(tmp_path)
    uri = f"sqlite:///{tmp_path}/live.db"
    recorder = SweepRecorder(uri, "hand")
    recorder.start_sweep({"num_samples": 3}, "lr: {}\n")
    tracking = Tracking(recorder, "hand")
    tracking.open_trial(record.trials()[0])  # the only write that got through
    tracking.writer.behind = True  # as a full queue leaves it
    assert finish(tracking, record, "runs", hurried=lambda: False) is None
    assert _points(uri) == _want()
    assert not tracking.behind
    assert record.meta()[COMPLETE] == {"runs": 2, "uri": uri}  # complete at run 2's end


def test_finish_after_the_records_storage_failed_leaves_mlflow_unmarked(tmp_path):
    """A resumed sweep trusts the mark to open a trial the record lacks without a search
    (SweepRecorder.expect_runs); after the record's storage failed MLflow may hold a trial
    whose record write was lost, so the end that catches MLflow up does not mark it, and
    the next resume's mlflow_complete is False."""
    record = _record(tmp_path)
    uri = f"sqlite:///{tmp_path}/live.db"
    recorder = SweepRecorder(uri, "hand")
    recorder.start_sweep({"num_samples": 3}, "lr: {}\n")
    tracking = Tracking(recorder, "hand")
    tracking.open_trial(record.trials()[0])
    assert finish(tracking, record, "runs", hurried=lambda: False, mark=False) is None
    assert COMPLETE not in record.meta() and not mlflow_complete(record.meta(), uri)


def test_a_resume_reconciles_every_trial_unless_mlflow_was_complete_at_the_last_end(tmp_path):
    """Issue 26: the resume's backfill of a 1,000-trial sweep read every run back. After a
    command that ended with this store complete (finish marks it) only what it left open
    is reconciled; with no mark (a killed driver, a store behind), another store, or a later
    command run that never ended, every trial is."""
    record = _record(tmp_path)
    trials = record.trials()
    trials[1].outcome = None  # left unfinished by the last command
    meta, uri = record.meta(), "sqlite:///a.db"
    every = [t.key for t in trials]
    assert [t.key for t in to_reconcile(meta, uri, trials, [])] == every  # never marked
    mark_complete(record, uri)
    meta = record.meta()
    assert [t.key for t in to_reconcile(meta, uri, trials, [])] == ["0001"]
    assert [t.key for t in to_reconcile(meta, uri, trials, [trials[2]])] == ["0001", "0002"]
    assert [t.key for t in to_reconcile(meta, "sqlite:///b.db", trials, [])] == every
    meta["runs"] += 1  # a command run since, killed before its end
    assert [t.key for t in to_reconcile(meta, uri, trials, [])] == every


def test_finish_backfills_after_a_catch_up_that_ran_past_its_timeout(tmp_path):
    """The end's wait goes on while the writes go through (a server back near the end);
    the backfill after it still gets a wait of its own, not the time left (none)."""
    record = _record(tmp_path)
    uri = f"sqlite:///{tmp_path}/live.db"
    recorder = SweepRecorder(uri, "hand")
    recorder.start_sweep({"num_samples": 3}, "lr: {}\n")
    tracking = Tracking(recorder, "hand")
    for _ in range(30):  # 1.5 s of writes that go through, past the 0.5 s timeout
        tracking.writer.put(time.sleep, 0.05)
    tracking.writer.behind = True  # and one was dropped: the backfill's
    t0 = time.monotonic()
    assert finish(tracking, record, "runs", hurried=lambda: False, timeout_s=0.5) is None
    assert time.monotonic() - t0 > 1.4
    assert _points(uri) == _want()
    assert not tracking.behind


def test_finish_names_sync_when_the_store_stays_away_or_the_close_is_hurried(tmp_path):
    record = _record(tmp_path)
    for hurried in (False, True):
        recorder = SweepRecorder(f"http://127.0.0.1:{free_port()}", "hand")
        recorder.parent_run_id = "p"  # started before the server went away
        tracking = Tracking(recorder, "hand")
        tracking.trial_ended("0000", "completed")  # stuck: no answer
        t0 = time.monotonic()
        line = finish(tracking, record, "/data/my runs", hurried=lambda h=hurried: h,
                      timeout_s=1.0)
        took = time.monotonic() - t0
        assert "`tune-smpl sync hand --storage-path '/data/my runs'`" in line
        assert "(or --resume) fills it in from the record" in line
        if hurried:
            assert took < 0.5 and "not waited for (Ctrl-C twice; 1 writes left)" in line
        else:
            assert 0.9 < took < 5 and "is behind the record (1 writes left after 1 s)" in line
        assert tracking.writer._quit.is_set()  # nothing more is written
