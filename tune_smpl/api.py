"""tune-smpl as a library: `tune(...)` runs a sweep in this process, `open_sweep(...)` reads
one, and both return a `Sweep`.

`tune(**options)` takes the settings of `tune-smpl tune` as keywords named like its flags
(`num_samples=8` is `--num-samples 8`; tune_smpl/options.py) and runs the command's own
code (tune_smpl/launch.py: the same checks, record, Ray, MLflow, summary and report), so
a sweep started here is the sweep the command would have run. Bad input raises
`ConfigError` with the command's one-line message, before Ray starts; an unknown keyword is
a TypeError. A Ctrl-C (a notebook's interrupt) ends the sweep as in a terminal: the running
trials are marked interrupted and `tune` returns the interrupted `Sweep`, which `.resume()`
finishes. Ray started by `tune` is shut down when it returns; a Ray the caller started is
used and left running.

A `Sweep` reads its record each time a property is read, so a running sweep is read as it
stands. Reading never writes to the sweep.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from smpl_core.errors import ConfigError
from tune_smpl import tables
from tune_smpl.options import TuneOptions
from tune_smpl.sweep.finalists import Measure, Pick
from tune_smpl.sweep.outcome import METRIC, MODE, Outcome
from tune_smpl.sweep.record import SweepRecord, skipped
from tune_smpl.sweep.record import open_sweep as open_record


def tune(**options: Any) -> Sweep:
    """Run a sweep here, as `tune-smpl tune` with these flags would; returns its Sweep.

    The keywords are the command's flags (`tune-smpl tune --help`), with `_` for `-`.
    `set` takes a list of "KEY=VALUE" texts (as `--set`) or a dict {field: value};
    `warm_start` a list of sweep names (or one name)."""
    opts = TuneOptions.from_kwargs(options)
    if not opts.resume and opts.name is None:
        # The name is fixed here so that the Sweep returned is the one that ran.
        from tune_smpl.plan import base_config, default_name

        opts = replace(opts, name=default_name(base_config(opts)[0]))
    from tune_smpl import launch

    launch.run(opts)  # its exit status is the sweep's status, which the Sweep reads
    name = opts.name
    if name is None:  # `--resume` without `--name` raised its ConfigError above
        raise ConfigError("`--resume` needs `--name` of the sweep to resume.")
    return open_sweep(name, opts.storage_path, tracking_uri=opts.tracking_uri)


tune.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
     for f in fields(TuneOptions)], return_annotation="Sweep")


def open_sweep(name: str, storage: str | Path = "runs", *,
               tracking_uri: str | None = None) -> Sweep:
    """The sweep `name` under `storage` (a local folder or a URI such as
    `s3://bucket/runs?endpoint_override=...`), finished, running or interrupted; read-only.
    `tracking_uri`: its MLflow store, when not the one its record names."""
    return Sweep(open_record(str(storage), name), tracking_uri=tracking_uri)


@dataclass(frozen=True)
class Best:
    """The sweep's best, as the summary, the parent run, `export` and the report show it
    (the one decision, `tune_smpl.sweep.finalists.pick`)."""

    key: str  # the search trial whose config is exported
    value: float  # its measure: a finalist's mean over its seeds, or its best report
    measure: Measure  # what `value` is (Measure.FINAL or Measure.SEARCH)
    note: str  # how far to trust it, in one line
    outcome: Outcome | None  # a scored outcome: the best always has one
    params: dict[str, Any]
    config: dict[str, Any]  # the full config: what `export` writes, `train --config` runs
    statistics: dict[str, Any] = field(default_factory=dict)  # the finalist's mean, sd, CI..
    separation: dict[str, Any] | None = None  # from the runner-up, paired by seed
    pick: Pick | None = field(default=None, repr=False)


class Sweep:
    """One sweep's record, read as it stands; see the module docstring."""

    def __init__(self, record: SweepRecord, tracking_uri: str | None = None):
        self.record = record
        self._store_given = tracking_uri

    # --- what it is ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.record.name

    @property
    def storage(self) -> str:
        """The folder of sweeps it is in: an absolute path or the URI given."""
        return self.record.storage.root

    @property
    def meta(self) -> dict[str, Any]:
        """sweep.json: settings, base config, sampler, status, the finalist stage's plan."""
        return self.record.meta()

    @property
    def status(self) -> str:
        """new | running | finished | interrupted (a sweep whose driver was killed still
        reads running: the record is as its last write left it)."""
        return self.meta["status"]

    @property
    def tracking_uri(self) -> str:
        return self._store_given or self.meta["tracking_uri"]

    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow parent run's id; None when its store has none or cannot be read."""
        from mlflow_tracking.ui import sweep_run_id

        return sweep_run_id(self.tracking_uri, self.name)

    # --- the tables and the best ----------------------------------------------------------
    def _snapshot(self) -> tables.Snapshot:
        snap = tables.read(self.record)
        if snap.damaged:
            warnings.warn(f"sweep {self.name}: {skipped(snap.damaged)}", stacklevel=3)
        return snap

    @property
    def trials(self) -> pd.DataFrame:
        """One row per trial and finalist run (tune_smpl/tables.py)."""
        return tables.trials_frame(self._snapshot().result)

    @property
    def reports(self) -> pd.DataFrame:
        """One row per report: trial, role, step and every reported figure."""
        return tables.reports_frame(self._snapshot().result)

    @property
    def best(self) -> Best | None:
        """The sweep's best with its statistics; None while no trial gave a measurement."""
        pick = self._snapshot().result.pick
        top = pick.trial
        if top is None:
            return None
        return Best(key=top.key, value=pick.value, measure=pick.measure, note=pick.note,
                    outcome=top.outcome, params=dict(top.params), config=dict(top.config),
                    statistics=dict(pick.verdict.get("winner") or {}),
                    separation=pick.verdict.get("separation"), pick=pick)

    # --- what the commands do with it ---------------------------------------------------
    def export(self, path: str | Path | None = None, format: str = "yaml", *, top: int = 1,
               metric: str = METRIC, mode: str = MODE) -> str | Path | list[Path]:
        """`tune-smpl export`: the best config as a file `train --config` runs (`yaml`,
        `json`), or the tables (`parquet`: `path` and `<stem>-reports.parquet`). Returns
        the path written (a list for `top` > 1 or parquet), or the text when `path` is
        None (yaml, json)."""
        from tune_smpl.commands import export as command

        if format not in ("yaml", "json", "parquet"):
            raise _choice("format", format, ("yaml", "json", "parquet"))
        if mode not in ("max", "min"):
            raise _choice("mode", mode, ("max", "min"))
        args = argparse.Namespace(sweep=self.name, output=None if path is None else str(path),
                                  metric=metric, mode=mode, top=top, format=format,
                                  storage_path=self.storage, tracking_uri=self._store_given)
        if format == "parquet":
            command.run(args)
            return list(tables.parquet_paths(path or f"{self.name}.parquet"))
        if path is None:
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                command.run(args)
            return text.getvalue()
        command.run(args)
        if top == 1:
            return Path(path).expanduser()
        p = Path(path).expanduser()
        return [p.with_name(f"{p.stem}-{i}{p.suffix}") for i in range(1, top + 1)
                if p.with_name(f"{p.stem}-{i}{p.suffix}").exists()]

    def report(self, path: str | Path | None = None) -> Path:
        """`tune-smpl report`: the HTML report (and its PNGs) into `path`, else the sweep
        folder's `report/` (local) or `./<name>-report/` (URI). Returns report.html."""
        from tune_smpl.commands import report as command
        from tune_smpl.report import HTML_FILE

        out = Path(path).expanduser() if path else command.default_output(self.record)
        command.run(argparse.Namespace(sweep=self.name, storage_path=self.storage,
                                       output=str(out)))
        return out / HTML_FILE

    def to_parquet(self, path: str | Path) -> tuple[Path, Path]:
        """The trials table into `path`, the reports table into `<stem>-reports.parquet`
        beside it; returns both paths."""
        return tables.write_parquet(self._snapshot(), path)

    def resume(self, *, address: str | None = None, num_cpus: int | None = None,
               num_gpus: int | None = None, tracking_uri: str | None = None,
               shared_storage: bool = False) -> Sweep:
        """`tune-smpl tune --name NAME --resume`: run what the sweep has not finished, here.
        A resumed sweep keeps its settings; these say only where it runs and records."""
        given = {k: v for k, v in (("address", address), ("num_cpus", num_cpus),
                                   ("num_gpus", num_gpus),
                                   ("tracking_uri", tracking_uri or self._store_given))
                 if v is not None}
        return tune(name=self.name, storage_path=self.storage, resume=True,
                    shared_storage=shared_storage, **given)

    def __repr__(self) -> str:
        try:
            snap = tables.read(self.record)
        except Exception as e:  # noqa: BLE001 - a repr must not raise
            return f"<Sweep {self.name!r} in {self.storage} (unreadable: {e})>"
        res, pick = snap.result, snap.result.pick
        best = (f", best {pick.value:.4f} (trial {pick.trial.key})" if pick.trial else "")
        runs = f", {len(res.finalist_runs)} finalist runs" if res.finalist_runs else ""
        return (f"<Sweep {self.name!r}: {res.status}, {len(res.trials)} trials{runs}{best}; "
                f"in {self.storage}>")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> ConfigError:
    return ConfigError(f"`--{name}` must be one of {' | '.join(choices)}, but got "
                       f"--{name}={value!r}.")
