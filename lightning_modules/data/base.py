"""In-memory sequence datasets and a batch loader that slices tensors (no per-item collation).

All our datasets fit in memory, so a DataLoader's per-example indexing and collation would be
pure overhead; `TensorBatches` yields one index operation per batch instead. Lightning only adds
a DistributedSampler to DataLoaders, so under DDP the loaders shard by rank themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_modules.datasets.sequences import SequencesData
from lightning_modules.preprocessing import Preprocessing


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

    def take(self, idx: np.ndarray | torch.Tensor) -> Split:
        idx = torch.as_tensor(idx, dtype=torch.long)
        lengths = self.lengths[idx] if self.lengths is not None else None
        return Split(self.x[idx], self.y[idx], lengths)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        equal_shards: bool = False,
    ) -> TensorBatches:
        return TensorBatches(self, batch_size, shuffle, seed, rank, world, equal_shards)


class Rows(Protocol):
    """A split as the datamodule reads it: a `Split` in memory, or one streamed from Parquet
    (`parquet_stream.StreamSplit`)."""

    def __len__(self) -> int: ...

    def head(self, n: int) -> Split:
        """The first `n` examples as tensors."""
        ...

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        equal_shards: bool = False,
    ) -> Iterable:
        """(x, lengths, y) batches of rank `rank`'s shard; `equal_shards`: every rank takes
        the same number of steps (DDP's gradient all-reduce)."""
        ...


@dataclass
class SequenceData:
    """Train/val/test splits plus what a model needs to know about them."""

    train: Rows
    val: Rows
    test: Rows
    input_size: int
    out_features: int
    seq_len: int
    extras: dict = field(default_factory=dict)
    """Dataset-specific artefacts saved with the model (e.g. the text vocabulary)."""
    folds: np.ndarray | None = None
    """Cross-validation: the fold (0..k-1) of every training example; `val` is then `train`
    (each fold is scored by the model trained on the others)."""

    @property
    def ensemble(self) -> int:
        """Networks a model of this data holds: the k fold models, or one."""
        return int(self.folds.max()) + 1 if self.folds is not None else 1


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


class FoldBatches:
    """Cross-validation training batches: each step one (x, lengths, y) batch per fold model,
    from the examples outside its fold, so the k models train in lockstep (one step each).

    An epoch is as many steps as the largest fold's training set needs; a smaller one starts
    its next shuffled pass early. Each model sees its own examples in its own order.
    """

    def __init__(self, split: Split, folds: np.ndarray, batch_size: int, seed: int = 0) -> None:
        k = int(folds.max()) + 1
        self.members = [
            TensorBatches(split.take(np.flatnonzero(folds != i)), batch_size, True, seed + i)
            for i in range(k)
        ]

    def __len__(self) -> int:
        return max(len(m) for m in self.members)

    def __iter__(self) -> Iterator[tuple]:
        iters = [iter(m) for m in self.members]
        for _ in range(len(self)):
            batches = []
            for i, it in enumerate(iters):
                batch = next(it, None)
                if batch is None:  # this fold's pass ended first: start its next one
                    iters[i] = iter(self.members[i])
                    batch = next(iters[i])
                batches.append(batch)
            yield tuple(batches)


class FoldEval:
    """Cross-validation scoring batches: each fold's examples, tagged with the fold, so the
    model trained without that fold scores them: (x, lengths, y, fold)."""

    def __init__(self, split: Split, folds: np.ndarray, batch_size: int) -> None:
        k = int(folds.max()) + 1
        self.members = [
            TensorBatches(split.take(np.flatnonzero(folds == i)), batch_size, False)
            for i in range(k)
        ]

    def __len__(self) -> int:
        return sum(len(m) for m in self.members)

    def __iter__(self):
        for fold, member in enumerate(self.members):
            for x, lengths, y in member:
                yield x, lengths, y, fold


def data_parallel_rank(dm: pl.LightningDataModule) -> tuple[int, int]:
    """(rank, world size) of the Trainer the datamodule serves; (0, 1) outside one."""
    trainer = dm.trainer
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def train_size(data: SequenceData) -> int:
    """Examples the smallest-trained model trains on: the training split, less (under
    cross-validation) the largest fold."""
    n = len(data.train)
    if data.folds is None:
        return n
    return n - int(np.bincount(data.folds).max())


class SequenceDataModule(pl.LightningDataModule):
    """Wraps prepared `SequenceData` for Lightning."""

    def __init__(self, data: SequenceData, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.data = data
        # Never more than a model's training set: a batch larger than the data is one step an
        # epoch, whatever the batch size searched (one fold model's set under cross-validation).
        self.batch_size = max(1, min(batch_size, train_size(data)))
        self.seed = seed

    def train_dataloader(self):
        rank, world = data_parallel_rank(self)
        if self.data.folds is not None:
            if world > 1:
                raise ValueError(
                    "data.validation: cross-validation trains in one process; with "
                    "resources.workers > 1 set data.validation to {holdout: 0.1}"
                )
            return FoldBatches(self.data.train, self.data.folds, self.batch_size, self.seed)
        return self.data.train.batches(
            self.batch_size, shuffle=True, seed=self.seed, rank=rank, world=world, equal_shards=True
        )

    def val_dataloader(self):
        if self.data.folds is not None:
            return FoldEval(self.data.train, self.data.folds, max(self.batch_size, 256))
        return self._eval_batches(self.data.val)

    def test_dataloader(self):
        return self._eval_batches(self.data.test)

    def _eval_batches(self, split: Rows):
        rank, world = data_parallel_rank(self)  # every rank scores its own shard
        return split.batches(max(self.batch_size, 256), shuffle=False, rank=rank, world=world)


def to_split(x: np.ndarray, y: np.ndarray, classification: bool = True) -> Split:
    return Split(
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.long if classification else torch.float32),
    )


def assemble(
    cfg: SequencesData,
    prep: Preprocessing,
    splits: tuple,
    seq_len: int,
    train_y: np.ndarray,
    folds: np.ndarray | None = None,
) -> SequenceData:
    """The dataset a model trains on: its (train, val, test) splits, in memory or streamed,
    with what the model and the registry need to know about it."""
    width = (
        len(prep.classes)
        if cfg.task == "classification"
        else np.asarray(train_y).reshape(len(train_y), -1).shape[1]
    )
    train, val, test = splits
    return SequenceData(
        train=train,
        val=val,
        test=test,
        input_size=prep.input_size,
        out_features=width,
        seq_len=seq_len,
        extras={"preprocessing": prep.to_dict()},
        folds=folds,
    )
