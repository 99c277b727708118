"""Warm start (`tune --warm-start SWEEP`): earlier sweeps' scored search trials as the
prior of a new sweep's study.

Before the first ask, each scored search trial of the prior sweeps (completed, stopped
early, cut by the budget; never a finalist run, never a failed trial) goes into the new
study as it ended, COMPLETE or PRUNED with its intermediate values (`create_trial` +
`add_trial`), so the sampler learns from it from trial 1; the best of them are enqueued as
the first new trials. A prior trial is translated into the new space: its knobs the new
space lacks are dropped; a trial with a value outside the new ranges (or a categorical
value not among the new choices) is not added; the kept values are added under the NEW
space's distributions (Optuna's multivariate TPE models only knobs whose distribution is
the same in every trial). A knob of another type (int, float, categorical) or another
metric refuses the prior: nothing it measured can be read in the new space.

Prior trials are not the sweep's trials. They have no trial record, no MLflow run, never
count for `--num-samples` and are never the best. In the study they come first, numbers
0..P-1, each with the user attr `prior=<sweep>`; the sweep's own trial `n` is study trial
P + n. What was added is kept in the sweep folder (`prior.json`, written once when the
sweep starts), so `--resume` rebuilds the same study even if the prior sweeps are gone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import optuna
from optuna.distributions import (
    CategoricalDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.trial import TrialState, create_trial

from search_spaces import distributions
from smpl_core.errors import ConfigError
from tune_smpl.sweep.outcome import METRIC, MODE, SCORED, score
from tune_smpl.sweep.record import DamagedRecord, SweepRecord, TrialRecord, open_sweep
from tune_smpl.sweep.study import PRIOR, frozen

PRIOR_FILE = "prior.json"


def _kind(d) -> str:
    return ("categorical" if isinstance(d, CategoricalDistribution)
            else "int" if isinstance(d, IntDistribution) else "float")


def _inside(value, d) -> bool:
    if isinstance(d, CategoricalDistribution):
        return any(value == c and type(value) is type(c) for c in d.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(d, IntDistribution):
        return (float(value).is_integer() and d.low <= value <= d.high
                and (value - d.low) % d.step == 0)
    return d.low <= value <= d.high


@dataclass
class PriorSweep:
    """One prior sweep, as sweep.json's `warm_start.sweeps` and prior.json keep it."""

    name: str
    storage: str  # its storage, as a URI
    uri: str  # its record
    scored: int  # its scored search trials
    added: int  # those added to the new study
    outside: int  # those outside the new ranges (not added)


@dataclass
class PriorTrial:
    """One added trial, as prior.json keeps it: as it ended, in the new space."""

    sweep: str  # the prior sweep's name
    key: str  # its trial key there
    outcome: str  # one of outcome.SCORED
    state: str  # its Optuna state's name: COMPLETE | PRUNED
    value: float | None  # the study's value of it (outcome.score's for COMPLETE)
    score: float  # its best val_accuracy (what ranks the enqueued best)
    params: dict  # its values of the new space's knobs
    distributions: dict[str, str]  # the new space's distributions of them (Optuna JSON)
    intermediate: dict[str, float]  # step (a string: JSON) -> value


@dataclass
class Prior:
    """What the prior sweeps gave the new study. prior.json is `asdict` of it."""

    sweeps: list[PriorSweep]
    dropped: list[str]  # the prior's knobs the new space lacks (their values dropped)
    trials: list[PriorTrial]  # the added trials, in the new space
    enqueued: list[dict] = field(default_factory=list)  # params of the best, asked first

    @classmethod
    def from_dict(cls, d: dict) -> Prior:
        """prior.json's object; a TypeError or KeyError where an entry is not one."""
        return cls([PriorSweep(**s) for s in d["sweeps"]], list(d["dropped"]),
                   [PriorTrial(**t) for t in d["trials"]], list(d.get("enqueued", [])))

    @property
    def scored(self) -> int:
        return sum(s.scored for s in self.sweeps)

    @property
    def outside(self) -> int:
        return sum(s.outside for s in self.sweeps)

    def plan(self, top: int, num_samples: int) -> None:
        """Enqueue the `top` best added trials (distinct configs, at most `num_samples`)."""
        ranked = sorted(self.trials, key=lambda t: -t.score)  # stable: ties keep order
        self.enqueued = []
        for t in ranked:
            if len(self.enqueued) >= min(top, num_samples):
                break
            if t.params not in self.enqueued:
                self.enqueued.append(dict(t.params))

    def frozen(self) -> list[optuna.trial.FrozenTrial]:
        """The added trials as Optuna takes them (`study.add_trial`), in order."""
        return [create_trial(
            state=TrialState[t.state], value=t.value, params=t.params,
            distributions={k: json_to_distribution(v) for k, v in t.distributions.items()},
            intermediate_values={int(s): v for s, v in t.intermediate.items()},
            user_attrs={PRIOR: t.sweep, "prior_key": t.key, "outcome": t.outcome})
            for t in self.trials]

    def meta(self) -> dict:
        """The `warm_start` entry of sweep.json (the trials themselves are in prior.json)."""
        return {"sweeps": [asdict(s) for s in self.sweeps], "trials": len(self.trials),
                "enqueued": len(self.enqueued), "dropped_knobs": self.dropped,
                "file": PRIOR_FILE}

    def line(self) -> str:
        """The one line a warm-started sweep prints: what was added, what was not."""
        names = ", ".join(f"{s.name} ({s.uri})" for s in self.sweeps)
        dropped = (f"{len(self.dropped)} knob(s) the new space lacks dropped "
                   f"({', '.join(self.dropped)})" if self.dropped
                   else "0 knobs the new space lacks dropped")
        return (f"warm start from {names}: {len(self.trials)} of {self.scored} scored trials "
                f"added to the study, {self.outside} outside the new ranges not added, "
                f"{dropped}; the {len(self.enqueued)} best run first")


def describe(warm_start: dict | None) -> str | None:
    """What a sweep's record says about its warm start (sweep.json's `warm_start`), as the
    summary and the report put it; None for a sweep without one."""
    if not warm_start:
        return None
    names = ", ".join(f"{s['name']} ({s['uri']})" for s in warm_start["sweeps"])
    return (f"warm-started from {names}: {warm_start['trials']} prior trial(s) in the study "
            f"(not this sweep's trials, never its best), the {warm_start['enqueued']} best "
            f"run first")


def load(names: list[str], storage: str, space: dict) -> Prior:
    """The prior of a new sweep over `space` from the sweeps `names` under `storage`; a
    ConfigError (one line) for an unknown sweep, a knob of another type, another metric,
    or a prior that gives the study nothing."""
    new = distributions(space)
    sweeps: list[PriorSweep] = []
    trials: list[PriorTrial] = []
    dropped: set[str] = set()
    for name in dict.fromkeys(names):  # each sweep once, in the order given
        record = open_sweep(storage, name, what="--warm-start")
        meta = record.meta()
        metric = (meta.get("metric", METRIC), meta.get("mode", MODE))
        if metric != (METRIC, MODE):
            raise ConfigError(f"`--warm-start` must name a sweep that optimised "
                              f"{METRIC} ({MODE}), but got --warm-start={name!r}, which "
                              f"optimised {metric[0]} ({metric[1]}).")
        own = record.trials()  # search trials only: finalist runs are no trials of a study
        _check_types(name, own, new)
        scored = [t for t in own if t.outcome in SCORED
                  and not math.isnan(score(t.reports)[0])]
        added = outside = 0
        for t in scored:
            dropped |= set(t.params) - set(new)
            params = {k: v for k, v in t.params.items() if k in new}
            if not all(_inside(v, new[k]) for k, v in params.items()):
                outside += 1
                continue
            trials.append(_added(name, t, params, new))
            added += 1
        sweeps.append(PriorSweep(name, record.storage.uri(), record.uri, len(scored), added,
                                 outside))
    prior = Prior(sweeps, sorted(dropped), trials)
    if not trials:
        raise ConfigError(f"`--warm-start` must give the new study at least one trial, but "
                          f"got {', '.join(names)}: {prior.scored} scored trial(s), "
                          f"{prior.outside} outside the new ranges.")
    return prior


def _check_types(name: str, trials, new: dict) -> None:
    for t in trials:
        for k, text in t.distributions.items():
            if k in new and _kind(json_to_distribution(text)) != _kind(new[k]):
                raise ConfigError(
                    f"`--warm-start` must name a sweep whose knobs have the new space's "
                    f"types, but got --warm-start={name!r}, whose `{k}` is "
                    f"{_kind(json_to_distribution(text))} (the new space's is "
                    f"{_kind(new[k])}).")


def _added(name: str, t: TrialRecord, params: dict, new: dict) -> PriorTrial:
    """A prior trial as prior.json keeps it: as it ended, in the new space."""
    ft = frozen(t)  # its state, value and intermediate values, as the study takes them
    return PriorTrial(name, t.key, str(t.outcome), ft.state.name, ft.value,
                      score(t.reports)[0], params,
                      {k: distribution_to_json(new[k]) for k in params},
                      {str(s): v for s, v in ft.intermediate_values.items()})


# --- the record's copy ----------------------------------------------------------------
def save(record: SweepRecord, prior: Prior) -> None:
    record.storage.write_json(asdict(prior), record.name, PRIOR_FILE)


def read(record: SweepRecord, meta: dict) -> Prior | None:
    """The prior a sweep started with (its prior.json), None for a sweep without one; a
    DamagedRecord if the file does not read as one."""
    if not meta.get("warm_start"):
        return None
    uri = record.storage.uri(record.name, PRIOR_FILE)
    try:
        d = json.loads(record.storage.read_text(record.name, PRIOR_FILE))
        prior = Prior.from_dict(d)
        prior.frozen()  # every trial must rebuild
        return prior
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise DamagedRecord(uri, f"it does not hold the sweep's prior trials ({e})",
                            "restore it from a backup: the study of a warm-started sweep "
                            "is rebuilt from it") from None
