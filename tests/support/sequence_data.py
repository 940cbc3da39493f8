"""Small, learnable user datasets written in every layout the `sequences` dataset reads.

Three classes ("low", "mid", "high") differ in the frequency of two sensor channels; lengths
vary from 12 to 39 steps; the second channel sits around 100 with spread 30, so a model only
learns quickly if the features are standardized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CLASSES = ("low", "mid", "high")
FREQS = (0.15, 0.45, 0.9)


def sensor_sequences(n: int = 240, seed: int = 0) -> tuple[list[np.ndarray], list[str], np.ndarray]:
    """(sequences (T_i, 2), labels, regression targets (N, 2): frequency and mean of channel b)."""
    rng = np.random.default_rng(seed)
    xs, labels, targets = [], [], []
    for _ in range(n):
        c = int(rng.integers(3))
        t = np.arange(int(rng.integers(12, 40)))
        a = np.sin(FREQS[c] * t + rng.uniform(0, 6.28)) + 0.1 * rng.standard_normal(len(t))
        b = 100 + 30 * np.cos(FREQS[c] * t) + rng.standard_normal(len(t))
        xs.append(np.stack([a, b], axis=1).astype(np.float32))
        labels.append(CLASSES[c])
        targets.append([FREQS[c], float(b.mean())])
    return xs, labels, np.array(targets, dtype=np.float32)


def write_parquet(path: Path, xs, labels, nested: bool = True, **extra) -> Path:
    """One row per sequence: `sequence` as list<list<float>>, or one list column per feature."""
    if nested:
        cols = {"sequence": pa.array([x.tolist() for x in xs], pa.list_(pa.list_(pa.float32())))}
    else:
        cols = {
            name: pa.array([x[:, i].tolist() for x in xs], pa.list_(pa.float32()))
            for i, name in enumerate(("a", "b"))
        }
    table = pa.table({**cols, "label": labels, **extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=50)
    return path


def write_csv(path: Path, xs, labels, shuffle: bool = False) -> Path:
    """Long format: one row per step (`seq`, `t`, `a`, `b`, `label`), optionally row-shuffled."""
    rows = [
        {"seq": f"s{i}", "t": t, "a": step[0], "b": step[1], "label": y}
        for i, (x, y) in enumerate(zip(xs, labels, strict=True))
        for t, step in enumerate(x.tolist())
    ]
    df = pd.DataFrame(rows)
    if shuffle:
        df = df.sample(frac=1.0, random_state=0)
    df.to_csv(path, index=False)
    return path


def write_npz(path: Path, xs, y, padded: bool = True) -> Path:
    if padded:
        lengths = np.array([len(x) for x in xs])
        x = np.full((len(xs), lengths.max(), xs[0].shape[1]), np.nan, np.float32)
        for i, s in enumerate(xs):
            x[i, : len(s)] = s
        np.savez(path, x=x, lengths=lengths, y=np.asarray(y))
    else:
        arr = np.empty(len(xs), dtype=object)
        arr[:] = xs
        np.savez(path, x=arr, y=np.asarray(y))
    return path
