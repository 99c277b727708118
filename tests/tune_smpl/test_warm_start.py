"""Warm start (issue 18): earlier sweeps' scored trials as the prior of a new sweep's study.

The prior is a synthetic record of a finished sweep (run.new_record and real TrialRecords,
as test_damaged_record.py writes one: no Ray), 8 trials over the `smpl` space, whose best
(val_accuracy 0.9999 and 0.998) no trial scored on a 100-example validation set (k/100)
can equal. The new space is narrower: `lr` from 1e-3 (two prior trials lie below: not
added) and no `clamp_max` (its values dropped). Unit tests on Optuna studies show what the
sampler reads, what runs first, the numbering and the rebuild on `--resume`; two real sweeps
warm-start from the prior in a local folder and in an S3 bucket (moto), and check every view
of the new sweep. On the failure paths (as test_reliability.py runs them): Ctrl-C and a
killed driver (the prior sweep then deleted) of a warm-started `tune` command, each
finished by `--resume`, and a time budget that cuts a warm-started sweep.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
from dataclasses import asdict
from pathlib import Path

import optuna
import pytest

from search_spaces import load_space, make_define_by_run
from smpl_core.config import SMPLConfig
from smpl_core.errors import ConfigError
from tests.tune_smpl import views
from tests.tune_smpl.conftest import (
    cli_sets,
    end_group,
    export_cli,
    kill_group,
    run_cli,
    small_sets,
    spy_model,
    start_cli,
    wait_for,
)
from tests.tune_smpl.test_remote_storage import CREDS, s3  # noqa: F401 - the bucket fixture
from tune_smpl.cli import main
from tune_smpl.launch import _sampler_line
from tune_smpl.sweep import prior as prior_of
from tune_smpl.sweep.ledger import Ledger
from tune_smpl.sweep.record import FINALIST, SweepRecord, TrialRecord, open_sweep
from tune_smpl.sweep.run import new_record
from tune_smpl.sweep.settings import SweepSettings
from tune_smpl.sweep.storage import SweepStorage
from tune_smpl.sweep.study import (
    PRIOR,
    build_study,
    check_numbers,
    distributions_json,
    make_sampler,
    proposer,
)
from tune_smpl.sweep.summary import proposals

optuna.logging.set_verbosity(optuna.logging.WARNING)
BASE = SMPLConfig(steps=40, eval_every=10, batch_size=16, mu=2, val_size=100)
PRIOR_SPACE = load_space("smpl", BASE.to_dict())
NARROW = """\
threshold: {type: float, low: 0.5, high: 0.99}
beta_zero: {type: float, low: 0.1, high: 20.0, log: true}
uda_warmup_steps: {type: int, low: 1, high: 40, log: true}
lr: {type: float, low: 0.001, high: 0.3, log: true}
clamp_min: {type: float, low: 1.0e-12, high: 0.001, log: true}
"""
# per prior trial: (outcome, best val_accuracy); trials 0 and 1 get lr below the new range
PLAN = [("completed", 0.97), ("completed", 0.99), ("completed", 0.9999),
        ("early_stopped", 0.998), ("completed", 0.95), ("diverged", None),
        ("early_stopped", 0.9), ("completed", 0.96)]
SCORED, OUTSIDE, ADDED = 7, 2, 5


def write_prior(storage: str, name: str = "prior", space: dict | None = None,
                **meta) -> SweepRecord:
    """A finished sweep's record: 8 search trials as PLAN says, and one finalist run."""
    space = space or PRIOR_SPACE
    settings = SweepSettings(name=name, storage_path=storage, num_samples=len(PLAN),
                             max_concurrent=2, sampler="random")
    record = new_record(settings, BASE, space, "sqlite:///unused.db")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = make_define_by_run(space)
    for n, (outcome, best) in enumerate(PLAN):
        trial = study.ask()
        fn(trial)
        params = dict(trial.params)
        if "lr" in params:
            params["lr"] = 5e-4 if n < OUTSIDE else min(0.2, max(0.002, params["lr"]))
        if best is None:
            reports = [{"step": 10, "diverged": True, "val_accuracy": 0.0}]
        else:
            steps = (10, 20) if outcome == "early_stopped" else (10, 20, 30, 40)
            vals = [0.5, best] if outcome == "early_stopped" else [0.5, 0.6, best, best - 0.01]
            reports = [{"step": s, "val_accuracy": v} for s, v in zip(steps, vals, strict=True)]
        record.save_trial(TrialRecord(
            key=f"{n:04d}", number=n, params=params, distributions=distributions_json(trial),
            config={**BASE.to_dict(), **params}, outcome=outcome, reports=reports,
            started=True))
    record.save_trial(TrialRecord(  # a finalist run is no trial of a study: never a prior
        key="0002_s1000", number=0, params=params, distributions={},
        config={**BASE.to_dict(), "seed": 1000}, outcome="completed",
        reports=[{"step": 40, "val_accuracy": 1.0}], role=FINALIST, finalist_of="0002"))
    record.save_meta({**record.meta(), "status": "finished", "runs": 1, **meta})
    return record


def narrow_space(tmp: Path) -> tuple[str, dict]:
    path = tmp / "narrow.yaml"
    path.write_text(NARROW)
    return str(path), load_space(str(path), BASE.to_dict())


def prior_best(record: SweepRecord, n: int) -> list[dict]:
    """The n best scored prior trials' params in the new space (without clamp_max)."""
    ranked = sorted((t for t in record.trials() if t.outcome != "diverged"
                     and t.params["lr"] >= 1e-3),
                    key=lambda t: -max(r["val_accuracy"] for r in t.reports))
    return [{k: v for k, v in t.params.items() if k != "clamp_max"} for t in ranked[:n]]


@pytest.fixture
def local(tmp_path):
    root = tmp_path / "runs"
    record = write_prior(str(root))
    path, space = narrow_space(tmp_path)
    return root, record, path, space


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- what the prior gives ---------------------------------------------------------------
def test_prior_adds_scored_trials_in_range_and_counts_the_drops(local):
    root, record, _, space = local
    prior = prior_of.load(["prior", "prior"], str(root), space)  # a name given twice counts once
    assert len(prior.trials) == ADDED and prior.scored == SCORED and prior.outside == OUTSIDE
    assert prior.dropped == ["clamp_max"]
    assert all(set(t.params) == set(space) for t in prior.trials)
    states = {t.key: t.state for t in prior.trials}
    assert states["0003"] == "PRUNED" and states["0002"] == "COMPLETE"
    assert "0005" not in states  # diverged: not scored
    pruned = next(t for t in prior.frozen() if t.user_attrs["prior_key"] == "0003")
    assert pruned.intermediate_values == {10: 0.5, 20: 0.998} and pruned.value == 0.998
    prior.plan(2, 8)
    assert prior.enqueued == prior_best(record, 2)
    assert prior.line() == (
        f"warm start from prior ({root / 'prior'}): 5 of 7 scored trials added to the study, "
        "2 outside the new ranges not added, 1 knob(s) the new space lacks dropped "
        "(clamp_max); the 2 best run first")


def test_a_knob_of_another_type_refuses_the_prior_with_one_line(local, tmp_path, capsys):
    root, _, _, _ = local
    other = tmp_path / "other.yaml"
    other.write_text("beta_zero: {type: int, low: 1, high: 20}\n"
                     "lr: {type: float, low: 0.001, high: 0.3, log: true}\n")
    rc = main(["tune", "--storage-path", str(root), "--space", str(other),
               "--warm-start", "prior", *small_sets()])
    line = _one_line(capsys.readouterr().err)
    assert rc == 2 and line == (
        "tune-smpl: error: `--warm-start` must name a sweep whose knobs have the new space's "
        "types, but got --warm-start='prior', whose `beta_zero` is float (the new "
        "space's is int).")
    other.write_text("lr: {type: categorical, choices: [0.01, 0.1]}\n")
    with pytest.raises(ConfigError, match="whose `lr` is float .the new space's is categ"):
        prior_of.load(["prior"], str(root), load_space(str(other), BASE.to_dict()))


def test_a_prior_of_another_metric_is_refused_with_one_line(tmp_path, capsys):
    root = tmp_path / "runs"
    write_prior(str(root), "lossy", metric="val_loss", mode="min")
    rc = main(["tune", "--storage-path", str(root), "--warm-start", "lossy", *small_sets()])
    assert rc == 2 and _one_line(capsys.readouterr().err) == (
        "tune-smpl: error: `--warm-start` must name a sweep that optimised val_accuracy "
        "(max), but got --warm-start='lossy', which optimised val_loss (min).")


@pytest.mark.parametrize("flags, says", [
    (["--warm-start", "nope"], "`--warm-start` must be a sweep in {root}, but got "
                               "--warm-start='nope'; found: prior."),
    (["--warm-start", "prior", "--warm-start-top", "0"],
     "`--warm-start-top` must be >= 1, but got --warm-start-top=0."),
    (["--warm-start", "prior", "--warm-start-top", "-2"],
     "`--warm-start-top` must be >= 1, but got --warm-start-top=-2."),
    (["--warm-start-top", "2"], "`--warm-start-top` needs `--warm-start SWEEP`, but got "
                                "--warm-start-top=2 alone."),
    (["--name", "prior", "--resume", "--warm-start", "prior"],
     "`--warm-start` must not be given with --resume: a resumed sweep keeps the warm start "
     "it started with (in its record)."),
])
def test_bad_warm_start_input_exits_2_with_one_line(local, capsys, flags, says):
    root = local[0]
    rc = main(["tune", "--storage-path", str(root), *flags, *small_sets()])
    assert rc == 2
    assert _one_line(capsys.readouterr().err) == f"tune-smpl: error: {says.format(root=root)}"
    assert sorted(p.name for p in root.iterdir()) == ["prior"]  # nothing was started


# --- the study with the prior ------------------------------------------------------------
def _first_proposal(prior: prior_of.Prior | None, space: dict, seed: int) -> tuple[dict, bool]:
    """(the params of the first trial TPE proposes, whether its model proposed them)."""
    sampler = make_sampler("tpe", seed, 3)
    modelled = spy_model(sampler)
    study = build_study([], "new", sampler=sampler, prior=prior)
    assert proposer(study, "tpe", 3) == ("tpe" if prior else "random")
    trial = study.ask()
    make_define_by_run(space)(trial)
    return trial.params, modelled[0]


def test_the_sampler_reads_the_prior_from_its_first_proposal(local):
    root, _, _, space = local
    prior = prior_of.load(["prior"], str(root), space)  # nothing enqueued: the model's own ask
    for seed in (0, 1):
        cold, cold_model = _first_proposal(None, space, seed)
        warm, warm_model = _first_proposal(prior, space, seed)
        assert not cold_model and warm_model  # 5 finished prior trials >= 3 start-up
        assert warm != cold
        assert warm == _first_proposal(prior, space, seed)[0]  # seeded: reproducible


def _ledger(record: SweepRecord, study, space: dict, n_prior: int,
            deadline: float | None = None) -> Ledger:
    return Ledger(record, record.trials(), study, make_define_by_run(space), BASE.to_dict(),
                  sampler="tpe", n_startup=3, steps=BASE.steps, deadline=deadline,
                  n_prior=n_prior)


def _new_sweep(root: Path, space: dict, top: int) -> tuple[SweepRecord, prior_of.Prior]:
    prior = prior_of.load(["prior"], str(root), space)
    prior.plan(top, 6)
    settings = SweepSettings(name="warm", storage_path=str(root), num_samples=6,
                             max_concurrent=2, warm_start=["prior"])
    return new_record(settings, BASE, space, "sqlite:///unused.db", prior), prior


def test_the_priors_best_run_first_as_the_sweeps_own_trials_0_and_1(local):
    root, record, _, space = local
    new, prior = _new_sweep(root, space, top=2)
    study = build_study([], "warm", sampler=make_sampler("tpe", 0, 3), prior=prior)
    ledger = _ledger(new, study, space, ADDED)
    configs = [ledger.new_trial(f"ray{i}") for i in range(3)]
    trials = new.trials()
    assert [t.key for t in trials] == ["0000", "0001", "0002"]
    assert [t.proposed_by for t in trials] == [PRIOR, PRIOR, "tpe"]
    assert [t.params for t in trials[:2]] == prior_best(record, 2)
    assert configs[0]["trial_key"] == "trial_0000"
    assert [t.number for t in study.trials] == list(range(ADDED + 3))
    check_numbers(study, trials, ADDED)
    meta = new.meta()
    assert meta["warm_start"] == {
        "sweeps": [{"name": "prior", "storage": str(root), "uri": str(root / "prior"),
                    "scored": SCORED, "added": ADDED, "outside": OUTSIDE}],
        "trials": ADDED, "enqueued": 2, "dropped_knobs": ["clamp_max"], "file": "prior.json"}
    assert meta["sampler"]["sampler_startup_prior"] == ADDED
    assert _sampler_line(meta["sampler"]) == (
        "sampler: tpe (seed 0, 2 start-up trials, met by 5 prior trials, multivariate, "
        "constant liar)")


def test_resume_rebuilds_the_prior_from_the_record_after_the_prior_is_gone(local):
    """Three of the prior's best planned, two asked before the sweep stopped (0000 ended,
    0001 unfinished): the rebuilt study has the same prior, asks 0001 again, then the
    third best; the prior sweep's own record is no longer needed."""
    root, record, _, space = local
    best = prior_best(record, 3)
    new, prior = _new_sweep(root, space, top=3)
    study = build_study([], "warm", sampler=make_sampler("tpe", 0, 3), prior=prior)
    ledger = _ledger(new, study, space, ADDED)
    ledger.new_trial("a")
    ledger.new_trial("b")
    ledger.reported("a", {"step": 40, "val_accuracy": 0.7})
    ledger.ended("a", {"step": 40, "val_accuracy": 0.7})
    shutil.rmtree(root / "prior")

    again = prior_of.read(new, new.meta())
    assert again.trials == prior.trials and again.enqueued == best
    trials = new.trials()
    rebuilt = build_study(trials, "warm", sampler=make_sampler("tpe", 1, 3), prior=again)
    check_numbers(rebuilt, trials, ADDED)
    assert [t.params for t in rebuilt.trials[:ADDED]] == [t.params for t in
                                                          study.trials[:ADDED]]
    assert all(t.user_attrs[PRIOR] == "prior" for t in rebuilt.trials[:ADDED])
    ledger = _ledger(new, rebuilt, space, ADDED)
    ledger.new_trial("c")
    ledger.new_trial("d")
    trials = {t.key: t for t in new.trials()}
    assert trials["0001"].resumes == 1 and trials["0001"].params == best[1]
    assert trials["0002"].proposed_by == PRIOR and trials["0002"].params == best[2]
    check_numbers(rebuilt, list(trials.values()), ADDED)


def test_a_resumed_prior_best_cut_by_the_budget_keeps_its_last_value_in_the_study(local):
    """A prior best interrupted after two reports, resumed with its budget spent and cut
    before it reports again: the study of that run has it PRUNED with its recorded reports
    and last value, as the record (and a rebuild from it) has it, not PRUNED without one."""
    root, _, _, space = local
    new, prior = _new_sweep(root, space, top=2)
    ledger = _ledger(new, build_study([], "warm", sampler=make_sampler("tpe", 0, 3),
                                      prior=prior), space, ADDED)
    ledger.new_trial("a")
    ledger.reported("a", {"step": 10, "val_accuracy": 0.6})
    ledger.reported("a", {"step": 20, "val_accuracy": 0.7})
    assert [t.key for t in ledger.settle(interrupted=True)] == ["0000"]

    trials = new.trials()
    study = build_study(trials, "warm", sampler=make_sampler("tpe", 1, 3),
                        prior=prior_of.read(new, new.meta()))
    ledger = _ledger(new, study, space, ADDED, deadline=0.0)  # the budget is spent
    ledger.new_trial("b")  # 0000 again, from its checkpoint
    ledger.ended("b", None)  # cut before its first new report
    (t,) = new.trials()
    assert t.key == "0000" and t.outcome == "cut_by_budget" and t.proposed_by == PRIOR
    ran = study.trials[ADDED]
    assert (ran.state, ran.value, ran.intermediate_values) == (
        optuna.trial.TrialState.PRUNED, 0.7, {10: 0.6, 20: 0.7})
    rebuilt = build_study(new.trials(), "warm", prior=prior_of.read(new, new.meta())).trials[ADDED]
    assert (rebuilt.state, rebuilt.value, rebuilt.intermediate_values) == (
        ran.state, ran.value, ran.intermediate_values)


def test_a_damaged_prior_file_is_named(local):
    root, _, _, space = local
    new, _ = _new_sweep(root, space, top=2)
    (root / "warm" / "prior.json").write_text('{"sweeps": [')
    with pytest.raises(ConfigError, match=r"prior\.json must be intact, but it does not hold "
                                          r"the sweep's prior trials"):
        prior_of.read(new, new.meta())


def test_the_proposals_line_counts_the_prior_on_its_own():
    marks = ["prior", "prior", "random", *["tpe"] * 5]
    trials = [TrialRecord(key=f"{i:04d}", number=i, params={}, distributions={}, config={},
                          proposed_by=m) for i, m in enumerate(marks)]
    assert proposals(trials) == "2 from the prior, 1 random start-up, 5 proposed by TPE"
    assert proposals(trials[2:]) == "1 random start-up, 5 proposed by TPE"


# --- real sweeps ---------------------------------------------------------------------------
def _check_warm_sweep(root: Path, name: str, out: str, export: str, *, trials: int,
                      enqueued: list[dict], uri: str) -> dict:
    """The views of a finished warm-started sweep: its record, its study (prior + own
    trials), MLflow, the summary and the export agree; the prior's best ran first and is
    not the best; the rebuild from the record (what --resume does) is the study it ran."""
    sweep = root / name
    rec = views.check_finished(sweep, uri, trials=trials, summary=out, export=export)
    keys = sorted(rec)
    assert [rec[k]["params"] for k in keys[:len(enqueued)]] == enqueued
    assert [rec[k]["proposed_by"] for k in keys[:len(enqueued)]] == [PRIOR] * len(enqueued)
    top = views.best_of(rec)  # the summary, the parent run and the export say it too
    added = json.loads((sweep / "prior.json").read_text())["trials"]
    # A new trial; the prior's 0.9999 (no k/100 of a 100-example val set) never wins.
    assert top[0] in rec and top[1] != max(t["score"] for t in added) == 0.9999
    assert f"proposals: {len(enqueued)} from the prior, " in out
    meta = json.loads((sweep / "sweep.json").read_text())
    n_prior = meta["warm_start"]["trials"]
    record = open_sweep(str(root), name)
    rebuilt = build_study(record.trials(), name, prior=prior_of.read(record, meta))
    check_numbers(rebuilt, record.trials(), n_prior)
    ran = views.study(sweep).trials
    assert [(t.params, t.state, t.value) for t in rebuilt.trials] == [
        (t.params, t.state, t.value) for t in ran]
    parent, _ = views.mlflow_runs(uri, name)
    assert parent.data.params["warm_start"] == '["prior"]'
    assert parent.data.params["warm_start_trials"] == str(n_prior)
    assert parent.data.params["warm_start_enqueued"] == str(len(enqueued))
    storage = meta["warm_start"]["sweeps"][0]["storage"]
    assert json.loads(parent.data.params["warm_start_storages"]) == [storage]
    assert parent.data.params["sampler_startup_prior"] == str(n_prior)
    desc = (sweep / "report" / "description.md").read_text()
    html = (sweep / "report" / "report.html").read_text()
    assert "warm-started from prior" in desc and "id='warm-start'" in html
    assert f"{n_prior} prior trial(s) in the study" in desc
    return meta


def _run(root: Path, uri: str, name: str, capsys, *args: str) -> tuple[str, str]:
    rc = main(["tune", "--name", name, "--storage-path", str(root), "--tracking-uri", uri,
               "--gpus-per-trial", "0", *args, *small_sets()])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert main(["export", name, "--storage-path", str(root)]) == 0
    return out, capsys.readouterr().out


@pytest.mark.slow
def test_warm_start_from_a_local_sweep_into_a_narrower_space(ray_local, local, tmp_path,
                                                             capsys):
    root, record, path, _ = local
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out, export = _run(root, uri, "warm", capsys, "--space", path, "--warm-start", "prior",
                       "--num-samples", "3", "--grace-period", "4")
    assert (f"warm start from prior ({root / 'prior'}): 5 of 7 scored trials added to the "
            "study, 2 outside the new ranges not added, 1 knob(s) the new space lacks "
            "dropped (clamp_max); the 2 best run first\n") in out
    assert "2 start-up trials, met by 5 prior trials" in out
    meta = _check_warm_sweep(root, "warm", out, export, trials=3,
                             enqueued=prior_best(record, 2), uri=uri)
    assert meta["warm_start"]["enqueued"] == 2  # as many as the trial slots
    assert "proposals: 2 from the prior, 0 random start-up, 1 proposed by TPE" in out


@pytest.mark.slow
def test_warm_start_from_a_sweep_in_a_bucket(ray_local, s3, tmp_path, capsys,  # noqa: F811
                                             monkeypatch):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    record = write_prior(s3)
    assert SweepRecord(SweepStorage(s3), "prior").exists()
    path, _ = narrow_space(tmp_path)
    root, uri = tmp_path / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    out, export = _run(root, uri, "warm-s3", capsys, "--space", path, "--warm-start",
                       "prior", "--warm-start-storage", s3, "--warm-start-top", "1",
                       "--num-samples", "2", "--grace-period", "4")
    bucket = s3.replace("/runs?", "/runs/prior?")
    assert f"warm start from prior ({bucket}): 5 of 7 scored trials added" in out
    meta = _check_warm_sweep(root, "warm-s3", out, export, trials=2,
                             enqueued=prior_best(record, 1), uri=uri)
    assert meta["warm_start"]["sweeps"][0]["storage"] == s3
    assert meta["warm_start"]["sweeps"][0]["uri"] == bucket
    assert meta["settings"]["warm_start_storage"] == s3


# --- a warm-started sweep on the failure paths ----------------------------------------
# The command in subprocesses (each with its own Ray), as test_reliability.py runs it: the
# three best prior trials planned (`--warm-start-top 3`) on two slots, so that a stop while
# the first two run leaves the third still to be asked from the record's copy.
TOP, SAMPLES, STEPS = 3, 4, 60  # ten reports of 6 steps per trial


def _planned(root: Path, space: dict) -> dict:
    """prior.json as a new sweep of SAMPLES trials with TOP planned writes it."""
    prior = prior_of.load(["prior"], str(root), space)
    prior.plan(TOP, SAMPLES)
    return json.loads(json.dumps(asdict(prior)))


def _start_warm(tmp_path: Path, tag: str, name: str, path: str, *extra: str):
    return start_cli(tmp_path, tag, "--name", name, "--space", path, "--warm-start", "prior",
                     "--warm-start-top", str(TOP), "--num-samples", str(SAMPLES),
                     "--max-concurrent", "2", *extra)


def _study_written(sweep: Path) -> bool:
    """The study file holds the rebuilt study with the prior's trials: a resume rebuilds
    optuna.db on its mirror's thread (study_mirror.py), so a driver killed before that
    thread caught up leaves a file the next --resume rebuilds (a view, by design), and a
    kill meant to test the file waits for it."""
    db = sweep / "optuna.db"
    if not db.exists():  # read only: Optuna's load_study would make the file itself
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            (n,) = con.execute("SELECT count(*) FROM trials JOIN studies USING (study_id) "
                               "WHERE study_name = ?", (sweep.name,)).fetchone()
    except sqlite3.Error:  # no tables yet, or the thread holds the lock
        return False
    return n >= ADDED


def _kept_prior(sweep: Path, planned: dict, status: str) -> dict:
    """After a stop: sweep.json says how the sweep stopped and still has its warm start,
    prior.json is the prior the sweep started with, and the study file holds it. Returns
    sweep.json."""
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["status"] == status
    assert meta["warm_start"]["trials"] == ADDED and meta["warm_start"]["enqueued"] == TOP
    assert meta["sampler"]["sampler_startup_prior"] == ADDED
    assert json.loads((sweep / "prior.json").read_text()) == planned
    views.own_trials(sweep, views.study(sweep))  # the prior's trials first, as in prior.json
    return meta


def _check_resumed(root: Path, name: str, done, export, best: list[dict], uri: str,
                   snapshots: list[dict], planned: dict) -> dict:
    """The views of a warm-started sweep finished by --resume: its prior kept from the
    record, the planned best run once each, as its first trials, never the best; every
    trial of a snapshot ran on (history kept), none twice."""
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "warm-started from prior" in out and "(kept from its record)" in out
    assert f"2 start-up trials, met by {ADDED} prior trials" in out
    assert len(best) == TOP
    _check_warm_sweep(root, name, out, export.stdout, trials=SAMPLES, enqueued=best, uri=uri)
    sweep = root / name
    assert json.loads((sweep / "prior.json").read_text()) == planned  # never rewritten
    rec = views.record(sweep)
    assert [rec[k]["proposed_by"] for k in sorted(rec)][TOP:] == ["tpe"] * (SAMPLES - TOP)
    assert f"proposals: {TOP} from the prior, 0 random start-up, {SAMPLES - TOP} proposed " \
           "by TPE" in out
    own = views.own_trials(sweep, views.study(sweep))
    for params in best:  # an enqueued best ran once, as one trial of the sweep
        assert sum(t.params == params for t in own.values()) == 1, params
    for before in snapshots:
        views.history_kept(before, rec)
        for key, t in before.items():  # a trial asked before the stop ran on, not replaced
            assert rec[key]["params"] == t["params"]
            assert rec[key]["proposed_by"] == t["proposed_by"]
    return rec


@pytest.mark.slow
def test_ctrl_c_of_a_warm_started_sweep_then_resume_keeps_its_prior(local, tmp_path):
    """Ctrl-C while the prior's two best run: exit 130, both interrupted, the third best
    not asked yet, the record's prior intact; --resume runs the two on from their
    checkpoints, then the third best, then TPE's proposal, each once."""
    root, record, path, space = local
    sweep, uri = root / "wc", f"sqlite:///{tmp_path}/mlflow.db"
    planned = _planned(root, space)
    proc = _start_warm(tmp_path, "wc", "wc", path, *cli_sets(steps=STEPS))
    try:  # no trial can end before 10 reports (grace 10): 3 reports, both still running
        wait_for(proc, lambda: views.report_count(sweep) >= 3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        end_group(proc, "wc")
    assert proc.returncode == 130, out
    assert "the 3 best run first" in out
    assert f"tune-smpl tune --name wc --storage-path {root} --resume" in out
    before = views.check_interrupted(sweep, uri)
    assert sorted(before) == ["0000", "0001"]
    assert all(t["interrupted"] and t["proposed_by"] == PRIOR for t in before.values())
    assert [before[k]["params"] for k in sorted(before)] == prior_best(record, 2)
    _kept_prior(sweep, planned, "interrupted")

    done = run_cli(tmp_path, "wc", "--name", "wc", "--resume")
    rec = _check_resumed(root, "wc", done, export_cli(tmp_path, "wc", "wc"),
                         prior_best(record, TOP), uri, [before], planned)
    assert rec["0000"]["resumes"] == rec["0001"]["resumes"] == 1
    assert rec["0002"]["resumes"] == 0 and rec["0002"]["proposed_by"] == PRIOR


@pytest.mark.slow
def test_killed_driver_of_a_warm_started_sweep_resumes_without_the_prior_sweep(local,
                                                                               tmp_path):
    """SIGKILL the driver between two checkpoints of a prior best, delete the prior sweep,
    --resume and SIGKILL it again once it has asked a new trial, then --resume to the end:
    the study is rebuilt from prior.json each time, the planned best run once each."""
    root, record, path, space = local
    sweep, uri = root / "wk", f"sqlite:///{tmp_path}/mlflow.db"
    planned, best = _planned(root, space), prior_best(record, TOP)  # before it goes
    snapshots: list[dict] = []

    def between_checkpoints() -> bool:
        rec = views.record(sweep)
        return any(len(t["reports"]) >= 2 and not t["outcome"] for t in rec.values())

    def kill_when(proc, until) -> None:
        """SIGKILL the driver once `until` holds; the record stays as last written."""
        try:
            wait_for(proc, until)
        finally:
            kill_group(proc, "wk")
        assert proc.returncode == -signal.SIGKILL
        snapshots.append(views.record(sweep))
        _kept_prior(sweep, planned, "running")

    kill_when(_start_warm(tmp_path, "wk", "wk", path, *cli_sets(steps=STEPS, grace=1)),
              between_checkpoints)
    shutil.rmtree(root / "prior")  # prior.json is all a resume needs

    asked, seen = len(snapshots[-1]), views.report_count(sweep)

    def moved_on() -> bool:  # a new trial asked (a report, if every trial was asked)
        return ((len(views.record(sweep)) > asked if asked < SAMPLES
                 else views.report_count(sweep) > seen) and _study_written(sweep))

    kill_when(start_cli(tmp_path, "wk", "--name", "wk", "--resume"), moved_on)

    done = run_cli(tmp_path, "wk", "--name", "wk", "--resume")
    assert not (root / "prior").exists()
    _check_resumed(root, "wk", done, export_cli(tmp_path, "wk", "wk"), best, uri, snapshots,
                   planned)


@pytest.mark.slow
def test_a_time_budget_cuts_a_warm_started_sweep(ray_local, local, tmp_path, capsys):
    """The budget cuts the prior's best and TPE's first proposal alike: cut_by_budget in
    the record, PRUNED in the study beside the untouched prior trials, counted so in the
    summary, whose proposals line counts the prior's on their own; the best is a trial of
    the sweep, never a prior trial."""
    root, record, path, space = local
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # ASHA never stops a trial and none can finish 20000 steps in 30 s: the budget ends them.
    sets = ["steps=20000", "eval_every=50", "batch_size=16", "mu=2", "val_size=100"]
    rc = main(["tune", "--name", "wb", "--storage-path", str(root), "--tracking-uri", uri,
               "--space", path, "--warm-start", "prior", "--warm-start-top", "1",
               "--num-samples", "4", "--gpus-per-trial", "0", "--time-budget", "30",
               "--grace-period", "400", *sum((["--set", s] for s in sets), [])])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert main(["export", "wb", "--storage-path", str(root)]) == 0
    export = capsys.readouterr().out
    rec = views.record(root / "wb")
    meta = _check_warm_sweep(root, "wb", out, export, trials=None,
                             enqueued=prior_best(record, 1), uri=uri)
    assert meta["status"] == "finished" and meta["wall_s"] > 25
    outcomes = [t["outcome"] for t in rec.values()]
    assert len(outcomes) >= 2 and set(outcomes) == {"cut_by_budget"}
    assert f"{len(outcomes)} trials: 0 completed, 0 stopped early, {len(outcomes)} cut by " \
           "budget" in out
    assert (f"proposals: 1 from the prior, 0 random start-up, {len(outcomes) - 1} proposed "
            "by TPE") in out
    st = views.study(root / "wb")
    assert [t.state.name for t in st.trials[:ADDED]] == [
        t["state"] for t in json.loads((root / "wb" / "prior.json").read_text())["trials"]]
    assert {t.state.name for t in st.trials[ADDED:]} == {"PRUNED"}
