"""The end of a job: the best trial that still has a checkpoint is the one registered."""

from __future__ import annotations

import shutil

from ray.train import Checkpoint

from tests.support.tune_results import FakeResult, frame
from tune.finish import best_checkpoint


def _trial(tmp_path, name: str, accs: list[float]) -> FakeResult:
    """A finished trial with one kept checkpoint per epoch, each holding its epoch number."""
    kept = []
    for epoch, acc in enumerate(accs):
        folder = tmp_path / name / f"checkpoint_{epoch:06d}"
        folder.mkdir(parents=True)
        (folder / "model.ckpt").write_text(f"{name} epoch {epoch}")
        kept.append((Checkpoint.from_directory(str(folder)), {"val_acc": acc}))
    return FakeResult(frame(accs, [False] * len(accs)), str(tmp_path / name), kept)


def test_a_trial_whose_checkpoints_are_gone_is_passed_over_and_named(tmp_path):
    best = _trial(tmp_path, "best", [0.5, 0.9])
    second = _trial(tmp_path, "second", [0.7, 0.6])
    third = _trial(tmp_path, "third", [0.4])
    dest = tmp_path / "dest"
    result, ckpt, uri, missing = best_checkpoint([third, second, best], "val_acc", "max", dest)
    assert result is best and ckpt.read_text() == "best epoch 1" and missing == []
    assert uri == (tmp_path / "best" / "checkpoint_000001").as_uri()  # the source, not the copy
    shutil.rmtree(tmp_path / "best" / "checkpoint_000001")  # its best epoch's checkpoint only
    result, ckpt, _, missing = best_checkpoint([third, second, best], "val_acc", "max", dest / "a")
    assert result is best and ckpt.read_text() == "best epoch 0" and missing == []
    shutil.rmtree(tmp_path / "best")
    result, ckpt, _, missing = best_checkpoint([third, second, best], "val_acc", "max", dest / "b")
    assert result is second and ckpt.read_text() == "second epoch 0"
    assert len(missing) == 1 and missing[0].startswith("best: no kept checkpoint")
    shutil.rmtree(tmp_path / "second")
    shutil.rmtree(tmp_path / "third")
    result, ckpt, _, missing = best_checkpoint([third, second, best], "val_acc", "max", dest / "c")
    assert result is None and ckpt is None and len(missing) == 3
