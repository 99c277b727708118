"""`tune-smpl report SWEEP`: the sweep's report (HTML + PNGs), from its record alone.

It reads `<storage-path>/<SWEEP>/` only, so it works after the Ray cluster is gone, from
any machine that can read the storage. Default output: the sweep folder's `report/` on a
local storage, `./<SWEEP>-report/` for a URI storage.

A damaged trial record (tune_smpl.sweep.record.DamagedRecord) is left out, with a warning
on stderr and a line in the report; a damaged sweep.json stops it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from smpl_core.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write a sweep's report: importance, history, curves")
    p.add_argument("sweep", help="sweep name (a folder of --storage-path)")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="folder to write into (default: the sweep folder's report/)")
    p.set_defaults(func=run)


def default_output(record) -> Path:
    from tune_smpl.report import REPORT_DIR

    if record.storage.local:
        return Path(record.storage.path(record.name, REPORT_DIR))
    return Path(f"{record.name}-report").resolve()


def run(args: argparse.Namespace) -> int:
    import optuna

    from tune_smpl.report import build_report
    from tune_smpl.sweep.cluster import storage_path
    from tune_smpl.sweep.record import open_sweep, skipped

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    record = open_sweep(storage_path(args.storage_path), args.sweep)
    record.meta()  # a damaged sweep.json stops here, before anything is written
    out = Path(args.output).expanduser() if args.output else default_output(record)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"`--output` must be a folder that can be written, but got "
                          f"--output={str(out)!r} ({e.strerror or e}).") from None
    rep = build_report(record, out, args.storage_path)
    view = rep.view
    if view.damaged:
        print(f"tune-smpl: warning: {skipped(view.damaged)}", file=sys.stderr)
    if view.best is None:
        print(f"sweep {args.sweep}: no trial gave a measurement ({len(view.trials)} trials); "
              f"the report lists their errors.")
    else:
        print(f"sweep {args.sweep}: {len(view.trials)} trials, best val_accuracy "
              f"{view.best_value:.4f} (trial {view.best.key}; {view.pick.note})")
    if view.importance:
        print("importance (fANOVA): " + ", ".join(f"{k} {v:.2f}"
                                                  for k, v in view.importance.items()))
    print(f"report: {rep.html}")
    print(f"images: {', '.join(p.name for p in rep.pngs.values())} in {out}")
    return 0
