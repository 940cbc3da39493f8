"""Sequence regression (mean squared error), e.g. the adding problem."""

from __future__ import annotations

from lightning_modules.base import RecurrentTask
from lightning_modules.models import SequenceModel, encoder_kwargs


class SequenceRegressor(RecurrentTask):
    def build_net(self) -> SequenceModel:
        return SequenceModel(
            self.data_info["input_size"],
            self.data_info["out_features"],
            readout=self.spec.model.readout,
            seq_len=self.data_info["seq_len"],
            **encoder_kwargs(self.spec.model),
        )

    def batch_loss(self, batch, stage: str):
        x, lengths, y = batch  # y (B, out_features)
        err = (self.net(x, lengths) - y).pow(2)
        loss_sum = err.sum()
        return loss_sum / y.numel(), {"loss": loss_sum, "count": y.new_tensor(y.numel())}
