"""The final model of a cross-validated search: the winner's fold models as one ensemble (as
registered from its checkpoint), or its settings refit on every training sequence.

A refit trains one model on all the training data for the epoch count at which the winner's
fold mean was best (each fold model saw (k-1)/k of the data for that many epochs, so the refit
takes as many optimizer steps again, scaled up by k/(k-1)). It runs on the driver, after the
search, inside the job's budget.
"""

from __future__ import annotations

from pathlib import Path

from lightning_modules.config import TrainSpec


def refit_spec(trial: TrainSpec, epochs: int) -> TrainSpec:
    """The winner's settings on all training data (`validation: none`) for `epochs` epochs."""
    data = trial.data.model_copy(update={"validation": "none"})
    trainer = trial.trainer.model_copy(
        update={"max_epochs": epochs, "patience": None, "diagnostics": False}
    )
    return TrainSpec(data=data, model=trial.model, optim=trial.optim, trainer=trainer)


def refit(checkpoint: Path, epochs: int, out: Path) -> tuple[Path, TrainSpec] | None:
    """Trains a cross-validated checkpoint's settings on every training sequence; the last
    epoch's checkpoint and the spec it was trained from. None for a checkpoint of one model
    (a holdout or fixed validation: nothing was held back from a final model but validation)."""
    from lightning_modules.training import load_module, train  # after the search (tune.trials)

    module = load_module(checkpoint)
    folds = module.data_info.ensemble
    if folds == 1:
        return None
    # As many optimizer steps per model as a fold model took: (k-1)/k of the data per epoch
    scaled = max(1, round(epochs * (folds - 1) / folds))
    spec = refit_spec(module.spec, scaled)
    result = train(spec, out, logger=False, enable_progress_bar=False, run_test=False)
    if result.checkpoint is None:
        raise RuntimeError(f"the refit of {checkpoint} ended {result.status} without a model")
    return Path(result.checkpoint), spec
