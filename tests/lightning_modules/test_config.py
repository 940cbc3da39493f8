"""Spec validation: bad values and unknown fields fail with the field's name and the reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lightning_modules.config import (
    ModelConfig,
    OptimConfig,
    SpecError,
    TrainerConfig,
    TrainSpec,
    format_validation_error,
    load_train_spec,
)

BASE = {"data": {"name": "digits"}}


def _error(raw: dict) -> str:
    with pytest.raises(ValidationError) as e:
        TrainSpec.model_validate(raw)
    return format_validation_error(e.value)


@pytest.mark.parametrize(
    "raw,field,reason",
    [
        ({**BASE, "model": {"cell_type": "lstn"}}, "model.cell_type", "unknown cell type 'lstn'"),
        ({**BASE, "model": {"hidden_size": 0}}, "model.hidden_size", "greater than or equal to 1"),
        ({**BASE, "optim": {"grad_clip": -1.0}}, "optim.grad_clip", "greater than 0"),
        ({**BASE, "model": {"hiden_size": 64}}, "model.hiden_size", "unknown field"),
        ({**BASE, "optim": {"optimizer": "ftrl"}}, "optim.optimizer", "TensorFlow-only"),
        ({**BASE, "optim": {"optimizer": "lbfgs"}}, "optim.optimizer", "unknown optimizer"),
        ({**BASE, "model": {"dropout": 1.5}}, "model.dropout", "less than 1"),
        ({"data": {"name": "imagenet"}}, "data", "imagenet"),
        ({"data": {"name": "adding", "seq_len": 1}}, "data.seq_len", "greater than or equal to 2"),
        ({**BASE, "trainer": {"max_epochs": 0}}, "trainer.max_epochs", "greater than or equal"),
        ({**BASE, "extra": 1}, "extra", "unknown field"),
    ],
)
def test_bad_spec_names_field_and_reason(raw, field, reason):
    msg = _error(raw)
    assert msg.startswith(f"{field}:"), msg
    assert reason in msg


def test_load_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: digits}\nmodel: {hidden_size: 0}\n")
    with pytest.raises(SpecError, match="model.hidden_size"):
        load_train_spec(bad)
    with pytest.raises(SpecError, match="no such file"):
        load_train_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError, match="mapping"):
        load_train_spec(tmp_path / "list.yaml")


def test_a_misspelt_field_is_answered_with_the_nearest_valid_one(tmp_path):
    typos = tmp_path / "typos.yaml"
    typos.write_text(
        "data: {name: digits, limitt: 100}\nmodle: {}\noptim: {lr: 0.1, gradclip: 1}\n"
        "trainer: {xyzzy: 1}\n"
    )
    with pytest.raises(SpecError) as e:
        load_train_spec(typos)
    assert sorted(str(e.value).splitlines()) == [
        "data.limitt: unknown field; did you mean limit?",  # the dataset's own fields
        "modle: unknown field; did you mean model?",
        "optim.gradclip: unknown field; did you mean grad_clip?",
        "trainer.xyzzy: unknown field",  # nothing close: no guess
    ]


def test_with_params_routes_flat_hyperparameters():
    spec = TrainSpec.model_validate(BASE)
    new = spec.with_params({"cell_type": "gru", "lr": 0.01, "max_epochs": 3, "grad_clip": 2.0})
    assert new.model.cell_type == "gru"
    assert new.optim.lr == 0.01 and new.optim.grad_clip == 2.0
    assert new.trainer.max_epochs == 3
    assert spec.model.cell_type == "lstm"  # the original is unchanged
    with pytest.raises(ValueError, match="nonsense"):
        spec.with_params({"nonsense": 1})
    with pytest.raises(ValidationError):
        spec.with_params({"hidden_size": -3})


def test_field_names_unique_across_sections():
    names = [set(cls.model_fields) for cls in (ModelConfig, OptimConfig, TrainerConfig)]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])


def test_applied_settings_keep_what_takes_effect():
    lstm = TrainSpec.model_validate(
        {
            "data": {"name": "text", "url": "x.txt"},
            "model": {"cell_type": "lstm", "num_layers": 2},
            "optim": {"optimizer": "rmsprop", "lr_schedule": "step", "grad_clip": 1.0},
        }
    ).applied_settings()
    for kept in ("forget_bias", "dropout", "momentum", "lr_step_epochs", "lr_gamma"):
        assert kept in lstm, kept
    assert lstm["embedding_dim"] == 64 and lstm["grad_clip_algorithm"] == "norm"
    assert "bidirectional" not in lstm and "readout" not in lstm  # a language model
    auto = TrainSpec.model_validate(
        {"data": {"name": "digits"}, "optim": {"grad_clip_algorithm": "auto"}}
    ).applied_settings()
    assert auto["autoclip_percentile"] == 10.0 and "embedding_dim" not in auto
    assert "lr_gamma" not in auto and "momentum" not in auto


def test_settings_that_cannot_apply_are_named():
    one = TrainSpec.model_validate(
        {"data": {"name": "digits"}, "model": {"num_layers": 1, "dropout": 0.3}}
    )
    assert [n.split(":")[0] for n in one.ignored_settings()] == ["model.dropout"]
    text = TrainSpec.model_validate(
        {"data": {"name": "text", "url": "x.txt"}, "model": {"bidirectional": True}}
    )
    assert [n.split(":")[0] for n in text.ignored_settings()] == ["model.bidirectional"]
    fine = TrainSpec.model_validate(
        {"data": {"name": "digits"}, "model": {"num_layers": 2, "dropout": 0.3}}
    )
    assert fine.ignored_settings() == []
