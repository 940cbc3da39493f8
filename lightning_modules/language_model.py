"""Character language model: per-step cross-entropy, bits per character, truncated BPTT, sampling."""

from __future__ import annotations

import math

import torch.nn.functional as F

from lightning_modules.base import RecurrentTask
from lightning_modules.models import CharRNN
from lightning_modules.sampling import Vocabulary, generate


def _detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class CharLanguageModel(RecurrentTask):
    def build_net(self) -> CharRNN:
        self.vocab = Vocabulary(self.data_info.vocabulary[1:])
        self._state: dict[str, object] = {}
        return super().build_net()

    # Windows arrive in order, so each stage carries its state from one window to the next,
    # detached: gradients stop at the window boundary (truncated BPTT), context does not.
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._state["train"] = None

    def on_validation_epoch_start(self) -> None:
        self._state["val"] = None

    def on_test_epoch_start(self) -> None:
        self._state["test"] = None

    def batch_loss(self, batch, stage: str):
        x, y = batch  # (B, T) token ids; y is x shifted one character ahead
        logits, state = self.net(x, self._state.get(stage))
        self._state[stage] = _detach(state)
        loss_sum = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        return loss_sum / y.numel(), {"loss": loss_sum, "count": y.new_tensor(y.numel())}

    def epoch_metrics(self, stage: str, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss"] / sums["count"]
        return {f"{stage}_loss": loss, f"{stage}_bpc": loss / math.log(2)}

    def generate(self, prompt: str, n: int, **sampling) -> str:
        """See `lightning_modules.sampling.generate` (temperature, top_k, generator)."""
        return generate(self.net, self.vocab, prompt, n, **sampling)
