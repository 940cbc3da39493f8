"""Per-step cost of our Lightning training path against a hand-written PyTorch loop.

Same model, data, batches and optimizer on both sides. The raw loop does forward,
cross-entropy (or MSE), backward, `clip_grad_norm_` and `step`; the Lightning side runs our
`RecurrentTask` (which also accumulates epoch sums and clipping statistics on every step) in a
Trainer built like `lightning_modules.training.build_trainer`, minus logger, progress bar and
checkpointing. Only training epochs are timed (validation is off on both sides); each run's
first epoch is a warm-up and is dropped. Runs alternate raw/Lightning in ABBA order so drift
from other processes on the shared cores hits both alike.

    .venv/bin/python bench/train_overhead.py               # ~1 min on 2 cores
    .venv/bin/python bench/train_overhead.py --smoke-test  # seconds

On a shared 2-core machine set OMP_WAIT_POLICY=PASSIVE: with 2 torch threads and another busy
process, OpenMP's spin-waiting makes small RNN kernels 50-100x slower (measured here).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.nn.utils import clip_grad_norm_

from lightning_modules.config import TrainSpec, load_train_spec
from lightning_modules.data import build_data, build_datamodule
from lightning_modules.data.base import SequenceData, TensorBatches
from lightning_modules.models import SequenceModel, encoder_kwargs
from lightning_modules.optim import build_optimizer
from lightning_modules.training import TASK_MODULES, data_info

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_RATIO = 1.05  # Lightning may cost at most 5% more per step than the raw loop
WARMUP_EPOCHS = 1

# MNIST-1D, bidirectional GRU-64 on final states, Adam 3e-3, batch 100, clip norm 1.0.
DEFAULT_SPEC = {
    "data": {"name": "mnist1d"},
    "model": {"cell_type": "gru", "hidden_size": 64, "bidirectional": True, "readout": "last"},
    "optim": {"optimizer": "adam", "lr": 3e-3, "batch_size": 100, "grad_clip": 1.0},
    "trainer": {"threads": 2, "seed": 0, "diagnostics": False},
}
SMOKE_DATA = {"name": "mnist1d", "num_samples": 500, "limit": 300}  # 3 steps per epoch


def raw_step_times(spec: TrainSpec, data: SequenceData, epochs: int) -> list[float]:
    """Seconds per step of each epoch of a plain PyTorch loop."""
    o = spec.optim
    torch.manual_seed(spec.trainer.seed)
    net = SequenceModel(
        data.input_size,
        data.out_features,
        readout=spec.model.readout,
        seq_len=data.seq_len,
        **encoder_kwargs(spec.model),
    )
    opt = build_optimizer(net.parameters(), o)
    loss_fn = F.cross_entropy if spec.task == "classification" else F.mse_loss
    batches = TensorBatches(data.train, o.batch_size, shuffle=True, seed=spec.trainer.seed)
    times = []
    for _ in range(epochs):
        net.train()
        start, steps = time.perf_counter(), 0
        for x, lengths, y in batches:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x, lengths), y)
            loss.backward()
            if o.grad_clip is not None:
                clip_grad_norm_(net.parameters(), o.grad_clip)
            opt.step()
            steps += 1
        times.append((time.perf_counter() - start) / steps)
    return times


class _EpochTimer(pl.Callback):
    """Seconds per optimizer step of each training epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0
        self._step0 = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        steps = trainer.global_step - self._step0
        self.times.append((time.perf_counter() - self._start) / max(steps, 1))


def lightning_step_times(
    spec: TrainSpec, data: SequenceData, epochs: int, workdir: Path
) -> list[float]:
    """Seconds per step of each epoch through our LightningModule and a Lightning Trainer."""
    t = spec.trainer
    torch.manual_seed(t.seed)
    module = TASK_MODULES[spec.task](spec, data_info(data))
    dm = build_datamodule(spec.data, data, spec.optim.batch_size, t.seed)
    timer = _EpochTimer()
    # build_trainer's arguments, with no logger, progress bar, checkpoint or validation.
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=t.accelerator,
        devices=1,
        precision=t.precision,
        logger=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        default_root_dir=str(workdir),
    )
    trainer.fit(module, datamodule=dm)
    return timer.times


def measure(spec: TrainSpec, rounds: int, epochs: int) -> dict:
    """Alternate raw and Lightning runs (ABBA) and summarise per-step times."""
    data = build_data(spec.data, spec.trainer.seed)
    steps_per_epoch = len(TensorBatches(data.train, spec.optim.batch_size, shuffle=False))
    runs: dict[str, list[float]] = {"raw": [], "lightning": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = ("raw", "lightning") if r % 2 == 0 else ("lightning", "raw")
            for kind in order:
                if kind == "raw":
                    times = raw_step_times(spec, data, epochs)
                else:
                    times = lightning_step_times(spec, data, epochs, Path(tmp))
                runs[kind].extend(times[WARMUP_EPOCHS:])
    raw, light = statistics.median(runs["raw"]), statistics.median(runs["lightning"])
    return {
        "raw_step_ms": raw * 1e3,
        "lightning_step_ms": light * 1e3,
        "ratio": light / raw,
        "goal_ratio": GOAL_RATIO,
        "meets_goal": light / raw <= GOAL_RATIO,
        "steps_per_epoch": steps_per_epoch,
        "measured_epochs_per_path": len(runs["raw"]),
        "measured_steps_per_path": len(runs["raw"]) * steps_per_epoch,
        "epoch_step_ms": {k: [round(v * 1e3, 4) for v in vs] for k, vs in runs.items()},
    }


def print_table(res: dict) -> None:
    print(f"{'path':<10} {'median_ms':>10} {'min_ms':>8} {'max_ms':>8} {'epochs':>6}")
    for kind in ("raw", "lightning"):
        ms = res["epoch_step_ms"][kind]
        print(
            f"{kind:<10} {res[kind + '_step_ms']:>10.3f} {min(ms):>8.3f} {max(ms):>8.3f} {len(ms):>6}"
        )
    verdict = "OK" if res["meets_goal"] else "OVER GOAL"
    print(
        f"ratio lightning/raw = {res['ratio']:.3f} (goal <= {res['goal_ratio']}): {verdict}; "
        f"{res['steps_per_epoch']} steps/epoch, {res['measured_steps_per_path']} measured steps/path"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, help="TrainSpec YAML to time instead of the default")
    p.add_argument("--rounds", type=int, default=4, help="raw+Lightning pairs, ABBA order")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run, the first is warm-up")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--smoke-test", action="store_true", help="tiny data, 2 rounds of 2 epochs")
    p.add_argument("--out", type=Path, default=RESULTS / "train_overhead.json")
    args = p.parse_args(argv)
    if args.epochs <= WARMUP_EPOCHS:
        p.error(f"--epochs: must be > {WARMUP_EPOCHS} (the first epoch is warm-up)")

    spec = load_train_spec(args.spec) if args.spec else TrainSpec.model_validate(DEFAULT_SPEC)
    if spec.task == "language_model":
        p.error("--spec: language-model specs are not supported (no TensorBatches)")
    rounds, epochs = (2, 2) if args.smoke_test else (args.rounds, args.epochs)
    if args.smoke_test:
        spec = TrainSpec.model_validate({**spec.model_dump(), "data": SMOKE_DATA})
    spec = spec.with_params({"threads": args.threads, "max_epochs": epochs})
    torch.set_num_threads(args.threads)
    for name in ("pytorch_lightning", "lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13

    load_before = os.getloadavg()
    res = measure(spec, rounds, epochs)
    out = {
        "benchmark": "train_overhead",
        "smoke_test": args.smoke_test,
        **res,
        "rounds": rounds,
        "epochs_per_run": epochs,
        "warmup_epochs": WARMUP_EPOCHS,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_1m": {"before": load_before[0], "after": os.getloadavg()[0]},
        "config": spec.model_dump(),
        "versions": {
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "python": sys.version.split()[0],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print_table(res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
