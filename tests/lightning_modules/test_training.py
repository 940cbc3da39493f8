"""Training runs end to end: every optimizer trains, divergence is an outcome, results are saved."""

from __future__ import annotations

import json
import math

import pytest

from lightning_modules.config import OPTIMIZERS, TrainSpec
from lightning_modules.training import load_module, train

LR = {
    "sgd": 0.5,
    "momentum": 0.2,
    "nesterov": 0.2,
    "adagrad": 0.05,
    "adadelta": 1.0,
    "rmsprop": 0.003,
    "adam": 0.01,
    "adamw": 0.01,
}


def _digits_spec(**params) -> TrainSpec:
    spec = TrainSpec.model_validate(
        {
            "data": {"name": "digits"},
            "model": {"cell_type": "gru", "hidden_size": 32},
            "optim": {"batch_size": 64},
            "trainer": {"max_epochs": 3, "diagnostics": False, "seed": 0},
        }
    )
    return spec.with_params(params)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(optimizer, tmp_path):
    spec = _digits_spec(optimizer=optimizer, lr=LR[optimizer], weight_decay=1e-4)
    result = train(spec, tmp_path, logger=False, enable_progress_bar=False, run_test=False)
    losses = [row["train_loss"] for row in result.history]
    assert result.status == "completed" and result.epochs == 3
    assert losses[-1] < losses[0] * 0.9, losses
    assert result.best_val > 0.3  # 10 classes: chance is 0.1


def test_divergence_guard_ends_run_as_diverged(tmp_path):
    spec = TrainSpec.model_validate(
        {
            "data": {"name": "adding", "seq_len": 30, "n_train": 2000},
            "model": {"cell_type": "rnn_relu", "hidden_size": 64},
            "optim": {"optimizer": "sgd", "lr": 10.0, "batch_size": 50},
            "trainer": {"max_epochs": 5},
        }
    )
    result = train(spec, tmp_path, logger=False, enable_progress_bar=False)
    assert result.status == "diverged"
    assert result.epochs <= 1 and result.test == {}
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["status"] == "diverged"
    assert "the training loss became" in saved["diverged_reason"]


def _exploding(factor: float | None) -> TrainSpec:
    """SGD at lr 10 on a GRU: the loss stays finite but ends ~10x the untrained network's."""
    return TrainSpec.model_validate(
        {
            "data": {"name": "mnist1d", "limit": 600},
            "model": {"cell_type": "gru", "hidden_size": 16},
            "optim": {"optimizer": "sgd", "lr": 10.0, "batch_size": 64},
            "trainer": {"max_epochs": 3, "diagnostics": False, "divergence_factor": factor},
        }
    )


def test_a_finite_explosion_is_divergence_and_the_rule_is_configurable(tmp_path):
    result = train(_exploding(5.0), tmp_path / "k5", logger=False, enable_progress_bar=False)
    losses = [row["train_loss"] for row in result.history]
    assert result.status == "diverged" and all(math.isfinite(v) for v in losses), losses
    assert result.diverged_reason.startswith(f"epoch {result.epochs}: train_loss ")
    assert "> 5 x the first batch's loss" in result.diverged_reason
    off = train(_exploding(None), tmp_path / "off", logger=False, enable_progress_bar=False)
    assert off.status == "completed" and max(r["train_loss"] for r in off.history) > 5 * 2.3


def test_results_checkpoint_and_clip_statistics_saved(tmp_path):
    spec = _digits_spec(
        grad_clip=0.05,
        grad_clip_algorithm="norm",
        lr_schedule="cosine",
        diagnostics=True,
        max_epochs=2,
    )
    result = train(spec, tmp_path, enable_progress_bar=False)
    row = result.history[-1]
    for key in (
        "train_loss",
        "val_loss",
        "val_acc",
        "grad_norm",
        "clip_frac",
        "epoch_time_s",
        "lr",
    ):
        assert key in row and math.isfinite(row[key]), key
    assert row["clip_frac"] > 0.5  # a 0.05 norm threshold clips nearly every step
    assert set(result.test) == {"test_loss", "test_acc"}
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "logs" / "metrics.csv").exists()
    assert (tmp_path / "grad_norms_over_time.png").exists()
    assert len(result.grad_norms_over_time) == 8
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["versions"]["torch"].startswith("2.13") and saved["data_fingerprint"]
    module = load_module(result.checkpoint)
    assert module.spec == spec and module.net.encoder.cell_type == "gru"


def test_early_stopping_stops(tmp_path):
    spec = _digits_spec(lr=1e-7, optimizer="sgd", patience=1, max_epochs=20)
    result = train(spec, tmp_path, logger=False, enable_progress_bar=False, run_test=False)
    assert result.status == "early_stopped" and result.epochs < 20


def test_autoclip_and_value_clipping_train(tmp_path):
    for algo, clip in (("auto", None), ("value", 0.01)):
        spec = _digits_spec(grad_clip_algorithm=algo, grad_clip=clip, max_epochs=2)
        result = train(
            spec, tmp_path / algo, logger=False, enable_progress_bar=False, run_test=False
        )
        assert result.best_val > 0.2
        assert result.history[-1]["clip_frac"] > 0.0
