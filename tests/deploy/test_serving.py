"""Serving registered models: `mlflow models serve` (MLflow's own scoring server) and
`rnntune serve` (Ray Serve: batching, alias following, 400s for bad input), over real HTTP."""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits

from service.stack import free_port, start_ready, stop
from tune.driver import run_job
from tune.spec import parse_job_spec

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
CLASSIFIER, LANGUAGE_MODEL = "serve-digits", "serve-chars"


def _register(mlflow_url: str, store: Path, name: str, data: dict, model: dict, epochs: int):
    spec = parse_job_spec(
        {
            "name": name,
            "data": data,
            "model": model,
            "optim": {"lr": 0.01, "batch_size": 64},
            "search_space": {},
            "search": {"num_samples": 1},
            "scheduler": {"name": "fifo"},
            "budget": {"max_epochs": epochs},
            "storage": {"url": str(store)},
            "tracking": {"uri": mlflow_url, "experiment": "serving-tests"},
        }
    )
    return run_job(spec).registration


@pytest.fixture(scope="module")
def models(ray_local, mlflow_server, tmp_path_factory):
    """Two versions of a digits classifier (v1 champion) and a character model."""
    root = tmp_path_factory.mktemp("serving")
    gru = {"cell_type": "gru", "hidden_size": 32}
    v1 = _register(mlflow_server, root / "s", CLASSIFIER, {"name": "digits"}, gru, 3)
    v2 = _register(mlflow_server, root / "s", CLASSIFIER, {"name": "digits"}, gru, 1)
    MlflowClient(mlflow_server).set_registered_model_alias(CLASSIFIER, "champion", v1.version)
    rng = random.Random(0)
    words = "the cat sat on the mat and the dog ate the log".split()
    text = root / "chars.txt"
    text.write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) for _ in range(800)))
    lm = _register(
        mlflow_server,
        root / "s",
        LANGUAGE_MODEL,
        {"name": "text", "url": str(text), "seq_len": 32},
        {"cell_type": "lstm", "hidden_size": 32},
        2,
    )
    return {"v1": v1, "v2": v2, "lm": lm}


def _digits(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return (d.images[-n:] / 16.0).astype(np.float32), d.target[-n:]  # rows as steps: (N, 8, 8)


@pytest.fixture(scope="module")
def mlflow_scoring(models, mlflow_server, tmp_path_factory):
    """`mlflow models serve` for the champion classifier and the character model, each in a
    virtualenv MLflow builds from the model's own requirements.txt: the registered model serves
    without this project, Lightning or Ray installed (the two share one environment)."""
    log = tmp_path_factory.mktemp("mlflow-serve")
    procs, urls = [], {}
    for name in (CLASSIFIER, LANGUAGE_MODEL):
        port = free_port()
        argv = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion"]
        argv += ["--env-manager", "virtualenv", "-h", "127.0.0.1", "-p", str(port)]
        urls[name] = f"http://127.0.0.1:{port}"
        env = {
            "MLFLOW_TRACKING_URI": mlflow_server,
            "MLFLOW_ENV_ROOT": str(log / "envs"),
            # pip without compiling torch's 13,000 modules to .pyc: 49 s instead of 83 s here.
            # (pip reads a store_false option's variable as the value: 0 is --no-compile.)
            "PIP_NO_COMPILE": "0",
        }
        # the first start creates the environment: pip installs torch, mlflow, ...
        procs.append(start_ready(name, argv, env, log, urls[name], "/ping", timeout=900))
    envs = list((log / "envs").iterdir())
    assert len(envs) == 1, envs  # one environment from the shared requirements
    site = next((envs[0] / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"torch", "mlflow_skinny", "numpy", "pandas"} <= installed, installed
    # nor MLflow's tracking server (the full `mlflow` package: scikit-learn, scipy, Flask, ...)
    assert not installed & {"rnntune", "pytorch_lightning", "ray", "mlflow", "scikit_learn"}, (
        installed
    )
    yield urls
    stop(*procs)


def _rnntune_serve(name: str, mlflow_url: str, logdir: Path, *extra: str):
    port = free_port()
    argv = [str(BIN / "rnntune"), "serve", f"models:/{name}@champion", *extra]
    argv += ["--tracking-uri", mlflow_url, "--port", str(port), "--poll-interval", "1"]
    url = f"http://127.0.0.1:{port}"
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    return start_ready("serve", argv, env, logdir, url, "/healthz", timeout=180), url


@pytest.fixture(scope="module")
def ray_serve(models, mlflow_server, tmp_path_factory):
    """`rnntune serve models:/serve-digits@champion`: two replicas behind Serve's proxy, each
    polling the alias every second."""
    logdir = tmp_path_factory.mktemp("ray-serve")
    proc, url = _rnntune_serve(CLASSIFIER, mlflow_server, logdir, "--replicas", "2")
    yield url
    stop(proc)


def test_rnntune_serve_generates_text_with_direct_ingress(models, mlflow_server, tmp_path):
    """A character model, served with `--direct` (the replica answers HTTP on --port itself)."""
    proc, url = _rnntune_serve(LANGUAGE_MODEL, mlflow_server, tmp_path, "--direct")
    try:
        body = {"prompt": ["the cat ", "a dog "], "max_new_chars": 30, "temperature": 0.8}
        r = requests.post(f"{url}/predict", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.json()["texts"]) == 2 and all(len(t) >= 30 for t in r.json()["texts"])
        same = requests.post(f"{url}/predict", json=body, timeout=60).json()["texts"]
        assert same == r.json()["texts"]  # seeded sampling is reproducible
        r = requests.post(
            f"{url}/invocations",
            json={"inputs": {"prompt": ["the "]}, "params": {"max_new_chars": 5}},
            timeout=60,
        )
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1
        bad = requests.post(f"{url}/predict", json={"prompt": "x", "max_new_chars": -1}, timeout=60)
        assert bad.status_code == 400 and "max_new_chars" in bad.json()["error"]
        assert (
            requests.post(f"{url}/predict", json={"sequences": [[[0.0]]]}, timeout=60).status_code
            == 400
        )
    finally:
        stop(proc)


def test_mlflow_models_serve_scores_classifier_bodies(mlflow_scoring, models):
    x, y = _digits()
    url = f"{mlflow_scoring[CLASSIFIER]}/invocations"
    by_inputs = requests.post(url, json={"inputs": x.tolist()}, timeout=60)
    assert by_inputs.status_code == 200, by_inputs.text
    labels = np.array([p["label"] for p in by_inputs.json()["predictions"]])
    assert (labels == y).mean() > 0.5
    split = {"columns": ["sequence"], "data": [[row] for row in x.reshape(len(x), -1).tolist()]}
    by_split = requests.post(url, json={"dataframe_split": split}, timeout=60).json()
    assert [p["label"] for p in by_split["predictions"]] == labels.tolist()


def test_mlflow_models_serve_generates_from_prompts(mlflow_scoring):
    url = f"{mlflow_scoring[LANGUAGE_MODEL]}/invocations"
    body = {
        "dataframe_split": {"columns": ["prompt"], "data": [["the cat "], ["a dog "]]},
        "params": {"max_new_chars": 25, "temperature": 0.0},
    }
    r = requests.post(url, json=body, timeout=60)
    assert r.status_code == 200, r.text
    texts = [p["text"] for p in r.json()["predictions"]]
    assert len(texts) == 2 and all(len(t) >= 25 for t in texts)


def test_rnntune_serve_matches_mlflow_scoring(ray_serve, mlflow_scoring, models):
    x, _ = _digits(16)
    ours = requests.post(f"{ray_serve}/predict", json={"sequences": x.tolist()}, timeout=60)
    assert ours.status_code == 200, ours.text
    theirs = requests.post(
        f"{mlflow_scoring[CLASSIFIER]}/invocations", json={"inputs": x.tolist()}, timeout=60
    ).json()["predictions"]
    assert ours.json()["labels"] == [p["label"] for p in theirs]
    probs = np.array(ours.json()["probabilities"])
    assert np.allclose(probs, [[p[f"prob_{i}"] for i in range(10)] for p in theirs], atol=1e-5)
    flat = x.reshape(len(x), -1).tolist()
    bodies = [
        {"inputs": x.tolist()},
        {"instances": x.tolist()},
        {"dataframe_split": {"columns": ["sequence"], "data": [[r] for r in flat]}},
        {"dataframe_records": [{"sequence": r} for r in flat]},
    ]
    for body in bodies:
        r = requests.post(f"{ray_serve}/invocations", json=body, timeout=60)
        assert r.status_code == 200, (body.keys(), r.text)
        assert [p["label"] for p in r.json()["predictions"]] == ours.json()["labels"]
    ragged = [x[0].tolist(), x[1][:5].tolist()]  # different lengths: packed, not padded
    assert requests.post(f"{ray_serve}/predict", json={"sequences": ragged}, timeout=60).ok


def test_rnntune_serve_health_and_metadata(ray_serve, models):
    assert requests.get(f"{ray_serve}/healthz", timeout=30).json()["status"] == "ok"
    meta = requests.get(f"{ray_serve}/metadata", timeout=30).json()
    assert meta["name"] == CLASSIFIER and meta["alias"] == "champion"
    assert meta["version"] == models["v1"].version and meta["task"] == "classification"
    assert float(meta["metrics"]["test_acc"]) == pytest.approx(models["v1"].test_value, abs=1e-4)
    assert meta["signature"]["inputs"] and meta["input_size"] == 8
    replica = requests.get(f"{ray_serve}/healthz", timeout=30).headers["x-rnntune-replica"]
    assert replica and "replica" in meta  # answers name the replica that gave them


BAD_BODIES = [
    ({"sequences": [[[1.0] * 7]]}, "expected shape"),  # wrong feature size
    ({"sequences": [[[[1.0] * 8]]]}, "expected shape"),  # wrong rank
    ({"sequences": [[[0.0] * 8] * 100]}, "at most"),  # too long
    ({"sequences": []}, "non-empty"),
    ({"sequences": [["a"] * 8]}, "numbers"),
    ({"sequences": [[[0.0] * 8]], "extra": 1}, "unknown field"),
    ({"prompt": "hi"}, "sequences"),
    ({"sequences": [[[0.0] * 8]], "temperature": 0.5}, "language models"),
    ({}, "sequences"),
]


def test_rnntune_serve_rejects_bad_input_with_400(ray_serve):
    for body, reason in BAD_BODIES:
        r = requests.post(f"{ray_serve}/predict", json=body, timeout=30)
        assert r.status_code == 400 and reason in r.json()["error"], (body, r.text)
    nan = b'{"sequences": [[[NaN, 0, 0, 0, 0, 0, 0, 0]]]}'
    json_type = {"Content-Type": "application/json"}
    r = requests.post(f"{ray_serve}/predict", data=nan, headers=json_type, timeout=30)
    assert r.status_code == 400 and "NaN" in r.json()["error"]
    for raw in (b"{not json", b"[1, 2", b"[1, 2]", b"\xff\xfe"):
        r = requests.post(f"{ray_serve}/predict", data=raw, timeout=30)
        assert r.status_code == 400 and "body" in r.json()["error"], r.text
    one = b'{"sequences": [[[0, 0, 0, 0, 0, 0, 0, 0]]]}'
    assert requests.post(f"{ray_serve}/predict", data=one, timeout=30).ok  # no Content-Type: JSON
    csv = {"Content-Type": "text/csv"}
    r = requests.post(f"{ray_serve}/predict", data=one, headers=csv, timeout=30)
    assert r.status_code == 400 and "Content-Type" in r.json()["error"]
    assert requests.get(f"{ray_serve}/predict", timeout=30).status_code == 405
    assert requests.get(f"{ray_serve}/nowhere", timeout=30).status_code == 404
    invocations = [{"inputs": [[[0.0] * 8]], "params": {"a": 1}}, {"nope": 1}, [1, 2]]
    for body in invocations:
        r = requests.post(f"{ray_serve}/invocations", json=body, timeout=30)
        assert r.status_code == 400, (body, r.text)
    deep = b'{"sequences": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    big = b'{"sequences": [[[1' + b"0" * 400 + b", 0, 0, 0, 0, 0, 0, 0]]]}"
    for route in ("/predict", "/invocations"):
        body = deep if route == "/predict" else deep.replace(b"sequences", b"inputs")
        r = requests.post(f"{ray_serve}{route}", data=body, headers=json_type, timeout=30)
        assert r.status_code == 400 and "nested deeper" in r.json()["error"], r.text
        body = big if route == "/predict" else big.replace(b"sequences", b"inputs")
        r = requests.post(f"{ray_serve}{route}", data=body, headers=json_type, timeout=30)
        assert r.status_code == 400 and "too large" in r.json()["error"], r.text
    huge = requests.post(f"{ray_serve}/predict", data=b" " * (5 * 1024 * 1024), timeout=60)
    assert huge.status_code == 413
    chunked = (b" " * 65536 for _ in range(80))  # no Content-Length: counted while read
    assert requests.post(f"{ray_serve}/predict", data=chunked, timeout=60).status_code == 413


def test_promotion_under_load_drops_no_request(ray_serve, models, mlflow_server):
    """Clients keep scoring while `champion` moves to v2: every request succeeds, and the
    server switches to v2 without a restart."""
    x, _ = _digits(4)
    body = {"sequences": x.tolist()}
    results: list[tuple[int, str | None, str]] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.post(f"{ray_serve}/predict", json=body, timeout=30)
                    version = r.json().get("version") if r.ok else None
                    results.append((r.status_code, version, r.headers["x-rnntune-replica"]))
                except requests.RequestException:
                    results.append((0, None, ""))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(2)
    MlflowClient(mlflow_server).set_registered_model_alias(
        CLASSIFIER, "champion", models["v2"].version
    )

    def each_replicas_last() -> dict[str, str | None]:
        return {replica: version for _, version, replica in list(results)}

    # each replica switches on its own poll, once it has loaded v2: wait for both (a loaded
    # machine once had one answer v1 for over 2 s after the other's first v2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(each_replicas_last().values()) != {
        models["v2"].version
    }:
        time.sleep(0.5)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    statuses = [s for s, _, _ in results]
    versions = [v for _, v, _ in results]
    assert len(results) > 50 and set(statuses) == {200}, statuses.count(200)
    assert versions[0] == models["v1"].version and versions[-1] == models["v2"].version
    last = each_replicas_last()
    assert len(last) == 2  # concurrent callers reached both replicas through the proxy
    assert set(last.values()) == {models["v2"].version}  # and both switched


def test_our_scoring_matches_mlflow_serve_for_a_cross_validated_champion(
    ray_local, mlflow_server, tmp_path
):
    """User data small enough for 5 folds: the champion is the fold ensemble; `mlflow models
    serve` and `rnntune serve`'s scoring give the same labels and probabilities for padded
    sequences. Ours runs in this process, as a replica runs it (`serve.load`, `inputs`, the
    model's batched `score`, `output_records`): its HTTP, batching and alias following are
    tested above, on one network, and a Ray Serve start of its own took ~30 s of this test. (A
    refit champion is one network like any other model: its pyfunc is tested in
    tests/tune/test_sequences_search.py.)"""
    from deploy.bundle import inputs
    from deploy.bundle.pyfunc import output_records
    from deploy.serving.serve import ServeOptions, load
    from tests.support.sequence_data import sensor_sequences, write_parquet

    xs, labels, _ = sensor_sequences(n=80, seed=6)
    url = write_parquet(tmp_path / "d.parquet", xs, labels)
    name = "serve-cv-ensemble"
    spec = parse_job_spec(
        {
            "name": name,
            "data": {"name": "sequences", "url": str(url)},
            "model": {"cell_type": "gru", "hidden_size": 12, "bidirectional": True},
            "optim": {"lr": 0.02},
            "search_space": {},
            "search": {"num_samples": 1},
            "scheduler": {"name": "fifo"},
            "budget": {"max_epochs": 4},
            "storage": {"url": str(tmp_path / "store")},
            "tracking": {"uri": mlflow_server, "experiment": "serving-tests"},
            "registry": {"final_model": "ensemble"},
        }
    )
    reg = run_job(spec).registration
    tags = MlflowClient(mlflow_server).get_model_version(name, reg.version).tags
    assert tags["final_model"].startswith("ensemble of 5")
    fresh, _, _ = sensor_sequences(n=12, seed=9)
    padded = np.full((len(fresh), max(len(x) for x in fresh), 2), np.nan, np.float32)
    for i, x in enumerate(fresh):
        padded[i, : len(x)] = x
    body = {"inputs": np.where(np.isnan(padded), None, padded).tolist()}
    port = free_port()
    scoring = start_ready(
        "mlflow-serve",
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion"]
        + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        {"MLFLOW_TRACKING_URI": mlflow_server},
        tmp_path,
        f"http://127.0.0.1:{port}",
        "/ping",
        timeout=180,
    )
    try:
        theirs = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert theirs.status_code == 200, theirs.text
    finally:
        stop(scoring)
    loaded = load(ServeOptions(f"models:/{name}@champion", mlflow_server))
    assert loaded.version == reg.version and loaded.limits.padded
    parsed = inputs.invocations(body, False, loaded.limits)
    ours = output_records(loaded.model.task, loaded.model.score(parsed.items), loaded.model.classes)
    a = theirs.json()["predictions"]
    assert [r["label"] for r in a] == [r["label"] for r in ours]
    for ra, rb in zip(a, ours, strict=True):
        probs = [k for k in ra if k.startswith("prob_")]
        assert probs and np.allclose([ra[k] for k in probs], [rb[k] for k in probs], atol=1e-5)


def test_a_registered_model_carries_only_the_bundle_and_loads_without_ray_or_lightning(
    models, mlflow_server, tmp_path
):
    """The model's code is `lightning_modules` and `deploy.bundle` (no model server, which
    imports Ray); it loads and predicts in a process where Ray and Lightning cannot be imported."""
    import json
    import subprocess

    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{CLASSIFIER}@champion", dst_path=str(tmp_path)
        )
    )
    code = local / "code"
    shipped = sorted(str(p.relative_to(code / "deploy")) for p in (code / "deploy").rglob("*.py"))
    assert shipped == [
        "__init__.py", "bundle/__init__.py", "bundle/inputs.py", "bundle/model_code.py",
        "bundle/pyfunc.py", "bundle/requirements.py",
    ]  # fmt: skip
    probe = f"""
import sys
for name in ("ray", "pytorch_lightning", "lightning_fabric", "torchmetrics", "optuna"):
    sys.modules[name] = None  # importing any of them now raises ImportError
import json
import numpy as np
import mlflow.pyfunc
model = mlflow.pyfunc.load_model({str(local)!r})
out = model.predict(np.zeros((2, 8, 8), dtype=np.float32))
print(json.dumps([len(out), sorted(m for m in sys.modules if m.startswith("deploy"))]))
"""
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows, deploy_modules = json.loads(run.stdout.strip().splitlines()[-1])
    assert rows == 2 and "deploy.bundle.pyfunc" in deploy_modules
    assert not [m for m in deploy_modules if m.startswith("deploy.serving")]
