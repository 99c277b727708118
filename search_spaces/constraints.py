"""Rules that tie a space to the config: valid values, the step budget, the clamp pair.

Every check here runs before Ray starts (docs/design.md, "House style": validate at the edge),
so a bad range costs one line on stderr instead of a sweep of crashing trials.

Two couplings cannot be checked one field at a time:
- `uda_warmup_steps <= steps`: `steps` is never searched, so a static cap on the range.
- `clamp_min < clamp_max` (log-space clamp of the consistency loss): one rule, checked here
  only: every clamp_min the space can give lies below every clamp_max it can give, a clamp
  it does not search being the base config's value (`load_space`) or the `--set` value
  (`fix`). Overlapping ranges are rejected, not coupled: the presets' ranges are decades
  apart (clamp_min <= 1e-3, clamp_max >= 0.9), and a sampler then draws each clamp freely.
"""

from __future__ import annotations

from typing import Any

from search_spaces.spec import ParamSpec
from smpl_core.config import SMPLConfig
from smpl_core.errors import ConfigError

# Fields whose value shapes the sweep itself: ASHA's `max_t` is steps / eval_every, and
# the `steps` bounds of a space resolve against the base config's steps.
UNSEARCHABLE = {
    "steps": "ASHA's budget and the `high: steps` bounds derive from it",
    "eval_every": "ASHA's budget (reports per trial) derives from it",
}
CAPPED_BY_STEPS = ("uda_warmup_steps",)  # beta_k warms up within the run, docs/design.md
CLAMPS = ("clamp_min", "clamp_max")


def _partner(name: str) -> str:
    return CLAMPS[1 - CLAMPS.index(name)]


def check_space(space: dict[str, ParamSpec], base: dict[str, Any], src: str) -> None:
    """Raise ValueError naming `src`, the param, the rule and the value."""
    check_clamp_order(space, base, src, "the config's")  # first: the probes below assume it
    _check_config_values(space, base, src)
    _check_steps_cap(space, base["steps"], src)


def _check_steps_cap(space: dict[str, ParamSpec], steps: int, src: str) -> None:
    for name in CAPPED_BY_STEPS:
        spec = space.get(name)
        if spec is None:
            continue
        if spec.highest > steps:
            key, value = ("choices", list(spec.options)) if spec.type == "categorical" else (
                "high", spec.high)
            raise ConfigError(f"{src}: `{name}`: `{key}` must be <= steps={steps} (write "
                              f"`high: steps` to follow the budget), but got {key}={value!r}.")


def _check_config_values(space: dict[str, ParamSpec], base: dict[str, Any], src: str) -> None:
    """Build an SMPLConfig at every end (or choice) of every param: SMPLConfig's own rules
    (threshold in (0, 1], lr > 0, ...) then hold across the whole range, with no second copy
    of them here. Ranges are monotone, so the two ends stand for all values between."""
    for name, spec in space.items():
        labels = ("choice",) * len(spec.options) if spec.type == "categorical" else ("low", "high")
        for label, value in zip(labels, spec.values_to_check, strict=True):
            cfg = {**base, name: value}
            # A searched partner clamp is probed at its far end, which the clamp rule
            # (checked first) keeps on its own side of every value of this one.
            if name in CLAMPS and _partner(name) in space:
                ends = space[_partner(name)].values_to_check
                cfg[_partner(name)] = max(ends) if name == "clamp_min" else min(ends)
            try:
                SMPLConfig.from_dict(cfg)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{src}: `{name}`: {label}={value!r} is not a valid value: "
                                  f"{e}") from None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_clamp_order(space: dict[str, ParamSpec], values: dict[str, Any], src: str,
                      given: str) -> None:
    """The clamp rule: the highest clamp_min < the lowest clamp_max, over what `space`
    searches and, for a clamp it does not search, `values[name]` (skipped when absent).
    `given` says where `values` come from ("the config's", "the fixed"). Non-numbers are
    left to SMPLConfig's own type checks."""
    searched = [n for n in CLAMPS if n in space]
    ends = {n: space[n].values_to_check if n in space else (values[n],)
            for n in CLAMPS if n in space or n in values}
    if not searched or len(ends) < 2 or not all(map(_number, sum(ends.values(), ()))):
        return
    top, bottom = max(ends["clamp_min"]), min(ends["clamp_max"])
    if top < bottom:
        return
    # Name the searched field whose end crosses the other clamp (clamp_min when both do).
    name = "clamp_min" if "clamp_min" in space else "clamp_max"
    spec, value = space[name], top if name == "clamp_min" else bottom
    key = "choices" if spec.type == "categorical" else ("high" if name == "clamp_min" else "low")
    got = list(spec.options) if key == "choices" else value
    other = ("clamp_max", bottom) if name == "clamp_min" else ("clamp_min", top)
    where = (f"clamp_max's lowest value {bottom!r}" if name == "clamp_min" and
             "clamp_max" in space else f"{given} {other[0]}={other[1]!r}")
    side = "<" if name == "clamp_min" else ">"
    raise ConfigError(f"{src}: `{name}`: `{key}` must be {side} {where} (clamp ranges must not "
                      f"overlap: clamp_min < clamp_max for every sample), but got {key}={got!r}.")
