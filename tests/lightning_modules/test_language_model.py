"""Character language model: bits per character fall, sampling stays in the vocabulary."""

from __future__ import annotations

import math

import torch

from lightning_modules.config import TrainSpec
from lightning_modules.training import load_module, train


def test_char_model_learns_and_generates(tiny_text, tmp_path):
    spec = TrainSpec.model_validate(
        {
            "data": {"name": "text", "url": f"file://{tiny_text}", "seq_len": 50},
            "model": {"cell_type": "lstm", "hidden_size": 96, "embedding_dim": 32},
            "optim": {"optimizer": "adam", "lr": 0.01, "batch_size": 32, "grad_clip": 5.0},
            "trainer": {"max_epochs": 4, "seed": 0},
        }
    )
    result = train(spec, tmp_path, logger=False, enable_progress_bar=False)
    bpc = [row["val_bpc"] for row in result.history]
    vocab_size = len(set(tiny_text.read_text())) + 1
    assert bpc[-1] < bpc[0] and bpc[-1] < 0.5 * math.log2(vocab_size), bpc
    assert result.test["test_bpc"] < 0.5 * math.log2(vocab_size)
    assert len(result.grad_norms_over_time) == 49

    module = load_module(result.checkpoint)
    vocab = set(module.vocab.chars[1:])
    gen = torch.Generator().manual_seed(0)
    text = module.generate("the cat", 200, temperature=0.8, top_k=5, generator=gen)
    assert len(text) == 200 and set(text) <= vocab
    assert set(module.generate("the", 50, temperature=0.0)) <= vocab  # greedy
    assert set(module.generate("QQ unknown", 20)) <= vocab  # unseen prompt characters are fine
