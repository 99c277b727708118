"""The record's writer thread (tune_smpl/sweep/record_writer.py), against a storage whose
failures the test controls: the newest content per file, the order of the latest changes,
retries while the storage fails, the stop request once it stays away past the bound, a
write that never returns, and nothing counted as written that was not."""

from __future__ import annotations

import errno
import json
import threading
import time

import pytest

from smpl_core.errors import ConfigError
from tune_smpl.sweep import record_writer
from tune_smpl.sweep.record import SweepRecord, TrialRecord
from tune_smpl.sweep.storage import SweepStorage

URI = "s3://bucket/runs/x?endpoint_override=127.0.0.1:1"


class Storage:
    """A storage: `files` what it holds, `log` the writes it took, `fail` the error it
    raises while set, `gate` a write waits on (a slow or hung storage)."""

    def __init__(self):
        self.files: dict[tuple, str] = {}
        self.log: list[tuple] = []
        self.fail: OSError | None = None
        self.tries = 0
        self.gate = threading.Event()
        self.gate.set()

    def write(self, text: str, *parts: str) -> None:
        self.tries += 1
        self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.files[parts] = text
        self.log.append((parts, text))


def _writer(storage, bound_s=5.0):
    said, stops = [], []
    w = record_writer.RecordWriter(storage.write, URI, bound_s=bound_s, say=said.append,
                       request_stop=stops.append, first_wait_s=0.01, max_wait_s=0.05)
    return w, said, stops


def _until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_newest_content_per_file_in_the_order_of_the_latest_changes():
    s = Storage()
    s.gate.clear()  # the first write is under way and slow
    w, said, stops = _writer(s)
    w.put("a1", "x", "a")
    _until(lambda: s.tries == 1)
    w.put("b1", "x", "b")
    w.put("c1", "x", "c")
    w.put("a2", "x", "a")  # a changed again: behind b and c now
    w.put("b2", "x", "b")  # and b behind a
    assert w.pending == 3  # a (a2 newer than the one under way), b, c: none written yet
    s.gate.set()
    assert w.flush()
    assert [t for _, t in s.log] == ["a1", "c1", "a2", "b2"]  # b1 was superseded
    assert s.files == {("x", "a"): "a2", ("x", "b"): "b2", ("x", "c"): "c1"}
    assert w.pending == 0 and w.written == 4 and said == [] and stops == []
    assert w.close() and w.failure() is None


def test_a_storage_away_for_less_than_the_bound_catches_up():
    s = Storage()
    w, said, stops = _writer(s, bound_s=5.0)
    s.fail = OSError(errno.ENOSPC, "No space left on device")
    w.put("t1", "x", "trial_0000", "trial.json")
    _until(lambda: s.tries >= 3)  # retried, with back-off
    assert w.failing and w.pending == 1  # not written, and not said to be
    w.put("t2", "x", "trial_0000", "trial.json")  # the sweep goes on meanwhile
    w.put("m1", "x", "sweep.json")
    s.fail = None
    assert w.flush() and not w.failing
    assert s.files == {("x", "trial_0000", "trial.json"): "t2", ("x", "sweep.json"): "m1"}
    assert stops == [] and len(said) == 2, said
    assert said[0].startswith(f"tune-smpl: the record's storage {URI} does not take writes "
                              "since ")
    assert "(OSError: [Errno 28] No space left on device); the sweep goes on and retries " \
           "for up to 5 s" in said[0]
    assert said[1].startswith(f"tune-smpl: the record's storage {URI} takes writes again")
    assert said[1].endswith("the record has caught up")
    assert w.close() and w.failure() is None


def test_a_storage_away_past_the_bound_stops_the_sweep_once():
    s = Storage()
    w, said, stops = _writer(s, bound_s=0.3)
    s.fail = PermissionError(errno.EACCES, "Permission denied")
    t0 = time.monotonic()
    w.put("t1", "x", "trial_0001", "trial.json")
    _until(lambda: stops)
    assert time.monotonic() - t0 >= 0.3
    assert stops == [f"storage {URI}: PermissionError: [Errno 13] Permission denied"]
    assert w.failed and w.failing
    t1 = time.monotonic()
    assert not w.flush(last_try_s=0.2)  # gave up after its last tries
    assert 0.15 <= time.monotonic() - t1 < 2.0
    w.put("t2", "x", "trial_0001", "trial.json")
    f = w.failure()
    assert (f.uri, f.error, f.unwritten) == (URI, "PermissionError: [Errno 13] Permission "
                                             "denied", 1)
    assert f.seconds >= 0.3 and stops == [stops[0]]  # asked once
    s.fail = None  # back before the end: the last writes land, the failure stays said
    assert w.close()
    assert s.files == {("x", "trial_0001", "trial.json"): "t2"}
    assert w.failure().unwritten == 0 and w.failure().seconds >= 0.3


def test_a_write_that_never_returns_counts_as_failed_at_the_bound():
    s = Storage()
    s.gate.clear()  # hangs (a storage that accepts and never answers)
    w, said, stops = _writer(s, bound_s=0.2)
    w.put("t1", "x", "a")
    assert not w.flush(last_try_s=0.05)
    assert w.failed and stops == [f"storage {URI}: a write did not return within 0.2 s"]
    assert w.pending == 1
    s.gate.set()
    assert w.close()


def test_give_up_ends_a_flush_at_once():
    s = Storage()
    s.fail = OSError(errno.EROFS, "Read-only file system")
    w, _, _ = _writer(s, bound_s=60)
    w.put("t1", "x", "a")
    t0 = time.monotonic()
    assert not w.flush(give_up=lambda: True)
    assert time.monotonic() - t0 < 1.0
    s.fail = None
    assert w.close()


def test_retry_bound_from_the_environment(monkeypatch):
    monkeypatch.delenv(record_writer.RETRY_ENV, raising=False)
    assert record_writer.retry_s() == 120.0
    monkeypatch.setenv(record_writer.RETRY_ENV, "4.5")
    assert record_writer.retry_s() == 4.5
    for bad in ("0", "-3", "soon"):
        monkeypatch.setenv(record_writer.RETRY_ENV, bad)
        env = record_writer.RETRY_ENV
        with pytest.raises(ConfigError, match=rf"^`{env}` must be a number of "
                                              rf"seconds > 0, but got {env}='{bad}'"):
            record_writer.retry_s()


def test_a_trial_error_that_came_through_the_storage():
    upload = ("ray::ImplicitFunc.train() (pid=9)\n  File \"/x/ray/train/_internal/storage.py\""
              ", line 568, in persist_current_checkpoint\n    _pyarrow_fs_copy_files(\n"
              "OSError: [Errno 28] No space left on device")
    own = ("ray::ImplicitFunc.train() (pid=9)\n  File \"/x/smpl_core/loop.py\", line 3\n"
           "OSError: [Errno 2] No such file or directory: 'data/cifar'")
    assert record_writer.storage_error(upload)
    assert not record_writer.storage_error(own) and not record_writer.storage_error(None)


def test_the_record_goes_through_its_writer_while_a_sweep_runs(tmp_path):
    storage = SweepStorage(str(tmp_path))
    record = SweepRecord(storage, "s")
    t = TrialRecord(key="0000", number=0, params={"lr": 0.1}, distributions={}, config={})
    record.save_trial(t)  # no writer: written at once
    assert json.loads((tmp_path / "s" / "trial_0000" / "trial.json").read_text())["key"] == "0000"
    s = Storage()
    s.gate.clear()
    record.writer, _, _ = _writer(s)
    t.outcome = "completed"
    record.save_trial(t)
    t.outcome = "errored"  # what was saved is the content at the call, not a live object
    _until(lambda: s.tries == 1)
    assert record.failing is False and record.writer.pending == 1
    s.gate.set()
    assert record.flush()
    written = json.loads(s.files[("s", "trial_0000", "trial.json")])
    assert written["outcome"] == "completed" and written == {**t.to_dict(),
                                                             "outcome": "completed"}
    assert record.writer.close()


def test_the_commands_storage_line_for_each_case():
    from types import SimpleNamespace

    from tune_smpl.sweep.summary import storage_line

    settings = SimpleNamespace(name="s", storage_path="s3://b/runs?x=1")
    resume = "tune-smpl tune --name s --storage-path 's3://b/runs?x=1' --resume"
    err = "OSError: [Errno 28] No space left on device"

    def line(**kw):
        f = record_writer.StorageFailure(**{"uri": URI, "error": err, "seconds": 120.4, **kw})
        return storage_line(SimpleNamespace(storage_failure=f), settings)

    assert line() == (f"tune-smpl: the record's storage {URI} failed for 120 s ({err}); the "
                      f"sweep stopped as interrupted; run the same command with --resume "
                      f"when it is back: {resume}")
    assert "; the sweep stopped as interrupted; the record lacks the last 3 write(s) " \
           "(--resume re-runs what it lacks); run the same" in line(unwritten=3)
    assert line(seconds=0.0, trials=("0002", "0004")) == (
        f"tune-smpl: the record's storage {URI} failed under trial 0002, 0004 ({err}); left "
        f"unfinished, the sweep ended as interrupted; run the same command with --resume "
        f"when it is back: {resume}")


def test_the_interrupted_summary_says_what_the_record_lacks(capsys):
    from types import SimpleNamespace

    from tune_smpl.sweep.summary import print_interrupted

    t = TrialRecord(key="0001", number=1, params={}, distributions={}, config={})
    settings = SimpleNamespace(name="s", storage_path="runs")
    for unwritten, said in ((0, "its record is saved."),
                            (2, "its record lacks its last 2 write(s), left by the hurried "
                                "close (--resume re-runs what it lacks).")):
        print_interrupted(SimpleNamespace(left=[t], trials=[t], finalist_runs=[],
                                          unwritten=unwritten, ray_log=None), settings)
        out = capsys.readouterr().out
        assert f"sweep s interrupted: 1 trial(s) unfinished (0001); {said} Resume with:" in out


def test_a_bad_retry_bound_stops_the_command_before_ray_starts(tmp_path, monkeypatch, capsys):
    from tune_smpl.cli import main

    monkeypatch.setenv(record_writer.RETRY_ENV, "never")
    rc = main(["tune", "--name", "bad", "--storage-path", str(tmp_path / "runs"),
               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"tune-smpl: error: `{record_writer.RETRY_ENV}` must be a number of "
                               f"seconds > 0, but got {record_writer.RETRY_ENV}='never'."]
    assert not (tmp_path / "runs" / "bad").exists()
