"""The adding problem (Hochreiter & Schmidhuber 1997): regression on two marked values."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightning_modules.datasets.entry import Dataset, GeneratedSplits, generated_examples


class AddingData(GeneratedSplits):
    """The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked values of T."""

    name: Literal["adding"] = "adding"
    seq_len: int = Field(50, ge=2)


DATASET = Dataset(
    config=AddingData,
    task="regression",
    builder="lightning_modules.data.synthetic:build_adding",
    inputs=lambda cfg: 2,  # the value and its marker
    outputs=lambda cfg: 1,
    generated=generated_examples,
    steps=lambda cfg: ("data.seq_len", cfg.seq_len),
)
