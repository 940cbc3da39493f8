"""How `rnntune serve` builds its Serve application: fixed replicas or autoscaling bounds.

The running server (two replicas behind the proxy, alias following, batching) is tested over
HTTP in test_serving.py; load-driven scale-up is not exercised here (Serve's autoscaler acts
on a time scale of tens of seconds)."""

from ray.serve.deployment import deployment_to_schema

from deploy.serving.serve import ServeOptions, build


def _schema(replicas, max_replicas):
    app = build(ServeOptions("models:/m@champion", "sqlite:///x.db"), replicas, max_replicas)
    return deployment_to_schema(app._bound_deployment)


def test_fixed_replicas():
    s = _schema(3, None)
    assert s.num_replicas == 3
    assert not isinstance(s.autoscaling_config, dict)  # unset (Serve's DEFAULT sentinel)
    assert s.ray_actor_options.num_cpus == 1  # one replica per CPU


def test_autoscaling_between_min_and_max():
    s = _schema(2, 6)
    cfg = s.autoscaling_config
    cfg = cfg if isinstance(cfg, dict) else cfg.dict()
    assert (cfg["min_replicas"], cfg["max_replicas"]) == (2, 6)
    assert cfg["target_ongoing_requests"] == 16
