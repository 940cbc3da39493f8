"""Canaries for the private Ray/MLflow internals in `tune/compat.py`: an upgrade that moves one
fails here, by name, not in the middle of a search. And nothing else reaches for them."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from ray import tune as ray_tune
from ray.tune.experiment import Trial

from tests.support.paths import ROOT
from tune import compat

PRIVATE = re.compile(
    r"\b(?:ray|mlflow)(?:\.\w+)*\._\w"  # ray._private, mlflow.tracking._tracking_service
    r"|\.(?:_raylet|_local_tuner|_tracking_client|_checkpoint_results|_latest_checkpoint_result)\b"
)


def test_private_framework_access_only_in_compat():
    offenders = []
    for package in ("lightning_modules", "tune", "service", "deploy"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "tune" / "compat.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if PRIVATE.search(line.split("#")[0]):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "private Ray/MLflow access outside tune/compat.py:\n" + "\n".join(
        offenders
    )


def test_ray_loopback_flag_is_settable(monkeypatch):
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setenv("RNNTUNE_CANARY_FLAG", "0")
    compat.ray_loopback_flag("RNNTUNE_CANARY_FLAG")
    assert ray_constants.ENABLE_RAY_CLUSTER is False
    monkeypatch.setenv("RNNTUNE_CANARY_FLAG", "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    compat.ray_loopback_flag("RNNTUNE_CANARY_FLAG")
    assert ray_constants.ENABLE_RAY_CLUSTER is True


def test_restored_tuner_takes_new_callbacks():
    tuner = ray_tune.Tuner(lambda config: None)  # builds the run config; starts no Ray
    callback = ray_tune.Callback()
    compat.set_restored_callbacks(tuner, [callback])
    assert tuner._local_tuner.get_run_config().callbacks == [callback]


def test_trial_checkpoint_list_can_be_edited():
    trial = Trial("__fake", stub=True)
    assert compat.checkpoint_results(trial) == []
    assert compat.latest_checkpoint_result(trial) is None
    compat.keep_checkpoint_results(trial, [], None)
    assert trial.checkpoint is None  # what a restarted trial reads


def test_mlflow_store_and_engine_are_reachable(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'canary.db'}")
    assert hasattr(compat.tracking_store(client), "update_run_info")
    assert compat.sqlalchemy_engine(client).dialect.name == "sqlite"


def test_a_moved_internal_is_named():
    with pytest.raises(compat.FrameworkChanged, match="_tracking_client"):
        compat.tracking_store(SimpleNamespace())  # a client whose internals moved
    with pytest.raises(compat.FrameworkChanged, match="checkpoint_manager"):
        compat.checkpoint_results(SimpleNamespace(run_metadata=None))


def test_ray_token_auth_notice_can_be_quieted():
    import logging

    compat.quiet_ray_token_auth_notice()
    assert logging.getLogger(compat.RAY_TOKEN_AUTH_MODULE).level == logging.ERROR
