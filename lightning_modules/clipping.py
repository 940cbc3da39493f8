"""Gradient clipping by global norm, by value, or adaptively (AutoClip), with statistics.

AutoClip (Seetharaman et al. 2020, arXiv:2007.14469): clip the global norm at the p-th
percentile of all gradient norms seen so far, so the threshold tracks the model's own scale.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_, get_total_norm

AUTOCLIP_HISTORY = 10_000  # steps of norm history kept (the paper keeps all; this bounds memory)


class GradientClipper:
    """Call after backward, before the optimizer step; returns (pre-clip norm, clipped?)."""

    def __init__(
        self, algorithm: str = "norm", threshold: float | None = None, percentile: float = 10.0
    ) -> None:
        if algorithm not in ("norm", "value", "auto"):
            raise ValueError(f"grad_clip_algorithm: unknown {algorithm!r}; use norm, value or auto")
        if threshold is not None and threshold <= 0:
            raise ValueError(f"grad_clip: must be > 0, got {threshold}")
        self.algorithm = algorithm
        self.threshold = threshold
        self.percentile = percentile
        self.history: deque[float] = deque(maxlen=AUTOCLIP_HISTORY)
        self.last_threshold: float | None = threshold

    def __call__(self, parameters: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        params = [p for p in parameters if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            zero = torch.zeros(())
            return zero, zero.bool()
        if self.algorithm == "norm" and self.threshold is not None:
            norm = clip_grad_norm_(params, self.threshold)  # returns the pre-clip norm
            return norm, norm > self.threshold
        norm = get_total_norm(grads)
        if self.algorithm == "value" and self.threshold is not None:
            clipped = torch.stack([g.abs().max() for g in grads]).max() > self.threshold
            clip_grad_value_(params, self.threshold)
            return norm, clipped
        if self.algorithm == "auto":
            self.history.append(float(norm))
            limit = float(np.percentile(np.fromiter(self.history, float), self.percentile))
            if self.threshold is not None:
                limit = min(limit, self.threshold)
            self.last_threshold = limit
            clip_grad_norm_(params, limit)
            return norm, norm > limit
        return norm, torch.zeros((), dtype=torch.bool)
