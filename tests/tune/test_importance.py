"""What mattered: fANOVA importances rank the parameter that decides the outcome first."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient

from tune.importance import Importance, importances, log_importance
from tune.spec import parse_job_spec


@dataclass
class FakeResult:  # what importances reads of a Tune Result
    metrics_dataframe: pd.DataFrame | None
    config: dict


SPACE = {
    "cell_type": {"choice": ["lstm", "gru", "rnn_tanh"]},
    "hidden_size": {"choice": [16, 32, 64]},
    "lr": {"loguniform": [1e-3, 1e-1]},
    "grad_clip": {"loguniform": [0.1, 10.0]},
}


def _search(decides: str, n: int = 16, seed: int = 0) -> list[FakeResult]:
    rng = random.Random(seed)
    results = []
    for _ in range(n):
        config = {
            "cell_type": rng.choice(["lstm", "gru", "rnn_tanh"]),
            "hidden_size": rng.choice([16, 32, 64]),
            "lr": 10 ** rng.uniform(-3, -1),
            "grad_clip": 10 ** rng.uniform(-1, 1),
        }
        good = {
            "cell_type": config["cell_type"] == "gru",
            "lr": config["lr"] > 0.01,
            "grad_clip": config["grad_clip"] < 1.0,
        }[decides]
        best = (0.9 if good else 0.35) + rng.uniform(0, 0.04)  # the rest is noise
        results.append(FakeResult(pd.DataFrame({"val_acc": [best - 0.2, best]}), config))
    return results


def _spec():
    return parse_job_spec({"data": {"name": "digits"}, "search_space": SPACE})


def test_the_parameter_that_decides_ranks_first():
    for decides in ("cell_type", "lr", "grad_clip"):
        imp = importances(_spec(), _search(decides))
        assert imp is not None and imp.trials == 16
        assert next(iter(imp.shares)) == decides, (decides, imp.shares)
        assert imp.shares[decides] > 0.5 and abs(sum(imp.shares.values()) - 1) < 1e-6


def test_unmeasured_trials_are_left_out_and_too_few_give_none():
    results = _search("cell_type", n=5)
    results[0].metrics_dataframe = pd.DataFrame({"train_loss": [2.3]})  # failed before val
    results[1].metrics_dataframe = None
    assert importances(_spec(), results) is None  # 3 measured < MIN_TRIALS
    fixed = parse_job_spec({"data": {"name": "digits"}, "search_space": {"lr": 0.01}})
    assert importances(fixed, _search("lr")) is None  # nothing searched


def test_importance_is_logged_as_a_table_and_a_figure(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = client.create_run(client.create_experiment("imp", str(tmp_path / "art"))).info.run_id
    imp = Importance({"cell_type": 0.8, "lr": 0.2}, 12)
    log_importance(client, run, imp, "val_acc", tmp_path)
    assert {a.path for a in client.list_artifacts(run)} >= {
        "importance.json",
        "importance.md",
        "importance.png",
    }
    saved = json.loads((tmp_path / "importance.json").read_text())
    assert saved["importance"] == {"cell_type": 0.8, "lr": 0.2} and saved["trials"] == 12
    assert imp.line() == "what mattered (fANOVA over 12 trials): cell_type 0.80, lr 0.20"
