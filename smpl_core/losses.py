"""Losses and schedules of the SMPL step as pure functions (docs/design.md, "The SMPL step")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def at_least_f32(z: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits (autocast) -> float32 for the losses; float64 stays float64."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def labeled_loss(z_l: torch.Tensor, y_l: torch.Tensor,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """CE_ls(z_l, y_l): cross-entropy on the labelled batch, in float32 whatever autocast did."""
    return F.cross_entropy(at_least_f32(z_l), y_l, label_smoothing=label_smoothing)


def pseudo_labels(z_uw: torch.Tensor, temperature: float, threshold: float):
    """Soft targets p, hard labels y_hat and the confidence mask from the weak view.

    The logits are detached here, so pseudo labels never carry a gradient. A threshold of
    1 masks every example (float32 softmax can round a confident row up to exactly 1.0,
    which `conf >= 1` would let through).
    """
    p = torch.softmax(at_least_f32(z_uw.detach()) / temperature, dim=-1)
    conf, y_hat = p.max(dim=-1)
    if threshold >= 1.0:
        mask = torch.zeros_like(conf)
    else:
        mask = (conf >= threshold).to(conf.dtype)
    return p, y_hat, mask


def consistency_per_example(z_us: torch.Tensor, p: torch.Tensor, clamp_min: float,
                            clamp_max: float) -> torch.Tensor:
    """-(p * clamp(log_softmax(z_us), log clamp_min, log clamp_max)).sum(-1), one per example.

    The clamp is in log space, so each term is at most -log(clamp_min) (p sums to 1).
    """
    logq = torch.log_softmax(at_least_f32(z_us), dim=-1)
    logq = logq.clamp(math.log(clamp_min), math.log(clamp_max))
    return -(p * logq).sum(dim=-1)


def uda_loss(z_l, y_l, z_us, p, mask, beta, *, clamp_min, clamp_max, label_smoothing=0.0):
    """L_uda = CE_ls(z_l, y_l) + beta_k * mean(mask * consistency). Returns (L_uda, L_lab)."""
    l_lab = labeled_loss(z_l, y_l, label_smoothing)
    cons = consistency_per_example(z_us, p, clamp_min, clamp_max)
    return l_lab + beta * (mask * cons).mean(), l_lab


def mpl_loss(z_us: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """L_mpl = h * CE(z_us, argmax z_us.detach()); h is a detached scalar."""
    return h * F.cross_entropy(at_least_f32(z_us), z_us.detach().argmax(dim=-1))


def feedback(l_old: torch.Tensor, l_new: torch.Tensor, sign: str) -> torch.Tensor:
    """h from the labelled loss before and after the first update.

    paper: h = L_old - L_new, which by a first-order Taylor expansion around theta' equals
    lr * grad L_l(theta') . g1 (MPL, Pham et al. 2021, eq. 12 / appendix A);
    code:  h = L_new - L_old, the sign of the reference implementation and the seed.
    """
    h = (l_old - l_new) if sign == "paper" else (l_new - l_old)
    return h.detach()


def beta_at(step: int, beta_zero: float, warmup_steps: int) -> float:
    """beta_k = beta_zero * min(1, (k+1)/uda_warmup_steps), k counted from 0."""
    return beta_zero * min(1.0, (step + 1) / warmup_steps)


def lr_at(step: int, lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
