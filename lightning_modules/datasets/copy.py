"""Copy memory: reproduce `copy_len` symbols after `delay` blanks; a class at every step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightning_modules.datasets.entry import Dataset
from lightning_modules.sections import Section


class CopyData(Section):
    """Copy memory task: read `copy_len` symbols, wait `delay` blanks, then reproduce them."""

    name: Literal["copy"] = "copy"
    n_symbols: int = Field(8, ge=2)
    copy_len: int = Field(10, ge=1)
    delay: int = Field(50, ge=1)
    n_train: int = Field(10000, gt=0)
    n_val: int = Field(1000, gt=0)
    n_test: int = Field(1000, gt=0)


DATASET = Dataset(
    config=CopyData,
    task="classification",
    builder="lightning_modules.data.synthetic:build_copy",
    inputs=lambda cfg: cfg.n_symbols + 2,  # one-hot symbols, the blank and the go marker
    outputs=lambda cfg: cfg.n_symbols,
    per_step=True,
    generated=lambda cfg: ("data.n_train", cfg.n_train + cfg.n_val + cfg.n_test),
    steps=lambda cfg: ("data.delay", 2 * cfg.copy_len + cfg.delay + 1),
)
