"""The job service and the `rnntune` CLI: admit validated job specs, run them on Ray through the
Ray Jobs API, keep their state, and talk to MLflow's registry for the caller.

Top layer: imports `tune` for the spec, the policy and the outcome names, never torch or
Lightning (README, "Layout").
"""
