"""The job's MLflow store: where it is (a server, or the embedded SQLite store beside the
checkpoints), its settings (WAL, no fsync per epoch) and the disk reserve that lets a job on a
full disk still record its end. Runs: `tune/parent_run.py` (the job's) and
`tune/trial_logger.py` (one per trial).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from sqlalchemy import event

from tune import compat
from tune import outcome as O
from tune.spec import DEFAULT_STORAGE, JobSpec, embedded_tracking_uri

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


@dataclass(frozen=True)
class Tracking:
    uri: str
    experiment_id: str
    reserve: str | None = None  # the embedded store's reserve file (see `hold_reserve`)

    def release_reserve(self) -> bool:
        """Frees the reserve (once) for the store's last writes on a full disk; False if gone."""
        if self.reserve is None or not os.path.exists(self.reserve):
            return False
        os.unlink(self.reserve)
        print(
            f"rnntune: disk full; released the store's {RESERVE_BYTES >> 20} MB reserve to record the job's end",
            file=sys.stderr,
        )
        return True


RESERVE_BYTES = 4 << 20


def hold_reserve(root: Path) -> str | None:
    """A 4 MB file of real blocks next to the embedded store, on the disk that also takes the
    checkpoints: when the checkpoints fill it, deleting this leaves the store room to close the
    job's runs with their outcome. None if the disk has no room for it even now."""
    path = root / "mlflow.db.reserve"
    try:
        if not path.exists() or path.stat().st_size < RESERVE_BYTES:
            with open(path, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
                f.flush()
                os.fsync(f.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return str(path)


def setup_tracking(spec: JobSpec, local_root: Path | None) -> Tracking:
    """Resolve the tracking URI (embedded SQLite under local storage by default) and experiment."""
    reserve = None
    if spec.tracking.uri:
        uri, artifacts = spec.tracking.uri, None
    else:
        root = (local_root or Path("runs")).resolve()
        root.mkdir(parents=True, exist_ok=True)
        reserve = hold_reserve(root)
        uri = embedded_tracking_uri(root)
        artifacts = (root / "mlartifacts").as_uri()
    if not uri.startswith(("http:", "https:")):
        # a new store says "Creating initial MLflow database tables..." and "Updating database
        # tables" at INFO on the console when the client opens it: nothing a user acts on. And a
        # refused write (a full disk, a locked file) logs its whole traceback at ERROR before it
        # is raised as an MlflowException carrying the same message, which the writer reports
        # in one line (tune.writer): the console shows that line, not the traceback
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    client = MlflowClient(uri)
    if artifacts is not None:
        _commit_without_fsync(client)
    name = spec.tracking.experiment or spec.name
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # MLflow 3's UI opens an experiment by this tag: model training, not its GenAI view
        exp_id = client.create_experiment(
            name, artifact_location=artifacts, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
        )
    else:
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return Tracking(uri, exp_id, reserve)


def open_ui_hint(spec: JobSpec, tracking: Tracking, job_id: str, parent_id: str) -> str:
    """The one command (or URL) that shows this job's runs."""
    if tracking.uri.startswith("http"):
        return f"open {O.run_url(tracking.uri, tracking.experiment_id, parent_id)}"
    if spec.tracking.uri:  # a database URI of the user's
        return f"rnntune ui {job_id} --tracking-uri {tracking.uri}"
    storage = "" if spec.storage.url == DEFAULT_STORAGE else f" --storage {spec.storage.url}"
    return f"rnntune ui {job_id}{storage}"


def _commit_without_fsync(client: MlflowClient) -> None:
    """The embedded SQLite store in WAL mode with `synchronous=NORMAL`: no fsync per commit.

    In SQLite's default mode every MLflow write (one per trial epoch) fsyncs the database and its
    rollback journal, on the disk the trials write their checkpoints to. WAL with NORMAL keeps
    every commit across a killed process (a killed driver loses nothing); only a power cut can
    drop the last ones. Measured with bench/tracking_overhead.py (8 rounds, 2 cores): tracking
    cost 1.075x in wall time with the store on disk in the default mode, 1.012x on tmpfs.
    """
    engine = compat.sqlalchemy_engine(client)
    if not event.contains(engine, "connect", _sqlite_pragmas):
        event.listen(engine, "connect", _sqlite_pragmas)
        engine.dispose()  # connections opened before the listener reopen with the pragmas


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: readers see it too
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")  # per connection
