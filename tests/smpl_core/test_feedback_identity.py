"""The feedback identity on project code: h returned by `smpl_step` equals
lr * grad L_l(theta') . g1 to first order (MPL, Pham et al. 2021, eq. 12), in float64.

The expected value is computed here with torch alone: g1 from a plain forward of a copy of
the model on cat(x_l, x_uw, x_us) and hand-written cross-entropies, grad L_l(theta') by
autograd through a labelled-only forward. With BatchNorm, L_l is the train-mode loss on the
labelled batch alone, the same statistics that L_old and L_new use in the step.
"""

from __future__ import annotations

import copy

import pytest
import torch
from smpl_reference import LS, N_L, N_U, T, ce, make_batch, make_model, settings
from torch.func import functional_call

from smpl_core.data import Batch
from smpl_core.models import SmallCNN
from smpl_core.step import smpl_step


def _image_model_and_batch():
    torch.manual_seed(0)
    model = SmallCNN(1, 4, width=4).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N_L + 2 * N_U, 1, 8, 8, generator=g, dtype=torch.float64)
    b = Batch(x[:N_L], torch.randint(0, 4, (N_L,), generator=g), x[N_L:N_L + N_U],
              x[N_L + N_U:], torch.randint(0, 4, (N_U,), generator=g), torch.arange(N_U))
    return model, b


def _taylor(model, b: Batch, lr: float) -> float:
    """lr * grad L_l(theta') . g1, with torch alone (train mode, buffers cloned)."""
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}

    def f(params, x):
        bufs = {n: t.clone() for n, t in model.named_buffers()}
        return functional_call(model, {**params, **bufs}, (x,))

    z = f(theta, torch.cat([b.x_l, b.x_uw, b.x_us]))
    _, z_uw, z_us = z.split([N_L, N_U, N_U])
    y_hat = torch.softmax(z_uw.detach() / T, -1).argmax(-1)
    g1 = torch.autograd.grad(ce(z_us, y_hat, LS), [theta[n] for n in names])
    theta1 = {n: (theta[n] - lr * g).detach().requires_grad_(True) for n, g in zip(names, g1)}
    grad_new = torch.autograd.grad(ce(f(theta1, b.x_l), b.y_l), [theta1[n] for n in names])
    return float(lr * sum((gn * g).sum() for gn, g in zip(grad_new, g1)))


def _h(model, b: Batch, lr: float, sign: str = "paper") -> float:
    cfg, sched = settings(0.5, lr, sign=sign)
    sched["lr"] = lr
    m = copy.deepcopy(model)
    out, _ = smpl_step(m, torch.optim.SGD(m.parameters(), lr=0.1), b, cfg, **sched,
                       baseline=torch.zeros((), dtype=torch.float64))
    return float(out["train/feedback"])


CASES = {"mlp (no BatchNorm)": lambda: (make_model(), make_batch()),
         "cnn (BatchNorm)": _image_model_and_batch}


@pytest.mark.parametrize("case", list(CASES))
def test_h_of_smpl_step_is_lr_times_grad_dot_g1_to_first_order(case):
    model, b = CASES[case]()
    lr = 1e-3
    h, taylor = _h(model, b, lr), _taylor(model, b, lr)
    assert abs(taylor) > 1e-7  # a non-degenerate direction, else the check is vacuous
    assert abs(h - taylor) <= 2e-2 * abs(taylor)
    # The residual is second order in lr: halving lr quarters it.
    h2, taylor2 = _h(model, b, lr / 2), _taylor(model, b, lr / 2)
    assert 3.0 < (h - taylor) / (h2 - taylor2) < 5.0
    # ...and the `code` sign is its negative.
    assert _h(model, b, lr, "code") == pytest.approx(-h, rel=1e-12)
