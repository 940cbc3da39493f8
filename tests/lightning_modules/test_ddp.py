"""Data-parallel training's data side: each rank's shard of a split."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.data.base import Split, TensorBatches


@pytest.mark.parametrize("n", [7, 8])
def test_rank_shards_are_disjoint_and_training_shards_equal(n):
    split = Split(torch.arange(n).float().view(n, 1, 1), torch.arange(n))

    def seen(rank: int, equal: bool) -> list[int]:
        batches = TensorBatches(split, 2, equal, seed=3, rank=rank, world=2, equal_shards=equal)
        ids = [int(i) for _, _, y in batches for i in y]
        assert len(batches) == math.ceil(len(ids) / 2)
        return ids

    a, b = seen(0, equal=False), seen(1, equal=False)
    assert sorted(a + b) == list(range(n))  # evaluation: each example exactly once
    a, b = seen(0, equal=True), seen(1, equal=True)
    assert len(a) == len(b) == math.ceil(n / 2) and set(a + b) == set(range(n))
    if n % 2 == 0:
        assert not set(a) & set(b)
