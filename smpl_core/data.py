"""Splits on the device and the one sampler that yields labelled and unlabelled batches.

The whole dataset is moved to the trial's device once, as uint8 images (or float32
vectors); a batch is an index slice of a device permutation and is augmented there. No
DataLoader workers, no PIL in the loop (docs/design.md, "Data on the device").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from smpl_core import augment
from smpl_core.datasets import RawData, load_raw
from smpl_core.errors import ConfigError

Augment = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Splits:
    x_lab: torch.Tensor
    y_lab: torch.Tensor
    x_unl: torch.Tensor
    y_unl: torch.Tensor  # true labels of the unlabelled set: only for pseudo-label accuracy
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    hflip: bool
    mean: torch.Tensor  # per-channel normalisation of [0, 1] images
    std: torch.Tensor

    @property
    def is_image(self) -> bool:
        return self.x_lab.dim() == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_lab.shape[1:])

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float in [0, 1]; vectors pass through."""
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.is_image else x

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Stored examples -> model inputs, without augmentation (evaluation)."""
        return self.normalize(self.to_float(x))


def split_indices(y: np.ndarray, num_classes: int, num_labeled: int, val_size: int, seed: int):
    """Labelled, validation and unlabelled indices; labelled and validation examples are
    spread evenly over classes (the first classes take the remainder)."""
    n = len(y)
    if num_labeled < num_classes:
        raise ConfigError(f"`num_labeled` must be at least the number of classes ({num_classes}), "
                         f"but got num_labeled={num_labeled}.")
    if num_labeled + val_size >= n:
        what = "num_labeled" if num_labeled >= n else "val_size"
        value = num_labeled if what == "num_labeled" else val_size
        raise ConfigError(f"`{what}` must leave unlabelled data (num_labeled + val_size < {n} "
                         f"training examples), but got {what}={value}.")
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
    lab, val = [], []
    for c, idx in enumerate(by_class):
        n_lab = num_labeled // num_classes + (c < num_labeled % num_classes)
        n_val = val_size // num_classes + (c < val_size % num_classes)
        if n_lab + n_val > len(idx):
            raise ConfigError(f"`num_labeled` must fit class {c}'s {len(idx)} examples together "
                             f"with val_size={val_size}, but got num_labeled={num_labeled}.")
        lab.append(idx[:n_lab])
        val.append(idx[n_lab:n_lab + n_val])
    lab, val = np.concatenate(lab), np.concatenate(val)
    rest = np.setdiff1d(np.arange(n), np.concatenate([lab, val]))
    return lab, val, rest


_RAW_CACHE: dict[tuple, RawData] = {}


def load_splits(cfg, device: torch.device) -> Splits:
    key = (cfg.dataset, cfg.data_dir, cfg.image_size, cfg.image_column, cfg.label_column)
    if key not in _RAW_CACHE:  # one load per process: every seed and every trial reuses it
        _RAW_CACHE[key] = load_raw(cfg)
    raw = _RAW_CACHE[key]
    lab, val, unl = split_indices(raw.y_train, raw.num_classes, cfg.num_labeled, cfg.val_size,
                                  cfg.seed)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    if raw.x_train.ndim == 4:
        xf = raw.x_train.astype(np.float32) / 255.0
        mean = torch.tensor(xf.mean(axis=(0, 2, 3)), device=device).view(1, -1, 1, 1)
        std = torch.tensor(xf.std(axis=(0, 2, 3)) + 1e-6, device=device).view(1, -1, 1, 1)
    else:
        mean = std = torch.zeros(1, device=device)
    x, y = raw.x_train, raw.y_train
    return Splits(t(x[lab]), t(y[lab]), t(x[unl]), t(y[unl]), t(x[val]), t(y[val]),
                  t(raw.x_test), t(raw.y_test), raw.num_classes, raw.hflip, mean, std)


class IndexStream:
    """Endless stream of index batches: slices of device permutations, reshuffled each pass.

    Its state (the indices not yet served) is a tensor, so a checkpoint resumes it exactly.
    """

    def __init__(self, n: int, batch: int, device: torch.device):
        self.n, self.batch, self.device = n, batch, device
        self.pending = torch.empty(0, dtype=torch.long, device=device)

    def next(self) -> torch.Tensor:
        while self.pending.numel() < self.batch:  # a batch larger than n spans passes
            self.pending = torch.cat([self.pending, torch.randperm(self.n, device=self.device)])
        idx, self.pending = self.pending[:self.batch], self.pending[self.batch:]
        return idx

    def state_dict(self) -> dict:
        return {"pending": self.pending.cpu()}

    def load_state_dict(self, s: dict) -> None:
        self.pending = s["pending"].to(self.device)


@dataclass
class Batch:
    x_l: torch.Tensor
    y_l: torch.Tensor
    x_uw: torch.Tensor  # weak view of unlabelled image i
    x_us: torch.Tensor  # strong view of the same image i
    y_u: torch.Tensor  # its true label (metrics only)
    idx_u: torch.Tensor


class Sampler:
    """Yields the labelled batch and the weak and strong views of the same unlabelled
    images: both views come from one gather, so their pairing cannot drift."""

    def __init__(self, splits: Splits, batch_size: int, mu: int, weak: Augment | None = None,
                 strong: Augment | None = None, unlabeled: bool = True):
        self.s = splits
        dev = splits.x_lab.device
        self.lab = IndexStream(len(splits.y_lab), batch_size, dev)
        self.unl = IndexStream(len(splits.y_unl), batch_size * mu, dev) if unlabeled else None
        self.weak = weak or (lambda x: augment.weak(x, splits.hflip))
        self.strong = strong or (lambda x: augment.strong(x, splits.hflip))

    def next(self) -> Batch:
        s = self.s
        i = self.lab.next()
        x_l = s.normalize(self.weak(s.to_float(s.x_lab[i])))
        if self.unl is None:
            empty = x_l[:0]
            return Batch(x_l, s.y_lab[i], empty, empty, s.y_lab[:0], i[:0])
        j = self.unl.next()
        x_u = s.to_float(s.x_unl[j])
        return Batch(x_l, s.y_lab[i], s.normalize(self.weak(x_u)), s.normalize(self.strong(x_u)),
                     s.y_unl[j], j)

    def state_dict(self) -> dict:
        return {"lab": self.lab.state_dict(), "unl": self.unl.state_dict() if self.unl else None}

    def load_state_dict(self, st: dict) -> None:
        self.lab.load_state_dict(st["lab"])
        if self.unl is not None and st.get("unl") is not None:
            self.unl.load_state_dict(st["unl"])
