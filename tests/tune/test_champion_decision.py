"""champion_decision: a new model becomes champion only when it beats the champion on the same data.

One real MLflow registry on SQLite for the module (creating its tables takes seconds); each test
registers under its own model name.
"""

from __future__ import annotations

import itertools
import math

import pytest
from mlflow.tracking import MlflowClient

from tune.registry import CHALLENGER, CHAMPION, _better, champion_decision

FP, OTHER_FP = "f00d", "beef"
_names = itertools.count()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'm.db'}")


@pytest.fixture
def name(client):
    model = f"m{next(_names)}"
    client.create_registered_model(model)
    return model


def _version(client: MlflowClient, name: str, tags: dict[str, str], alias: str | None = None):
    """A version tagged as register_best tags it (metric values as repr strings)."""
    version = client.create_model_version(name, "file:///nowhere", run_id=None, tags=tags).version
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def _champion(client, name, metric="test_acc", value=0.8, fingerprint=FP):
    return _version(
        client, name, {"data_fingerprint": fingerprint, metric: repr(value)}, alias=CHAMPION
    )


@pytest.mark.parametrize(
    "new,old,mode,expected",
    [
        (0.9, 0.8, "max", True),
        (0.7, 0.8, "max", False),
        (0.8, 0.8, "max", False),
        (0.1, 0.2, "min", True),
        (0.3, 0.2, "min", False),
        (0.2, 0.2, "min", False),
        (math.nan, 0.2, "min", False),
        (math.nan, 0.8, "max", False),
    ],
)
def test_better_is_strict_in_the_mode_direction(new, old, mode, expected):
    assert _better(new, old, mode) is expected


def test_decision_for_an_unregistered_name_promotes(client):
    promote, reason, current, value = champion_decision(
        client, "never-registered", "test_acc", "max", 0.5, FP
    )
    assert promote and reason == "no champion yet" and current is None and value is None


def test_decision_without_a_champion_alias_promotes(client, name):
    _version(client, name, {"data_fingerprint": FP, "test_acc": "0.99"}, alias=CHALLENGER)
    promote, reason, current, value = champion_decision(client, name, "test_acc", "max", 0.1, FP)
    assert promote and reason == "no champion yet" and current is None and value is None


def test_decision_better_on_the_same_data_promotes(client, name):
    champ = _champion(client, name, value=0.8)
    promote, reason, current, value = champion_decision(client, name, "test_acc", "max", 0.9, FP)
    assert promote and str(current) == str(champ) and value == 0.8
    assert reason == f"test_acc 0.9000 beats champion v{champ} (0.8000)"


def test_decision_worse_on_the_same_data_keeps_the_champion(client, name):
    champ = _champion(client, name, value=0.8)
    promote, reason, current, value = champion_decision(client, name, "test_acc", "max", 0.7, FP)
    assert not promote and str(current) == str(champ) and value == 0.8
    assert reason == f"test_acc 0.7000 does not beat champion v{champ} (0.8000)"


def test_decision_tie_keeps_the_champion(client, name):
    _champion(client, name, value=0.8)
    promote, reason, _, _ = champion_decision(client, name, "test_acc", "max", 0.8, FP)
    assert not promote and "does not beat" in reason


def test_decision_mode_min_promotes_the_lower_value(client, name):
    champ = _champion(client, name, metric="test_loss", value=0.25)
    promote, reason, current, value = champion_decision(client, name, "test_loss", "min", 0.2, FP)
    assert promote and value == 0.25 and str(current) == str(champ)
    assert reason.startswith("test_loss 0.2000 beats champion")
    promote, reason, _, _ = champion_decision(client, name, "test_loss", "min", 0.3, FP)
    assert not promote and reason.startswith("test_loss 0.3000 does not beat")


def test_decision_mode_max_refuses_what_min_would_promote(client, name):
    _champion(client, name, metric="test_loss", value=0.25)
    promote, _, _, _ = champion_decision(client, name, "test_loss", "max", 0.2, FP)
    assert not promote


def test_decision_on_other_data_is_not_promoted_and_names_the_fingerprints(client, name):
    champ = _champion(client, name, value=0.5, fingerprint=OTHER_FP)
    promote, reason, current, value = champion_decision(client, name, "test_acc", "max", 0.99, FP)
    assert not promote and str(current) == str(champ) and value is None
    assert f"champion v{champ} was tested on other data" in reason
    assert f"fingerprint {OTHER_FP}, this model's {FP}" in reason
    assert "rnntune promote" in reason


def test_decision_champion_without_a_fingerprint_is_not_comparable(client, name):
    champ = _version(client, name, {"test_acc": "0.1"}, alias=CHAMPION)
    promote, reason, current, value = champion_decision(client, name, "test_acc", "max", 0.99, FP)
    assert not promote and str(current) == str(champ) and value is None
    assert "fingerprint None" in reason


def test_decision_champion_without_the_metric_is_not_promoted(client, name):
    # Tested on the same data, but for another metric: no number to compare with.
    champ = _champion(client, name, metric="test_loss", value=0.3)
    promote, reason, current, value = champion_decision(client, name, "test_acc", "max", 0.99, FP)
    assert not promote and str(current) == str(champ) and value is None
    assert "has no test_acc to compare with" in reason and "other data" not in reason


def test_decision_this_version_already_champion_promotes_again(client, name):
    # A resumed job whose earlier attempt set the alias: re-setting it is a no-op, not a demotion.
    champ = _champion(client, name, value=0.9)
    current = client.get_model_version_by_alias(name, CHAMPION).version
    promote, reason, previous, value = champion_decision(
        client, name, "test_acc", "max", 0.1, FP, this_version=current
    )
    assert promote and previous is None and value is None
    assert reason == f"v{champ} is the champion already (this job promoted it)"


def test_decision_another_version_is_compared_not_taken_as_champion(client, name):
    champ = _champion(client, name, value=0.9)
    newer = _version(client, name, {"data_fingerprint": FP, "test_acc": "0.1"})
    found = client.get_model_version(name, newer).version
    promote, reason, current, _ = champion_decision(
        client, name, "test_acc", "max", 0.1, FP, this_version=found
    )
    assert not promote and str(current) == str(champ) and "does not beat" in reason


def test_decision_reads_the_latest_champion_alias(client, name):
    _champion(client, name, value=0.5)
    second = _champion(client, name, value=0.95)  # the alias moved to the better version
    promote, reason, current, value = champion_decision(client, name, "test_acc", "max", 0.9, FP)
    assert not promote and str(current) == str(second) and value == 0.95
    assert f"champion v{second} (0.9500)" in reason
