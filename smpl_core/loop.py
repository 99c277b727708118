"""The training loop: `fit(config, report=callback, state=None)`.

Every `eval_every` steps (and at the last step) it evaluates on the validation split and
hands `report` the metric dict of docs/design.md, the feedback diagnostics of
smpl_core.metrics, and a checkpointable state (CPU copies: the model as evaluated, the
training models and EMA, optimisers, step, sampler, RNG states, the feedback state of
smpl_core.feedback: baseline, running variance and mean, shuffle history). Giving
that state back to `fit` continues the same run. What is evaluated is a separate copy
(EMA or raw weights, precise BatchNorm statistics: smpl_core.evaluation), so evaluating
never changes training. Metrics stay on the device between reports: one host sync per
report, plus one every `FINITE_CHECK_EVERY` steps to stop a diverging run early.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from smpl_core import losses
from smpl_core.config import SMPLConfig
from smpl_core.data import Sampler, Splits, load_splits
from smpl_core.errors import ConfigError
from smpl_core.evaluation import EMA, bn_pool, evaluate, precise_bn
from smpl_core.feedback import FeedbackState
from smpl_core.metrics import Window
from smpl_core.models import build_model, resolve_model_name
from smpl_core.step import mpl_step, smpl_step, supervised_step, uda_step

STEPS = {"smpl": smpl_step, "uda": uda_step, "supervised": supervised_step}
Report = Callable[[dict[str, Any], "dict | None"], None]
FINITE_CHECK_EVERY = 10  # steps between host checks for a non-finite loss
# compile=auto: torch.compile pays once its saving covers the compile time. From the
# reference figures in docs/design.md (H100, bf16): 47 s to compile, 33.9 -> 23.2 ms per step,
# so about 47 / 0.0107 = 4.4k steps; below that, or on the CPU, eager is faster.
COMPILE_BREAK_EVEN_STEPS = 4400


@dataclass
class FitResult:
    metrics: dict[str, Any]  # the last report
    model: nn.Module  # the model that is evaluated (SMPL's one model, MPL's student)
    splits: Splits
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"`device` must name an available device, but got device={name!r} "
                         "and CUDA is not available.")
    return torch.device(name)


def _autocast(cfg: SMPLConfig, device: torch.device):
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else None


def _use_compile(cfg: SMPLConfig, device: torch.device) -> bool:
    if cfg.compile == "auto":
        return device.type == "cuda" and cfg.steps >= COMPILE_BREAK_EVEN_STEPS
    return cfg.compile == "on"


def _optimizer(cfg: SMPLConfig, model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def _rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
          "python": random.getstate()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def _cpu_copy(obj):
    """Deep copy with every tensor on the CPU, so training on does not change a snapshot."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


class _Run:
    """The models, optimisers and sampler of one run, its evaluated copy, and how to
    snapshot them."""

    def __init__(self, cfg: SMPLConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.splits = load_splits(cfg, device)
        name = resolve_model_name(cfg.model, cfg.dataset)
        self.models: dict[str, nn.Module] = {}
        roles = ("teacher", "student") if cfg.method == "mpl" else ("model",)
        self.eval_role = roles[-1]  # SMPL's one model, MPL's student
        for role in roles:
            m = build_model(name, self.splits.input_shape, self.splits.num_classes).to(device)
            if cfg.channels_last and device.type == "cuda" and self.splits.is_image:
                m = m.to(memory_format=torch.channels_last)
            if role == self.eval_role:  # eager copies (deepcopy draws no random numbers)
                self.eval_net = copy.deepcopy(m).train()
                self.ema = EMA(copy.deepcopy(m), cfg.ema_decay) if cfg.ema_decay > 0 else None
            if _use_compile(cfg, device):
                # Compiles forward only (the step's two backward passes come from autograd);
                # inductor's cache on local disk lets the node's later trials reuse it.
                m.compile()
            self.models[role] = m.train()
        self.optimizers = {role: _optimizer(cfg, m) for role, m in self.models.items()}
        self.sampler = Sampler(self.splits, cfg.batch_size, cfg.mu,
                               unlabeled=cfg.method != "supervised")
        self.bn_idx, self.bn_batch = bn_pool(self.splits, cfg)
        self.feedback = FeedbackState(device, seed=cfg.seed)
        self.step = 0

    @property
    def eval_model(self) -> nn.Module:
        """The model the last `prepare_eval` made: EMA or raw weights, precise BN or not."""
        return self.eval_net

    def prepare_eval(self, autocast=None) -> nn.Module:
        """Load the evaluated weights into the eval copy and, with `eval_bn=precise`,
        recompute its BatchNorm statistics. The training models are not touched."""
        src = self.ema.module if self.ema is not None else self.models[self.eval_role]
        self.eval_net.load_state_dict(src.state_dict())
        if self.cfg.eval_bn == "precise":
            precise_bn(self.eval_net, self.splits, self.bn_idx, self.bn_batch, autocast)
        return self.eval_net

    def model_info(self) -> dict:
        """What rebuilds the evaluated model without the dataset: its name, role, input
        shape, class count and input normalisation (`Splits.inputs`)."""
        s = self.splits
        return {"model": resolve_model_name(self.cfg.model, self.cfg.dataset),
                "role": self.eval_role, "input_shape": list(s.input_shape),
                "num_classes": int(s.num_classes), "mean": s.mean.reshape(-1),
                "std": s.std.reshape(-1), "is_image": bool(s.is_image)}

    def state(self) -> dict:
        """`models` holds the model as evaluated (what export and MLflow log, scoring what
        was reported), `model_info` what rebuilds it; `train_models` the training models
        and EMA, to resume from."""
        train = {k: m.state_dict() for k, m in self.models.items()}
        if self.ema is not None:
            train["ema"] = self.ema.module.state_dict()
        return _cpu_copy({
            "step": self.step, "config": self.cfg.to_dict(),
            "models": {self.eval_role: self.eval_net.state_dict()},
            "model_info": self.model_info(), "train_models": train,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "sampler": self.sampler.state_dict(), "baseline": self.feedback.baseline,
            "feedback": self.feedback.state_dict(), "rng": _rng_state(self.device)})

    def load(self, st: dict) -> None:
        train = st.get("train_models", st["models"])  # states written before the EMA
        for k, m in self.models.items():
            m.load_state_dict(train[k])
        if self.ema is not None:
            self.ema.module.load_state_dict(train["ema"])
        self.eval_net.load_state_dict(st["models"][self.eval_role])
        for k, o in self.optimizers.items():
            o.load_state_dict(st["optimizers"][k])
        self.sampler.load_state_dict(st["sampler"])
        if "feedback" in st:
            self.feedback.load_state_dict(st["feedback"])
        else:  # states written before the scaled feedback: the baseline alone
            self.feedback.baseline = st["baseline"].to(self.device)
        self.step = int(st["step"])
        _set_rng_state(st["rng"], self.device)

    def train_step(self, autocast, measure: bool = False) -> dict[str, torch.Tensor]:
        """One step; `measure`: also return `train/mpl_grad_ratio` (one extra backward)."""
        cfg, k = self.cfg, self.step
        lr = losses.lr_at(k, cfg.lr, cfg.lr_warmup_steps, cfg.steps)
        for o in self.optimizers.values():
            for g in o.param_groups:
                g["lr"] = lr
        kw = dict(lr=lr, beta=losses.beta_at(k, cfg.beta_zero, cfg.uda_warmup_steps),
                  baseline=self.feedback, autocast=autocast, measure=measure)
        b = self.sampler.next()
        if cfg.method == "mpl":
            out, self.feedback = mpl_step(self.models["teacher"], self.models["student"],
                                          self.optimizers["teacher"], self.optimizers["student"],
                                          b, cfg, **kw)
        else:
            step = STEPS[cfg.method]
            out, self.feedback = step(self.models["model"], self.optimizers["model"], b, cfg, **kw)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.models[self.eval_role], self.step)
        return out

    def images_per_step(self) -> int:
        b = self.cfg.batch_size
        return b if self.cfg.method == "supervised" else b + 2 * self.cfg.mu * b


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(config: SMPLConfig | dict, report: Report | None = None, state: dict | None = None,
        ) -> FitResult:
    cfg = config if isinstance(config, SMPLConfig) else SMPLConfig.from_dict(config)
    device = resolve_device(cfg.device)
    _seed_everything(cfg.seed)
    run = _Run(cfg, device)
    if state is not None:
        run.load(state)
    autocast = _autocast(cfg, device)
    history: list[dict[str, Any]] = []
    window = Window()
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    metrics: dict[str, Any] = {}
    while run.step < cfg.steps:
        step = run.step
        # A report follows this step: measure its mpl gradient ratio (the other steps of
        # the window cost nothing extra). eval_every > steps: one report, at the end.
        last = step + 1 == cfg.steps or (step + 1) % cfg.eval_every == 0
        out = run.train_step(autocast, measure=last)
        finite = out.pop("finite")
        first_bad = torch.where((first_bad < 0) & ~finite, step, first_bad)
        window.add(out)
        if last or run.step % FINITE_CHECK_EVERY == 0:
            bad_step = int(first_bad.item())
            if bad_step >= 0:  # never train on, and never checkpoint, a non-finite model
                metrics = {"diverged": True, "step": bad_step, "val_accuracy": 0.0}
                history.append(metrics)
                if report is not None:
                    report(dict(metrics), None)
                return FitResult(metrics, run.models[run.eval_role], run.splits, history)
        if not last:
            continue
        elapsed = time.perf_counter() - t0  # training only: precise BN is the evaluation's
        model = run.prepare_eval(autocast)
        val_acc, val_loss = evaluate(model, run.splits, run.splits.x_val, run.splits.y_val)
        metrics = window.summary()
        metrics.update({
            "val_accuracy": val_acc, "val_loss": val_loss,
            "images_per_s": window.steps * run.images_per_step() / elapsed,
            "gpu_mem_peak_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                                if device.type == "cuda" else 0.0),
            "step": run.step, "diverged": False})
        history.append(metrics)
        if report is not None:
            report(dict(metrics), run.state())
        window, t0 = Window(), time.perf_counter()
    return FitResult(metrics, run.eval_model, run.splits, history)


def test_accuracy(result: FitResult) -> float:
    """Accuracy on the untouched test split: for a final config, never inside a sweep."""
    return evaluate(result.model, result.splits, result.splits.x_test, result.splits.y_test)[0]
