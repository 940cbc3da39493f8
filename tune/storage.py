"""Where a job keeps its Tune state and checkpoints: a local folder or any fsspec URL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow.fs

from tune.spec import JobSpec, parse_job_spec

SPEC_FILE = "job_spec.json"


@dataclass
class Storage:
    path: str  # what RunConfig.storage_path takes
    filesystem: pyarrow.fs.FileSystem | None
    local_root: Path | None  # set when storage is a local folder
    fs: fsspec.AbstractFileSystem


def resolve_storage(url: str) -> Storage:
    """A local folder or any fsspec URL; non-local ones reach Tune through pyarrow's fsspec bridge."""
    if "://" not in url or url.startswith("file://"):
        root = Path(url.removeprefix("file://")).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return Storage(str(root), None, root, fsspec.filesystem("file"))
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(path, exist_ok=True)
    return Storage(path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), None, fs)


def save_spec(storage: Storage, job_id: str, spec: JobSpec) -> None:
    """The spec the job runs with, next to its Tune state: what `resume` starts from."""
    storage.fs.makedirs(f"{storage.path}/{job_id}", exist_ok=True)
    with storage.fs.open(f"{storage.path}/{job_id}/{SPEC_FILE}", "w") as f:
        f.write(json.dumps(spec.model_dump(mode="json")))


def load_stored_spec(storage_url: str, job_id: str) -> JobSpec:
    """The spec a job was started with (saved next to its Tune state), for `resume`."""
    storage = resolve_storage(storage_url)
    try:
        with storage.fs.open(f"{storage.path}/{job_id}/{SPEC_FILE}") as f:
            return parse_job_spec(json.loads(f.read()), f"{job_id}/{SPEC_FILE}")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"job_id: no job {job_id!r} in {storage_url} (no {job_id}/{SPEC_FILE} there); pass "
            "--storage with the storage.url the job ran with"
        ) from None
