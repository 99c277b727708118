"""Today's step, recorded: the outputs of `feedback_scale=raw`, `feedback_control=none`
runs as the step computed them before the scaled feedback existed (commit 7f6ef2d).

`python tests/smpl_core/golden_raw_none.py` rewrites golden_raw_none.torch; it was run
once, at that commit, and must not be rerun to make a failing test pass. test_feedback.py
compares the current code with it bit for bit (torch.equal) where the torch version and the
CPU capability match the recording, to 1e-12 relative elsewhere (other SIMD kernels round
differently).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from smpl_reference import make_batch, make_model, mixed_threshold, settings  # noqa: E402

from smpl_core.loop import fit  # noqa: E402
from smpl_core.step import mpl_step, smpl_step  # noqa: E402

GOLDEN = HERE / "golden_raw_none.torch"
FITS = {
    "moons smpl": dict(method="smpl", dataset="moons", num_labeled=6, val_size=50, steps=12,
                       eval_every=6, batch_size=8, mu=2, threshold=0.6, uda_warmup_steps=3,
                       lr=0.1, lr_warmup_steps=2, device="cpu", seed=3),
    "moons smpl baseline recompute": dict(method="smpl", dataset="moons", num_labeled=6,
                                          val_size=50, steps=12, eval_every=6, batch_size=8,
                                          mu=2, threshold=0.6, lr=0.1, device="cpu", seed=1,
                                          feedback_baseline=True, second_pass="recompute",
                                          feedback_sign="code"),
    "moons mpl baseline": dict(method="mpl", dataset="moons", num_labeled=6, val_size=50,
                               steps=12, eval_every=6, batch_size=8, mu=2, threshold=0.6,
                               lr=0.1, device="cpu", seed=2, feedback_baseline=True),
    "digits smpl": dict(method="smpl", dataset="digits", num_labeled=50, val_size=50,
                        steps=4, eval_every=2, batch_size=8, mu=2, device="cpu", seed=0,
                        feedback_baseline=True),
}


def fits() -> dict:
    out = {}
    for name, cfg in FITS.items():
        states: list[dict] = []
        fit(cfg, report=lambda m, s, states=states: states.append(s))
        st = states[-1]
        out[name] = {"train_models": st["train_models"], "baseline": st["baseline"],
                     "optimizers": {k: o["state"] for k, o in st["optimizers"].items()}}
    return out


def steps() -> dict:
    """Three chained float64 steps of the MLP, with and without the baseline, measured."""
    out = {}
    for name, kw in {"reuse": {}, "recompute baseline": {"second_pass": "recompute",
                                                       "baseline": True}}.items():
        model, b = make_model(), make_batch()
        thr = mixed_threshold(model, b)
        cfg, sched = settings(thr, 0.5, **kw)
        opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
        base = torch.zeros((), dtype=torch.float64)
        rec = []
        for k in range(3):
            stats, base = smpl_step(model, opt, make_batch(10 + k), cfg, **sched,
                                    baseline=base, measure=True)
            rec.append({"stats": stats, "baseline": base.clone(),
                        "params": [p.detach().clone() for p in model.parameters()]})
        out[name] = rec
    teacher, student = make_model(0), make_model(5)
    b = make_batch()
    cfg, sched = settings(mixed_threshold(teacher, b), 0.5, baseline=True)
    t_opt = torch.optim.SGD(teacher.parameters(), lr=0.3)
    s_opt = torch.optim.SGD(student.parameters(), lr=0.5)
    base = torch.zeros((), dtype=torch.float64)
    rec = []
    for k in range(3):
        stats, base = mpl_step(teacher, student, t_opt, s_opt, make_batch(20 + k), cfg,
                               **sched, baseline=base, measure=True)
        rec.append({"stats": stats, "baseline": base.clone(),
                    "params": [p.detach().clone() for p in
                               [*teacher.parameters(), *student.parameters()]]})
    out["mpl"] = rec
    return out


def record() -> dict:
    torch.set_num_threads(1)
    return {"torch": str(torch.__version__), "cpu": torch.backends.cpu.get_cpu_capability(),
            "fits": fits(), "steps": steps()}


if __name__ == "__main__":
    torch.save(copy.deepcopy(record()), GOLDEN)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
