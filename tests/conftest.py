"""Shared fixtures: tiny specs and the repository paths tests need."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "shakespeare.txt"

# Tests are sized for 2 cores; keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_text(tmp_path: Path) -> Path:
    """A small, learnable text (repeated sentences) that needs no external file."""
    words = "the cat sat on the mat and the dog ate the log while a bird sang".split()
    rng = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(600):
        idx = torch.randint(0, len(words) - 4, (1,), generator=rng).item()
        lines.append(" ".join(words[idx : idx + 5]) + ".")
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines))
    return path
