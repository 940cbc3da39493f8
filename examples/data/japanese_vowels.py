"""Write the Japanese Vowels dataset (UCI / UEA archive) as Parquet and long-format CSV.

Kudo, Toyama & Shimbo (1999): nine male speakers each utter the vowel pair /ae/; every
utterance is 7-29 frames of 12 LPC cepstrum coefficients. The task is to tell the speaker.
The archive's own split is 270 training and 370 test utterances. The data files ship inside the
`sktime` wheel (installed by `make setup` without its dependencies: only its data is read, the
package is never imported), so nothing is downloaded at run time.

    .venv/bin/python examples/data/japanese_vowels.py          # -> data/japanese_vowels/
    .venv/bin/rnntune data inspect data/japanese_vowels/train.parquet --test-url data/japanese_vowels/test.parquet
    .venv/bin/rnntune run examples/japanese_vowels.yaml
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = [f"lpc{i}" for i in range(1, 13)]


def ts_file(split: str) -> Path:
    """sktime's copy of the archive's `.ts` file for `split` (TRAIN or TEST)."""
    spec = importlib.util.find_spec("sktime")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sktime is not installed: run `make setup` (it installs sktime's data)")
    root = Path(spec.submodule_search_locations[0])
    return root / "datasets" / "data" / "JapaneseVowels" / f"JapaneseVowels_{split}.ts"


def read_ts(path: Path, label_prefix: str = "") -> tuple[list[np.ndarray], list[str]]:
    """The `.ts` format: header lines start with @ or #; then one case per line, its dimensions
    separated by ':' (each a comma-separated series) and the class label last."""
    sequences, labels = [], []
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        steps = np.array([[float(v) for v in d.split(",")] for d in dims], dtype=np.float32).T
        sequences.append(steps)  # (T, 12)
        labels.append(f"{label_prefix}{label.strip()}")
    return sequences, labels


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        sequences, labels = read_ts(ts_file(split.upper()), label_prefix="speaker_")
        table = pa.table(
            {"sequence": [s.tolist() for s in sequences], "label": labels},
            schema=pa.schema(
                [("sequence", pa.list_(pa.list_(pa.float32()))), ("label", pa.string())]
            ),
        )
        pq.write_table(table, out / f"{split}.parquet", row_group_size=64)
        rows = [
            {
                "utterance": f"{split}-{i}",
                "frame": t,
                **dict(zip(FEATURES, step, strict=True)),
                "label": y,
            }
            for i, (s, y) in enumerate(zip(sequences, labels, strict=True))
            for t, step in enumerate(s.tolist())
        ]
        pd.DataFrame(rows).to_csv(out / f"{split}.csv", index=False, float_format="%.6g")
        lengths = [len(s) for s in sequences]
        print(f"{split}: {len(sequences)} utterances, {min(lengths)}-{max(lengths)} frames")
    print(f"wrote {out}/{{train,test}}.{{parquet,csv}}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/japanese_vowels", help="output folder")
    write(Path(parser.parse_args().out))
