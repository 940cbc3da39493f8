"""How well a Ray Tune search packs 1-CPU trials onto all cores, against the same trial run alone.

N trials with one fixed configuration (only `seed` differs, a grid over 0..N-1: the same work
each) run as one FIFO search on the embedded local Ray (1 CPU per trial, so `cores` at a time).
The same trial also runs alone, as a search of one trial (seeds 0 and 1, before and after the
sweep, averaged). Everything goes through `tune.driver.run_job`, as `rnntune run` does: MLflow
parent and child runs on a local SQLite store, a checkpoint every epoch, registry off.

Wall time is `run_job` end to end: Tuner setup, trial actors (worker start, torch/Lightning
imports, data generation), training, checkpoints, MLflow logging and the job summary. Ray's
start is excluded (started once before any timing), as is creating the MLflow store.

    ratio        = sweep wall / (N x mean single-search wall / cores)   (goal <= 1.15)
    ratio_strict = sweep wall / (N x mean single-trial time_total_s / cores)

`ratio` compares like with like (search walls) but counts each single search's fixed cost
(actor start, imports, summary) in the denominator; `ratio_strict` charges the sweep's fixed
cost against pure trial time, so it is the harsher one. `trial_slowdown` is the mean trial
time_total_s in the sweep over that of the singles: contention between trials on the cores.

    .venv/bin/python bench/tune_packing.py               # ~3 min on 2 cores
    .venv/bin/python bench/tune_packing.py --smoke-test  # under a minute

Set OMP_WAIT_POLICY=PASSIVE on a shared machine (see bench/train_overhead.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from tune_harness import (
    prepare_tracking,
    silence_libraries,
    start_ray,
    stop_ray,
    timed_job,
    trial_results,
    versions,
)

from tune.spec import JobSpec, parse_job_spec

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_RATIO = 1.15


def job_spec(name: str, seeds: list[int], epochs: int, data: dict, store: Path) -> JobSpec:
    return parse_job_spec(
        {
            "name": name,
            "data": data,
            "model": {"cell_type": "gru", "hidden_size": 64},
            "optim": {"optimizer": "adam", "lr": 3e-3, "batch_size": 64},
            "search_space": {"seed": {"grid": seeds}},
            "search": {"algorithm": "grid", "num_samples": 1},
            "scheduler": {"name": "fifo"},
            "budget": {"max_epochs": epochs},
            "resources": {"cpus": 1},
            "storage": {"url": str(store)},
            "tracking": {"experiment": "bench-tune-packing"},
            "registry": {"enabled": False},
        }
    )


def run_search(spec: JobSpec, log: Path) -> dict:
    summary, wall = timed_job(spec, log)
    rows = trial_results(spec, summary.job_id)
    trials = {
        tid: {
            "seed": r[-1]["config"]["seed"],
            "epochs": r[-1]["training_iteration"],
            "time_total_s": r[-1]["time_total_s"],
            "first_epoch_s": r[0]["time_this_iter_s"],  # includes imports and data generation
            "val_acc": r[-1]["val_acc"],
        }
        for tid, r in rows.items()
    }
    return {"job_id": summary.job_id, "wall_s": wall, "trials": trials}


def measure(args: argparse.Namespace, cores: int, work: Path, log: Path) -> dict:
    data = {"name": "mnist1d", **({"num_samples": 600, "limit": 300} if args.smoke_test else {})}
    store = work / "store"
    n, epochs = args.trials, args.epochs
    singles_seeds = [0] if args.smoke_test else [0, 1]
    prepare_tracking(job_spec("packing", [0], epochs, data, store), log)
    singles, sweep = [], None
    # Single, sweep, single: drift from other processes on the cores hits both sides.
    order = ["single", "sweep"] + (["single"] * (len(singles_seeds) - 1))
    for kind in order:
        if kind == "sweep":
            print(f"sweep of {n} trials ...", flush=True)
            sweep = run_search(job_spec("packing-sweep", list(range(n)), epochs, data, store), log)
        else:
            seed = singles_seeds[len(singles)]
            print(f"single trial (seed {seed}) ...", flush=True)
            spec = job_spec(f"packing-single{seed}", [seed], epochs, data, store)
            singles.append(run_search(spec, log))
    assert sweep is not None
    single_wall = statistics.mean(s["wall_s"] for s in singles)
    single_trial = statistics.mean(t["time_total_s"] for s in singles for t in s["trials"].values())
    sweep_trial = statistics.mean(t["time_total_s"] for t in sweep["trials"].values())
    ratio = sweep["wall_s"] / (n * single_wall / cores)
    return {
        "trials": n,
        "cores": cores,
        "epochs": epochs,
        "sweep_wall_s": sweep["wall_s"],
        "single_wall_s": [s["wall_s"] for s in singles],
        "single_wall_mean_s": single_wall,
        "single_trial_time_total_mean_s": single_trial,
        "sweep_trial_time_total_mean_s": sweep_trial,
        "ideal_sweep_wall_s": n * single_wall / cores,
        "ratio": ratio,
        "ratio_strict": sweep["wall_s"] / (n * single_trial / cores),
        "trial_slowdown": sweep_trial / single_trial,
        "goal_ratio": GOAL_RATIO,
        "meets_goal": ratio <= GOAL_RATIO,
        "sweep": sweep,
        "singles": singles,
        "data": data,
    }


def print_table(res: dict) -> None:
    print(
        f"{'search':<14} {'trial':<12} {'seed':>4} {'epochs':>6} {'time_total_s':>12} {'wall_s':>8}"
    )
    for s in res["singles"]:
        for tid, t in s["trials"].items():
            print(
                f"{'single':<14} {tid:<12} {t['seed']:>4} {t['epochs']:>6} "
                f"{t['time_total_s']:>12.2f} {s['wall_s']:>8.2f}"
            )
    sweep = res["sweep"]
    for tid, t in sorted(sweep["trials"].items(), key=lambda kv: kv[1]["seed"]):
        print(f"{'sweep':<14} {tid:<12} {t['seed']:>4} {t['epochs']:>6} {t['time_total_s']:>12.2f}")
    print(
        f"sweep wall {res['sweep_wall_s']:.2f} s vs ideal {res['ideal_sweep_wall_s']:.2f} s "
        f"({res['trials']} x {res['single_wall_mean_s']:.2f} s / {res['cores']} cores)"
    )
    verdict = "OK" if res["meets_goal"] else "OVER GOAL"
    print(
        f"ratio = {res['ratio']:.3f} (goal <= {res['goal_ratio']}): {verdict}; "
        f"ratio_strict (vs trial time_total_s) = {res['ratio_strict']:.3f}; "
        f"trial slowdown in the sweep = {res['trial_slowdown']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6, help="trials in the sweep (seeds 0..N-1)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    p.add_argument("--smoke-test", action="store_true", help="2 trials, 2 epochs, tiny data")
    p.add_argument("--keep", type=Path, help="keep Tune/MLflow storage and the log here")
    p.add_argument("--out", type=Path, default=RESULTS / "tune_packing.json")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.trials, args.epochs = 2, 2
    silence_libraries()
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="rb") as ray_tmp,
        tempfile.TemporaryDirectory() as tmp,
    ):
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "tune_packing.log"
        ray_start_s = start_ray(Path(ray_tmp), log)
        try:
            res = measure(args, cores, work, log)
        finally:
            stop_ray(log)
    out = {
        "benchmark": "tune_packing",
        "smoke_test": args.smoke_test,
        **res,
        "ray_start_s_excluded": ray_start_s,
        "wall_includes": "run_job end to end (Tuner, trial actors, imports, data, training, "
        "per-epoch checkpoints, MLflow runs, summary); not Ray start or MLflow store creation",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print_table(res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
