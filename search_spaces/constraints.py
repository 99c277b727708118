"""Rules that tie a space to the config: valid values, the step budget, the clamp pair.

Every check here runs before Ray starts (DESIGN.md, "House style": validate at the edge),
so a bad range costs one line on stderr instead of a sweep of crashing trials.

Two couplings cannot be checked one field at a time:
- `uda_warmup_steps <= steps`: `steps` is never searched, so a static cap on the range.
- `clamp_min < clamp_max` (log-space clamp of the consistency loss): when their ranges
  overlap, define-by-run samples clamp_max first and clamp_min below it
  (`clamp_min_high`); that needs clamp_min to be a float range starting below every
  clamp_max. A clamp_max fixed by `--set` narrows clamp_min's range instead (`tie`).
"""

from __future__ import annotations

import math
from typing import Any

from search_spaces.spec import ParamSpec
from smpl_core.config import SMPLConfig

# Fields whose value shapes the sweep itself: ASHA's `max_t` is steps / eval_every, and
# the `steps` bounds of a space resolve against the base config's steps.
UNSEARCHABLE = {
    "steps": "ASHA's budget and the `high: steps` bounds derive from it",
    "eval_every": "ASHA's budget (reports per trial) derives from it",
}
CAPPED_BY_STEPS = ("uda_warmup_steps",)  # beta_k warms up within the run, DESIGN.md


def check_space(space: dict[str, ParamSpec], base: dict[str, Any], src: str) -> None:
    """Raise ValueError naming `src`, the param, the rule and the value."""
    _check_config_values(space, base, src)  # first: the checks below assume valid types
    _check_steps_cap(space, base["steps"], src)
    check_clamp_order(space, src)


def _check_steps_cap(space: dict[str, ParamSpec], steps: int, src: str) -> None:
    for name in CAPPED_BY_STEPS:
        spec = space.get(name)
        if spec is None:
            continue
        if spec.highest > steps:
            key, value = ("choices", list(spec.choices)) if spec.type == "categorical" else (
                "high", spec.high)
            raise ValueError(f"{src}: `{name}`: `{key}` must be <= steps={steps} (write "
                             f"`high: steps` to follow the budget), but got {key}={value!r}.")


def _check_config_values(space: dict[str, ParamSpec], base: dict[str, Any], src: str) -> None:
    """Build an SMPLConfig at every end (or choice) of every param: SMPLConfig's own rules
    (threshold in (0, 1], lr > 0, ...) then hold across the whole range, with no second copy
    of them here. Ranges are monotone, so the two ends stand for all values between."""
    for name, spec in space.items():
        labels = ("choice",) * len(spec.choices) if spec.type == "categorical" else ("low", "high")
        for label, value in zip(labels, spec.values_to_check, strict=True):
            cfg = {**base, name: value}
            # The partner of a searched clamp is picked to fit, so probe with one that does.
            if name == "clamp_min" and "clamp_max" in space:
                cfg["clamp_max"] = 1.0
            if name == "clamp_max" and "clamp_min" in space:
                if _number(value) and value <= 0:
                    raise ValueError(f"{src}: `clamp_max`: `{label}` must be > 0 (clamp_min > 0 "
                                     f"must fit below it), but got {label}={value!r}.")
                if _number(value):
                    cfg["clamp_min"] = min(base["clamp_min"], value / 2)
            try:
                SMPLConfig.from_dict(cfg)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{src}: `{name}`: {label}={value!r} is not a valid value: "
                                 f"{e}") from None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_clamp_order(space: dict[str, ParamSpec], src: str) -> None:
    lo, hi = space.get("clamp_min"), space.get("clamp_max")
    if lo is None or hi is None or not needs_coupling(space):
        return
    if lo.type != "float":
        raise ValueError(f"{src}: `clamp_min`: `type` must be float when its range reaches "
                         f"clamp_max's (it is then sampled below each clamp_max), but got "
                         f"type={lo.type!r}.")
    if not lo.low < hi.lowest:
        raise ValueError(f"{src}: `clamp_min`: `low` must be < clamp_max's lowest value "
                         f"{hi.lowest!r}, so that every clamp_max leaves room below it, but got "
                         f"low={lo.low!r}.")


def needs_coupling(space: dict[str, ParamSpec]) -> bool:
    """True when some clamp_min of the range could reach some clamp_max of the range."""
    lo, hi = space.get("clamp_min"), space.get("clamp_max")
    return lo is not None and hi is not None and not lo.highest < hi.lowest


def clamp_min_high(spec: ParamSpec, clamp_max: float) -> float:
    """clamp_min's upper bound given a sampled clamp_max: the largest float below it."""
    return min(spec.high, math.nextafter(clamp_max, 0.0))


def tie(space: dict[str, ParamSpec], fixed: dict[str, Any]) -> dict[str, ParamSpec]:
    """Narrow a searched clamp to stay on its side of a fixed partner; raise if no value can."""
    out = dict(space)
    if "clamp_min" in out and "clamp_max" not in out and "clamp_max" in fixed:
        out["clamp_min"] = _narrow(out["clamp_min"], "clamp_min", below=fixed["clamp_max"])
    if "clamp_max" in out and "clamp_min" not in out and "clamp_min" in fixed:
        out["clamp_max"] = _narrow(out["clamp_max"], "clamp_max", above=fixed["clamp_min"])
    return out


def _narrow(spec: ParamSpec, name: str, below: float | None = None,
            above: float | None = None) -> ParamSpec:
    partner, bound = ("clamp_max", below) if below is not None else ("clamp_min", above)
    side = "<" if below is not None else ">"

    def fits(v: Any) -> bool:
        return v < bound if below is not None else v > bound

    if all(fits(v) for v in spec.values_to_check):
        return spec
    if spec.type == "categorical":
        kept = [c for c in spec.choices if fits(c)]
        if not kept:
            raise ValueError(f"`{name}`: `choices` must hold a value {side} the fixed "
                             f"{partner}={bound!r}, but got choices={list(spec.choices)!r}.")
        return ParamSpec("categorical", choices=tuple(kept))
    key = "low" if below is not None else "high"
    end = spec.low if below is not None else spec.high
    if spec.type != "float" or not fits(end):
        raise ValueError(f"`{name}`: `{key}` must be {side} the fixed {partner}={bound!r}, "
                         f"but got {key}={end!r}.")
    if below is not None:
        return spec.with_high(math.nextafter(bound, 0.0))
    return ParamSpec(spec.type, math.nextafter(bound, math.inf), spec.high, spec.log)
