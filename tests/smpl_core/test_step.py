"""The SMPL step against an independent float64 autograd computation written here.

The reference below re-derives DESIGN.md "The SMPL step" from scratch: a hand-written
forward of the MLP from its parameter list, hand-written cross-entropies, and
torch.autograd for every gradient. Nothing from smpl_core.losses or smpl_core.step is
used to build an expected value.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from smpl_core.config import SMPLConfig
from smpl_core.data import Batch
from smpl_core.models import MLP, SmallCNN
from smpl_core.step import smpl_step, supervised_step

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
              mpl_weight=1.0):
    """(theta', h_raw, new parameters, g2) of one SMPL step, float64, from first principles."""
    theta = [t.detach().clone().requires_grad_(True) for t in theta]
    x = torch.cat([b.x_l, b.x_uw, b.x_us])
    z_l, z_uw, z_us = forward(theta, x).split([N_L, N_U, N_U])
    y_hat = torch.softmax(z_uw.detach() / T, -1).argmax(-1)
    g1 = torch.autograd.grad(ce(z_us, y_hat, LS), theta, retain_graph=True)
    theta1 = [t.detach() - lr * g for t, g in zip(theta, g1)]
    l_old = ce(z_l.detach(), b.y_l)
    l_new = ce(forward(theta1, b.x_l), b.y_l)
    h_raw = (l_old - l_new) if sign == "paper" else (l_new - l_old)
    h = h_raw - baseline
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


# --- 1. the reported feedback (the identity on project code: test_feedback_identity.py) ---

@pytest.mark.parametrize("second_pass", ["reuse", "recompute"])
def test_reported_feedback_is_l_old_minus_l_new_and_code_sign_negates(second_pass):
    base, b = make_model(), make_batch()
    thr, lr = mixed_threshold(base, b), 0.2
    _, h_ref, _, _ = reference(list(base.parameters()), b, lr, 0.1, thr, second_pass)
    assert abs(float(h_ref)) > 1e-3
    out_p, _ = run_step(copy.deepcopy(base), b, settings(thr, lr, second_pass, "paper"), 0.1)
    out_c, _ = run_step(copy.deepcopy(base), b, settings(thr, lr, second_pass, "code"), 0.1)
    h_p, h_c = float(out_p["train/feedback"]), float(out_c["train/feedback"])
    assert h_p == pytest.approx(float(h_ref), abs=1e-6)
    assert h_c == pytest.approx(-h_p, abs=1e-7)


# --- 2. the second update -----------------------------------------------------------------------

LR1, LR2 = 0.5, 0.3  # first update (StepSettings.lr) and second (the optimiser's lr)


def _check_update(second_pass, tol, sign="paper"):
    base, b = make_model(), make_batch()
    thr = mixed_threshold(base, b)
    theta1, _, expected, g2 = reference(list(base.parameters()), b, LR1, LR2, thr, second_pass,
                                        sign)
    model = copy.deepcopy(base)
    run_step(model, b, settings(thr, LR1, second_pass, sign), LR2)
    got = [p.detach() for p in model.parameters()]
    assert max_diff(got, expected) <= tol
    return base, b, thr, got, expected


@pytest.mark.parametrize("second_pass", ["reuse", "recompute"])
def test_second_update_matches_autograd_reference(second_pass):
    """New params == theta' - LR2 * g2, g2 = grad(L_uda + h * CE(z_us, argmax z_us)).

    Float32-level tolerance: see test_second_update_is_exact_in_float64 for why.
    """
    tol = 2e-6
    base, b, thr, got, _ = _check_update(second_pass, tol)
    # The check can fail: flipping h's sign, or taking the other second pass, moves the
    # parameters far beyond the tolerance.
    _, _, wrong_sign, _ = reference(list(base.parameters()), b, LR1, LR2, thr, second_pass, "code")
    other = "recompute" if second_pass == "reuse" else "reuse"
    _, _, wrong_pass, _ = reference(list(base.parameters()), b, LR1, LR2, thr, other)
    assert max_diff(got, wrong_sign) > 100 * tol
    assert max_diff(got, wrong_pass) > 100 * tol


@pytest.mark.parametrize("second_pass", ["reuse", "recompute"])
def test_second_update_is_exact_in_float64(second_pass):
    _check_update(second_pass, 1e-10)


def test_feedback_baseline_is_subtracted_and_updated():
    base, b = make_model(), make_batch()
    thr, b0 = mixed_threshold(base, b), 0.05
    _, h_ref, expected, _ = reference(list(base.parameters()), b, LR1, LR2, thr, "reuse",
                                      baseline=b0)
    model = copy.deepcopy(base)
    out, new_b = run_step(model, b, settings(thr, LR1, baseline=True), LR2, baseline=b0)
    assert max_diff(list(model.parameters()), expected) <= 2e-6
    assert float(out["train/feedback"]) == pytest.approx(float(h_ref), abs=1e-6)  # raw h
    assert float(new_b) == pytest.approx(0.99 * b0 + 0.01 * float(h_ref), abs=1e-7)
    _, _, no_baseline, _ = reference(list(base.parameters()), b, LR1, LR2, thr, "reuse")
    assert max_diff(list(model.parameters()), no_baseline) > 1e-4


def test_grad_clip_bounds_the_second_update():
    base, b = make_model(), make_batch()
    thr, clip = mixed_threshold(base, b), 1e-3
    theta1, _, _, g2 = reference(list(base.parameters()), b, LR1, LR2, thr, "reuse")
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in g2))
    assert norm > 10 * clip  # the clip is active
    model = copy.deepcopy(base)
    run_step(model, b, settings(thr, LR1, clip=clip), LR2)
    expected = [t1 - LR2 * g * clip / norm for t1, g in zip(theta1, g2)]
    assert max_diff(list(model.parameters()), expected) <= 1e-7


def test_supervised_step_is_plain_sgd_on_labelled_ce():
    base, b = make_model(), make_batch()
    theta = [p.detach().clone().requires_grad_(True) for p in base.parameters()]
    g = torch.autograd.grad(ce(forward(theta, b.x_l), b.y_l, LS), theta)
    expected = [t.detach() - LR2 * gi for t, gi in zip(theta, g)]
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=LR2)
    cfg, sched = settings(0.9, LR1)
    supervised_step(model, opt, b, cfg, **sched, baseline=torch.zeros(()))
    assert max_diff(list(model.parameters()), expected) <= 1e-6
    assert max_diff(list(model.parameters()), list(base.parameters())) > 1e-3


def test_step_reports_batch_statistics():
    base, b = make_model(), make_batch()
    thr = mixed_threshold(base, b)
    out, _ = run_step(copy.deepcopy(base), b, settings(thr, LR1), LR2)
    with torch.no_grad():
        p = torch.softmax(forward(list(base.parameters()), b.x_uw) / T, -1)
    conf, y_hat = p.max(-1)
    assert float(out["train/mask_ratio"]) == pytest.approx(float((conf >= thr).double().mean()))
    assert 0 < float(out["train/mask_ratio"]) < 1
    assert float(out["train/pseudo_label_accuracy"]) == pytest.approx(
        float((y_hat == b.y_u).double().mean()))
    assert set(out) == {"train/loss_labeled", "train/loss_uda", "train/loss_mpl",
                        "train/feedback", "train/mask_ratio", "train/pseudo_label_accuracy",
                        "finite"}
    measured, _ = run_step(copy.deepcopy(base), b, settings(thr, LR1), LR2, measure=True)
    assert set(measured) == set(out) | {"train/mpl_grad_ratio"}


def test_feedback_vanishes_with_lr_for_batchnorm_model():
    torch.manual_seed(0)
    model = SmallCNN(1, 10, width=4)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N_L + 2 * N_U, 1, 8, 8, generator=g)
    b = Batch(x[:N_L], torch.randint(0, 10, (N_L,), generator=g), x[N_L:N_L + N_U],
              x[N_L + N_U:], torch.randint(0, 10, (N_U,), generator=g), torch.arange(N_U))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    out, _ = smpl_step(model, opt, b, SMPLConfig(), lr=1e-12, beta=1.0, baseline=torch.zeros(()))
    assert abs(float(out["train/feedback"])) < 1e-5
