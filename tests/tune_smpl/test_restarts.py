"""A restarted trial's one line, from synthetic Ray errors (no cluster): the cause Ray's
error gives (or the cluster's view of the trial's node, once it has one), where it runs
again, the record's entry, the summary's count; and Ray's driver-side messages routed into
a log file instead of onto the terminal."""

from __future__ import annotations

import logging
import threading

import pytest
from ray import exceptions as rx

from tune_smpl.sweep import restarts
from tune_smpl.sweep.record import TrialRecord

OLD, NEW = "a" * 56, "b" * 56  # node ids: where the trial ran, where it runs again
UNAVAILABLE = rx.ActorUnavailableError(
    "The actor is temporarily unavailable: RpcError: RPC error: Socket closed rpc_code: 14",
    b"\x01" * 16)
WORKER_DIED = ("The actor died unexpectedly before finishing this task.\n\tclass_name: "
               "ImplicitFunc\n\tpid: 4242\nThe actor is dead because its worker process has "
               "died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly "
               "exits with a connection error code 2. End of file.")
NODE_TEXT = ("The actor died unexpectedly before finishing this task.\n\tclass_name: "
             "ImplicitFunc\nThe actor died because its node has died. Node Id: " + OLD)


def _task_error() -> rx.RayTaskError:
    tb = ("Traceback (most recent call last):\n  File \"train.py\", line 3, in train\n"
          "    raise ValueError('lr must be finite')\nValueError: lr must be finite")
    return rx.RayTaskError("train", tb, ValueError("lr must be finite"), proctitle="ray::t",
                           pid=7, ip="127.0.0.1")


def _file(*errors: str) -> str:
    """Ray's error file of a trial: one `Failure # N` block per failure, appended."""
    return "".join(f"Failure # {i} (occurred at 2026-12-02_10-00-0{i})\n{e}\n"
                   for i, e in enumerate(errors, 1))


class Cluster:
    """The cluster's node table as `ray.nodes()` would give it, changed by the test."""

    def __init__(self):
        self.alive = {OLD: True, NEW: True}

    def __call__(self, probe):
        # only the nodes of pending restarts are probed (every node for one without a node)
        assert probe <= {OLD, NEW, restarts.ALL_NODES}, probe
        return dict(self.alive)


def _notices(cluster, window_s=1000.0):
    said, saved = [], []
    return restarts.RestartNotices(saved.append, said.append, cluster, window_s), said, saved


def test_error_file_gives_its_newest_failure_and_its_own_line():
    text = _file("RuntimeError: first", str(UNAVAILABLE))
    assert restarts.last_failure(text) == str(UNAVAILABLE)
    assert restarts.error_line(str(_task_error())) == "ValueError: lr must be finite"
    assert restarts.error_line("one\ntwo") == "one" and restarts.error_line("") == "unknown error"


@pytest.mark.parametrize(("error", "text", "alive", "cause"), [
    (rx.NodeDiedError("node 10.0.0.3 died"), "", None, restarts.NODE_DIED),
    (rx.LocalRayletDiedError(), "", True, restarts.NODE_DIED),
    (None, NODE_TEXT, True, restarts.NODE_DIED),  # no pickled error: its text says so
    (UNAVAILABLE, "", False, restarts.NODE_DIED),  # after a node loss
    (UNAVAILABLE, "", None, None),  # the cluster has not ruled on the node yet
    (UNAVAILABLE, "", True, restarts.PROCESS_DIED),
    (rx.ActorDiedError(), WORKER_DIED, True, restarts.PROCESS_DIED),
    (rx.RayActorError(), "", True, restarts.PROCESS_DIED),
    (rx.WorkerCrashedError(), "", True, restarts.PROCESS_DIED),
    (_task_error(), "", True, "ValueError: lr must be finite"),
    (None, "ray::ImplicitFunc.train()\nTraceback (most recent call last):\nOSError: disk", None,
     "OSError: disk"),
])
def test_the_cause_from_rays_error(error, text, alive, cause):
    assert restarts.classify(error, text, alive) == cause


def test_a_lost_node_is_said_at_once_when_its_raylet_is_gone():
    cluster = Cluster()
    cluster.alive[OLD] = False  # the control store still lists it; its raylet refuses
    notices, said, saved = _notices(cluster)
    entry = {"step": 300, "cause": None}
    notices.add("0003", entry, UNAVAILABLE, _file(str(UNAVAILABLE)), OLD)
    assert said == ["trial 0003 restarted from step 300 on another node: its node died"]
    assert entry == {"step": 300, "cause": "node died", "where": "on another node"}
    assert saved == ["0003"] and notices.pending == []
    notices.poll(force=True)
    assert len(said) == 1  # once


def test_a_node_that_does_not_answer_waits_for_the_cluster():
    cluster = Cluster()
    cluster.alive[OLD] = None  # cut off: neither alive nor dead yet
    notices, said, _ = _notices(cluster)
    entry = {"step": 120}
    notices.add("0007", entry, UNAVAILABLE, "", OLD)
    notices.reported("0007", NEW)  # restarted elsewhere before the node was ruled on
    notices.poll(force=True)
    assert said == [] and "cause" not in entry
    cluster.alive[OLD] = False  # its health checks failed: marked dead
    notices.poll(force=True)
    assert said == ["trial 0007 restarted from step 120 on another node: its node died"]


def test_a_node_gone_from_the_table_counts_as_dead():
    cluster = Cluster()
    notices, said, _ = _notices(cluster)
    del cluster.alive[OLD]
    notices.add("0001", {"step": 40}, UNAVAILABLE, "", OLD)
    assert said == ["trial 0001 restarted from step 40 on another node: its node died"]


def test_a_killed_process_on_a_live_node():
    cluster = Cluster()
    notices, said, _ = _notices(cluster)
    entry = {"step": 20}
    notices.add("0000", entry, rx.ActorDiedError(), _file(WORKER_DIED), OLD)
    # Where it runs again is not known yet: no node named.
    assert said == ["trial 0000 restarted from step 20: its process died"]
    assert entry == {"step": 20, "cause": "process died"}


def test_an_unanswering_node_it_runs_on_again_was_alive():
    cluster = Cluster()
    cluster.alive[OLD] = None
    notices, said, _ = _notices(cluster)
    notices.add("0008", {"step": 20}, rx.RayActorError(), "", OLD)
    notices.reported("0008", OLD)
    notices.poll(force=True)
    assert said == ["trial 0008 restarted from step 20 on the same node: its process died"]


def test_after_the_window_an_unanswering_node_counts_as_alive():
    cluster = Cluster()
    cluster.alive[OLD] = None
    notices, said, _ = _notices(cluster, window_s=0.0)
    notices.pending.append(restarts._Pending("0002", {"step": 60}, UNAVAILABLE, "", OLD,
                                      new_node=NEW))
    notices.poll(force=True)
    assert said == ["trial 0002 restarted from step 60 on another node: its process died"]


def test_own_error_at_once_and_the_end_of_a_stage_says_the_rest():
    cluster = Cluster()
    notices, said, _ = _notices(cluster)
    notices.add("0004", {"step": 0}, _task_error(), str(_task_error()), OLD)
    assert said == ["trial 0004 restarted from step 0: ValueError: lr must be finite"]
    cluster.alive[OLD] = None
    notices.add("0005", {"step": 80}, UNAVAILABLE, "", OLD)
    assert len(said) == 1
    notices.poll(final=True)  # the stage ended before the cluster ruled: what is known
    assert said[-1] == "trial 0005 restarted from step 80: its process died"


def test_a_trial_killed_before_its_first_report_with_its_node():
    """No report, so no node of its own (chaos kill_node as a trial started on the node):
    a node trials reported from just before, dead now, is where it ran."""
    cluster = Cluster()
    notices, said, saved = _notices(cluster)
    notices.reported("0000", OLD)  # the trial that ran on OLD before it
    cluster.alive[OLD] = False  # its raylet refuses
    entry = {"step": 0}
    notices.add("0003", entry, UNAVAILABLE, _file(str(UNAVAILABLE)), None)
    assert said == ["trial 0003 restarted from step 0 on another node: its node died"]
    assert entry["cause"] == "node died" and saved == ["0003"]


def test_a_trial_killed_before_its_first_report_on_a_live_cluster():
    cluster = Cluster()
    notices, said, _ = _notices(cluster)
    notices.reported("0000", OLD)
    notices.add("0004", {"step": 0}, UNAVAILABLE, "", None)
    assert said == ["trial 0004 restarted from step 0: its process died"]  # every node answers


def test_a_node_dead_long_before_is_not_where_a_new_trial_ran():
    cluster = Cluster()
    notices, said, _ = _notices(cluster, window_s=30.0)
    notices.reported("0000", OLD)
    notices.seen[OLD] -= 100.0  # its last report: long before this failure
    cluster.alive[OLD] = False
    notices.add("0005", {"step": 0}, UNAVAILABLE, "", None)
    assert said == ["trial 0005 restarted from step 0: its process died"]


def test_a_trial_without_a_node_waits_while_a_node_does_not_answer():
    cluster = Cluster()
    cluster.alive[NEW] = None  # cut off or busy: the trial may have run there
    notices, said, _ = _notices(cluster)
    notices.reported("0000", NEW)
    notices.add("0006", {"step": 0}, UNAVAILABLE, "", None)
    assert said == []
    cluster.alive[NEW] = False  # marked dead
    notices.poll(force=True)
    assert said == ["trial 0006 restarted from step 0 on another node: its node died"]


def test_a_cluster_that_does_not_answer_is_no_error():
    def broken(probe):
        raise ConnectionError("gcs down")
    notices, said, _ = _notices(broken)
    notices.add("0006", {"step": 10}, UNAVAILABLE, "", OLD)
    notices.poll(final=True)
    assert said == ["trial 0006 restarted from step 10: its process died"]


def _trial(key, *causes, restarts=None):
    t = TrialRecord(key=key, number=int(key), params={}, distributions={}, config={})
    t.restart_log = [{"cause": c} for c in causes]
    t.restarts = len(causes) if restarts is None else restarts
    return t


def test_the_summary_counts_restarts_with_their_causes():
    trials = [_trial("0003", "node died"), _trial("0004"),
              _trial("0005", "process died", "node died"), _trial("0006", restarts=1)]
    assert restarts.restarts_phrase(trials) == (
        "4 restarts (trial 0003: node died; trial 0005: process died, node died; "
        "trial 0006: unknown)")
    assert restarts.restarts_phrase([_trial("0001", "node died")]) == (
        "1 restart (trial 0001: node died)")
    assert restarts.restarts_phrase([_trial("0001")]) is None


def test_record_round_trips_the_restart_log():
    t = _trial("0003", "node died")
    assert TrialRecord.from_dict(t.to_dict()).restart_log == [{"cause": "node died"}]


def test_rays_driver_messages_go_to_the_log_file(tmp_path, capsys):
    path = tmp_path / "sweep" / restarts.LOG_NAME
    tune_log = logging.getLogger("ray.tune.execution.tune_controller")
    restarts.route_ray_messages(path)
    try:
        raise rx.ActorUnavailableError("Socket closed", b"\x02" * 16)
    except rx.RayActorError as e:
        tune_log.error("Trial task failed for trial trial_0003", exc_info=e)
    logging.getLogger("ray.train").warning("Last sync command failed:\nTraceback ...")
    tune_log.warning("one line a user should see")
    _listener("x")
    print("our own line")
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out and "ActorUnavailableError" not in err + out
    assert "marked dead" not in out and "our own line" in out
    assert err.strip() == "WARNING ray.tune.execution.tune_controller: one line a user should see"
    text = path.read_text()
    assert "Trial task failed for trial trial_0003" in text
    assert "ray.exceptions.ActorUnavailableError" in text and "Last sync command" in text
    assert "(raylet) The node with node id: x has been marked dead" in text
    # A second sweep in the process: its own log; the handlers are not doubled.
    other = tmp_path / "other" / restarts.LOG_NAME
    restarts.route_ray_messages(other)
    tune_log.error("second", exc_info=ValueError("v"))
    assert "second" in other.read_text() and "second" not in path.read_text()
    ours = [h for h in logging.getLogger("ray.tune").handlers if h in restarts._HANDLERS]
    assert len(ours) == 2  # not doubled by the second sweep
    assert not logging.getLogger("ray.tune").propagate


def _listener(node: str) -> None:
    """Ray's error listener thread prints a dead node's notice to stdout."""
    def listener():
        print(f"\x1b[33m(raylet)\x1b[0m The node with node id: {node} has been marked dead")
    t = threading.Thread(target=listener, name=restarts.RAY_PRINTERS[0])
    t.start()
    t.join()


def test_alive_nodes_asks_a_listed_nodes_raylet(monkeypatch):
    import socket

    import ray

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    gone = closed.getsockname()[1]
    closed.close()  # nothing listens there now: a refused connection, as a killed raylet
    table = [{"NodeID": "up", "Alive": True, "NodeManagerAddress": "127.0.0.1",
              "NodeManagerPort": listening.getsockname()[1]},
             {"NodeID": "killed", "Alive": True, "NodeManagerAddress": "127.0.0.1",
              "NodeManagerPort": gone},
             {"NodeID": "dead", "Alive": False, "NodeManagerAddress": "127.0.0.1",
              "NodeManagerPort": gone},
             {"NodeID": "unprobed", "Alive": True, "NodeManagerAddress": "127.0.0.1",
              "NodeManagerPort": gone}]
    monkeypatch.setattr(ray, "nodes", lambda: table)
    try:
        got = restarts.alive_nodes({"up", "killed", "dead"})
    finally:
        listening.close()
    assert got == {"up": True, "killed": False, "dead": False, "unprobed": True}
