"""An embedded Ray listens on loopback only, however late the variable that says so is set."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.support.paths import ROOT

PROBE = """
import ray  # imported first, as every real caller does, before the variable is set
from tune.cluster import ensure_ray
ensure_ray(num_cpus=1)
print(ray.util.get_node_ip_address(), *sorted({n["NodeManagerAddress"] for n in ray.nodes()}))
ray.shutdown()
"""


@pytest.mark.slow  # a CLI or Ray process of its own: seconds
def test_embedded_ray_binds_loopback():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    env |= {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["127.0.0.1", "127.0.0.1"], out.stdout


@pytest.mark.slow  # a CLI or Ray process of its own: seconds
def test_test_runtime_binds_loopback(ray_local):
    assert ray_local.util.get_node_ip_address() == "127.0.0.1"
    assert {n["NodeManagerAddress"] for n in ray_local.nodes()} == {"127.0.0.1"}


@pytest.mark.slow  # the shared local Ray runtime, and an actor process
def test_cluster_source_samples_each_node_through_an_actor_on_it(ray_local):
    """A job on a Ray cluster measures every node (the trials' hosts, their GPUs), not only the
    driver's; a node whose actor is gone is left out and the sampling goes on."""
    from tune.system_metrics import ClusterSource

    source = ClusterSource()
    node = ray_local.get_runtime_context().get_node_id()
    label = f"node-{node[:8]}"
    try:
        # the actor's worker starts with the first sample; on a loaded machine it can take more
        # than the 5 s a sample waits (that node is then left out, and asked again)
        deadline = time.monotonic() + 60
        while not (sample := source.take()) and time.monotonic() < deadline:
            pass
        assert 0 <= sample[f"system/{label}/cpu_utilization_percentage"] <= 100
        assert sample[f"system/{label}/system_memory_usage_megabytes"] > 0
        assert f"system/{label}/disk_usage_percentage" in sample
        assert list(source.hosts()) == [label] and "(127.0.0.1)" in source.hosts()[label]
        ray_local.kill(source.actors[node])  # as when its node dies
        # ray.kill returns before the actor is gone: on a loaded machine it answered once more
        deadline = time.monotonic() + 30
        while (left := source.take()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == {} and node not in source.actors
    finally:
        source.close()
