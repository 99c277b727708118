"""The long-lived pieces of the chaos benchmark and the faults it injects into them.

One `mlflow server` over http, one moto S3 server behind a TCP proxy that can stop
forwarding, one two-node `ray start` cluster: each started when a round first needs it,
kept across rounds, restarted when a fault killed it, and stopped at the end. Everything
binds 127.0.0.1 and runs in its own process group, so that a fault (or the end) kills
exactly that group, never a process of someone else's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_env(ray_tmp: str | None) -> dict:
    """A `tune-smpl` (or `ray start`) subprocess's environment: its own short Ray temp dir
    (Ray's socket paths must fit in 107 bytes), the checkout on PYTHONPATH, no RAY_ADDRESS
    from outside, S3 credentials for the local moto server."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1",
               RAY_USAGE_STATS_ENABLED="0",
               TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0", **CREDS)
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.pop("RAY_ADDRESS", None)
    if ray_tmp:
        env["TUNE_SMPL_RAY_TMP"] = ray_tmp
    return env


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "a") as fh:
        return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        kill_group(proc.pid)
        proc.wait(timeout=60)


def _wait(ok, proc: subprocess.Popen, what: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up: {log.read_text()[-1500:]}")
        time.sleep(0.5)


# --- an MLflow tracking server -------------------------------------------------------
class MlflowServer:
    """`mlflow server` on 127.0.0.1:port over one SQLite store; `kill` and `start` again
    keep the port and the store (a server restarted by its operator)."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self) -> None:
        log = self.root / "mlflow_server.log"
        self.proc = _start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                            str(self.port), "--workers", "1", "--backend-store-uri",
                            f"sqlite:///{self.root}/mlflow.db", "--artifacts-destination",
                            str(self.root / "artifacts")], log)
        _wait(self.healthy, self.proc, "mlflow server", log)

    def kill(self) -> None:
        _stop(self.proc)
        self.proc = None

    def close(self) -> None:
        self.kill()


# --- S3 behind a proxy that can stop forwarding ----------------------------------------
def _reset(sock: socket.socket) -> None:
    try:  # RST, not FIN: the peer sees the connection cut, as on a lost network
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    except OSError:
        pass


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream`. `down("refuse")`: every open and new
    connection is reset; `down("blackhole")`: connections are accepted and nothing is
    forwarded either way (requests time out); `up()` forwards again."""

    def __init__(self, upstream: int):
        self.upstream, self.mode = upstream, "up"
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.mode == "refuse":
                _reset(client)
                continue
            if self.mode == "blackhole":
                with self.lock:
                    self.held.append(client)
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                up.settimeout(None)
            except OSError:
                _reset(client)
                continue
            pair = (client, up)
            with self.lock:
                self.pairs.add(pair)
            for src, dst in (pair, pair[::-1]):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True).start()

    def _pump(self, src, dst, pair) -> None:
        try:
            while data := src.recv(65536):
                if self.mode == "up":  # else the bytes are dropped: nothing gets through
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(pair)

    def _close(self, pair) -> None:
        with self.lock:
            self.pairs.discard(pair)
        for s in pair:
            _reset(s)

    def down(self, mode: str) -> None:
        self.mode = mode
        if mode == "refuse":
            for pair in list(self.pairs):
                self._close(pair)

    def up(self) -> None:
        self.mode = "up"
        with self.lock:
            held, self.held = self.held, []
        for s in held:
            _reset(s)
        for pair in list(self.pairs):  # requests cut while down stay cut
            self._close(pair)

    def close(self) -> None:
        self.server.close()
        self.up()


class S3:
    """A moto S3 server with the bucket `sweeps`, reached by the sweeps through `proxy`
    (faults; `proxied=False`: no proxy, the sweeps reach it directly) and by the checks
    directly (`client`)."""

    BUCKET = "sweeps"

    def __init__(self, root: Path, proxied: bool = True):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.port = root, free_port()
        os.environ.update(CREDS)  # export and report run in this process (chaos_rounds)
        log = root / "moto.log"
        self.proc = _start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                            str(self.port)], log, env={**os.environ, **CREDS})
        import boto3

        self.client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.port}",
                                   aws_access_key_id="testing",
                                   aws_secret_access_key="testing", region_name="us-east-1")

        def made() -> bool:
            try:
                self.client.create_bucket(Bucket=self.BUCKET)
                return True
            except Exception:  # noqa: BLE001 - not up yet
                return False

        _wait(made, self.proc, "moto server", log)
        self.proxy = Proxy(self.port) if proxied else None

    def uri(self, folder: str) -> str:
        port = self.proxy.port if self.proxy else self.port
        return (f"s3://{self.BUCKET}/{folder}?endpoint_override=127.0.0.1:{port}"
                f"&scheme=http&region=us-east-1")

    def close(self) -> None:
        if self.proxy:
            self.proxy.close()
        _stop(self.proc)


# --- a two-node Ray cluster on this machine ----------------------------------------------
NODE_ID_RE = re.compile(r"--node_id=([0-9a-f]{56})")


def group_node_id(pgid: int) -> str | None:
    """The node id of the raylet in process group `pgid` (from its command line)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) != pgid:
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ProcessLookupError):
            continue
        m = NODE_ID_RE.search(cmd) if "raylet" in cmd else None
        if m:
            return m.group(1)
    return None


class Cluster:
    """A head and a worker node (`ray start --block`, 1 CPU each, each its own process
    group). `kill_worker()` SIGKILLs the worker node's group (a lost node); `restart_worker()`
    brings a fresh worker node up."""

    def __init__(self, root: Path, tag: str):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.tag, self.port = root, tag, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = command_env(f"/tmp/rt_{tag}")
        self.log = root / "ray_start.log"
        self.workers = 0
        common = ["start", "--block", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats",
                  "--node-ip-address=127.0.0.1", "--object-store-memory=200000000"]
        self.head = _start([str(BIN / "ray"), *common, "--head", f"--port={self.port}",
                            "--include-dashboard=false", f"--temp-dir=/tmp/rt_{tag}h",
                            f"--dashboard-agent-listen-port={free_port()}"], self.log, self.env)
        self.common, self.worker = common, None
        _wait(lambda: group_node_id(self.head.pid) is not None, self.head, "ray head",
              self.log)
        self.head_id = group_node_id(self.head.pid)
        self.restart_worker()

    def _alive(self) -> int:
        out = subprocess.run([str(BIN / "ray"), "status", "--address", self.address],
                             env=self.env, capture_output=True, text=True, timeout=60)
        active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return len(re.findall(r"^\s*1 node_[0-9a-f]+\s*$", active, re.MULTILINE))

    def restart_worker(self) -> None:
        self.kill_worker()
        self.workers += 1
        self.worker = _start([str(BIN / "ray"), *self.common, f"--address={self.address}",
                              f"--temp-dir=/tmp/rt_{self.tag}w{self.workers}",
                              f"--dashboard-agent-listen-port={free_port()}"], self.log, self.env)
        _wait(lambda: group_node_id(self.worker.pid) is not None, self.worker, "ray worker",
              self.log)
        self.worker_id = group_node_id(self.worker.pid)
        _wait(lambda: self._alive() >= 2, self.worker, "the two-node cluster", self.log)

    def kill_worker(self) -> None:
        """The worker node lost at once: SIGKILL of its process group and of the processes
        its raylet started, which run in groups of their own (a trial's worker would
        otherwise run on for a while, its actor calls going worker to worker)."""
        if self.worker is not None:
            for pid in node_processes(self.worker.pid):
                with _gone():
                    os.kill(pid, signal.SIGKILL)
            _stop(self.worker)
            self.worker = None

    def close(self) -> None:
        self.kill_worker()
        for pid in node_processes(self.head.pid):
            with _gone():
                os.kill(pid, signal.SIGKILL)
        _stop(self.head)
        for n in range(self.workers + 1):
            shutil.rmtree(f"/tmp/rt_{self.tag}w{n}", ignore_errors=True)
        shutil.rmtree(f"/tmp/rt_{self.tag}h", ignore_errors=True)


@contextlib.contextmanager
def _gone():
    with contextlib.suppress(ProcessLookupError, PermissionError):
        yield


def node_processes(pgid: int) -> list[int]:
    """The processes of process group `pgid` and all their descendants, wherever their
    group."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:  # the field after the parenthesised name: state, then the ppid
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found = set()
    for pid in parent:
        try:
            if os.getpgid(pid) == pgid:
                found.add(pid)
        except (ProcessLookupError, PermissionError):
            pass
    grew = True
    while grew:
        more = {p for p, pp in parent.items() if pp in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)
