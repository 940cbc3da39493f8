"""scikit-learn's 8x8 handwritten digits as 8 steps of 8 features, scaled to 0-1."""

from __future__ import annotations

import numpy as np

from lightning_modules.data.base import SequenceData, to_split
from lightning_modules.data.splits import split_train_val
from lightning_modules.datasets.digits import DigitsData

TEST_FRACTION = 0.2


def build(cfg: DigitsData, seed: int) -> SequenceData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 8, 8)
    order = np.random.default_rng(0).permutation(len(x))  # fixed test set
    n_test = int(len(x) * TEST_FRACTION)
    test, rest = order[:n_test], order[n_test:]
    (xt, yt), (xv, yv) = split_train_val(x[rest], d.target[rest], cfg.val_fraction, seed, cfg.limit)
    return SequenceData(
        train=to_split(xt, yt),
        val=to_split(xv, yv),
        test=to_split(x[test], d.target[test]),
        input_size=8,
        out_features=10,
        seq_len=8,
        extras={"preprocessing": {"scale": 1 / 16.0}},
    )
