"""A restored trial whose saved checkpoints storage no longer has resumes from what is left."""

from __future__ import annotations

import shutil

import fsspec
import pyarrow.fs
import pytest
from ray import tune as ray_tune
from ray.train._internal.session import _TrainingResult
from ray.tune.experiment import Trial

from tune.resume import ForgetMissingCheckpoints, checkpoint_exists


def _trial_with_checkpoints(root: str, fs: pyarrow.fs.FileSystem, scores: list[float]) -> Trial:
    """A trial as Tune restores it: keep-best-2 by val_acc, one checkpoint per epoch."""
    trial = Trial(
        "run_trial",
        config={},
        stub=True,  # as Tune builds restored trials: no registered trainable needed
        checkpoint_config=ray_tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="val_acc", checkpoint_score_order="max"
        ),
    )
    for i, score in enumerate(scores):
        path = f"{root}/checkpoint_{i:06d}"
        fs.create_dir(path)
        with fs.open_output_stream(f"{path}/model.ckpt") as f:
            f.write(b"weights")
        ckpt = ray_tune.Checkpoint(path, filesystem=fs)
        result = _TrainingResult(checkpoint=ckpt, metrics={"val_acc": score, "epoch": i + 1})
        trial.run_metadata.checkpoint_manager.register_checkpoint(result)
    return trial


def test_missing_latest_checkpoint_falls_back_to_newest_surviving(tmp_path):
    fs = pyarrow.fs.LocalFileSystem()
    # Epoch 2 scores worst: keep-best-2 prunes it when epoch 3 arrives. A state saved after
    # epoch 2 names checkpoint_000001 as latest; storage has 000000 and 000002.
    trial = _trial_with_checkpoints(str(tmp_path), fs, [0.80, 0.70, 0.90])
    assert not (tmp_path / "checkpoint_000001").exists()
    manager = trial.run_metadata.checkpoint_manager
    stale = _TrainingResult(
        checkpoint=ray_tune.Checkpoint(str(tmp_path / "checkpoint_000001"), filesystem=fs),
        metrics={"val_acc": 0.70, "epoch": 2},
    )
    manager._latest_checkpoint_result = stale
    manager._checkpoint_results = [stale, *manager._checkpoint_results]

    repair = ForgetMissingCheckpoints()
    repair.on_step_begin(0, [trial])
    assert trial.checkpoint.path == str(tmp_path / "checkpoint_000002")
    assert all(checkpoint_exists(r.checkpoint) for r in manager.best_checkpoint_results)
    assert repair.repaired == {trial.trial_id: str(tmp_path / "checkpoint_000002")}


def test_trial_without_surviving_checkpoints_starts_over(tmp_path):
    fs = pyarrow.fs.LocalFileSystem()
    trial = _trial_with_checkpoints(str(tmp_path), fs, [0.5, 0.6])
    for folder in tmp_path.glob("checkpoint_*"):
        shutil.rmtree(folder)
    ForgetMissingCheckpoints().on_step_begin(0, [trial])
    assert trial.checkpoint is None
    assert trial.run_metadata.checkpoint_manager.best_checkpoint_results == []


def test_intact_trials_and_later_steps_are_left_alone(tmp_path):
    fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fsspec.filesystem("memory")))
    root = f"/resume-{tmp_path.name}"
    trial = _trial_with_checkpoints(root, fs, [0.5, 0.6, 0.7])
    before = trial.checkpoint.path
    repair = ForgetMissingCheckpoints()
    repair.on_step_begin(0, [trial])
    assert trial.checkpoint.path == before == f"{root}/checkpoint_000002"
    assert repair.repaired == {}
    fs.delete_dir(before)  # only the first step repairs: later losses are Tune's to report
    repair.on_step_begin(1, [trial])
    assert trial.checkpoint.path == before


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_checkpoint_exists_on_any_filesystem(tmp_path, kind):
    if kind == "local":
        fs, path = pyarrow.fs.LocalFileSystem(), str(tmp_path / "c")
    else:
        fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fsspec.filesystem("memory")))
        path = f"/exists-{tmp_path.name}/c"
    ckpt = ray_tune.Checkpoint(path, filesystem=fs)
    assert not checkpoint_exists(ckpt)
    fs.create_dir(path)
    assert checkpoint_exists(ckpt)
