"""What MLflow trial tracking costs a search: the same Ray Tune job with and without child runs.

Our per-trial tracking is a driver-side Tune callback (`tune.trial_logger.MlflowTrialLogger`): a
child run per trial (created synchronously at trial start, with its parameters), each epoch's
reported metrics sent with `log_batch(..., synchronous=False)`, and the run ended at trial end.
So its cost does not show inside a trial: it is driver CPU taken from the trials on the same
cores, and driver latency per report (a function trial waits in `tune.report` until the driver
asks for its next result, and `time_total_s` leaves that wait out). Timing `train()` in one
process with logging added would measure a different thing. Instead each arm is a whole
`tune.driver.run_job` search of the same trials; in the "without" arm the trial logger is
replaced (in that process only) by a callback that does nothing. Both arms keep the job's
parent run and summary, which cost the same in both.

Side by side (default): each round runs both arms at the same time, each in its own process
pinned to its own core with its own embedded Ray (1 CPU: one trial at a time, the driver sharing
the trial's core, the demanding case). This VM's speed drifts by +-10% from one job to the next;
run together, both arms see the same drift, and the arms swap cores every round. `--in-turn`
runs them one after the other on one Ray using all cores (ABBA order), as in earlier results.

Measured per job: wall time of `run_job` (what the user waits for; Ray start and MLflow store
creation excluded), the per-epoch cycle each trial shows the driver (seconds between its first
and last result / epochs between: training + checkpoint + report + driver processing), Tune's
`time_total_s`, the driver's CPU seconds, and the CPU used on the arm's core (side by side) or
the machine (in turn). Per job, the median time the trial logger's handlers hold the driver's
event loop (trial start, each result, trial end) is recorded too.

    ratio = geometric mean over rounds of (job wall with tracking / job wall without),
            with its 95% confidence interval                           (goal <= 1.03)

    .venv/bin/python bench/tracking_overhead.py               # 8 rounds, ~9 min on 2 cores
    .venv/bin/python bench/tracking_overhead.py --smoke-test  # about a minute

Set OMP_WAIT_POLICY=PASSIVE on a shared machine (see bench/train_overhead.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from mlflow.tracking import MlflowClient
from scipy import stats
from tune_harness import (
    NoTrialLogging,
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

from tune.outcome import PARENT_TAG
from tune.spec import JobSpec, parse_job_spec
from tune.summary import JobSummary
from tune.trial_logger import MlflowTrialLogger

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_RATIO = 1.03
ARMS = ("with", "without")


def job_spec(
    name: str, trials: int, epochs: int, data: dict, store: Path, tracking_uri: str | None = None
) -> JobSpec:
    return parse_job_spec(
        {
            "name": name,
            "data": data,
            "model": {"cell_type": "gru", "hidden_size": 32},
            "optim": {"optimizer": "adam", "lr": 3e-3, "batch_size": 64},
            "search_space": {"seed": {"grid": list(range(trials))}},
            "search": {"algorithm": "grid", "num_samples": 1},
            "scheduler": {"name": "fifo"},
            "budget": {"max_epochs": epochs},
            "resources": {"cpus": 1},
            "storage": {"url": str(store)},
            # tracking.uri unset: the default embedded SQLite store next to the storage
            "tracking": {"experiment": "bench-tracking-overhead", "uri": tracking_uri},
            "registry": {"enabled": False},
        }
    )


def epoch_cycles(log: list[dict]) -> list[float]:
    """Per trial: driver seconds between its first and last result, per epoch in between."""
    by_trial: dict[str, list[dict]] = {}
    for row in results_of(log):
        by_trial.setdefault(row["trial_id"], []).append(row)
    out = []
    for rows in by_trial.values():
        if len(rows) > 1:
            span = rows[-1]["t"] - rows[0]["t"]
            out.append(span / (rows[-1]["training_iteration"] - rows[0]["training_iteration"]))
    return out


def child_runs(summary: JobSummary) -> int:
    """Child runs the job left in MLflow (a check that each arm did what it says)."""
    client = MlflowClient(summary.tracking_uri)
    exp = client.get_run(summary.parent_run_id).info.experiment_id
    query = f"tags.`{PARENT_TAG}` = '{summary.parent_run_id}'"
    return len(client.search_runs([exp], filter_string=query))


def driver_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_busy_s(cpu: int | None = None) -> float:
    """CPU seconds used on the machine, or on one core (Ray's workers run niced; time the
    hypervisor stole is not ours)."""
    t = psutil.cpu_times() if cpu is None else psutil.cpu_times(percpu=True)[cpu]
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def run_arm(arm: str, spec: JobSpec, log_path: Path, cpu: int | None = None) -> dict:
    log: list[dict] = []
    base = MlflowTrialLogger if arm == "with" else NoTrialLogging
    cpu0, busy0 = driver_cpu_s(), machine_busy_s(cpu)
    with trial_logger(recording(base, log)):
        summary, wall = timed_job(spec, log_path)
    driver_cpu, machine_busy = driver_cpu_s() - cpu0, machine_busy_s(cpu) - busy0
    rows = trial_results(spec, summary.job_id)
    cycles = epoch_cycles(log)
    callback_ms = {  # driver time inside the trial logger's handlers, per call
        event: 1e3 * statistics.median(times)
        for event in ("start", "result", "complete")
        if (times := [r["callback_s"] for r in log if r["event"] == event])
    }
    return {
        "arm": arm,
        "child_runs": child_runs(summary),
        "job_id": summary.job_id,
        "wall_s": wall,
        "epoch_cycle_s": statistics.median(cycles) if cycles else None,
        "time_total_s": statistics.median(r[-1]["time_total_s"] for r in rows.values()),
        "reports": len(results_of(log)),
        "driver_cpu_s": driver_cpu,  # this process: Tune's controller and the trial logger
        "machine_busy_s": machine_busy,  # all processes on the machine, or on the arm's core
        "callback_ms_median": callback_ms,
    }


def bench_data(smoke_test: bool) -> dict:
    small = {"num_samples": 600, "limit": 300} if smoke_test else {"limit": 1500}
    return {"name": "mnist1d", **small}


def measure_in_turn(args: argparse.Namespace, work: Path, log: Path) -> list[dict]:
    """One embedded Ray on all cores; each round runs the two arms one after the other."""
    data, store, uri = bench_data(args.smoke_test), work / "store", args.tracking_uri
    prepare_tracking(job_spec("tracking", 1, 1, data, store, uri), log)
    runs: list[dict] = []
    for r in range(args.rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:  # ABBA: drift hits both arms alike
            print(f"round {r + 1}/{args.rounds}: {arm} tracking ...", flush=True)
            spec = job_spec(f"tracking-{arm}-{r}", args.trials, args.epochs, data, store, uri)
            runs.append({**run_arm(arm, spec, log), "round": r})
    return runs


def measure_side_by_side(args: argparse.Namespace, work: Path) -> list[dict]:
    """Each round runs both arms at once, each a process pinned to its own core with its own
    embedded Ray (1 CPU): the VM's speed drift, +-10% between jobs here, hits both alike. The
    arms swap cores every round. The driver shares its core with its trial, as when trials fill
    all cores."""
    runs: list[dict] = []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: both arms side by side ...", flush=True)
        folder = work / f"round-{r}"
        folder.mkdir()
        first, second = sorted(os.sched_getaffinity(0))[:2]
        cores = (
            {"with": first, "without": second} if r % 2 == 0 else {"with": second, "without": first}
        )
        procs = {}
        for arm in ARMS:
            cmd = [sys.executable, __file__, "--worker", arm, "--cpu", str(cores[arm])]
            cmd += ["--folder", str(folder), "--round", str(r)]
            cmd += ["--trials", str(args.trials), "--epochs", str(args.epochs)]
            cmd += ["--smoke-data"] if args.smoke_test else []
            cmd += ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
            with open(folder / f"{arm}.out", "w") as out:
                procs[arm] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not all((folder / f"ready-{arm}").exists() for arm in ARMS):
            failed = [arm for arm, p in procs.items() if p.poll() is not None]
            if failed or time.monotonic() > deadline:
                for p in procs.values():
                    p.kill()
                tail = (folder / f"{(failed or ARMS)[0]}.out").read_text()[-3000:]
                raise RuntimeError(f"round {r}: worker {failed or 'start'} failed:\n{tail}")
            time.sleep(0.05)
        (folder / "go").touch()  # both Rays are up and both stores exist: start the jobs
        for arm, p in procs.items():
            if p.wait(timeout=1800) != 0:
                tail = (folder / f"{arm}.out").read_text()[-3000:]
                raise RuntimeError(f"round {r}: the {arm} arm failed:\n{tail}")
        for arm in ARMS:
            res = json.loads((folder / f"result-{arm}.json").read_text())
            runs.append({**res, "round": r, "cpu": cores[arm]})
    return runs


def worker(args: argparse.Namespace) -> int:
    """One arm of one side-by-side round, on one core (see `measure_side_by_side`)."""
    os.sched_setaffinity(0, {args.cpu})  # before Ray starts: its processes inherit it
    silence_libraries()
    arm, folder = args.worker, args.folder
    log = folder / f"{arm}.log"
    spec = job_spec(
        f"tracking-{arm}-{args.round}",
        args.trials,
        args.epochs,
        bench_data(args.smoke_data),
        folder / f"store-{arm}",
        args.tracking_uri,
    )
    with tempfile.TemporaryDirectory(prefix="rb") as ray_tmp:
        start_ray(Path(ray_tmp), log, num_cpus=1)
        try:
            prepare_tracking(spec, log)
            (folder / f"ready-{arm}").touch()
            while not (folder / "go").exists():
                time.sleep(0.005)
            res = run_arm(arm, spec, log, cpu=args.cpu)
        finally:
            stop_ray(log)
    (folder / f"result-{arm}.json").write_text(json.dumps(res))
    return 0


def summarize(args: argparse.Namespace, runs: list[dict]) -> dict:
    data, uri = bench_data(args.smoke_test), args.tracking_uri
    med = {
        arm: {
            key: statistics.median(x[key] for x in runs if x["arm"] == arm and x[key] is not None)
            for key in ("wall_s", "epoch_cycle_s", "time_total_s", "driver_cpu_s", "machine_busy_s")
        }
        for arm in ARMS
    }
    ratios = {key: med["with"][key] / med["without"][key] for key in med["with"]}
    # Each round's with/without pair ran together or back to back: it shares the round's
    # conditions.
    by_round = {(x["round"], x["arm"]): x["wall_s"] for x in runs}
    paired = [by_round[r, "with"] / by_round[r, "without"] for r in range(args.rounds)]
    # Their geometric mean with a 95% confidence interval (t on the log ratios): on a VM whose
    # speed drifts +-10% between jobs, whether a few percent is real is a question of spread.
    logs = [math.log(r) for r in paired]
    half = (
        stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        if len(logs) > 1
        else math.nan
    )
    geo = statistics.fmean(logs)
    # What tracking adds to the work the machine does: the driver's extra CPU over all CPU used.
    cpu_share = (med["with"]["driver_cpu_s"] - med["without"]["driver_cpu_s"]) / med["without"][
        "machine_busy_s"
    ]
    return {
        "ratio": math.exp(geo),
        "ratio_ci95": [math.exp(geo - half), math.exp(geo + half)],
        "goal_ratio": GOAL_RATIO,
        "meets_goal": math.exp(geo) <= GOAL_RATIO,
        "ratio_of_median_walls": ratios["wall_s"],
        "ratio_epoch_cycle": ratios["epoch_cycle_s"],
        "ratio_time_total": ratios["time_total_s"],
        "ratio_machine_busy": ratios["machine_busy_s"],
        "paired_wall_ratios": paired,
        "ratio_paired_median": statistics.median(paired),
        "tracking_cpu_share": cpu_share,
        "tracking_driver_cpu_s": med["with"]["driver_cpu_s"] - med["without"]["driver_cpu_s"],
        "median": med,
        "runs": runs,
        "rounds": args.rounds,
        "mode": "in turn" if args.in_turn else "side by side",
        "trials_per_job": args.trials,
        "epochs": args.epochs,
        "data": data,
        "tracking_uri": uri or "embedded SQLite next to the storage",
    }


def print_table(res: dict) -> None:
    print(
        f"{'arm':<8} {'job':<36} {'wall_s':>8} {'epoch_cycle_s':>13} {'time_total_s':>12} "
        f"{'child_runs':>10} {'ms/start':>8} {'ms/report':>9} {'ms/complete':>11} "
        f"{'driver_cpu_s':>12} {'busy_cpu_s':>10}"
    )
    nan = float("nan")
    for x in res["runs"]:
        ms = x["callback_ms_median"]
        cycle = "n/a" if x["epoch_cycle_s"] is None else f"{x['epoch_cycle_s']:.4f}"
        print(
            f"{x['arm']:<8} {x['job_id']:<36} {x['wall_s']:>8.2f} {cycle:>13} "
            f"{x['time_total_s']:>12.2f} {x['child_runs']:>10} "
            f"{ms.get('start', nan):>8.1f} {ms.get('result', nan):>9.2f} "
            f"{ms.get('complete', nan):>11.1f} {x['driver_cpu_s']:>12.2f} "
            f"{x['machine_busy_s']:>10.1f}"
        )
    for arm in ARMS:
        m = res["median"][arm]
        print(
            f"{'median':<8} {arm:<36} {m['wall_s']:>8.2f} {m['epoch_cycle_s']:>13.4f} "
            f"{m['time_total_s']:>12.2f}"
        )
    verdict = "OK" if res["meets_goal"] else "OVER GOAL"
    low, high = res["ratio_ci95"]
    spread = ", ".join(f"{r:.3f}" for r in sorted(res["paired_wall_ratios"]))
    print(
        f"job wall with/without ({res['mode']}): {res['ratio']:.3f}, geometric mean of "
        f"{res['rounds']} rounds (95% CI {low:.3f}-{high:.3f}; goal <= {res['goal_ratio']}): "
        f"{verdict}\nper round: [{spread}]; ratio of median walls "
        f"{res['ratio_of_median_walls']:.3f}; epoch cycle {res['ratio_epoch_cycle']:.3f}; "
        f"time_total_s {res['ratio_time_total']:.3f}; CPU busy {res['ratio_machine_busy']:.3f}"
    )
    print(
        f"tracking's driver CPU {res['tracking_driver_cpu_s']:+.2f} s per job = "
        f"{100 * res['tracking_cpu_share']:.1f}% of the CPU the job used"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8, help="with+without pairs")
    p.add_argument("--trials", type=int, default=4, help="trials per job (1 CPU each)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    p.add_argument("--smoke-test", action="store_true", help="1 round, 2 trials, 3 epochs")
    p.add_argument(
        "--in-turn",
        action="store_true",
        help="one Ray on all cores, the arms one after the other (default: side by side, "
        "each arm on its own core)",
    )
    p.add_argument(
        "--tracking-uri", help="default: the embedded SQLite store next to the job's storage"
    )
    p.add_argument("--keep", type=Path, help="keep Tune/MLflow storage and the log here")
    p.add_argument("--out", type=Path, default=RESULTS / "tracking_overhead.json")
    # one arm of a side-by-side round (run by this script itself)
    p.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, help=argparse.SUPPRESS)
    p.add_argument("--smoke-data", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.smoke_test:
        args.rounds, args.trials, args.epochs = 1, 2, 3
    if not args.in_turn and len(os.sched_getaffinity(0)) < 2:
        print("side by side needs 2 cores: measuring in turn", file=sys.stderr)
        args.in_turn = True
    silence_libraries()
    load_before = os.getloadavg()[0]
    ray_start_s = None
    with (
        tempfile.TemporaryDirectory(prefix="rb") as ray_tmp,
        tempfile.TemporaryDirectory() as tmp,
    ):
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.in_turn:
            log = work / "tracking_overhead.log"
            ray_start_s = start_ray(Path(ray_tmp), log)
            try:
                runs = measure_in_turn(args, work, log)
            finally:
                stop_ray(log)
        else:
            runs = measure_side_by_side(args, work)
    res = summarize(args, runs)
    out = {
        "benchmark": "tracking_overhead",
        "smoke_test": args.smoke_test,
        **res,
        "ray_start_s_excluded": ray_start_s,
        "without_means": "run_job with tune.driver.MlflowTrialLogger replaced by a no-op "
        "callback: no child runs, no per-epoch metrics; parent run and summary kept",
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
