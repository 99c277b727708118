"""A space as Optuna sees it (a define-by-run function) and as people read it.

The sweep's ledger calls the define-by-run function on each `study.ask()` trial; every
`suggest_*` call becomes a searched value of the trial's config. The function returns None:
the base config's constant fields reach the trial through Tune's `param_space`, and
suggesting them here would store constants as study params.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from search_spaces.spec import ParamSpec

if TYPE_CHECKING:  # Ray passes a stand-in with the same suggest_* methods
    import optuna
    from optuna.distributions import BaseDistribution


def make_define_by_run(space: dict[str, ParamSpec]) -> DefineByRun:
    """`fn(trial)` suggests every param of `space` in order. The space is one that
    `load_space`/`fix` checked: its uda_warmup_steps range is capped at `steps`, and its
    clamp ranges do not overlap, so every sample keeps clamp_min < clamp_max."""
    return DefineByRun(space)


class DefineByRun:
    """A callable object, not a closure: Ray pickles the searcher (and this with it) into
    every experiment snapshot, and a local function cannot be pickled."""

    def __init__(self, space: dict[str, ParamSpec]):
        self.specs = dict(space)  # a snapshot: later edits of `space` must not change the study

    def __call__(self, trial: optuna.Trial) -> None:
        for name, spec in self.specs.items():
            _suggest(trial, name, spec)
        return None


def distribution(spec: ParamSpec) -> BaseDistribution:
    """The Optuna distribution of a param: the one mapping from a space to Optuna. The
    define-by-run function suggests by it (so a trial records exactly this), and a warm
    start translates the prior trials into it (tune_smpl.sweep.prior)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if spec.type == "categorical":
        return CategoricalDistribution(list(spec.options))
    if spec.type == "int":
        return IntDistribution(spec.low, spec.high, log=spec.log)
    return FloatDistribution(spec.low, spec.high, log=spec.log)


def distributions(space: dict[str, ParamSpec]) -> dict[str, BaseDistribution]:
    """`distribution` of every param of a space, in its order."""
    return {name: distribution(spec) for name, spec in space.items()}


def _suggest(trial: optuna.Trial, name: str, spec: ParamSpec) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    d = distribution(spec)
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, list(d.choices))
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, log=d.log)
    return trial.suggest_float(name, d.low, d.high, log=d.log)


def space_to_yaml(space: dict[str, ParamSpec]) -> str:
    """The space as a space file (one flow mapping per param); `load_space` reads it back
    to the same space. Logged as the sweep's MLflow artifact."""
    # Param names are config field names (plain identifiers), so they need no quoting.
    return "".join(f"{name}: " + yaml.safe_dump(spec.to_dict(), sort_keys=False,
                                                default_flow_style=True, width=10_000)
                   for name, spec in space.items())


def describe(space: dict[str, ParamSpec]) -> list[str]:
    """One aligned line per param: `lr                logU(0.0001, 0.3)`."""
    width = max((len(name) for name in space), default=0)
    return [f"{name:<{width}}  {spec.describe()}" for name, spec in space.items()]
