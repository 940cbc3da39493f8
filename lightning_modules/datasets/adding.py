"""The adding problem (Hochreiter & Schmidhuber 1997): regression on two marked values."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightning_modules.datasets.entry import Dataset
from lightning_modules.sections import Section


class AddingData(Section):
    """The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked values of T."""

    name: Literal["adding"] = "adding"
    seq_len: int = Field(50, ge=2)
    n_train: int = Field(10000, gt=0)
    n_val: int = Field(1000, gt=0)
    n_test: int = Field(1000, gt=0)


DATASET = Dataset(
    config=AddingData,
    task="regression",
    builder="lightning_modules.data.synthetic:build_adding",
    inputs=lambda cfg: 2,  # the value and its marker
    outputs=lambda cfg: 1,
    generated=lambda cfg: ("data.n_train", cfg.n_train + cfg.n_val + cfg.n_test),
    steps=lambda cfg: ("data.seq_len", cfg.seq_len),
)
