"""Shared settings of the smpl_core battery."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Tiny models on a shared 2-core machine: intra-op threads cost ~30x (0.4 s per SMPL
    step of a 2x64 MLP measured under load, 9 ms with one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
