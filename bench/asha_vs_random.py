"""Compute ASHA needs to reach the accuracy plain random search reaches, on the same trials.

Two searches over one space (cell_type gru/lstm/rnn_tanh, hidden_size, lr log-uniform) on
MNIST-1D, with the same number of trials and the same search seed, so both sample the same
configurations (checked: `same_configs`): random search with FIFO (every trial trains all
`max_epochs`) and random search with ASHA (grace 1, reduction factor 3, our `max_t` is one
above `max_epochs`, so rungs at 1, 3, 9 epochs for 9). Both run through `tune.driver.run_job`
on the embedded local Ray, 1 CPU per trial, all cores.

How compute is counted: one unit per epoch a trial reported (an epoch whose result reached
Tune); seconds are the sum of the trials' Tune `time_total_s` (from trial start, including
data generation, to its last reported result). Not counted: epochs in flight when ASHA stopped
a trial, actor start, driver time. Results are taken in the order the driver saw them
(recorded by a callback around the trial logger; the order ASHA decided in).

    target          = best val_acc any random-search trial reported (any epoch)
    ASHA compute    = compute of all ASHA trials up to the first result with val_acc >= target
                      (ASHA's total if none reaches it: `reached` false)
    ratio           = ASHA compute / random search's total compute, in epochs (goal <= 0.4)

The same is reported for targets 0.01 and 0.02 below the best, and in seconds.

    .venv/bin/python bench/asha_vs_random.py               # ~4 min on 2 cores
    .venv/bin/python bench/asha_vs_random.py --smoke-test  # about a minute

Set OMP_WAIT_POLICY=PASSIVE on a shared machine (see bench/train_overhead.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tune_harness import (
    prepare_tracking,
    recording,
    results_of,
    silence_libraries,
    start_ray,
    stop_ray,
    timed_job,
    trial_logger,
    trial_results,
    versions,
)

from tune.spec import JobSpec, parse_job_spec
from tune.trial_logger import MlflowTrialLogger

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_RATIO = 0.4
TOLERANCES = (0.0, 0.01, 0.02)  # targets below random search's best val_acc
METRIC = "val_acc"


def job_spec(name: str, scheduler: str, args: argparse.Namespace, store: Path) -> JobSpec:
    small = {"num_samples": 600, "limit": 300} if args.smoke_test else {"limit": args.limit}
    return parse_job_spec(
        {
            "name": name,
            "data": {"name": "mnist1d", **small},
            "model": {"bidirectional": False, "readout": "last"},
            "optim": {"optimizer": "adam", "batch_size": 64, "grad_clip": 1.0},
            "search_space": {
                "cell_type": {"choice": ["gru", "lstm", "rnn_tanh"]},
                "hidden_size": {"choice": [16, 32, 64]},
                "lr": {"loguniform": [1e-3, 3e-2]},
            },
            "search": {"algorithm": "random", "num_samples": args.trials, "seed": args.seed},
            "scheduler": {"name": scheduler, "grace_period": 1, "reduction_factor": 3},
            "budget": {"max_epochs": args.max_epochs},
            "resources": {"cpus": 1},
            "storage": {"url": str(store)},
            "tracking": {"experiment": "bench-asha-vs-random"},
            "registry": {"enabled": False},
        }
    )


def run_search(spec: JobSpec, log_path: Path) -> dict:
    log: list[dict] = []
    with trial_logger(recording(MlflowTrialLogger, log)):
        summary, wall = timed_job(spec, log_path)
    stored = trial_results(spec, summary.job_id)
    return {
        "job_id": summary.job_id,
        "wall_s": wall,
        "results": results_of(log),  # driver order
        "trials": {
            tid: {
                "config": rows[-1]["config"],
                "epochs": rows[-1]["training_iteration"],
                "time_total_s": rows[-1]["time_total_s"],
                "best_val_acc": max(r[METRIC] for r in rows),
                "curve": [r[METRIC] for r in rows],
            }
            for tid, rows in stored.items()
        },
    }


def compute_until(results: list[dict], target: float | None) -> dict:
    """Epochs and seconds all trials had used when one first reported `target` (None: all)."""
    epochs: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for row in results:
        epochs[row["trial_id"]] = row["training_iteration"]
        seconds[row["trial_id"]] = row["time_total_s"]
        if target is not None and row[METRIC] >= target:
            return {
                "reached": True,
                "epochs": sum(epochs.values()),
                "seconds": sum(seconds.values()),
            }
    return {
        "reached": target is None,
        "epochs": sum(epochs.values()),
        "seconds": sum(seconds.values()),
    }


def same_configs(a: dict, b: dict) -> bool:
    def key(trials: dict) -> list[str]:
        return sorted(json.dumps(t["config"], sort_keys=True) for t in trials.values())

    return key(a["trials"]) == key(b["trials"])


def curves_match(random: dict, asha: dict, tol: float = 1e-6) -> bool:
    """Same config, same seed: an ASHA trial's curve should be a prefix of the FIFO trial's."""
    fifo = {json.dumps(t["config"], sort_keys=True): t["curve"] for t in random["trials"].values()}
    for t in asha["trials"].values():
        full = fifo.get(json.dumps(t["config"], sort_keys=True))
        if full is None or any(abs(x - y) > tol for x, y in zip(t["curve"], full, strict=False)):
            return False
    return True


def compare(random: dict, asha: dict) -> dict:
    total = compute_until(random["results"], None)
    best = max(t["best_val_acc"] for t in random["trials"].values())
    targets = []
    for tol in TOLERANCES:
        target = best - tol
        a = compute_until(asha["results"], target)
        r = compute_until(random["results"], target)
        targets.append(
            {
                "target_val_acc": target,
                "below_best": tol,
                "asha": a,
                "random_until_target": r,
                "ratio_epochs": a["epochs"] / total["epochs"],
                "ratio_seconds": a["seconds"] / total["seconds"],
            }
        )
    asha_total = compute_until(asha["results"], None)
    return {
        "random_best_val_acc": best,
        "asha_best_val_acc": max(t["best_val_acc"] for t in asha["trials"].values()),
        "random_total": total,
        "asha_total": asha_total,
        "targets": targets,
        "ratio": targets[0]["ratio_epochs"],
        "ratio_seconds": targets[0]["ratio_seconds"],
        "asha_reached_target": targets[0]["asha"]["reached"],
        "goal_ratio": GOAL_RATIO,
        "meets_goal": targets[0]["ratio_epochs"] <= GOAL_RATIO,
        "same_configs": same_configs(random, asha),
        "curves_match": curves_match(random, asha),
    }


def print_table(res: dict, random: dict, asha: dict) -> None:
    fifo = {json.dumps(t["config"], sort_keys=True): t for t in random["trials"].values()}
    print(f"{'cell':<9} {'hidden':>6} {'lr':>8} {'fifo_best':>9} {'asha_best':>9} {'asha_ep':>7}")
    for t in sorted(asha["trials"].values(), key=lambda t: -t["best_val_acc"]):
        c = t["config"]
        f = fifo.get(json.dumps(c, sort_keys=True))
        fb = f"{f['best_val_acc']:.4f}" if f else "n/a"
        print(
            f"{c['cell_type']:<9} {c['hidden_size']:>6} {c['lr']:>8.4f} {fb:>9} "
            f"{t['best_val_acc']:>9.4f} {t['epochs']:>7}"
        )
    rt, at = res["random_total"], res["asha_total"]
    print(
        f"random: {rt['epochs']} epochs, {rt['seconds']:.1f} s trial time, wall "
        f"{random['wall_s']:.1f} s, best {METRIC} {res['random_best_val_acc']:.4f}"
    )
    print(
        f"asha:   {at['epochs']} epochs, {at['seconds']:.1f} s trial time, wall "
        f"{asha['wall_s']:.1f} s, best {METRIC} {res['asha_best_val_acc']:.4f}"
    )
    print(f"{'target':>8} {'reached':>7} {'asha_ep':>7} {'ratio_ep':>8} {'ratio_s':>7}")
    for t in res["targets"]:
        a = t["asha"]
        print(
            f"{t['target_val_acc']:>8.4f} {str(a['reached']):>7} {a['epochs']:>7} "
            f"{t['ratio_epochs']:>8.3f} {t['ratio_seconds']:>7.3f}"
        )
    verdict = "OK" if res["meets_goal"] else "OVER GOAL"
    print(
        f"ratio ASHA/random compute (epochs, to random's best) = {res['ratio']:.3f} "
        f"(goal <= {res['goal_ratio']}): {verdict}; same configs: {res['same_configs']}, "
        f"curves match: {res['curves_match']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12, help="trials per search")
    p.add_argument("--max-epochs", type=int, default=9)
    p.add_argument("--limit", type=int, default=1500, help="MNIST-1D training examples")
    p.add_argument("--seed", type=int, default=0, help="search seed (both searches)")
    p.add_argument("--smoke-test", action="store_true", help="4 trials, 3 epochs, tiny data")
    p.add_argument("--keep", type=Path, help="keep Tune/MLflow storage and the log here")
    p.add_argument("--out", type=Path, default=RESULTS / "asha_vs_random.json")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.trials, args.max_epochs = 4, 3
    silence_libraries()
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="rb") as ray_tmp,
        tempfile.TemporaryDirectory() as tmp,
    ):
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "asha_vs_random.log"
        store = work / "store"
        ray_start_s = start_ray(Path(ray_tmp), log)
        try:
            prepare_tracking(job_spec("asha-vs-random", "fifo", args, store), log)
            print(f"random search, FIFO, {args.trials} trials ...", flush=True)
            random = run_search(job_spec("random-fifo", "fifo", args, store), log)
            print(f"random search, ASHA, {args.trials} trials ...", flush=True)
            asha = run_search(job_spec("random-asha", "asha", args, store), log)
        finally:
            stop_ray(log)
    res = compare(random, asha)
    out = {
        "benchmark": "asha_vs_random",
        "smoke_test": args.smoke_test,
        **res,
        "compute_counted_as": "epochs: reported epochs summed over trials (in-flight epochs "
        "of stopped trials not counted); seconds: sum of trials' Tune time_total_s at their "
        "last counted result; ASHA counted up to the first result (driver order) reaching "
        "the target",
        "trials": args.trials,
        "max_epochs": args.max_epochs,
        "seed": args.seed,
        "spec_asha": job_spec("random-asha", "asha", args, Path("store")).model_dump(mode="json"),
        "random": random,
        "asha": asha,
        "ray_start_s_excluded": ray_start_s,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print_table(res, random, asha)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
