"""Resuming an interrupted job: Tune's saved state, repaired where the storage moved on past it.

Tune saves its experiment state (trial statuses, each trial's checkpoints) every ~10 s and after
every `num_to_keep` checkpoints of a trial, but prunes checkpoints as each new one arrives, by
score (keep-best-K). A driver killed between a pruning and the next save leaves a state in which a
trial's latest checkpoint is already gone: restoring it fails with FileNotFoundError on every
retry, and a trial that had in fact finished ends FAILED. Before restored trials start,
`ForgetMissingCheckpoints` drops the checkpoints storage no longer has and points each trial at its
newest surviving one (or none: the trial then starts over).
"""

from __future__ import annotations

import logging

import pyarrow.fs
from ray import tune as ray_tune

from tune import compat

logger = logging.getLogger(__name__)


def checkpoint_exists(checkpoint: ray_tune.Checkpoint) -> bool:
    info = checkpoint.filesystem.get_file_info(checkpoint.path)
    return info.type != pyarrow.fs.FileType.NotFound


class ForgetMissingCheckpoints(ray_tune.Callback):
    """Driver-side, on resume only: runs once, at the first step, before any trial restarts."""

    def __init__(self) -> None:
        self.repaired: dict[str, str | None] = {}  # trial id -> checkpoint it now resumes from
        self._done = False

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self._done:
            return
        self._done = True
        for trial in trials:
            self._repair(trial)

    def _repair(self, trial) -> None:
        results = compat.checkpoint_results(trial)
        present = {id(r): checkpoint_exists(r.checkpoint) for r in results}
        latest = compat.latest_checkpoint_result(trial)
        if latest is not None and id(latest) not in present:
            present[id(latest)] = checkpoint_exists(latest.checkpoint)
        if all(present.values()):
            return
        kept = [r for r in results if present[id(r)]]
        newest = latest
        if latest is not None and not present[id(latest)]:
            # checkpoint_000NNN folders: the highest surviving index is the newest
            newest = max(kept, key=lambda r: r.checkpoint.path, default=None)
        compat.keep_checkpoint_results(trial, kept, newest)
        if newest is not latest:
            to = newest.checkpoint.path if newest else None
            self.repaired[trial.trial_id] = to
            logger.warning(
                "trial %s: its saved latest checkpoint %s is gone (Tune may have pruned it "
                "after its last state save); resuming from %s",
                trial.trial_id,
                latest.checkpoint.path,
                to or "the start",
            )
