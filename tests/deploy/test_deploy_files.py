"""The Dockerfile, compose file and Kubernetes manifests, checked without a Docker engine or a
cluster: structure, pins, lint, schemas, and that names cross-reference (images, ports, settings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from deploy.serving.entrypoint import command
from service.settings import Settings
from tests.support.paths import ROOT

K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
IMAGE_REPO = "rnntune"
ROLES = ("service", "ray-head", "ray-worker", "model-server", "mlflow", "mlflow-users", "job")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_k8s() -> list[dict]:
    return [d for p in K8S for d in _docs(p)]


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(fileobj=(ROOT / "Dockerfile").open("rb"))
    return parser


def test_dockerfile_stages_user_and_pins(dockerfile):
    instructions = dockerfile.structure
    stages = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert [s.split(" AS ")[-1] for s in stages] == ["builder", "runtime"]
    assert all(s.startswith("${BASE_IMAGE}") for s in stages)
    base = [
        i["value"]
        for i in instructions
        if i["instruction"] == "ARG" and "BASE_IMAGE=" in i["value"]
    ]
    assert base and "slim" in base[0]
    runtime = instructions[[i["instruction"] for i in instructions].index("FROM", 1) :]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(i["value"] for i in instructions if i["instruction"] == "RUN")
    assert "torch==2.13.0" in runs and "-c constraints.txt" in runs
    assert "TORCH_INDEX" in runs  # the CUDA build argument
    kinds = [i["instruction"] for i in runtime]
    assert "HEALTHCHECK" in kinds and "ENTRYPOINT" in kinds


def test_dockerfile_installs_dependencies_before_copying_source(dockerfile):
    steps = [(i["instruction"], i["value"]) for i in dockerfile.structure]
    deps = next(n for n, (k, v) in enumerate(steps) if k == "RUN" and "constraints.txt" in v)
    first_source = next(n for n, (k, v) in enumerate(steps) if k == "COPY" and "tune/" in v)
    assert deps < first_source


def test_every_copy_source_exists(dockerfile):
    ignored = (ROOT / ".dockerignore").read_text().split()
    for step in dockerfile.structure:
        if step["instruction"] != "COPY" or "--from=" in step["value"]:
            continue
        *sources, _dest = [p for p in step["value"].split() if not p.startswith("--")]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert src.rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"
    assert ".venv" in ignored and "runs" in ignored


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    run = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_requirements_layer_is_the_project_dependencies_without_torch():
    from deploy.bundle.requirements import requirements

    deps = requirements(ROOT / "pyproject.toml", ["cluster"])
    assert "mlflow[auth]==3.17.2" in deps and any(d.startswith("psycopg") for d in deps)
    assert not any(re.match(r"torch\b", d) for d in deps)


def test_entrypoint_roles_resolve_to_real_commands():
    env = {
        "RAY_HEAD_ADDRESS": "head:6379",
        "SERVE_MODEL_URI": "models:/m@champion",
        "MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db",
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://b/a",
    }
    for role in ROLES:
        argv = command(role, [], env)
        assert argv[0] in ("uvicorn", "ray", "rnntune", "mlflow", "python")
    assert command("service", [], {})[:3] == ["uvicorn", "--factory", "service.app:create_app"]
    with pytest.raises(ValueError, match="SERVE_MODEL_URI"):
        command("model-server", [], {})
    with pytest.raises(ValueError, match="unknown"):
        command("shell", [], {})


def _settings_env_names() -> set[str]:
    return {f"RNNTUNE_{name.upper()}" for name in Settings.model_fields}


def _env_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def test_compose_cross_references():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "postgres",
        "minio",
        "mlflow",
        "ray-head",
        "ray-worker",
        "service",
        "model-server",
    } <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        env = svc.get("environment", {})
        for key in env:
            if key.startswith("RNNTUNE_"):
                assert key in _settings_env_names(), f"{name}: {key} is not a setting"
        for value in env.values():  # secrets only by reference
            assert "REPLACE" not in str(value)
        if svc.get("image", "").startswith("${RNNTUNE_IMAGE"):
            role = svc["command"][0]
            command(role, svc["command"][1:], {k: "x" for k in env})  # the role's needs are set
    # The service reaches Ray's Jobs API, MLflow and Postgres where those services listen.
    svc_env = services["service"]["environment"]
    ray = urlparse(svc_env["RNNTUNE_RAY_ADDRESS"])
    assert ray.hostname == "ray-head" and ray.port == 8265
    assert "--dashboard-port" in command("ray-head", [], {}) and "8265" in command(
        "ray-head", [], {}
    )
    mlflow = urlparse(svc_env["RNNTUNE_TRACKING_URI"])
    assert (
        mlflow.hostname == "mlflow"
        and str(mlflow.port) == services["mlflow"]["environment"]["PORT"]
    )
    assert "@postgres:5432/rnntune" in svc_env["RNNTUNE_DATABASE_URL"]
    assert "CREATE DATABASE rnntune" in (ROOT / "deploy" / "postgres-init.sql").read_text()
    assert services["ray-worker"]["environment"]["RAY_HEAD_ADDRESS"] == "ray-head:6379"
    assert compose["secrets"]["rnntune_tokens"]["file"] == "./tokens.json"
    assert svc_env["RNNTUNE_TOKENS_FILE"] == "/run/secrets/rnntune_tokens"


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    templates = []
    if doc["kind"] == "Deployment":
        templates.append(spec["template"])
    cluster = spec.get("rayClusterSpec", spec) if doc["kind"] in ("RayCluster", "RayJob") else None
    if cluster:
        templates.append(cluster["headGroupSpec"]["template"])
        templates += [g["template"] for g in cluster["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]


def test_standard_manifests_validate_against_kubernetes_schemas():
    for doc in _all_k8s():
        if doc["apiVersion"].startswith("ray.io/"):
            continue
        kubernetes_validate.validate(doc, "1.33", strict=True)


KUBERAY_GROUP = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "rayStartParams",
    "template",
}
KUBERAY_CLUSTER = {"rayVersion", "enableInTreeAutoscaling", "headGroupSpec", "workerGroupSpecs"}
KUBERAY_JOB = {"entrypoint", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished"} | {
    "backoffLimit",
    "rayClusterSpec",
    "runtimeEnvYAML",
    "clusterSelector",
}


def test_kuberay_resources_follow_the_crd_fields():
    """KubeRay's CRDs are not bundled with kubernetes-validate: check the fields we use against
    KubeRay v1's documented spec, and validate every pod template as a Pod."""
    kinds = {d["kind"]: d for d in _all_k8s()}
    cluster, job = kinds["RayCluster"], kinds["RayJob"]
    assert cluster["apiVersion"] == job["apiVersion"] == "ray.io/v1"
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        assert set(spec) <= KUBERAY_CLUSTER and spec["rayVersion"] == "2.60.0"
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for g in spec["workerGroupSpecs"]:
            assert set(g) <= KUBERAY_GROUP and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        for g in groups:
            assert all(isinstance(v, str) for v in g["rayStartParams"].values())
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "x"},
                "spec": g["template"]["spec"],
            }
            kubernetes_validate.validate(pod, "1.33", strict=True)
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1" and "cpu" in groups
    assert set(job["spec"]) <= KUBERAY_JOB
    assert job["spec"]["entrypoint"].startswith("python -m tune run ")


def test_k8s_cross_references():
    docs = _all_k8s()
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rnntune-config"
    )
    secret = next(d for d in docs if d["kind"] == "Secret")
    for key in [*config["data"], *secret["stringData"]]:
        if key.startswith("RNNTUNE_"):
            assert key in _settings_env_names(), f"{key} is not a setting"
    for doc in docs:
        for c in _containers(doc):
            assert c["image"].split(":")[0] == IMAGE_REPO
            for ref in c.get("envFrom", []):
                assert ("ConfigMap", ref["configMapRef"]["name"]) in names
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (
                        ref["name"] == secret["metadata"]["name"]
                        and ref["key"] in secret["stringData"]
                    )
                if e["name"].startswith("RNNTUNE_"):
                    assert e["name"] in _settings_env_names()
            if c.get("args"):  # our entrypoint: the role's required settings are present
                env = {n: "x" for n in _env_names(c) | set(config["data"])}
                command(c["args"][0], c["args"][1:], env)
    # The service reaches the RayCluster's head service (KubeRay names it <cluster>-head-svc).
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    ray = urlparse(config["data"]["RNNTUNE_RAY_ADDRESS"])
    assert ray.hostname == f"{cluster['metadata']['name']}-head-svc" and ray.port == 8265
    job = next(d for d in docs if d["kind"] == "RayJob")
    spec_path = job["spec"]["entrypoint"].split()[-1]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mount = head["containers"][0]["volumeMounts"][0]
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    spec_map = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    )
    assert spec_path == f"{mount['mountPath']}/{next(iter(spec_map['data']))}"
    from tune.spec import parse_job_spec

    parse_job_spec(yaml.safe_load(next(iter(spec_map["data"].values()))))  # the template validates
    for svc in (d for d in docs if d["kind"] == "Service"):
        target = svc["spec"]["ports"][0]["targetPort"]
        deployment = next(
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] == svc["metadata"]["name"]
        )
        ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert target in [p["name"] for p in ports]
