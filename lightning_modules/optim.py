"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from lightning_modules.config import OptimConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    wd = cfg.weight_decay
    match cfg.optimizer:
        case "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd)
        case "momentum":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)
        case "nesterov":
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=wd
            )
        case "adagrad":
            return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=wd)
        case "adadelta":
            return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=wd)
        case "rmsprop":
            return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)
        case "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)
        case "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd)
    raise ValueError(f"optimizer: unknown {cfg.optimizer!r}")


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_epochs: int, monitor: str, mode: str
) -> dict | None:
    """A Lightning `lr_scheduler` config stepped once per epoch, or None."""
    match cfg.lr_schedule:
        case "none":
            return None
        case "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
        case "step":
            sched = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step_epochs, cfg.lr_gamma)
        case "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=cfg.lr_gamma, patience=2
            )
            return {"scheduler": sched, "interval": "epoch", "monitor": monitor}
    return {"scheduler": sched, "interval": "epoch"}
