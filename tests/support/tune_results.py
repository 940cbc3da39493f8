"""Stand-ins for Ray Tune's results: the fields the job's summary and its end read."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tune.trials import NON_FINITE


@dataclass
class FakeResult:  # the fields of a Tune Result the summary reads
    metrics_dataframe: pd.DataFrame | None
    path: str = ""
    best_checkpoints: list = field(default_factory=list)


def frame(values: list[float], imputed: list[bool]) -> pd.DataFrame:
    return pd.DataFrame(
        {"val_acc": values, NON_FINITE: ["val_acc,val_loss" if i else "" for i in imputed]}
    )
