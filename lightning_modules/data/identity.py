"""A dataset's identity: one digest of the data a spec reads, the same for every consumer.

The digest covers the `data:` options (less the entry's `digest_ignores`, which do not change
the test set) and the content of every file the options name (`url`, `val_url`, `test_url`).
The run's seed is not part of it: a built-in dataset's test set never moves with the seed, and
the user's test split follows `split_seed`, an option. It is the MLflow dataset digest of the
job and the registry's data fingerprint, so the champion guard compares test metrics only
between models tested on the same data.
"""

from __future__ import annotations

import hashlib
import json

from lightning_modules.data.sequence_files import list_files
from lightning_modules.datasets import DataConfig, dataset_of

HASHED_WHOLE_BYTES = 64 << 20  # data up to this size is digested whole; larger: head, tail, size
EDGE_BYTES = 1 << 20
FILE_FIELDS = ("url", "val_url", "test_url")


def data_digest(cfg: DataConfig) -> str:
    """16 hex digits. Files up to HASHED_WHOLE_BYTES in all are hashed whole; larger data by
    each file's name, size, first and last MiB (reading every byte of a large dataset per trial
    would cost more than the training)."""
    h = hashlib.sha256()
    options = cfg.model_dump(exclude=set(dataset_of(cfg).digest_ignores))
    h.update(json.dumps(options, sort_keys=True).encode())
    fmt = getattr(cfg, "format", None)  # the user's sequences: only files of their format
    urls = [u for u in (getattr(cfg, k, None) for k in FILE_FIELDS) if u]
    listed = [list_files(u, fmt) for u in urls]
    sized = [(fs, path, fs.size(path)) for fs, files, _ in listed for path in files]
    whole = sum(size for _, _, size in sized) <= HASHED_WHOLE_BYTES
    for fs, path, size in sized:
        h.update(f"{path.rsplit('/', 1)[-1]}:{size}".encode())
        with fs.open(path, "rb") as f:
            if whole or size <= 2 * EDGE_BYTES:
                h.update(f.read())
            else:
                h.update(f.read(EDGE_BYTES))
                f.seek(size - EDGE_BYTES)
                h.update(f.read(EDGE_BYTES))
    return h.hexdigest()[:16]
