"""Names vulture cannot see used (`make lint`): each is read by a serializer, a framework or a
test harness, never by a call vulture can follow. Keep the reason beside each."""

# Written to result.json / champion_decision.json / the service's JSON through asdict or pydantic.
data_fingerprint  # lightning_modules/training.py TrainResult, tune/registry.py Registration
grad_norms_over_time  # lightning_modules/training.py TrainResult
test_metrics  # tune/registry.py Registration
previous_champion  # tune/registry.py Registration
mlflow_run_id  # service/api/schemas.py JobView
mlflow_url  # service/api/schemas.py JobView
stale_reason  # service/api/schemas.py JobView

# Reached by name: the dataset entries' `builder` and `datamodule` strings
# (lightning_modules/datasets/), uvicorn's factory string, FastAPI's schema hook, a router
# without the `router` name.
build_adding
build_copy
TextDataModule
create_app  # `uvicorn service.app:create_app --factory`
_.openapi  # service/app.py: FastAPI calls app.openapi()
job_schema  # service/api/routes/jobs.py: @schema_router.get

# Framework state set for the framework to read.
_.should_stop  # Lightning's trainer.should_stop
_.ENABLE_RAY_CLUSTER  # tune/compat.py: Ray's own copy of the loopback flag
_._latest_checkpoint_result  # tune/compat.py: Tune's checkpoint manager

# Read by tests and benchmarks, part of a public helper's contract.
_.last_threshold  # lightning_modules/clipping.py: the adaptive threshold in force (tests)
start_ready  # service/stack.py: start a server and wait for its health URL (tests, bench)

# Recorded for whoever feeds the model (the unit its inputs were trained in), not read by code.
_.scale  # lightning_modules/data_info.py ImageScaling

# A Typer option whose callback does the work (`rnntune --version`).
show_version  # service/cli/__init__.py

# Saved to stack.json by asdict; read by the tests and benches that restart or call the stack's
# MLflow as its admin (service/stack.py Stack).
mlflow_auth
