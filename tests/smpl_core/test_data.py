"""Splits and the raw loaders (CIFAR-10 pickles, ImageFolder, parquet) on fake data written
by the tests."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from smpl_core import datasets
from smpl_core.config import SMPLConfig
from smpl_core.data import load_splits, split_indices

# --- split_indices ----------------------------------------------------------------------------


def _labels(counts):
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(len(counts)), counts))


@pytest.mark.parametrize("num_labeled, val_size", [(10, 7), (3, 3), (11, 8), (30, 31), (4, 1)])
def test_split_spreads_evenly_and_partitions(num_labeled, val_size):
    y = _labels([40, 50, 60])
    lab, val, unl = split_indices(y, 3, num_labeled, val_size, seed=5)
    assert len(lab) == num_labeled and len(val) == val_size
    assert len(lab) + len(val) + len(unl) == len(y)
    assert sorted(np.concatenate([lab, val, unl]).tolist()) == list(range(len(y)))
    for idx, total in ((lab, num_labeled), (val, val_size)):
        counts = np.bincount(y[idx], minlength=3)
        assert counts.max() - counts.min() <= 1
        assert sorted(counts.tolist(), reverse=True) == counts.tolist()  # first take the rest
        assert counts.sum() == total


def test_split_is_deterministic_per_seed():
    y = _labels([100, 100])
    a = split_indices(y, 2, 10, 20, seed=1)
    b = split_indices(y, 2, 10, 20, seed=1)
    c = split_indices(y, 2, 10, 20, seed=2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(np.sort(a[0]), np.sort(c[0]))


@pytest.mark.parametrize("counts, num_labeled, val_size, field, value", [
    ([50, 50, 50], 2, 10, "num_labeled", 2),  # fewer than the classes
    ([50, 50, 50], 151, 1, "num_labeled", 151),  # more than exist
    ([50, 50, 50], 150, 5, "num_labeled", 150),  # exactly all: nothing left unlabelled
    ([50, 50, 50], 30, 120, "val_size", 120),  # validation eats the rest
    ([3, 97], 10, 2, "num_labeled", 10),  # class 0 cannot give 5 labels
])
def test_split_errors_name_field_and_value(counts, num_labeled, val_size, field, value):
    with pytest.raises(ValueError) as info:
        split_indices(_labels(counts), len(counts), num_labeled, val_size, seed=0)
    msg = str(info.value)
    assert msg.startswith(f"`{field}` must")
    assert f"{field}={value}" in msg


def test_load_splits_moons():
    cfg = SMPLConfig(dataset="moons", num_labeled=6, val_size=50, device="cpu")
    s = load_splits(cfg, torch.device("cpu"))
    raw = datasets.moons()
    assert s.x_lab.shape == (6, 2) and s.x_val.shape == (50, 2)
    assert len(s.y_unl) == len(raw.y_train) - 56 and len(s.y_test) == len(raw.y_test)
    assert torch.bincount(s.y_lab).tolist() == [3, 3]
    assert s.num_classes == 2 and not s.is_image
    # Every labelled example is a training example with its own label.
    for x, y in zip(s.x_lab.numpy(), s.y_lab.numpy()):
        i = np.flatnonzero((raw.x_train == x).all(1))
        assert len(i) == 1 and raw.y_train[i[0]] == y


@pytest.mark.parametrize("n, noise, seed", [(2000, 0.1, 0), (1000, 0.1, 1), (7, 0.3, 5),
                                            (1, 0.0, 2)])
def test_make_moons_is_scikit_learns_to_the_bit(n, noise, seed):
    from sklearn.datasets import make_moons  # the reference; trials no longer import it

    x, y = datasets.make_moons(n, noise, seed)
    want_x, want_y = make_moons(n_samples=n, noise=noise, random_state=seed)
    assert x.dtype == want_x.dtype and y.dtype == want_y.dtype
    assert np.array_equal(x, want_x) and np.array_equal(y, want_y)


def test_moons_imports_no_scikit_learn():
    """A trial on moons starts without scikit-learn (about 1 s of CPU per process)."""
    code = ("import sys; from smpl_core import datasets; datasets.moons(); "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# --- CIFAR-10 -------------------------------------------------------------------------------------

def _write_cifar(root, n=4):
    folder = root / datasets.CIFAR10_DIR
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
        written[name] = (data, labels)
    return written


def test_cifar10_reads_the_python_pickles(tmp_path):
    written = _write_cifar(tmp_path)
    raw = datasets.cifar10(str(tmp_path), download=False)
    assert raw.x_train.shape == (20, 3, 32, 32) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (4, 3, 32, 32)
    assert raw.y_train.dtype == np.int64 and raw.num_classes == 10 and raw.hflip
    expect_y = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert raw.y_train.tolist() == expect_y
    assert raw.y_test.tolist() == written["test_batch"][1]
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major.
    row = written["data_batch_2"][0][1]
    assert np.array_equal(raw.x_train[5, 1, 3], row[1024 + 3 * 32:1024 + 4 * 32])
    assert raw.x_train[5, 2, 31, 31] == row[3071]


def test_cifar10_missing_without_download(tmp_path):
    with pytest.raises(ValueError) as info:
        datasets.cifar10(str(tmp_path / "nowhere"), download=False)
    msg = str(info.value)
    assert "`data_dir`" in msg and datasets.CIFAR10_DIR in msg and "nowhere" in msg


# --- ImageFolder ----------------------------------------------------------------------------------

COLOURS = {"cat": (200, 10, 30), "dog": (5, 120, 250), "emu": (90, 90, 90)}


def _png(colour, size=(5, 7)):
    return Image.new("RGB", size, colour)


def test_folder_dataset_train_and_test(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls, colour in COLOURS.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                _png(colour).save(tmp_path / split / cls / f"{i}.png")
    raw = datasets.folder(str(tmp_path), image_size=8)
    assert raw.x_train.shape == (9, 3, 8, 8) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (6, 3, 8, 8)
    assert raw.num_classes == 3
    assert raw.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # classes in sorted order
    assert raw.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    for x, y in zip(raw.x_train, raw.y_train):
        colour = COLOURS[sorted(COLOURS)[y]]
        assert (x == np.array(colour, dtype=np.uint8).reshape(3, 1, 1)).all()


def test_folder_dataset_without_split_holds_out_test(tmp_path):
    for cls, colour in COLOURS.items():
        (tmp_path / cls).mkdir()
        for i in range(5):
            _png(colour).save(tmp_path / cls / f"{i}.png")
    raw = datasets.folder(str(tmp_path), image_size=8)
    assert len(raw.y_train) + len(raw.y_test) == 15 and len(raw.y_test) == 3
    assert sorted(raw.y_test.tolist()) == [0, 1, 2]  # stratified


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="`data_dir`.*nowhere"):
        datasets.folder(str(tmp_path / "nowhere"), 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="`data_dir`"):
        datasets.folder(str(tmp_path / "empty"), 8)


def test_load_splits_from_folder(tmp_path):
    for cls, colour in COLOURS.items():
        (tmp_path / "train" / cls).mkdir(parents=True)
        (tmp_path / "test" / cls).mkdir(parents=True)
        for i in range(6):
            _png(colour).save(tmp_path / "train" / cls / f"{i}.png")
        _png(colour).save(tmp_path / "test" / cls / "0.png")
    cfg = SMPLConfig(dataset="folder", data_dir=str(tmp_path), image_size=8, num_labeled=3,
                     val_size=3, device="cpu")
    s = load_splits(cfg, torch.device("cpu"))
    assert s.x_lab.shape == (3, 3, 8, 8) and s.x_lab.dtype == torch.uint8
    assert s.x_unl.shape == (12, 3, 8, 8) and s.x_test.shape == (3, 3, 8, 8)
    assert s.is_image and s.input_shape == (3, 8, 8)
    x = s.inputs(s.x_unl)  # normalised with the training statistics: mean 0 per channel
    assert x.dtype == torch.float32


# --- parquet --------------------------------------------------------------------------------------

def _png_bytes(colour):
    buf = io.BytesIO()
    _png(colour).save(buf, format="PNG")
    return buf.getvalue()


def _table(labels, hf_struct=False, image_column="image", label_column="label"):
    names = sorted(COLOURS)
    blobs = [_png_bytes(COLOURS[names[y]]) for y in labels]
    if hf_struct:
        images = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(blobs)],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        images = pa.array(blobs, type=pa.binary())
    return pa.table({image_column: images, label_column: pa.array(labels, type=pa.int64())})


@pytest.mark.parametrize("hf_struct", [False, True])
def test_parquet_folder_with_test_file(tmp_path, hf_struct):
    train_y, test_y = [0, 1, 2, 2, 1, 0, 1], [2, 0, 1]
    pq.write_table(_table(train_y, hf_struct), tmp_path / "train-00000.parquet")
    pq.write_table(_table(test_y, hf_struct), tmp_path / "test-00000.parquet")
    raw = datasets.parquet(str(tmp_path), "image", "label", 8)
    assert raw.x_train.shape == (7, 3, 8, 8) and raw.x_test.shape == (3, 3, 8, 8)
    assert raw.y_train.tolist() == train_y and raw.y_test.tolist() == test_y
    assert raw.num_classes == 3
    for x, y in zip(raw.x_test, raw.y_test):
        colour = COLOURS[sorted(COLOURS)[y]]
        assert (x == np.array(colour, dtype=np.uint8).reshape(3, 1, 1)).all()


def test_parquet_single_file_custom_columns(tmp_path):
    labels = [0, 1, 2] * 5
    path = tmp_path / "data.parquet"
    pq.write_table(_table(labels, image_column="img", label_column="y"), path)
    raw = datasets.parquet(str(path), "img", "y", 8)
    assert len(raw.y_train) + len(raw.y_test) == 15 and len(raw.y_test) == 3
    assert raw.x_train.shape[1:] == (3, 8, 8)


@pytest.mark.parametrize("field, image_column, label_column", [
    ("image_column", "pixels", "label"),
    ("label_column", "image", "target"),
])
def test_parquet_missing_column(tmp_path, field, image_column, label_column):
    pq.write_table(_table([0, 1, 2] * 3), tmp_path / "train.parquet")
    with pytest.raises(ValueError) as info:
        datasets.parquet(str(tmp_path), image_column, label_column, 8)
    msg = str(info.value)
    value = image_column if field == "image_column" else label_column
    assert msg.startswith(f"`{field}`") and f"{field}={value!r}" in msg


def test_parquet_missing_path(tmp_path):
    with pytest.raises(ValueError) as info:
        datasets.parquet(str(tmp_path / "nope.parquet"), "image", "label", 8)
    msg = str(info.value)
    assert msg.startswith("`data_dir`") and "nope.parquet" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="`data_dir`"):
        datasets.parquet(str(tmp_path / "empty"), "image", "label", 8)
