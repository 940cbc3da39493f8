"""Characters of a text file: a character language model (truncated BPTT over windows)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightning_modules.datasets.entry import SEED_SPACE, Dataset
from lightning_modules.sections import Section

VOCABULARY_BOUND = 256  # a generous bound for a character vocabulary (the service's ceiling)


class TextData(Section):
    """Characters from any fsspec URL; the last 10% is held out (5% validation, 5% test)."""

    name: Literal["text"] = "text"
    url: str
    """Path or fsspec URL of a UTF-8 text file (file://, s3://, memory://, ...)."""
    seq_len: int = Field(100, ge=2)
    """Truncated-BPTT window: characters per batch step; state carries across windows."""
    limit_chars: int | None = Field(None, gt=1000)
    """Read only the first `limit_chars` characters (smoke tests)."""


DATASET = Dataset(
    config=TextData,
    task="language_model",
    builder="lightning_modules.data.text:build",
    inputs=lambda cfg: VOCABULARY_BOUND,  # characters, embedded (model.embedding_dim)
    outputs=lambda cfg: VOCABULARY_BOUND,
    search_space={**SEED_SPACE, "hidden_size": {"randint": [100, 300]}},
    per_step=True,
    steps=lambda cfg: ("data.seq_len", cfg.seq_len),
    datamodule="lightning_modules.data.text:TextDataModule",
    digest_ignores=frozenset(),
)
