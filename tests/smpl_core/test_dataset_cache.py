"""`load_splits` reads a dataset once per process (a reused trial process loads nothing
again), keyed by what the loader reads, and splits the cached arrays afresh per config."""

from __future__ import annotations

import torch

from smpl_core import data
from smpl_core.config import SMPLConfig

CPU = torch.device("cpu")


def _counting(monkeypatch) -> list[str]:
    """An empty cache and a loader that counts its calls (by dataset)."""
    calls: list[str] = []
    real = data.load_raw

    def load_raw(cfg):
        calls.append(cfg.dataset)
        return real(cfg)

    monkeypatch.setattr(data, "_RAW_CACHE", {})
    monkeypatch.setattr(data, "load_raw", load_raw)
    return calls


def test_one_load_per_dataset_and_the_same_splits_again(monkeypatch):
    calls = _counting(monkeypatch)
    cfg = SMPLConfig(dataset="moons", num_labeled=6, val_size=50, device="cpu")
    first, again = data.load_splits(cfg, CPU), data.load_splits(cfg, CPU)
    other = data.load_splits(cfg.replace(seed=1, num_labeled=10, lr=0.01), CPU)
    assert calls == ["moons"]  # another seed, size or knob: the same arrays, split again
    for name in ("x_lab", "y_lab", "x_unl", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert other.x_lab.shape == (10, 2) and not torch.equal(other.x_val, first.x_val)
    data.load_splits(cfg.replace(dataset="digits", num_labeled=10), CPU)
    assert calls == ["moons", "digits"]


def test_the_key_is_what_the_loader_reads(monkeypatch):
    calls = _counting(monkeypatch)
    cfg = SMPLConfig(dataset="moons", num_labeled=6, val_size=50, device="cpu")
    data.load_splits(cfg, CPU)
    data.load_splits(cfg.replace(data_dir="elsewhere"), CPU)  # a folder dataset's path
    data.load_splits(cfg.replace(image_size=16), CPU)  # folder/parquet images' size
    data.load_splits(cfg.replace(image_column="img", label_column="y"), CPU)
    assert calls == ["moons"] * 4
