"""Feedback diagnostics: on a constructed run with known h values, every report's
feedback_abs, feedback_std, feedback_pos_frac and mpl_grad_ratio equal their definitions
(computed here with numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smpl_core import loop
from smpl_core.config import SMPLConfig
from smpl_core.metrics import Window

# Known h per step: signs mixed, magnitudes from 1e-2 down to 1e-6 (late steps, small lr_k),
# one exact zero (neither positive nor negative).
H = [3e-2, -1e-2, 2e-3, 0.0, -4e-4, 5e-6, -1e-6, 2e-6, 7e-5, -3e-5]
RATIO = [0.1 * (k + 1) for k in range(len(H))]  # what a measured step k would return


def _definitions(h: list[float]) -> dict[str, float]:
    a = np.asarray(h, dtype=np.float64)
    return {"train/feedback": a.mean(), "train/feedback_abs": np.abs(a).mean(),
            "train/feedback_std": a.std(ddof=0), "train/feedback_pos_frac": (a > 0).mean()}


def _fake_step(calls):
    def step(model, optimizer, b, cfg, *, lr, beta, baseline, autocast=None, measure=False):
        k = len(calls)
        calls.append(measure)
        out = {"train/loss_labeled": torch.tensor(1.0), "train/loss_uda": torch.tensor(1.0),
               "train/loss_mpl": torch.tensor(0.0), "train/mask_ratio": torch.tensor(0.5),
               "train/pseudo_label_accuracy": torch.tensor(0.5),
               "train/feedback": torch.tensor(H[k]), "finite": torch.tensor(True)}
        if measure:
            out["train/mpl_grad_ratio"] = torch.tensor(RATIO[k])
        return out, baseline
    return step


def test_reports_of_a_constructed_run_equal_the_definitions(monkeypatch):
    calls: list[bool] = []
    monkeypatch.setitem(loop.STEPS, "smpl", _fake_step(calls))
    cfg = SMPLConfig(dataset="moons", num_labeled=6, val_size=50, batch_size=8, mu=2,
                     steps=len(H), eval_every=4, device="cpu")
    reports = []
    loop.fit(cfg, report=lambda m, s: reports.append(m))
    # Windows: steps 0-3, 4-7, 8-9 (the last one short); one measured step per report.
    assert [m["step"] for m in reports] == [4, 8, 10]
    assert calls == [False, False, False, True] * 2 + [False, True]
    for m, (lo, hi) in zip(reports, [(0, 4), (4, 8), (8, 10)]):
        for key, want in _definitions(H[lo:hi]).items():
            assert m[key] == pytest.approx(want, rel=1e-6, abs=1e-12), key
        assert m["train/mpl_grad_ratio"] == pytest.approx(RATIO[hi - 1])


def test_window_keeps_float64_precision_for_tiny_h():
    """std of h ~ 1e-6 around a mean of 1e-3: float32 sums of h^2 would cancel to noise."""
    h = [1e-3 + d for d in (1e-6, -1e-6, 2e-6, -2e-6, 0.0)]
    w = Window()
    for v in h:
        w.add({"train/feedback": torch.tensor(v, dtype=torch.float32)})
    got = w.summary()
    want = _definitions([float(np.float32(v)) for v in h])
    assert got["train/feedback_std"] == pytest.approx(want["train/feedback_std"], rel=1e-3)
    assert got["train/feedback_pos_frac"] == 1.0
