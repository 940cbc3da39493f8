"""Synthetic long-memory tasks generated from a seed: the adding problem and copy memory."""

from __future__ import annotations

import numpy as np

from lightning_modules.data.base import SequenceData, to_split
from lightning_modules.datasets.adding import AddingData
from lightning_modules.datasets.copy import CopyData

TEST_SEED = 10_000  # the test set is the same whatever the run's seed


def adding_problem(n: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x (n, T, 2): values U(0,1) and a marker channel with one 1 in each half; y = marked sum.

    Predicting the mean (1.0) scores MSE = Var(U1 + U2) = 1/6 ~ 0.167: the baseline to beat.
    """
    values = rng.random((n, seq_len), dtype=np.float32)
    half = seq_len // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, seq_len, n)
    markers = np.zeros((n, seq_len), dtype=np.float32)
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    y = values[np.arange(n), first] + values[np.arange(n), second]
    return np.stack([values, markers], axis=-1), y[:, None].astype(np.float32)


def copy_memory(
    n: int, n_symbols: int, copy_len: int, delay: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Symbols 1..K, `delay` blanks (0), a go marker (K+1), then reproduce the symbols.

    Inputs are one-hot (n, T, K+2) with T = 2*copy_len + delay + 1 (counting the output slots);
    targets (n, T) are -100 (ignored) except the last `copy_len` steps. A memoryless model that
    guesses uniformly scores accuracy 1/K there.
    """
    steps = 2 * copy_len + delay + 1
    symbols = rng.integers(1, n_symbols + 1, (n, copy_len))
    tokens = np.zeros((n, steps), dtype=np.int64)
    tokens[:, :copy_len] = symbols
    tokens[:, copy_len + delay] = n_symbols + 1
    x = np.eye(n_symbols + 2, dtype=np.float32)[tokens]
    y = np.full((n, steps), -100, dtype=np.int64)
    y[:, -copy_len:] = symbols - 1
    return x, y


def build_adding(cfg: AddingData, seed: int) -> SequenceData:
    rng = np.random.default_rng(seed)
    train = adding_problem(cfg.n_train, cfg.seq_len, rng)
    val = adding_problem(cfg.n_val, cfg.seq_len, rng)
    test = adding_problem(cfg.n_test, cfg.seq_len, np.random.default_rng(TEST_SEED))
    return SequenceData(
        train=to_split(*train, classification=False),
        val=to_split(*val, classification=False),
        test=to_split(*test, classification=False),
        input_size=2,
        out_features=1,
        seq_len=cfg.seq_len,
    )


def build_copy(cfg: CopyData, seed: int) -> SequenceData:
    rng = np.random.default_rng(seed)
    args = (cfg.n_symbols, cfg.copy_len, cfg.delay)
    train = copy_memory(cfg.n_train, *args, rng)
    val = copy_memory(cfg.n_val, *args, rng)
    test = copy_memory(cfg.n_test, *args, np.random.default_rng(TEST_SEED))
    return SequenceData(
        train=to_split(*train),
        val=to_split(*val),
        test=to_split(*test),
        input_size=cfg.n_symbols + 2,
        out_features=cfg.n_symbols,
        seq_len=train[0].shape[1],
    )
