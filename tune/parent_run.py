"""The job's parent run in MLflow: opened (or reopened on resume) with the job's settings, spec
and data as a dataset input; its child runs found again when a job resumes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlflow.entities import Dataset, DatasetInput, InputTag, Param
from mlflow.tracking import MlflowClient

from tune import outcome as O
from tune.outcome import JOB_TAG, PARENT_TAG, TRIAL_TAG
from tune.registry import data_source, job_user
from tune.spec import JobSpec
from tune.tracking import Tracking


def dataset_input(spec: JobSpec) -> DatasetInput:
    """The job's data as an MLflow dataset input: source, digest, schema and row count.

    User data is described from its files' metadata, built-in datasets by their options; the
    digest is the data's one identity (`lightning_modules.data.identity`), which the registry
    also records as the model's data fingerprint.
    """
    cfg = spec.data
    if cfg.name == "sequences":
        from lightning_modules.data.inspect import describe

        d = describe(cfg)
        source, digest = d.source, d.digest
        schema = {"mlflow_colspec": [{"name": k, "type": v} for k, v in d.schema.items()]}
        profile = {"num_rows": d.rows, "files": d.files, "bytes": d.bytes, "format": d.format}
    else:
        from lightning_modules.data.identity import data_digest

        source, digest = data_source(cfg), data_digest(cfg)
        schema, profile = {}, {"options": cfg.model_dump(mode="json")}
    dataset = Dataset(
        name=cfg.name,
        digest=digest,
        source_type="http" if "://" in source else "local",
        source=json.dumps({"url": source}),
        schema=json.dumps(schema),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train/val/test")])


def source_tags() -> dict[str, str]:
    """Who ran it and what: the UI's User and Source columns, on the parent and every trial."""
    return {
        "mlflow.user": job_user(),
        "mlflow.source.type": "JOB",
        "mlflow.source.name": "rnntune (python -m tune)",
    }


def open_parent_run(
    client: MlflowClient,
    tracking: Tracking,
    spec: JobSpec,
    job_id: str,
    dataset: DatasetInput | None = None,
) -> str:
    """The job's parent run: reused when the job is resumed, created otherwise."""
    found = client.search_runs(
        [tracking.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=10
    )
    parents = [r for r in found if PARENT_TAG not in r.data.tags]
    if parents:
        client.update_run(parents[0].info.run_id, status="RUNNING")
        return parents[0].info.run_id
    run = client.create_run(
        tracking.experiment_id,
        run_name=job_id,
        tags={
            JOB_TAG: job_id,
            "rnntune.dataset": spec.data.name,
            "rnntune.kind": "job",
            **source_tags(),
        },
    )
    metric, mode = spec.monitor
    params = {
        "dataset": spec.data.name,
        "search_algorithm": spec.search.algorithm,
        "scheduler": spec.scheduler.name,
        "num_samples": spec.samples if spec.samples > 0 else "until the time budget",
        "time_budget_s": spec.budget.time_budget_s,
        "max_epochs": spec.max_epochs,
        "metric": metric,
        "mode": mode,
        "cpus_per_trial": spec.resources.cpus,
        "gpus_per_trial": spec.resources.gpus,
    }
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    client.log_dict(run.info.run_id, spec.model_dump(mode="json"), "job_spec.json")
    if dataset is not None:
        client.log_inputs(run.info.run_id, datasets=[dataset])
    return run.info.run_id


@dataclass
class TrialRuns:
    """A job's child runs so far: a resumed job continues them instead of duplicating them."""

    runs: dict[str, str]  # trial_id -> child run id
    ends: dict[str, O.TrialEnd]  # trial_id -> how it ended (trials that did)


def existing_trial_runs(client: MlflowClient, tracking: Tracking, parent_id: str) -> TrialRuns:
    found = client.search_runs(
        [tracking.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
        max_results=10_000,
    )
    runs, ends = {}, {}
    for r in found:
        trial_id = r.data.tags.get(TRIAL_TAG)
        if trial_id is None:
            continue
        runs[trial_id] = r.info.run_id
        end = r.data.tags.get(O.TRIAL_END_TAG)
        if end in O.TRIAL_ENDS and r.info.status != "RUNNING":
            ends[trial_id] = O.TrialEnd(end, r.data.tags.get(O.FAILURE_REASON_TAG, ""))
    return TrialRuns(runs, ends)
