"""Cross-validated training: k fold models in lockstep, one report per epoch, one ensemble model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.bundle.pyfunc import MODEL_FILE, RecurrentModel, load_bundle, save_bundle
from lightning_modules.config import TrainSpec
from lightning_modules.data import build_data, build_datamodule
from lightning_modules.data.base import FoldBatches, FoldEval, Split, train_size
from lightning_modules.models import FoldEnsemble
from lightning_modules.training import data_info, load_module, train
from tests.support.sequence_data import sensor_sequences, write_parquet


def _indexed_split(n: int) -> Split:
    """y holds each example's index, so a batch says which examples it took."""
    return Split(torch.randn(n, 3, 2), torch.arange(n), torch.full((n,), 3))


def test_each_fold_model_trains_only_outside_its_fold_and_all_step_together():
    folds = np.arange(23) % 4
    batches = FoldBatches(_indexed_split(23), folds, batch_size=5, seed=0)
    seen = [set() for _ in range(4)]
    steps = 0
    for step in batches:
        steps += 1
        assert len(step) == 4  # one batch per fold model, every step
        for i, (_, _, y) in enumerate(step):
            assert not (folds[y.numpy()] == i).any()  # never its own fold
            seen[i] |= set(y.tolist())
    assert steps == len(batches) == 4  # ceil(17 / 5): the largest fold model's set
    for i in range(4):
        assert seen[i] == set(np.flatnonzero(folds != i).tolist())  # all of its own data


def test_fold_scoring_tags_each_batch_with_the_model_that_scores_it():
    folds = np.arange(10) % 3
    tagged = [(y, fold) for _, _, y, fold in FoldEval(_indexed_split(10), folds, 256)]
    assert [f for _, f in tagged] == [0, 1, 2]
    assert all((folds[y.numpy()] == f).all() for y, f in tagged)
    assert sum(len(y) for y, _ in tagged) == 10  # every example scored once


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """60 sequences: a 6-sequence holdout by default ratios, so `auto` picks 5 folds."""
    xs, labels, _ = sensor_sequences(n=75, seed=2)
    return write_parquet(tmp_path_factory.mktemp("tiny") / "d.parquet", xs, labels)


def _spec(url, validation, lr=0.02, epochs=8) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "data": {"name": "sequences", "url": str(url), "validation": validation},
            "model": {"cell_type": "gru", "hidden_size": 16, "bidirectional": True},
            "optim": {"lr": lr, "batch_size": 8},
            "trainer": {"max_epochs": epochs, "threads": 1, "diagnostics": False},
        }
    )


@pytest.fixture(scope="module")
def cv_run(tiny, tmp_path_factory):
    return train(
        _spec(tiny, "auto"),
        tmp_path_factory.mktemp("cv"),
        enable_progress_bar=False,
        logger=False,
    )


def test_auto_on_tiny_data_trains_five_fold_models_in_lockstep(tiny, cv_run):
    data = build_data(_spec(tiny, "auto").data, 0)
    assert data.ensemble == 5 and data.val is data.train  # every sequence scored out of fold
    assert train_size(data) == len(data.train) - np.bincount(data.folds).max()
    assert len(cv_run.history) == 8  # one report per epoch, not per fold
    for row in cv_run.history:
        per_fold = [row[f"val_acc_fold{i}"] for i in range(5)]
        assert row["val_acc"] == pytest.approx(np.mean(per_fold))
        assert row["val_acc_sd"] == pytest.approx(np.std(per_fold))
        assert row["val_loss"] == pytest.approx(
            np.mean([row[f"val_loss_fold{i}"] for i in range(5)])
        )
    assert cv_run.best_val > 0.8 and cv_run.test["test_acc"] > 0.8


def test_the_fold_models_are_one_ensemble_served_alike(cv_run, tiny, tmp_path):
    module = load_module(cv_run.checkpoint)
    assert isinstance(module.net, FoldEnsemble) and len(module.net.members) == 5
    a, b = module.net.members[0], module.net.members[1]
    assert not torch.equal(a.head.weight, b.head.weight)  # trained apart
    data = build_data(module.spec.data, 0)
    x, lengths = data.test.x[:6], data.test.lengths[:6]
    with torch.no_grad():
        mean_prob = torch.stack([m(x, lengths).softmax(-1) for m in module.net.members]).mean(0)
        assert torch.allclose(module.net(x, lengths).softmax(-1), mean_prob, atol=1e-6)
    # The registered bundle rebuilds the same ensemble; the pyfunc answers with its mean
    bundle = save_bundle(module.net, module.spec, data_info(data), tmp_path / MODEL_FILE)
    net, _, info = load_bundle(bundle)
    assert info.ensemble == 5 and isinstance(net, FoldEnsemble)
    served = RecurrentModel().attach(net, module.spec, info)
    prep = served.prep
    raw = [
        (x[i, : lengths[i]].numpy() * np.asarray(prep.std, np.float32)) + np.asarray(prep.mean)
        for i in range(6)
    ]
    out = served.predict(None, raw)
    probs = out[[c for c in out.columns if c.startswith("prob_")]].to_numpy()
    assert np.allclose(probs, mean_prob.numpy(), atol=1e-4)


def test_cross_validation_selects_where_a_one_sequence_holdout_cannot(tiny, tmp_path):
    """A learning rate too small to learn in 8 epochs against one that learns: scored on one
    held-out sequence both score 0 or 1 (chance decides); five folds tell them apart."""
    scores = {}
    for name, lr in (("good", 0.02), ("bad", 1e-4)):
        for v, validation in enumerate(({"folds": 5}, {"holdout": 0.017})):  # 1 of 60 held out
            spec = _spec(tiny, validation, lr=lr)
            run = train(spec, tmp_path / f"{name}{v}", enable_progress_bar=False, logger=False)
            scores[name, "folds" if "folds" in validation else "holdout"] = run.best_val
    assert scores["good", "holdout"] in (0.0, 1.0) and scores["bad", "holdout"] in (0.0, 1.0)
    assert scores["good", "folds"] > scores["bad", "folds"] + 0.25


def test_regression_folds_average_the_fold_models_values(tmp_path):
    xs, labels, targets = sensor_sequences(n=60, seed=4)
    url = write_parquet(tmp_path / "r.parquet", xs, labels, target=targets[:, 0].tolist())
    spec = TrainSpec.model_validate(
        {
            "data": {
                "name": "sequences",
                "url": str(url),
                "task": "regression",
                "label_column": "target",
            },
            "model": {"cell_type": "gru", "hidden_size": 16},
            "optim": {"lr": 0.02, "batch_size": 8},
            "trainer": {"max_epochs": 10, "threads": 1, "diagnostics": False},
        }
    )
    run = train(spec, tmp_path / "out", enable_progress_bar=False, logger=False)
    module = load_module(run.checkpoint)
    assert isinstance(module.net, FoldEnsemble) and not module.net.classification
    last = run.history[-1]
    assert last["val_loss"] == pytest.approx(np.mean([last[f"val_loss_fold{i}"] for i in range(5)]))
    # Three frequencies: learning them halves the loss of predicting the mean (1.0)
    assert run.best_val < 0.5 and run.test["test_loss"] < 0.5


def test_a_refit_trains_the_winner_on_every_sequence_for_the_chosen_epochs(cv_run, tmp_path):
    from tune.final import refit

    ckpt, spec = refit(Path(cv_run.checkpoint), epochs=8, out=tmp_path / "refit")
    module = load_module(ckpt)
    assert not isinstance(module.net, FoldEnsemble) and module.data_info.ensemble == 1
    assert spec.data.validation == "none" and spec.trainer.max_epochs == 6  # 8 x 4/5 steps
    data = build_data(spec.data, 0)
    assert data.val is data.train and len(data.train) == 60  # nothing held out
    batches = build_datamodule(spec.data, data, 8, 0).test_dataloader()
    assert module.evaluate(batches)["test_acc"] > 0.8
