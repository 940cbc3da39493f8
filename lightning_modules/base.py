"""What every recurrent task shares: optimizer, clipping with statistics, divergence guard, epoch metrics.

Subclasses implement `batch_loss(batch) -> (loss, sums)` where `sums` are per-batch totals
(`{"loss": summed loss, "correct": ..., "count": ...}`) so epoch metrics are exact averages; under
data-parallel training the totals are summed across ranks first, so they are global ones.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_modules import metrics as M
from lightning_modules.clipping import GradientClipper
from lightning_modules.config import TrainSpec
from lightning_modules.data_info import DataInfo
from lightning_modules.datasets import dataset_of
from lightning_modules.models import FoldEnsemble, build_network
from lightning_modules.optim import build_optimizer, build_schedule


class RecurrentTask(pl.LightningModule):
    """Base LightningModule around a plain network built from (spec, data_info)."""

    def __init__(self, spec: dict[str, Any] | TrainSpec, data_info: DataInfo) -> None:
        super().__init__()
        # Plain dicts in the checkpoint so `load_from_checkpoint` needs no pickled classes.
        spec_dict = spec.model_dump() if isinstance(spec, TrainSpec) else spec
        self.save_hyperparameters({"spec": spec_dict, "data_info": data_info.dump()})
        self.spec = TrainSpec.model_validate(spec_dict)
        self.data_info = data_info
        self.net = self.build_net()
        o = self.spec.optim
        # Cross-validation: the fold models train in lockstep, each clipped on its own norm.
        self.clippers = [
            GradientClipper(o.grad_clip_algorithm, o.grad_clip, o.autoclip_percentile)
            for _ in self.members
        ]
        self.monitor, self.mode = M.DEFAULT_MONITOR[self.spec.task]
        self.diverged = False
        self.diverged_reason = ""  # e.g. "epoch 3: train_loss 123 > 5 x the first batch's loss 2.3"
        self.initial_loss: float | None = None  # the first training batch's loss (all ranks)
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self._epoch_start = time.perf_counter()

    @property
    def members(self) -> tuple[nn.Module, ...]:
        """The networks trained side by side: the k fold models, or the one network."""
        return tuple(self.net.members) if isinstance(self.net, FoldEnsemble) else (self.net,)

    @property
    def folds(self) -> int:
        return self.data_info.ensemble

    # -- to implement -------------------------------------------------------------------------
    def build_net(self) -> nn.Module:
        per_step = dataset_of(self.spec.data).per_step  # a target at every step
        return build_network(self.spec.model, self.spec.task, self.data_info, per_step)

    def batch_loss(
        self, batch, stage: str, net: nn.Module | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`net`: which network scores the batch (a fold model); default `self.net`."""
        raise NotImplementedError

    def epoch_metrics(self, stage: str, sums: dict[str, float]) -> dict[str, float]:
        """Turn summed totals into `{stage}_loss`, `{stage}_acc`, ... for one epoch."""
        return {f"{stage}_loss": sums["loss"] / sums["count"]}

    # -- accumulation -------------------------------------------------------------------------
    def _accumulate(self, stage: str, sums: dict[str, torch.Tensor]) -> None:
        acc = self._sums.setdefault(stage, {})
        for k, v in sums.items():
            v = v.detach()
            acc[k] = acc[k] + v if k in acc else v

    def _collect(self, stage: str, name: str | None = None) -> dict[str, float]:
        """The epoch metrics of the totals kept under `stage`, named `{name or stage}_...`."""
        totals = self._sums.pop(stage, {})
        if totals and self._world_size() > 1:
            totals = self._sum_across_ranks(totals)
        sums = {k: float(v) for k, v in totals.items()}
        return self.epoch_metrics(name or stage, sums) if sums.get("count") else {}

    def _world_size(self) -> int:
        """Data-parallel processes training this module (1 outside a Trainer, e.g. `evaluate`)."""
        return self._trainer.world_size if self._trainer is not None else 1

    def _sum_across_ranks(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = sorted(totals)  # the same order on every rank: one all-reduce for all totals
        stacked = torch.stack([totals[k].double() for k in keys])
        summed = self.trainer.strategy.reduce(stacked, reduce_op="sum")
        return dict(zip(keys, summed, strict=True))

    # -- Lightning hooks ----------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._sums.pop("train", None)
        zero = torch.zeros((), device=self.device)
        self._sums["clip"] = {"norm": zero, "clipped": zero, "steps": zero, "nonfinite": zero}

    def _fold_train_loss(self, batches) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One batch per fold model, each scored by its own model: the sum of their losses
        (the models share no parameter, so each gets its own gradient) and pooled totals."""
        losses, totals = [], {}
        for batch, net in zip(batches, self.members, strict=True):
            loss, sums = self.batch_loss(batch, "train", net)
            losses.append(loss)
            for k, v in sums.items():
                totals[k] = totals[k] + v if k in totals else v
        return torch.stack(losses).sum(), totals

    def training_step(self, batch, batch_idx: int):
        if self.folds > 1:
            loss, sums = self._fold_train_loss(batch)
        else:
            loss, sums = self.batch_loss(batch, "train")
        if self.initial_loss is None:  # once per run: every rank is at its first step here
            first = loss.detach().double() / self.folds  # one model's loss
            if self._world_size() > 1:
                first = self.trainer.strategy.reduce(first, reduce_op="mean")
            self.initial_loss = float(first)
        finite = torch.isfinite(loss)
        if self._world_size() > 1:
            # All ranks must skip the step together, or the others block in the gradient
            # all-reduce waiting for the rank that skipped.
            finite = self.trainer.strategy.reduce_boolean_decision(bool(finite), all=True)
        if not finite:
            # A NaN/inf loss: end the run as diverged instead of stepping on garbage.
            self._diverge(f"epoch {self.current_epoch + 1}: the training loss became {loss:.3g}")
            return None
        self._accumulate("train", sums)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        # Each model clipped on its own norm; k fold models: their mean norm, clipped if any was
        stats = [
            clip(net.parameters()) for clip, net in zip(self.clippers, self.members, strict=True)
        ]
        norm, clipped = stats[0]
        if len(stats) > 1:
            norm = torch.stack([n.float() for n, _ in stats]).mean()
            clipped = torch.stack([c.bool() for _, c in stats]).any()
        c = self._sums["clip"]
        # Kept on the device: no host sync per step.
        c["norm"] = c["norm"] + norm.detach().to(c["norm"].device)
        c["clipped"] = c["clipped"] + clipped.detach().to(c["norm"].device).float()
        c["steps"] = c["steps"] + 1
        c["nonfinite"] = c["nonfinite"] + (~torch.isfinite(norm.detach())).to(c["norm"].device)

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.folds > 1:  # (x, lengths, y, fold): scored by the model trained without it
            *batch, fold = batch
            _, sums = self.batch_loss(batch, "val", self.members[int(fold)])
            self._accumulate(f"val_fold{int(fold)}", sums)
            return
        _, sums = self.batch_loss(batch, "val")
        self._accumulate("val", sums)

    def test_step(self, batch, batch_idx: int) -> None:
        _, sums = self.batch_loss(batch, "test")
        self._accumulate("test", sums)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._sums.pop("val", None)
            return
        # Train metrics are complete when end-of-epoch validation runs, so everything for the
        # epoch is logged at once: one report per epoch for loggers, Tune and early stopping.
        logs = {**self._collect_val(), **self._collect("train")}
        clip = self._sums.get("clip")
        if clip is not None and clip["steps"] > 0:
            logs[M.GRAD_NORM] = float(clip["norm"] / clip["steps"])
            logs[M.CLIP_FRAC] = float(clip["clipped"] / clip["steps"])
        if self.trainer.optimizers:
            logs[M.LR] = self.trainer.optimizers[0].param_groups[0]["lr"]
        logs[M.EPOCH_TIME_S] = time.perf_counter() - self._epoch_start
        if not self.diverged:
            self._check_divergence(logs, clip)
        if self.diverged:
            logs = {k: (math.nan if k.startswith("val_") else v) for k, v in logs.items()}
        # The metrics are global already (totals summed across ranks); sync_dist says so to
        # Lightning and averages what differs per rank (epoch_time_s).
        sync = self._world_size() > 1
        for key, value in logs.items():
            prog_bar = key in (M.TRAIN_LOSS, M.VAL_LOSS, self.monitor)
            self.log(key, value, prog_bar=prog_bar, sync_dist=sync)

    def _collect_val(self) -> dict[str, float]:
        """The epoch's validation metrics; for folds each one's mean over the fold models, with
        its sd and per-fold values (`lightning_modules.metrics.fold_metrics`)."""
        if self.folds == 1:
            return self._collect("val")
        per_fold = [self._collect(f"val_fold{i}", "val") for i in range(self.folds)]
        if not all(per_fold):
            return {}
        out: dict[str, float] = {}
        for name in per_fold[0]:
            out.update(M.fold_metrics(name, [f[name] for f in per_fold]))
        return out

    def _diverge(self, reason: str) -> None:
        self.diverged, self.diverged_reason = True, reason
        self.trainer.should_stop = True

    def _check_divergence(self, logs: dict[str, float], clip: dict | None) -> None:
        """A finite explosion ends the run too: a non-finite gradient norm, or an epoch's mean
        training loss above `trainer.divergence_factor` x the first batch's loss (the loss of
        the untrained network: a run that is learning stays below it, one that blew up is far
        above it whatever the loss's scale). Every rank decides the same: both are global."""
        epoch = self.current_epoch + 1
        if clip is not None and clip["nonfinite"] > 0:
            steps = int(clip["nonfinite"])
            self._diverge(f"epoch {epoch}: the gradient norm was NaN/inf in {steps} steps")
            return
        factor, train = self.spec.trainer.divergence_factor, logs.get(M.TRAIN_LOSS)
        first = self.initial_loss
        if factor is None or train is None or first is None or first <= 0:
            return
        if not math.isfinite(train) or train > factor * first:
            self._diverge(
                f"epoch {epoch}: {M.TRAIN_LOSS} {train:.4g} > {factor:g} x the first batch's "
                f"loss {first:.4g} (trainer.divergence_factor)"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rnntune_initial_loss"] = self.initial_loss  # a resumed run keeps its baseline

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.initial_loss = checkpoint.get("rnntune_initial_loss", self.initial_loss)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._collect("test"))

    @torch.no_grad()
    def evaluate(self, batches, stage: str = "test") -> dict[str, float]:
        """Exact metrics over an iterable of batches, without a Trainer (driver-side testing)."""
        self.eval()
        self._sums.pop(stage, None)
        if stage == "test":
            self.on_test_epoch_start()
        for batch in batches:
            _, sums = self.batch_loss(batch, stage)
            self._accumulate(stage, sums)
        return self._collect(stage)

    def configure_optimizers(self):
        opt = build_optimizer(self.parameters(), self.spec.optim)
        sched = build_schedule(
            opt, self.spec.optim, self.spec.trainer.max_epochs, self.monitor, self.mode
        )
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
