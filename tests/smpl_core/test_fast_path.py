"""The fast paths (torch.compile, channels_last, bf16 on CUDA) compute what the plain path
computes: same losses and parameters for the same inputs and seeds."""

from __future__ import annotations

import copy

import pytest
import torch

from smpl_core.config import SMPLConfig
from smpl_core.data import Batch
from smpl_core.loop import _Run, fit
from smpl_core.models import SmallCNN
from smpl_core.step import smpl_step

TINY = dict(steps=3, eval_every=3, batch_size=8, mu=2, val_size=50, device="cpu")


def _three_steps(compile_mode: str):
    torch.manual_seed(0)
    run = _Run(SMPLConfig(compile=compile_mode, **TINY), torch.device("cpu"))
    stats = [{k: float(v) for k, v in run.train_step(None).items()} for _ in range(3)]
    return stats, [p.detach().clone() for p in run.models["model"].parameters()]


def test_compiled_step_matches_eager():
    eager_stats, eager_params = _three_steps("off")
    comp_stats, comp_params = _three_steps("on")
    for a, b in zip(eager_stats, comp_stats):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
    for a, b in zip(eager_params, comp_params):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


CFG = SMPLConfig(threshold=0.5)


def test_channels_last_step_matches_contiguous():
    torch.manual_seed(0)
    base = SmallCNN(3, 10, width=8)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8 + 2 * 16, 3, 12, 12, generator=g)
    y = torch.randint(0, 10, (8 + 16,), generator=g)
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        model = copy.deepcopy(base).to(memory_format=memory_format)
        xs = x.contiguous(memory_format=memory_format)
        b = Batch(xs[:8], y[:8], xs[8:24], xs[24:], y[8:], torch.arange(16))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        stats, _ = smpl_step(model, opt, b, CFG, lr=0.05, beta=1.0, baseline=torch.zeros(()))
        results.append(({k: float(v) for k, v in stats.items()},
                        [p.detach().contiguous() for p in model.parameters()]))
    (s1, p1), (s2, p2) = results
    for k in s1:
        assert s2[k] == pytest.approx(s1[k], rel=1e-4, abs=1e-5), k
    for a, b in zip(p1, p2):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_channels_last_run_on_cuda():
    result = fit(SMPLConfig(dataset="digits", steps=20, eval_every=10, device="cuda",
                            amp="bf16", channels_last=True))
    assert not result.metrics["diverged"]
    assert result.metrics["gpu_mem_peak_mb"] > 0
    assert 0.0 <= result.metrics["val_accuracy"] <= 1.0
