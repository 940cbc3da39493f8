"""Search quality on public small datasets: the champion of a minimal-spec search against the
published classical baselines, on the archives' own train/test splits.

Each dataset is searched as a new user would: `rnntune run` on a spec holding only the `data:`
block (as `rnntune data inspect` prints it) and `budget: {time_budget_s: 300}`, in its own
process. The champion is then scored on the archive's test split through its registered MLflow
pyfunc (what serving answers), and the wall time is measured from the process's start to its exit.

Classification: JapaneseVowels, BasicMotions (multivariate), GunPoint, ItalyPowerDemand
(univariate), from the UEA/UCR archive files inside sktime's wheel. Published accuracies:

- 1-NN DTW. Multivariate: dependent DTW (DTW_D), Bagnall et al. 2018, "The UEA multivariate time
  series classification archive, 2018", arXiv:1811.00075, Table 3 (JapaneseVowels 0.949,
  BasicMotions 0.975). Univariate: DTW with a full window, the UCR archive's own table (Dau et
  al. 2019, "The UCR time series archive", arXiv:1810.07758; timeseriesclassification.com):
  GunPoint 0.907, ItalyPowerDemand 0.950.
- ROCKET: Dempster, Petitjean & Webb 2020, "ROCKET: exceptionally fast and accurate time series
  classification using random convolutional kernels", DMKD 34 (results on the UCR archive's
  default splits: GunPoint 1.000, ItalyPowerDemand 0.970); multivariate from Ruiz et al. 2021,
  "The great multivariate time series classification bake off", DMKD 35 (JapaneseVowels 0.962,
  BasicMotions 1.000).

Regression (forecasting as regression): the half-hourly solar generation series in sktime's
data (289 points): windows of 24 steps predict the next one; the last 20% of windows (in time)
are the test split. Baselines computed here: the training mean, and the window's last value.

    .venv/bin/python bench/uea.py                        # ~25 min on 2 cores
    .venv/bin/python bench/uea.py --smoke-test           # GunPoint with a 60 s budget
    .venv/bin/python bench/uea.py --datasets JapaneseVowels --seeds 0 1 2  # seed spread
    .venv/bin/python bench/uea.py --final-model refit    # the refit instead of the ensemble
    .venv/bin/python bench/uea.py --set optim.lr_schedule=cosine --out bench/results/x.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
CLASSIFICATION = {  # name: (1-NN DTW accuracy, ROCKET accuracy), sources in the docstring
    "JapaneseVowels": (0.949, 0.962),
    "BasicMotions": (0.975, 1.000),
    "GunPoint": (0.907, 1.000),
    "ItalyPowerDemand": (0.950, 0.970),
}
REGRESSION = ("SolarForecast",)
WINDOW = 24


def sktime_data() -> Path:
    spec = importlib.util.find_spec("sktime")  # its data files only; the package is never imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sktime is not installed: run `make setup`")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """A `.ts` archive file as (sequences (T, F), labels): the example's own reader."""
    where = ROOT / "examples" / "data" / "japanese_vowels.py"
    spec = importlib.util.spec_from_file_location("japanese_vowels_example", where)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.read_ts(path)


def write_parquet(path: Path, sequences: list[np.ndarray], labels: list) -> None:
    label_type = pa.float64() if isinstance(labels[0], float) else pa.string()
    table = pa.table(
        {"sequence": [s.tolist() for s in sequences], "label": labels},
        schema=pa.schema([("sequence", pa.list_(pa.list_(pa.float32()))), ("label", label_type)]),
    )
    pq.write_table(table, path)


def classification_files(name: str, folder: Path) -> dict:
    out = {}
    for split in ("train", "test"):
        xs, ys = read_ts(sktime_data() / name / f"{name}_{split.upper()}.ts")
        write_parquet(folder / f"{split}.parquet", xs, ys)
        out[split] = (xs, ys)
    return out


def solar_files(folder: Path) -> dict:
    """Windows of the solar series (kW) -> the next value; the last 20% of windows are test."""
    import pandas as pd

    series = pd.read_csv(sktime_data() / "solar" / "solar.csv")["solar_gen"].to_numpy(np.float32)
    xs = [series[i : i + WINDOW].reshape(-1, 1) for i in range(len(series) - WINDOW)]
    ys = [float(series[i + WINDOW]) for i in range(len(series) - WINDOW)]
    cut = int(len(xs) * 0.8)
    out = {"train": (xs[:cut], ys[:cut]), "test": (xs[cut:], ys[cut:])}
    for split, (x, y) in out.items():
        write_parquet(folder / f"{split}.parquet", x, y)
    return out


def run_search(
    name: str,
    task: str,
    folder: Path,
    budget: float,
    seed: int,
    final: str = "ensemble",
    overrides: dict | None = None,
) -> dict:
    """`rnntune run` on a minimal spec (plus `--set` overrides), timed from process start to exit."""
    spec = {
        "name": f"uea-{name.lower()}-{seed}",
        "data": {
            "name": "sequences",
            "url": str(folder / "train.parquet"),
            "test_url": str(folder / "test.parquet"),
            "task": task,
        },
        "budget": {"time_budget_s": budget},
        "search": {"seed": seed},
        "storage": {"url": str(folder / "store")},
        **({"registry": {"final_model": final}} if final != "ensemble" else {}),
    }
    for section, fields in (overrides or {}).items():
        spec[section] = {**spec.get(section, {}), **fields}
    path = folder / f"spec-{seed}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    start = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("rnntune")), "run", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    wall = time.monotonic() - start
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"{name}: rnntune run exited {done.returncode}:\n{out[-3000:]}")
    registered = re.search(r"registered (\S+) v(\d+)", out)
    trials = re.search(r"job \S+: (\d+) trials?", out)
    validation = re.search(r"rnntune: validation: ([^(\n]+)", out)
    return {
        "wall_s": round(wall, 1),
        "budget_s": budget,
        "trials": int(trials.group(1)) if trials else None,
        "validation": validation.group(1).strip() if validation else "",
        "model_uri": f"models:/{registered.group(1)}/{registered.group(2)}",
        "tracking_uri": f"sqlite:///{folder / 'store' / 'mlflow.db'}",
    }


CHAMPION_FIELDS = ("cell_type", "num_layers", "hidden_size", "bidirectional", "patch", "lr")


def served_predictions(run: dict, xs: list[np.ndarray]):
    """The champion's answers through its registered pyfunc; its searched settings go in `run`."""
    import mlflow

    mlflow.set_tracking_uri(run["tracking_uri"])
    _, _, name, version = run["model_uri"].split("/")
    config = json.loads(mlflow.MlflowClient().get_model_version(name, version).tags["config"])
    run["champion"] = {k: config[k] for k in CHAMPION_FIELDS if k in config}  # flat settings
    model = mlflow.pyfunc.load_model(run["model_uri"])
    # Ragged sequences: MLflow's schema check takes only padded (N, T, F) arrays
    return model.unwrap_python_model().predict(None, list(xs))


def bench_classification(
    name: str, budget: float, seed: int, tmp: Path, final: str, overrides: dict
) -> dict:
    folder = tmp / name
    folder.mkdir(parents=True)
    data = classification_files(name, folder)
    run = run_search(name, "classification", folder, budget, seed, final, overrides)
    xs, ys = data["test"]
    predicted = served_predictions(run, xs)["label"].astype(str).tolist()
    acc = float(np.mean([p == y for p, y in zip(predicted, ys, strict=True)]))
    dtw, rocket = CLASSIFICATION[name]
    return {
        "dataset": name,
        "train": len(data["train"][0]),
        "test": len(xs),
        "test_acc": round(acc, 4),
        "dtw_1nn": dtw,
        "rocket": rocket,
        "beats_dtw": acc >= dtw,
        "gap_to_rocket": round(rocket - acc, 4),
        **run,
    }


def bench_regression(budget: float, seed: int, tmp: Path, final: str, overrides: dict) -> dict:
    folder = tmp / "SolarForecast"
    folder.mkdir(parents=True)
    data = solar_files(folder)
    run = run_search("SolarForecast", "regression", folder, budget, seed, final, overrides)
    xs, ys = data["test"]
    y = np.array(ys)
    predicted = served_predictions(run, xs)["value"].to_numpy()

    def rmse(p) -> float:
        return round(float(math.sqrt(np.mean((np.asarray(p) - y) ** 2))), 4)

    return {
        "dataset": "SolarForecast",
        "train": len(data["train"][0]),
        "test": len(xs),
        "test_rmse": rmse(predicted),
        "mean_rmse": rmse(np.full_like(y, np.mean(data["train"][1]))),
        "last_value_rmse": rmse([x[-1, 0] for x in xs]),
        **run,
    }


def table(rows: list[dict]) -> str:
    lines = [
        f"{'dataset':<18} {'train':>5} {'acc/rmse':>9} {'1NN-DTW':>8} {'ROCKET':>7} "
        f"{'trials':>6} {'wall_s':>7}  validation"
    ]
    for r in rows:
        if "test_acc" in r:
            score, ref1, ref2 = f"{r['test_acc']:.3f}", f"{r['dtw_1nn']:.3f}", f"{r['rocket']:.3f}"
        else:
            score = f"{r['test_rmse']:.3f}"
            ref1, ref2 = f"m{r['mean_rmse']:.3f}", f"l{r['last_value_rmse']:.3f}"
        lines.append(
            f"{r['dataset']:<18} {r['train']:>5} {score:>9} {ref1:>8} {ref2:>7} "
            f"{r['trials'] or '-':>6} {r['wall_s']:>7.0f}  {r['validation'][:48]}"
        )
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """`optim.lr_schedule=cosine` -> {"optim": {"lr_schedule": "cosine"}} (values read as YAML)."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, field = key.partition(".")
        if not (sep and dot and section and field):
            raise SystemExit(f"--set {item!r}: expected SECTION.FIELD=VALUE")
        out.setdefault(section, {})[field] = yaml.safe_load(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=300.0, help="time_budget_s per search")
    p.add_argument("--datasets", nargs="*", default=[*CLASSIFICATION, *REGRESSION])
    p.add_argument("--seeds", type=int, nargs="*", default=[0], help="search.seed values")
    p.add_argument("--out", type=Path, default=RESULTS / "uea.json")
    p.add_argument("--smoke-test", action="store_true", help="GunPoint alone, a 60 s budget")
    p.add_argument(
        "--final-model",
        choices=["ensemble", "refit"],
        default="ensemble",
        help="registry.final_model of every search (compare the two)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="a spec setting added to every search (YAML value), e.g. optim.lr_schedule=cosine",
    )
    args = p.parse_args()
    overrides = parse_overrides(args.overrides)
    if args.smoke_test:
        args.budget, args.datasets = 60.0, ["GunPoint"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnntune-uea-") as tmp:
        for seed in args.seeds:
            for name in args.datasets:
                where = Path(tmp) / f"seed{seed}"
                if name in REGRESSION:
                    row = bench_regression(args.budget, seed, where, args.final_model, overrides)
                else:
                    row = bench_classification(
                        name, args.budget, seed, where, args.final_model, overrides
                    )
                rows.append(
                    {**row, "seed": seed, "final_model": args.final_model, "set": args.overrides}
                )
                print(table([rows[-1]]).splitlines()[-1], flush=True)
    accs = [r for r in rows if "test_acc" in r]
    by_seed = [r["test_acc"] for r in accs if r["dataset"] == "JapaneseVowels"]
    summary = {
        "final_model": args.final_model,
        "set": args.overrides,
        "japanese_vowels_sd_over_seeds": round(float(np.std(by_seed)), 4)
        if len(by_seed) > 1
        else None,
        "all_beat_dtw": all(r["beats_dtw"] for r in accs),
        "mean_gap_to_rocket": round(float(np.mean([r["gap_to_rocket"] for r in accs])), 4)
        if accs
        else None,
        "within_budget": all(r["wall_s"] <= 1.1 * r["budget_s"] for r in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    print()
    print(table(rows))
    print(json.dumps(summary))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
