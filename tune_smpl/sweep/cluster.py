"""Start or join Ray, and check that the sweep's resource asks and storage can ever work."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from smpl_core.errors import ConfigError
from smpl_core.uri import is_uri
from tune_smpl.sweep.storage import open_root

CONNECT_TIMEOUT_S = float(os.environ.get("TUNE_SMPL_CONNECT_TIMEOUT_S", "30"))
# The storage probe talks to S3/GCS/HDFS, whose clients retry for minutes by default.
STORAGE_TIMEOUT_S = float(os.environ.get("TUNE_SMPL_STORAGE_TIMEOUT_S", "30"))
# Datasets that read `data_dir`; the others (moons, digits) ignore it.
_READS_DATA_DIR = {"cifar10", "folder", "parquet"}


@dataclass
class ClusterInfo:
    address: str  # "local" when this command started Ray itself
    nodes: int
    cpus: float
    gpus: float
    max_node_gpus: float  # the most GPUs on any one node: a trial cannot span nodes
    max_node_cpus: float
    started_here: bool

    def describe(self) -> str:
        where = ("local Ray (started here)" if self.started_here
                 else f"Ray cluster at {self.address}")
        return (f"{where}: {self.nodes} node{'s' * (self.nodes != 1)}, {self.cpus:g} CPUs, "
                f"{self.gpus:g} GPUs")


def _wait_for(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"`--address` must be host:port or auto, but got --address={address!r}.")
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=2.0):
                return
        except OSError as e:
            last = e
            time.sleep(0.5)
    raise ConfigError(f"`--address` must be a running Ray cluster, but --address={address!r} did "
                      f"not answer within {timeout:.0f} s ({last}).")


def ray_temp_dir() -> str:
    """The root of a Ray this command starts (Ray adds `ray/` below it): outside the
    repository, and short, since Ray's socket paths must fit in 107 bytes. Ours
    (TUNE_SMPL_RAY_TMP), else Ray's own setting (RAY_TMPDIR), else <tmp>/ray_smpl."""
    return (os.environ.get("TUNE_SMPL_RAY_TMP") or os.environ.get("RAY_TMPDIR")
            or os.path.join(tempfile.gettempdir(), "ray_smpl"))


def connect(address: str | None, num_cpus: int | None = None,
            num_gpus: int | None = None) -> ClusterInfo:
    """Join `address` (or RAY_ADDRESS), else start Ray on this machine quietly."""
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray's per-trial result.json, progress.csv and TensorBoard files on the driver: the
    # record has every report, and Ray uploads its whole driver folder at each trial
    # checkpoint (CheckpointConfig.num_to_keep forces it), so these files made each report
    # cost a copy of every trial's files so far (issue 26: 0.85 s of driver CPU a trial at
    # trial 300). TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 brings them back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Ray's experiment state (every trial's state and last result, 41 MB at trial 1,000)
    # is saved every 10 s by default, a cost that grows with the trials (about 35 ms of
    # driver CPU a trial at trial 1,000, issue 26); saved every 300 s, each save still
    # held Ray's loop while it wrote (the likely cause of a 1.65 s gap between trials 298 s
    # into a 1,000-trial sweep). Nothing reads it: `--resume` starts from the record, not
    # from Tuner.restore. So Ray saves it only at the sweep's end (its forced save).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "inf")
    # Ray's newer console output prints its own headers even at verbose=0; the progress
    # line of tune_smpl.progress replaces it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
    started_here = False
    if ray.is_initialized():  # a test or a notebook already connected us
        pass
    elif address:
        if address != "auto" and not address.startswith("ray://"):
            _wait_for(address, CONNECT_TIMEOUT_S)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            raise ConfigError(f"`--address` must be a running Ray cluster, but connecting to "
                              f"--address={address!r} failed: {str(e).splitlines()[0]}") from None
    else:
        # Only for the Ray this command starts (no cluster, no tokens): joining a cluster
        # (`--address`) keeps the caller's RAY_AUTH_MODE, which token auth needs.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ["RAY_TMPDIR"] = ray_temp_dir()  # Ray's public knob for its temp root
        os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)
        ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus,
                 include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        started_here = True
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return ClusterInfo(
        address=address or "local", nodes=len(nodes),
        cpus=sum(n["Resources"].get("CPU", 0) for n in nodes),
        gpus=sum(n["Resources"].get("GPU", 0) for n in nodes),
        max_node_gpus=max((n["Resources"].get("GPU", 0) for n in nodes), default=0),
        max_node_cpus=max((n["Resources"].get("CPU", 0) for n in nodes), default=0),
        started_here=started_here)


def check_resources(info: ClusterInfo, gpus_per_trial: float, cpus_per_trial: float) -> None:
    """Refuse asks no node can meet: Ray would leave those trials PENDING forever."""
    if gpus_per_trial < 0 or cpus_per_trial <= 0:
        bad = ("--gpus-per-trial", gpus_per_trial) if gpus_per_trial < 0 else (
            "--cpus-per-trial", cpus_per_trial)
        raise ConfigError(f"`{bad[0]}` must be {'>= 0' if bad[0][2] == 'g' else '> 0'}, "
                          f"but got {bad[0]}={bad[1]}.")
    if gpus_per_trial > 0 and info.gpus == 0:
        raise ConfigError(f"`--gpus-per-trial` must be 0 on a cluster without GPUs, but got "
                          f"--gpus-per-trial={gpus_per_trial:g} ({info.describe()}).")
    if gpus_per_trial > info.max_node_gpus:
        raise ConfigError(f"`--gpus-per-trial` must be at most {info.max_node_gpus:g} (the most "
                          f"GPUs on one node), but got --gpus-per-trial={gpus_per_trial:g}.")
    if cpus_per_trial > info.max_node_cpus:
        raise ConfigError(f"`--cpus-per-trial` must be at most {info.max_node_cpus:g} (the most "
                          f"CPUs on one node), but got --cpus-per-trial={cpus_per_trial:g}.")
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise ConfigError(f"`--gpus-per-trial` must be a whole number above 1, but got "
                          f"--gpus-per-trial={gpus_per_trial:g}.")


def default_gpus_per_trial(info: ClusterInfo) -> float:
    """0.25 where the cluster has GPUs (four small trials share one), else 0."""
    return 0.25 if info.gpus > 0 else 0.0


def trial_slots(info: ClusterInfo, gpus_per_trial: float, cpus_per_trial: float) -> int:
    """How many trials the cluster holds at once. Used as max_concurrent_trials by default:
    with a searcher, Ray otherwise keeps one trial pending at a time, so a GPU shared by four
    trials fills one slow actor start after another."""
    slots = int(info.cpus // cpus_per_trial) if cpus_per_trial > 0 else 1
    if gpus_per_trial > 0:
        slots = min(slots, int(round(info.gpus / gpus_per_trial, 6)))
    return max(1, slots)


def storage_path(path: str) -> str:
    """The `--storage-path` Ray gets: an absolute local path, or a URI pyarrow.fs opened and
    wrote to. A `file://` URI becomes the local path it names, so that the sweep folder, the
    Optuna study and the resume record land in it like in any local path."""
    import pyarrow.fs as pafs

    try:
        fs, inner = open_root(path)
    except Exception as e:  # noqa: BLE001 - ArrowInvalid, OSError (no libjvm for hdfs), ...
        raise _storage_error(path, e) from None
    if isinstance(fs, pafs.LocalFileSystem):
        return inner
    _probe(fs, inner, path)
    return path


def _probe(fs, inner: str, uri: str) -> None:
    """Create the storage folder and read it back, within STORAGE_TIMEOUT_S: a bucket that
    does not exist or credentials that do not work fail here, not in the first checkpoint."""
    import pyarrow.fs as pafs

    outcome: list = []

    def probe():
        try:
            fs.create_dir(inner, recursive=True)
            info = fs.get_file_info(inner)
            outcome.append(None if info.type == pafs.FileType.Directory else
                           NotADirectoryError(f"{inner} is {info.type.name}, not a folder"))
        except Exception as e:  # noqa: BLE001 - whatever the filesystem raises
            outcome.append(e)

    worker = threading.Thread(target=probe, daemon=True)  # a hung client must not hang us
    worker.start()
    worker.join(STORAGE_TIMEOUT_S)
    if not outcome:
        outcome.append(TimeoutError(f"no answer within {STORAGE_TIMEOUT_S:.0f} s"))
    if outcome[0] is not None:
        raise _storage_error(uri, outcome[0])


def _storage_error(uri: str, e: Exception) -> ConfigError:
    text = (str(e).strip().splitlines() or [""])[0]
    return ConfigError(f"`--storage-path` must be a local path or a URI pyarrow.fs can open "
                       f"and write to, but got --storage-path={uri!r} ({type(e).__name__}: "
                       f"{text}).")


def check_storage(info: ClusterInfo, storage: str, shared: bool) -> None:
    """Trials write their results and checkpoints on the node they run on, into storage_path;
    Ray no longer syncs trial directories to the head node, so on a cluster of several nodes
    a local path would scatter the sweep over the nodes' disks (and break resume, export)."""
    if info.nodes > 1 and not is_uri(storage) and not shared:
        raise ConfigError(
            f"`--storage-path` must be a URI every node reaches (s3://, gs://, hdfs://) on a "
            f"cluster of {info.nodes} nodes, or a shared filesystem marked with "
            f"--shared-storage (Ray no longer syncs trial directories to the head node), but got "
            f"the local --storage-path={storage!r}.")


def absolute_data_dir(cfg):
    """A relative `data_dir` made absolute here, on the driver: each trial runs in its own
    working directory, so `data` would otherwise mean a fresh folder (a fresh CIFAR-10
    download) per trial instead of one per node. URIs (s3://, gs://) pass unchanged."""
    if cfg.dataset not in _READS_DATA_DIR or is_uri(cfg.data_dir):
        return cfg
    path = Path(cfg.data_dir).expanduser()
    return cfg if path.is_absolute() else cfg.replace(data_dir=str(path.resolve()))
