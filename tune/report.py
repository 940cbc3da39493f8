"""Job summaries: per-trial rows, best trial per cell type, and the comparison figure for MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tune.spec import JobSpec
from tune.trainable import NON_FINITE


@dataclass
class TrialRow:
    trial_id: str
    cell_type: str
    num_layers: int
    hidden_size: int
    grad_clip: float | None
    bidirectional: bool
    best: float
    epochs: int
    time_s: float
    mean_epoch_s: float
    status: str
    curve: list[float]


def measured(df, metric: str) -> list[float]:
    """A trial's per-epoch values of `metric`, NaN where it was not measured (a NaN/inf value
    that the trial reported as the worst one, for the scheduler's sake)."""
    if df is None or df.empty or metric not in df:
        return []
    imputed = df[NON_FINITE].astype(str).str.split(",") if NON_FINITE in df else None
    return [
        math.nan
        if (imputed is not None and metric in imputed.iloc[i]) or not math.isfinite(float(v))
        else float(v)
        for i, v in enumerate(df[metric])
    ]


def best_value(df, metric: str, mode: str) -> float | None:
    values = [v for v in measured(df, metric) if not math.isnan(v)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def ranked_results(results, metric: str, mode: str) -> list:
    """Trials that measured `metric`, best first by their best measured value at any epoch.

    Not Tune's `get_best_result`: with one trial it returns that trial whatever it reported,
    and it would rank the stand-in value of a diverged epoch as a measurement.
    """
    scored = [(r, best_value(r.metrics_dataframe, metric, mode)) for r in results]
    scored = [(r, v) for r, v in scored if v is not None]
    scored.sort(key=lambda rv: rv[1], reverse=mode == "max")
    return [r for r, _ in scored]


def trial_rows(spec: JobSpec, results) -> list[TrialRow]:
    """One row per trial of a Tune ResultGrid (trials with no report are left out)."""
    metric, mode = spec.monitor
    rows = []
    for r in results:
        df = r.metrics_dataframe
        best = best_value(df, metric, mode)
        if best is None:
            continue
        t = spec.trial_spec(r.config)
        curve = measured(df, metric)
        epoch_s = df["epoch_time_s"].mean() if "epoch_time_s" in df else math.nan
        diverged = "diverged" in df and bool(df["diverged"].iloc[-1])
        status = "diverged" if diverged else ("error" if r.error else "ok")
        rows.append(
            TrialRow(
                trial_id=str(r.metrics.get("trial_id", r.path.rsplit("/", 1)[-1])),
                cell_type=t.model.cell_type,
                num_layers=t.model.num_layers,
                hidden_size=t.model.hidden_size,
                grad_clip=t.optim.grad_clip,
                bidirectional=t.model.bidirectional,
                best=best,
                epochs=len(curve),
                time_s=float(df["epoch_time_s"].sum()) if "epoch_time_s" in df else math.nan,
                mean_epoch_s=float(epoch_s),
                status=status,
                curve=curve,
            )
        )
    return rows


def best_per_cell(rows: list[TrialRow], mode: str) -> dict[str, TrialRow]:
    out: dict[str, TrialRow] = {}
    for row in rows:
        cur = out.get(row.cell_type)
        if cur is None or (row.best > cur.best if mode == "max" else row.best < cur.best):
            out[row.cell_type] = row
    return out


def cell_table(rows: list[TrialRow], metric: str, mode: str) -> str:
    """Markdown table: per cell type, best metric, its config, mean epoch time, trials."""
    lines = [
        f"| cell_type | best {metric} | layers | hidden | grad_clip | epochs | mean epoch s | trials |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cell, best in sorted(best_per_cell(rows, mode).items()):
        same = [r for r in rows if r.cell_type == cell]
        mean_epoch = sum(r.mean_epoch_s for r in same) / len(same)
        clip = f"{best.grad_clip:.3g}" if best.grad_clip else "-"
        lines.append(
            f"| {cell} | {best.best:.4f} | {best.num_layers} | {best.hidden_size} | {clip} | "
            f"{best.epochs} | {mean_epoch:.2f} | {len(same)} |"
        )
    return "\n".join(lines)


def comparison_figure(rows: list[TrialRow], metric: str, mode: str, path: Path) -> Path:
    """Best metric vs hidden size, depth and clip threshold by cell type; top-5 learning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({r.cell_type for r in rows})
    colors = {c: plt.cm.tab10(i) for i, c in enumerate(cells)}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, attr, label in (
        (axes[0, 0], "hidden_size", "hidden size"),
        (axes[0, 1], "num_layers", "layers"),
        (axes[1, 0], "grad_clip", "gradient clip threshold"),
    ):
        for cell in cells:
            pts = [
                (getattr(r, attr), r.best)
                for r in rows
                if r.cell_type == cell and getattr(r, attr) is not None
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=cell, color=colors[cell], alpha=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"best {metric}")
        if attr == "grad_clip":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(title="cell_type")
    top = sorted(rows, key=lambda r: -r.best if mode == "max" else r.best)[:5]
    ax = axes[1, 1]
    for r in top:
        ax.plot(
            range(1, len(r.curve) + 1),
            r.curve,
            color=colors[r.cell_type],
            marker=".",
            label=f"{r.cell_type} L{r.num_layers} h{r.hidden_size}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("learning curves of the top trials")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary_text(rows: list[TrialRow], metric: str, mode: str) -> str:
    lines = [
        f"{'cell_type':<9} {'layers':>6} {'hidden':>6} {'clip':>7} {metric:>9} {'epochs':>6} {'time_s':>7}"
    ]
    for cell, r in sorted(best_per_cell(rows, mode).items()):
        clip = f"{r.grad_clip:.3g}" if r.grad_clip else "-"
        lines.append(
            f"{cell:<9} {r.num_layers:>6} {r.hidden_size:>6} {clip:>7} {r.best:>9.4f} {r.epochs:>6} {r.time_s:>7.1f}"
        )
    return "\n".join(lines)
