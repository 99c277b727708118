"""`tune_smpl.tune` and `Sweep` in this process (the module's Ray, which tune leaves running):
a sweep with a finalist stage, its tables compared with the record's files read here
independently, its best with the sweep's own pick, and export/report/parquet with the
commands' own output. Then the same settings through the command and through the library
give the same record.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import tune_smpl
from smpl_core.errors import ConfigError
from tests.tune_smpl import views
from tune_smpl.cli import main

SMALL = {"steps": 40, "eval_every": 10, "batch_size": 16, "mu": 2, "val_size": 100}
SETTINGS = dict(dataset="moons", set=SMALL, num_samples=4, finalists=2, finalist_seeds=2,
                grace_period=1, gpus_per_trial=0, seed=3)


@pytest.fixture(scope="module")
def done(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    uri = f"sqlite:///{root}/mlflow.db"
    sweep = tune_smpl.tune(name="lib", storage_path=str(root / "runs"), tracking_uri=uri,
                           **SETTINGS)
    return root, uri, sweep


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NA
    if a is None or a is pd.NA:
        return b is None or b is pd.NA or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_tune_returns_the_sweep_it_ran_and_leaves_the_callers_ray(done, ray_local):
    root, uri, sweep = done
    assert isinstance(sweep, tune_smpl.Sweep)
    assert sweep.name == "lib" and sweep.storage == str(root / "runs")
    assert sweep.status == "finished" and sweep.tracking_uri == uri
    views.check_finished(root / "runs" / "lib", uri, trials=4)
    assert ray_local.is_initialized()  # a Ray the caller started is the caller's
    assert "finished, 4 trials, 4 finalist runs, best" in repr(sweep)


def test_the_trials_table_is_the_record(done):
    root, _, sweep = done
    folder = root / "runs" / "lib"
    meta = json.loads((folder / "sweep.json").read_text())
    rec, runs = views.record(folder), views.record(folder, "finalist_")
    steps, chosen = meta["base"]["steps"], meta["finalists"]["of"]
    best = views.finalist_best(folder) or views.best_of(rec)
    frame = sweep.trials
    order = sorted(rec) + sorted(runs, key=lambda k: runs[k]["number"])
    assert list(frame["key"]) == order and len(runs) == 4
    params = sorted({f"params_{p}" for t in rec.values() for p in t["params"]})
    assert [c for c in frame.columns if c.startswith("params_")] == params
    for _, row in frame.iterrows():
        t = rec.get(row.key) or runs[row.key]
        vals = [r["val_accuracy"] for r in t["reports"] if _finite(r.get("val_accuracy"))]
        last = t["reports"][-1] if t["reports"] else {}
        finalist = row.key in runs
        assert row.role == ("finalist" if finalist else "search") == t["role"]
        assert row.outcome == t["outcome"] and row.proposed_by == t["proposed_by"]
        assert _same(row.finalist_of, t["finalist_of"]) and row.number == t["number"]
        assert row.seed == t["config"]["seed"]
        assert _same(row.best_value, max(vals) if vals else math.nan)
        assert _same(row.final_value, last.get("val_accuracy", math.nan))
        assert row.steps == last.get("step", 0) and row.reports == len(t["reports"])
        assert math.isclose(row.seconds, sum(r.get("time_this_iter_s", 0)
                                             for r in t["reports"]))
        for p in params:
            assert _same(row[p], t["params"].get(p.removeprefix("params_"), math.nan)), p
        measured = (finalist and t["outcome"] == "completed" and last.get("step") == steps)
        assert _same(row.measure, last["val_accuracy"] if measured else math.nan), row.key
        assert row.is_finalist == (not finalist and row.key in chosen)
        assert row.is_best == (not finalist and row.key == best[0])
    assert frame["is_best"].sum() == 1


def test_the_reports_table_is_the_record(done):
    root, _, sweep = done
    folder = root / "runs" / "lib"
    everything = {**views.record(folder), **views.record(folder, "finalist_")}
    reports = sweep.reports
    assert list(reports.columns[:4]) == ["trial", "role", "step", "val_accuracy"]
    assert len(reports) == sum(len(t["reports"]) for t in everything.values())
    by_row = {(r["trial"], r["step"]): r for r in reports.to_dict("records")}
    assert len(by_row) == len(reports)
    for key, t in everything.items():
        for r in t["reports"]:
            row = by_row[(key, r["step"])]
            assert row["role"] == t["role"]
            for name, value in r.items():
                assert _same(row[name], value), (key, r["step"], name)


def test_best_is_the_sweeps_pick(done):
    root, uri, sweep = done
    folder = root / "runs" / "lib"
    key, mean, n = views.finalist_best(folder)
    best = sweep.best
    assert best.key == key and math.isclose(best.value, mean, rel_tol=1e-12)
    assert best.measure == "final val_accuracy at steps" and best.statistics["runs"] == n
    assert math.isclose(best.statistics["mean"], mean, rel_tol=1e-12)
    assert best.params == views.record(folder)[key]["params"]
    assert best.config == views.record(folder)[key]["config"]
    parent, _ = views.mlflow_runs(uri, "lib")
    assert parent.data.tags["best_trial_id"] == key
    assert sweep.mlflow_run_id == parent.info.run_id


def test_export_and_report_are_the_commands(done, tmp_path, capsys):
    root, _, sweep = done
    runs = str(root / "runs")
    for fmt in ("yaml", "json"):
        mine, theirs = tmp_path / f"lib.{fmt}", tmp_path / f"cli.{fmt}"
        assert sweep.export(mine, format=fmt) == mine
        assert main(["export", "lib", "--storage-path", runs, "--format", fmt,
                     "-o", str(theirs)]) == 0
        assert mine.read_text() == theirs.read_text()
        capsys.readouterr()
        assert main(["export", "lib", "--storage-path", runs, "--format", fmt]) == 0
        assert sweep.export(format=fmt) == capsys.readouterr().out == theirs.read_text()
    assert f"trial_id: {sweep.best.key}" in (tmp_path / "lib.yaml").read_text()
    two = sweep.export(tmp_path / "top.yaml", top=2)
    assert [p.name for p in two] == ["top-1.yaml", "top-2.yaml"]
    with pytest.raises(ConfigError, match="--format"):
        sweep.export(tmp_path / "x", format="csv")
    html = sweep.report(tmp_path / "rep")
    assert html == tmp_path / "rep" / "report.html" and "lib" in html.read_text()


def test_parquet_from_the_library_and_the_command(done, tmp_path):
    root, _, sweep = done
    trials, reports = sweep.to_parquet(tmp_path / "lib.parquet")
    assert (trials, reports) == (tmp_path / "lib.parquet", tmp_path / "lib-reports.parquet")
    assert main(["export", "lib", "--storage-path", str(root / "runs"), "--format",
                 "parquet", "-o", str(tmp_path / "cli.parquet")]) == 0
    for mine, theirs, frame in ((trials, tmp_path / "cli.parquet", sweep.trials),
                                (reports, tmp_path / "cli-reports.parquet", sweep.reports)):
        pd.testing.assert_frame_equal(pd.read_parquet(mine), pd.read_parquet(theirs))
        back = pd.read_parquet(mine)
        assert list(back.columns) == list(frame.columns) and len(back) == len(frame)
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)
        table = pq.read_table(mine)  # arrow itself, as polars and DuckDB read it
        about = json.loads(table.schema.metadata[b"tune_smpl"])
        assert about["sweep"] == "lib" and about["status"] == "finished"
        assert table.num_rows == len(frame)
    assert pq.read_table(trials).column("key").to_pylist() == list(sweep.trials["key"])
    with pytest.raises(ConfigError, match="--top"):
        sweep.export(tmp_path / "t.parquet", format="parquet", top=2)


def test_the_commands_parquet_reads_back_in_pandas_and_duckdb_as_sweep_trials(done, tmp_path,
                                                                                capsys):
    """`tune-smpl export SWEEP --format parquet`: pandas and DuckDB read the file back with
    the rows of `Sweep.trials` (every column), and its reports sibling with `.reports`'."""
    import duckdb

    root, _, sweep = done
    out = tmp_path / "cli.parquet"
    assert main(["export", "lib", "--storage-path", str(root / "runs"), "--format", "parquet",
                 "-o", str(out)]) == 0, capsys.readouterr().err
    reports = tmp_path / "cli-reports.parquet"
    for path, frame in ((out, sweep.trials), (reports, sweep.reports)):
        back = pd.read_parquet(path)
        assert list(back.columns) == list(frame.columns), path
        assert len(back) == len(frame) > 0, path
        for col in frame.columns:
            assert all(_same(a, b) for a, b in zip(frame[col], back[col])), (path, col)
        got = duckdb.sql(f"select * from '{path}'").df()
        assert list(got.columns) == list(frame.columns) and len(got) == len(frame), path
    keys = [r[0] for r in duckdb.sql(f"select key from '{out}' order by key").fetchall()]
    assert keys == sorted(sweep.trials["key"])
    rows = duckdb.sql(f"select key, outcome from '{out}' order by key").fetchall()
    assert rows == sorted(zip(sweep.trials["key"], sweep.trials["outcome"].astype(str)))


def test_open_sweep_reads_the_record_as_tune_returned_it(done):
    root, uri, sweep = done
    again = tune_smpl.open_sweep("lib", root / "runs")
    pd.testing.assert_frame_equal(again.trials, sweep.trials)
    assert again.best == sweep.best and again.mlflow_run_id == sweep.mlflow_run_id
    with pytest.raises(ConfigError, match=r"found: lib"):
        tune_smpl.open_sweep("nope", root / "runs")


def test_a_check_after_ray_starts_raises_the_commands_line(ray_local, tmp_path, capsys):
    args = {"storage_path": str(tmp_path / "runs"), "name": "gpu", "gpus_per_trial": 2.0}
    assert main(["tune", "--storage-path", args["storage_path"], "--name", "gpu",
                 "--gpus-per-trial", "2"]) == 2
    line = capsys.readouterr().err.strip().removeprefix("tune-smpl: error: ")
    with pytest.raises(ConfigError) as e:
        tune_smpl.tune(**args)
    assert str(e.value) == line and "--gpus-per-trial" in line


def test_the_command_and_the_library_write_the_same_record(ray_local, tmp_path, capsys):
    """Same settings and seed, one trial at a time (the sampler's proposals then do not
    depend on which trial ends first): the same trials, params, outcomes and reports."""
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    argv = ["--dataset", "moons", *sum((["--set", f"{k}={v}"] for k, v in SMALL.items()), []),
            "--num-samples", "3", "--max-concurrent", "1", "--grace-period", "1",
            "--gpus-per-trial", "0", "--seed", "11", "--storage-path", str(runs),
            "--tracking-uri", uri]
    assert main(["tune", "--name", "by-cli", *argv]) == 0
    lib = tune_smpl.tune(name="by-lib", dataset="moons", set=[f"{k}={v}" for k, v in
                                                               SMALL.items()],
                         num_samples=3, max_concurrent=1, grace_period=1, gpus_per_trial=0,
                         seed=11, storage_path=runs, tracking_uri=uri)
    assert lib.status == "finished"
    a, b = views.record(runs / "by-cli"), views.record(runs / "by-lib")
    assert sorted(a) == sorted(b) == ["0000", "0001", "0002"]
    skip = {"pid", "ray_node_id", "started_at", "reported_at", "time_this_iter_s",
            "images_per_s"}  # when and where, not what
    for key in a:
        assert a[key]["params"] == b[key]["params"] and a[key]["config"] == b[key]["config"]
        assert a[key]["outcome"] == b[key]["outcome"]
        assert a[key]["proposed_by"] == b[key]["proposed_by"]
        assert ([{k: v for k, v in r.items() if k not in skip} for r in a[key]["reports"]]
                == [{k: v for k, v in r.items() if k not in skip} for r in b[key]["reports"]])
    ma, mb = (json.loads((runs / n / "sweep.json").read_text()) for n in ("by-cli", "by-lib"))
    assert ma["base"] == mb["base"] and ma["sampler"] == mb["sampler"]
    assert {**ma["settings"], "name": ""} == {**mb["settings"], "name": ""}
    assert Path(lib.storage) == runs
