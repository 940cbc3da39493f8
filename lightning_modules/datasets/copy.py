"""Copy memory: reproduce `copy_len` symbols after `delay` blanks; a class at every step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightning_modules.datasets.entry import Dataset, GeneratedSplits, generated_examples


class CopyData(GeneratedSplits):
    """Copy memory task: read `copy_len` symbols, wait `delay` blanks, then reproduce them."""

    name: Literal["copy"] = "copy"
    n_symbols: int = Field(8, ge=2)
    copy_len: int = Field(10, ge=1)
    delay: int = Field(50, ge=1)


DATASET = Dataset(
    config=CopyData,
    task="classification",
    builder="lightning_modules.data.synthetic:build_copy",
    inputs=lambda cfg: cfg.n_symbols + 2,  # one-hot symbols, the blank and the go marker
    outputs=lambda cfg: cfg.n_symbols,
    per_step=True,
    generated=generated_examples,
    steps=lambda cfg: ("data.delay", 2 * cfg.copy_len + cfg.delay + 1),
)
