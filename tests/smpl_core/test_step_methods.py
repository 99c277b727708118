"""The ablation steps (uda, mpl_weight), the fair MPL baseline and BatchNorm hygiene,
against independent float64 computations (smpl_reference.py: hand-written forward and
cross-entropies, torch.autograd for gradients) and against plain torch BatchNorm."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from smpl_reference import (
    BETA,
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
    ref_uda,
    reference,
    run_step,
    settings,
)

from smpl_core.data import Batch
from smpl_core.models import SmallCNN, WideResNet
from smpl_core.step import labeled_loss_at, mpl_step, smpl_step, uda_step

LR1, LR2 = 0.5, 0.3  # first update (lr_k) and the optimiser's lr
TOL = 1e-10  # float64


def _grad(loss_fn, theta):
    th = [t.detach().clone().requires_grad_(True) for t in theta]
    return torch.autograd.grad(loss_fn(th), th)


def _uda_of(th, b, thr):
    z_l, z_uw, z_us = forward(th, torch.cat([b.x_l, b.x_uw, b.x_us])).split([N_L, N_U, N_U])
    return ref_uda(z_l, b.y_l, z_uw, z_us, thr)


# --- method=uda and mpl_weight -----------------------------------------------------------------

def test_uda_step_is_smpl_without_first_update_and_meta_term():
    base, b = make_model(), make_batch()
    thr = mixed_threshold(base, b)
    theta = [p.detach() for p in base.parameters()]
    g = _grad(lambda th: _uda_of(th, b, thr), theta)
    expected = [t - LR2 * gi for t, gi in zip(theta, g)]
    model = copy.deepcopy(base)
    out, _ = run_step(model, b, settings(thr, LR1), LR2, step=uda_step)
    assert max_diff(list(model.parameters()), expected) <= TOL
    assert "train/feedback" not in out and "train/loss_mpl" not in out
    # The check can fail: the SMPL step from the same point lands elsewhere.
    _, _, smpl_new, _ = reference(theta, b, LR1, LR2, thr, "reuse")
    assert max_diff(smpl_new, expected) > 1e3 * TOL


@pytest.mark.parametrize("second_pass", ["reuse", "recompute"])
def test_mpl_weight_zero_second_update_is_the_uda_gradient(second_pass):
    """theta_new = theta' - LR2 * grad L_uda, the gradient taken at theta (reuse: step 1's
    graph) or at theta' (recompute)."""
    base, b = make_model(), make_batch()
    thr = mixed_threshold(base, b)
    theta = [p.detach() for p in base.parameters()]
    g1 = _grad(lambda th: ce(forward(th, b.x_us), torch.softmax(
        forward(theta, b.x_uw) / T, -1).argmax(-1), LS), theta)
    theta1 = [t - LR1 * g for t, g in zip(theta, g1)]
    at = theta if second_pass == "reuse" else theta1
    g = _grad(lambda th: _uda_of(th, b, thr), at)
    expected = [t1 - LR2 * gi for t1, gi in zip(theta1, g)]
    model = copy.deepcopy(base)
    out, _ = run_step(model, b, settings(thr, LR1, second_pass, mpl_weight=0.0), LR2)
    assert max_diff(list(model.parameters()), expected) <= TOL
    assert abs(float(out["train/feedback"])) > 1e-3  # h is still measured
    # The check can fail: with the meta term (weight 1) the update differs.
    with_meta = copy.deepcopy(base)
    run_step(with_meta, b, settings(thr, LR1, second_pass), LR2)
    assert max_diff(list(with_meta.parameters()), expected) > 1e3 * TOL


def test_mpl_weight_scales_the_meta_term():
    base, b = make_model(), make_batch()
    thr = mixed_threshold(base, b)
    _, _, expected, _ = reference(list(base.parameters()), b, LR1, LR2, thr, "reuse",
                                  mpl_weight=2.5)
    model = copy.deepcopy(base)
    run_step(model, b, settings(thr, LR1, mpl_weight=2.5), LR2)
    assert max_diff(list(model.parameters()), expected) <= TOL


# --- measuring mpl_grad_ratio changes nothing -------------------------------------------------

@pytest.mark.parametrize("second_pass", ["reuse", "recompute"])
def test_measured_step_updates_bit_for_bit_and_ratio_is_the_norm_ratio(second_pass):
    base, b = make_model(), make_batch()
    thr, w = mixed_threshold(base, b), 3.0
    plain, measured = copy.deepcopy(base), copy.deepcopy(base)
    out_p, _ = run_step(plain, b, settings(thr, LR1, second_pass, mpl_weight=w), LR2)
    out_m, _ = run_step(measured, b, settings(thr, LR1, second_pass, mpl_weight=w), LR2,
                        measure=True)
    for p, q in zip(plain.parameters(), measured.parameters()):
        assert torch.equal(p, q)
    assert "train/mpl_grad_ratio" not in out_p
    theta1, h, _, _ = reference(list(base.parameters()), b, LR1, LR2, thr, second_pass)
    at = list(base.parameters()) if second_pass == "reuse" else theta1

    def mpl_term(th):
        z_us = forward(th, b.x_us)
        return w * h * ce(z_us, z_us.detach().argmax(-1))

    def norm(gs):
        return math.sqrt(sum(float((g ** 2).sum()) for g in gs))

    ratio = norm(_grad(mpl_term, at)) / norm(_grad(lambda th: _uda_of(th, b, thr), at))
    assert ratio > 1e-4
    assert float(out_m["train/mpl_grad_ratio"]) == pytest.approx(ratio, rel=1e-5)


# --- the fair MPL baseline ---------------------------------------------------------------------

LR_S = 0.4  # the student's optimiser lr


@pytest.mark.parametrize("sign", ["paper", "code"])
def test_mpl_step_feedback_sign_and_teacher_update(sign):
    teacher, student, b = make_model(0), make_model(5), make_batch()
    thr = mixed_threshold(teacher, b)
    th_t = [p.detach() for p in teacher.parameters()]
    th_s = [p.detach() for p in student.parameters()]
    y_hat = torch.softmax(forward(th_t, b.x_uw) / T, -1).argmax(-1)
    g_s = _grad(lambda th: ce(forward(th, b.x_us), y_hat, LS), th_s)
    th_s1 = [t - LR_S * g for t, g in zip(th_s, g_s)]
    l_old, l_new = ce(forward(th_s, b.x_l), b.y_l), ce(forward(th_s1, b.x_l), b.y_l)
    h = float(l_old - l_new) if sign == "paper" else float(l_new - l_old)
    assert abs(h) > 1e-3

    def teacher_loss(th):
        z_us = forward(th, b.x_us)
        return _uda_of(th, b, thr) + h * ce(z_us, z_us.detach().argmax(-1))

    expected_t = [t - LR2 * g for t, g in zip(th_t, _grad(teacher_loss, th_t))]
    cfg, sched = settings(thr, LR1, sign=sign)
    t_opt = torch.optim.SGD(teacher.parameters(), lr=LR2)
    s_opt = torch.optim.SGD(student.parameters(), lr=LR_S)
    out, _ = mpl_step(teacher, student, t_opt, s_opt, b, cfg, **sched,
                      baseline=torch.zeros((), dtype=torch.float64))
    assert float(out["train/feedback"]) == pytest.approx(h, rel=1e-9)
    assert max_diff(list(student.parameters()), th_s1) <= TOL
    assert max_diff(list(teacher.parameters()), expected_t) <= TOL


def _image_batch(channels=1, size=8, classes=10, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_L + 2 * N_U, channels, size, size, generator=g, dtype=torch.float64)
    return Batch(x[:N_L], torch.randint(0, classes, (N_L,), generator=g), x[N_L:N_L + N_U],
                 x[N_L + N_U:], torch.randint(0, classes, (N_U,), generator=g),
                 torch.arange(N_U))


def _buffers(model):
    return {n: t.detach().clone() for n, t in model.named_buffers()}


def _after_one_forward(model, x):
    """The buffers of `model` after one plain train-mode forward on x (torch only)."""
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        m(x)
    return _buffers(m)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_mpl_step_student_running_stats_move_only_with_its_own_forward():
    torch.manual_seed(0)
    teacher, student = SmallCNN(1, 10, width=4).double(), SmallCNN(1, 10, width=4).double()
    b = _image_batch()
    expected = _after_one_forward(student, torch.cat([b.x_l, b.x_us]))
    cfg, sched = settings(0.5, LR1)
    mpl_step(teacher, student, torch.optim.SGD(teacher.parameters(), lr=0.1),
             torch.optim.SGD(student.parameters(), lr=0.1), b, cfg, **sched,
             baseline=torch.zeros((), dtype=torch.float64))
    _assert_same(_buffers(student), expected)
    assert int(student.features[1].num_batches_tracked) == 1


@pytest.mark.parametrize("make", [lambda: SmallCNN(1, 10, width=4),
                                  lambda: WideResNet(1, 10, depth=10, widen=1)])
def test_labelled_only_forward_leaves_batchnorm_buffers_unchanged(make):
    torch.manual_seed(0)
    model, b = make().double().train(), _image_batch()
    before = _buffers(model)
    assert any("running_mean" in k for k in before)
    params = dict(model.named_parameters())
    labeled_loss_at(model, params, b)
    labeled_loss_at(model, {k: p + 0.1 for k, p in params.items()}, b)
    _assert_same(_buffers(model), before)


def test_smpl_step_moves_running_stats_once_as_its_joint_forward():
    torch.manual_seed(0)
    model, b = SmallCNN(1, 10, width=4).double(), _image_batch()
    expected = _after_one_forward(model, torch.cat([b.x_l, b.x_uw, b.x_us]))
    cfg, sched = settings(0.5, LR1)
    smpl_step(model, torch.optim.SGD(model.parameters(), lr=0.1), b, cfg, **sched,
              baseline=torch.zeros((), dtype=torch.float64))
    _assert_same(_buffers(model), expected)
    assert BETA == sched["beta"]
