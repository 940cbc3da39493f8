"""Reference configurations trained through `train()` and compared with published numbers.

Each entry is a `TrainSpec` (2 threads, diagnostics on) with the number it should reproduce:
the MNIST-1D paper's GRU (Greydanus 2020), the seed's row-MNIST LSTM and BiLSTM, and the adding
problem at T=200 for a tanh RNN, an LSTM and a GRU (Hochreiter & Schmidhuber 1997: gated cells
carry the gradient across 200 steps, a tanh RNN's vanishes and it stays at the mean predictor).
Reference numbers are the papers' or our own raw-PyTorch measurements (2 threads, 2 cores).

    .venv/bin/python bench/reproduce.py                        # all entries, several minutes
    .venv/bin/python bench/reproduce.py --only adding200_lstm  # one entry
    .venv/bin/python bench/reproduce.py --smoke-test           # 1 epoch each, tiny data

On a shared 2-core machine set OMP_WAIT_POLICY=PASSIVE (see bench/train_overhead.py): times
are otherwise meaningless whenever another process is busy.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_modules.config import TrainSpec
from lightning_modules.data import build_data
from lightning_modules.datasets import DataConfig
from lightning_modules.training import train

RESULTS = Path(__file__).resolve().parent / "results"
ADDING_BASELINE_MSE = 1 / 6  # Var(U1 + U2): the MSE of always predicting the mean, 1.0
SOLVED_MSE = 0.05  # "solved": test MSE under ~30% of the mean predictor's


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    data: dict
    model: dict
    optim: dict
    metric: str  # test metric reported by train(): test_acc, or test_loss (MSE) for adding
    reference: float | None
    reference_note: str
    smoke_data: dict = field(default_factory=dict)
    """Data overrides for --smoke-test (tiny splits)."""
    max_epochs: int | None = None
    target_steps: int | None = None
    """Epochs are chosen to reach about this many optimizer steps (instead of max_epochs)."""

    def spec(self, epochs: int, seed: int, smoke: bool) -> TrainSpec:
        data = {**self.data, **self.smoke_data} if smoke else self.data
        return TrainSpec.model_validate(
            {
                "data": data,
                "model": self.model,
                "optim": self.optim,
                "trainer": {"max_epochs": epochs, "seed": seed, "threads": 2, "diagnostics": True},
            }
        )


def _adding(cell: str, reference: float, note: str) -> Entry:
    return Entry(
        name=f"adding200_{cell}",
        description=f"adding problem T=200, {cell} hidden 32, Adam 1e-2, clip norm 1, batch 50",
        data={"name": "adding", "seq_len": 200, "n_train": 10000, "n_val": 1000, "n_test": 1000},
        model={"cell_type": cell, "hidden_size": 32, "readout": "last"},
        optim={
            "optimizer": "adam",
            "lr": 1e-2,
            "batch_size": 50,
            "grad_clip": 1.0,
            "grad_clip_algorithm": "norm",
        },
        metric="test_loss",
        reference=reference,
        reference_note=note + f"; mean predictor {ADDING_BASELINE_MSE:.3f}",
        smoke_data={"n_train": 200, "n_val": 100, "n_test": 100},
        target_steps=2000,  # 200 steps/epoch -> 10 epochs
    )


ENTRIES = [
    Entry(
        name="mnist1d_gru_paper",
        description="MNIST-1D paper's GRU: bidirectional hidden 6, linear over all 40 outputs",
        data={"name": "mnist1d"},
        model={
            "cell_type": "gru",
            "hidden_size": 6,
            "bidirectional": True,
            "readout": "linear_all",
        },
        optim={"optimizer": "adam", "lr": 1e-2, "batch_size": 100},
        metric="test_acc",
        reference=0.91,
        reference_note="paper 91% (8000 steps); STACK.md raw PyTorch 92.3% in 137 s",
        smoke_data={"num_samples": 500, "limit": 200},
        target_steps=8000,
    ),
    Entry(
        name="mnist_rows_lstm2",
        description="seed's row-MNIST 2-layer LSTM-128, dropout 0.5, Adam 1e-3, batch 128",
        data={"name": "mnist_rows"},
        model={"cell_type": "lstm", "num_layers": 2, "hidden_size": 128, "dropout": 0.5},
        optim={"optimizer": "adam", "lr": 1e-3, "batch_size": 128},
        metric="test_acc",
        reference=0.945,
        reference_note="~94-95% (STACK.md, 5k real MNIST, 30 epochs, 42 s)",
        smoke_data={"limit": 256},
        max_epochs=30,
    ),
    Entry(
        name="mnist_rows_bilstm",
        description="seed's row-MNIST bidirectional LSTM-128, Adam 1e-3, batch 128",
        data={"name": "mnist_rows"},
        model={"cell_type": "lstm", "hidden_size": 128, "bidirectional": True},
        optim={"optimizer": "adam", "lr": 1e-3, "batch_size": 128},
        metric="test_acc",
        reference=None,
        reference_note="no published number; compare with the 2-layer LSTM's ~94-95%",
        smoke_data={"limit": 256},
        max_epochs=30,
    ),
    _adding("rnn_tanh", ADDING_BASELINE_MSE, "fails (STACK.md): stays at the mean predictor"),
    _adding("lstm", 0.001, "STACK.md: 0.001 after 1,800 steps"),
    _adding("gru", 0.003, "STACK.md: 0.003 after 400 steps"),
]
BY_NAME = {e.name: e for e in ENTRIES}


@functools.cache
def _train_size(data: DataConfig, seed: int) -> int:
    return len(build_data(data, seed).train)


def steps_per_epoch(spec: TrainSpec) -> int:
    return math.ceil(_train_size(spec.data, spec.trainer.seed) / spec.optim.batch_size)


def grad_summary(norms: list[float]) -> dict | None:
    """||dL/dh_t|| over t: how much of the loss's gradient reaches the first step."""
    if not norms:
        return None
    return {
        "steps": len(norms),
        "first": norms[0],
        "last": norms[-1],
        "ratio_first_last": norms[0] / norms[-1] if norms[-1] > 0 else None,
        "min": min(norms),
        "max": max(norms),
    }


def run_entry(entry: Entry, seed: int, smoke: bool, runs_dir: Path) -> dict:
    probe = entry.spec(1, seed, smoke)
    per_epoch = steps_per_epoch(probe)
    if smoke:
        epochs = 1
    elif entry.target_steps:
        epochs = math.ceil(entry.target_steps / per_epoch)
    else:
        epochs = entry.max_epochs or probe.trainer.max_epochs
    spec = entry.spec(epochs, seed, smoke)
    start = time.perf_counter()
    res = train(spec, runs_dir / entry.name, enable_progress_bar=False)
    return {
        "name": entry.name,
        "description": entry.description,
        "metric": entry.metric,
        "ours": res.test.get(entry.metric),
        "reference": entry.reference,
        "reference_note": entry.reference_note,
        "status": res.status,
        "epochs": res.epochs,
        "steps_per_epoch": per_epoch,
        "steps": res.epochs * per_epoch,
        "best_val": res.best_val,
        "test": res.test,
        "train_time_s": res.train_time_s,
        "wall_s": round(time.perf_counter() - start, 3),
        "grad_norms_over_time": grad_summary(res.grad_norms_over_time),
        "spec": spec.model_dump(),
    }


def adding_claim(rows: list[dict]) -> dict | None:
    """The vanishing-gradient claim: LSTM and GRU solve T=200, the tanh RNN does not."""
    mse = {r["name"].removeprefix("adding200_"): r.get("ours") for r in rows}
    if not all(isinstance(mse.get(c), float) for c in ("rnn_tanh", "lstm", "gru")):
        return None
    solved = {c: mse[c] < SOLVED_MSE for c in ("rnn_tanh", "lstm", "gru")}
    return {
        "baseline_mse": ADDING_BASELINE_MSE,
        "solved_below_mse": SOLVED_MSE,
        "solved": solved,
        "holds": solved["lstm"] and solved["gru"] and not solved["rnn_tanh"],
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def print_table(rows: list[dict], claim: dict | None) -> None:
    print(f"{'name':<20} {'metric':<10} {'ours':>8} {'reference':>9} {'time_s':>8}  status")
    for r in rows:
        time_s = r.get("train_time_s")
        print(
            f"{r['name']:<20} {r['metric']:<10} {_fmt(r.get('ours')):>8} "
            f"{_fmt(r['reference']):>9} {'n/a' if time_s is None else f'{time_s:.1f}':>8}  "
            f"{r['status']}"
        )
    for r in rows:
        g = r.get("grad_norms_over_time")
        if r["name"].startswith("adding") and g and g["ratio_first_last"] is not None:
            print(f"{r['name']}: ||dL/dh_0|| / ||dL/dh_T-1|| = {g['ratio_first_last']:.3g}")
    if claim is not None:
        verdict = "holds" if claim["holds"] else "does NOT hold"
        print(
            f"adding T=200 claim (LSTM, GRU < {SOLVED_MSE} MSE; tanh RNN not; "
            f"mean predictor {ADDING_BASELINE_MSE:.3f}): {verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this entry (repeatable): {', '.join(BY_NAME)}",
    )
    p.add_argument("--smoke-test", action="store_true", help="1 epoch each on tiny data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--runs-dir",
        type=Path,
        help="keep each run's checkpoint, config and plots here (default: a temp dir)",
    )
    p.add_argument("--out", type=Path, help="JSON path (default: bench/results/reproduce*.json)")
    args = p.parse_args(argv)
    unknown = [n for n in args.only or [] if n not in BY_NAME]
    if unknown:
        p.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    entries = [BY_NAME[n] for n in args.only] if args.only else ENTRIES
    out = args.out or RESULTS / (
        f"reproduce_{'_'.join(args.only)}.json" if args.only else "reproduce.json"
    )
    for name in ("pytorch_lightning", "lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13

    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs_dir or Path(tmp)
        for entry in entries:
            print(f"--- {entry.name}: {entry.description}", flush=True)
            try:
                rows.append(run_entry(entry, args.seed, args.smoke_test, runs_dir))
            except Exception as e:  # record it, keep going, exit non-zero at the end
                traceback.print_exc()
                failed = True
                rows.append(
                    {
                        "name": entry.name,
                        "metric": entry.metric,
                        "ours": None,
                        "reference": entry.reference,
                        "status": f"error: {e!r}",
                    }
                )
            claim = adding_claim(rows)
            result = {
                "benchmark": "reproduce",
                "smoke_test": args.smoke_test,
                "seed": args.seed,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "loadavg_1m": {"before": load_before, "now": os.getloadavg()[0]},
                "entries": rows,
                "adding_claim": claim,
                "versions": {
                    "torch": torch.__version__,
                    "pytorch_lightning": pl.__version__,
                    "python": sys.version.split()[0],
                },
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2))  # after every entry: partial runs count
    print_table(rows, claim)
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
