"""The feedback signal of the meta term: from this step's h to the f in L_mpl = f * CE.

SMPL's meta term is L_mpl = f_k * CE(z_us, argmax z_us), weighted by `mpl_weight` in the
second update. Every known implementation uses f_k = h_k (raw, weight 1), and h_k =
L_old - L_new ~ lr_k * grad L_l(theta') . g1 fades with lr_k over the cosine schedule.
This module turns h_k into f_k, in a fixed order (alpha = 0.99, `DECAY`):

1. sign     h_k = L_old - L_new (`feedback_sign: paper`) or L_new - L_old (`code`); this
            raw h is what the step reports as `train/feedback`.
2. scale and baseline (`feedback_scale`), b_0 = 0:
   raw         u_k = h_k - b_k,            b_{k+1} = alpha b_k + (1 - alpha) h_k
               (with `feedback_baseline`; without it u_k = h_k and b stays 0: today's step)
   per_lr      v_k = h_k / lr_k (the dot product of the two gradients without the step
               size, so it does not fade with the schedule);
               u_k = v_k - b_k,            b_{k+1} = alpha b_k + (1 - alpha) v_k
               (with `feedback_baseline`; without it u_k = v_k): b is a baseline of h/lr
   normalised  d_k = h_k - b_k,            b_{k+1} = alpha b_k + (1 - alpha) h_k (always:
               the baseline is part of this scale, `feedback_baseline` changes nothing),
               V_{k+1} = alpha V_k + (1 - alpha) d_k^2, V_0 = 0,
               s_k = sqrt(V_{k+1} / (1 - alpha^(k+1))) (bias-corrected, and including this
               step's d_k, so the first step has s_0 = |d_0| and no special case),
               u_k = d_k / s_k (0 where d_k = s_k = 0). |u_k| <= sqrt((1 - alpha^(k+1)) /
               (1 - alpha)) < 10, and `mpl_weight` alone sets the term's size.
3. clip     c_k = clamp(u_k, -feedback_clip, feedback_clip) (`feedback_clip` 0: c_k = u_k).
4. control  (`feedback_control`, what enters L_mpl; the state above is updated from the
            real h_k whatever the control, so b, V and the history are the `none` arm's):
   none        f_k = c_k
   shuffled    f_k = c_j, j drawn uniformly from the last min(k, `HISTORY`) steps before k
               (a ring buffer of c), from a generator of its own seeded with the run's
               seed, so the augmentations' random numbers stay those of the `none` arm;
               f_0 = 0 (no earlier step). Same distribution as c, no relation to this
               step's pseudo labels.
   constant    f_k = m_k = M_k / (1 - alpha^k), M_{k+1} = alpha M_k + (1 - alpha) c_k,
               M_0 = 0: the bias-corrected running mean of the earlier steps' c; f_0 = 0.
               An extra loss term of the same mean size, with no per-step signal.

All of it stays on the device (no host sync); the step count is a Python int. The state
is tensors and plain Python types only (`state_dict`), so a checkpoint loads with
`torch.load(..., weights_only=True)` and a resumed run goes on bit for bit.
"""

from __future__ import annotations

import torch

from smpl_core.config import SMPLConfig

DECAY = 0.99  # alpha: the baseline b, the running variance V and the running mean M
HISTORY = 100  # steps kept for the `shuffled` control (about the EMA's time constant)
TINY = 1e-30  # s_k floor: d_k = s_k = 0 gives f_k = 0


def is_plain(cfg: SMPLConfig) -> bool:
    """raw scale, no clip, no control: f_k = h_k (- b_k): the step as it always was."""
    return (cfg.feedback_scale == "raw" and cfg.feedback_clip == 0
            and cfg.feedback_control == "none")


class FeedbackState:
    """b, V, M, the ring buffer of c, the step count and the shuffle generator of a run."""

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0, history: int | None = None,
                 baseline: torch.Tensor | None = None):
        device = torch.device(device)
        history = HISTORY if history is None else history
        self.baseline = (torch.zeros((), device=device, dtype=dtype) if baseline is None
                         else baseline)
        self.var = torch.zeros((), device=device, dtype=dtype)
        self.mean = torch.zeros((), device=device, dtype=dtype)
        self.ring = torch.zeros(history, device=device, dtype=dtype)
        self.count = 0
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    # --- the signal ---------------------------------------------------------------------
    def signal(self, h: torch.Tensor, lr: float, cfg: SMPLConfig) -> torch.Tensor:
        """f_k from this step's signed raw h_k and lr_k; updates the state (module doc)."""
        scale = cfg.feedback_scale
        if scale == "raw" or scale == "per_lr":
            v = h if scale == "raw" else h / lr
            if cfg.feedback_baseline:  # the same two lines as before the scaled feedback
                u = v - self.baseline
                self.baseline = DECAY * self.baseline + (1 - DECAY) * v
            else:
                u = v
        else:  # normalised
            d = h - self.baseline
            self.baseline = DECAY * self.baseline + (1 - DECAY) * h
            self.var = DECAY * self.var + (1 - DECAY) * d * d
            s = torch.sqrt(self.var / (1 - DECAY ** (self.count + 1)))
            u = d / s.clamp_min(TINY)
        c = u.clamp(-cfg.feedback_clip, cfg.feedback_clip) if cfg.feedback_clip > 0 else u
        f = self._control(c, cfg.feedback_control)
        self.count += 1
        return f.detach()

    def _control(self, c: torch.Tensor, control: str) -> torch.Tensor:
        k, n = self.count, len(self.ring)
        if control == "shuffled":
            if k == 0:
                f = torch.zeros_like(c)
            else:
                j = torch.randint(0, min(k, n), (), device=self.ring.device,
                                  generator=self.generator)
                f = torch.take(self.ring, j).to(c.dtype)  # a copy: the write below is safe
            self.ring[k % n] = c.detach()
            return f
        if control == "constant":
            f = (self.mean / (1 - DECAY ** k)).to(c.dtype) if k > 0 else torch.zeros_like(c)
            self.mean = DECAY * self.mean + (1 - DECAY) * c.detach()
            return f
        return c

    # --- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"baseline": self.baseline, "var": self.var, "mean": self.mean,
                "ring": self.ring, "count": self.count,
                "generator": self.generator.get_state()}

    def load_state_dict(self, st: dict) -> None:
        dev = self.baseline.device
        self.baseline = st["baseline"].to(dev)
        self.var = st["var"].to(dev)
        self.mean = st["mean"].to(dev)
        self.ring = st["ring"].to(dev).clone()
        self.count = int(st["count"])
        try:
            self.generator.set_state(st["generator"].cpu())
        except RuntimeError:  # written on another device type (CPU <-> CUDA generators):
            # no bit-for-bit continuation is possible there anyway; go on deterministically.
            self.generator.manual_seed(self.count)


def apply(h: torch.Tensor, state: FeedbackState | torch.Tensor, lr: float, cfg: SMPLConfig):
    """(f_k, new state). `state` may be a bare baseline tensor (the steps' older calling
    convention): with the plain signal it stays one, with any other a FeedbackState is made
    from it and returned in its place."""
    if isinstance(state, torch.Tensor):
        if is_plain(cfg):
            if not cfg.feedback_baseline:
                return h, state
            return h - state, DECAY * state + (1 - DECAY) * h
        state = FeedbackState(state.device, h.dtype, cfg.seed, baseline=state.to(h.dtype))
    return state.signal(h, lr, cfg), state
