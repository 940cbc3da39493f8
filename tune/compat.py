"""Every access to a private Ray or MLflow internal, in one place, each with why no public API
does it. `tests/tune/test_compat.py` is the canary: when an upgrade of the pinned versions
(constraints.txt) moves one of these, that test fails with the name of what moved, instead of a
search failing far from the cause.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only annotations: `rnntune run` starts Ray before MLflow is imported
    from mlflow.tracking import MlflowClient


class FrameworkChanged(RuntimeError):
    """A private Ray/MLflow internal rnntune relies on is not where it was."""


def _moved(what: str) -> FrameworkChanged:
    return FrameworkChanged(
        f"{what} is not where rnntune expects it: Ray or MLflow changed under the pinned "
        "versions (constraints.txt); see tune/compat.py"
    )


# --- Ray: the loopback flag -------------------------------------------------------------------
# Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER into `ray_constants.ENABLE_RAY_CLUSTER` once, at
# import; setting the variable later reaches only the processes Ray starts. No public API sets
# the flag for the current process (STACK.md: without it Ray binds the host's external address).
def ray_loopback_flag(env_name: str) -> None:
    """Make this process's copy of the flag follow `env_name` ("0": loopback only)."""
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise _moved("ray._private.ray_constants.ENABLE_RAY_CLUSTER")
    if not ray_constants.env_bool(env_name, True):
        ray_constants.ENABLE_RAY_CLUSTER = False


# --- Ray: the token-auth notice of a new local cluster ----------------------------------------
# Ray 2.60 turns token authentication on for a new local cluster and says so at WARNING on every
# start; its logger is the private module's. Setting RAY_AUTH_MODE=token in this process instead
# comes too late (Ray's C++ side has read the environment: the GCS then refuses the driver).
RAY_TOKEN_AUTH_MODULE = "ray._private.authentication.authentication_token_setup"


def quiet_ray_token_auth_notice() -> None:
    """That notice off (the embedded cluster is on loopback, with the token Ray sets up)."""
    import importlib
    import logging

    try:
        module = importlib.import_module(RAY_TOKEN_AUTH_MODULE)
    except ImportError as e:
        raise _moved(RAY_TOKEN_AUTH_MODULE) from e
    module.logger.setLevel(logging.ERROR)


# A driver of a cluster with its own token (tune.warm) sets Ray's auth mode and token file in its
# environment, and Ray caches both once read: its config (what Ray's own ray.init does when it
# turns token auth on) and its token loader are refreshed.
def use_ray_token(token_file: str) -> None:
    """This process and what it starts authenticate to Ray with the token in `token_file`."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError as e:
        raise _moved("ray._raylet.Config / AuthenticationTokenLoader") from e
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = token_file
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would come before the file
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


# `ray.init` off the main thread (`tune.cluster.start_early`) warns that it set no SIGTERM
# handler; ours is installed once the start is joined. The warning comes from this logger.
RAY_WORKER_LOGGER = "ray._private.worker"


@contextlib.contextmanager
def quiet_ray_off_main_thread_notice() -> Iterator[None]:
    import logging

    class _Quiet(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "SIGTERM handler is not set" not in record.getMessage()

    quiet, log = _Quiet(), logging.getLogger(RAY_WORKER_LOGGER)
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


# --- Ray Tune: callbacks of a restored Tuner --------------------------------------------------
# `Tuner.restore` takes no run config: the restored one carries the callbacks pickled at the
# first start, which hold a dead MLflow client. Tune has no public setter (ray-project/ray#33584
# asks for one), so the rebuilt callbacks go into the restored run config.
def set_restored_callbacks(tuner: Any, callbacks: Sequence[Any]) -> None:
    local = getattr(tuner, "_local_tuner", None)
    if local is None or not hasattr(local, "get_run_config"):
        raise _moved("ray.tune.Tuner._local_tuner.get_run_config")
    local.get_run_config().callbacks = list(callbacks)


# --- Ray Tune: a restored trial's checkpoint list ---------------------------------------------
# A resumed trial whose saved checkpoints were pruned after its last state save points at
# folders that no longer exist. `Trial.checkpoint` and `Result.best_checkpoints` read the
# trial's `_CheckpointManager`, which has no public way to drop entries.
def checkpoint_results(trial: Any) -> list[Any]:
    """The restored trial's checkpoint results, oldest first."""
    manager = _checkpoint_manager(trial)
    return list(manager._checkpoint_results)


def latest_checkpoint_result(trial: Any) -> Any:
    return _checkpoint_manager(trial).latest_checkpoint_result


def keep_checkpoint_results(trial: Any, kept: list[Any], latest: Any) -> None:
    """Forget every checkpoint result but `kept`; `latest` becomes the one a restart uses."""
    manager = _checkpoint_manager(trial)
    manager._checkpoint_results = kept
    manager._latest_checkpoint_result = latest


def _checkpoint_manager(trial: Any) -> Any:
    metadata = getattr(trial, "run_metadata", None)
    manager = getattr(metadata, "checkpoint_manager", None)
    if manager is None or not all(
        hasattr(manager, a) for a in ("_checkpoint_results", "_latest_checkpoint_result")
    ):
        raise _moved("Trial.run_metadata.checkpoint_manager._checkpoint_results")
    return manager


# --- MLflow: the tracking store behind a client -----------------------------------------------
# Two things no public API offers: SQLAlchemy pragmas on the embedded SQLite store's engine
# (tune/tracking.py, WAL without an fsync per epoch), and ending a run without
# `MlflowClient.set_terminated`, which in MLflow 3.17 flushes and joins the process-wide async
# logging queue (~1 s per trial).
def tracking_store(client: MlflowClient) -> Any:
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None or not hasattr(store, "update_run_info"):
        raise _moved("MlflowClient._tracking_client.store.update_run_info")
    return store


def sqlalchemy_engine(client: MlflowClient) -> Any:
    """The SQLAlchemy engine of a SQL-backed tracking store (one per database URI per process)."""
    engine = getattr(tracking_store(client), "engine", None)
    if engine is None:
        raise _moved("SqlAlchemyStore.engine")
    return engine


def framework_settings(verbose: bool) -> None:
    """What rnntune sets framework-wide for a job's driver, in one place: environment defaults
    Ray and MLflow read, and Tune's slow-step warning threshold (a public module's global)."""
    from ray.tune.utils.util import warn_if_slow

    # MLflow's client retries a request for ~2 min by default, and the driver's calls before
    # and after the search have no outage to ride out; the trial logger's writer retries its
    # own writes for as long as an outage lasts (RNNTUNE_TRACKING_OUTAGE_S).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    # Tune warns, every few seconds of a busy search, that forced state snapshots (one per
    # checkpoint beyond keep-best-K) "may become a bottleneck": nothing a user can act on.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the summary has it
    # Tune's result files come from tune.tuner (its TensorBoard logger left out): not Tune's own
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Tune's new output engine prints its header even when told to be silent: the old one, at
    # verbosity 0, prints nothing (the live view speaks); --verbose gets the new one's tables.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose else "0"
    if not verbose and "TUNE_WARN_THRESHOLD_S" not in os.environ:
        # Tune warns when one of its own steps took over 0.5 s ("may be a performance
        # bottleneck"): on a busy 2-core machine, a late answer from Ray's GCS. Nothing to act on.
        warn_if_slow.DEFAULT_THRESHOLD = max(warn_if_slow.DEFAULT_THRESHOLD, 10.0)


# --- Ray: starting idle workers bound to no job --------------------------------------------------
# A raylet prestarts one worker per CPU when it starts (`enable_worker_prestart`), bound to no
# job, so the first job's actors skip the worker start and its preloaded imports. Later, only a
# job's own backlog starts workers, bound to that job. The raylet's PrestartWorkers RPC starts
# unbound ones again (tune.warm, between jobs); Ray ships no Python API for it. A worker serves
# only actors of its own runtime env, and Tune gives every trial actor one (class_cache: a
# Lightning setting and the variables it propagates from the driver), so the workers get that.
def tune_actor_env_vars(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables of the runtime env Tune gives its trial actors, from a driver
    with `environ` (this process's by default); set in their workers' environment too."""
    environ = os.environ if environ is None else environ
    try:
        from ray.tune.execution.class_cache import DEFAULT_ENV_VARS, ENV_VARS_TO_PROPAGATE
    except ImportError as e:
        raise _moved("Tune's actor env (ray.tune.execution.class_cache)") from e
    env_vars = dict(DEFAULT_ENV_VARS)
    return env_vars | {k: environ[k] for k in ENV_VARS_TO_PROPAGATE if k in environ}


def prestart_ray_workers(node_manager: str, count: int, keep_alive_s: int) -> None:
    """Asks the raylet at `node_manager` (host:port) for `count` idle Python workers bound to no
    job, with the runtime env of Tune's trial actors, kept `keep_alive_s` seconds while unused."""
    import grpc

    try:
        from ray._private.authentication.grpc_authentication_client_interceptor import (
            SyncAuthenticationMetadataClientInterceptor,
        )
        from ray._private.utils import get_runtime_env_info
        from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc
        from ray.runtime_env import RuntimeEnv
    except ImportError as e:
        raise _moved("Ray's NodeManagerService.PrestartWorkers") from e
    runtime_env = get_runtime_env_info(
        RuntimeEnv(env_vars=tune_actor_env_vars()), is_job_runtime_env=False
    )
    with grpc.insecure_channel(node_manager) as channel:
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(
            grpc.intercept_channel(channel, SyncAuthenticationMetadataClientInterceptor())
        )
        request = node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.Language.PYTHON,
            num_workers=count,
            keep_alive_duration_secs=keep_alive_s,
            runtime_env_info=runtime_env,
        )
        stub.PrestartWorkers(request, timeout=10)
