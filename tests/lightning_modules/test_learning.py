"""Learning tests on fixed seeds: real accuracy thresholds, sized to run in seconds."""

from __future__ import annotations

import pytest

from lightning_modules.config import TrainSpec, load_train_spec
from lightning_modules.training import train
from tests.support.paths import ROOT

pytestmark = pytest.mark.slow


def test_gru_mnist1d_reaches_85_percent_within_60s(tmp_path):
    spec = load_train_spec(ROOT / "examples" / "mnist1d_gru.yaml")
    # A slightly smaller, faster-learning variant of the example (~2 s an epoch on 2 cores).
    spec = spec.with_params(
        {
            "hidden_size": 48,
            "lr": 0.01,
            "batch_size": 64,
            "grad_clip": 5.0,
            "max_epochs": 9,
            "max_time_s": 60,
            "patience": None,
            "diagnostics": False,
            # One thread: immune to OpenMP spin-wait collapse if anything else shares the cores.
            "threads": 1,
        }
    )
    result = train(spec, tmp_path, logger=False, enable_progress_bar=False)
    assert result.train_time_s < 60
    assert result.test["test_acc"] >= 0.85, result.test


def test_lstm_solves_adding_problem_t50(tmp_path):
    spec = TrainSpec.model_validate(
        {
            "data": {"name": "adding", "seq_len": 50, "n_train": 10000},
            "model": {"cell_type": "lstm", "hidden_size": 32, "forget_bias": 1.0},
            "optim": {"optimizer": "adam", "lr": 0.01, "batch_size": 50, "grad_clip": 1.0},
            "trainer": {"max_epochs": 4, "seed": 0, "diagnostics": False},
        }
    )
    result = train(spec, tmp_path, logger=False, enable_progress_bar=False)
    # Predicting the mean scores 0.167; solving the task means an order of magnitude below.
    assert result.test["test_loss"] < 0.015, result.test
