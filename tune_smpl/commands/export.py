"""`tune-smpl export SWEEP`: the best trial's full config as a file `train --config` takes.

It reads the sweep's record in its storage only (local path or URI), so it works after
the Ray cluster is gone and from any machine that can read the storage. The best trial is
the sweep's one definition of best (`tune_smpl.sweep.outcome.best`); `--metric/--mode`
rank the same trials by another reported figure.

A damaged trial record (tune_smpl.sweep.record.DamagedRecord) does not stop it: the trial
is left out, with a warning on stderr and a line in the file (`skipped_damaged` in JSON). A
damaged sweep.json does: the sweep cannot be read without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smpl_core.config import SMPLConfig
from smpl_core.errors import ConfigError
from tune_smpl.sweep import outcome as O
from tune_smpl.sweep.record import skipped


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the best trial's config of a sweep")
    p.add_argument("sweep", help="sweep name (a folder of --storage-path)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("--metric", default=O.METRIC)
    p.add_argument("--mode", choices=["max", "min"], default=O.MODE)
    p.add_argument("--top", type=int, default=1, help="write the K best (files NAME-1, ...)")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--tracking-uri", help="MLflow store, to name the trial's run")
    p.set_defaults(func=run)


def _header(t, value: float, row: dict, metric: str, record, run_id: str | None,
            damaged: list | None = None) -> str:
    ckpt = row.get("checkpoint_dir_name")
    return "\n".join([
        f"best {metric}: {value:.6g} (step {row.get('step')})",
        f"sweep: {record.name}", f"trial_id: {t.key}", f"outcome: {t.outcome}",
        f"mlflow_run_id: {run_id or 'unknown'}",
        f"checkpoint: {record.storage.uri(record.name, t.name, ckpt) if ckpt else 'none'}",
        "train it: tune-smpl train --config THIS_FILE --eval-test"]
        + ([f"ranked without the damaged trials: {skipped(damaged)}"] if damaged else []))


def render(t, metric: str, mode: str, record, fmt: str, run_id: str | None,
           damaged: list | None = None) -> str:
    """The trial's config as a file; `damaged`: the DamagedRecords it was ranked without."""
    value, row = O.score(t.reports, metric, mode)
    header = _header(t, value, row, metric, record, run_id, damaged)
    cfg = SMPLConfig.from_dict(t.config)
    if fmt == "yaml":
        return cfg.to_yaml(header=header)
    meta = dict(line.split(": ", 1) for line in header.splitlines()[1:6])
    skipped_damaged = [{"file": d.uri, "problem": d.problem} for d in damaged or []]
    return json.dumps({"_export": {"metric": metric, "value": value, **meta,
                                   "skipped_damaged": skipped_damaged},
                       **cfg.to_dict()}, indent=2) + "\n"


def _run_id(tracking_uri: str | None, meta: dict, sweep: str, key: str) -> str | None:
    try:
        from mlflow_tracking import find_trial_run

        return find_trial_run(tracking_uri or meta["tracking_uri"], sweep, key)
    except Exception:  # the store may be gone or elsewhere: the header says unknown
        return None


def _write(path: str, text: str) -> None:
    try:
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    except OSError as e:
        raise ConfigError(f"`--output` must be a writable path, but got --output={path!r} "
                         f"({e.strerror or e}).") from None


def run(args: argparse.Namespace) -> int:
    from tune_smpl.sweep.cluster import storage_path
    from tune_smpl.sweep.record import open_sweep

    if args.top < 1:
        raise ConfigError(f"`--top` must be >= 1, but got --top={args.top}.")
    record = open_sweep(storage_path(args.storage_path), args.sweep)
    meta = record.meta()  # a damaged sweep.json stops here
    trials, damaged = record.scan()
    if damaged:
        print(f"tune-smpl: warning: {skipped(damaged)}", file=sys.stderr)
    reported = sorted({k for t in trials for r in t.reports for k, v in r.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if args.metric not in reported and trials:
        raise ConfigError(f"`--metric` must be one the trials reported "
                         f"({', '.join(reported)}), but got --metric={args.metric!r}.")
    ranked = O.rank(trials, args.metric, args.mode)
    if not ranked:
        also = f" ({len(damaged)} damaged trial record(s) skipped)" if damaged else ""
        raise ConfigError(f"`sweep` must have a trial that completed, stopped early or was cut "
                         f"by the budget with a measurement, but sweep={args.sweep!r} has "
                         f"none{also}.")
    for i, t in enumerate(ranked[:args.top], 1):
        text = render(t, args.metric, args.mode, record, args.format,
                      _run_id(args.tracking_uri, meta, args.sweep, t.key), damaged)
        if not args.output:
            sys.stdout.write(text)
            continue
        out = args.output
        if args.top > 1:
            p = Path(out)
            out = str(p.with_name(f"{p.stem}-{i}{p.suffix}"))
        _write(out, text)
        value = O.score(t.reports, args.metric, args.mode)[0]
        print(f"wrote {out}: {args.metric} {value:.4f} (trial {t.key})", file=sys.stderr)
    return 0
