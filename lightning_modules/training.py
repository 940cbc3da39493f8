"""One training run from a `TrainSpec`: data, model, Lightning Trainer, test on the best checkpoint.

Tune trials call `train` too, adding their report callback; `rnntune train` calls it directly.
Multi-worker trials pass a data-parallel `strategy` and `plugins` (Ray's DDP for Lightning).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.strategies import Strategy

from lightning_modules.base import RecurrentTask
from lightning_modules.classifier import IGNORE, SequenceClassifier
from lightning_modules.config import TrainerConfig, TrainSpec
from lightning_modules.data import build_data, build_datamodule
from lightning_modules.data.base import SequenceData
from lightning_modules.data.identity import data_digest
from lightning_modules.data_info import DataInfo
from lightning_modules.diagnostics import gradient_norms_over_time, plot_gradient_norms
from lightning_modules.language_model import CharLanguageModel
from lightning_modules.regressor import SequenceRegressor

TASK_MODULES: dict[str, type[RecurrentTask]] = {
    "classification": SequenceClassifier,
    "regression": SequenceRegressor,
    "language_model": CharLanguageModel,
}


@dataclass
class TrainResult:
    status: str  # completed | early_stopped | time_limit | diverged
    epochs: int
    monitor: str
    best_val: float | None
    test: dict[str, float]
    checkpoint: str | None
    output_dir: str
    train_time_s: float
    data_fingerprint: str
    history: list[dict[str, float]] = field(default_factory=list)
    grad_norms_over_time: list[float] = field(default_factory=list)
    diverged_reason: str = ""


def data_info(data: SequenceData) -> DataInfo:
    return DataInfo.from_data(
        data.input_size, data.out_features, data.seq_len, data.extras, data.ensemble
    )


class _History(pl.Callback):
    """Keeps each epoch's logged metrics (for the result file and plots)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.rows.append({"epoch": trainer.current_epoch, **row})


def _diagnose(module: RecurrentTask, data: SequenceData, out_dir: Path) -> list[float]:
    """||dL/dh_t|| over t on (up to) 64 validation sequences; JSON + PNG in `out_dir`."""
    net = module.members[0].cpu()  # of a fold ensemble, the first fold's model
    split = data.val
    if module.spec.task == "language_model":
        rows = max(1, min(64, len(split.x) // data.seq_len))
        windows = split.x[: rows * data.seq_len].view(rows, data.seq_len)
        x, y = windows[:, :-1], windows[:, -1]  # predict each window's last character
        norms = gradient_norms_over_time(net, x, lambda p: F.cross_entropy(p[:, -1], y))
    else:
        head = split.head(64)
        x, y = head.x, head.y
        if module.spec.task == "classification":

            def loss_fn(p):
                return F.cross_entropy(p.flatten(0, -2), y.flatten(), ignore_index=IGNORE)
        else:

            def loss_fn(p):
                return F.mse_loss(p, y)

        norms = gradient_norms_over_time(net, x, loss_fn)
    (out_dir / "grad_norms_over_time.json").write_text(json.dumps(norms))
    m = module.spec.model
    title = f"{m.cell_type} x{m.num_layers} h={m.hidden_size}: gradient reaching step t"
    plot_gradient_norms(norms, out_dir / "grad_norms_over_time.png", title)
    return norms


def build_trainer(
    spec: TrainSpec,
    output_dir: Path,
    callbacks: list[pl.Callback],
    logger=True,
    enable_progress_bar: bool = True,
    enable_checkpointing: bool = True,
    strategy: Strategy | str = "auto",
    plugins: list | None = None,
) -> pl.Trainer:
    """One process on one device, unless `strategy` spreads the run (then its environment does)."""
    t = spec.trainer
    return pl.Trainer(
        max_epochs=t.max_epochs,
        max_time=timedelta(seconds=t.max_time_s) if t.max_time_s else None,
        accelerator=t.accelerator,
        devices=1 if strategy == "auto" else "auto",
        strategy=strategy,
        plugins=plugins,
        precision=t.precision,
        logger=pl.loggers.CSVLogger(str(output_dir), name="logs", version="")
        if logger is True
        else logger,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_checkpointing=enable_checkpointing,
        log_every_n_steps=1,  # we log per epoch only; this silences a warning for short epochs
        enable_progress_bar=enable_progress_bar,
        default_root_dir=str(output_dir),
    )


def train(
    spec: TrainSpec,
    output_dir: str | Path,
    callbacks: list[pl.Callback] | None = None,
    logger=True,
    enable_progress_bar: bool = True,
    run_test: bool = True,
    ckpt_path: str | None = None,
    save_checkpoints: bool = True,
    strategy: Strategy | str = "auto",
    plugins: list | None = None,
    prepare: Callable[[pl.Trainer], pl.Trainer] | None = None,
) -> TrainResult:
    """Train, keep the best checkpoint by the task's validation metric, test it, save everything.

    `ckpt_path` resumes from a Lightning checkpoint; `save_checkpoints=False` leaves keeping
    checkpoints to the caller's callbacks (Tune), and skips the test and diagnostics.
    `strategy`/`plugins` go to the Lightning Trainer, which `prepare` may then adjust.
    """
    out, t = _start(spec, output_dir), spec.trainer
    data = build_data(spec.data, t.seed)
    dm = build_datamodule(spec.data, data, spec.optim.batch_size, t.seed)
    module = TASK_MODULES[spec.task](spec, data_info(data))
    ckpt, history, cbs = _callbacks(spec, module, out, save_checkpoints, callbacks)
    trainer = build_trainer(
        spec, out, cbs, logger, enable_progress_bar, save_checkpoints, strategy, plugins
    )
    if prepare is not None:
        trainer = prepare(trainer)

    start = time.perf_counter()
    # ckpt_path resumes a run; checkpoints hold only tensors and plain data (hyperparameters are
    # dicts), so they load without unpickling code even from shared storage.
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    elapsed = time.perf_counter() - start
    epochs = max(len(history.rows), trainer.current_epoch)
    status = _status(module, t, elapsed, epochs)
    best = ckpt.best_model_score
    best_val = float(best) if best is not None and math.isfinite(float(best)) else None
    test, norms = {}, []
    if status != "diverged" and ckpt.best_model_path:  # on the best weights
        test = _test(trainer, module, dm, ckpt.best_model_path) if run_test else {}
        norms = _diagnose(load_module(ckpt.best_model_path), data, out) if t.diagnostics else []
    result = TrainResult(
        status=status,
        epochs=epochs,
        monitor=module.monitor,
        best_val=best_val,
        test=test,
        checkpoint=ckpt.best_model_path or None,
        output_dir=str(out),
        train_time_s=round(elapsed, 3),
        data_fingerprint=data_digest(spec.data),
        history=history.rows,
        grad_norms_over_time=norms,
        diverged_reason=module.diverged_reason,
    )
    saved = {**asdict(result), "versions": _versions()}
    (out / "result.json").write_text(json.dumps(saved, indent=2))
    return result


def _start(spec: TrainSpec, output_dir: str | Path) -> Path:
    """Seeds, threads, and the resolved spec saved in the run's folder (returned)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(spec.trainer.seed, workers=True, verbose=False)
    if spec.trainer.threads:
        torch.set_num_threads(spec.trainer.threads)
    (out / "config.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    return out


def _callbacks(
    spec: TrainSpec,
    module: RecurrentTask,
    out: Path,
    save_checkpoints: bool,
    extra: list[pl.Callback] | None,
) -> tuple[ModelCheckpoint, _History, list[pl.Callback]]:
    """(the best-checkpoint keeper, the epoch history, every callback of the Trainer)."""
    monitor, mode = module.monitor, module.mode
    # A refit (`data.validation: none`) holds nothing out: its last epoch is the model
    refit = getattr(spec.data, "validation", None) == "none"
    ckpt = ModelCheckpoint(
        dirpath=str(out / "checkpoints"),
        filename="best",
        monitor=None if refit else monitor,
        mode=mode,
    )
    history = _History()
    cbs = [ckpt] if save_checkpoints else []
    cbs += [history, *(extra or [])]
    patience = spec.trainer.patience
    if patience and not refit:
        cbs.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience, check_finite=True))
    return ckpt, history, cbs


def _test(trainer: pl.Trainer, module: RecurrentTask, dm, best_path: str) -> dict[str, float]:
    """The test split's metrics on the best checkpoint's weights."""
    res = trainer.test(module, datamodule=dm, ckpt_path=best_path, verbose=False, weights_only=True)
    return {k: float(v) for k, v in res[0].items()} if res else {}


def _status(module: RecurrentTask, t: TrainerConfig, elapsed: float, epochs: int) -> str:
    if module.diverged:
        return "diverged"
    if t.max_time_s and elapsed >= t.max_time_s:
        return "time_limit"
    if epochs < t.max_epochs:
        return "early_stopped"
    return "completed"


def _versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "python": sys.version.split()[0],
    }


def load_module(checkpoint: str | Path) -> RecurrentTask:
    """Rebuild the trained LightningModule (and its plain `.net`) from a checkpoint file."""
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)  # no code runs on load
    spec = TrainSpec.model_validate(raw["hyper_parameters"]["spec"])
    cls = TASK_MODULES[spec.task]
    info = DataInfo.load(raw["hyper_parameters"].get("data_info"), f"checkpoint {checkpoint}")
    module = cls(spec, info)
    module.load_state_dict(raw["state_dict"])
    return module.eval()
