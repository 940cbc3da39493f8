"""System metrics of a job (CPU, memory, disk, network, GPU where present) on its parent run.

MLflow's own `SystemMetricsMonitor` samples the machine and logs `system/...` metrics, which its
UI charts on the run's "System metrics" tab. It is not used as is because of how it fails: the
first request that does not reach MLflow ends its monitoring for good, and its `finish()` joins
the thread that may be inside MLflow's two-minute retries. Here MLflow's monitors take the
samples (the same names, so the same charts) and the job's `OrderedWriter` delivers them, in
order, through outages and a full disk, as it does the trials' metrics; stopping never waits for
MLflow.

In the embedded mode the driver's machine is the cluster: `system/<name>`. On a Ray cluster
(`RAY_ADDRESS`) every node is sampled by an actor pinned to it, `system/node-<id>/<name>`, so the
trials' hosts and their GPUs are measured, not only the driver's.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
from mlflow.entities import Metric
from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor
from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor
from mlflow.tracking import MlflowClient

PREFIX = "system/"
NODE_TAG = "rnntune.system_metrics_host"
# MLflow's own setting for its monitor, read here too: seconds between samples
INTERVAL_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
DEFAULT_INTERVAL_S = 10.0


def monitors() -> list[BaseMetricsMonitor]:
    """MLflow's monitors for this machine: CPU and memory, disk, network, and the NVIDIA GPUs
    when NVML finds any (needs `nvidia-ml-py`, a dependency)."""
    found: list[BaseMetricsMonitor] = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
    try:
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

        found.append(GPUMonitor())
    except Exception:  # noqa: BLE001 - no NVML library, no driver, no GPU: no GPU metrics
        pass
    return found


def interval_s() -> float:
    value = os.environ.get(INTERVAL_ENV)
    return float(value) if value else DEFAULT_INTERVAL_S


def next_step(client: MlflowClient, run_id: str) -> int:
    """The step after the last system sample on the run (a resumed job goes on from there)."""
    keys = [
        k
        for k in client.get_run(run_id).data.metrics
        if k.startswith(PREFIX) and k.endswith("cpu_utilization_percentage")
    ]
    steps = [m.step for k in keys for m in client.get_metric_history(run_id, k)]
    return max(steps, default=-1) + 1


class Machine:
    """MLflow's monitors on one machine; `take()` samples now and returns the values since the
    last call (CPU use is measured between calls)."""

    def __init__(self) -> None:
        self.monitors = monitors()
        psutil.cpu_percent()

    @property
    def names(self) -> list[str]:
        return [type(m).__name__ for m in self.monitors]

    def take(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for monitor in self.monitors:
            try:
                monitor.collect_metrics()
                values.update(monitor.aggregate_metrics())
            except Exception:  # noqa: BLE001 - a sensor that fails once skips one sample
                pass
            monitor.clear_metrics()
        return {k: float(v) for k, v in values.items()}


class LocalSource:
    """The driver's own machine, `system/<name>`: the embedded cluster."""

    def __init__(self) -> None:
        self.machine = Machine()

    @property
    def names(self) -> list[str]:
        return self.machine.names

    def take(self) -> dict[str, float]:
        return {PREFIX + k: v for k, v in self.machine.take().items()}

    def hosts(self) -> dict[str, str]:
        return {"": socket.gethostname()}

    def close(self) -> None:
        pass


class ClusterSource:
    """Every alive node of a Ray cluster, `system/node-<id>/<name>`: a `Machine` actor on each
    (no CPUs reserved, pinned to its node), asked for a sample each interval. Nodes that join
    are added at the next sample; a node lost (its actor gone, or silent) is left out."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.actors: dict[str, Any] = {}  # node id -> its Machine actor
        self.pending: dict[str, Any] = {}  # node id -> its sample not yet answered
        self.labels: dict[str, str] = {}  # node id -> `node-<first 8 of its id>`
        self.addresses: dict[str, str] = {}  # label -> "hostname (ip)"
        self.names = ["Machine actor per node"]

    def _join_new_nodes(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for node in ray.nodes():
            node_id = node["NodeID"]
            if not node.get("Alive") or node_id in self.actors or node_id in self.labels:
                continue
            label = f"node-{node_id[:8]}"
            self.labels[node_id] = label
            host = node.get("NodeManagerHostname") or "?"
            self.addresses[label] = f"{host} ({node.get('NodeManagerAddress', '?')})"
            on_node = NodeAffinitySchedulingStrategy(node_id, soft=False)
            self.actors[node_id] = (
                ray.remote(num_cpus=0, max_restarts=0)(Machine)
                .options(scheduling_strategy=on_node)
                .remote()
            )

    def take(self) -> dict[str, float]:
        import ray

        self._join_new_nodes()
        for node_id, actor in self.actors.items():
            if node_id not in self.pending:
                self.pending[node_id] = actor.take.remote()
        refs = list(self.pending.values())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.timeout)
        values: dict[str, float] = {}
        for node_id, ref in list(self.pending.items()):
            if ref not in ready:
                continue  # busy or unreachable: asked again once it answers
            del self.pending[node_id]
            try:
                sample = ray.get(ref)
            except Exception:  # noqa: BLE001 - the node or its actor is gone: leave it out
                del self.actors[node_id]
                continue
            label = self.labels[node_id]
            values.update({f"{PREFIX}{label}/{k}": v for k, v in sample.items()})
        return values

    def hosts(self) -> dict[str, str]:
        return dict(self.addresses)

    def close(self) -> None:
        import ray

        for actor in self.actors.values():
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone with its node
                pass
        self.actors.clear()


class SystemMetrics:
    """Samples `source` every `interval` seconds on a daemon thread and hands each sample, as
    one `log_batch` on the run, to `submit` (the job's ordered writer)."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        submit: Callable[[Callable[[], None]], None],
        interval: float | None = None,
        first_step: int = 0,
        source: LocalSource | ClusterSource | None = None,
    ) -> None:
        self.client, self.run_id, self.submit = client, run_id, submit
        self.interval = interval_s() if interval is None else interval
        self.step = first_step
        self.source = source or LocalSource()
        self.hosts: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="rnntune-system-metrics", daemon=True
        )

    @property
    def names(self) -> list[str]:
        return self.source.names

    def start(self) -> SystemMetrics:
        self._thread.start()
        return self

    def stop(self, wait: float = 1.0) -> None:
        """Ends the sampling with a last sample, waiting at most `wait` seconds for it (a
        cluster node may take longer to answer). A stopped job passes 0: Ray's stop_job gives
        it 3 s to close its runs before SIGKILL. The writer delivers what is queued."""
        self._stop.set()
        self._thread.join(timeout=wait)

    def _run(self) -> None:
        """A sample at the end of each interval (CPU use is measured over it), and one when
        stopped: a job shorter than the interval still gets one."""
        try:
            while True:
                stopping = self._stop.wait(self.interval)
                self._publish(self.source.take())
                if stopping:
                    return
        except Exception as e:  # noqa: BLE001 - system metrics never take the job down
            print(f"rnntune: system metrics stopped: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            self.source.close()

    def _publish(self, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)  # when sampled, not when MLflow gets it
        run_id, client = self.run_id, self.client
        hosts = self.source.hosts()
        if hosts != self.hosts:  # which machine each series is (nodes join a cluster)
            self.hosts = hosts
            tag = hosts[""] if list(hosts) == [""] else json.dumps(hosts)
            self.submit(lambda: client.set_tag(run_id, NODE_TAG, tag))
        if not values:
            return
        metrics = [Metric(k, v, now, self.step) for k, v in values.items()]
        self.step += 1
        self.submit(lambda: client.log_batch(run_id, metrics=metrics))


def start_system_metrics(
    client: MlflowClient, run_id: str, submit: Callable[[Callable[[], None]], None]
) -> SystemMetrics:
    """Started on the job's parent run, going on from its last step: the driver's machine in
    the embedded mode, every node of the cluster in `RAY_ADDRESS`."""
    source = ClusterSource() if os.environ.get("RAY_ADDRESS") else LocalSource()
    first = next_step(client, run_id)
    return SystemMetrics(client, run_id, submit, first_step=first, source=source).start()
