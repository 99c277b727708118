"""The settings of `tune-smpl tune` and of `tune_smpl.tune(...)`: one field per flag.

`TuneOptions` is the one place where a setting of a sweep is named, given its default and
its help. The command line's flags are generated from it (`add_arguments`: `--num-samples`
is the field `num_samples`), and `tune_smpl.tune(**kwargs)` takes the same names as
keywords. What a value must be (`num_samples >= 1`, a sampler that exists) is checked
later, by the sweep's settings (`tune_smpl.sweep.settings`), with the same one-line
messages for both; here only the Python type of a keyword is checked, since argparse has
already converted a flag's text.

An options object is frozen: nothing downstream changes what the user asked for.
"""

from __future__ import annotations

import argparse
import difflib
import numbers
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from smpl_core.errors import ConfigTypeError

# How a field becomes a flag (and which Python values a keyword may have).
STR, INT, FLOAT, BOOL, LIST = "str", "int", "float", "bool", "list"
_KIND_NAMES = {STR: "a string", INT: "an integer", FLOAT: "a number", BOOL: "True or False",
               LIST: "a list of strings"}
# Fields whose value is a path: a pathlib.Path is as good as its text.
_PATHS = {"config", "space", "storage_path", "warm_start_storage"}


def _opt(default: Any, help: str, kind: str, metavar: str | None = None) -> Any:
    meta = {"help": help, "kind": kind, "metavar": metavar}
    if kind == LIST:
        return field(default=None, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TuneOptions:
    """Everything `tune-smpl tune` takes; the field `x_y` is the flag `--x-y`."""

    config: str | None = _opt(None, "base config: flat YAML of SMPLConfig fields", STR)
    # `set` names the flag; a keyword may also give a dict {field: value}.
    set: tuple[str, ...] | dict[str, Any] | None = _opt(
        None, "fix a field (a searched field is removed from the space)", LIST, "KEY=VALUE")
    dataset: str | None = _opt(None, "shorthand for --set dataset=D (default digits)", STR)
    space: str = _opt("smpl", "preset (smpl, smpl-extended) or YAML file", STR)
    num_samples: int = _opt(8, "trials in all (default 8)", INT)
    sampler: str = _opt("tpe", "tpe (default) | random | gp", STR)
    max_concurrent: int = _opt(0, "0: as resources allow", INT)
    gpus_per_trial: float | None = _opt(
        None, "fraction of a GPU per trial (default 0.25 with GPUs, else 0)", FLOAT)
    cpus_per_trial: float = _opt(1.0, "CPUs per trial (default 1)", FLOAT)
    memory_per_trial: float | None = _opt(
        None, "RAM per trial: Ray reserves it; a CPU trial that needs more ends as "
              "out_of_memory, not retried", FLOAT, "GB")
    max_failures: int = _opt(
        2, "restarts of a trial whose process died, from its last checkpoint", INT, "N")
    num_cpus: int | None = _opt(None, "local Ray only: CPUs to offer", INT)
    num_gpus: int | None = _opt(None, "local Ray only: GPUs to offer (default: detected)", INT)
    time_budget: float | None = _opt(
        None, "stop the sweep after this many seconds (its trials end cut_by_budget)", FLOAT,
        "SECONDS")
    finalists: int = _opt(
        0, "retrain the K best search trials on fresh seeds when the search ends; the best "
           "is then the finalist with the best mean (default 0)", INT, "K")
    finalist_seeds: int = _opt(2, "fresh seeds per finalist (default 2)", INT, "S")
    warm_start: tuple[str, ...] | None = _opt(
        None, "add the scored trials of this earlier sweep to the new study before the first "
              "trial, and run its best configs first (repeatable)", LIST, "SWEEP")
    warm_start_storage: str | None = _opt(
        None, "where the --warm-start sweeps are (default: --storage-path)", STR,
        "PATH_OR_URI")
    warm_start_top: int | None = _opt(
        None, "the prior's K best configs run first (default: the trial slots)", INT, "K")
    grace_period: int = _opt(2, "ASHA: reports before a stop", INT)
    reduction_factor: int = _opt(2, "ASHA reduction factor", INT)
    name: str | None = _opt(None, "sweep name (default <dataset>-<date>-<time>)", STR)
    storage_path: str = _opt("runs", "local dir or URI (default ./runs)", STR)
    shared_storage: bool = _opt(
        False, "--storage-path is a shared filesystem (NFS) every node mounts there", BOOL)
    address: str | None = _opt(
        None, "join this Ray cluster (host:port or auto; or RAY_ADDRESS)", STR)
    resume: bool = _opt(False, "resume the sweep --name", BOOL)
    seed: int = _opt(0, "seed of the sampler", INT)
    tracking_uri: str | None = _opt(
        None, "MLflow store (default sqlite:///<runs>/mlflow.db)", STR)

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f.name, f.metadata["kind"],
                                                      getattr(self, f.name), f.default))

    # --- what the sweep reads --------------------------------------------------------
    def fixed_fields(self) -> dict[str, Any]:
        """The config fields `--dataset` and `--set` give, as values (a `--set` text is a
        YAML scalar; a dict's values are taken as they are)."""
        from smpl_core.config import parse_set

        given = dict(self.set) if isinstance(self.set, Mapping) else parse_set(
            list(self.set or []))
        return {"dataset": self.dataset, **given} if self.dataset else given

    # --- the two ways in ---------------------------------------------------------------
    @classmethod
    def of(cls, args: TuneOptions | argparse.Namespace) -> TuneOptions:
        """The options of a parsed command line (a Namespace of `add_arguments`' flags), or
        `args` itself."""
        if isinstance(args, cls):
            return args
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], caller: str = "tune") -> TuneOptions:
        """The options of keyword arguments; an unknown keyword is a TypeError, as in any
        function call, with the closest valid name."""
        names = [f.name for f in fields(cls)]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}{hint}")
        return cls(**kwargs)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _checked(name: str, kind: str, value: Any, default: Any) -> Any:
    """`value` as the field keeps it, or a ConfigTypeError naming the flag (the message a
    wrong keyword gets; on the command line argparse has converted the text already)."""
    if value is None and (default is None or default is MISSING):
        return None
    if name in _PATHS and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if kind == LIST:
        if name == "set" and isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value):
                return dict(value)
        elif isinstance(value, str):  # one item: warm_start="sweep-a"
            return (value,)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        what = "a list of KEY=VALUE strings or a dict" if name == "set" else _KIND_NAMES[LIST]
        raise ConfigTypeError(f"`{flag(name)}` must be {what}, but got {flag(name)}="
                              f"{value!r}.")
    ok = {STR: lambda v: isinstance(v, str),
          INT: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
          FLOAT: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
          BOOL: lambda v: isinstance(v, bool)}[kind]
    if not ok(value):
        raise ConfigTypeError(f"`{flag(name)}` must be {_KIND_NAMES[kind]}, but got "
                              f"{flag(name)}={value!r}.")
    return {FLOAT: float, INT: int}.get(kind, lambda v: v)(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of TuneOptions, with its default and help."""
    types = {STR: str, INT: int, FLOAT: float}
    for f in fields(TuneOptions):
        kind, meta = f.metadata["kind"], {"help": f.metadata["help"]}
        if f.metadata["metavar"]:
            meta["metavar"] = f.metadata["metavar"]
        if kind == BOOL:
            parser.add_argument(flag(f.name), action="store_true", **meta)
        elif kind == LIST:
            parser.add_argument(flag(f.name), action="append", **meta)
        else:
            parser.add_argument(flag(f.name), type=types[kind], default=f.default, **meta)


def defaults() -> dict[str, Any]:
    """Each field's default (what a flag not given means)."""
    return {f.name: f.default for f in fields(TuneOptions)}
