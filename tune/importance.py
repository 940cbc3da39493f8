"""What mattered: each searched hyperparameter's share of the variation in the trials' best
value, by functional ANOVA (Hutter et al. 2014, "An Efficient Approach for Assessing
Hyperparameter Importance"), as Optuna implements it, over the trials that measured the metric.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tune import report
from tune.space import Choice, Grid, LogUniform, RandInt, Uniform
from tune.spec import JobSpec

MIN_TRIALS = 4  # fewer cannot separate one parameter's effect from another's


@dataclass
class Importance:
    shares: dict[str, float]  # parameter -> share of the variance, largest first; sums to 1
    trials: int  # how many trials it is computed over

    def line(self, top: int = 5) -> str:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in list(self.shares.items())[:top])
        return f"what mattered (fANOVA over {self.trials} trials): {parts}"

    def table(self) -> str:
        rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in self.shares.items())
        return f"| parameter | importance |\n| --- | --- |\n{rows}\n"


def _distributions(spec: JobSpec) -> dict:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for name, dist in spec.space.items():
        match dist:
            case Choice(choice=values) | Grid(grid=values) if len(set(map(str, values))) > 1:
                out[name] = CategoricalDistribution(values)
            case Uniform(uniform=(low, high)) if low < high:
                out[name] = FloatDistribution(low, high)
            case LogUniform(loguniform=(low, high)) if low < high:
                out[name] = FloatDistribution(low, high, log=True)
            case RandInt(randint=(low, high)) if low < high:
                out[name] = IntDistribution(low, high)
    return out


def importances(spec: JobSpec, results, seed: int = 0) -> Importance | None:
    """fANOVA importances of the searched parameters for the job's metric at each trial's best
    epoch; None with fewer than MIN_TRIALS measured trials or nothing searched."""
    if len(results) < MIN_TRIALS:  # before Optuna's import: half a second of a tiny job
        return None
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import create_trial

    metric, mode = spec.monitor
    distributions = _distributions(spec)
    trials = []
    for r in results:
        best = report.best_value(r.metrics_dataframe, metric, mode)
        config = getattr(r, "config", None) or {}
        params = {k: config[k] for k in distributions if k in config}
        if best is None or len(params) < len(distributions):
            continue
        try:
            trials.append(create_trial(params=params, distributions=distributions, value=best))
        except ValueError:  # a value outside its distribution (a PBT mutation): left out
            continue
    if len(trials) < MIN_TRIALS or not distributions:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials(trials)
    shares = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return Importance({k: float(v) for k, v in shares.items()}, len(trials))


def log_importance(client, run_id: str, imp: Importance, metric: str, folder: Path) -> None:
    """importance.json, importance.md and importance.png on the job's parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "importance.json").write_text(
        json.dumps({"metric": metric, "trials": imp.trials, "importance": imp.shares}, indent=2)
    )
    (folder / "importance.md").write_text(imp.table())
    names = list(imp.shares)[::-1]  # largest on top
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2))
    ax.barh(names, [imp.shares[n] for n in names], color="#3b75af")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the variance in the best {metric}")
    ax.set_title(f"What mattered: fANOVA over {imp.trials} trials")
    fig.tight_layout()
    fig.savefig(folder / "importance.png", dpi=110)
    plt.close(fig)
    for name in ("importance.json", "importance.md", "importance.png"):
        client.log_artifact(run_id, str(folder / name))
