"""Datasets by name: each builds deterministic train/val/test splits from its config and a seed.

Builders are imported when first used, so importing one light module of this package (the
pixel order, file listing) does not load torch's data stack or Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from lightning_modules.config import DataConfig

if TYPE_CHECKING:
    from lightning_modules.data.base import SequenceData

BUILDERS = {  # data.name -> (module under lightning_modules.data, function)
    "mnist_rows": ("mnist", "build"),
    "mnist1d": ("mnist1d", "build"),
    "digits": ("digits", "build"),
    "adding": ("synthetic", "build_adding"),
    "copy": ("synthetic", "build_copy"),
    "text": ("text", "build"),
    "sequences": ("sequences", "build"),
}


def build_data(cfg: DataConfig, seed: int) -> SequenceData:
    module, function = BUILDERS[cfg.name]
    return getattr(import_module(f"lightning_modules.data.{module}"), function)(cfg, seed)


def build_datamodule(cfg: DataConfig, data: SequenceData, batch_size: int, seed: int):
    from lightning_modules.data.base import SequenceDataModule
    from lightning_modules.data.text import TextDataModule

    cls = TextDataModule if cfg.name == "text" else SequenceDataModule
    return cls(data, batch_size=batch_size, seed=seed)
