"""`rnntune serve models:/NAME@ALIAS`: a registered model behind Ray Serve.

`/predict` (our JSON), `/invocations` (MLflow's body formats), `/healthz` (`/ping`), `/metadata`. Requests
are batched across callers (`serve.batch`: one forward pass for many requests), replicas scale on
Ray, and a replica serving an alias polls the registry and swaps in a newly promoted version
once it is loaded, so no request is dropped or sees a half-loaded model.
"""

import asyncio
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from deploy.bundle import inputs
from deploy.bundle.inputs import BadInput, Limits, Prompts, Sequences
from deploy.bundle.pyfunc import output_records
from lightning_modules.documents import DocumentError, load_json
from tune.cluster import ensure_ray

log = logging.getLogger("rnntune.serve")


@dataclass(frozen=True)
class ServeOptions:
    model_uri: str
    tracking_uri: str
    max_batch_size: int = 64
    batch_wait_timeout_s: float = 0.002
    poll_interval_s: float = 10.0  # how often an alias is re-resolved
    max_body_bytes: int = 4 * 1024 * 1024
    max_steps: int | None = None  # default: 4x the training sequence length


@dataclass
class Loaded:
    """One loaded model version; replaced as a whole when the alias moves."""

    model: Any  # deploy.bundle.pyfunc.RecurrentModel
    version: str | None
    limits: Limits
    info: dict[str, Any]


def parse_uri(uri: str) -> tuple[str | None, str | None]:
    """`models:/NAME@ALIAS` -> (NAME, ALIAS); other URIs are served as they are (no following)."""
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri.removeprefix("models:/").split("@", 1)
        return name, alias
    return None, None


def load(opts: ServeOptions, version: str | None = None) -> Loaded:
    import mlflow
    from mlflow.tracking import MlflowClient

    name, alias = parse_uri(opts.model_uri)
    client = MlflowClient(opts.tracking_uri)
    uri, tags, signature = opts.model_uri, {}, None
    if name:
        mv = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, alias)
        )
        version, tags = str(mv.version), dict(mv.tags)
        uri = f"models:/{name}/{version}"
    mlflow.set_tracking_uri(opts.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(uri)
    model = pyfunc.unwrap_python_model()
    if pyfunc.metadata.signature is not None:
        signature = pyfunc.metadata.signature.to_dict()
    seq_len = model.data_info.seq_len
    limits = Limits(
        input_size=model.data_info.input_size,
        max_steps=opts.max_steps or max(4 * seq_len, 1),
        padded=model.prep is not None,  # the user's own sequences
        fills_missing=model.prep is not None and model.prep.missing != "refuse",
    )
    info = {
        "name": name,
        "alias": alias,
        "version": version,
        "uri": opts.model_uri,
        "task": model.task,
        "metrics": tags,
        "signature": signature,
        "input_size": limits.input_size,
        "max_steps": limits.max_steps,
        "classes": model.classes,
        "features": model.prep.feature_names if model.prep else None,
        "loaded_at": time.time(),
    }
    return Loaded(model, version, limits, info)


QUIET_LOGS = {"enable_access_log": False, "log_level": "WARNING"}  # per-request logs cost ~ms
ROUTES = {
    "/predict": "POST",
    "/invocations": "POST",
    "/healthz": "GET",
    "/ping": "GET",  # MLflow's scoring-server health route, so probes written for it work
    "/metadata": "GET",
}


class BodyTooLarge(Exception):
    pass


def reply(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status, media_type="application/json")


@serve.deployment(
    ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256, logging_config=QUIET_LOGS
)
class ModelServer:
    """One replica. HTTP arrives as a plain Starlette request and is routed here by path: a
    FastAPI ingress (routing, dependency solving, pydantic body models, an HTTP middleware)
    cost more CPU per request than the batched forward pass and halved the throughput."""

    def __init__(self, options: dict) -> None:
        import torch

        torch.set_num_threads(1)  # one replica per CPU: scale out with replicas
        self.opts = ServeOptions(**options)
        self.current = load(self.opts)
        self._score.set_max_batch_size(self.opts.max_batch_size)
        self._score.set_batch_wait_timeout_s(self.opts.batch_wait_timeout_s)
        self.in_flight = 0  # requests inside __call__ (the replica's one event loop)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.name, self.alias = parse_uri(self.opts.model_uri)
        if self.name:
            threading.Thread(target=self._follow_alias, daemon=True).start()

    def _follow_alias(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.opts.tracking_uri)
        while True:
            time.sleep(self.opts.poll_interval_s)
            try:
                version = str(client.get_model_version_by_alias(self.name, self.alias).version)
                if version != self.current.version:
                    fresh = load(self.opts, version)  # fully loaded before it takes traffic
                    self.current = fresh  # one reference swap: requests see old or new, whole
                    log.info("%s@%s now serves version %s", self.name, self.alias, version)
            except Exception as e:  # noqa: BLE001 - keep serving the loaded version
                log.warning("alias check failed: %s", e)

    async def __call__(self, request: Request) -> Response:
        response = await self._answer(request)
        response.headers["x-rnntune-replica"] = self.replica  # which replica answered
        return response

    async def _answer(self, request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        method = ROUTES.get(path)
        if method is None:
            return reply({"error": f"no route {path}; routes: {', '.join(ROUTES)}"}, 404)
        if request.method != method:
            return reply({"error": f"{path} takes {method}, not {request.method}"}, 405)
        self.in_flight += 1
        try:
            if path == "/predict":
                return await self.predict(await self._json(request))
            if path == "/invocations":
                return await self.invocations(await self._json(request))
            if path == "/metadata":
                return reply({**self.current.info, "replica": self.replica})
            return reply({"status": "ok", "version": self.current.version})
        except BadInput as e:
            return reply({"error": str(e)}, 400)
        except BodyTooLarge:
            return reply({"error": f"body: over {self.opts.max_body_bytes} bytes"}, 413)
        finally:
            self.in_flight -= 1

    async def _json(self, request: Request) -> Any:
        """The body parsed as JSON, read no further than `max_body_bytes`."""
        limit = self.opts.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and (not declared.isdigit() or int(declared) > limit):
            raise BodyTooLarge
        size, chunks = 0, []
        async for chunk in request.stream():  # chunked bodies declare no length
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        if kind and kind != "application/json" and not kind.endswith("+json"):
            raise BadInput(f"body: Content-Type {kind} is not JSON (send application/json)")
        try:
            return load_json(b"".join(chunks), walk=False)
        except DocumentError as e:
            raise BadInput(f"body: {e}") from None

    async def _batched(self, parsed: Sequences) -> tuple[np.ndarray, str | None]:
        """`_score` through the batch queue. The wait for company applies only while other
        requests are in the replica: a lone caller (nothing else arriving) is scored at once."""
        alone = self.in_flight <= 1
        self._score.set_batch_wait_timeout_s(0.0 if alone else self.opts.batch_wait_timeout_s)
        return await self._score(parsed)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _score(self, requests: list[Sequences]) -> list[tuple[np.ndarray, str | None]]:
        """Many requests' sequences in one forward pass, split back per request."""
        loaded = self.current
        flat = [x for r in requests for x in r.items]
        out = loaded.model.score(flat)
        results, start = [], 0
        for r in requests:
            results.append((out[start : start + len(r.items)], loaded.version))
            start += len(r.items)
        return results

    async def _generate(self, p: Prompts) -> tuple[list[str], str | None]:
        loaded = self.current
        frame = await asyncio.to_thread(loaded.model.generate_text, p.texts, p.params)
        return frame["text"].tolist(), loaded.version

    async def predict(self, body: Any) -> Response:
        """Sequences -> labels and probabilities (or values); prompts -> generated text."""
        loaded = self.current
        parsed = inputs.predict(body, loaded.model.task == "language_model", loaded.limits)
        if isinstance(parsed, Prompts):
            texts, version = await self._generate(parsed)
            return reply({"texts": texts, "version": version})
        out, version = await self._batched(parsed)
        if loaded.model.task == "regression":
            return reply({"values": out.tolist(), "version": version})
        probs = out.tolist()
        labels = loaded.model.labels(out)
        return reply({"labels": labels, "probabilities": probs, "version": version})

    async def invocations(self, body: Any) -> Response:
        """MLflow's scoring protocol: dataframe_split / dataframe_records / inputs / instances."""
        loaded = self.current
        parsed = inputs.invocations(body, loaded.model.task == "language_model", loaded.limits)
        if isinstance(parsed, Prompts):
            texts, _ = await self._generate(parsed)
            return reply({"predictions": [{"text": t} for t in texts]})
        out, _ = await self._batched(parsed)
        return reply({"predictions": output_records(loaded.model.task, out, loaded.model.classes)})


def build(opts: ServeOptions, num_replicas: int | None, max_replicas: int | None):
    """The Serve application: fixed replicas, or autoscaling between 1 and `max_replicas`."""
    if max_replicas:
        deployment = ModelServer.options(
            num_replicas="auto",
            autoscaling_config={
                "min_replicas": num_replicas or 1,
                "max_replicas": max_replicas,
                "target_ongoing_requests": 16,
            },
        )
    else:
        deployment = ModelServer.options(num_replicas=num_replicas or 1)
    return deployment.bind(asdict(opts))


def run(
    opts: ServeOptions,
    host: str,
    port: int,
    num_replicas: int | None,
    max_replicas: int | None,
    direct: bool = False,
) -> None:
    """Serve until interrupted: on the Ray cluster in RAY_ADDRESS, else on an embedded one.

    `direct`: each replica answers HTTP itself (Ray Serve's direct ingress) on `port`, `port+1`,
    ..., skipping the proxy hop that costs ~10 ms of CPU per request on a small machine. Scale
    it by running more servers behind a load balancer (one per pod); the default, through
    Serve's proxy, keeps one address in front of any number of (autoscaled) replicas.
    """
    import os
    import signal

    import ray

    proxy_port = port
    if direct:
        if os.environ.get("RAY_ADDRESS"):
            raise ValueError("--direct: needs the embedded Ray (unset RAY_ADDRESS)")
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"  # read by Serve's actors at start
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(port)
        os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(port + 64)
        proxy_port = _free_port(host)  # Serve still starts its proxy; keep it off `port`
    ensure_ray()  # the cluster in RAY_ADDRESS, or an embedded Ray on loopback
    serve.start(http_options={"host": host, "port": proxy_port}, logging_config=QUIET_LOGS)
    serve.run(build(opts, num_replicas, max_replicas), name="rnntune-model", route_prefix="/")
    where = f"http://{host}:{port}" + (" (direct ingress)" if direct else "")
    print(f"serving {opts.model_uri} at {where} (/predict, /invocations, /metadata)")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    if os.environ.get("RAY_ADDRESS"):
        serve.delete("rnntune-model")  # leave the shared cluster as it was
    ray.shutdown()  # an embedded Ray takes its Serve actors with it


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
