"""Large user data: does a trial's memory stay flat as the Parquet dataset grows, and does
streaming it cost training speed?

Generates two Parquet datasets of ragged sequences (lengths 50-150, 8 features, 3 classes;
~100 MB and ~2 GB by default) and runs a trial on each in a fresh process: the `sequences`
dataset with `reader: stream` (row groups read, preprocessed and padded in a DataLoader worker),
GRU-64 on one torch thread, `--steps` training steps. Peak memory counts the trial's whole
process tree (the trainer and its loader worker) as PSS, so pages the forked worker shares with
the trainer count once; sampled every 50 ms. Step time is the wall time
between consecutive training steps (so it includes any wait for data), median over the steps
after a warm-up; the baseline runs the same 100 MB data loaded as in-memory tensors
(`reader: memory`) in the same invocation, at the same time on the other core (this VM's speed
drifts more than the difference to measure). Memory is measured in runs alone.

    .venv/bin/python bench/data_scale.py                 # ~6 min on 2 cores, ~2.2 GB of disk
    .venv/bin/python bench/data_scale.py --smoke-test    # seconds

Goals (issue 10): peak RSS on ~2 GB within 25% of ~100 MB; streamed step time within 1.1x of
in-memory tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
FEATURES, MIN_T, MAX_T = 8, 50, 150
ROW_GROUP = 4096
WARMUP_STEPS = 20


def generate(path: Path, megabytes: float, seed: int = 0) -> dict:
    """A Parquet file of ~`megabytes` MB: `sequence` list<list<float32>>, string `label`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    row_bytes = (MIN_T + MAX_T) / 2 * FEATURES * 4
    rows = int(megabytes * 1e6 / row_bytes)
    schema = pa.schema([("sequence", pa.list_(pa.list_(pa.float32()))), ("label", pa.string())])
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            lengths = rng.integers(MIN_T, MAX_T + 1, n)
            label = rng.integers(0, 3, n)
            steps = int(lengths.sum())
            t = np.concatenate([np.arange(k) for k in lengths])
            freq = np.repeat(np.array([0.1, 0.3, 0.6])[label], lengths)
            values = np.sin(freq[:, None] * t[:, None] + rng.standard_normal((steps, FEATURES)))
            values = (values + 0.3 * rng.standard_normal((steps, FEATURES))).astype(np.float32)
            inner = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), FEATURES)
            inner = pa.ListArray.from_arrays(
                pa.array(np.arange(steps + 1, dtype=np.int32) * FEATURES), inner.flatten()
            )
            outer = pa.ListArray.from_arrays(
                pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), inner
            )
            names = pa.array(np.array(["walk", "run", "cycle"])[label])
            writer.write_table(pa.table({"sequence": outer, "label": names}, schema=schema))
    return {"rows": rows, "bytes": path.stat().st_size}


def trial(url: str, reader: str, steps: int, out: Path) -> None:
    """One trial's training (in this process): build data, fit `steps` steps, time each."""
    import pytorch_lightning as pl
    import torch

    from lightning_modules.config import TrainSpec
    from lightning_modules.data import build_data, build_datamodule
    from lightning_modules.training import TASK_MODULES, data_info

    torch.set_num_threads(1)
    spec = TrainSpec.model_validate(
        {
            "data": {"name": "sequences", "url": url, "reader": reader},
            "model": {"cell_type": "gru", "hidden_size": 64},
            "optim": {"lr": 3e-3, "batch_size": 64, "grad_clip": 1.0},
            "trainer": {"threads": 1, "diagnostics": False},
        }
    )
    start = time.perf_counter()
    data = build_data(spec.data, seed=0)
    build_s = time.perf_counter() - start
    dm = build_datamodule(spec.data, data, spec.optim.batch_size, seed=0)
    module = TASK_MODULES[spec.task](spec, data_info(data))
    marks: list[float] = []
    starts: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            starts.append(time.perf_counter())

        def on_train_batch_end(self, *args) -> None:
            marks.append(time.perf_counter())

    trainer = pl.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    gaps = np.diff(marks[WARMUP_STEPS:])
    # compute: batch start -> end; wait: the previous end -> this start (fetching the batch)
    compute = np.array(marks[WARMUP_STEPS:]) - np.array(starts[WARMUP_STEPS:])
    wait = np.array(starts[WARMUP_STEPS + 1 :]) - np.array(marks[WARMUP_STEPS:-1])
    out.write_text(
        json.dumps(
            {
                "build_s": build_s,
                "step_ms": 1000 * float(np.median(gaps)),
                "compute_ms": 1000 * float(np.median(compute)),
                "wait_ms": 1000 * float(np.mean(wait)),
                "train_rows": len(data.train),
            }
        )
    )


def _pss(proc) -> int:
    """Proportional set size: a forked loader worker's pages shared with the trainer count
    once across the two, not twice as RSS would (falls back to RSS where PSS is unknown)."""
    try:
        return proc.memory_full_info().pss
    except (AttributeError, OSError):
        return proc.memory_info().rss


def _launch(url: str, reader: str, steps: int, out: Path, cpu: int | None):
    """`trial` in a fresh process, pinned to core `cpu` (its loader worker inherits the pin)."""
    cmd = [sys.executable, __file__, "--trial", url, reader, str(steps), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.Popen(cmd, env=env, cwd=ROOT, preexec_fn=pin)


def _result(proc, out: Path, what: str) -> dict:
    if proc.wait() != 0:
        raise RuntimeError(f"trial {what} exited with {proc.returncode}")
    return json.loads(out.read_text())


def run_pair(url: str, steps: int, cores: tuple[int, int]) -> tuple[dict, dict]:
    """The in-memory and the streamed trial at the same time, each on its own core.

    This VM's speed drifts by 10-30% from one minute to the next, more than the difference to
    measure; side by side, both arms see the same drift. Rounds swap the cores."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / "memory.json", Path(tmp) / "stream.json"]
        procs = [
            _launch(url, reader, steps, out, cpu)
            for reader, out, cpu in zip(("memory", "stream"), outs, cores, strict=True)
        ]
        memory, stream = (_result(p, o, url) for p, o in zip(procs, outs, strict=True))
        return memory, stream


def run_trial(url: str, reader: str, steps: int) -> dict:
    """`trial` in a fresh process, alone; its peak memory, the PSS of its process tree (the
    trainer and its loader worker), sampled every 50 ms."""
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trial.json"
        proc = _launch(url, reader, steps, out, None)
        parent, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(_pss(p) for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)
        return {**_result(proc, out, f"{url} ({reader})"), "peak_rss_mb": peak / 1e6}


def _median_run(results: list[dict]) -> dict:
    """Per field, the median over rounds."""
    return {k: float(np.median([r[k] for r in results])) for k in results[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small-mb", type=float, default=100)
    p.add_argument("--large-mb", type=float, default=2000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="in-memory vs streamed runs, alternating")
    p.add_argument("--workdir", default=None, help="where the datasets go (default: a temp dir)")
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--trial", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trial:
        url, reader, steps, out = args.trial
        trial(url, reader, int(steps), Path(out))
        return 0
    if args.smoke_test:
        args.small_mb, args.large_mb, args.steps, args.rounds = 2, 6, 30, 1
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        sizes = {"small": args.small_mb, "large": args.large_mb}
        made = {k: generate(Path(tmp) / f"{k}.parquet", mb) for k, mb in sizes.items()}
        small, large = f"{tmp}/small.parquet", f"{tmp}/large.parquet"
        # Speed: both arms at once, side by side (run_pair); memory: each run alone, sampled.
        arms: dict[str, list[dict]] = {"memory_small": [], "stream_small": []}
        for r in range(args.rounds):
            memory, stream = run_pair(small, args.steps, (0, 1) if r % 2 == 0 else (1, 0))
            arms["memory_small"].append(memory)
            arms["stream_small"].append(stream)
        runs = {name: _median_run(results) for name, results in arms.items()}
        for name, url, reader in [
            ("memory_small", small, "memory"),
            ("stream_small", small, "stream"),
            ("stream_large", large, "stream"),
        ]:
            alone = run_trial(url, reader, args.steps)
            runs[name] = {**alone, **runs.get(name, {}), "peak_rss_mb": alone["peak_rss_mb"]}
    rss_ratio = runs["stream_large"]["peak_rss_mb"] / runs["stream_small"]["peak_rss_mb"]
    ratios = [
        s["step_ms"] / m["step_ms"]
        for m, s in zip(arms["memory_small"], arms["stream_small"], strict=True)
    ]
    step_ratio = float(np.median(ratios))
    result = {
        "datasets": made,
        "runs": runs,
        "rounds": arms,
        "steps": args.steps,
        "rss_ratio_large_vs_small": rss_ratio,
        "step_ratio_stream_vs_memory": step_ratio,
        "step_ratios_per_round": ratios,
        "goals": {"rss_ratio": 1.25, "step_ratio": 1.1},
        "smoke_test": args.smoke_test,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_scale.json").write_text(json.dumps(result, indent=2))
    print(
        f"{'run':<14} {'data MB':>8} {'rows':>9} {'build s':>8} {'step ms':>8} "
        f"{'compute':>8} {'wait':>6} {'peak RSS MB':>12}"
    )
    for name, r in runs.items():
        d = made[name.split("_")[1]]
        print(
            f"{name:<14} {d['bytes'] / 1e6:>8.0f} {d['rows']:>9} {r['build_s']:>8.1f}"
            f" {r['step_ms']:>8.1f} {r['compute_ms']:>8.1f} {r['wait_ms']:>6.1f}"
            f" {r['peak_rss_mb']:>12.0f}"
        )
    print(f"peak RSS, large / small (streamed):   {rss_ratio:.3f}  (goal < 1.25)")
    print(
        f"step time, streamed / in-memory:       {step_ratio:.3f}  (goal <= 1.1; median of "
        f"{len(ratios)} rounds: {', '.join(f'{r:.3f}' for r in ratios)})"
    )
    print(f"(step time: median gap between training steps after {WARMUP_STEPS} warm-up steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
