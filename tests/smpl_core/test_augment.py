"""Batched augmentations and the sampler's weak/strong pairing."""

from __future__ import annotations

import pytest
import torch

from smpl_core import augment
from smpl_core.data import Sampler, Splits

AUGS = {"weak": augment.weak, "strong": augment.strong}


def _images(n=16, c=3, h=8, w=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g).to(dtype)


@pytest.mark.parametrize("name", AUGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(16, 3, 8, 8), (5, 1, 32, 32)])
def test_keeps_shape_dtype_device_and_range(name, dtype, shape):
    torch.manual_seed(0)
    x = _images(*shape, dtype=dtype)
    # Extremes too: all-black and all-white images must stay in range.
    x[0], x[1] = 0.0, 1.0
    y = AUGS[name](x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x)  # it does something


@pytest.mark.parametrize("name", AUGS)
def test_parameters_are_drawn_per_image(name):
    torch.manual_seed(0)
    one = _images(1, 3, 16, 16)
    y = AUGS[name](one.expand(32, -1, -1, -1).contiguous())
    distinct = {tuple(row.flatten().tolist()) for row in y}
    assert len(distinct) >= 4, f"{name}: identical inputs gave {len(distinct)} distinct outputs"


@pytest.mark.parametrize("axis", [-1, -2])
def test_weak_translation_is_drawn_per_image_on_each_axis(axis):
    # A ramp along one axis only: only the shift along that axis changes the image.
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 16)
    img = ramp.view(1, 1, 1, 16) if axis == -1 else ramp.view(1, 1, 16, 1)
    x = img.expand(32, 1, 16, 16).contiguous()
    y = augment.weak(x, hflip=False)
    assert len({tuple(row.flatten().tolist()) for row in y}) >= 3


def test_strong_photometric_op_is_chosen_per_image():
    # On a constant grey image, identity, contrast and solarize all return 0.5, the other
    # three ops do not: about half the images stay grey if the op is drawn per image, and
    # none or all of them if it is drawn once for the batch.
    torch.manual_seed(0)
    y = augment._photometric(torch.full((600, 1, 4, 4), 0.5))
    grey = ((y - 0.5).abs() < 1e-6).flatten(1).all(1).float().mean()
    assert 0.35 < float(grey) < 0.65


@pytest.mark.parametrize("name", AUGS)
def test_reproducible_under_manual_seed(name):
    x = _images()
    torch.manual_seed(123)
    a = AUGS[name](x)
    torch.manual_seed(123)
    b = AUGS[name](x)
    torch.manual_seed(124)
    c = AUGS[name](x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_weak_flips_only_when_allowed():
    # A left-to-right ramp stays non-decreasing under whole-pixel shifts with reflection
    # padding; a horizontal flip makes it decreasing.
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(64, 1, 8, 8).contiguous()

    def increasing(y):
        return (y[..., 1:] >= y[..., :-1]).flatten(1).all(1)

    assert increasing(augment.weak(ramp, hflip=False)).all()
    flipped = ~increasing(augment.weak(ramp, hflip=True))
    assert 10 < int(flipped.sum()) < 54  # about half of 64


def test_weak_shifts_by_whole_pixels():
    torch.manual_seed(0)
    x = _images(64, 1, 8, 8)
    y = augment.weak(x, hflip=False)
    # Nearest sampling at pixel centres: every output value is one of the input's values.
    for xi, yi in zip(x, y):
        assert torch.isin(yi, xi).all()


def test_vector_data_gets_gaussian_jitter():
    torch.manual_seed(0)
    x = torch.zeros(20000, 2)
    assert float(augment.weak(x).std()) == pytest.approx(augment.WEAK_NOISE, rel=0.05)
    assert float(augment.strong(x).std()) == pytest.approx(augment.STRONG_NOISE, rel=0.05)


# --- the sampler's pairing ------------------------------------------------------------------

def _index_splits(n_unl=200, n_lab=10, c=3, hw=8, classes=5):
    """uint8 images whose every pixel is their own index (constant image of value i)."""
    idx = torch.arange(n_unl, dtype=torch.uint8)
    x_unl = idx.view(-1, 1, 1, 1).expand(n_unl, c, hw, hw).contiguous()
    y_unl = torch.arange(n_unl) % classes
    lab = torch.arange(n_lab, dtype=torch.uint8)
    x_lab = lab.view(-1, 1, 1, 1).expand(n_lab, c, hw, hw).contiguous()
    y_lab = torch.arange(n_lab) % classes
    return Splits(x_lab, y_lab, x_unl, y_unl, x_lab[:2], y_lab[:2], x_lab[:2], y_lab[:2],
                  num_classes=classes, hflip=True, mean=torch.zeros(1, c, 1, 1),
                  std=torch.ones(1, c, 1, 1))


def _recover(x):
    """Index of each (normalised with mean 0, std 1) constant image; checks it is constant."""
    v = (x * 255.0).round()
    flat = v.flatten(1)
    assert (flat == flat[:, :1]).all(), "image is not constant"
    return flat[:, 0].long()


@pytest.mark.parametrize("real_weak", [False, True])
def test_sampler_pairs_weak_and_strong_views_of_the_same_image(real_weak):
    torch.manual_seed(0)
    s = _index_splits()
    ident = lambda x: x  # noqa: E731
    sampler = Sampler(s, batch_size=4, mu=7, weak=None if real_weak else ident, strong=ident)
    seen = []
    for _ in range(20):  # 20 * 28 = 560 > 200: spans several passes over the data
        b = sampler.next()
        i_w, i_s = _recover(b.x_uw), _recover(b.x_us)
        assert torch.equal(i_w, i_s)
        assert torch.equal(i_w, b.idx_u)
        assert torch.equal(b.y_u, s.y_unl[b.idx_u])
        assert torch.equal(b.y_l, s.y_lab[_recover(b.x_l)])
        assert len(b.y_l) == 4 and len(b.y_u) == 28
        seen.append(b.idx_u)
    served = torch.cat(seen)
    # Each pass is a permutation: the first 200 served indices cover the set exactly once.
    assert torch.equal(served[:200].sort().values, torch.arange(200))
    assert not torch.equal(served[:200], torch.arange(200))  # shuffled


def test_sampler_applies_normalisation_after_augmentation():
    torch.manual_seed(0)
    s = _index_splits()
    s.mean, s.std = torch.full((1, 3, 1, 1), 0.25), torch.full((1, 3, 1, 1), 0.5)
    ident = lambda x: x  # noqa: E731
    b = Sampler(s, 4, 2, weak=ident, strong=ident).next()
    expected = (b.idx_u.double() / 255.0 - 0.25) / 0.5
    torch.testing.assert_close(b.x_uw[:, 0, 0, 0].double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(b.x_us, b.x_uw)


def test_supervised_sampler_yields_no_unlabelled_data():
    torch.manual_seed(0)
    b = Sampler(_index_splits(), 4, 7, unlabeled=False).next()
    assert len(b.y_l) == 4 and b.x_uw.shape[0] == 0 and b.x_us.shape[0] == 0


def test_sampler_state_resumes_the_stream():
    s = _index_splits()
    ident = lambda x: x  # noqa: E731
    torch.manual_seed(0)
    a = Sampler(s, 4, 7, weak=ident, strong=ident)
    for _ in range(3):
        a.next()
    st = a.state_dict()
    rng = torch.get_rng_state()
    expected = [a.next().idx_u for _ in range(10)]
    b = Sampler(s, 4, 7, weak=ident, strong=ident)
    b.load_state_dict(st)
    torch.set_rng_state(rng)
    got = [b.next().idx_u for _ in range(10)]
    assert all(torch.equal(x, y) for x, y in zip(expected, got))
