"""Pseudo labels, the consistency loss and the schedules, against values computed here."""

from __future__ import annotations

import math

import pytest
import torch

from smpl_core import losses


def test_pseudo_labels_carry_no_gradient():
    z_uw = torch.randn(8, 5, requires_grad=True)
    p, y_hat, mask = losses.pseudo_labels(z_uw, temperature=0.7, threshold=0.3)
    assert not p.requires_grad and not mask.requires_grad
    assert p.grad_fn is None
    expected = torch.softmax(z_uw.detach().double() / 0.7, -1)
    torch.testing.assert_close(p.double(), expected, atol=1e-6, rtol=0)
    assert torch.equal(y_hat, expected.argmax(-1))
    torch.testing.assert_close(mask.double(), (expected.max(-1).values >= 0.3).double())


def test_consistency_loss_has_no_gradient_into_the_weak_view():
    torch.manual_seed(0)
    z_l = torch.randn(4, 3, requires_grad=True)
    z_uw = torch.randn(6, 3, requires_grad=True)
    z_us = torch.randn(6, 3, requires_grad=True)
    y_l = torch.randint(0, 3, (4,))
    p, _, mask = losses.pseudo_labels(z_uw, 1.0, 0.2)
    assert mask.sum() > 0  # the consistency term is live, so the check below means something
    loss, _ = losses.uda_loss(z_l, y_l, z_us, p, mask, 2.0, clamp_min=1e-8, clamp_max=1.0)
    g_uw, g_us = torch.autograd.grad(loss, [z_uw, z_us], allow_unused=True)
    assert g_uw is None or torch.count_nonzero(g_uw) == 0
    assert g_us is not None and torch.count_nonzero(g_us) > 0


def test_uda_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    z_l, z_uw, z_us = (torch.randn(n, 4, generator=g) * 3 for n in (5, 7, 7))
    y_l = torch.randint(0, 4, (5,), generator=g)
    cmin, cmax, beta, ls, temp, thr = 0.02, 0.7, 1.3, 0.1, 0.5, 0.8
    p, _, mask = losses.pseudo_labels(z_uw, temp, thr)
    loss, l_lab = losses.uda_loss(z_l, y_l, z_us, p, mask, beta, clamp_min=cmin, clamp_max=cmax,
                                  label_smoothing=ls)
    zl, zuw, zus = z_l.double(), z_uw.double(), z_us.double()
    logp = zl - torch.logsumexp(zl, -1, keepdim=True)
    lab = ((1 - ls) * -logp[torch.arange(5), y_l] - ls * logp.mean(-1)).mean()
    pp = torch.softmax(zuw / temp, -1)
    m = (pp.max(-1).values >= thr).double()
    assert 0 < m.sum() < len(m)
    logq = (zus - torch.logsumexp(zus, -1, keepdim=True)).clamp(math.log(cmin), math.log(cmax))
    expected = lab + beta * (m * -(pp * logq).sum(-1)).mean()
    assert float(l_lab) == pytest.approx(float(lab), abs=1e-5)
    assert float(loss) == pytest.approx(float(expected), abs=1e-5)


def test_threshold_one_masks_even_extremely_confident_rows():
    z = torch.tensor([[100.0, 0.0], [0.0, 100.0], [1e4, -1e4]])
    _, _, mask = losses.pseudo_labels(z, 1.0, 1.0)
    assert torch.count_nonzero(mask) == 0
    # ...while any threshold below 1 lets them through.
    _, _, mask = losses.pseudo_labels(z, 1.0, 0.999)
    assert torch.count_nonzero(mask) == 3


@pytest.mark.parametrize("clamp_min", [1e-12, 1e-8, 1e-3, 0.1])
def test_consistency_term_never_exceeds_minus_log_clamp_min(clamp_min):
    g = torch.Generator().manual_seed(2)
    # Extreme logits: wrong-way confident pairs, where the unclamped CE is in the thousands.
    z_us = torch.randn(512, 10, generator=g) * 1e3
    z_uw = -z_us + torch.randn(512, 10, generator=g)
    p, _, _ = losses.pseudo_labels(z_uw, 1.0, 0.5)
    cons = losses.consistency_per_example(z_us, p, clamp_min, 1.0)
    bound = -math.log(clamp_min)
    assert torch.isfinite(cons).all()
    assert float(cons.max()) <= bound * (1 + 1e-6)
    assert float(cons.max()) >= 0.99 * bound  # the bound is reached: the clamp is what holds


def test_beta_schedule():
    for k, warm, expected in [(0, 10, 0.3), (4, 10, 1.5), (9, 10, 3.0), (10, 10, 3.0),
                              (500, 10, 3.0), (0, 1, 3.0)]:
        assert losses.beta_at(k, 3.0, warm) == pytest.approx(expected)
    for k in range(0, 30, 3):
        assert losses.beta_at(k, 2.5, 7) == pytest.approx(2.5 * min(1.0, (k + 1) / 7))


def test_lr_schedule_warmup_then_cosine_to_zero():
    lr, warm, total = 0.2, 5, 105
    got = [losses.lr_at(k, lr, warm, total) for k in range(total)]
    assert got[:warm] == pytest.approx([lr * (k + 1) / warm for k in range(warm)])
    assert got[warm] == pytest.approx(lr)
    for k in range(warm, total):
        expected = lr * 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm)))
        assert got[k] == pytest.approx(expected)
    assert got[total // 2 + warm // 2] == pytest.approx(lr / 2, rel=0.05)
    assert got[-1] < 1e-3 * lr
    assert all(a >= b for a, b in zip(got[warm:], got[warm + 1:]))  # monotone decay
    assert losses.lr_at(0, lr, 0, total) == pytest.approx(lr)  # no warm-up


def test_feedback_sign():
    old, new = torch.tensor(0.9), torch.tensor(0.7)
    assert float(losses.feedback(old, new, "paper")) == pytest.approx(0.2)
    assert float(losses.feedback(old, new, "code")) == pytest.approx(-0.2)


def test_mpl_loss_is_h_times_ce_to_own_argmax():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.5, 3.0]], requires_grad=True)
    got = losses.mpl_loss(z, torch.tensor(-0.3))
    zd = z.detach().double()
    logp = zd - torch.logsumexp(zd, -1, keepdim=True)
    expected = -0.3 * -(logp[0, 0] + logp[1, 2]) / 2
    assert float(got.detach()) == pytest.approx(float(expected), abs=1e-6)
    (gz,) = torch.autograd.grad(got, z)
    assert torch.count_nonzero(gz) > 0
