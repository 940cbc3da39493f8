"""Registered models belong to the user whose job created them; other data never promotes."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tune.driver import run_job
from tune.registry import OWNER_TAG, RegistryOwnership, champion_decision, claim_model_name
from tune.spec import parse_job_spec


@pytest.fixture
def client(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_first_job_owns_the_name_and_others_are_refused(client):
    claim_model_name(client, "team-a-model", "alice")
    assert client.get_registered_model("team-a-model").tags[OWNER_TAG] == "alice"
    claim_model_name(client, "team-a-model", "alice")  # the owner again: fine
    with pytest.raises(RegistryOwnership, match="'team-a-model' belongs to alice"):
        claim_model_name(client, "team-a-model", "mallory")


def test_a_model_from_before_owners_is_claimed_once(client):
    client.create_registered_model("legacy")
    claim_model_name(client, "legacy", "bob")
    with pytest.raises(RegistryOwnership):
        claim_model_name(client, "legacy", "carol")


def test_champion_on_other_data_is_never_replaced_automatically(client):
    client.create_registered_model("m")
    version = client.create_model_version("m", "file:///tmp/nowhere", run_id=None).version
    client.set_model_version_tag("m", version, "data_fingerprint", "aaaa")
    client.set_model_version_tag("m", version, "test_acc", "0.5")
    client.set_registered_model_alias("m", "champion", version)
    promote, reason, current, _ = champion_decision(client, "m", "test_acc", "max", 0.99, "bbbb")
    assert not promote and current == version and "other data" in reason
    promote, reason, _, _ = champion_decision(client, "m", "test_acc", "max", 0.99, "aaaa")
    assert promote and "beats" in reason


def test_job_under_another_users_model_fails_before_any_trial(client, tmp_path, monkeypatch):
    claim_model_name(client, "alices-model", "alice")
    monkeypatch.setenv("RNNTUNE_USER", "mallory")
    spec = parse_job_spec(
        {
            "name": "hostile",
            "data": {"name": "digits"},
            "storage": {"url": str(tmp_path / "store")},
            "tracking": {"uri": client.tracking_uri, "experiment": "owners"},
            "registry": {"model_name": "alices-model"},
        }
    )
    with pytest.raises(RegistryOwnership, match="belongs to alice"):
        run_job(spec)
    assert client.get_experiment_by_name("owners") is None or not client.search_runs(
        [client.get_experiment_by_name("owners").experiment_id]
    )
    assert client.get_registered_model("alices-model").latest_versions in ([], None)
