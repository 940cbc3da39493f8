"""In-memory sequence datasets and a batch loader that slices tensors (no per-item collation).

All our datasets fit in memory, so a DataLoader's per-example indexing and collation would be
pure overhead; `TensorBatches` yields one index operation per batch instead. Lightning only adds
a DistributedSampler to DataLoaders, so under DDP the loaders shard by rank themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch


@dataclass
class Split:
    """One split: inputs (N, T, F) float or (N, T) tokens, valid lengths (N,), targets."""

    x: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> Split:
        """The first `n` examples (a streamed split reads only as far as it needs)."""
        lengths = self.lengths[:n] if self.lengths is not None else None
        return Split(self.x[:n], self.y[:n], lengths)


@dataclass
class SequenceData:
    """Train/val/test splits plus what a model needs to know about them."""

    train: Split
    val: Split
    test: Split
    input_size: int
    out_features: int
    seq_len: int
    extras: dict = field(default_factory=dict)
    """Dataset-specific artefacts saved with the model (e.g. the text vocabulary)."""
    digest: str | None = None
    """The source's own digest (user data: files + options), used as the fingerprint."""

    def fingerprint(self) -> str:
        """Content hash of all splits: identifies the exact data a model was trained and tested on."""
        if self.digest is not None:
            return self.digest
        h = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            for t in (split.x, split.y):
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


class TensorBatches:
    """Iterates (x, lengths, y) mini-batches of a `Split`; reshuffled every epoch when asked.

    With `world > 1` it yields only rank `rank`'s shard of each epoch's order (every rank draws
    the same permutation from the shared seed, so the shards are disjoint). `equal_shards` pads
    the order by repeating its first examples, as DistributedSampler does, so that every rank
    takes the same number of steps (DDP's gradient all-reduce needs that); without it each
    example is seen exactly once, for exact evaluation.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        equal_shards: bool = False,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        # A split smaller than the world is not sharded: an empty rank would miss the epoch-end
        # all-reduce. Ratio metrics are unchanged when every rank sees everything.
        self.rank, self.world = (rank, world) if world <= len(split) else (0, 1)
        self.equal_shards = equal_shards

    def _shard_size(self) -> int:
        n = len(self.split)
        if self.equal_shards:
            return -(-n // self.world)
        return len(range(self.rank, n, self.world))

    def __len__(self) -> int:
        return -(-self._shard_size() // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if self.world > 1:
            if self.equal_shards:
                order = order.repeat(-(-self._shard_size() * self.world // n))
                order = order[: self._shard_size() * self.world]
            order = order[self.rank :: self.world]
        s = self.split
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = s.x[idx]
            lengths = s.lengths[idx] if s.lengths is not None else None
            if lengths is not None and x.dim() == 3:
                x = x[:, : int(lengths.max())]  # padding past the batch's longest is dead weight
            yield x, lengths, s.y[idx]


def data_parallel_rank(dm: pl.LightningDataModule) -> tuple[int, int]:
    """(rank, world size) of the Trainer the datamodule serves; (0, 1) outside one."""
    trainer = dm.trainer
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class SequenceDataModule(pl.LightningDataModule):
    """Wraps prepared `SequenceData` for Lightning."""

    def __init__(self, data: SequenceData, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self):
        rank, world = data_parallel_rank(self)
        if not isinstance(self.data.train, Split):  # streamed from Parquet
            from lightning_modules.data.parquet_stream import ParquetBatches, loader

            # Under DDP every rank takes the same number of steps (the gradient all-reduce).
            steps = max(1, len(self.data.train) // world // self.batch_size) if world > 1 else None
            batches = ParquetBatches(
                self.data.train, self.batch_size, True, self.seed, rank, world, steps
            )
            return loader(batches)
        return TensorBatches(
            self.data.train, self.batch_size, True, self.seed, rank, world, equal_shards=True
        )

    def val_dataloader(self):
        return self._eval_batches(self.data.val)

    def test_dataloader(self):
        return self._eval_batches(self.data.test)

    def _eval_batches(self, split: Split):
        rank, world = data_parallel_rank(self)
        if not isinstance(split, Split):  # streamed from Parquet: every rank's own row groups
            from lightning_modules.data.parquet_stream import ParquetBatches, loader

            return loader(ParquetBatches(split, max(self.batch_size, 256), False, 0, rank, world))
        return TensorBatches(split, max(self.batch_size, 256), False, rank=rank, world=world)


def split_train_val(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int, limit: int | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Carve a seeded validation set out of the training examples (the test set never moves)."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    if limit is not None:
        train = train[:limit]
    return (x[train], y[train]), (x[val], y[val])


def to_split(x: np.ndarray, y: np.ndarray, classification: bool = True) -> Split:
    return Split(
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.long if classification else torch.float32),
    )
