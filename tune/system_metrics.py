"""System metrics of a job (CPU, memory, disk, network, GPU where present) on its parent run.

MLflow's own `SystemMetricsMonitor` samples the machine and logs `system/...` metrics, which its
UI charts on the run's "System metrics" tab. It is not used as is because of how it fails: the
first request that does not reach MLflow ends its monitoring for good, and its `finish()` joins
the thread that may be inside MLflow's two-minute retries. Here MLflow's monitors take the
samples (the same names, so the same charts) and the job's `OrderedWriter` delivers them, in
order, through outages and a full disk, as it does the trials' metrics; stopping never waits for
MLflow.

The samples are of the driver's machine: the whole cluster in the embedded mode and on one node;
on several nodes each trial's own host is not measured here.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

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
    history = client.get_metric_history(run_id, PREFIX + "cpu_utilization_percentage")
    return max((m.step for m in history), default=-1) + 1


class SystemMetrics:
    """Samples the machine every `interval` seconds on a daemon thread and hands each sample,
    as one `log_batch` on the run, to `submit` (the job's ordered writer)."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        submit: Callable[[Callable[[], None]], None],
        interval: float | None = None,
        first_step: int = 0,
    ) -> None:
        self.client, self.run_id, self.submit = client, run_id, submit
        self.interval = interval_s() if interval is None else interval
        self.step = first_step
        self.monitors = monitors()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="rnntune-system-metrics", daemon=True
        )

    @property
    def names(self) -> list[str]:
        return [type(m).__name__ for m in self.monitors]

    def start(self) -> SystemMetrics:
        psutil.cpu_percent()  # CPU use is measured between calls: from here to the first sample
        self._thread.start()
        return self

    def stop(self) -> None:
        """The last sample queued; returns at once (the writer delivers it)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        """A sample at the end of each interval (CPU use is measured over it), and one when
        stopped: a job shorter than the interval still gets one."""
        while True:
            stopping = self._stop.wait(self.interval)
            self._sample()
            self._publish()
            if stopping:
                return

    def _sample(self) -> None:
        for monitor in self.monitors:
            try:
                monitor.collect_metrics()
            except Exception:  # noqa: BLE001 - a sensor that fails once skips one sample
                continue

    def _publish(self) -> None:
        now = int(time.time() * 1000)  # when sampled, not when MLflow gets it
        values: dict[str, float] = {}
        for monitor in self.monitors:
            try:
                values.update(monitor.aggregate_metrics())
            except Exception:  # noqa: BLE001 - e.g. nothing collected since the last one
                pass
            monitor.clear_metrics()
        if not values:
            return
        metrics = [Metric(PREFIX + k, float(v), now, self.step) for k, v in values.items()]
        self.step += 1
        run_id, client = self.run_id, self.client
        self.submit(lambda: client.log_batch(run_id, metrics=metrics))


def start_system_metrics(
    client: MlflowClient, run_id: str, submit: Callable[[Callable[[], None]], None]
) -> SystemMetrics:
    """Started on the job's parent run, going on from its last step, with the host as a tag."""
    client.set_tag(run_id, NODE_TAG, socket.gethostname())
    return SystemMetrics(client, run_id, submit, first_step=next_step(client, run_id)).start()
