"""comparison.png: a panel per searched parameter, categorical where the values are."""

from __future__ import annotations

import random

import matplotlib
import pytest

from tune.report import TrialRow, _is_categorical, comparison_figure
from tune.space import Choice, LogUniform, RandInt
from tune.spec import parse_job_spec

matplotlib.use("Agg")

SPACE = {
    "cell_type": {"choice": ["gru", "lstm"]},
    "num_layers": {"choice": [1, 2]},
    "hidden_size": {"randint": [16, 64]},
    "lr": {"loguniform": [0.002, 0.01]},
}


@pytest.mark.parametrize(
    "dist, values, categorical",
    [
        (Choice(choice=[1, 2, 3]), [1, 2, 3], True),
        (RandInt(randint=(1, 4)), [1, 2, 3, 4], True),  # few integers: no 1.2, 1.4 ticks
        (RandInt(randint=(16, 512)), list(range(16, 96, 8)), False),
        (LogUniform(loguniform=(1e-3, 1e-1)), [0.001, 0.01], False),
        (None, [True, False], True),
    ],
)
def test_axes_are_categorical_for_choices_and_small_integers(dist, values, categorical):
    assert _is_categorical(dist, values) is categorical


def test_figure_has_a_panel_per_searched_parameter_and_marks_early_stops(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    spec = parse_job_spec({"name": "fig", "data": {"name": "digits"}, "search_space": SPACE})
    rng = random.Random(0)
    rows = []
    for i in range(8):
        params = {
            "cell_type": rng.choice(["gru", "lstm"]),
            "num_layers": rng.choice([1, 2]),
            "hidden_size": rng.randint(16, 64),
            "lr": 10 ** rng.uniform(-2.7, -2),
        }
        curve = [0.3 + 0.05 * k for k in range(2 if i % 2 else 6)]
        end = "early_stopped" if i % 2 else "completed"
        rows.append(
            TrialRow(f"t_{i:05d}", params["cell_type"], params["num_layers"],
                     params["hidden_size"], None, False, max(curve), len(curve), 0.2, "ok",
                     curve, params, end)
        )  # fmt: skip
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    comparison_figure(spec, rows, "val_acc", "max", tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    fig = figures[0]
    labelled = [ax for ax in fig.axes if ax.get_xlabel()]
    assert [ax.get_xlabel() for ax in labelled] == [*SPACE, "epoch"]
    by_name = {ax.get_xlabel(): ax for ax in labelled}
    assert [t.get_text() for t in by_name["num_layers"].get_xticklabels()] == ["1", "2"]
    assert by_name["lr"].get_xscale() == "log"
    assert "over 8 trials, 4 early-stopped" in fig._suptitle.get_text()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"gru", "lstm", "completed", "early-stopped"} <= set(legend)
