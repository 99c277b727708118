"""SMPLConfig: every setting of one SMPL run, validated at construction.

A Tune trial's config, a YAML config file and an exported best config are all
the same flat mapping of these field names (see docs/design.md, "Configuration").
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from smpl_core.errors import ConfigError, ConfigTypeError

METHODS = ("smpl", "uda", "supervised", "mpl")
DATASETS = ("moons", "digits", "cifar10", "folder", "parquet")
MODELS = ("auto", "mlp", "cnn", "wrn28_2")
FEEDBACK_SIGNS = ("paper", "code")
FEEDBACK_SCALES = ("raw", "per_lr", "normalised")
FEEDBACK_CONTROLS = ("none", "shuffled", "constant")
SECOND_PASSES = ("reuse", "recompute")
AMP_MODES = ("auto", "bf16", "off")
COMPILE_MODES = ("off", "on", "auto")
EVAL_BN_MODES = ("precise", "running")


@dataclass(frozen=True)
class SMPLConfig:
    # --- what to train -------------------------------------------------------
    method: str = "smpl"  # smpl | uda (UDA alone) | supervised | mpl (teacher + student)
    dataset: str = "digits"  # moons | digits | cifar10 | folder | parquet
    data_dir: str = "data"  # where cifar10 is downloaded; folder/parquet path or URI
    image_column: str = "image"  # parquet: column of encoded image bytes
    label_column: str = "label"  # parquet: column of integer labels
    image_size: int = 32  # folder/parquet: images are resized to this (pixels)
    num_labeled: int = 50  # labelled training examples, spread evenly over classes
    val_size: int = 200  # further labelled examples held out for validation
    model: str = "auto"  # auto | mlp | cnn | wrn28_2 (auto: by dataset)
    # --- budget ----------------------------------------------------------------
    steps: int = 600  # optimiser steps in all
    eval_every: int = 100  # steps between evaluations, one Tune report each (> steps: one)
    batch_size: int = 32  # labelled batch B
    mu: int = 7  # unlabelled batch = mu * B
    # --- optimiser: SGD with linear warm-up then cosine decay --------------------
    lr: float = 0.05
    lr_warmup_steps: int = 0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # --- SMPL ---------------------------------------------------------------------
    threshold: float = 0.95  # masking threshold tau on the weak view's confidence
    temperature: float = 1.0  # pseudo-label sharpening T
    beta_zero: float = 1.0  # UDA weight at the end of its warm-up
    uda_warmup_steps: int = 100  # beta_k = beta_zero * min(1, (k+1)/uda_warmup_steps)
    # The log-space clamp is this project's addition: neither reference (max-ng/megaboost,
    # kekmodel/MPL-pytorch) clamps; clamp_min=1e-30, clamp_max=1 is effectively no clamp.
    clamp_min: float = 1e-8  # probability floor inside the consistency loss's log
    clamp_max: float = 1.0  # probability ceiling inside the consistency loss's log
    label_smoothing: float = 0.0  # on the labelled CE and the first update's CE (both refs)
    grad_clip: float = 0.0  # max grad norm of the second update (0: off)
    feedback_sign: str = "paper"  # paper: h = L_old - L_new; code: h = L_new - L_old
    feedback_baseline: bool = False  # subtract a 0.99 moving average (of h; per_lr: of h/lr)
    # How h becomes the f of L_mpl = f * CE (smpl_core/feedback.py: sign, baseline and scale,
    # clip, control, in that order). raw: f = h (today) | per_lr: h / lr_k, no fading with
    # the schedule | normalised: (h - b) / s, b and s running 0.99 mean and std, so that
    # mpl_weight alone sets the size.
    feedback_scale: str = "raw"
    feedback_clip: float = 0.0  # bound on the scaled feedback, |f| <= clip (0: off)
    # Controls for the study of the meta term: none | shuffled (f of a random earlier step:
    # same distribution, no relation to this step) | constant (its running mean: an extra
    # loss term without per-step signal).
    feedback_control: str = "none"
    second_pass: str = "reuse"  # reuse step 1's graph | recompute at theta'
    mpl_weight: float = 1.0  # weight of L_mpl in the second update (0: first update, no meta term)
    # --- evaluation -----------------------------------------------------------------
    ema_decay: float = 0.0  # EMA of the weights, evaluated instead of them (0: off)
    eval_bn: str = "precise"  # precise: BatchNorm stats recomputed before each eval | running
    eval_bn_batches: int = 10  # training-sized batches of clean training images for precise BN
    # --- speed ----------------------------------------------------------------------
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    channels_last: bool = True  # conv models on CUDA only
    compile: str = "off"  # off | on | auto (on where the run is long enough to pay)
    # --- reproducibility ---------------------------------------------------------
    seed: int = 0
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, f.type, getattr(self, f.name)))
        _validate(self)

    # --- flat mapping -----------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SMPLConfig:
        names = cls.field_names()
        for key in d:
            if key not in names:
                raise ConfigError(unknown_key_message(str(key), names, "config"))
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> SMPLConfig:
        return self.from_dict({**self.to_dict(), **changes})

    def to_yaml(self, header: str = "") -> str:
        lines = [f"# {line}" if line else "#" for line in header.splitlines()]
        body = yaml.safe_dump(self.to_dict(), sort_keys=False)
        return "\n".join(lines + [body]) if lines else body


def unknown_key_message(key: str, valid: list[str], what: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(valid)}"
    return f"`{key}` is not a {what} key{hint}"


_FIELD_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    kind = _FIELD_TYPES[type_name if isinstance(type_name, str) else type_name.__name__]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-8" as a string; accept it as the number it is.
            return float(value)
        except ValueError:
            pass
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    label = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    raise ConfigTypeError(f"`{name}` must be {label[kind]}, but got {name}={value!r}.")


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"`{name}` must be {rule}, but got {name}={value!r}.")


def _validate(c: SMPLConfig) -> None:
    for name, choices in (
        ("method", METHODS),
        ("dataset", DATASETS),
        ("model", MODELS),
        ("feedback_sign", FEEDBACK_SIGNS),
        ("feedback_scale", FEEDBACK_SCALES),
        ("feedback_control", FEEDBACK_CONTROLS),
        ("second_pass", SECOND_PASSES),
        ("amp", AMP_MODES),
        ("compile", COMPILE_MODES),
        ("eval_bn", EVAL_BN_MODES),
    ):
        _check(getattr(c, name) in choices, name, "one of " + " | ".join(choices), getattr(c, name))
    for name in ("lr", "beta_zero", "temperature", "clamp_min", "clamp_max", "threshold",
                 "momentum", "weight_decay", "label_smoothing", "grad_clip", "mpl_weight",
                 "ema_decay", "feedback_clip"):
        _check(math.isfinite(getattr(c, name)), name, "a finite number", getattr(c, name))
    _check(0.0 < c.threshold <= 1.0, "threshold", "in (0, 1]", c.threshold)
    _check(c.clamp_max <= 1.0, "clamp_max", "at most 1", c.clamp_max)
    _check(c.clamp_min > 0.0, "clamp_min", "> 0", c.clamp_min)
    _check(c.clamp_min < c.clamp_max, "clamp_min", f"< clamp_max={c.clamp_max!r}", c.clamp_min)
    _check(c.lr > 0.0, "lr", "> 0", c.lr)
    _check(c.temperature > 0.0, "temperature", "> 0", c.temperature)
    _check(c.beta_zero >= 0.0, "beta_zero", ">= 0", c.beta_zero)
    _check(0.0 <= c.momentum < 1.0, "momentum", "in [0, 1)", c.momentum)
    _check(c.weight_decay >= 0.0, "weight_decay", ">= 0", c.weight_decay)
    _check(0.0 <= c.label_smoothing < 1.0, "label_smoothing", "in [0, 1)", c.label_smoothing)
    _check(c.grad_clip >= 0.0, "grad_clip", ">= 0 (0 turns clipping off)", c.grad_clip)
    _check(c.feedback_clip >= 0.0, "feedback_clip", ">= 0 (0 turns clipping off)",
           c.feedback_clip)
    _check(c.mpl_weight >= 0.0, "mpl_weight", ">= 0 (0 drops the meta term)", c.mpl_weight)
    _check(0.0 <= c.ema_decay < 1.0, "ema_decay", "in [0, 1) (0 turns the EMA off)", c.ema_decay)
    _check(c.eval_bn_batches >= 1, "eval_bn_batches", ">= 1", c.eval_bn_batches)
    _check(c.uda_warmup_steps >= 1, "uda_warmup_steps", ">= 1", c.uda_warmup_steps)
    _check(c.lr_warmup_steps >= 0, "lr_warmup_steps", ">= 0", c.lr_warmup_steps)
    _check(c.lr_warmup_steps < c.steps, "lr_warmup_steps", f"< steps={c.steps}", c.lr_warmup_steps)
    _check(c.steps >= 1, "steps", ">= 1", c.steps)
    # eval_every > steps is a short run: it evaluates once, at its last step.
    _check(c.eval_every >= 1, "eval_every", ">= 1", c.eval_every)
    _check(c.batch_size >= 1, "batch_size", ">= 1", c.batch_size)
    _check(c.mu >= 1, "mu", ">= 1", c.mu)
    _check(c.num_labeled >= 1, "num_labeled", ">= 1", c.num_labeled)
    _check(c.val_size >= 1, "val_size", ">= 1", c.val_size)
    _check(c.image_size >= 8, "image_size", ">= 8", c.image_size)
    _check(c.seed >= 0, "seed", ">= 0", c.seed)
    dev_ok = c.device in ("auto", "cpu", "cuda") or (
        c.device.startswith("cuda:") and c.device[5:].isdigit())
    _check(dev_ok, "device", "auto | cpu | cuda | cuda:N", c.device)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML mapping; malformed YAML is a ValueError naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"`--config` must be an existing file, but got --config={str(path)!r}.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"malformed YAML in {where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of config keys, "
                         f"but holds a {type(data).__name__}.")
    return data


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML scalars (3, 0.5, true, cifar10)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"`--set` must be key=value, but got --set {item!r}.")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out
