"""Datasets by name: each builds deterministic train/val/test splits from its config and a seed."""

from __future__ import annotations

from lightning_modules.config import DataConfig
from lightning_modules.data import digits, mnist, mnist1d, sequences, synthetic, text
from lightning_modules.data.base import SequenceData, SequenceDataModule

BUILDERS = {
    "mnist_rows": mnist.build,
    "mnist1d": mnist1d.build,
    "digits": digits.build,
    "adding": synthetic.build_adding,
    "copy": synthetic.build_copy,
    "text": text.build,
    "sequences": sequences.build,
}


def build_data(cfg: DataConfig, seed: int) -> SequenceData:
    return BUILDERS[cfg.name](cfg, seed)


def build_datamodule(cfg: DataConfig, data: SequenceData, batch_size: int, seed: int):
    cls = text.TextDataModule if cfg.name == "text" else SequenceDataModule
    return cls(data, batch_size=batch_size, seed=seed)


__all__ = ["SequenceData", "build_data", "build_datamodule"]
