"""MNIST-1D (Greydanus 2020): 40 steps of 1 feature, 10 classes, generated offline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightning_modules.datasets.entry import Dataset
from lightning_modules.sections import Section


class Mnist1dData(Section):
    """MNIST-1D (Greydanus 2020), generated offline: 40 steps x 1 feature, 10 classes."""

    name: Literal["mnist1d"] = "mnist1d"
    shuffle_seq: bool = False
    """The paper's variant with the time axis permuted (destroys temporal structure)."""
    num_samples: int = Field(5000, ge=100)
    """Generated examples; 80% train (the paper's 4,000/1,000 split at the default)."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    limit: int | None = Field(None, gt=0)


DATASET = Dataset(
    config=Mnist1dData,
    task="classification",
    builder="lightning_modules.data.mnist1d:build",
    inputs=lambda cfg: 1,
    outputs=lambda cfg: 10,
    generated=lambda cfg: ("data.num_samples", cfg.num_samples),
)
