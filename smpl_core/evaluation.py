"""What an evaluation sees: the weights (raw or their EMA), BatchNorm statistics that mean
the same at step 100 as at step 100,000 (precise BN), and the accuracy and loss on a split.

Why precise BN: `wrn28_2` uses BatchNorm momentum 0.001 (the FixMatch / MPL setting for
million-step runs), so after k steps its running statistics have moved only 1 - 0.999^k of
the way from their initial values (10% at 100 steps). Evaluated with them, a model whose
training predictions are already confident scores chance (val_loss in the thousands), and
ASHA would prune on that. Before each evaluation the statistics of the evaluated model are
recomputed as a cumulative average over a fixed set of training batches, as PreciseBN in
pycls / fvcore does. This happens on a separate copy, so training never sees it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smpl_core.config import SMPLConfig
from smpl_core.data import Splits


@torch.no_grad()
def evaluate(model: nn.Module, splits: Splits, x: torch.Tensor, y: torch.Tensor,
             batch: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` in eval mode on stored examples."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=y.device)
    total_loss = torch.zeros((), device=y.device)
    for i in range(0, len(y), batch):
        z = model(splits.inputs(x[i:i + batch])).float()
        correct += (z.argmax(-1) == y[i:i + batch]).sum()
        total_loss += F.cross_entropy(z, y[i:i + batch], reduction="sum")
    model.train(was_training)
    return (correct / len(y)).item(), (total_loss / len(y)).item()


class EMA:
    """Exponential moving average of a model's parameters (`module`, a separate copy);
    buffers are copied from the model, as megaboost's and MPL-pytorch's ModelEMA do.

    Bias-corrected as Adam's moments are: after k updates it is
    sum_i (1 - d) d^(k-i) theta_i / (1 - d^k), so the random initial weights get no weight.
    The references start from the initial weights instead, which at decay 0.995 still weigh
    0.995^100 = 61% at step 100: early evaluations (ASHA's first rungs) would score the
    initialisation. After a few times 1 / (1 - d) steps both are the same average.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.module, self.decay = module, decay

    @torch.no_grad()
    def update(self, model: nn.Module, k: int) -> None:
        """The k-th update (k = 1, 2, ...): lerp weight (1 - d) / (1 - d^k), 1 at k = 1."""
        w = (1.0 - self.decay) / (1.0 - self.decay ** k)
        ema_p = list(self.module.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], w)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def bn_pool(splits: Splits, cfg: SMPLConfig) -> tuple[torch.Tensor, int]:
    """The fixed training images precise BN averages over, and its batch size.

    Clean (unaugmented) labelled and unlabelled training images, the distribution the
    evaluation sees, in batches as large as the training forward's (B, or B + 2 mu B), so
    the per-batch variances match training's. The subset is drawn once per run from its
    own generator: no global RNG is consumed, so evaluating never changes training.
    """
    n_lab, n_unl = len(splits.y_lab), len(splits.y_unl)
    per_batch = cfg.batch_size if cfg.method == "supervised" else cfg.batch_size * (1 + 2 * cfg.mu)
    per_batch = min(per_batch, n_lab + n_unl)
    # Full batches only (the cumulative average weighs batches equally, so a short last
    # batch would count as much as a full one), and never more than the pool holds once.
    n_batches = min(cfg.eval_bn_batches, (n_lab + n_unl) // per_batch)
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(n_lab + n_unl, generator=g)[:n_batches * per_batch]
    return idx.to(splits.x_lab.device), per_batch


@torch.no_grad()
def precise_bn(model: nn.Module, splits: Splits, idx: torch.Tensor, per_batch: int,
               autocast=None) -> None:
    """Replace every BatchNorm's running statistics of `model` (a copy that is evaluated,
    never the one that trains) by their average over the batches of `idx`.

    With momentum None, BatchNorm keeps a cumulative average (running = mean over the
    batches seen since reset_running_stats), the PreciseBN estimate.
    """
    layers = bn_layers(model)
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    n_lab = len(splits.y_lab)
    for i in range(0, len(idx), per_batch):
        j = idx[i:i + per_batch]
        lab, unl = j[j < n_lab], j[j >= n_lab] - n_lab
        x = torch.cat([splits.inputs(splits.x_lab[lab]), splits.inputs(splits.x_unl[unl])])
        if autocast is not None:
            with autocast:
                model(x)
        else:
            model(x)
    for m, mom in zip(layers, momenta):
        m.momentum = mom
    model.train(was_training)
