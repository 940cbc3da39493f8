"""`rnntune` commands that run on this machine: train, data inspect, schema, models, promote,
serve (`run` and `resume` are `tune.commands`)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from tune.spec import DEFAULT_STORAGE, embedded_tracking_uri

TRACKING_HELP = (
    "MLflow tracking URI  [default: $MLFLOW_TRACKING_URI, else the job service when one is "
    f"configured, else {DEFAULT_STORAGE}/mlflow.db]"
)
TrackingUri = Annotated[str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help=TRACKING_HELP)]


def embedded_tracking() -> str:
    """The embedded SQLite store `rnntune run` writes; refused when absent (a typo'd folder
    must not silently create an empty store)."""
    uri = embedded_tracking_uri()
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.exists():
        raise FileNotFoundError(
            f"--tracking-uri: no MLflow store at {path}; run from the folder `rnntune run` ran "
            "in, or pass --tracking-uri (or set MLFLOW_TRACKING_URI)"
        )
    return uri


def train(
    spec: Annotated[str, typer.Argument(help="a train spec or a job spec, YAML (see examples/)")],
    output_dir: Annotated[
        str | None,
        typer.Option(help="where checkpoints and results go  [default: runs/SPEC-TIMESTAMP]"),
    ] = None,
    max_epochs: Annotated[
        int | None, typer.Option(help="override trainer.max_epochs  [default: the spec's]")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> int:
    """Train one model from a spec (no search); print and save its metrics."""
    train_spec = _train_spec_from(spec)  # validate before the slow imports (torch, Lightning)
    from lightning_modules.training import train as train_model

    if max_epochs is not None:
        train_spec = train_spec.with_params({"max_epochs": max_epochs})
    for note in train_spec.ignored_settings():
        print(f"rnntune: note: {note}", file=sys.stderr)
    out = Path(output_dir or f"runs/{Path(spec).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    m = train_spec.model
    print(
        f"training {m.cell_type} x{m.num_layers} h={m.hidden_size}"
        f"{' bidirectional' if m.bidirectional else ''} on {train_spec.data.name} -> {out}"
    )
    result = train_model(train_spec, out, enable_progress_bar=not quiet)
    print(
        f"\nstatus       {result.status} after {result.epochs} epochs, {result.train_time_s:.1f} s"
    )
    if result.diverged_reason:
        print(f"diverged     {result.diverged_reason}")
    if result.best_val is not None:
        print(f"best {result.monitor:<7} {result.best_val:.4f}")
    for name, value in sorted(result.test.items()):
        print(f"{name:<12} {value:.4f}")
    print(f"checkpoint   {result.checkpoint}")
    print(f"results      {out / 'result.json'}")
    return 1 if result.status == "diverged" else 0


def _train_spec_from(spec_path: str):
    """A train spec, or a job spec's fixed settings (its search space is not sampled)."""
    from lightning_modules.config import SpecError, load_train_spec, read_spec_file
    from tune.spec import JOB_ONLY_SECTIONS, load_job_spec

    try:
        return load_train_spec(spec_path)
    except SpecError as train_error:
        try:
            job = load_job_spec(spec_path)
        except SpecError as job_error:
            # A document with any search-only section is a job spec: its own errors say what
            # is wrong, not the train spec's list of every search section as unknown.
            raw = read_spec_file(spec_path)
            searchy = isinstance(raw, dict) and bool(set(raw) & JOB_ONLY_SECTIONS)
            raise (job_error if searchy else train_error) from None
        print(f"{spec_path} is a search job; training its fixed settings (`rnntune run` searches)")
        return job.base_train_spec()


def schema() -> int:
    """Print the job spec's JSON schema."""
    from tune.spec import JobSpec

    print(json.dumps(JobSpec.model_json_schema(), indent=2))
    return 0


def models(
    name: Annotated[str | None, typer.Argument(help="one model  [default: all]")] = None,
    tracking_uri: TrackingUri = None,
) -> int:
    """List registered models, their versions, aliases and test metrics."""
    from service.cli.remote import print_models, service_configured

    if tracking_uri is None and service_configured():
        from service.client import ServiceClient

        print_models(ServiceClient.configured().models(name))
        return 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri or embedded_tracking())
    found = [client.get_registered_model(name)] if name else client.search_registered_models()
    print_models(
        [
            {
                "name": m.name,
                "versions": [
                    {
                        "version": str(v.version),
                        "aliases": [
                            a for a, ver in m.aliases.items() if str(ver) == str(v.version)
                        ],
                        "metrics": v.tags,
                    }
                    for v in client.search_model_versions(f"name='{m.name}'")
                ],
            }
            for m in found
        ]
    )
    return 0


def promote(
    name: Annotated[str, typer.Argument(help="the registered model")],
    version: Annotated[str, typer.Argument(help="the version the alias should point at")],
    alias: Annotated[str, typer.Option(help="the alias to set")] = "champion",
    tracking_uri: TrackingUri = None,
) -> int:
    """Point an alias (default `champion`) at a model version."""
    from service.cli.remote import service_configured

    if tracking_uri is None and service_configured():
        from service.client import ServiceClient

        ServiceClient.configured().promote(name, version, alias)
    else:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri or embedded_tracking())
        client.get_model_version(name, version)  # fails clearly if it does not exist
        client.set_registered_model_alias(name, alias, version)
    print(f"{name}@{alias} -> version {version}")
    return 0


def serve(
    model_uri: Annotated[
        str,
        typer.Argument(help="models:/NAME@ALIAS (follows the alias) or models:/NAME/VERSION"),
    ],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI",
            help=f"MLflow tracking URI  [default: {DEFAULT_STORAGE}/mlflow.db]",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the HTTP port")] = 8000,
    replicas: Annotated[int, typer.Option(help="replicas (the minimum when autoscaling)")] = 1,
    max_replicas: Annotated[
        int | None, typer.Option(help="autoscale up to this many  [default: no autoscaling]")
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="requests batched per forward pass")] = 64,
    batch_wait_ms: Annotated[float, typer.Option(help="how long a batch waits to fill")] = 2.0,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            help="replicas answer HTTP themselves on --port, --port+1, ... (no proxy hop)",
        ),
    ] = False,
    poll_interval: Annotated[float, typer.Option(help="seconds between alias checks")] = 10.0,
) -> int:
    """Serve a registered model with Ray Serve until interrupted."""
    from deploy.serving.serve import ServeOptions, parse_uri, run

    if not model_uri.startswith("models:/"):
        raise ValueError(
            f"model_uri: expected models:/NAME@ALIAS or models:/NAME/VERSION, got {model_uri}"
        )
    tracking = tracking_uri or embedded_tracking()
    name, alias = parse_uri(model_uri)
    if name:  # fail here, in one line, rather than inside a replica
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking).get_model_version_by_alias(name, alias)
    opts = ServeOptions(
        model_uri=model_uri,
        tracking_uri=tracking,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_ms / 1000,
        poll_interval_s=poll_interval,
    )
    run(opts, host, port, replicas, max_replicas, direct)
    return 0


def _data_option(name: str, what: str) -> typer.Option:
    return typer.Option(help=f"data.{name}: {what}  [default: the spec's default or inferred]")


def data_inspect(
    url: Annotated[
        str, typer.Argument(help="a Parquet/CSV/NPZ file, folder or glob, at any fsspec URL")
    ],
    format: Annotated[str | None, _data_option("format", "parquet, csv or npz")] = None,
    task: Annotated[str | None, _data_option("task", "classification or regression")] = None,
    sequence_column: Annotated[
        str | None, _data_option("sequence_column", "the list column holding each sequence")
    ] = None,
    feature_columns: Annotated[
        str | None, _data_option("feature_columns", "comma-separated feature columns")
    ] = None,
    label_column: Annotated[
        str | None, _data_option("label_column", "the target column (comma-separated: vector)")
    ] = None,
    id_column: Annotated[str | None, _data_option("id_column", "long CSV: the sequence id")] = None,
    time_column: Annotated[str | None, _data_option("time_column", "long CSV: the order")] = None,
    split_column: Annotated[
        str | None, _data_option("split_column", "a column naming each row's split")
    ] = None,
    val_url: Annotated[str | None, _data_option("val_url", "the validation files")] = None,
    test_url: Annotated[str | None, _data_option("test_url", "the test files")] = None,
    max_len: Annotated[int | None, _data_option("max_len", "steps kept per sequence")] = None,
    keep: Annotated[str | None, _data_option("keep", "first or last steps kept")] = None,
    missing: Annotated[str | None, _data_option("missing", "refuse, mean or ffill")] = None,
    sample: Annotated[
        int, typer.Option(help="sequences read from a large Parquet dataset")
    ] = 20_000,
) -> int:
    """Read a dataset as a job would; print splits, lengths, features, classes and the `data:`
    block for a spec."""
    from pydantic import ValidationError

    from lightning_modules.config import SpecError, format_validation_error
    from lightning_modules.datasets.sequences import SequencesData

    given = {
        k: v
        for k, v in dict(
            format=format, task=task, sequence_column=sequence_column, id_column=id_column,
            time_column=time_column, split_column=split_column, val_url=val_url,
            test_url=test_url, max_len=max_len, keep=keep, missing=missing,
        ).items()
        if v is not None
    }  # fmt: skip
    if feature_columns is not None:
        given["feature_columns"] = feature_columns.split(",")
    if label_column is not None:
        given["label_column"] = label_column.split(",") if "," in label_column else label_column
    try:
        cfg = SequencesData(url=url, **given)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, "data.", SequencesData)) from None
    from lightning_modules.data.inspect import format_report, inspect

    print(format_report(inspect(cfg, sample)))
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def ui(
    job_id: Annotated[
        str | None, typer.Argument(help="the job whose runs to show  [default: the latest]")
    ] = None,
    storage: Annotated[
        str, typer.Option(help="the job's storage folder (its embedded MLflow store)")
    ] = DEFAULT_STORAGE,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI",
            help="an MLflow server or database instead of the embedded store  [default: none]",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="the UI's port (0: a free one)")] = 0,
) -> int:
    """Open the MLflow UI on a job's runs: prints the URL of its parent run (the comparison of
    its trials) and serves the embedded store on 127.0.0.1 until Ctrl-C."""
    from mlflow.tracking import MlflowClient

    from tune.outcome import run_url

    uri = tracking_uri or embedded_tracking_uri(storage)
    if uri.startswith("http"):  # a server: its UI is up already
        print(run_url(uri, *_parent_run(MlflowClient(uri), job_id)))
        return 0
    store = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or store.name != "mlflow.db" or not store.exists():
        raise FileNotFoundError(
            f"--storage: no embedded MLflow store at {store} (an http:// --tracking-uri, or the "
            "storage folder a job ran with)"
        )
    experiment, parent = _parent_run(MlflowClient(uri), job_id)
    from service.stack import start_mlflow, stop, wait_ready

    # SIGTERM (a process manager, `timeout`, a closed session) stops it as Ctrl-C does
    signal.signal(signal.SIGTERM, _interrupt)
    server = start_mlflow(store.parent, port or None)
    stopping: list[int] = []
    try:
        wait_ready(server, "/health", timeout=120)
        # Serving: our own handler marks the stop. A process started with SIGINT ignored (a
        # background job of a non-interactive shell: `make test &`, a CI runner) never gets
        # Python's KeyboardInterrupt, which Python installs only where SIGINT is not ignored:
        # the UI then served on after Ctrl-C (found in a test run: SigIgn had SIGINT set).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stopping.append(signum))
        print(f"MLflow UI: {run_url(server.url, experiment, parent)}  (Ctrl-C stops it)")
        sys.stdout.flush()
        while server.alive() and not stopping:
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not orphan it
            signal.signal(sig, signal.SIG_IGN)
        stop(server)
    return 0


def _parent_run(client, job_id: str | None):
    """(experiment id, run id) of the job's parent run (the latest job's when `job_id` is None)."""
    from tune.outcome import JOB_TAG, PARENT_TAG

    experiments = [e.experiment_id for e in client.search_experiments()]
    where = f"tags.`{JOB_TAG}` = '{job_id}'" if job_id else f"tags.`{JOB_TAG}` != ''"
    runs = client.search_runs(experiments, where, order_by=["attributes.start_time DESC"])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    if not parents:
        raise ValueError(f"job_id: no job {job_id!r} in this store" if job_id else "no job here")
    return parents[0].info.experiment_id, parents[0].info.run_id
