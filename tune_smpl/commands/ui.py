"""`tune-smpl ui`: the MLflow UI on the sweeps' tracking store, with one worker."""

from __future__ import annotations

import argparse

from smpl_core.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("ui", help="browse the sweeps in the MLflow UI")
    p.add_argument("--tracking-uri", help="default sqlite:///<runs>/mlflow.db")
    p.add_argument("--runs-dir", default="runs", help="where the default store lives")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlflow_tracking import default_tracking_uri, run_ui

    uri = args.tracking_uri or default_tracking_uri(args.runs_dir)
    if not 0 < args.port < 65536:
        raise ConfigError(f"`--port` must be in 1..65535, but got --port={args.port}.")
    return run_ui(uri, host=args.host, port=args.port)
