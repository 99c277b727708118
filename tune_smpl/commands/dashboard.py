"""`tune-smpl dashboard SWEEP`: optuna-dashboard on the sweep's study, until Ctrl-C.

The study is the sweep's `optuna.db` when this machine has it (a local storage: live while
the sweep runs), else the study rebuilt in memory from the sweep's record (a URI storage,
another machine, a deleted file). It names its objective `val_accuracy`, so the
dashboard's axes say so. Served on 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
from pathlib import Path

from smpl_core.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("dashboard", help="serve optuna-dashboard on a sweep's study")
    p.add_argument("sweep", help="sweep name (a folder of --storage-path)")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=run)


def study_storage(record, scratch: str) -> tuple[str, str]:
    """(the storage URL optuna-dashboard opens, how to say it): the sweep's study file, or
    the record's study rebuilt in a file under `scratch`."""
    from tune_smpl.sweep import prior
    from tune_smpl.sweep.study import build_study, study_file

    db = study_file(record.storage, record.name)
    if db.is_file():
        return f"sqlite:///{db}", str(db)
    url = f"sqlite:///{Path(scratch) / 'optuna.db'}"
    build_study(record.trials(), record.name, url, prior=prior.read(record, record.meta()))
    return url, "rebuilt from the sweep's record"


def check_port(host: str, port: int) -> None:
    if isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"`--port` must be in 1..65535, but got --port={port}.")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise ConfigError(f"`--port` must be free on --host {host}, but got --port={port} "
                          f"({e.strerror or e}).") from None


def run(args: argparse.Namespace) -> int:
    import logging

    import optuna
    from optuna_dashboard import run_server

    from tune_smpl.sweep.cluster import storage_path
    from tune_smpl.sweep.record import open_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna_dashboard").setLevel(logging.WARNING)
    record = open_sweep(storage_path(args.storage_path), args.sweep)
    check_port(args.host, args.port)
    with tempfile.TemporaryDirectory() as scratch:
        storage, where = study_storage(record, scratch)
        shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
        print(f"optuna-dashboard of sweep {args.sweep} at http://{shown}:{args.port}/dashboard/"
              f" (study: {where}); Ctrl-C to stop", flush=True)
        # The server runs in a thread; the main thread only waits, so Ctrl-C always lands
        # here and not inside a request the server is still writing (which would log the
        # KeyboardInterrupt and serve on). The thread is a daemon: it ends with us.
        server = threading.Thread(target=run_server, args=(storage,),
                                  kwargs={"host": args.host, "port": args.port}, daemon=True)
        server.start()
        try:
            while server.is_alive():
                server.join(0.5)
        except KeyboardInterrupt:
            print("optuna-dashboard stopped", file=sys.stderr)
            return 0
    print("optuna-dashboard ended by itself (its error is above)", file=sys.stderr)
    return 1
