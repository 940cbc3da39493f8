"""Where the tests find the repository and its fixtures."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHAKESPEARE = ROOT / "tests" / "fixtures" / "shakespeare_excerpt.txt"  # in the repository
