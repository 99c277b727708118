"""Issue 26, correctness at size (no timing): a record of 1,000 trials written here (no
training), every outcome among them. The study that `--resume` builds from it (run_sweep's
build_study and check_numbers, on SQLite) holds each trial as an independent reading of
what was written says; `export` picks the trial `outcome.best` picks and `--top 10` writes
the right ten in order; `report` renders."""

from __future__ import annotations

import math
import random
import re

import optuna
import pytest
from optuna.distributions import distribution_to_json
from optuna.trial import TrialState

from search_spaces.define_by_run import distributions
from tune_smpl.cli import main
from tune_smpl.options import TuneOptions
from tune_smpl.plan import prepare
from tune_smpl.sweep.outcome import best
from tune_smpl.sweep.record import SweepRecord, TrialRecord
from tune_smpl.sweep.run import new_record
from tune_smpl.sweep.storage import SweepStorage
from tune_smpl.sweep.study import build_study, check_numbers, study_file

N, STEPS, EVERY = 1000, 40, 10
# outcome -> (weight, Optuna state as the design's contract names it)
KINDS = {"completed": (40, "COMPLETE"), "early_stopped": (35, "PRUNED"),
         "cut_by_budget": (5, "PRUNED"), "diverged": (8, "FAIL"), "errored": (7, "FAIL"),
         "out_of_memory": (5, "FAIL")}


def _sample(d, rng: random.Random):
    if isinstance(d, optuna.distributions.CategoricalDistribution):
        return rng.choice(list(d.choices))
    lo, hi = d.low, d.high
    if isinstance(d, optuna.distributions.IntDistribution):
        return rng.randint(lo, hi)
    return math.exp(rng.uniform(math.log(lo), math.log(hi))) if d.log else rng.uniform(lo, hi)


def _reports(outcome: str, rng: random.Random, n: int) -> list[dict]:
    """Reports as the trainable makes them: a step every EVERY steps, a value at each."""
    count = {"completed": STEPS // EVERY, "early_stopped": rng.randint(1, 3),
             "cut_by_budget": rng.randint(1, 3), "diverged": rng.randint(1, 3),
             "errored": rng.randint(0, 3), "out_of_memory": 1}[outcome]
    rows = [{"step": EVERY * (i + 1), "val_accuracy": round(rng.uniform(0.3, 0.99), 6)
             + n * 1e-9, "val_loss": rng.uniform(0.1, 2.0), "time_this_iter_s": 0.25,
             "reported_at": 1.0e9 + n + i / 10, "diverged": False}
            for i in range(count)]
    if outcome == "diverged":
        rows[-1].update(diverged=True, val_loss=float("nan"))
    if outcome == "out_of_memory":
        rows[-1].update(oom=True, error="CUDA out of memory", val_accuracy=0.0)
    return rows


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("size")
    plan = prepare(TuneOptions(dataset="moons", set={"steps": STEPS, "eval_every": EVERY},
                               num_samples=N, name="big", storage_path=str(root)))
    record = new_record(plan.settings, plan.base, plan.space, f"sqlite:///{root}/mlflow.db")
    dists = distributions(plan.space)
    rng = random.Random(26)
    kinds = rng.choices(list(KINDS), weights=[w for w, _ in KINDS.values()], k=N)
    written = []
    for n, outcome in enumerate(kinds):
        params = {k: _sample(d, rng) for k, d in dists.items()}
        t = TrialRecord(key=f"{n:04d}", number=n, params=params,
                        distributions={k: distribution_to_json(d) for k, d in dists.items()},
                        config={**plan.base.to_dict(), **params}, outcome=outcome,
                        reports=_reports(outcome, rng, n), started=True,
                        proposed_by="random" if n < 8 else "tpe", ended_at=2.0e9 + n,
                        error="Traceback ...\nRuntimeError: boom" if outcome == "errored"
                        else None)
        record.save_trial(t)
        written.append(t)
    assert set(kinds) == set(KINDS)
    return root, record, plan, written


def test_resume_rebuilds_the_same_study(sweep):
    root, record, plan, written = sweep
    trials = SweepRecord(SweepStorage(str(root)), "big").trials()  # read back, as --resume
    assert [t.key for t in trials] == [t.key for t in written]
    db = study_file(record.storage, "big")
    study = build_study(trials, "big", f"sqlite:///{db}")
    check_numbers(study, trials)
    got = optuna.load_study(study_name="big", storage=f"sqlite:///{db}").get_trials()
    assert len(got) == N
    for t, ft in zip(written, got, strict=True):
        values = {r["step"]: r["val_accuracy"] for r in t.reports}
        state = TrialState[KINDS[t.outcome][1]]
        assert (ft.number, ft.state, ft.params) == (t.number, state, t.params), t.key
        assert ft.intermediate_values == pytest.approx(values), t.key
        want = {"COMPLETE": max(values.values()) if values else None,
                "PRUNED": values[max(values)] if values else None, "FAIL": None}[state.name]
        assert ft.value == (pytest.approx(want) if want is not None else None), t.key
        attrs = {"key": t.key, "outcome": t.outcome, "proposed_by": t.proposed_by}
        if t.error:
            attrs["error"] = t.error
        assert ft.user_attrs == attrs, t.key
        assert ft.distributions == distributions(plan.space), t.key


def _expected_ranking(written: list[TrialRecord]) -> list[str]:
    """Independent of outcome.rank: the scored outcomes by their highest report."""
    scored = [(max(r["val_accuracy"] for r in t.reports), t.key) for t in written
              if t.outcome in ("completed", "early_stopped", "cut_by_budget") and t.reports]
    return [k for _, k in sorted(scored, key=lambda vk: (-vk[0], vk[1]))]


def test_export_picks_the_best_and_top_10_lists_the_right_ten(sweep, tmp_path, capsys):
    root, record, _, written = sweep
    want = _expected_ranking(written)
    assert best(record.trials()).key == want[0]
    out = tmp_path / "best.yaml"
    assert main(["export", "big", "--storage-path", str(root), "--top", "10",
                 "-o", str(out)]) == 0
    said = re.findall(r"wrote (\S+): val_accuracy [\d.]+ \(trial (\d{4})\)",
                      capsys.readouterr().err)
    assert [k for _, k in said] == want[:10]
    assert [p for p, _ in said] == [str(tmp_path / f"best-{i}.yaml") for i in range(1, 11)]
    for i, key in enumerate(want[:10], 1):
        text = (tmp_path / f"best-{i}.yaml").read_text()
        assert f"trial_id: '{key}'" in text or f"trial_id: {key}" in text, text[:600]
    assert main(["export", "big", "--storage-path", str(root)]) == 0
    header = capsys.readouterr().out
    assert re.search(rf"trial_id: '?{want[0]}'?\n", header), header[:600]


def test_report_renders_a_thousand_trials(sweep, tmp_path, capsys):
    root, _, _, written = sweep
    assert main(["report", "big", "--storage-path", str(root), "-o", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text()
    assert _expected_ranking(written)[0] in html
    assert html.rstrip().endswith("</html>")


def test_a_large_sweeps_curves_are_the_best_twenty_over_a_band_of_all(sweep):
    """Issue 26: one line per trial made the report of a large sweep heavy and unreadable;
    beyond CURVES_ALL trials it draws the best CURVES_TOP (the ranking's first) over the
    10-90% band and the median of every trial's curve per step (numpy's, independently)."""
    import types

    import numpy as np

    from tune_smpl.report.data import CURVES_TOP, SweepView, curve
    from tune_smpl.sweep.outcome import rank

    _, _, _, written = sweep
    view = types.SimpleNamespace(trials=written, ranked=rank(written))
    drawn, band = SweepView.curves(view)
    assert [t.key for t, _ in drawn] == [t.key for t in rank(written) if curve(t)][:CURVES_TOP]
    by_step: dict = {}
    for t in written:
        for s, v in curve(t):
            by_step.setdefault(s, []).append(v)
    assert [b[0] for b in band] == sorted(by_step)
    for step, lo, mid, hi, n in band:
        vs = np.array(by_step[step])
        assert n == len(vs)
        assert (lo, mid, hi) == pytest.approx(tuple(np.quantile(vs, [0.1, 0.5, 0.9])))
    small = types.SimpleNamespace(trials=written[:30], ranked=rank(written[:30]))
    drawn, band = SweepView.curves(small)
    assert band == [] and [t.key for t, _ in drawn] == [t.key for t in written[:30] if curve(t)]


def test_the_importance_plot_of_a_large_sweep_is_optunas_plot_of_every_trial(sweep):
    """The importance plot reads its hover text from a small study (SweepView.knob_study:
    Optuna's plot deep-copies every trial once per knob); the figure is Optuna's plot of
    the study of every measured trial with the same importances, to the byte."""
    import optuna.visualization as ov

    from tune_smpl.report import interactive
    from tune_smpl.report.data import load_view

    _, record, _, _ = sweep
    view = load_view(record)
    assert view.importance and len(view.knob_study().trials) < 5 < len(view.values)
    full = interactive._quiet(ov.plot_param_importances, view.value_study(),
                              evaluator=interactive._Computed(view.importance),
                              target_name="val_accuracy")
    assert interactive.importance(view).to_json() == full.to_json()
