"""The independent float64 reference of the step tests (imported by test_step.py and
test_step_methods.py): a hand-written forward of the MLP from its parameter list,
hand-written cross-entropies, and torch.autograd for every gradient. Nothing from
smpl_core.losses or smpl_core.step is used to build an expected value.
"""

from __future__ import annotations

import math

import torch

from smpl_core.config import SMPLConfig
from smpl_core.data import Batch
from smpl_core.models import MLP
from smpl_core.step import smpl_step

D, C, N_L, N_U = 4, 3, 6, 10  # input features, classes, labelled and unlabelled batch
T = 0.8  # temperature
CMIN, CMAX = 0.18, 0.5  # clamp bounds chosen so that both are active on these logits
LS = 0.1  # label smoothing on the labelled CE
BETA = 1.7


# --- the independent reference ------------------------------------------------------------

def forward(params, x):
    """MLP(hidden=(8,)) = Flatten, Linear, ReLU, Linear, written by hand."""
    w1, b1, w2, b2 = params
    return torch.relu(x @ w1.T + b1) @ w2.T + b2


def ce(z, y, ls=0.0):
    """Mean cross-entropy with label smoothing, by hand."""
    logp = z - torch.logsumexp(z, dim=-1, keepdim=True)
    nll = -logp[torch.arange(len(y)), y]
    return ((1 - ls) * nll - ls * logp.mean(-1)).mean()


def ref_uda(z_l, y_l, z_uw, z_us, thr):
    p = torch.softmax(z_uw.detach() / T, dim=-1)
    mask = (p.max(-1).values >= thr).to(z_l.dtype)
    logq = z_us - torch.logsumexp(z_us, dim=-1, keepdim=True)
    logq = torch.clamp(logq, math.log(CMIN), math.log(CMAX))
    cons = -(p * logq).sum(-1)
    return ce(z_l, y_l, LS) + BETA * (mask * cons).mean()


def reference(theta, b: Batch, lr, opt_lr, thr, second_pass, sign="paper", baseline=0.0,
              mpl_weight=1.0, signal=None):
    """(theta', h_raw, new parameters, g2) of one SMPL step, float64, from first principles.
    `signal`: h_raw -> the f of L_mpl (a RefFeedback at this step's lr); default h - baseline."""
    theta = [t.detach().clone().requires_grad_(True) for t in theta]
    x = torch.cat([b.x_l, b.x_uw, b.x_us])
    z_l, z_uw, z_us = forward(theta, x).split([N_L, N_U, N_U])
    y_hat = torch.softmax(z_uw.detach() / T, -1).argmax(-1)
    g1 = torch.autograd.grad(ce(z_us, y_hat, LS), theta, retain_graph=True)
    theta1 = [t.detach() - lr * g for t, g in zip(theta, g1)]
    l_old = ce(z_l.detach(), b.y_l)
    l_new = ce(forward(theta1, b.x_l), b.y_l)
    h_raw = (l_old - l_new) if sign == "paper" else (l_new - l_old)
    h = h_raw - baseline if signal is None else float(signal(h_raw.detach()))
    if second_pass == "reuse":
        total = (ref_uda(z_l, b.y_l, z_uw, z_us, thr)
                 + mpl_weight * h * ce(z_us, z_us.detach().argmax(-1)))
        g2 = torch.autograd.grad(total, theta)
    else:
        th1 = [t.clone().requires_grad_(True) for t in theta1]
        z_l2, z_uw2, z_us2 = forward(th1, x).split([N_L, N_U, N_U])
        total = (ref_uda(z_l2, b.y_l, z_uw2, z_us2, thr)
                 + mpl_weight * h * ce(z_us2, z_us2.detach().argmax(-1)))
        g2 = torch.autograd.grad(total, th1)
    new = [t1 - opt_lr * g for t1, g in zip(theta1, g2)]
    return theta1, h_raw.detach(), new, g2


# --- fixtures -------------------------------------------------------------------------------

def make_model(seed=0):
    torch.manual_seed(seed)
    model = MLP(D, C, hidden=(8,)).double()
    with torch.no_grad():  # spread the logits, so that both clamp bounds are active
        model.net[-1].weight.mul_(4.0)
    return model


def make_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    x_u = torch.randn(N_U, D, generator=g, dtype=torch.float64)
    return Batch(
        x_l=torch.randn(N_L, D, generator=g, dtype=torch.float64),
        y_l=torch.randint(0, C, (N_L,), generator=g),
        x_uw=x_u + 0.05 * torch.randn(N_U, D, generator=g, dtype=torch.float64),
        x_us=x_u + 0.5 * torch.randn(N_U, D, generator=g, dtype=torch.float64),
        y_u=torch.randint(0, C, (N_U,), generator=g),
        idx_u=torch.arange(N_U),
    )


def mixed_threshold(model, b):
    """A threshold half-way in the widest gap between confidences: some rows masked in,
    some out, robust to rounding."""
    with torch.no_grad():
        conf = torch.softmax(model(b.x_uw) / T, -1).max(-1).values.sort().values
    gaps = conf[1:] - conf[:-1]
    k = int(gaps[2:-2].argmax()) + 2  # keep at least 3 rows on each side
    return float((conf[k] + conf[k + 1]) / 2)


def settings(thr, lr, second_pass="reuse", sign="paper", baseline=False, clip=0.0,
             mpl_weight=1.0):
    """The run's config and this step's lr_k (first update) and beta_k, as the loop passes
    them to a step."""
    cfg = SMPLConfig(threshold=thr, temperature=T, clamp_min=CMIN, clamp_max=CMAX,
                     label_smoothing=LS, grad_clip=clip, feedback_sign=sign,
                     feedback_baseline=baseline, second_pass=second_pass,
                     mpl_weight=mpl_weight)
    return cfg, {"lr": lr, "beta": BETA}


def run_step(model, b, s, opt_lr, baseline=0.0, step=smpl_step, measure=False):
    cfg, sched = s
    opt = torch.optim.SGD(model.parameters(), lr=opt_lr, momentum=0, weight_decay=0)
    return step(model, opt, b, cfg, **sched, measure=measure,
                baseline=torch.tensor(baseline, dtype=torch.float64))


def max_diff(a, b):
    return max(float((x.detach() - y.detach()).abs().max()) for x, y in zip(a, b))


# --- the feedback signal (smpl_core/feedback.py), from the whole history ----------------------

ALPHA = 0.99


def _ema(xs, k):
    """sum_{i<k} (1 - alpha) alpha^(k-1-i) x_i: an EMA from 0 over x_0..x_{k-1}, as a sum."""
    return sum((1 - ALPHA) * ALPHA ** (k - 1 - i) * xs[i] for i in range(k))


class RefFeedback:
    """f_k of the scaled feedback, recomputed at every step from the list of all earlier h
    (float64 Python floats, explicit weighted sums instead of the code's recursions).
    The shuffled control's draw is the documented one: j = randint(0, min(k, history)) from
    a generator seeded with `seed`, the slot j of a ring of `history` holding step s with
    s % history == j."""

    def __init__(self, scale="raw", control="none", baseline=False, clip=0.0, seed=0,
                 history=100):
        self.scale, self.control, self.baseline, self.clip = scale, control, baseline, clip
        self.history = history
        self.h, self.v, self.d, self.c, self.f = [], [], [], [], []
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, h, lr):
        h, k = float(h), len(self.h)
        self.h.append(h)
        if self.scale in ("raw", "per_lr"):
            v = h if self.scale == "raw" else h / lr
            self.v.append(v)
            u = v - _ema(self.v, k) if self.baseline else v
        else:  # normalised: the baseline of h is always on
            d = h - _ema(self.h, k)
            self.d.append(d)
            sq = [x * x for x in self.d]
            s = math.sqrt(_ema(sq, k + 1) / (1 - ALPHA ** (k + 1)))
            u = d / s if s > 0 else 0.0
        c = min(max(u, -self.clip), self.clip) if self.clip > 0 else u
        if self.control == "none":
            f = c
        elif k == 0:
            f = 0.0
        elif self.control == "constant":
            f = _ema(self.c, k) / (1 - ALPHA ** k)
        else:  # shuffled
            n = min(k, self.history)
            j = int(torch.randint(0, n, (), generator=self.gen))
            s = max(i for i in range(k) if i % self.history == j)
            f = self.c[s]
        self.c.append(c)
        self.f.append(f)
        return f
