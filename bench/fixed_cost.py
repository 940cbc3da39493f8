"""Where a job's wall time goes: the fixed cost of a tiny job and the overhead of tiny trials.

A tiny job is `rnntune run` on the Japanese Vowels example data (270 training sequences, made
from sktime's bundled archive files) with one fixed small GRU, 1 epoch per trial, the default
validation (5-fold cross-validation on 270 sequences), `search.num_samples` trials of a
sampled learning rate. It runs in its own process, timed from the process's start to its exit.

- **1-trial job, cold**: a fresh storage folder (a new MLflow store, no earlier job) and no
  warm Ray (a new RNNTUNE_HOME), median of `--repeats` runs.
- **1-trial job again**: the same job run again in a row in one folder (`--pause` seconds
  apart), median of `--repeats`: with the warm Ray `rnntune run` keeps between runs
  (tune/warm.py), and without it (`RNNTUNE_WARM_RAY_S=0`: each run starts and ends its own Ray,
  the baseline, measured in the same run of the bench).
- **40-trial job**: once, after those, with and without the warm Ray (with it, once its idle
  workers have done their imports: the worker start is the fixed cost the 1-trial jobs
  measure; the wait is printed). Its amortized per-trial overhead is
  (search wall - the trials' own training time / concurrency) / trials, where a trial's own
  training time is the sum of its epochs' `epoch_time_s` (training and validation steps).

Phases come from the job's parent run (`time_phase_<name>_s`, tune/timing.py): imports (the
process's start to the driver), tracking (store, model name), data (read, plan, digest),
parent_run, ray_start, search, close_runs, figures, importance, checkpoint, registration
(test split, model logging, aliases); `teardown` is the process's wall time after the driver
returned (Ray's shutdown, exit). Per trial, from Tune's results: `time_setup_s` (the trial
function's start to its first step: spec, data, model, Trainer).

    .venv/bin/python bench/fixed_cost.py                 # ~8 min on 2 cores
    .venv/bin/python bench/fixed_cost.py --smoke-test    # one run of each
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
PHASES = (
    "imports",
    "tracking",
    "data",
    "parent_run",
    "ray_start",
    "search",
    "close_runs",
    "figures",
    "importance",
    "checkpoint",
    "registration",
)


def write_data(folder: Path) -> None:
    where = ROOT / "examples" / "data" / "japanese_vowels.py"
    spec = importlib.util.spec_from_file_location("japanese_vowels_example", where)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.write(folder)


def tiny_spec(folder: Path, data: Path, trials: int) -> Path:
    spec = {
        "name": "fixed-cost",
        "data": {
            "name": "sequences",
            "url": str(data / "train.parquet"),
            "test_url": str(data / "test.parquet"),
        },
        "model": {"cell_type": "gru", "hidden_size": 16, "num_layers": 1},
        "search_space": {"lr": {"loguniform": [0.001, 0.01]}},
        "search": {"num_samples": trials, "seed": 0},
        "scheduler": {"name": "fifo"},
        "budget": {"max_epochs": 1},
        "storage": {"url": str(folder / "store")},
        "registry": {"model_name": "fixed-cost"},
    }
    path = folder / f"spec-{trials}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def job_env(home: Path, warm: bool) -> dict[str, str]:
    """`rnntune run`'s environment: its own RNNTUNE_HOME (its warm Ray), warm Ray on or off."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env["RNNTUNE_HOME"] = str(home)
    env["RNNTUNE_WARM_RAY_S"] = "600" if warm else "0"
    return env


def stop_warm_ray(home: Path) -> None:
    """`rnntune down` in that home: its warm Ray gone before the next measurement."""
    rnntune = str(Path(sys.executable).with_name("rnntune"))
    env = job_env(home, warm=True)
    subprocess.run([rnntune, "down"], env=env, capture_output=True, check=True)


def wait_for_idle_workers(home: Path, env: dict[str, str], timeout: float = 60.0) -> float:
    """Seconds until the warm Ray has an idle worker per CPU, done with its imports (named
    ray::IDLE and using no CPU): the many-trial job measures trials, not the worker start that
    the 1-trial jobs measure."""
    import psutil

    from tune import warm
    from tune.compat import tune_actor_env_vars

    start = time.monotonic()
    states = list((home / "warm").glob("*/state.json"))
    if not states:
        return 0.0
    head = warm.WarmRay(**json.loads(states[0].read_text()))
    actor_env = tune_actor_env_vars(env)
    while time.monotonic() - start < timeout:
        with contextlib.suppress(psutil.Error):  # a worker may end while it is looked at
            idle = [
                p
                for p in psutil.Process(head.keeper).children(recursive=True)
                if warm._unbound_worker(p, actor_env) and p.name() == "ray::IDLE"
            ]
            before = sum(p.cpu_times().user for p in idle)
            time.sleep(0.5)
            if len(idle) >= (os.cpu_count() or 1):
                if sum(p.cpu_times().user for p in idle) - before < 0.05:
                    break
            continue
        time.sleep(0.5)
    return time.monotonic() - start


def run_job(folder: Path, spec: Path, job_id: str, env: dict[str, str]) -> dict:
    """`rnntune run`, timed from the process's start to its exit; its phases and trials."""
    rnntune = str(Path(sys.executable).with_name("rnntune"))
    start = time.monotonic()
    done = subprocess.run(
        [rnntune, "run", str(spec), "--job-id", job_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(
            f"rnntune run exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    metrics = parent_metrics(folder / "store" / "mlflow.db", job_id)
    phases = {p: metrics.get(f"time_phase_{p}_s", 0.0) for p in PHASES}
    phases["teardown"] = max(0.0, wall - metrics.get("time_total_s", wall))
    phases["other"] = max(0.0, wall - sum(phases.values()))
    trials = trial_times(folder / "store" / job_id)
    return {"wall_s": round(wall, 2), "phases": phases, "trials": trials}


def parent_metrics(db: Path, job_id: str) -> dict[str, float]:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT m.key, m.value FROM latest_metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
            "WHERE t.key = 'rnntune.job_id' AND t.value = ? AND m.key LIKE 'time_%' "
            "AND m.run_uuid NOT IN (SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')",
            (job_id,),
        ).fetchall()
    return dict(rows)


def trial_times(job_folder: Path) -> list[dict]:
    """Per trial: setup (the trial function's start to its first step) and its own training."""
    out = []
    for result in sorted(job_folder.glob("*/result.json")):
        lines = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        if not lines:
            continue
        out.append(
            {
                "setup_s": float(lines[0].get("time_setup_s", 0.0)),
                "train_s": sum(float(x.get("epoch_time_s", 0.0)) for x in lines),
                "actor_total_s": float(lines[-1].get("time_total_s", 0.0)),
            }
        )
    return out


def overhead_per_trial(run: dict, concurrency: int) -> float:
    """The search's wall time less its trials' own training (run `concurrency` at a time), per
    trial."""
    train = sum(t["train_s"] for t in run["trials"])
    return (run["phases"]["search"] - train / concurrency) / max(1, len(run["trials"]))


def median_phases(runs: list[dict]) -> dict[str, float]:
    return {p: round(statistics.median(r["phases"][p] for r in runs), 2) for p in runs[0]["phases"]}


def summarize(name: str, runs: list[dict], concurrency: int) -> dict:
    walls = [r["wall_s"] for r in runs]
    trials = runs[-1]["trials"]
    train = sum(t["train_s"] for t in trials)
    per_trial = statistics.median(overhead_per_trial(r, concurrency) for r in runs)
    return {
        "job": name,
        "runs": len(runs),
        "wall_s_median": round(statistics.median(walls), 2),
        "wall_s_all": walls,
        "phases_median": median_phases(runs),
        "trials": len(trials),
        "trial_train_s": round(train, 2),
        "trial_setup_s_median": round(statistics.median(t["setup_s"] for t in trials), 3)
        if trials
        else None,
        "search_overhead_per_trial_s": round(per_trial, 3),
    }


def table(rows: list[dict]) -> str:
    phases = list(rows[0]["phases_median"])
    head = f"{'phase (median s)':<22}" + "".join(f"{r['job']:>16}" for r in rows)
    lines = [head]
    for p in phases:
        lines.append(f"{p:<22}" + "".join(f"{r['phases_median'][p]:>16.2f}" for r in rows))
    lines.append(f"{'wall (median)':<22}" + "".join(f"{r['wall_s_median']:>16.2f}" for r in rows))
    lines.append(f"{'trials':<22}" + "".join(f"{r['trials']:>16}" for r in rows))
    lines.append(
        f"{'trial setup (median)':<22}"
        + "".join(f"{r['trial_setup_s_median'] or 0:>16.3f}" for r in rows)
    )
    lines.append(
        f"{'overhead per trial':<22}"
        + "".join(f"{r['search_overhead_per_trial_s']:>16.3f}" for r in rows)
    )
    return "\n".join(lines)


def cold_runs(tmp: Path, data: Path, repeats: int) -> list[dict]:
    """A new store and no warm Ray (a new RNNTUNE_HOME) each time; the warm Ray the run left
    is stopped before the next."""
    runs = []
    for i in range(repeats):
        folder = tmp / f"cold{i}"
        folder.mkdir()
        env = job_env(folder / "home", warm=True)
        runs.append(run_job(folder, tiny_spec(folder, data, 1), f"cold-{i}", env))
        stop_warm_ray(folder / "home")
        print(f"cold {i}: {runs[-1]['wall_s']:.1f} s", flush=True)
    return runs


def in_a_row(tmp: Path, data: Path, args, concurrency: int, warm: bool) -> list[dict]:
    """The 1-trial job run again in a row in one folder (median of `repeats`), then the
    many-trial job; with the warm Ray (what `rnntune run` does) or without (each run starts
    and ends its own Ray: the baseline)."""
    name = "warm Ray" if warm else "no warm Ray"
    folder = tmp / name.replace(" ", "-")
    folder.mkdir()
    env = job_env(folder / "home", warm)
    one = tiny_spec(folder, data, 1)
    run_job(folder, one, "first", env)  # the store made (and the warm Ray started)
    again = []
    for i in range(args.repeats):
        time.sleep(args.pause)
        again.append(run_job(folder, one, f"again-{i}", env))
        print(f"1 trial again, {name}, {i}: {again[-1]['wall_s']:.1f} s", flush=True)
    time.sleep(args.pause)
    waited = wait_for_idle_workers(folder / "home", env) if warm else 0.0
    many = [run_job(folder, tiny_spec(folder, data, args.trials), "many", env)]
    print(
        f"{args.trials} trials, {name}: {many[0]['wall_s']:.1f} s "
        f"(after {waited:.1f} s for the warm Ray's idle workers)",
        flush=True,
    )
    stop_warm_ray(folder / "home")
    return [
        summarize(f"1 trial, {name}", again, concurrency),
        summarize(f"{args.trials} trials, {name}", many, concurrency),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="runs of each 1-trial job (median)")
    p.add_argument("--trials", type=int, default=40, help="trials of the many-trial job")
    p.add_argument("--out", type=Path, default=RESULTS / "fixed_cost.json")
    p.add_argument("--pause", type=float, default=2.0, help="seconds between runs in a row")
    p.add_argument("--smoke-test", action="store_true", help="one run of each, 8 trials")
    args = p.parse_args()
    if args.smoke_test:
        args.repeats, args.trials = 1, 8
    concurrency = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="rnntune-fixed-cost-") as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        write_data(data)
        rows = [
            summarize("1 trial, cold", cold_runs(tmp, data, args.repeats), concurrency),
            *in_a_row(tmp, data, args, concurrency, warm=False),
            *in_a_row(tmp, data, args, concurrency, warm=True),
        ]
    RESULTS.mkdir(exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "concurrency": concurrency}, indent=2))
    print()
    print(table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
