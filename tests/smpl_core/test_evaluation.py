"""Evaluations that mean the same early and late: precise BatchNorm statistics, the EMA of
the weights, evaluating never changing training, eval_every > steps, and a checkpoint's
model scoring what was reported."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smpl_core.config import SMPLConfig
from smpl_core.data import Splits, load_splits
from smpl_core.evaluation import EMA, evaluate, precise_bn
from smpl_core.loop import fit
from smpl_core.models import build_model, resolve_model_name

WRN = dict(dataset="digits", model="wrn28_2", method="supervised", steps=100, batch_size=16,
           mu=3, device="cpu", eval_bn_batches=4, seed=0)


def _states(cfg: SMPLConfig):
    reports = []
    fit(cfg, report=lambda m, s: reports.append((m, s)))
    return reports


def _assert_same_training(a: dict, b: dict):
    """Training models (and EMA), optimiser state and feedback baseline, bit for bit."""
    for role, sd in a["train_models"].items():
        for k, v in sd.items():
            assert torch.equal(v, b["train_models"][role][k]), (role, k)
    for role, o in a["optimizers"].items():
        for i, st in o["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    assert torch.equal(v, b["optimizers"][role]["state"][i][k]), (role, k)
    assert torch.equal(a["baseline"], b["baseline"])


# --- wrn28_2: BatchNorm momentum 0.001 ----------------------------------------------------------

def test_wrn28_2_evaluates_sensibly_at_step_100_and_evaluating_changes_no_training():
    """At step 100 the running statistics of wrn28_2 (momentum 0.001) have moved 10% of the
    way from their initial values; evaluated with them the model scores chance with a
    val_loss in the hundreds (any method: the statistics are the evaluation's; the
    supervised run keeps the test short). Precise BN makes the same weights score well.
    Evaluating four times instead of once leaves training bit for bit the same."""
    often = _states(SMPLConfig(**WRN, eval_every=25))
    once = _states(SMPLConfig(**WRN, eval_every=100))
    m = once[-1][0]
    assert m["step"] == 100
    assert m["val_accuracy"] > 0.5 and m["val_loss"] < 2.0  # chance: 0.10 and ln 10 = 2.3
    assert [r[0]["step"] for r in often] == [25, 50, 75, 100]
    assert often[0][0]["val_loss"] < 3.0  # sensible from the first report on
    _assert_same_training(often[-1][1], once[-1][1])
    assert often[-1][0]["val_accuracy"] == m["val_accuracy"]
    # The check can fail: the running statistics give chance on the same training.
    running = _states(SMPLConfig(**WRN, eval_every=100, eval_bn="running"))
    _assert_same_training(running[-1][1], once[-1][1])
    assert running[-1][0]["val_accuracy"] < 0.2 and running[-1][0]["val_loss"] > 10


@pytest.mark.parametrize("extra", [{"method": "smpl", "ema_decay": 0.9},
                                   {"method": "mpl", "feedback_baseline": True}])
def test_evaluating_never_changes_training(extra):
    base = dict(dataset="digits", steps=12, batch_size=8, mu=2, val_size=50, device="cpu")
    often = _states(SMPLConfig(**base, **extra, eval_every=3))
    once = _states(SMPLConfig(**base, **extra, eval_every=12))
    _assert_same_training(often[-1][1], once[-1][1])
    assert often[-1][0]["val_accuracy"] == once[-1][0]["val_accuracy"]


# --- precise BN and the EMA, against their definitions ------------------------------------------

def _tiny_splits(n_lab=6, n_unl=30):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_lab + n_unl, 2, 4, 4), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (n_lab + n_unl,), generator=g)
    mean, std = torch.full((1, 2, 1, 1), 0.4), torch.full((1, 2, 1, 1), 0.3)
    return Splits(x[:n_lab], y[:n_lab], x[n_lab:], y[n_lab:], x[:4], y[:4], x[:4], y[:4], 3,
                  True, mean, std)


def test_precise_bn_is_the_cumulative_average_of_batch_statistics():
    splits = _tiny_splits()
    model = nn.Sequential(nn.BatchNorm2d(2, momentum=0.001), nn.Flatten(), nn.Linear(32, 3))
    idx, per_batch = torch.tensor([0, 7, 3, 20, 9, 35, 1, 12, 28, 5, 17, 30]), 4
    with torch.no_grad():  # statistics from training, which precise BN must discard
        model(torch.randn(8, 2, 4, 4) * 5 + 3)
    trained = model[0].running_mean.clone()
    precise_bn(model, splits, idx, per_batch)
    x_all = torch.cat([splits.x_lab, splits.x_unl])
    means, variances = [], []
    for i in range(0, len(idx), per_batch):
        x = (x_all[idx[i:i + per_batch]].float() / 255 - splits.mean) / splits.std
        means.append(x.mean(dim=(0, 2, 3)))
        variances.append(x.transpose(0, 1).reshape(2, -1).var(dim=1, unbiased=True))
    torch.testing.assert_close(model[0].running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(model[0].running_var, torch.stack(variances).mean(0))
    assert model[0].momentum == 0.001  # restored
    assert not torch.equal(model[0].running_mean, trained)


def test_ema_is_the_bias_corrected_average_of_the_weights():
    model, d = nn.Linear(3, 2).double(), 0.8
    ema = EMA(nn.Linear(3, 2).double(), d)  # its own initial weights must get no weight
    seen = []
    for k in range(1, 6):
        with torch.no_grad():
            model.weight.add_(torch.randn(2, 3, dtype=torch.float64))
        seen.append(model.weight.detach().clone())
        ema.update(model, k)
    k = len(seen)
    expected = sum((1 - d) * d ** (k - i) * w for i, w in enumerate(seen, 1)) / (1 - d ** k)
    torch.testing.assert_close(ema.module.weight, expected, rtol=1e-12, atol=1e-12)


# --- eval_every > steps, checkpoint scores as reported -----------------------------------------

def test_eval_every_beyond_steps_evaluates_once_at_the_end():
    reports = _states(SMPLConfig(dataset="moons", num_labeled=6, val_size=50, batch_size=8,
                                 mu=2, steps=7, eval_every=100, device="cpu"))
    assert [m["step"] for m, _ in reports] == [7]
    assert "train/mpl_grad_ratio" in reports[0][0]


@pytest.mark.parametrize("method", ["smpl", "mpl"])
def test_checkpoint_model_scores_what_was_reported(method):
    cfg = SMPLConfig(dataset="digits", method=method, steps=10, eval_every=5, batch_size=8,
                     mu=2, val_size=50, device="cpu", ema_decay=0.9)
    m, state = _states(cfg)[-1]
    role = "student" if method == "mpl" else "model"
    assert set(state["models"]) == {role}  # what export and MLflow load
    splits = load_splits(cfg, torch.device("cpu"))
    model = build_model(resolve_model_name(cfg.model, cfg.dataset), splits.input_shape,
                        splits.num_classes)
    model.load_state_dict(state["models"][role])
    acc, loss = evaluate(model, splits, splits.x_val, splits.y_val)
    assert acc == m["val_accuracy"] and loss == pytest.approx(m["val_loss"], rel=1e-6)
    # The check can fail: the raw training weights score differently.
    model.load_state_dict(state["train_models"][role])
    assert evaluate(model, splits, splits.x_val, splits.y_val)[1] != pytest.approx(
        m["val_loss"], rel=1e-6)
