"""Raw datasets: each loader returns train and test arrays, uint8 images (N, C, H, W) or
float32 vectors (N, D), and int64 labels. Splitting and moving to the device live in
`smpl_core.data`. Bad paths and columns are ValueErrors naming the field and the value.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smpl_core.errors import ConfigError
from smpl_core.uri import is_uri

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_DIR = "cifar-10-batches-py"


@dataclass
class RawData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    hflip: bool  # whether a horizontal flip keeps the label (not for digits)


def _holdout(x, y, frac: float = 0.2, seed: int = 1234):
    """Fixed stratified test split for data that ships without one (independent of `seed`)."""
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=frac, random_state=seed, stratify=y)
    return xtr, ytr, xte, yte


def make_moons(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's `make_moons(n_samples, noise=noise, random_state=seed)`, the same
    arrays to the bit (tests/smpl_core/test_data.py compares them), with numpy alone:
    importing scikit-learn costs a trial process about 1 s of CPU (it brings SciPy), which
    16 trial processes starting at once on 2 cores wait for together (issue 26)."""
    n_out = n_samples // 2
    n_in = n_samples - n_out
    rng = np.random.RandomState(seed)
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.vstack([np.append(np.cos(t_out), 1 - np.cos(t_in)),
                   np.append(np.sin(t_out), 1 - np.sin(t_in) - 0.5)]).T
    y = np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n_in, dtype=np.intp)])
    order = np.arange(n_samples)  # scikit-learn's shuffle: a permutation of the rows
    rng.shuffle(order)
    x, y = x[order], y[order]
    x += rng.normal(scale=noise, size=x.shape)
    return x, y


def moons() -> RawData:
    x, y = make_moons(n_samples=2000, noise=0.1, seed=0)
    xt, yt = make_moons(n_samples=1000, noise=0.1, seed=1)
    mean, std = x.mean(0), x.std(0)  # standardise with the training statistics
    f = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return RawData(f(x), y.astype(np.int64), f(xt), yt.astype(np.int64), 2, False)


def digits() -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 images with values 0..16, scaled to the uint8 range that every image loader uses.
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    xtr, ytr, xte, yte = _holdout(x, d.target.astype(np.int64), frac=0.3)
    return RawData(xtr, ytr, xte, yte, 10, False)


def _read_cifar_batches(root: Path, names: list[str]):
    xs, ys = [], []
    for name in names:
        with open(root / name, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def cifar10(data_dir: str, download: bool = True) -> RawData:
    """CIFAR-10 from the python pickles, fetched into `data_dir` once under a file lock
    (several trials of one node may start together)."""
    from filelock import FileLock

    root = Path(data_dir).expanduser()
    folder = root / CIFAR10_DIR
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    if not (folder / "test_batch").is_file():
        if not download:
            raise ConfigError(f"`data_dir` must hold {CIFAR10_DIR}/, but got "
                              f"data_dir={data_dir!r}.")
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".cifar10.lock")):
            if not (folder / "test_batch").is_file():
                _download_cifar10(root, data_dir)
    x, y = _read_cifar_batches(folder, train_names)
    xt, yt = _read_cifar_batches(folder, ["test_batch"])
    return RawData(x, y, xt, yt, 10, True)


def _download_cifar10(root: Path, data_dir: str) -> None:
    from torchvision.datasets.utils import download_url

    try:
        download_url(CIFAR10_URL, str(root), filename="cifar-10-python.tar.gz",
                     md5="c58f30108f718f92721af3b95e74349a")
    except Exception as e:  # no network, proxy, disk full: say how to get the data
        raise ConfigError(
            f"`data_dir` must hold {CIFAR10_DIR}/ or CIFAR-10 must be downloadable, but the "
            f"download into data_dir={data_dir!r} failed ({type(e).__name__}: {e}); fetch "
            f"{CIFAR10_URL} by hand and unpack it there.") from None
    with tarfile.open(root / "cifar-10-python.tar.gz") as tar:
        tar.extractall(root, filter="data")


def _decode(blobs, size: int) -> np.ndarray:
    from PIL import Image

    out: np.ndarray = np.empty((len(blobs), 3, size, size), dtype=np.uint8)
    for i, blob in enumerate(blobs):
        raw = Image.open(io.BytesIO(blob)) if isinstance(blob, bytes) else Image.open(blob)
        img = raw.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img).transpose(2, 0, 1)
    return out


def folder(data_dir: str, image_size: int) -> RawData:
    """torchvision ImageFolder layout: `data_dir/train/<class>/*` (+ `test/`), or
    `data_dir/<class>/*` with a fixed 20% test hold-out."""
    from torchvision.datasets import ImageFolder

    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(f"`data_dir` must be an existing folder for dataset=folder, "
                         f"but got data_dir={data_dir!r}.")
    train_root = root / "train" if (root / "train").is_dir() else root
    try:
        train = ImageFolder(str(train_root))
    except (FileNotFoundError, RuntimeError) as e:
        raise ConfigError(f"`data_dir` must hold one folder of images per class, but got "
                         f"data_dir={data_dir!r} ({e}).") from None
    x = _decode([p for p, _ in train.samples], image_size)
    y = np.asarray(train.targets, dtype=np.int64)
    if (root / "test").is_dir() and train_root != root:
        test = ImageFolder(str(root / "test"))
        xt = _decode([p for p, _ in test.samples], image_size)
        yt = np.asarray(test.targets, dtype=np.int64)
    else:
        x, y, xt, yt = _holdout(x, y)
    return RawData(x, y, xt, yt, len(train.classes), True)


def parquet(data_dir: str, image_column: str, label_column: str, image_size: int) -> RawData:
    """Parquet with an encoded-image column (bytes, or Hugging Face's {bytes, path} struct)
    and an integer label column. `data_dir` is a file, or a folder whose files with `test`
    in the name form the test split; local paths and pyarrow.fs URIs (s3://, gs://, file://)."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(data_dir) if is_uri(data_dir) else (
            pafs.LocalFileSystem(), str(Path(data_dir).expanduser().resolve()))
        info = fs.get_file_info(path)
    except Exception as e:
        raise ConfigError(f"`data_dir` must be a path or URI pyarrow can open, but got "
                         f"data_dir={data_dir!r} ({e}).") from None
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"`data_dir` must be an existing parquet file or folder, but got "
                         f"data_dir={data_dir!r}.")
    if info.type == pafs.FileType.Directory:
        files = [f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                 if f.path.endswith(".parquet")]
    else:
        files = [path]
    test_files = [f for f in files if "test" in Path(f).name]
    train_files = [f for f in files if f not in test_files]
    if not train_files:
        raise ConfigError(f"`data_dir` must hold training .parquet files, "
                         f"but got data_dir={data_dir!r}.")

    def read(paths):
        table = ds.dataset(paths, filesystem=fs, format="parquet").to_table()
        for field, col in (("image_column", image_column), ("label_column", label_column)):
            if col not in table.column_names:
                raise ConfigError(f"`{field}` must name a column of the parquet data "
                                 f"({', '.join(table.column_names)}), but got {field}={col!r}.")
        images = table.column(image_column).to_pylist()
        images = [b["bytes"] if isinstance(b, dict) else b for b in images]
        return _decode(images, image_size), np.asarray(table.column(label_column).to_pylist(),
                                                       dtype=np.int64)

    x, y = read(train_files)
    if test_files:
        xt, yt = read(test_files)
    else:
        x, y, xt, yt = _holdout(x, y)
    return RawData(x, y, xt, yt, int(max(y.max(), yt.max())) + 1, True)


def load_raw(cfg) -> RawData:
    if cfg.dataset == "moons":
        return moons()
    if cfg.dataset == "digits":
        return digits()
    if cfg.dataset == "cifar10":
        return cifar10(cfg.data_dir)
    if cfg.dataset == "folder":
        return folder(cfg.data_dir, cfg.image_size)
    return parquet(cfg.data_dir, cfg.image_column, cfg.label_column, cfg.image_size)
