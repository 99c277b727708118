"""The SMPL step against an independent float64 autograd computation written here.

The reference (smpl_reference.py) re-derives docs/design.md "The SMPL step" from scratch: a
hand-written forward of the MLP from its parameter list, hand-written cross-entropies, and
torch.autograd for every gradient. Nothing from smpl_core.losses or smpl_core.step is
used to build an expected value.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from smpl_reference import (
    LS,
    N_L,
    N_U,
    T,
    ce,
    forward,
    make_batch,
    make_model,
    max_diff,
    mixed_threshold,
    reference,
    run_step,
    settings,
)

from smpl_core.config import SMPLConfig
from smpl_core.data import Batch
from smpl_core.models import SmallCNN
from smpl_core.step import smpl_step, supervised_step

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

LR1, LR2 = 0.5, 0.3  # first update (lr_k) and second (the optimiser's lr)


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
    out, _ = smpl_step(model, opt, b, SMPLConfig(), lr=1e-12, beta=1.0,
                       baseline=torch.zeros(()))
    assert abs(float(out["train/feedback"])) < 1e-5
