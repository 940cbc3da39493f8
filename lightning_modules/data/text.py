"""Character-level text from any fsspec URL, split by position and batched contiguously.

The vocabulary comes from the training split only (index 0 stands for any character it lacks)
and is saved with the model. Batches are `batch_size` parallel streams cut into windows of
`seq_len`, in order, so a language model can carry its (detached) state from one window to the
next: truncated backpropagation through time.
"""

from __future__ import annotations

from collections.abc import Iterator

import fsspec
import torch

from lightning_modules.data.base import (
    SequenceData,
    SequenceDataModule,
    Split,
    data_parallel_rank,
)
from lightning_modules.datasets.text import TextData
from lightning_modules.sampling import Vocabulary

VAL_START, TEST_START = 0.90, 0.95  # last 10% held out: 5% validation, 5% test


def read_text(url: str, limit_chars: int | None = None) -> str:
    try:
        with fsspec.open(url, "r", encoding="utf-8") as f:
            return f.read(limit_chars) if limit_chars else f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"data.url: no such file {url!r}") from e


def build(cfg: TextData, seed: int) -> SequenceData:
    text = read_text(cfg.url, cfg.limit_chars)
    if len(text) < 20 * cfg.seq_len:
        raise ValueError(
            f"data.url: {len(text)} characters is too little for seq_len {cfg.seq_len}"
        )
    a, b = int(len(text) * VAL_START), int(len(text) * TEST_START)
    vocab = Vocabulary(list(text[:a]))

    def split(part: str) -> Split:
        ids = vocab.encode(part)
        return Split(ids, ids)  # targets are the inputs shifted by one, cut by the batcher

    return SequenceData(
        train=split(text[:a]),
        val=split(text[a:b]),
        test=split(text[b:]),
        input_size=len(vocab),
        out_features=len(vocab),
        seq_len=cfg.seq_len,
        extras={"vocabulary": vocab.chars},
    )


class ContiguousWindows:
    """(x, y) windows of `batch_size` parallel streams; y is x shifted one character ahead."""

    def __init__(self, tokens: torch.Tensor, batch_size: int, seq_len: int) -> None:
        batch_size = max(1, min(batch_size, (len(tokens) - 1) // (seq_len + 1)))
        n = (len(tokens) - 1) // batch_size * batch_size
        self.x = tokens[:n].view(batch_size, -1)  # (B, N/B): stream b is one contiguous stretch
        self.y = tokens[1 : n + 1].view(batch_size, -1)
        self.seq_len = seq_len

    def __len__(self) -> int:
        return -(-self.x.size(1) // self.seq_len)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, self.x.size(1), self.seq_len):
            yield self.x[:, i : i + self.seq_len], self.y[:, i : i + self.seq_len]


# Validation and test read this many parallel streams whatever the training batch size: each
# stream starts from a zero state and up to streams - 1 tail characters are dropped, so with the
# training batch size, val_bpc would change with `batch_size` and a search over it would compare
# different measurements.
EVAL_STREAMS = 16


class TextDataModule(SequenceDataModule):
    def train_dataloader(self):
        return self._windows(self.data.train.x, self.batch_size)

    def val_dataloader(self):
        return self._windows(self.data.val.x, EVAL_STREAMS)

    def test_dataloader(self):
        return self._windows(self.data.test.x, EVAL_STREAMS)

    def _windows(self, tokens: torch.Tensor, streams: int) -> ContiguousWindows:
        rank, world = data_parallel_rank(self)
        if world > 1:
            # Equal contiguous stretches per rank (the last < world tokens dropped): the same
            # number of windows everywhere, and each rank's streams stay contiguous for TBPTT.
            size = len(tokens) // world
            tokens = tokens[rank * size : (rank + 1) * size]
        return ContiguousWindows(tokens, streams, self.data.seq_len)
