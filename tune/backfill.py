"""Epochs Tune recorded that never reached MLflow (a killed driver's writes still queued, or
held through an outage it did not outlive), logged when the job resumes from the trials' stored
results, at their epochs and times."""

from __future__ import annotations

import math
import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from lightning_modules.metrics import reported
from tune.spec import JobSpec
from tune.trial_logger import BEST_EPOCH, MAX_METRICS_PER_BATCH, best_name, improves
from tune.trials import DIVERGED, NON_FINITE


def backfill(client: MlflowClient, runs: dict[str, str], spec: JobSpec, results) -> int:
    """Logs what each trial's run lacks of its stored results; returns the number of points."""
    sent = 0
    for r in results:
        df, run_id = r.metrics_dataframe, runs.get(str(r.metrics.get("trial_id")))
        if df is None or run_id is None or "epoch" not in df:
            continue
        missing = []
        for key in reported(df.columns):
            have = {m.step for m in client.get_metric_history(run_id, key)}
            for _, row in df.iterrows():
                step, value = int(row["epoch"]), row[key]
                imputed = key in str(row.get(NON_FINITE) or "").split(",")
                if step in have or imputed or not math.isfinite(float(value)):
                    continue
                have.add(step)
                when = int(float(row.get("timestamp", time.time())) * 1000)
                missing.append(Metric(key, float(value), when, step))
        missing += _best(client, run_id, spec, df)
        for i in range(0, len(missing), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=missing[i : i + MAX_METRICS_PER_BATCH])
        sent += len(missing)
    return sent


def _best(client: MlflowClient, run_id: str, spec: JobSpec, df) -> list[Metric]:
    """best_<metric> and best_epoch at the best stored epoch, if the run lacks them."""
    metric, mode = spec.monitor
    if metric not in df:
        return []
    best, when = None, 0
    for _, row in df.iterrows():
        imputed = metric in str(row.get(NON_FINITE) or "").split(",")
        if imputed or row.get(DIVERGED):
            continue
        if improves(float(row[metric]), best, mode):
            best = (float(row[metric]), int(row["epoch"]))
            when = int(float(row.get("timestamp", time.time())) * 1000)
    have = {m.step for m in client.get_metric_history(run_id, best_name(metric))}
    if best is None or best[1] in have:
        return []
    return [
        Metric(best_name(metric), best[0], when, best[1]),
        Metric(BEST_EPOCH, float(best[1]), when, best[1]),
    ]
