"""Sequence regression (mean squared error), e.g. the adding problem."""

from __future__ import annotations

from lightning_modules.base import RecurrentTask


class SequenceRegressor(RecurrentTask):
    def batch_loss(self, batch, stage: str, net=None):
        x, lengths, y = batch  # y (B, out_features)
        err = ((self.net if net is None else net)(x, lengths) - y).pow(2)
        loss_sum = err.sum()
        return loss_sum / y.numel(), {"loss": loss_sum, "count": y.new_tensor(y.numel())}
