"""One optimiser step of each method, line by line as DESIGN.md "The SMPL step".

Every function returns a dict of detached 0-d tensors (still on the device: the loop
accumulates them and syncs once per report) and the new feedback baseline.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from smpl_core import losses
from smpl_core.data import Batch

BASELINE_DECAY = 0.99  # moving average of h, when `feedback_baseline`


@dataclass
class StepSettings:
    """The config fields a step reads, plus this step's scheduled values."""

    threshold: float
    temperature: float
    clamp_min: float
    clamp_max: float
    label_smoothing: float
    grad_clip: float
    feedback_sign: str
    feedback_baseline: bool
    second_pass: str
    lr: float  # lr_k of this step (also the first update's step size)
    beta: float  # beta_k of this step
    autocast: contextlib.AbstractContextManager | None = None

    @classmethod
    def from_config(cls, cfg, lr: float, beta: float, autocast=None) -> StepSettings:
        return cls(cfg.threshold, cfg.temperature, cfg.clamp_min, cfg.clamp_max,
                   cfg.label_smoothing, cfg.grad_clip, cfg.feedback_sign, cfg.feedback_baseline,
                   cfg.second_pass, lr, beta, autocast)

    def ctx(self):
        return self.autocast if self.autocast is not None else contextlib.nullcontext()


def _apply(params: list[nn.Parameter], grads, optimizer: torch.optim.Optimizer, clip: float):
    for p, g in zip(params, grads):
        p.grad = g
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


def _centre(h: torch.Tensor, baseline: torch.Tensor, on: bool):
    if not on:
        return h, baseline
    return h - baseline, BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * h


def _teacher_losses(z_l, z_uw, z_us, b: Batch, s: StepSettings):
    """Steps 2-3: pseudo labels from the weak view and L_uda."""
    p, y_hat, mask = losses.pseudo_labels(z_uw, s.temperature, s.threshold)
    l_uda, l_lab = losses.uda_loss(z_l, b.y_l, z_us, p, mask, s.beta, clamp_min=s.clamp_min,
                                   clamp_max=s.clamp_max, label_smoothing=s.label_smoothing)
    return y_hat, mask, l_uda, l_lab


def _stats(l_lab, l_uda, l_mpl, h, mask, y_hat, b: Batch, finite) -> dict[str, torch.Tensor]:
    return {
        "train/loss_labeled": l_lab.detach(),
        "train/loss_uda": l_uda.detach(),
        "train/loss_mpl": l_mpl.detach(),
        "train/feedback": h.detach(),
        "train/mask_ratio": mask.mean(),
        "train/pseudo_label_accuracy": (y_hat == b.y_u).float().mean(),
        "finite": finite,
    }


def _labeled_loss_at(model: nn.Module, params: dict, b: Batch, s: StepSettings) -> torch.Tensor:
    """CE(f(x_l; params), y_l) from a forward on x_l alone.

    L_old is computed this way too, not from z_l of the joint forward: with BatchNorm in
    train mode the joint forward normalises x_l with the statistics of cat(x_l, x_uw, x_us),
    and L_old - L_new would then carry a bias that does not vanish with lr (measured
    h ~ 0.01 at lr = 1e-12). A forward of B images costs ~1/(1 + 2 mu) of the joint one.
    For models without BatchNorm both ways give the same L_old.
    """
    buffers = {n: t.clone() for n, t in model.named_buffers()}
    with s.ctx():
        z = functional_call(model, {**params, **buffers}, (b.x_l,))
    return losses.labeled_loss(z, b.y_l)


def smpl_step(model: nn.Module, optimizer: torch.optim.Optimizer, b: Batch, s: StepSettings,
              baseline: torch.Tensor):
    """One SMPL step: first update with pseudo labels, feedback, second update from theta'."""
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    n_l, n_u = len(b.y_l), len(b.y_u)
    x = torch.cat([b.x_l, b.x_uw, b.x_us])

    def forward(inp):  # step 1: one forward on cat(x_l, x_uw, x_us)
        with s.ctx():
            z = model(inp)
        return losses.at_least_f32(z).split([n_l, n_u, n_u])

    z_l, z_uw, z_us = forward(x)
    y_hat, mask, l_uda, l_lab = _teacher_losses(z_l, z_uw, z_us, b, s)

    # Step 4: first update, plain SGD (the feedback identity holds only for a plain step).
    l1 = torch.nn.functional.cross_entropy(z_us, y_hat)
    reuse = s.second_pass == "reuse"
    g1 = torch.autograd.grad(l1, params, retain_graph=reuse)
    with torch.no_grad():
        theta1 = {n: p - s.lr * g for n, p, g in zip(names, params, g1)}
        # Step 5: L_new at theta' through functional_call, so step 1's graph stays valid;
        # buffers are cloned so these passes do not move BatchNorm's running stats.
        l_old = _labeled_loss_at(model, dict(zip(names, params)), b, s)
        l_new = _labeled_loss_at(model, theta1, b, s)

    # Step 6: h = L_old - L_new ~ lr * grad L_l(theta') . g1 (paper), or its negative (code).
    h_raw = losses.feedback(l_old, l_new, s.feedback_sign)
    h, baseline = _centre(h_raw, baseline, s.feedback_baseline)

    if reuse:  # Steps 7-8: the gradient at theta from step 1's graph, applied at theta'.
        l_mpl = losses.mpl_loss(z_us, h)
        g2 = torch.autograd.grad(l_uda + l_mpl, params)
        with torch.no_grad():
            for p, n in zip(params, names):
                p.copy_(theta1[n])
    else:  # Steps 7-8 from a fresh forward at theta'.
        with torch.no_grad():
            for p, n in zip(params, names):
                p.copy_(theta1[n])
        z_l2, z_uw2, z_us2 = forward(x)
        _, _, l_uda2, _ = _teacher_losses(z_l2, z_uw2, z_us2, b, s)
        l_mpl = losses.mpl_loss(z_us2, h)
        g2 = torch.autograd.grad(l_uda2 + l_mpl, params)
    _apply(list(params), g2, optimizer, s.grad_clip)
    finite = torch.isfinite(l_uda + l1 + l_new + l_mpl)
    return _stats(l_lab, l_uda, l_mpl, h_raw, mask, y_hat, b, finite), baseline


def mpl_step(teacher: nn.Module, student: nn.Module, t_opt: torch.optim.Optimizer,
             s_opt: torch.optim.Optimizer, b: Batch, s: StepSettings, baseline: torch.Tensor):
    """Meta Pseudo Labels with two models: the memory baseline SMPL is compared with."""
    n_l, n_u = len(b.y_l), len(b.y_u)
    with s.ctx():
        t_z = losses.at_least_f32(teacher(torch.cat([b.x_l, b.x_uw, b.x_us])))
        s_z = losses.at_least_f32(student(torch.cat([b.x_l, b.x_us])))
    z_l, z_uw, z_us = t_z.split([n_l, n_u, n_u])
    s_l, s_us = s_z.split([n_l, n_u])
    y_hat, mask, l_uda, l_lab = _teacher_losses(z_l, z_uw, z_us, b, s)

    l_old = losses.labeled_loss(s_l.detach(), b.y_l)
    s_loss = torch.nn.functional.cross_entropy(s_us, y_hat)
    s_params = [p for p in student.parameters() if p.requires_grad]
    _apply(s_params, torch.autograd.grad(s_loss, s_params), s_opt, s.grad_clip)
    with torch.no_grad(), s.ctx():
        l_new = losses.labeled_loss(student(b.x_l), b.y_l)
    h_raw = losses.feedback(l_old, l_new, s.feedback_sign)
    h, baseline = _centre(h_raw, baseline, s.feedback_baseline)

    l_mpl = losses.mpl_loss(z_us, h)
    t_params = [p for p in teacher.parameters() if p.requires_grad]
    _apply(t_params, torch.autograd.grad(l_uda + l_mpl, t_params), t_opt, s.grad_clip)
    finite = torch.isfinite(l_uda + s_loss + l_new + l_mpl)
    return _stats(l_lab, l_uda, l_mpl, h_raw, mask, y_hat, b, finite), baseline


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, b: Batch,
                    s: StepSettings, baseline: torch.Tensor):
    """The labelled-only baseline: CE_ls on the labelled batch."""
    with s.ctx():
        z_l = model(b.x_l)
    loss = losses.labeled_loss(z_l, b.y_l, s.label_smoothing)
    params = [p for p in model.parameters() if p.requires_grad]
    _apply(params, torch.autograd.grad(loss, params), optimizer, s.grad_clip)
    return {"train/loss_labeled": loss.detach(), "finite": torch.isfinite(loss)}, baseline
