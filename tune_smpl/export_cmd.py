"""`tune-smpl export SWEEP`: the best trial's full config as a file `train --config` takes.

It reads the finished sweep from its storage path only (Ray's experiment state), so it
works after the cluster is gone.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from smpl_core.config import SMPLConfig


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the best trial's config of a finished sweep")
    p.add_argument("sweep", help="sweep name (a folder of --storage-path)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("--metric", default="val_accuracy")
    p.add_argument("--mode", choices=["max", "min"], default="max")
    p.add_argument("--top", type=int, default=1, help="write the K best (files NAME-1, ...)")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--tracking-uri", help="MLflow store, to name the trial's run")
    p.set_defaults(func=run)


@dataclass
class Ranked:
    value: float
    step: int | None
    trial_id: str
    config: SMPLConfig
    checkpoint: str | None


def _analysis(storage_path: str, sweep: str):
    from ray.tune import ExperimentAnalysis

    root = storage_path if "://" in storage_path else str(Path(storage_path).expanduser().resolve())
    path = f"{root.rstrip('/')}/{sweep}"
    if "://" not in root and not (Path(path) / "tuner.pkl").is_file():
        found = sorted(p.name for p in Path(root).glob("*") if (p / "tuner.pkl").is_file()) \
            if Path(root).is_dir() else []
        raise ValueError(f"`sweep` must be a sweep in {root}, but got sweep={sweep!r}; found: "
                         f"{', '.join(found) or 'none'}.")
    return root, ExperimentAnalysis(path)


def rank(analysis, metric: str, mode: str) -> list[Ranked]:
    """Trials that ended without error or divergence, best first by their best report."""
    available = sorted({k for t in analysis.trials for k, v in (t.last_result or {}).items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if metric not in available:
        raise ValueError(f"`--metric` must be one the trials reported ({', '.join(available)}), "
                         f"but got --metric={metric!r}.")
    names = set(SMPLConfig.field_names())
    out = []
    for t in analysis.trials:
        last = t.last_result or {}
        if t.status != "TERMINATED" or last.get("diverged") or metric not in last:
            continue
        df = analysis.trial_dataframes.get(t.trial_id)
        value, step = _best_row(df, metric, mode) if df is not None else (last[metric], None)
        ckpt = analysis.get_best_checkpoint(t, metric, mode)
        out.append(Ranked(value, step, t.trial_id,
                          SMPLConfig.from_dict({k: v for k, v in t.config.items() if k in names}),
                          ckpt.path if ckpt is not None else None))
    out.sort(key=lambda r: r.value, reverse=mode == "max")
    return out


def _best_row(df, metric: str, mode: str):
    col = df[metric].astype(float)
    i = col.idxmax() if mode == "max" else col.idxmin()
    step = int(df["step"][i]) if "step" in df else None
    return float(col[i]), step


def _header(r: Ranked, metric: str, sweep: str, run_id: str | None) -> str:
    return "\n".join([
        f"best {metric}: {r.value:.6g}" + (f" (step {r.step})" if r.step is not None else ""),
        f"sweep: {sweep}", f"trial_id: {r.trial_id}", f"mlflow_run_id: {run_id or 'unknown'}",
        f"checkpoint: {r.checkpoint or 'none'}",
        "train it: tune-smpl train --config THIS_FILE --eval-test"])


def render(r: Ranked, metric: str, sweep: str, fmt: str, run_id: str | None) -> str:
    header = _header(r, metric, sweep, run_id)
    if fmt == "yaml":
        return r.config.to_yaml(header=header)
    meta = dict(line.split(": ", 1) for line in header.splitlines()[1:5])
    return json.dumps({"_export": {"metric": metric, "value": r.value, **meta},
                       **r.config.to_dict()}, indent=2) + "\n"


def _run_id(tracking_uri: str | None, root: str, sweep: str, trial_id: str) -> str | None:
    try:
        from mlflow_tracking import default_tracking_uri, find_trial_run

        uri = tracking_uri or default_tracking_uri(root if "://" not in root else "runs")
        return find_trial_run(uri, sweep, trial_id)
    except Exception:  # the store may be gone or elsewhere: the header says unknown
        return None


def _write(path: str, text: str) -> None:
    try:
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    except OSError as e:
        raise ValueError(f"`--output` must be a writable path, but got --output={path!r} "
                         f"({e.strerror or e}).") from None


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise ValueError(f"`--top` must be >= 1, but got --top={args.top}.")
    root, analysis = _analysis(args.storage_path, args.sweep)
    ranked = rank(analysis, args.metric, args.mode)
    if not ranked:
        raise ValueError(f"`sweep` must have a trial that completed without error or "
                         f"divergence, but sweep={args.sweep!r} has none.")
    chosen = ranked[:args.top]
    for i, r in enumerate(chosen, 1):
        text = render(r, args.metric, args.sweep, args.format,
                      _run_id(args.tracking_uri, root, args.sweep, r.trial_id))
        if not args.output:
            sys.stdout.write(text)
            continue
        out = args.output
        if args.top > 1:
            p = Path(out)
            out = str(p.with_name(f"{p.stem}-{i}{p.suffix}"))
        _write(out, text)
        print(f"wrote {out}: {args.metric} {r.value:.4f} (trial {r.trial_id})", file=sys.stderr)
    return 0
