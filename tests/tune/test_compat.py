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


def _sources_outside_compat():
    """(path relative to the repository, text) of every source file but tune/compat.py."""
    for package in ("lightning_modules", "tune", "service", "deploy"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path != ROOT / "tune" / "compat.py":
                yield path.relative_to(ROOT), path.read_text()


def test_private_framework_access_only_in_compat():
    offenders = []
    for path, text in _sources_outside_compat():
        for n, line in enumerate(text.splitlines(), 1):
            if PRIVATE.search(line.split("#")[0]):
                offenders.append(f"{path}:{n}: {line.strip()}")
    assert not offenders, "private Ray/MLflow access outside tune/compat.py:\n" + "\n".join(
        offenders
    )


FRAMEWORKS = ("ray", "mlflow", "optuna", "pytorch_lightning", "lightning_fabric", "torch")


def _framework_global_writes(source: str) -> list[int]:
    """Lines assigning an attribute of something imported from a framework (`warn_if_slow.
    DEFAULT_THRESHOLD = ...`, `ray_constants.FLAG = ...`): a global every user of it shares."""
    import ast

    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FRAMEWORKS:
            imported |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FRAMEWORKS:
                    imported.add(a.asname or a.name.split(".")[0])
    lines = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        targets += [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            if target is not root and isinstance(root, ast.Name) and root.id in imported:
                lines.append(target.lineno)
    return lines


def test_framework_globals_are_set_only_in_compat():
    offenders = [
        f"{path}:{n}"
        for path, text in _sources_outside_compat()
        for n in _framework_global_writes(text)
    ]
    assert not offenders, "framework-wide settings outside tune/compat.py:\n" + "\n".join(offenders)
    caught = "from ray.tune.utils.util import warn_if_slow\nwarn_if_slow.DEFAULT_THRESHOLD = 10\n"
    assert _framework_global_writes(caught) == [2]  # the check itself can fail


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
