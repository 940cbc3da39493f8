"""`rnntune` command line: one subcommand per capability, each a typed function."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tune.commands import add_job_commands, cmd_resume, cmd_run, guarded


def embedded_tracking() -> str:
    """Where `rnntune run` tracks by default (the embedded SQLite store in the default storage)."""
    from tune.spec import embedded_tracking_uri

    return embedded_tracking_uri()


def cmd_train(spec_path: str, output_dir: str | None, max_epochs: int | None, quiet: bool) -> int:
    """Train one model from a spec (no search); print and save its metrics."""
    spec = _train_spec_from(spec_path)  # validate before the slow imports (torch, Lightning)
    from lightning_modules.training import train

    if max_epochs is not None:
        spec = spec.with_params({"max_epochs": max_epochs})
    out = Path(output_dir or f"runs/{Path(spec_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    m = spec.model
    print(
        f"training {m.cell_type} x{m.num_layers} h={m.hidden_size}"
        f"{' bidirectional' if m.bidirectional else ''} on {spec.data.name} -> {out}"
    )
    result = train(spec, out, enable_progress_bar=not quiet)
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
    from lightning_modules.config import SpecError, load_train_spec
    from tune.spec import load_job_spec

    try:
        return load_train_spec(spec_path)
    except SpecError as train_error:
        try:
            job = load_job_spec(spec_path)
        except SpecError:
            raise train_error from None
        print(f"{spec_path} is a search job; training its fixed settings (`rnntune run` searches)")
        return job.base_train_spec()


def cmd_schema() -> int:
    """Print the job spec's JSON schema."""
    from tune.spec import JobSpec

    print(json.dumps(JobSpec.model_json_schema(), indent=2))
    return 0


def cmd_models(tracking_uri: str | None, name: str | None) -> int:
    """List registered models, their versions, aliases and test metrics."""
    from service.remote import print_models, service_configured

    if tracking_uri is None and service_configured():
        from service.client import ServiceClient

        print_models(ServiceClient.configured().models(name))
        return 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri or embedded_tracking())
    models = [client.get_registered_model(name)] if name else client.search_registered_models()
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
            for m in models
        ]
    )
    return 0


def cmd_promote(tracking_uri: str | None, name: str, version: str, alias: str) -> int:
    """Point an alias (default `champion`) at a model version."""
    from service.remote import service_configured

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


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a registered model with Ray Serve until interrupted."""
    import os

    from deploy.serve import ServeOptions, parse_uri, run

    if not args.model_uri.startswith("models:/"):
        raise ValueError(
            f"model_uri: expected models:/NAME@ALIAS or models:/NAME/VERSION, got {args.model_uri}"
        )
    tracking = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or embedded_tracking()
    name, alias = parse_uri(args.model_uri)
    if name:  # fail here, in one line, rather than inside a replica
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking).get_model_version_by_alias(name, alias)
    opts = ServeOptions(
        model_uri=args.model_uri,
        tracking_uri=tracking,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        poll_interval_s=args.poll_interval,
    )
    run(opts, args.host, args.port, args.replicas, args.max_replicas, args.direct)
    return 0


DATA_OPTIONS = (
    "format",
    "task",
    "sequence_column",
    "feature_columns",
    "label_column",
    "id_column",
    "time_column",
    "split_column",
    "val_url",
    "test_url",
    "max_len",
    "keep",
    "missing",
)


def cmd_data_inspect(url: str, options: dict, sample: int) -> int:
    """Read a dataset as a job would; print splits, lengths, features, classes, a `data:` block."""
    from pydantic import ValidationError

    from lightning_modules.config import SequencesData, SpecError, format_validation_error

    given = {k: v for k, v in options.items() if v is not None}
    for key in ("feature_columns", "label_column"):
        if key in given and "," in given[key]:
            given[key] = given[key].split(",")
    if "feature_columns" in given and isinstance(given["feature_columns"], str):
        given["feature_columns"] = [given["feature_columns"]]
    try:
        cfg = SequencesData(url=url, **given)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, "data.")) from None
    from lightning_modules.data.inspect import format_report, inspect

    print(format_report(inspect(cfg, sample)))
    return 0


def add_data_commands(sub) -> None:
    p = sub.add_parser("data", help="look at your own data before a job reads it")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "inspect", help="splits, lengths, features, classes and the `data:` block for a spec"
    )
    p.add_argument("url", help="a Parquet/CSV/NPZ file, folder or glob, at any fsspec URL")
    for name in DATA_OPTIONS:
        kind = int if name == "max_len" else str
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            help=f"data.{name} (comma-separated for several)"
            if name.endswith("columns") or name == "label_column"
            else f"data.{name}",
        )
    p.add_argument(
        "--sample", type=int, default=20_000, help="sequences read from a large Parquet dataset"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnntune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model from a spec, no search")
    p.add_argument("spec", help="YAML spec (see examples/)")
    p.add_argument("--output-dir", default=None, help="where checkpoints and results go")
    p.add_argument("--max-epochs", type=int, default=None, help="override trainer.max_epochs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_job_commands(sub)
    add_data_commands(sub)
    sub.add_parser("schema", help="print the job spec's JSON schema")
    for name, helptext in (("models", "list registered models"), ("promote", "set a model alias")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument(
            "--tracking-uri",
            default=None,
            help="MLflow URI; default: the job service if one is configured, else runs/tune/mlflow.db",
        )
        if name == "models":
            p.add_argument("name", nargs="?")
        else:
            p.add_argument("name")
            p.add_argument("version")
            p.add_argument("--alias", default="champion")
    add_service_commands(sub)
    p = sub.add_parser("serve", help="serve a registered model (Ray Serve)")
    p.add_argument(
        "model_uri", help="models:/NAME@ALIAS (follows the alias) or models:/NAME/VERSION"
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="default: MLFLOW_TRACKING_URI, else runs/tune/mlflow.db",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--replicas", type=int, default=1, help="replicas (the minimum when autoscaling)"
    )
    p.add_argument("--max-replicas", type=int, default=None, help="autoscale up to this many")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument(
        "--direct",
        action="store_true",
        help="replicas answer HTTP themselves on --port, --port+1, ... (no proxy hop; fastest)",
    )
    p.add_argument("--poll-interval", type=float, default=10.0, help="seconds between alias checks")
    return parser


def add_service_commands(sub) -> None:
    """The local stack and the job service's client commands."""
    p = sub.add_parser("up", help="start Ray, MLflow and the job service on 127.0.0.1")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs the Ray head offers")
    p.add_argument(
        "--allow-path",
        action="append",
        default=None,
        help="a folder or URL prefix jobs may read data from (repeatable; default: the current "
        "folder); everything else is refused by the service and by the job drivers",
    )
    sub.add_parser("down", help="stop what `rnntune up` started")
    p = sub.add_parser("submit", help="submit a job spec to the job service")
    p.add_argument("spec")
    p.add_argument("--follow", "-f", action="store_true", help="stream its log until it ends")
    p = sub.add_parser("status", help="a job's status, or a table of your jobs")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--status", default=None, help="list only jobs in this state")
    p = sub.add_parser("logs", help="a job's driver log")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--tail", type=int, default=200, help="last N lines (0: all)")
    p = sub.add_parser("cancel", help="stop a job")
    p.add_argument("job_id")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from service import remote

    match args.command:
        case "train":
            return guarded(cmd_train, args.spec, args.output_dir, args.max_epochs, args.quiet)
        case "run":
            return guarded(cmd_run, args.spec, args.job_id)
        case "resume":
            return guarded(cmd_resume, args.job_id, args.storage)
        case "schema":
            return cmd_schema()
        case "data":
            opts = {k: getattr(args, k) for k in DATA_OPTIONS}
            return guarded(cmd_data_inspect, args.url, opts, args.sample)
        case "models":
            return guarded(cmd_models, args.tracking_uri, args.name)
        case "promote":
            return guarded(cmd_promote, args.tracking_uri, args.name, args.version, args.alias)
        case "serve":
            return guarded(cmd_serve, args)
        case "up":
            return guarded(remote.cmd_up, args.num_cpus, args.allow_path)
        case "down":
            return guarded(remote.cmd_down)
        case "submit":
            return guarded(remote.cmd_submit, args.spec, args.follow)
        case "status":
            return guarded(remote.cmd_status, args.job_id, args.status)
        case "logs":
            return guarded(remote.cmd_logs, args.job_id, args.follow, args.tail)
        case "cancel":
            return guarded(remote.cmd_cancel, args.job_id)
    return 2


if __name__ == "__main__":
    sys.exit(main())
