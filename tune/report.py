"""Job summaries: per-trial rows, best trial per cell type, and the comparison figure for MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune.space import Choice, Distribution, Grid, LogUniform
from tune.spec import JobSpec
from tune.trials import NON_FINITE


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
    mean_epoch_s: float
    status: str
    curve: list[float]
    params: dict[str, Any] = field(default_factory=dict)  # the trial's searched values
    end: str = "completed"  # how it ended (tune.outcome's trial ends)


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
    sign = -1.0 if mode == "max" else 1.0
    # Ties (an accuracy on few sequences) go to the lower validation loss at the best epoch
    scored.sort(key=lambda rv: (sign * rv[1], loss_at_best(rv[0].metrics_dataframe, metric, mode)))
    return [r for r, _ in scored]


def best_epoch(df, metric: str, mode: str) -> tuple[int, float] | None:
    """The epoch at which `metric` was best and the validation loss then; among tied epochs
    the one with the lowest loss (inf where no loss tells them apart), then the first."""
    best = best_value(df, metric, mode)
    if best is None:
        return None
    apart = metric != "val_loss" and "val_loss" in df
    losses = measured(df, "val_loss") if apart else [math.inf] * len(df)
    epochs = df["epoch"] if "epoch" in df else range(1, len(df) + 1)
    tied = [
        (math.inf if math.isnan(loss) else loss, int(epoch))
        for epoch, v, loss in zip(epochs, measured(df, metric), losses, strict=True)
        if v == best
    ]
    loss, epoch = min(tied)
    return epoch, loss


def loss_at_best(df, metric: str, mode: str) -> float:
    """The lowest validation loss among the epochs where `metric` reached its best value."""
    found = best_epoch(df, metric, mode)
    return found[1] if found is not None else math.inf


def trial_rows(spec: JobSpec, results, ends: dict | None = None) -> list[TrialRow]:
    """One row per trial of a Tune ResultGrid (trials with no report are left out); `ends`:
    trial id -> tune.outcome.TrialEnd, how each ended."""
    searched = [k for k, v in spec.space.items() if isinstance(v, Distribution)]
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
        trial_id = str(r.metrics.get("trial_id", r.path.rsplit("/", 1)[-1]))
        end = (ends or {}).get(trial_id)
        rows.append(
            TrialRow(
                trial_id=trial_id,
                cell_type=t.model.cell_type,
                num_layers=t.model.num_layers,
                hidden_size=t.model.hidden_size,
                grad_clip=t.optim.grad_clip,
                bidirectional=t.model.bidirectional,
                best=best,
                epochs=len(curve),
                mean_epoch_s=float(epoch_s),
                status=status,
                curve=curve,
                params={k: r.config[k] for k in searched if k in r.config},
                end=end.end if end else ("diverged" if diverged else "completed"),
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


def best_table(rows: list[TrialRow], metric: str, mode: str) -> list[list[str]]:
    """The best trial of each cell type, one row each after a header: its metric, its values of
    every other searched parameter (the columns follow the search), its epochs, the cell
    type's mean epoch time and trial count. Rendered by `cell_table` and `summary_text`."""
    searched = sorted({k for r in rows for k in r.params} - {"cell_type"}, key=str)
    table = [["cell_type", f"best {metric}", *searched, "epochs", "mean epoch s", "trials"]]
    for cell, best in sorted(best_per_cell(rows, mode).items()):
        same = [r for r in rows if r.cell_type == cell]
        mean_epoch = sum(r.mean_epoch_s for r in same) / len(same)
        values = [short(_value(best, k)) for k in searched]
        table.append(
            [
                cell,
                f"{best.best:.4f}",
                *values,
                str(best.epochs),
                f"{mean_epoch:.2f}",
                str(len(same)),
            ]
        )
    return table


def cell_table(rows: list[TrialRow], metric: str, mode: str) -> str:
    """`best_table` in Markdown (the parent run's artifact)."""
    header, *body = best_table(rows, metric, mode)
    lines = [header, ["---"] * len(header), *body]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _is_categorical(dist, values: list) -> bool:
    """Choices, grids, booleans and strings are categories; so are integers with few values
    (layers 1, 2, 3: ticks 1.2, 1.4, ... would say otherwise)."""
    if isinstance(dist, Choice | Grid):
        return True
    if any(isinstance(v, bool | str) for v in values):
        return True
    return all(isinstance(v, int) for v in values) and len(set(values)) <= 6


MARKERS = {"completed": "o", "early_stopped": "x", "diverged": "v", "error": "v"}


def comparison_figure(
    spec: JobSpec, rows: list[TrialRow], metric: str, mode: str, path: Path
) -> Path:
    """Best metric against every searched parameter (categorical axes for choices and small
    integers, log for log-uniform), coloured by cell type, marked by how each trial ended; and
    the learning curves of the top five trials, each its own colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    space = {k: v for k, v in spec.space.items() if isinstance(v, Distribution)}
    names = list(space) or ["hidden_size"]
    cells = sorted({r.cell_type for r in rows})
    colors = {c: plt.cm.tab10(i) for i, c in enumerate(cells)}
    n = len(names) + 1
    cols = min(3, n)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, name in zip(flat, names, strict=False):
        _parameter_panel(ax, rows, name, space.get(name), colors, metric)
    _curves_panel(flat[len(names)], rows, names, metric, mode)
    for ax in flat[n:]:
        ax.axis("off")
    handles = [Line2D([], [], color=colors[c], marker="o", ls="", label=c) for c in cells]
    handles += [
        Line2D([], [], color="grey", marker=m, ls="", label=e.replace("_", "-"))
        for e, m in (("completed", "o"), ("early_stopped", "x"), ("diverged", "v"))
        if any(r.end == e or (e == "diverged" and r.end == "error") for r in rows)
    ]
    fig.legend(handles=handles, loc="upper right", fontsize=8, title="cell type / end")
    early = sum(r.end == "early_stopped" for r in rows)
    fig.suptitle(
        f"{spec.name}: best {metric} ({'higher' if mode == 'max' else 'lower'} is better) over "
        f"{len(rows)} trials, {early} early-stopped"
    )
    fig.tight_layout(rect=(0, 0, 0.88, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _parameter_panel(ax, rows: list[TrialRow], name: str, dist, colors: dict, metric: str):
    """Each trial's best value against one searched parameter."""
    from matplotlib.ticker import FuncFormatter

    values = [_value(r, name) for r in rows]
    positions = None  # category -> x, for categorical axes
    if _is_categorical(dist, [v for v in values if v is not None]):
        order = sorted({str(v) for v in values if v is not None}, key=_natural)
        positions = {v: i for i, v in enumerate(order)}
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.5, max(len(order), 1) - 0.5)
    elif isinstance(dist, LogUniform):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(  # 2 and 5 of each decade: 0.002, 0.005, 0.01
            FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}".lstrip("0.")[:1] in "25" else "")
        )
    for i, (r, v) in enumerate(zip(rows, values, strict=True)):
        if v is None:
            continue
        # categories: a small spread, so trials with one value do not hide each other
        x = v if positions is None else positions[str(v)] + 0.06 * ((i % 5) - 2)
        marker = MARKERS.get(r.end, "o")
        ax.scatter(x, r.best, color=colors[r.cell_type], marker=marker, s=36, alpha=0.85)
    ax.set_xlabel(name)
    ax.set_ylabel(f"best {metric}")
    ax.grid(alpha=0.3)


def _curves_panel(ax, rows: list[TrialRow], names: list[str], metric: str, mode: str) -> None:
    """The learning curves of the top five trials, each its own colour."""
    import matplotlib.pyplot as plt

    top = sorted(rows, key=lambda r: -r.best if mode == "max" else r.best)[:5]
    for rank, r in enumerate(top):
        epochs = range(1, len(r.curve) + 1)
        values = " ".join(short(r.params.get(k)) for k in names[:3])
        label = f"#{rank + 1} {values}: {r.best:.4f}"
        ax.plot(epochs, r.curve, color=plt.cm.Dark2(rank), marker=".", label=label)
        if r.end == "early_stopped":
            ax.plot(len(r.curve), r.curve[-1], color=plt.cm.Dark2(rank), marker="x", ms=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("learning curves of the top 5 trials", fontsize=10)
    ax.legend(fontsize=7, loc="best", title=" ".join(names[:3]), title_fontsize=7)
    ax.grid(alpha=0.3)


def _value(row: TrialRow, name: str):
    """A trial's value of `name`: searched, else the row's own field (nothing searched)."""
    return row.params.get(name, getattr(row, name, None))


def _natural(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def short(value, digits: int = 3) -> str:
    """A searched value as people read it: floats to `digits` significant digits."""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def summary_text(rows: list[TrialRow], metric: str, mode: str) -> str:
    """`best_table` as aligned text (the console's summary)."""
    table = best_table(rows, metric, mode)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ).rstrip()
