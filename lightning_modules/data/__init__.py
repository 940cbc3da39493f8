"""Builds a dataset's deterministic train/val/test splits from its `data:` section and a seed.

Which builder runs is the dataset's registry entry (`lightning_modules.datasets`); builders are
imported when first used, so importing one light module of this package (the pixel order, file
listing) does not load torch's data stack or Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_modules.datasets import DataConfig, dataset_of

if TYPE_CHECKING:
    from lightning_modules.data.base import SequenceData


def build_data(cfg: DataConfig, seed: int) -> SequenceData:
    """The splits; what the data is (its digest) is `lightning_modules.data.identity`'s."""
    return dataset_of(cfg).build(cfg, seed)


def build_datamodule(cfg: DataConfig, data: SequenceData, batch_size: int, seed: int):
    return dataset_of(cfg).datamodule_class()(data, batch_size=batch_size, seed=seed)
