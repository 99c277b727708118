"""`tune-smpl report` on real small CPU sweeps (one of 6 trials with some stopped early, one
of a single trial, one whose trials all diverge), and what the end of a sweep leaves on
its MLflow parent run: the report, the description, the sweep's own figures only, the
experiment kind, and the deep links that open the UI in Model training mode."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from mlflow_tracking import ui as ui_module
from tests.tune_smpl.conftest import small_sets
from tune_smpl.cli import main
from tune_smpl.report import interactive
from tune_smpl.report.data import load_view
from tune_smpl.report.html import TITLES
from tune_smpl.sweep.record import open_sweep

KNOBS = {"threshold", "beta_zero", "uda_warmup_steps", "lr", "clamp_min", "clamp_max"}
SECTIONS = list(TITLES)  # outcomes, finalists, history, importance, parallel, slices, ...
# What a sweep without a finalist stage draws: every section but the finalists' (whose
# figure tests/tune_smpl/test_finalists.py checks), which says the best is one estimate.
DRAWN = [s for s in SECTIONS if s != "finalists"]
# A real sweep per fixture: over a minute on a 2-core CPU shared with other tests.
pytestmark = pytest.mark.slow
BOOKKEEPING = ("pid", "done", "timestamp", "training_iteration", "iterations_since_restore")


class _Sections(HTMLParser):
    """Per <section id>: its plotly figure divs, and the cells of its tables by table id."""

    def __init__(self):
        super().__init__()
        self.figures: dict[str, int] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._section = self._table = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id")
            self.figures[self._section] = 0
        elif tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.figures[self._section] += 1
        elif tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None


def _parse(page: str) -> _Sections:
    p = _Sections()
    p.feed(page)
    return p


def _sweep(root: Path, name: str, *extra: str, samples: int = 6) -> int:
    return main(["tune", "--name", name, "--storage-path", str(root / "runs"),
                 "--tracking-uri", f"sqlite:///{root}/mlflow.db", "--num-samples",
                 str(samples), "--grace-period", "1", "--gpus-per-trial", "0",
                 *small_sets(), *extra])


@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    """A 6-trial sweep (some stopped early), then a report of it into its own folder."""
    root = tmp_path_factory.mktemp("report")
    capture = pytest.MonkeyPatch()
    out: list[str] = []
    real_print = print

    def tee(*args, **kwargs):  # the sweep's own summary lines, kept for the link test
        if kwargs.get("file") is None:
            out.append(" ".join(str(a) for a in args))
        real_print(*args, **kwargs)

    capture.setattr("builtins.print", tee)
    try:
        assert _sweep(root, "rep") == 0
    finally:
        capture.undo()
    return root, "\n".join(out)


def test_report_of_a_real_sweep_has_every_section(swept, capsys):
    root, _ = swept
    out = root / "out"
    assert main(["report", "rep", "--storage-path", str(root / "runs"), "-o", str(out)]) == 0
    assert "importance (fANOVA):" in capsys.readouterr().out
    record = open_sweep(str(root / "runs"), "rep")
    trials = record.trials()
    assert len(trials) == 6
    assert any(t.outcome == "early_stopped" for t in trials), "ASHA stopped none"
    page = (out / "report.html").read_text()
    assert "<script src" not in page and "Plotly.newPlot" in page  # plotly.js inline
    parsed = _parse(page)
    assert list(parsed.figures) == SECTIONS
    assert parsed.figures["history"] == 2  # against trial number and against time
    assert all(parsed.figures[s] >= 1 for s in DRAWN), parsed.figures
    assert parsed.figures["finalists"] == 0 and "id='no-finalists'" in page
    assert {row[0] for row in parsed.tables["importance-table"][1:]} == KNOBS
    assert len(parsed.tables["importance-table"]) - 1 == len(KNOBS)
    assert "fANOVA" in page
    # the learning curves: one line per trial, named by its key
    curves = page.split("id='curves'")[1].split("</section>")[0]
    names = re.findall(r'"name":"trial (\d{4}) \(', curves)
    assert sorted(names) == [t.key for t in trials]
    assert not (out / "finalists.png").exists()
    for name in DRAWN:
        png = out / f"{name}.png"
        assert png.stat().st_size > 5000, name
        with Image.open(png) as im:
            assert im.format == "PNG" and min(im.size) > 200, (name, im.size)


def test_stopped_curves_are_visibly_cut(swept):
    root, _ = swept
    view = load_view(open_sweep(str(root / "runs"), "rep"))
    fig = interactive.curves(view)
    by_key = {tr.name.split()[1]: tr for tr in fig.data}
    assert len(fig.data) == len(view.trials)
    for t in view.trials:
        tr = by_key[t.key]
        assert list(tr.x) == [r["step"] for r in t.reports]
        cut = t.outcome != "completed"
        assert (tr.line.dash != "solid") == cut, (t.key, t.outcome, tr.line.dash)
        assert (tr.marker.symbol[-1] == "x") == cut


def test_parent_run_carries_the_report_and_only_the_sweeps_figures(swept):
    root, printed = swept
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("tune-smpl")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    (parent,) = client.search_runs([exp.experiment_id], "tags.run_kind = 'sweep'")
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/curves.png", "report/importance.png"} <= files
    note = parent.data.tags["mlflow.note.content"]
    assert "Best `val_accuracy`" in note and "tune-smpl export rep" in note
    assert "Most important knobs (fANOVA)" in note
    metrics = parent.data.metrics
    assert "best_val_accuracy" in metrics and "wall_s" in metrics
    bad = [k for k in metrics if k.split("/")[-1] in BOOKKEEPING or
           k.split("/")[-1].startswith("time_")]
    assert not bad, bad
    # the end-of-sweep summary prints where the report is and the UI's deep links
    base = "http://127.0.0.1:5000/#/experiments/"
    assert f"{root}/runs/rep/report/report.html" in printed
    assert f"{base}{exp.experiment_id}/runs?workflowType=machine_learning" in printed
    assert (f"{base}{exp.experiment_id}/runs/{parent.info.run_id}"
            f"?workflowType=machine_learning") in printed
    assert (root / "runs" / "rep" / "report" / "report.html").is_file()


def test_ui_prints_the_model_training_link_to_the_experiment(swept, monkeypatch, capsys):
    root, _ = swept
    uri = f"sqlite:///{root}/mlflow.db"

    class _Proc:
        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(ui_module.subprocess, "Popen", lambda cmd, env=None: _Proc())
    assert main(["ui", "--tracking-uri", uri, "--port", "5123"]) == 0
    exp_id = MlflowClient(uri).get_experiment_by_name("tune-smpl").experiment_id
    assert (f"http://127.0.0.1:5123/#/experiments/{exp_id}/runs?workflowType=machine_learning"
            in capsys.readouterr().out)


def test_report_of_a_single_trial_sweep(ray_local, tmp_path, capsys):
    assert _sweep(tmp_path, "one", samples=1) == 0
    capsys.readouterr()
    assert main(["report", "one", "--storage-path", str(tmp_path / "runs")]) == 0
    page = (tmp_path / "runs" / "one" / "report" / "report.html").read_text()
    assert "single trial" in page
    assert "Importance not computed: needs at least 2 trials" in page
    parsed = _parse(page)
    assert parsed.figures["curves"] == 1 and parsed.figures["history"] >= 1
    assert len(re.findall(r'"name":"trial \d{4} \(', page)) == 1


def test_report_of_a_sweep_whose_trials_all_failed(ray_local, tmp_path, capsys):
    space = tmp_path / "diverge.yaml"
    space.write_text("lr: {type: categorical, choices: [1.0e6]}\n")
    assert _sweep(tmp_path, "bad", "--space", str(space), samples=2) == 1
    capsys.readouterr()
    assert main(["report", "bad", "--storage-path", str(tmp_path / "runs")]) == 0
    assert "no trial gave a measurement" in capsys.readouterr().out
    page = (tmp_path / "runs" / "bad" / "report" / "report.html").read_text()
    assert "No trial gave a measurement: all 2 trial(s) failed" in page
    parsed = _parse(page)
    assert [row[1] for row in parsed.tables["error-table"][1:]] == ["diverged", "diverged"]
    assert "Traceback" not in page
    # its parent run says so too
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("tune-smpl")
    (parent,) = client.search_runs([exp.experiment_id], "tags.run_kind = 'sweep'")
    assert "No trial gave a measurement" in parent.data.tags["mlflow.note.content"]


def test_report_of_an_unknown_sweep_lists_the_sweeps(tmp_path, capsys):
    (tmp_path / "runs" / "real").mkdir(parents=True)
    (tmp_path / "runs" / "real" / "sweep.json").write_text(json.dumps({}))
    assert main(["report", "nope", "--storage-path", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep='nope'" in err and "found: real" in err


def test_the_report_is_built_from_the_sweep_result_when_the_command_has_one(tmp_path):
    """A record written here (no Ray): without a result the view reads the record as it
    stands; with the SweepResult the command has, it takes that result's trials and its
    one pick (computed once: the same object), not a second reading of storage."""
    from optuna.distributions import FloatDistribution, distribution_to_json

    from tune_smpl.options import TuneOptions
    from tune_smpl.plan import prepare
    from tune_smpl.report import build_report
    from tune_smpl.sweep.record import TrialRecord
    from tune_smpl.sweep.result import SweepResult
    from tune_smpl.sweep.run import new_record

    plan = prepare(TuneOptions(dataset="moons", set={"steps": 40, "eval_every": 10},
                               num_samples=2, name="r", storage_path=str(tmp_path)))
    record = new_record(plan.settings, plan.base, plan.space, "sqlite:///unused/mlflow.db")
    lr = distribution_to_json(FloatDistribution(0.01, 1.0, log=True))
    trials = [TrialRecord(key=f"{n:04d}", number=n, params={"lr": 0.1 * (n + 1)},
                          distributions={"lr": lr}, config={"seed": 0, "steps": 40},
                          outcome="completed", reports=[{"step": 40, "val_accuracy": v}])
              for n, v in enumerate((0.7, 0.9))]
    for t in trials:
        record.save_trial(t)
    read = load_view(record)
    assert [t.key for t in read.trials] == ["0000", "0001"] and read.best.key == "0001"
    result = SweepResult.of_record(record, trials[:1], [])  # what a command's run holds
    view = load_view(record, result)
    assert view.trials == trials[:1] and view.pick is result.pick
    assert view.best.key == "0000" and view.counts["completed"] == 1
    rep = build_report(record, tmp_path / "out", str(tmp_path), result)
    assert rep.view.pick is result.pick and "trial `0000`" in rep.description
