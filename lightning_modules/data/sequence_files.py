"""Reading the user's sequence files (Parquet, long-format CSV, NumPy .npz) from any fsspec URL.

Everything a file can get wrong raises `DataFileError` naming the file, the column and what was
expected, so `rnntune` prints one line instead of a traceback.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import fsspec
import numpy as np

from lightning_modules.datasets.sequences import SequencesData

EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".npz": "npz"}


class DataFileError(ValueError):
    """A data file that does not match the spec's layout; the message names file and column."""


@dataclass
class RawSequences:
    """Sequences as read: (T_i, F) float arrays (NaN = missing), one label or target row each."""

    x: list[np.ndarray]
    y: np.ndarray  # (N,) labels of any type, or (N, K) float targets
    feature_names: list[str]
    where: list[str]  # per sequence, for messages: "file.parquet row 3" / "file.csv id 'a'"
    split: np.ndarray | None = None  # (N,) train | val | test, from `split_column`
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: np.ndarray) -> RawSequences:
        return RawSequences(
            [self.x[i] for i in idx],
            self.y[idx],
            self.feature_names,
            [self.where[i] for i in idx],
            None if self.split is None else self.split[idx],
            self.files,
        )


def list_files(
    url: str, fmt: str | None = "auto"
) -> tuple[fsspec.AbstractFileSystem, list[str], str]:
    """(filesystem, data files, format) for a file, a folder (recursively) or a glob; with
    `fmt` None, every file there (a format of its own: text, MNIST's IDX files)."""
    fs, path = fsspec.core.url_to_fs(url)
    if any(c in path for c in "*?["):
        files = sorted(fs.glob(path))
    elif fs.isdir(path):
        files = sorted(f for f in fs.find(path) if not f.rsplit("/", 1)[-1].startswith((".", "_")))
    elif fs.exists(path):
        files = [path]
    else:
        raise DataFileError(f"data.url: {url}: no such file or folder")
    if fmt is None:
        return fs, files, ""
    if fmt == "auto":
        kinds = {EXTENSIONS.get(_ext(f)) for f in files} - {None}
        if len(kinds) != 1:
            raise DataFileError(
                f"data.format: cannot tell the format of {url} from its extensions "
                f"({', '.join(EXTENSIONS)}); set data.format"
            )
        fmt = kinds.pop()
    files = [f for f in files if EXTENSIONS.get(_ext(f), fmt) == fmt]
    if not files:
        raise DataFileError(f"data.url: {url}: no {fmt} files")
    return fs, files, fmt


def _ext(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[name.rfind(".") :].lower() if "." in name else ""


def read(url: str, cfg: SequencesData, max_rows: int | None = None) -> RawSequences:
    """All sequences at `url` in the spec's layout (Parquet: the first `max_rows`, if given)."""
    fs, files, fmt = list_files(url, cfg.format)
    parts = []
    for path in files:
        if fmt == "parquet" and max_rows is not None:
            done = sum(len(p) for p in parts)
            if done >= max_rows:
                break
            parts.append(read_parquet(fs, path, cfg, max_rows - done))
        else:
            parts.append(READERS[fmt](fs, path, cfg))
    if not any(len(p) for p in parts):
        raise DataFileError(f"data.url: {url}: no sequences (empty file)")
    features = parts[0].feature_names
    for p in parts[1:]:
        if p.feature_names != features:
            raise DataFileError(
                f"data.url: {p.files[0]}: features {p.feature_names} differ from "
                f"{parts[0].files[0]}'s {features}"
            )
    splits = [p.split for p in parts]
    return RawSequences(
        x=[x for p in parts for x in p.x],
        y=np.concatenate([p.y for p in parts]),
        feature_names=features,
        where=[w for p in parts for w in p.where],
        split=None if splits[0] is None else np.concatenate(splits),
        files=files,
    )


# ------------------------------------------------------------------------------------- parquet
def read_parquet(fs, path: str, cfg: SequencesData, max_rows: int | None = None) -> RawSequences:
    """One Parquet file (or its first row groups holding `max_rows` sequences)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        try:
            pf = pq.ParquetFile(f)
            if max_rows is None:
                table = pf.read()
            else:
                groups, rows = [], 0
                while rows < max_rows and len(groups) < pf.num_row_groups:
                    rows += pf.metadata.row_group(len(groups)).num_rows
                    groups.append(len(groups))
                table = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
        except (pa.ArrowException, OSError) as e:
            raise DataFileError(f"data.url: {path}: not a readable Parquet file ({e})") from None
    return parquet_sequences(table, cfg, path)


def parquet_sequences(table, cfg: SequencesData, path: str, first_row: int = 0) -> RawSequences:
    """Sequences of an Arrow table (one row per sequence) in the spec's layout."""
    names = table.column_names
    columns = cfg.feature_columns or [cfg.sequence_column]
    for col in [*columns, *cfg.label_columns, *([cfg.split_column] if cfg.split_column else [])]:
        if col not in names:
            raise DataFileError(f"data.url: {path}: no column {col!r} (columns: {names})")
    if cfg.feature_columns:
        per_feature = [_list_values(table[c], path, c, nested=False) for c in columns]
        lengths = per_feature[0][1]
        for c, (_, other) in zip(columns[1:], per_feature[1:], strict=True):
            bad = np.flatnonzero(other != lengths)
            if len(bad):
                r = int(bad[0]) + first_row
                raise DataFileError(
                    f"data.url: {path} row {r}: column {c!r} has {other[bad[0]]} steps, "
                    f"{columns[0]!r} has {lengths[bad[0]]}; every feature column needs the same"
                )
        values = np.stack([v for v, _ in per_feature], axis=1)  # (sum T, F)
        features = list(columns)
    else:
        values, lengths = _list_values(table[cfg.sequence_column], path, cfg.sequence_column, True)
        features = (
            [cfg.sequence_column]
            if values.shape[1] == 1
            else [f"f{i}" for i in range(values.shape[1])]
        )
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    x = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    y = label_array(table, cfg, path)
    split = table[cfg.split_column].to_numpy(zero_copy_only=False) if cfg.split_column else None
    where = [f"{path} row {first_row + i}" for i in range(len(x))]
    return RawSequences(x, y, features, where, split, [path])


def _list_values(col, path: str, name: str, nested: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values (sum T, F), steps per row) of a list<float> or list<list<float>> column."""
    import pyarrow as pa

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise DataFileError(
            f"data.url: {path}: column {name!r} is {arr.type}; expected a list of numbers per "
            "row (one sequence per row)"
        )
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataFileError(f"data.url: {path} row {row}: column {name!r} has no sequence (null)")
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    inner = arr.flatten()
    if pa.types.is_list(inner.type) or pa.types.is_large_list(inner.type):
        if not nested:
            raise DataFileError(
                f"data.url: {path}: column {name!r} holds lists of lists; with feature_columns "
                "each column holds one feature's list of numbers"
            )
        widths = inner.value_lengths().to_numpy(zero_copy_only=False)
        if len(widths) and (widths.min() != widths.max()):
            raise DataFileError(
                f"data.url: {path}: column {name!r}: steps have {widths.min()} to "
                f"{widths.max()} features; every step needs the same number"
            )
        width = int(widths[0]) if len(widths) else 1
        inner = inner.flatten()
    else:
        width = 1
    if not (pa.types.is_floating(inner.type) or pa.types.is_integer(inner.type)):
        raise DataFileError(
            f"data.url: {path}: column {name!r} holds {inner.type}; expected numbers"
        )
    values = inner.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
    return values if nested else values[:, 0], lengths


def label_array(table, cfg: SequencesData, path: str) -> np.ndarray:
    if cfg.task == "classification":
        return table[cfg.label_columns[0]].to_numpy(zero_copy_only=False)
    cols = []
    for name in cfg.label_columns:
        col = table[name].combine_chunks()
        try:
            if hasattr(col, "flatten") and hasattr(col, "value_lengths"):  # a vector per row
                cols.append(_list_values(col, path, name, nested=False)[0].reshape(len(col), -1))
            else:
                cols.append(col.to_numpy(zero_copy_only=False).astype(np.float64)[:, None])
        except (ValueError, TypeError) as e:
            raise DataFileError(
                f"data.url: {path}: target column {name!r} must hold numbers ({e})"
            ) from None
    return np.concatenate(cols, axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------- csv
def read_csv(fs, path: str, cfg: SequencesData) -> RawSequences:
    """Long format: one row per time step; a sequence's label must not vary between its rows."""
    import pandas as pd

    try:
        with fs.open(path, "rb") as f:
            df = pd.read_csv(f)
    except pd.errors.EmptyDataError:
        raise DataFileError(f"data.url: {path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataFileError(f"data.url: {path}: not a readable CSV file ({e})") from None
    special = [cfg.id_column, *cfg.label_columns]
    special += [c for c in (cfg.time_column, cfg.split_column) if c]
    for col in [*special, *(cfg.feature_columns or [])]:
        if col not in df.columns:
            raise DataFileError(
                f"data.url: {path}: no column {col!r} (columns: {list(df.columns)})"
            )
    features = cfg.feature_columns or [
        c for c in df.columns if c not in special and pd.api.types.is_numeric_dtype(df[c])
    ]
    if not features:
        raise DataFileError(f"data.url: {path}: no numeric feature columns besides {special}")
    for c in features:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise DataFileError(f"data.url: {path}: feature column {c!r} holds non-numbers")
    codes, ids = pd.factorize(df[cfg.id_column], sort=False)
    keys = (df[cfg.time_column].to_numpy(), codes) if cfg.time_column else (codes,)
    order = np.lexsort(keys)  # by sequence (first appearance), then time; stable
    df = df.iloc[order]
    codes = codes[order]
    for col in [*cfg.label_columns, *([cfg.split_column] if cfg.split_column else [])]:
        varying = df.groupby(codes, sort=False)[col].nunique(dropna=False)
        if (varying > 1).any():
            seq = ids[int(varying.index[np.argmax(varying.to_numpy() > 1)])]
            values = df.loc[df[cfg.id_column] == seq, col].unique()[:4].tolist()
            raise DataFileError(
                f"data.url: {path}: column {col!r} varies within sequence {seq!r} "
                f"({values}); it must be constant per {cfg.id_column}"
            )
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    values = df[features].to_numpy(dtype=np.float32)
    bounds = np.r_[starts, len(df)]
    x = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    first = df.iloc[starts]
    if cfg.task == "classification":
        y = first[cfg.label_columns[0]].to_numpy()
    else:
        try:
            y = first[cfg.label_columns].to_numpy(dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise DataFileError(
                f"data.url: {path}: target columns must hold numbers ({e})"
            ) from None
    split = first[cfg.split_column].to_numpy() if cfg.split_column else None
    where = [f"{path} {cfg.id_column} {ids[c]!r}" for c in codes[starts]]
    return RawSequences(x, y, list(features), where, split, [path])


# ----------------------------------------------------------------------------------------- npz
def read_npz(fs, path: str, cfg: SequencesData) -> RawSequences:
    """`x` padded (N, T[, F]) with `lengths`, or an object array of (T_i, F) arrays; `y`."""
    raw = fs.cat_file(path)
    if not raw:
        raise DataFileError(f"data.url: {path}: empty file")
    try:
        # No pickles: an object array would run the file's code on load. Ragged data goes as
        # a padded array plus lengths, or as an object array only if the user trusts the file.
        d = np.load(io.BytesIO(raw), allow_pickle=cfg.allow_pickle)
        arrays = {k: d[k] for k in d.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataFileError(
                f"data.url: {path}: holds an object (pickled) array; save x padded with "
                "`lengths`, or set data.allow_pickle: true if you trust the file"
            ) from None
        raise DataFileError(f"data.url: {path}: not a readable .npz file ({e})") from None
    except (OSError, EOFError) as e:
        raise DataFileError(f"data.url: {path}: not a readable .npz file ({e})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataFileError(f"data.url: {path}: no array {key!r} (arrays: {sorted(arrays)})")
    y, seqs = arrays["y"], _npz_sequences(arrays, path)
    if len(y) != len(seqs):
        raise DataFileError(f"data.url: {path}: {len(seqs)} sequences in 'x' but {len(y)} in 'y'")
    if cfg.task == "regression":
        y = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
    width = seqs[0].shape[1] if seqs else 1
    names = [f"f{i}" for i in range(width)] if width > 1 else ["x"]
    split = arrays.get(cfg.split_column) if cfg.split_column else None
    if cfg.split_column and split is None:
        raise DataFileError(f"data.url: {path}: no array {cfg.split_column!r} (the split column)")
    return RawSequences(
        seqs, y, names, [f"{path} sequence {i}" for i in range(len(seqs))], split, [path]
    )


def _npz_sequences(arrays: dict, path: str) -> list[np.ndarray]:
    """The (T_i, F) sequences of an .npz file's `x`: ragged (an object array) or padded with
    `lengths`."""
    x = arrays["x"]
    if x.dtype == object:
        seqs = [np.asarray(s, dtype=np.float32) for s in x]
        seqs = [s[:, None] if s.ndim == 1 else s for s in seqs]
        widths = {s.shape[1] if s.ndim == 2 else -1 for s in seqs}
        if len(widths) != 1 or -1 in widths:
            raise DataFileError(
                f"data.url: {path}: array 'x': every sequence must be (T_i, F) with one F; "
                f"found feature sizes {sorted(widths)}"
            )
    else:
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3:
            raise DataFileError(
                f"data.url: {path}: array 'x' has shape {x.shape}; expected (N, T, F)"
            )
        lengths = arrays.get("lengths")
        if lengths is None:
            lengths = np.full(len(x), x.shape[1])
        lengths = np.asarray(lengths)
        if (
            lengths.shape != (len(x),)
            or lengths.min(initial=1) < 1
            or lengths.max(initial=0) > x.shape[1]
        ):
            raise DataFileError(
                f"data.url: {path}: array 'lengths' must hold {len(x)} values from 1 to "
                f"{x.shape[1]} (the padded length); got shape {lengths.shape}, "
                f"range {lengths.min(initial=0)}..{lengths.max(initial=0)}"
            )
        seqs = [x[i, : lengths[i]].astype(np.float32) for i in range(len(x))]
    return seqs


READERS = {"parquet": read_parquet, "csv": read_csv, "npz": read_npz}
