"""Define-by-run under a seeded TPE study: every sample is in range and a valid config."""

import math

import optuna
import pytest

from search_spaces import (
    ParamSpec,
    distribution,
    distributions,
    fix,
    load_space,
    make_define_by_run,
)
from smpl_core.config import SMPLConfig

TRIALS = 200
BASE = SMPLConfig(steps=50, eval_every=10).to_dict()
# Ranges that overlap, so that a sampler would break clamp_min < clamp_max: load_space
# and fix reject them (the clamp rule), so no define-by-run ever sees them.
OVERLAPPING = {
    "clamp_min": ParamSpec("float", 1e-6, 0.99, log=True),
    "clamp_max": ParamSpec("float", 0.5, 1.0),
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_study(define_by_run, objective=lambda params: 0.0, trials=TRIALS):
    """TPE (seed 0) over `trials` trials; returns the params of each trial."""
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), direction="maximize")

    def wrapped(trial):
        assert define_by_run(trial) is None  # constants reach Tune through param_space
        return objective(trial.params)

    study.optimize(wrapped, n_trials=trials)
    return [t.params for t in study.trials]


def assert_in_space(params, space):
    assert set(params) == set(space)
    for name, spec in space.items():
        value = params[name]
        if spec.type == "categorical":
            assert value in spec.choices, name
        else:
            assert spec.low <= value <= spec.high, (name, value)
            assert isinstance(value, int if spec.type == "int" else float), name


@pytest.mark.parametrize("preset", ["smpl", "smpl-extended"])
def test_presets_sample_valid_configs(preset):
    space = load_space(preset, BASE)
    samples = run_study(make_define_by_run(space))
    assert len(samples) == TRIALS
    for params in samples:
        assert_in_space(params, space)
        assert params["clamp_min"] < params["clamp_max"]
        assert 1 <= params["uda_warmup_steps"] <= BASE["steps"]
        SMPLConfig.from_dict({**BASE, **params})  # raises on any invalid value
    # The study explores: the log-int warm-up range is not stuck at one value.
    assert len({p["uda_warmup_steps"] for p in samples}) > 10


def test_rejected_overlap_would_break_the_order():
    """Why the clamp rule rejects overlapping ranges: sampled freely, they do give
    clamp_min >= clamp_max (TPE pushed towards it), which SMPLConfig refuses."""
    samples = run_study(make_define_by_run(OVERLAPPING), lambda p: p["clamp_min"] / p["clamp_max"])
    assert any(p["clamp_min"] >= p["clamp_max"] for p in samples)


def test_fixed_clamp_max_above_clamp_min_samples_valid_configs():
    space, _ = fix(load_space("smpl", BASE), {"clamp_max": 2e-3})
    samples = run_study(make_define_by_run(space), lambda p: math.log(p["clamp_min"]))
    assert max(p["clamp_min"] for p in samples) < 2e-3
    for params in samples:
        SMPLConfig.from_dict({**BASE, "clamp_max": 2e-3, **params})


def test_uda_warmup_steps_follows_steps():
    base = SMPLConfig(steps=3, eval_every=1).to_dict()
    space = load_space("smpl", base)
    samples = run_study(make_define_by_run(space), lambda p: p["uda_warmup_steps"], trials=60)
    assert {p["uda_warmup_steps"] for p in samples} == {1, 2, 3}


def test_suggests_only_the_space():
    class Recorder:
        def __init__(self):
            self.calls = []

        def suggest_float(self, name, low, high, *, log=False):
            self.calls.append(("float", name, low, high, log))
            return high

        def suggest_int(self, name, low, high, *, log=False):
            self.calls.append(("int", name, low, high, log))
            return high

        def suggest_categorical(self, name, choices):
            self.calls.append(("categorical", name, tuple(choices)))
            return choices[0]

    space = {"mu": ParamSpec("categorical", choices=(1, 7)),
             "uda_warmup_steps": ParamSpec("int", 1, 50, log=True), **OVERLAPPING}
    trial = Recorder()
    assert make_define_by_run(space)(trial) is None
    assert trial.calls == [
        ("categorical", "mu", (1, 7)),
        ("int", "uda_warmup_steps", 1, 50, True),
        ("float", "clamp_min", 1e-6, 0.99, True),  # in the space's order, ranges as given
        ("float", "clamp_max", 0.5, 1.0, False),
    ]


@pytest.mark.parametrize("preset", ["smpl", "smpl-extended"])
def test_a_trial_records_the_one_distribution_mapping(preset):
    """What a define-by-run trial records is `distributions(space)` (the mapping a warm
    start translates its prior into), knob for knob, and each is what the spec says."""
    space = load_space(preset, BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    make_define_by_run(space)(trial)
    assert trial.distributions == distributions(space)
    for name, spec in space.items():
        d = distribution(spec)
        if spec.type == "categorical":
            assert isinstance(d, optuna.distributions.CategoricalDistribution)
            assert list(d.choices) == list(spec.choices)
        else:
            kind = (optuna.distributions.IntDistribution if spec.type == "int"
                    else optuna.distributions.FloatDistribution)
            assert isinstance(d, kind), name
            assert (d.low, d.high, d.log) == (spec.low, spec.high, spec.log), name
