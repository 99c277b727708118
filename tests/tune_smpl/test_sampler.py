"""The sampler of a sweep: the model proposes at the default budget, the constant liar
spreads trials in flight, a seed reproduces a sweep, and each trial's `proposed_by` mark
says who really proposed it.

The fast tests run the project's sampler against an Optuna study with the project's
define-by-run (no Ray); the slow ones run real sweeps through `tune_smpl.cli.main`.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces import load_space, make_define_by_run
from tests.tune_smpl.conftest import small_sets, spy_model
from tune_smpl.sweep.study import (
    SAMPLERS,
    asha_caution,
    make_sampler,
    proposer,
    sampler_settings,
    startup_trials,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = load_space("smpl", {"steps": 100, "eval_every": 20})
DEFINE = make_define_by_run(SPACE)


def unit(name: str, value) -> float:
    """A param on [0, 1] of its range (log ranges in log space)."""
    s = SPACE[name]
    if s.log:
        return (math.log(value) - math.log(s.low)) / (math.log(s.high) - math.log(s.low))
    return (value - s.low) / (s.high - s.low)


def objective(params: dict) -> float:
    """A smooth made-up val_accuracy with its peak at lr=0.03, threshold 0.9."""
    return 1 - abs(unit("lr", params["lr"]) - unit("lr", 0.03)) - abs(
        unit("threshold", params["threshold"]) - unit("threshold", 0.9))


def distance(a: dict, b: dict) -> float:
    return math.sqrt(sum((unit(k, a[k]) - unit(k, b[k])) ** 2 for k in SPACE))


def study_of(sampler) -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=sampler)


def ask(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    DEFINE(trial)
    return trial


def first_configs(kind: str, seed: int, n: int = 8, n_startup: int = 3) -> list[dict]:
    """The params of `n` trials asked and told one at a time (made-up values)."""
    study = study_of(make_sampler(kind, seed, n_startup))
    out = []
    for _ in range(n):
        trial = ask(study)
        study.tell(trial, objective(trial.params))
        out.append(trial.params)
    return out


# --- the budget -------------------------------------------------------------------------
def model_proposals(num_samples: int, in_flight: int) -> int:
    """Trials the model proposes when trial i is asked as trial i - c finishes (c in flight):
    i - c + 1 trials have finished then."""
    n_startup = startup_trials(num_samples, in_flight)
    return sum(i - in_flight + 1 >= n_startup for i in range(num_samples))


def test_default_budget_leaves_half_the_trials_to_the_model():
    assert startup_trials(8, 2) == 3  # Optuna's default, 10, would be random search
    assert model_proposals(8, 2) == 4  # `make tune` on 2 CPUs
    assert model_proposals(8, 1) >= 4
    for n in (16, 32, 64):
        assert model_proposals(n, 2) >= n // 2
    assert startup_trials(100, 2) == 10 and startup_trials(8, 8) == 2  # the clamp


def test_sampler_settings_are_the_projects():
    sampler = make_sampler("tpe", 7, 3)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler_settings("tpe", 7, 3) == {
        "sampler": "tpe", "sampler_seed": 7, "sampler_startup_trials": 3,
        "sampler_multivariate": True, "sampler_constant_liar": True}
    assert sampler_settings("random", 7, 3) == {"sampler": "random", "sampler_seed": 7}
    with pytest.raises(ValueError, match=r"`--sampler` must be one of tpe \| random \| gp, but "
                                         r"got --sampler='cmaes'\."):
        make_sampler("cmaes", 0, 3)


# --- who proposed -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", [k for k in SAMPLERS if k != "random"])
def test_proposed_by_mark_is_what_the_sampler_did(kind):
    """The mark is computed before `ask`; the truth is whether the model's relative sample
    (Optuna's public `sample_relative`) returned params for that trial. Pruned and failed
    trials are mixed in: TPE and GP count them differently."""
    sampler = make_sampler(kind, 0, 3)
    modelled = spy_model(sampler)
    study = study_of(sampler)
    marks = []
    states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE,
              TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE, TrialState.COMPLETE]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GP/TPE experimental-feature warnings
        for state in states:
            marks.append(proposer(study, kind, 3))
            modelled.clear()
            trial = ask(study)
            value = objective(trial.params) if state == TrialState.COMPLETE else None
            if state == TrialState.PRUNED:
                trial.report(objective(trial.params), 1)
            study.tell(trial, value, state=state)
            assert len(modelled) == 1
            assert marks[-1] == (kind if modelled[0] else "random"), (len(marks), marks)
    assert marks.count(kind) >= 2  # the model did propose


def test_random_sampler_never_marks_the_model():
    study = study_of(make_sampler("random", 0, 3))
    for _ in range(6):
        assert proposer(study, "random", 3) == "random"
        trial = ask(study)
        study.tell(trial, objective(trial.params))


# --- trials in flight -------------------------------------------------------------------
def pair_in_flight(sampler) -> tuple[dict, dict]:
    """The start-up trials told, then two trials asked with the first still RUNNING."""
    study = study_of(sampler)
    for _ in range(3):
        trial = ask(study)
        study.tell(trial, objective(trial.params))
    first = ask(study)
    assert study.trials[first.number].state == TrialState.RUNNING
    second = ask(study)
    return first.params, second.params


def test_second_proposal_in_flight_moves_away_from_the_first():
    """With the liar, the RUNNING trial counts as a bad result, so the second proposal is
    not a near-copy of the first. The control is the same TPE with the liar off: over the
    same seeds, its two proposals sit much closer together."""
    seeds = range(12)
    liar = [pair_in_flight(make_sampler("tpe", s, 3)) for s in seeds]
    for a, b in liar:
        assert a != b
    no_liar = [pair_in_flight(optuna.samplers.TPESampler(
        seed=s, n_startup_trials=3, multivariate=True, constant_liar=False)) for s in seeds]
    spread = statistics.fmean(distance(a, b) for a, b in liar)
    control = statistics.fmean(distance(a, b) for a, b in no_liar)
    assert spread > 1.2 * control, (spread, control)


# --- seeds --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SAMPLERS)
def test_same_seed_same_configs_other_seed_others(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one, again, other = (first_configs(kind, s, n=5) for s in (3, 3, 4))
    assert one == again  # start-up and model proposals alike
    assert all(a != b for a, b in zip(one[:4], other[:4], strict=True))


# --- real sweeps ----------------------------------------------------------------------------
def sweep(tmp: Path, name: str, *args: str, capsys=None) -> tuple[list, optuna.Study, str]:
    """A `tune-smpl tune` in this process; (its record's trials by number, its study from
    <storage>/<name>/optuna.db, its stdout)."""
    from tune_smpl.cli import main
    from tune_smpl.sweep.record import open_sweep

    code = main(["tune", "--name", name, "--storage-path", str(tmp), "--tracking-uri",
                 f"sqlite:///{tmp}/mlflow.db", *args, *small_sets()])
    out = capsys.readouterr().out if capsys else ""
    assert code == 0, out
    trials = sorted(open_sweep(str(tmp), name).trials(), key=lambda t: t.number)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp}/{name}/optuna.db")
    return trials, study, out


@pytest.fixture(scope="module")
def default_sweep(ray_local, tmp_path_factory):
    """The default sweep (8 trials, TPE, seed 0) on 2 CPUs: 2 trials in flight."""
    tmp = tmp_path_factory.mktemp("sampler")
    return tmp, *sweep(tmp, "tpe0")


@pytest.mark.slow
def test_default_sweep_tpe_proposes_half(default_sweep):
    tmp, trials, study, _ = default_sweep
    assert len(trials) == 8 and len(study.trials) == 8
    marks = [t.user_attrs["proposed_by"] for t in study.trials]
    assert marks.count("tpe") >= 4, marks
    assert [t.proposed_by for t in trials] == marks  # the record and the study agree
    meta = json.loads((tmp / "tpe0" / "sweep.json").read_text())
    assert meta["sampler"] == sampler_settings("tpe", 0, 3)


@pytest.mark.slow
def test_random_sweep_has_no_model_marks(ray_local, tmp_path, capsys):
    trials, study, out = sweep(tmp_path, "rnd1", "--sampler", "random", "--num-samples", "4",
                               "--seed", "1", capsys=capsys)
    assert {t.proposed_by for t in trials} == {"random"}
    assert {t.user_attrs["proposed_by"] for t in study.trials} == {"random"}
    assert "sampler: random (seed 1)" in out
    assert "proposals: 4 random start-up\n" in out


@pytest.mark.slow
def test_same_seed_same_first_sweep_configs(default_sweep, tmp_path, capsys):
    _, first, _, _ = default_sweep
    again, _, out = sweep(tmp_path, "tpe0-again", capsys=capsys)
    assert "sampler: tpe (seed 0, 3 random start-up trials, multivariate, constant liar)" in out
    assert "proposed by TPE" in out
    assert [t.params for t in again[:4]] == [t.params for t in first[:4]]


def test_gp_under_asha_is_cautioned_and_stays_random_on_stopped_trials():
    """GP fits COMPLETE trials only: with ASHA able to stop trials the sweep says so, and a
    study of stopped trials leaves GP's proposer random; TPE (it counts PRUNED), random
    search, and GP with ASHA off get no caution."""
    line = asha_caution("gp", 1, 4)
    assert line is not None and "--grace-period 4 turns ASHA off" in line
    assert "grace period 1 of 4 reports" in line
    assert asha_caution("gp", 4, 4) is None
    assert asha_caution("tpe", 1, 4) is None and asha_caution("random", 1, 4) is None
    study = optuna.create_study(direction="maximize", sampler=make_sampler("gp", 0, 2))
    for _ in range(5):
        t = study.ask()
        DEFINE(t)
        t.report(0.5, 20)
        study.tell(t, state=TrialState.PRUNED)
    assert proposer(study, "gp", 2) == "random"
    assert proposer(study, "tpe", 2) == "tpe"
