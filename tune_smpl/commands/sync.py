"""`tune-smpl sync SWEEP`: make an MLflow store match the sweep's record.

The record under `<storage-path>/<SWEEP>/` is the truth; MLflow can fall behind it (a
tracking server that was away longer than the sweep waited, a driver killed or hurried out
by a second Ctrl-C). This writes what the store lacks, and only that: the parent run, every
trial's and finalist run's child run, each report's metrics at its step, the tags and the
outcomes, and for a sweep that ended its figures, best and model (tune_smpl/sweep/sync.py).
With `--tracking-uri` of another, empty store it rebuilds the sweep's runs there. A damaged
trial record is left out, with a warning.
"""

from __future__ import annotations

import argparse
import logging
import sys

from smpl_core.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("sync", help="fill in a sweep's MLflow runs from its record, or "
                                    "rebuild them in another store")
    p.add_argument("sweep", help="sweep name (a folder of --storage-path)")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--tracking-uri",
                   help="MLflow store (default: the sweep's own, from its sweep.json)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long to wait for the store to take the writes (default 600)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlflow_tracking import SweepRecorder, check_store
    from tune_smpl.sweep.cluster import storage_path
    from tune_smpl.sweep.record import open_sweep, skipped
    from tune_smpl.sweep.sync import sync

    if not args.timeout > 0:
        raise ConfigError(f"`--timeout` must be > 0 seconds, but got "
                          f"--timeout={args.timeout:g}.")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a new store's migrations
    record = open_sweep(storage_path(args.storage_path), args.sweep)
    uri = args.tracking_uri or record.meta()["tracking_uri"]
    check_store(uri)  # an unreachable server or unwritable file: one line, exit 2
    trials, damaged = record.scan()
    if damaged:
        print(f"tune-smpl: warning: {skipped(damaged)}", file=sys.stderr)
    done = sync(record, SweepRecorder(uri, record.name), args.timeout, trials)
    if not done.complete:
        print(f"sweep {record.name}: MLflow at {uri} did not take every write in "
              f"{args.timeout:g} s ({done.writes} made); run `tune-smpl sync` again",
              file=sys.stderr)
        return 1
    what = f"{done.writes} writes made" if done.writes else "nothing was missing"
    print(f"sweep {record.name}: MLflow at {uri} matches its record ({done.runs} runs; "
          f"{what})")
    return 0
