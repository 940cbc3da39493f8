"""scikit-learn's 8x8 digits: 8 steps of 8 features, 10 classes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightning_modules.datasets.entry import Dataset
from lightning_modules.sections import Section


class DigitsData(Section):
    """scikit-learn's 8x8 digits as 8 steps of 8 features (0-1)."""

    name: Literal["digits"] = "digits"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    limit: int | None = Field(None, gt=0)


DATASET = Dataset(
    config=DigitsData,
    task="classification",
    builder="lightning_modules.data.digits:build",
    inputs=lambda cfg: 8,
    outputs=lambda cfg: 10,
)
