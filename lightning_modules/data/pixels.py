"""The fixed pixel order of permuted MNIST, shared by the dataset and the serving bundle."""

from __future__ import annotations

import numpy as np

PERMUTATION_SEED = 1234  # one fixed pixel permutation for every run (permuted MNIST)


def pixel_order(pixels: int = 784) -> np.ndarray:
    """The permutation applied to a flattened 28x28 image when `permuted: true`."""
    return np.random.default_rng(PERMUTATION_SEED).permutation(pixels)
