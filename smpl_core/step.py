"""One optimiser step of each method, line by line as docs/design.md "The SMPL step".

A step reads the run's `SMPLConfig` (`cfg`) plus this step's scheduled values `lr` (lr_k,
also the first update's step size) and `beta` (beta_k). Every function returns a dict of
detached 0-d tensors (still on the device: the loop accumulates them and syncs once per
report) and the new feedback state. `baseline` is the run's `feedback.FeedbackState` (b, the
running variance and mean, the shuffle history: smpl_core/feedback.py turns h into the f of
L_mpl), or a bare baseline tensor, which the plain signal (raw scale, no clip, no control)
keeps as it always was. With `measure=True` the smpl and mpl steps also
return `train/mpl_grad_ratio`, at the cost of one extra backward pass of L_mpl alone; the
update itself is computed exactly as without it (the loop measures one step per report).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import functional_call

from smpl_core import feedback, losses
from smpl_core.config import SMPLConfig
from smpl_core.data import Batch

BASELINE_DECAY = feedback.DECAY  # moving average of h, when `feedback_baseline`


def _ctx(autocast):
    return autocast if autocast is not None else contextlib.nullcontext()


def _apply(params, grads, optimizer: torch.optim.Optimizer, clip: float):
    for p, g in zip(params, grads):
        p.grad = g
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()


def _norm(grads) -> torch.Tensor:
    return torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))


def _second_grad(params, l_uda, l_mpl, measure: bool):
    """grad(L_uda + mpl_weight * L_mpl) and, when measuring, ||grad of the mpl term|| /
    ||grad L_uda||. The total is always one backward of the sum, so a measured step updates
    bit for bit as an unmeasured one; the mpl term alone costs one more backward."""
    if not measure:
        return torch.autograd.grad(l_uda + l_mpl, params), None
    g_mpl = torch.autograd.grad(l_mpl, params, retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(l_uda + l_mpl, params)
    g_mpl = [torch.zeros_like(g) if m is None else m for m, g in zip(g_mpl, g2)]
    n_mpl = _norm(g_mpl)
    n_uda = _norm([g - m for g, m in zip(g2, g_mpl)])  # grad L_uda = total - mpl term
    return g2, n_mpl / n_uda.clamp_min(1e-30)


def _teacher_losses(z_l, z_uw, z_us, b: Batch, cfg: SMPLConfig, beta: float):
    """Steps 2-3: pseudo labels from the weak view and L_uda."""
    p, y_hat, mask = losses.pseudo_labels(z_uw, cfg.temperature, cfg.threshold)
    l_uda, l_lab = losses.uda_loss(z_l, b.y_l, z_us, p, mask, beta, clamp_min=cfg.clamp_min,
                                   clamp_max=cfg.clamp_max, label_smoothing=cfg.label_smoothing)
    return y_hat, mask, l_uda, l_lab


def _stats(l_lab, l_uda, mask, y_hat, b: Batch, finite, l_mpl=None, h=None, ratio=None):
    out = {
        "train/loss_labeled": l_lab.detach(),
        "train/loss_uda": l_uda.detach(),
        "train/mask_ratio": mask.mean(),
        "train/pseudo_label_accuracy": (y_hat == b.y_u).float().mean(),
        "finite": finite,
    }
    if h is not None:  # smpl and mpl: the meta term and the raw feedback h of this step
        out["train/loss_mpl"] = l_mpl.detach()
        out["train/feedback"] = h.detach()
    if ratio is not None:
        out["train/mpl_grad_ratio"] = ratio.detach()
    return out


def labeled_loss_at(model: nn.Module, params: dict, b: Batch, autocast=None) -> torch.Tensor:
    """CE(f(x_l; params), y_l) from a forward on x_l alone, leaving the model's buffers as
    they were (BatchNorm's running_mean, running_var and num_batches_tracked).

    L_old is computed this way too, not from z_l of the joint forward: with BatchNorm in
    train mode the joint forward normalises x_l with the statistics of cat(x_l, x_uw, x_us),
    and L_old - L_new would then carry a bias that does not vanish with lr (measured
    h ~ 0.01 at lr = 1e-12). A forward of B images costs ~1/(1 + 2 mu) of the joint one.
    The buffers are cloned: BatchNorm in train mode updates the ones it is given in place.
    """
    buffers = {n: t.clone() for n, t in model.named_buffers()}
    with _ctx(autocast):
        z = functional_call(model, {**params, **buffers}, (b.x_l,))
    return losses.labeled_loss(z, b.y_l)


def smpl_step(model: nn.Module, optimizer: torch.optim.Optimizer, b: Batch, cfg: SMPLConfig,
              *, lr: float, beta: float, baseline: torch.Tensor, autocast=None,
              measure: bool = False):
    """One SMPL step: first update with pseudo labels, feedback, second update from theta'."""
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    n_l, n_u = len(b.y_l), len(b.y_u)
    x = torch.cat([b.x_l, b.x_uw, b.x_us])

    def forward(inp):  # step 1: one forward on cat(x_l, x_uw, x_us)
        with _ctx(autocast):
            z = model(inp)
        return losses.at_least_f32(z).split([n_l, n_u, n_u])

    z_l, z_uw, z_us = forward(x)
    y_hat, mask, l_uda, l_lab = _teacher_losses(z_l, z_uw, z_us, b, cfg, beta)

    # Step 4: first update, plain SGD (the feedback identity holds only for a plain step).
    # Its CE is label-smoothed like the labelled CE, as in megaboost and MPL-pytorch.
    l1 = losses.labeled_loss(z_us, y_hat, cfg.label_smoothing)
    reuse = cfg.second_pass == "reuse"
    g1 = torch.autograd.grad(l1, params, retain_graph=reuse)
    with torch.no_grad():
        theta1 = {n: p - lr * g for n, p, g in zip(names, params, g1)}
        # Step 5: L_old and L_new from labelled-only forwards at theta and theta', through
        # functional_call so step 1's graph stays valid and the running stats stay put.
        l_old = labeled_loss_at(model, dict(zip(names, params)), b, autocast)
        l_new = labeled_loss_at(model, theta1, b, autocast)

    # Step 6: h = L_old - L_new ~ lr * grad L_l(theta') . g1 (paper, MPL eq. 12), or its
    # negative (code); then baseline, scale, clip and control (smpl_core/feedback.py).
    h_raw = losses.feedback(l_old, l_new, cfg.feedback_sign)
    h, baseline = feedback.apply(h_raw, baseline, lr, cfg)

    if reuse:  # Steps 7-8: the gradient at theta from step 1's graph, applied at theta'.
        l_mpl = losses.mpl_loss(z_us, h)
        g2, ratio = _second_grad(params, l_uda, cfg.mpl_weight * l_mpl, measure)
        with torch.no_grad():
            for p, n in zip(params, names):
                p.copy_(theta1[n])
    else:  # Steps 7-8 from a fresh forward at theta'.
        with torch.no_grad():
            for p, n in zip(params, names):
                p.copy_(theta1[n])
        z_l2, z_uw2, z_us2 = forward(x)
        _, _, l_uda2, _ = _teacher_losses(z_l2, z_uw2, z_us2, b, cfg, beta)
        l_mpl = losses.mpl_loss(z_us2, h)
        g2, ratio = _second_grad(params, l_uda2, cfg.mpl_weight * l_mpl, measure)
    _apply(list(params), g2, optimizer, cfg.grad_clip)
    finite = torch.isfinite(l_uda + l1 + l_new + l_mpl)
    return _stats(l_lab, l_uda, mask, y_hat, b, finite, l_mpl, h_raw, ratio), baseline


def uda_step(model: nn.Module, optimizer: torch.optim.Optimizer, b: Batch, cfg: SMPLConfig,
             *, lr: float, beta: float, baseline: torch.Tensor, autocast=None,
             measure: bool = False):
    """UDA alone: SMPL's data, views, masking and schedule, one update of L_uda at theta
    (no first update, no feedback, no meta term). `lr` is the optimiser's already."""
    n_l, n_u = len(b.y_l), len(b.y_u)
    with _ctx(autocast):
        z = losses.at_least_f32(model(torch.cat([b.x_l, b.x_uw, b.x_us])))
    z_l, z_uw, z_us = z.split([n_l, n_u, n_u])
    y_hat, mask, l_uda, l_lab = _teacher_losses(z_l, z_uw, z_us, b, cfg, beta)
    params = [p for p in model.parameters() if p.requires_grad]
    _apply(params, torch.autograd.grad(l_uda, params), optimizer, cfg.grad_clip)
    return _stats(l_lab, l_uda, mask, y_hat, b, torch.isfinite(l_uda)), baseline


def mpl_step(teacher: nn.Module, student: nn.Module, t_opt: torch.optim.Optimizer,
             s_opt: torch.optim.Optimizer, b: Batch, cfg: SMPLConfig, *, lr: float,
             beta: float, baseline: torch.Tensor, autocast=None, measure: bool = False):
    """Meta Pseudo Labels with two models: the memory baseline SMPL is compared with.

    Made as fair as the SMPL path: L_old and L_new come from labelled-only forwards of the
    student that leave its running statistics alone (the reference takes L_old from the
    joint forward, a BatchNorm bias of ~0.01 against |h| of 1e-3 to 1e-2, and its L_new
    forward moves the running statistics).
    """
    n_l, n_u = len(b.y_l), len(b.y_u)
    with _ctx(autocast):
        t_z = losses.at_least_f32(teacher(torch.cat([b.x_l, b.x_uw, b.x_us])))
    z_l, z_uw, z_us = t_z.split([n_l, n_u, n_u])
    y_hat, mask, l_uda, l_lab = _teacher_losses(z_l, z_uw, z_us, b, cfg, beta)

    s_names, s_params = zip(*[(n, p) for n, p in student.named_parameters() if p.requires_grad])
    with torch.no_grad():
        l_old = labeled_loss_at(student, dict(zip(s_names, s_params)), b, autocast)
    with _ctx(autocast):  # the student's own forward, as in MPL: labelled and strong views
        s_us = losses.at_least_f32(student(torch.cat([b.x_l, b.x_us])))[n_l:]
    s_loss = losses.labeled_loss(s_us, y_hat, cfg.label_smoothing)
    _apply(list(s_params), torch.autograd.grad(s_loss, s_params), s_opt, cfg.grad_clip)
    with torch.no_grad():
        l_new = labeled_loss_at(student, dict(zip(s_names, s_params)), b, autocast)
    h_raw = losses.feedback(l_old, l_new, cfg.feedback_sign)
    h, baseline = feedback.apply(h_raw, baseline, lr, cfg)

    l_mpl = losses.mpl_loss(z_us, h)
    t_params = [p for p in teacher.parameters() if p.requires_grad]
    g2, ratio = _second_grad(t_params, l_uda, cfg.mpl_weight * l_mpl, measure)
    _apply(t_params, g2, t_opt, cfg.grad_clip)
    finite = torch.isfinite(l_uda + s_loss + l_new + l_mpl)
    return _stats(l_lab, l_uda, mask, y_hat, b, finite, l_mpl, h_raw, ratio), baseline


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, b: Batch,
                    cfg: SMPLConfig, *, lr: float, beta: float, baseline: torch.Tensor,
                    autocast=None, measure: bool = False):
    """The labelled-only baseline: CE_ls on the labelled batch."""
    with _ctx(autocast):
        z_l = model(b.x_l)
    loss = losses.labeled_loss(z_l, b.y_l, cfg.label_smoothing)
    params = [p for p in model.parameters() if p.requires_grad]
    _apply(params, torch.autograd.grad(loss, params), optimizer, cfg.grad_clip)
    return {"train/loss_labeled": loss.detach(), "finite": torch.isfinite(loss)}, baseline
