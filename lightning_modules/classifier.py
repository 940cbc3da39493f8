"""Sequence classification (cross-entropy, accuracy); per-step targets for the copy task."""

from __future__ import annotations

import torch.nn.functional as F

from lightning_modules.base import RecurrentTask

IGNORE = -100  # per-step targets with this label are not scored


class SequenceClassifier(RecurrentTask):
    def batch_loss(self, batch, stage: str, net=None):
        x, lengths, y = batch  # x (B, T, F); y (B,) or per step (B, T)
        logits = (self.net if net is None else net)(x, lengths)  # (B, C) or (B, T, C)
        if y.dim() == 2:
            logits, y = logits.flatten(0, 1), y.flatten()
        scored = y != IGNORE
        loss_sum = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")
        count = scored.sum()
        correct = ((logits.argmax(-1) == y) & scored).sum()
        return loss_sum / count, {"loss": loss_sum, "correct": correct, "count": count}

    def epoch_metrics(self, stage: str, sums: dict[str, float]) -> dict[str, float]:
        return {
            f"{stage}_loss": sums["loss"] / sums["count"],
            f"{stage}_acc": sums["correct"] / sums["count"],
        }
