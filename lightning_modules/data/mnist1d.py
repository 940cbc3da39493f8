"""MNIST-1D (Greydanus 2020) from the `mnist1d` package's offline generator: 40 steps x 1."""

from __future__ import annotations

import numpy as np

from lightning_modules.data.base import SequenceData, to_split
from lightning_modules.data.splits import split_train_val
from lightning_modules.datasets.mnist1d import Mnist1dData


def build(cfg: Mnist1dData, seed: int) -> SequenceData:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = cfg.num_samples
    args.shuffle_seq = cfg.shuffle_seq
    d = make_dataset(args)  # deterministic (args.seed); already centred to unit std
    x = d["x"].astype(np.float32)[..., None]  # (N, 40, 1)
    x_test = d["x_test"].astype(np.float32)[..., None]
    (xt, yt), (xv, yv) = split_train_val(x, d["y"], cfg.val_fraction, seed, cfg.limit)
    return SequenceData(
        train=to_split(xt, yt),
        val=to_split(xv, yv),
        test=to_split(x_test, d["y_test"]),
        input_size=1,
        out_features=10,
        seq_len=x.shape[1],
    )
