"""What a user needs to know about their data before spending compute (`rnntune data inspect`).

`describe` reads metadata only (Parquet footers; CSV/NPZ are read whole, they are not the
large-data path): source, digest, schema and row count, which MLflow records as the job's
dataset input. `inspect` reads the data as a job would, on a sample when it is large.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import yaml

from lightning_modules.data.reading import (
    check_labels,
    distinct,
    fit_preprocessing,
    load_splits,
)
from lightning_modules.data.sequence_files import list_files
from lightning_modules.datasets.sequences import SequencesData

SAMPLE_ABOVE_BYTES = 256 << 20  # larger datasets are inspected on a sample of row groups


@dataclass
class SourceSummary:
    source: str
    format: str
    files: int
    bytes: int
    rows: int  # Parquet / NPZ: sequences; CSV: time steps
    schema: dict[str, str]
    digest: str = ""


def describe(cfg: SequencesData, with_digest: bool = True) -> SourceSummary:
    """Source, format, size, schema and row count of `cfg.url`, from metadata where possible."""
    from lightning_modules.data.identity import data_digest

    fs, files, fmt = list_files(cfg.url, cfg.format)
    size = sum(fs.size(f) for f in files)
    rows, schema = 0, {}
    for path in files:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with fs.open(path, "rb") as f:
                meta = pq.ParquetFile(f).metadata
                rows += meta.num_rows
                arrow = meta.schema.to_arrow_schema()
                schema = schema or {
                    n: str(t) for n, t in zip(arrow.names, arrow.types, strict=True)
                }
        elif fmt == "csv":
            import pandas as pd

            with fs.open(path, "rb") as f:
                df = pd.read_csv(f)
            rows += len(df)
            schema = schema or {c: str(t) for c, t in df.dtypes.items()}
        else:
            d = np.load(io.BytesIO(fs.cat_file(path)), allow_pickle=cfg.allow_pickle)
            arrays = {k: d[k] for k in d.files}
            rows += len(arrays.get("x", ()))
            schema = schema or {k: f"{a.dtype}{list(a.shape)}" for k, a in arrays.items()}
    return SourceSummary(
        cfg.url, fmt, len(files), size, rows, schema, data_digest(cfg) if with_digest else ""
    )


@dataclass
class Report:
    source: SourceSummary
    sampled: bool
    split_sizes: dict[str, int]
    lengths: dict[str, float]  # min / median / p95 / max steps (training split)
    features: list[dict]  # name, min, max, mean, std, missing
    classes: dict[str, int] = field(default_factory=dict)  # label -> training count
    targets: list[dict] = field(default_factory=list)  # regression: per target column
    data_block: str = ""
    validation: str = ""  # how a job's trials would be scored (splits.ValidationPlan)
    validation_warning: str = ""


def inspect(cfg: SequencesData, sample: int = 20_000) -> Report:
    """Read the data as a job would (the run's seed 0), on the first `sample` sequences if large."""
    source = describe(cfg)
    sampled = source.bytes > SAMPLE_ABOVE_BYTES and source.format == "parquet"
    read_cfg = cfg.model_copy(update={"limit": sample}) if sampled else cfg
    splits, plan = load_splits(read_cfg, seed=0, max_rows=sample if sampled else None)
    check_labels(cfg, splits)
    own = distinct(splits)
    train = splits["train"]
    prep = fit_preprocessing(cfg, train)
    lengths = np.array([len(prep.truncate(x)) for x in train.x])
    steps = np.concatenate([prep.truncate(x) for x in train.x])
    features = [
        {
            "name": name,
            "min": float(np.nanmin(steps[:, i])) if np.isfinite(steps[:, i]).any() else None,
            "max": float(np.nanmax(steps[:, i])) if np.isfinite(steps[:, i]).any() else None,
            "mean": float(prep.fill[i]),
            "std": float(np.nanstd(steps[:, i])) if np.isfinite(steps[:, i]).any() else None,
            "missing": int(
                sum(np.isnan(prep.truncate(x)[:, i]).sum() for s in own for x in splits[s].x)
            ),
        }
        for i, name in enumerate(prep.feature_names)
    ]
    report = Report(
        source=source,
        sampled=sampled,
        split_sizes={s: len(splits[s]) for s in own},
        validation=plan.describe(),
        validation_warning=plan.warning,
        lengths={
            "min": int(lengths.min()),
            "median": float(np.median(lengths)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
        },
        features=features,
    )
    if cfg.task == "classification":
        values, counts = np.unique(np.array([str(v) for v in train.y]), return_counts=True)
        report.classes = dict(zip(values.tolist(), counts.tolist(), strict=True))
    else:
        y = train.y.astype(np.float64)
        report.targets = [
            {
                "column": i,
                "min": float(y[:, i].min()),
                "max": float(y[:, i].max()),
                "mean": float(y[:, i].mean()),
                "std": float(y[:, i].std()),
            }
            for i in range(y.shape[1])
        ]
    block = cfg.model_dump(exclude_defaults=True)
    block = {"name": "sequences", **block}
    report.data_block = yaml.safe_dump({"data": block}, sort_keys=False)
    return report


def format_report(r: Report) -> str:
    s = r.source
    lines = [
        f"{s.source}: {s.format}, {s.files} file(s), {s.bytes / 1e6:.1f} MB, {s.rows} rows, digest {s.digest}",
    ]
    if r.sampled:
        lines.append(
            "(large dataset: statistics below are from a sample; counts per split are of the sample)"
        )
    lines.append("sequences: " + ", ".join(f"{k} {v}" for k, v in r.split_sizes.items()))
    lines.append(f"validation: {r.validation}")
    if r.validation_warning:
        lines.append(f"warning: {r.validation_warning}")
    L = r.lengths
    lines.append(
        f"steps per sequence (train): min {L['min']}, median {L['median']:.0f}, p95 {L['p95']:.0f}, max {L['max']}"
    )
    lines.append(f"{len(r.features)} feature(s) (train split):")
    lines.append(f"  {'name':<20} {'min':>10} {'max':>10} {'mean':>10} {'std':>10} {'missing':>8}")
    for f in r.features:
        nums = [
            f"{v:>10.4g}" if v is not None else f"{'-':>10}"
            for v in (f["min"], f["max"], f["mean"], f["std"])
        ]
        lines.append(f"  {f['name']:<20} {' '.join(nums)} {f['missing']:>8}")
    if r.classes:
        lines.append(
            f"{len(r.classes)} classes (train counts): "
            + ", ".join(f"{k} {v}" for k, v in r.classes.items())
        )
    for t in r.targets:
        lines.append(
            f"target {t['column']}: min {t['min']:.4g}, max {t['max']:.4g}, mean {t['mean']:.4g}, std {t['std']:.4g}"
        )
    lines += ["", "paste into a spec:", r.data_block.rstrip()]
    return "\n".join(lines)
