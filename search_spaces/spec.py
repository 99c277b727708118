"""ParamSpec: how one config field is searched (a range or a list of choices).

A space is a plain `dict[str, ParamSpec]` keyed by SMPLConfig field names, in the order
the fields are suggested. ParamSpec checks its own shape when built, so a space made in
code and a space read from YAML obey the same rules; the loader adds the file and the
param name in front of these messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NoReturn

from smpl_core.errors import ConfigError

TYPES = ("float", "int", "categorical")
KEYS = ("type", "low", "high", "log", "choices")  # the keys of one param's YAML mapping


def _fail(key: str, rule: str, value: Any) -> NoReturn:
    raise ConfigError(f"`{key}` must be {rule}, but got {key}={value!r}.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_float(key: str, v: Any) -> float:
    """A finite float; numeric strings are accepted because YAML 1.1 reads `1e-4` (no dot)
    as a string, and a space file should not have to spell it `1.0e-4`."""
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        _fail(key, "a finite number for type float", v)
    return float(v)


@dataclass(frozen=True)
class ParamSpec:
    type: str  # float | int | categorical
    low: float | int | None = None  # inclusive; float and int only
    high: float | int | None = None  # inclusive; float and int only
    log: bool = False  # sample uniformly in log space (needs low > 0)
    choices: tuple[Any, ...] | None = None  # categorical only

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            _fail("type", "one of " + " | ".join(TYPES), self.type)
        if not isinstance(self.log, bool):
            _fail("log", "true or false", self.log)
        if self.type == "categorical":
            self._check_categorical()
        else:
            self._check_range()

    def _check_categorical(self) -> None:
        for key in ("low", "high"):
            if getattr(self, key) is not None:
                _fail(key, "absent for type categorical (it samples from `choices`)",
                      getattr(self, key))
        if self.log:
            _fail("log", "false for type categorical", self.log)
        choices = self.choices
        if not isinstance(choices, (list, tuple)) or not choices:
            _fail("choices", "a non-empty list for type categorical", choices)
        for c in choices:
            # Optuna stores categorical values as these types only.
            if c is not None and not isinstance(c, (str, int, float, bool)):
                _fail("choices", "a list of strings, numbers or booleans", list(choices))
        if len(set(map(repr, choices))) != len(choices):
            _fail("choices", "distinct values", list(choices))
        object.__setattr__(self, "choices", tuple(choices))

    def _check_range(self) -> None:
        if self.choices is not None:
            _fail("choices", f"absent for type {self.type} (it samples from `low` to `high`)",
                  self.choices)
        for key in ("low", "high"):
            v = getattr(self, key)
            if v is None:
                raise ConfigError(f"`{key}` must be given for type {self.type}, "
                                  f"but got no `{key}`.")
            if self.type == "int" and not _is_int(v):
                _fail(key, "an integer for type int", v)
            if self.type == "float":
                object.__setattr__(self, key, _as_float(key, v))
        low, high = self.low, self.high  # both given: checked above
        if low is None or high is None or not low < high:
            _fail("low", f"< high={high!r}", low)
        if self.log and not low > 0:
            _fail("low", "> 0 for a log scale (log: true)", low)

    # --- views -------------------------------------------------------------------
    @property
    def values_to_check(self) -> tuple[Any, ...]:
        """The values that bound what this spec can sample: its ends or its choices."""
        return self.options if self.type == "categorical" else (self.low, self.high)

    @property
    def options(self) -> tuple[Any, ...]:
        """The choices of a categorical spec; () for a range."""
        return self.choices or ()

    @property
    def lowest(self) -> Any:
        return min(self.values_to_check)

    @property
    def highest(self) -> Any:
        return max(self.values_to_check)

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping of this spec (the inverse of the loader)."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.options)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        return out

    def describe(self) -> str:
        """`logU(0.0001, 0.3)`, `int logU(1, 600)`, `U(0.5, 0.99)`, `{paper, code}`."""
        if self.type == "categorical":
            return "{" + ", ".join(str(c) for c in self.options) + "}"
        dist = ("logU" if self.log else "U") + f"({self.low:g}, {self.high:g})"
        return f"int {dist}" if self.type == "int" else dist
