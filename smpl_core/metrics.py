"""The training metrics of one report window, accumulated on the device.

Each step's statistics (0-d tensors from smpl_core.step) are summed without a host sync;
`summary()` turns them into floats with one. Besides the mean of every statistic, the
window's feedback h gets the diagnostics that say whether the meta term does anything
(h scales with lr_k, so its mean over a window hides how small and how noisy it is):

- `train/feedback_abs`:      mean |h| over the window's steps
- `train/feedback_std`:      standard deviation of h over the window (population, ddof=0)
- `train/feedback_pos_frac`: fraction of the window's steps with h > 0
- `train/mpl_grad_ratio`:    ||grad of mpl_weight * L_mpl|| / ||grad of L_uda|| at the
                             second update, measured on the window's last step only

h is the raw feedback (before the baseline, scale, clip and control of smpl_core.feedback), as
`train/feedback`.
"""

from __future__ import annotations

import math

import torch

FEEDBACK = "train/feedback"
RATIO = "train/mpl_grad_ratio"


class Window:
    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}
        self.steps = 0

    def _add(self, key: str, v: torch.Tensor) -> None:
        self.sums[key] = self.sums[key] + v if key in self.sums else v

    def add(self, out: dict[str, torch.Tensor]) -> None:
        """One step's statistics (without `finite`)."""
        for k, v in out.items():
            if k == RATIO:  # a measurement of one step, not a mean
                self.last[k] = v.float()
                continue
            self._add(k, v.float())
            if k == FEEDBACK:
                # float64: h ~ 1e-5 late in a run, and std = sqrt(E[h^2] - E[h]^2) cancels.
                h = v.double()
                self._add("_h_sum", h)
                self._add("_h_sq", h * h)
                self._add("train/feedback_abs", h.abs())
                self._add("train/feedback_pos_frac", (h > 0).to(h.dtype))
        self.steps += 1

    def summary(self) -> dict[str, float]:
        keys = list(self.sums) + list(self.last)
        vals = [self.sums[k] / self.steps for k in self.sums] + list(self.last.values())
        if not keys:
            return {}
        flat = torch.stack([v.double() for v in vals])
        out = dict(zip(keys, flat.tolist()))  # the one host sync of the report
        if "_h_sum" in out:
            mean, sq = out.pop("_h_sum"), out.pop("_h_sq")
            out["train/feedback_std"] = math.sqrt(max(0.0, sq - mean * mean))
        return out
