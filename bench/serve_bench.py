"""Serving throughput and latency: `rnntune serve` (Ray Serve, batched) vs `mlflow models serve`.

Ours runs two ways: through Ray Serve's proxy (one address for any number of replicas) and
with `--direct` (the replica answers HTTP itself; no proxy hop). The same registered champion
behind each server in turn (never both at once: they would share
the cores), the same closed-loop load from a local asyncio client: C concurrent callers, each
sending one sequence per request and waiting for the answer, for D seconds after a warm-up.
MLflow's scorer gets `{"inputs": ...}`; ours gets the same body on `/invocations` (MLflow's
protocol) and `{"sequences": ...}` on `/predict`.

    ratio = our requests/s / MLflow's requests/s at the same concurrency (goal >= 3),
            with our p99 latency <= MLflow's

    .venv/bin/python bench/serve_bench.py                      # the demo's champion (make demo)
    .venv/bin/python bench/serve_bench.py --smoke-test         # trains a tiny model first, ~2 min
    .venv/bin/python bench/serve_bench.py --model-uri models:/NAME@champion --tracking-uri URI

Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from service.stack import free_port, start_ready, stop

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
GOAL = 3.0


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float, warmup: float):
    """Closed loop: each caller sends, waits, sends again. Returns latencies (s) after warm-up."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    start = time.perf_counter()
    end = start + warmup + seconds

    async def caller(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal failures
        n = i
        while (t0 := time.perf_counter()) < end:
            body = bodies[n % len(bodies)]
            n += concurrency
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if t0 >= start + warmup:
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(caller(i, session) for i in range(concurrency)))
    return latencies, failures


def summarise(latencies: list[float], failures: int, seconds: float) -> dict:
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "failures": failures,
        "rps": len(latencies) / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def example_bodies(model_uri: str, tracking_uri: str, n: int = 64) -> tuple[list, list]:
    """Real inputs of the model's shape: its logged input example, repeated with noise."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    t, f = model.data_info.seq_len, model.data_info.input_size
    rng = np.random.default_rng(0)
    seqs = rng.normal(size=(n, t, f)).astype(np.float32).round(4)
    inputs = [json.dumps({"inputs": [s.tolist()]}).encode() for s in seqs]
    ours = [json.dumps({"sequences": [s.tolist()]}).encode() for s in seqs]
    return inputs, ours


def tiny_champion(root: Path) -> tuple[str, str]:
    """A small MNIST-1D GRU registered in a fresh SQLite store (for --smoke-test)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from tune.driver import run_job
    from tune.spec import parse_job_spec

    uri = f"sqlite:///{root / 'mlflow.db'}"
    spec = parse_job_spec(
        {
            "name": "serve-bench",
            "data": {"name": "mnist1d", "limit": 1000},
            "model": {"cell_type": "gru", "hidden_size": 64, "bidirectional": True},
            "search_space": {},
            "search": {"num_samples": 1},
            "scheduler": {"name": "fifo"},
            "budget": {"max_epochs": 1},
            "storage": {"url": str(root / "store")},
            "tracking": {"uri": uri},
        }
    )
    run_job(spec)
    import ray

    ray.shutdown()
    return "models:/serve-bench@champion", uri


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-uri", default="models:/mnist1d-rnn@champion")
    p.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'runs/tune/mlflow.db'}")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "serve_bench.json")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.smoke_test:
        args.model_uri, args.tracking_uri = tiny_champion(tmp)
        args.seconds, args.warmup, args.concurrency = 6.0, 2.0, [8, 32]
    inputs, ours = example_bodies(args.model_uri, args.tracking_uri)
    env = {"MLFLOW_TRACKING_URI": args.tracking_uri, "RAY_USAGE_STATS_ENABLED": "0"}
    env |= {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    servers = {
        "mlflow models serve": (
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                args.model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
            ],
            "/ping",
            [("/invocations", inputs)],
        ),
        "rnntune serve": (
            [str(BIN / "rnntune"), "serve", args.model_uri, "--tracking-uri", args.tracking_uri],
            "/healthz",
            [("/predict", ours)],
        ),
        "rnntune serve --direct": (
            [str(BIN / "rnntune"), "serve", args.model_uri, "--tracking-uri", args.tracking_uri]
            + ["--direct"],
            "/healthz",
            [("/invocations", inputs), ("/predict", ours)],
        ),
    }
    rows = []
    for name, (argv, health, routes) in servers.items():
        port = free_port()
        argv = argv + ["-p" if "mlflow" in name else "--port", str(port)]
        base = f"http://127.0.0.1:{port}"
        log_name = name.replace(" ", "_").replace("-", "")
        proc = start_ready(log_name, argv, env, tmp, base, health, timeout=240)
        try:
            for route, bodies in routes:
                for c in args.concurrency:
                    lat, fails = asyncio.run(
                        load(base + route, bodies, c, args.seconds, args.warmup)
                    )
                    rows.append(
                        {
                            "server": name,
                            "route": route,
                            "concurrency": c,
                            **summarise(lat, fails, args.seconds),
                        }
                    )
                    r = rows[-1]
                    print(
                        f"{name:<24} {route:<13} c={c:<3} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  failures {fails}"
                    )
        finally:
            stop(proc)
    ratios = []
    for c in args.concurrency:
        base_row = next(
            r for r in rows if r["server"] == "mlflow models serve" and r["concurrency"] == c
        )
        for r in rows:
            if r["server"].startswith("rnntune serve") and r["concurrency"] == c:
                ratios.append(
                    {
                        "server": r["server"],
                        "route": r["route"],
                        "concurrency": c,
                        "throughput_ratio": r["rps"] / base_row["rps"],
                        "p99_ratio": r["p99_ms"] / base_row["p99_ms"],
                        "meets_goal": r["rps"] / base_row["rps"] >= GOAL
                        and r["p99_ms"] <= base_row["p99_ms"],
                    }
                )
    print(
        f"\n{'server':<24} {'route':<13} {'conc':>4} {'throughput x':>13} {'p99 ratio':>10}  goal (>= {GOAL}x, p99 <= MLflow's)"
    )
    for r in ratios:
        print(
            f"{r['server']:<24} {r['route']:<13} {r['concurrency']:>4} {r['throughput_ratio']:>13.2f} {r['p99_ratio']:>10.2f}  {'met' if r['meets_goal'] else 'MISSED'}"
        )
    out = {
        "model_uri": args.model_uri,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "rows": rows,
        "ratios": ratios,
        "smoke_test": args.smoke_test,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
