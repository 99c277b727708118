"""`tune-smpl export SWEEP`: the best trial's full config as a file `train --config` takes.

It reads the sweep's record in its storage only (local path or URI), so it works after
the Ray cluster is gone and from any machine that can read the storage. The best trial is
the sweep's one definition of best (`tune_smpl.sweep.finalists.pick`: with a finalist stage
the finalist with the best mean final val_accuracy over its fresh seeds, else
`tune_smpl.sweep.outcome.best`), with its statistics in the file; `--metric/--mode` rank
the search trials by another reported figure.

A damaged trial record (tune_smpl.sweep.record.DamagedRecord) does not stop it: the trial
is left out, with a warning on stderr and a line in the file (`skipped_damaged` in JSON). A
damaged sweep.json does: the sweep cannot be read without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from smpl_core.config import SMPLConfig
from smpl_core.errors import ConfigError
from tune_smpl.sweep.finalists import Measure, Pick
from tune_smpl.sweep.outcome import METRIC, MODE, rank, score
from tune_smpl.sweep.record import FINALIST, SweepRecord, TrialRecord, skipped


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the best trial's config of a sweep")
    p.add_argument("sweep", help="sweep name (a folder of --storage-path)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("--metric", default=METRIC)
    p.add_argument("--mode", choices=["max", "min"], default=MODE)
    p.add_argument("--top", type=int, default=1, help="write the K best (files NAME-1, ...)")
    p.add_argument("--format", choices=["yaml", "json", "parquet"], default="yaml",
                   help="parquet: the trials and reports tables (Sweep.to_parquet), into "
                        "-o (default SWEEP.parquet) and its -reports.parquet sibling")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--tracking-uri", help="MLflow store, to name the trial's run")
    p.set_defaults(func=run)


def _facts(t: TrialRecord, row: dict, record: SweepRecord, run_id: str | None) -> dict:
    """Where the exported trial is: the YAML header's lines and the JSON's `_export`
    fields (null where the YAML says unknown or none)."""
    ckpt = row.get("checkpoint_dir_name")
    return {"sweep": record.name, "trial_id": t.key,
            "outcome": None if t.outcome is None else str(t.outcome),
            "mlflow_run_id": run_id,
            "checkpoint": record.storage.uri(record.name, t.name, ckpt) if ckpt else None}


def _header(t: TrialRecord, value: float, row: dict, metric: str, facts: dict,
            damaged: list | None = None, finalist: dict | None = None) -> str:
    first = (f"best {metric}: {value:.6g} (step {row.get('step')})" if finalist is None else
             f"best {Measure.FINAL}: {value:.6g} (step {t.config['steps']}, mean over "
             f"{finalist['runs']} fresh seeds)")
    lines = [first, f"sweep: {facts['sweep']}", f"trial_id: {facts['trial_id']}",
             f"outcome: {facts['outcome']}",
             f"mlflow_run_id: {facts['mlflow_run_id'] or 'unknown'}",
             f"checkpoint: {facts['checkpoint'] or 'none'}",
             "train it: tune-smpl train --config THIS_FILE --eval-test"]
    if finalist is not None:
        lines.append("finalist: " + ", ".join(
            f"{k} {finalist[k]:.4f}" for k in ("mean", "sd", "ci_low", "ci_high", "promised",
                                               "optimism")) + f" over seeds "
            f"{', '.join(finalist['values'])}")
    if damaged:
        lines.append(f"ranked without the damaged trials: {skipped(damaged)}")
    return "\n".join(lines)


def render(t: TrialRecord, metric: str, mode: str, record: SweepRecord, fmt: str,
           run_id: str | None, damaged: list | None = None, pick: Pick | None = None) -> str:
    """The trial's config as a file; `damaged`: the DamagedRecords it was ranked without;
    `pick`: the sweep's finalist verdict, when `t` is one of its finalists."""
    value, row = score(t.reports, metric, mode)
    finalist = next((f.as_dict() for f in (pick.ranked if pick else [])
                     if f.key == t.key and f.values), None)
    if finalist is not None:
        value = finalist["mean"]
    facts = _facts(t, row, record, run_id)
    cfg = SMPLConfig.from_dict(t.config)
    if fmt == "yaml":
        return cfg.to_yaml(header=_header(t, value, row, metric, facts, damaged, finalist))
    skipped_damaged = [{"file": d.uri, "problem": d.problem} for d in damaged or []]
    extra: dict = {"measure": str(Measure.FINAL if finalist else Measure.SEARCH)}
    if finalist is not None:
        extra["finalist"] = finalist
        if pick is not None and pick.verdict.get("separation") and pick.trial is t:
            extra["separation"] = pick.verdict["separation"]
    if pick is not None and pick.trial is t:
        extra["note"] = pick.note
    return json.dumps({"_export": {"metric": metric, "value": value, **facts, **extra,
                                   "skipped_damaged": skipped_damaged},
                       **cfg.to_dict()}, indent=2) + "\n"


def _trial_runs(tracking_uri: str | None) -> Future:
    """The sweep's MLflow store, opened in a thread while the record is read (MLflow's
    import and its store's start: 2-4 s on a 2-core CPU, as long as reading 1,000 trial
    records from S3); None without a store to open."""
    def open_store():
        if not tracking_uri:
            return None
        from mlflow_tracking import TrialRuns

        return TrialRuns(tracking_uri)

    pool = ThreadPoolExecutor(1, thread_name_prefix="export-mlflow")
    try:
        return pool.submit(open_store)
    finally:
        pool.shutdown(wait=False)


def _run_id(store: Future, sweep: str, key: str) -> str | None:
    try:
        runs = store.result()
        return None if runs is None else runs.run_id(sweep, key)
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
    if args.format == "parquet":
        return _parquet(args, record)
    store = _trial_runs(args.tracking_uri or meta.get("tracking_uri"))
    try:
        return _best(args, record, meta, store)
    finally:  # no thread outlives the command (a relative store opens in its cwd)
        wait([store])


def _best(args: argparse.Namespace, record: SweepRecord, meta: dict, store: Future) -> int:
    """The best trial's config (the K best with --top) as files, or onto stdout."""
    trials, damaged = record.scan()
    reported = sorted({k for t in trials for r in t.reports for k, v in r.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if args.metric not in reported and trials:
        raise ConfigError(f"`--metric` must be one the trials reported "
                          f"({', '.join(reported)}), but got --metric={args.metric!r}.")
    ranked = rank(trials, args.metric, args.mode)
    pick = None
    if (args.metric, args.mode) == (METRIC, MODE):  # the sweep's own best, as it chose
        from tune_smpl.sweep.result import SweepResult

        runs, damaged_runs = record.scan(FINALIST)
        damaged += damaged_runs
        pick = SweepResult.of_record(record, trials, runs, meta).pick
        if pick.measure == Measure.FINAL:
            first = [next(t for t in trials if t.key == f.key) for f in pick.ranked if f.values]
            ranked = first + [t for t in ranked if t not in first]
    if damaged:
        print(f"tune-smpl: warning: {skipped(damaged)}", file=sys.stderr)
    if not ranked:
        also = f" ({len(damaged)} damaged trial record(s) skipped)" if damaged else ""
        raise ConfigError(f"`sweep` must have a trial that completed, stopped early or was cut "
                          f"by the budget with a measurement, but sweep={args.sweep!r} has "
                          f"none{also}.")
    for i, t in enumerate(ranked[:args.top], 1):
        text = render(t, args.metric, args.mode, record, args.format,
                      _run_id(store, args.sweep, t.key), damaged, pick)
        if not args.output:
            sys.stdout.write(text)
            continue
        out = args.output
        if args.top > 1:
            p = Path(out)
            out = str(p.with_name(f"{p.stem}-{i}{p.suffix}"))
        _write(out, text)
        value = score(t.reports, args.metric, args.mode)[0]
        means = {f.key: f.mean for f in (pick.ranked if pick else []) if f.values}
        what = (f"{Measure.FINAL} {means[t.key]:.4f} (finalist {t.key}, mean over its seeds)"
                if t.key in means else f"{args.metric} {value:.4f} (trial {t.key})")
        print(f"wrote {out}: {what}", file=sys.stderr)
    return 0


def _parquet(args: argparse.Namespace, record) -> int:
    """The sweep's trials and reports tables (tune_smpl/tables.py), not one trial's config:
    --top, --metric and --mode do not apply."""
    from tune_smpl import tables

    for flag, value, default in (("--top", args.top, 1), ("--metric", args.metric, METRIC),
                                 ("--mode", args.mode, MODE)):
        if value != default:
            raise ConfigError(f"`{flag}` applies to --format yaml or json, not parquet (the "
                              f"tables hold every trial), but got {flag}={value!r}.")
    snapshot = tables.read(record)
    if snapshot.damaged:
        print(f"tune-smpl: warning: {skipped(snapshot.damaged)}", file=sys.stderr)
    try:
        paths = tables.write_parquet(snapshot, args.output or f"{args.sweep}.parquet")
    except OSError as e:
        raise ConfigError(f"`--output` must be a writable path, but got --output="
                          f"{args.output!r} ({e.strerror or e}).") from None
    res = snapshot.result
    print(f"wrote {paths[0]}: {len(res.trials) + len(res.finalist_runs)} trials; "
          f"{paths[1]}: their reports", file=sys.stderr)
    return 0
