"""Register a job's best model in the MLflow registry: `challenger` always, `champion` only if better."""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, RunStatus
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

import deploy.bundle
import lightning_modules
from deploy.bundle.inputs import LM_PARAMS
from deploy.bundle.requirements import serving_requirements
from lightning_modules.data import build_data, build_datamodule
from lightning_modules.data.identity import data_digest
from lightning_modules.metrics import test_name
from tune import compat
from tune.outcome import REGISTERED_TAG
from tune.spec import JobSpec

CHAMPION, CHALLENGER = "champion", "challenger"
OWNER_TAG = "rnntune.owner"  # on the registered model: the user whose job created it


class RegistryOwnership(PermissionError):
    """The model name belongs to another user; the message says whose."""


def job_user() -> str:
    """Who runs this job: the service passes its caller in RNNTUNE_USER; else the OS user."""
    try:
        local = getpass.getuser()
    except (KeyError, OSError):
        local = "local"
    return os.environ.get("RNNTUNE_USER") or local


def claim_model_name(client: MlflowClient, name: str, user: str) -> None:
    """Creates the registered model owned by `user`, or checks that `user` owns it.

    A model registered before owners were recorded is claimed by the first job that registers
    under it. Another user's model refuses: its versions and aliases are not this job's to move.
    """
    try:
        model = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name, tags={OWNER_TAG: user})
            return
        except mlflow.exceptions.MlflowException:
            model = client.get_registered_model(name)  # created meanwhile by another job
    owner = model.tags.get(OWNER_TAG)
    if owner is None:
        client.set_registered_model_tag(name, OWNER_TAG, user)
    elif owner != user:
        raise RegistryOwnership(
            f"registry.model_name: {name!r} belongs to {owner}; register under another name"
        )


@dataclass
class Registration:
    model_name: str
    version: str
    test_metric: str
    test_value: float
    test_metrics: dict[str, float]
    promoted: bool
    reason: str
    previous_champion: str | None
    previous_value: float | None
    data_fingerprint: str


def _better(new: float, old: float, mode: str) -> bool:
    return new > old if mode == "max" else new < old


def champion_decision(
    client: MlflowClient,
    name: str,
    metric: str,
    mode: str,
    value: float,
    fingerprint: str,
    this_version: str | None = None,
) -> tuple[bool, str, str | None, float | None]:
    """(promote?, reason, current champion version, its value on the same test set)."""
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return True, "no champion yet", None, None
    if current.version == this_version:  # promoted by an earlier, interrupted attempt
        return True, f"v{this_version} is the champion already (this job promoted it)", None, None
    tags = current.tags
    if tags.get("data_fingerprint") != fingerprint:
        # Never promote across data: a better number on other data says nothing (and a job could
        # otherwise take over a champion by testing on an easier set).
        return (
            False,
            f"champion v{current.version} was tested on other data (fingerprint "
            f"{tags.get('data_fingerprint')}, this model's {fingerprint}); not comparable, so "
            "not promoted automatically (`rnntune promote` decides)",
            current.version,
            None,
        )
    if metric not in tags:
        return (
            False,
            f"champion v{current.version} has no {metric} to compare with; not promoted "
            "automatically (`rnntune promote` decides)",
            current.version,
            None,
        )
    old = float(tags[metric])
    if _better(value, old, mode):
        return (
            True,
            f"{metric} {value:.4f} beats champion v{current.version} ({old:.4f})",
            current.version,
            old,
        )
    return (
        False,
        f"{metric} {value:.4f} does not beat champion v{current.version} ({old:.4f})",
        current.version,
        old,
    )


def data_source(data) -> str:
    """Where a job's data came from: its URL, or the package that generates it (the MLflow
    dataset input of the parent run and the registered model's lineage say the same)."""
    return getattr(data, "url", None) or f"package://{data.name}"


def _data_source(trial_spec):
    return HTTPDatasetSource(data_source(trial_spec.data))


def _example_and_signature(module, data, task: str):
    if task == "language_model":
        import pandas as pd

        example = pd.DataFrame({"prompt": ["The "]})
        return example, infer_signature(
            example, pd.DataFrame({"text": ["The cat"]}), params=LM_PARAMS
        )
    from deploy.bundle.pyfunc import RecurrentModel  # torch: see `_log_and_register`

    model = RecurrentModel().attach(module.net, module.spec, module.data_info)
    test = data.test.head(2)
    x = test.x.numpy()
    if model.prep is not None:
        # User data: raw (unstandardized) steps, cut to the pair's common length; any length and
        # any number of sequences are accepted (trailing all-NaN steps are padding).
        steps = int(test.lengths.min())
        x = x[:, :steps] * np.asarray(model.prep.std, np.float32) + np.asarray(
            model.prep.mean, np.float32
        )
        out = model.predict(None, x)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, x.shape[2]))]),
            outputs=infer_signature(x, out).outputs,
        )
        return x, signature
    return x, infer_signature(x, model.predict(None, x))


def job_version(client: MlflowClient, name: str, job_id: str):
    """The version this job registered already (a resumed job reuses it), or None."""
    found = client.search_model_versions(f"name = '{name}' and tags.job_id = '{job_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None


@dataclass(frozen=True)
class Lineage:
    """Where a registered model came from: the winning trial's child run, the trial, and the
    checkpoint (URI) it was rebuilt from."""

    run_id: str | None
    trial_id: str = ""
    checkpoint_uri: str = ""
    final_model: str = ""  # how the registered model was made from the trial, if not as is


def register_best(
    spec: JobSpec,
    job_id: str,
    parent_run_id: str,
    tracking_uri: str,
    checkpoint: Path,
    lineage: Lineage | None = None,
) -> Registration:
    """Test the best checkpoint once, log it as a pyfunc on the winning trial's run (the
    parent's without one), register and alias it; the version's tags name the job, trial,
    checkpoint and data, and the parent run names the version.

    Idempotent per job: the version is created with all its tags (job id first among them) in
    one call, so a driver killed at any point and resumed finds it and only redoes the aliases.
    """
    lineage = lineage or Lineage(None)
    client = MlflowClient(tracking_uri)
    name = spec.registry.model_name or spec.name
    claim_model_name(client, name, job_user())  # checked at the job's start; again, just before
    version = job_version(client, name, job_id)
    if version is None:
        version = _log_and_register(
            name, job_id, spec.monitor, parent_run_id, tracking_uri, checkpoint, lineage
        )
    tags = version.tags
    tname, mode = tags["metric"], tags["mode"]
    metrics = {k: float(tags[k]) for k in json.loads(tags["metric_names"])}
    value, fingerprint = metrics[tname], tags["data_fingerprint"]
    promote, reason, previous, previous_value = champion_decision(
        client, name, tname, mode, value, fingerprint, this_version=version.version
    )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    reg = Registration(
        name,
        version.version,
        tname,
        value,
        metrics,
        promote,
        reason,
        previous,
        previous_value,
        fingerprint,
    )
    client.log_dict(parent_run_id, asdict(reg), "champion_decision.json")
    client.set_tag(
        parent_run_id, "champion_decision", ("promoted: " if promote else "kept: ") + reason
    )
    client.set_tag(parent_run_id, REGISTERED_TAG, f"models:/{name}/{version.version}")
    return reg


BUNDLE = Path(deploy.bundle.__file__).parent


def _bundle_code(tmp: Path) -> str:
    """A `deploy` package holding exactly `deploy.bundle` (not the model server, which imports
    Ray): what a registered model imports besides `lightning_modules`."""
    package = tmp / "code" / "deploy"
    shutil.copytree(BUNDLE, package / "bundle", ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__init__.py").write_text(
        '"""The serving bundle of a registered rnntune model."""\n'
    )
    return str(package)


def _log_and_register(
    name: str,
    job_id: str,
    monitor: tuple[str, str],
    parent_run_id: str,
    tracking_uri: str,
    checkpoint: Path,
    lineage: Lineage,
):
    """Tests the checkpoint, logs the pyfunc on the winning trial's run and creates its version."""
    # torch and Lightning only here, after the search: a job's start does not wait for them
    # (the driver imports them in the background while its trials run, `tune.driver`)
    from lightning_modules.training import load_module

    module = load_module(checkpoint)
    trial_spec = module.spec
    data = build_data(trial_spec.data, trial_spec.trainer.seed)
    dm = build_datamodule(
        trial_spec.data, data, trial_spec.optim.batch_size, trial_spec.trainer.seed
    )
    metrics = {k: float(v) for k, v in module.evaluate(dm.test_dataloader()).items()}
    tname, mode = test_name(monitor[0]), monitor[1]
    fingerprint = data_digest(trial_spec.data)
    tags = _version_tags(
        module, metrics, (tname, mode), fingerprint, job_id, parent_run_id, lineage
    )
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    client.log_batch(
        parent_run_id, metrics=[Metric(k, v, _now_ms(), 0) for k, v in metrics.items()]
    )
    source_run = lineage.run_id or parent_run_id
    ended = client.get_run(source_run).info  # reopening the trial's run must not change its end
    with (
        tempfile.TemporaryDirectory() as tmp,
        mlflow.start_run(run_id=source_run),
        warnings.catch_warnings(),
        _quiet_mlflow(),
    ):
        warnings.simplefilter("ignore", UserWarning)  # integer-column and cloudpickle hints
        mlflow.log_input(
            MetaDataset(
                source=_data_source(trial_spec), name=trial_spec.data.name, digest=fingerprint
            ),
            context="train/val/test",
        )
        info = _log_pyfunc(module, data, Path(tmp))
        mlflow.log_metrics(metrics)
        version = mlflow.register_model(info.model_uri, name, tags=tags)
    if lineage.run_id and ended.end_time:  # the trial's run ends as and when it had ended
        compat.tracking_store(client).update_run_info(
            source_run, RunStatus.from_string(ended.status), ended.end_time, None
        )
    return version


def _version_tags(
    module,
    metrics: dict,
    test: tuple[str, str],
    fingerprint: str,
    job_id: str,
    parent: str,
    lineage,
) -> dict[str, str]:
    """What a model version says of itself: its job, data, test metrics, settings, lineage."""
    spec, folds = module.spec, module.data_info.ensemble
    return {
        "job_id": job_id,
        "dataset": spec.data.name,
        "data_fingerprint": fingerprint,
        "metric": test[0],
        "mode": test[1],
        "metric_names": json.dumps(sorted(metrics)),
        **{k: repr(v) for k, v in metrics.items()},
        "config": json.dumps(spec.applied_settings()),
        # Cross-validated trials: the k fold models, their probabilities (values) averaged
        "final_model": lineage.final_model
        or (f"ensemble of {folds} fold models" if folds > 1 else "single model"),
        "parent_run_id": parent,
        **({"trial_id": lineage.trial_id} if lineage.trial_id else {}),
        **({"checkpoint": lineage.checkpoint_uri} if lineage.checkpoint_uri else {}),
    }


def _log_pyfunc(module, data, folder: Path):
    """Logs the model (its bundle, code, signature, requirements) to the active run."""
    from deploy.bundle.pyfunc import MODEL_FILE, save_bundle
    from lightning_modules.training import data_info

    bundle = save_bundle(module.net, module.spec, data_info(data), folder / MODEL_FILE)
    example, signature = _example_and_signature(module, data, module.spec.task)
    return mlflow.pyfunc.log_model(
        name="model",
        # Model from code: loading runs deploy/bundle/model_code.py, no cloudpickled object.
        python_model=str(BUNDLE / "model_code.py"),
        artifacts={"model": str(bundle)},
        code_paths=[str(Path(lightning_modules.__file__).parent), _bundle_code(folder)],
        signature=signature,
        input_example=example,
        pip_requirements=serving_requirements(),
    )


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow's progress chatter while logging and registering ("Validating input example",
    "Registered model ... already exists", "Created version"), shown only if it fails."""
    logger = logging.getLogger("mlflow")
    level, said = logger.level, io.StringIO()
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stderr(said):
            yield
    except BaseException:
        sys.stderr.write(said.getvalue())
        raise
    finally:
        logger.setLevel(level)


def _now_ms() -> int:
    return int(time.time() * 1000)
